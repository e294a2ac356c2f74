"""The whole HeatViT token selector (Dong et al., HPCA'23) as one top level, composed of the
blocks of :mod:`chipforge.hw.heatvit`: the score MLP on two MAC rows (``TokenLinear``: fc1
per head, fc2), the polynomial GELU, the PLAN sigmoid (the per-head 2-class keep/prune
softmax), the head-weight softmax on the polynomial exp unit with its row maximum, sum and
reciprocal, the keep decision and packager (``TokenPackager``) and the package division.
Bit-exact with :mod:`chipforge.sim.ref.token_selector`, whose
:func:`~chipforge.sim.ref.token_selector.selector_timeline` is the cycle model.

::

  s_axis (h, x, force per token) ─> token buffers (BRAM: h codes, x codes + force)
     [center: per-channel sums of h ─> mean token m (one multiplier, a channel a cycle)]
     h (center: h - m), head by head ─> fc1 MAC row (head_dim -> hidden) ─> GELU ─> collect
     hidden values ─> fc2 MAC row (hidden -> 1) ─> PLAN sigmoid ─> score = sum_i a_i sig_i >> 7
     score + x, force ─> TokenPackager (keep decision, sum s*x, sum s) ─> output buffer (BRAM)
     package numerator / denominator ─> serial divider (rounded) ─> output buffer
  output buffer ─> m_axis (kept tokens, then the package token; tlast and the keep mask on
  the image's last beat)
  cfg_we/cfg_addr/cfg_wdata ─> weight memory (BRAM) + head logits; LOAD ─> MAC rows,
     head weights a = softmax(head_logits) (exp unit, max, sum, reciprocal 2**31 // sum)
"""

from __future__ import annotations

from amaranth import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out

from chipforge.config import TokenSelectorConfig
from chipforge.hw.heatvit import (
    PlanSigmoid,
    PolyExp,
    PolyGelu,
    TokenLinear,
    TokenPackager,
    linear_weight_layout,
)
from chipforge.sim.ref.token_selector import MEAN_RECIP_BITS, mean_reciprocal

__all__ = ["REGISTER_MAP", "TokenSelector", "load_cycles", "selector_in_layout",
           "selector_out_layout"]

REGISTER_MAP = {
    "FC1": (0x00, "+r: fc1 row r (r < hidden): the row's head_dim signed 8-bit weights and "
                  "its bias, packed as TokenLinear's weight layout (weight 0 in the low bits; "
                  "fields of fc1's data width, token_bits + 1 bits when centered)"),
    "FC2": (0x40, "the fc2 row: hidden signed 8-bit weights and the bias, same packing"),
    "HEAD": (0x80, "+i: head i's logit, a signed code of the exp unit's input format (Q4.5)"),
    "LOAD": (0xC0, "any value: move the weight memory into the MAC rows and compute the "
                   "head weights (busy until done; see load_cycles)"),
}
"""Registers: ``name: (address, meaning)``, written through ``cfg_we/cfg_addr/cfg_wdata``
while the selector is idle (``busy`` low, no token of an image taken yet). Weights take
effect at LOAD."""

RECIP_BITS = 17
"""Quotient bits of the softmax reciprocal ``2**31 // sum`` (sum >= exp(0) ~ 2**15)."""


def selector_in_layout(cfg: TokenSelectorConfig) -> data.StructLayout:
    """One input token: LayerNorm codes ``h``, residual codes ``x``, ``force`` (class or
    package token: always kept)."""
    return data.StructLayout({
        "h": data.ArrayLayout(signed(cfg.token_bits), cfg.dim),
        "x": data.ArrayLayout(signed(cfg.data_bits), cfg.dim),
        "force": unsigned(1),
    })


def selector_out_layout(cfg: TokenSelectorConfig) -> data.StructLayout:
    """One output token: its residual codes, ``package`` (1: the package token) and the
    keep ``mask`` (bit t: input token t kept; on the image's last beat, else 0)."""
    return data.StructLayout({
        "data": data.ArrayLayout(signed(cfg.data_bits), cfg.dim),
        "package": unsigned(1),
        "mask": unsigned(cfg.max_tokens),
    })


def load_cycles(cfg: TokenSelectorConfig) -> int:
    """Cycles ``busy`` is high after a LOAD write: ``hidden + 2`` to read the weight memory
    into the MAC rows (1 read-ahead cycle), ``heads + 4`` for the exps (one input per cycle,
    the 3-stage exp pipeline, 1 to see the last), ``RECIP_BITS`` reciprocal steps and 1
    multiply cycle."""
    return (cfg.hidden + 2) + (cfg.heads + 4) + RECIP_BITS + 1


class TokenSelector(wiring.Component):
    """HeatViT token selector top level (see the module docstring).

    Ports: ``s_axis_tdata`` (:func:`selector_in_layout`) / ``tvalid`` / ``tready`` /
    ``tlast`` (one token per beat, the image's live tokens in order, ``tlast`` on its last;
    at most ``max_tokens``: the ``max_tokens``-th ends the image); ``m_axis_tdata``
    (:func:`selector_out_layout`) / ``tvalid`` / ``tready`` / ``tlast``; ``cfg_we`` /
    ``cfg_addr`` / ``cfg_wdata`` (:data:`REGISTER_MAP`); ``busy`` (high in every state but
    idle).

    Centering (``cfg.center``, the selector's global feature; reference
    :func:`~chipforge.sim.ref.token_selector.live_mean`): while the tokens arrive, ``dim``
    accumulators (``token_bits + ceil(log2(max_tokens + 1))`` bits) sum the h codes per
    channel (the first token of an image loads them, so nothing needs clearing); after the
    last token the mean token ``m_c = (sum_c * mean_reciprocal(T) + 2**15) >> 16`` is
    formed on ONE multiplier (sum x 17-bit reciprocal), one channel per cycle, the
    reciprocal taken from a constant table of ``max_tokens`` entries indexed by the token
    count (registered with the last token); the multiplier reads the sums through a
    ``dim``-way multiplexer by channel (measured on Xilinx 7-series: about 390 LUTs fewer
    than shifting the sums down a register chain) and the means shift into ``dim``
    registers (``token_bits`` each; the mean lies in the codes' range). Then fc1
    reads ``h - m`` for the head's channels: ``head_dim`` subtractors in front of the MAC
    row, whose codes (and weight fields) are ``token_bits + 1`` bits wide. Without
    ``center`` none of this is generated (the same Verilog as before the option).

    Timing per image of T tokens (cycle model:
    :func:`chipforge.sim.ref.token_selector.selector_timeline`): ``s_axis_tready`` is high
    while idle and takes one token per cycle into the token buffers. From the cycle after
    the last token: when centered, M = ``dim`` cycles for the mean token (M = 0 otherwise),
    then 1 cycle to prime the buffer read, then the fc1 MAC row takes one head
    every ``hidden`` cycles (it is the bottleneck: ``hidden`` outputs per head), so token t's
    score is complete ``M + hidden * heads * (t + 1) + 11`` cycles after the last input (fc1
    latency 2 + ``hidden`` outputs, GELU 3, collector 1, fc2 2, sigmoid 1, fusion 1) and
    enters the packager in that cycle; its output beat is written to the output buffer in
    the next. After the packager's last beat: if anything was pruned, the package division
    takes ``data_bits`` cycles per channel (``data_bits * dim``) plus 1 write cycle; then 1 cycle
    primes the output read, and the output beats (kept tokens, then the package) leave one
    per cycle while ``m_axis_tready`` is high; the cycle after the last one is idle again.
    Latency (no stalls, T tokens, P = 1 if a package): T input cycles + M +
    ``hidden * heads * T + 11`` + 1 (+ 1 if the last token is kept and a package follows) +
    (``data_bits * dim + 1``) * P + 1 + outputs. Throughput: one image at a time (no
    overlap between images): for vit-digits' first selector (T = 17, dim = 48, 16-bit
    codes), 17 + 419 + 1 + 769 + 1 + ~11 ~ 1220 cycles per image (the cycle model: 1219 on
    average over the first 100 digits test images); centered, M = 48 more (1266 on average,
    +4%).

    Registers where long paths would be: every block stage is registered; the division
    keeps a 14-bit remainder (one subtractor per cycle), the reciprocal a 19-bit one.
    """

    def __init__(self, cfg: TokenSelectorConfig):
        if not isinstance(cfg, TokenSelectorConfig):
            raise TypeError(f"cfg must be a TokenSelectorConfig, not {cfg!r}")
        if cfg.hidden < 4:
            raise ValueError(f"hidden must be >= 4 (fc1 must be the bottleneck of the score "
                             f"pipeline, as the cycle model assumes), not {cfg.hidden}")
        self.cfg = cfg
        self.cfg_width = max(linear_weight_layout(cfg.fc1).size,
                             linear_weight_layout(cfg.fc2).size)
        super().__init__({
            "s_axis_tdata": In(selector_in_layout(cfg)),
            "s_axis_tvalid": In(1),
            "s_axis_tready": Out(1),
            "s_axis_tlast": In(1),
            "m_axis_tdata": Out(selector_out_layout(cfg)),
            "m_axis_tvalid": Out(1),
            "m_axis_tready": In(1),
            "m_axis_tlast": Out(1),
            "cfg_we": In(1),
            "cfg_addr": In(8),
            "cfg_wdata": In(self.cfg_width),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        cfg = self.cfg
        m = Module()
        dim, heads, hd, hidden, T = cfg.dim, cfg.heads, cfg.head_dim, cfg.hidden, cfg.max_tokens
        pk = cfg.packager
        m.submodules.fc1 = fc1 = TokenLinear(cfg.fc1)
        m.submodules.gelu = gelu = PolyGelu(cfg.gelu)
        m.submodules.fc2 = fc2 = TokenLinear(cfg.fc2)
        m.submodules.sigmoid = sig = PlanSigmoid(cfg.sigmoid)
        m.submodules.exp = exp = PolyExp(cfg.exp)
        m.submodules.packager = pkr = TokenPackager(pk)

        # ---- weight memory and head logits (REGISTER_MAP) ----
        wmem = memory.Memory(shape=unsigned(self.cfg_width), depth=hidden + 1, init=[])
        m.submodules.weight_memory = wmem
        wwr, wrd = wmem.write_port(), wmem.read_port()
        logits = [Signal(signed(cfg.exp.in_bits), name=f"head_logit{i}") for i in range(heads)]
        load_cmd = Signal()
        m.d.comb += [wwr.data.eq(self.cfg_wdata), wwr.addr.eq(Mux(
            self.cfg_addr == 0x40, hidden, self.cfg_addr[:6]))]
        with m.If(self.cfg_we):
            with m.If((self.cfg_addr < hidden) | (self.cfg_addr == 0x40)):
                m.d.comb += wwr.en.eq(1)
            for i in range(heads):
                with m.If(self.cfg_addr == 0x80 + i):
                    m.d.sync += logits[i].eq(self.cfg_wdata)
            with m.If(self.cfg_addr == 0xC0):
                m.d.comb += load_cmd.eq(1)

        # ---- token buffers (written while idle) and output buffer ----
        hmem = memory.Memory(shape=data.ArrayLayout(signed(cfg.token_bits), dim), depth=T,
                             init=[])
        xmem = memory.Memory(shape=data.StructLayout({
            "x": data.ArrayLayout(signed(cfg.data_bits), dim), "force": unsigned(1)}),
            depth=T, init=[])
        omem = memory.Memory(shape=data.ArrayLayout(signed(cfg.data_bits), dim), depth=T + 1,
                             init=[])
        m.submodules.h_buffer, m.submodules.x_buffer = hmem, xmem
        m.submodules.out_buffer = omem
        hwr, hrd = hmem.write_port(), hmem.read_port()
        xwr, xrd = xmem.write_port(), xmem.read_port()
        owr, ord_ = omem.write_port(), omem.read_port()

        n_tokens = Signal(range(T + 1))         # tokens of the image (taken so far)
        mask = Signal(T)
        out_count = Signal(range(T + 2))        # output beats written
        has_package = Signal()
        a_q = [Signal(7, name=f"head_weight{i}") for i in range(heads)]

        # ---- centering (cfg.center): per-channel sums while the tokens arrive, then the
        # mean token m_c = (sum_c * mean_reciprocal(T) + 2**15) >> 16 on one multiplier,
        # one channel per cycle (the means shift in at the top) ----
        if cfg.center:
            sum_bits = cfg.token_bits + T.bit_length()      # ceil(log2(max_tokens + 1))
            sums = [Signal(signed(sum_bits), name=f"h_sum{k}") for k in range(dim)]
            means = [Signal(signed(cfg.token_bits), name=f"h_mean{k}") for k in range(dim)]
            recip = Signal(unsigned(MEAN_RECIP_BITS + 1))
            recips = Array(Const(int(mean_reciprocal(n + 1)), recip.shape())
                           for n in range(T))                 # by the count - 1
            mean_channel = Signal(range(dim))
            mean_next = Signal(signed(cfg.token_bits))
            m.d.comb += mean_next.eq((Array(sums)[mean_channel] * recip
                                      + (1 << (MEAN_RECIP_BITS - 1)))
                                     >> MEAN_RECIP_BITS)

        # ---- score datapath: feeder -> fc1 -> gelu -> collector -> fc2 -> sigmoid ----
        scoring = Signal()
        primed = Signal()
        feed_index = Signal(range(T + 1))
        feed_head = Signal(range(max(heads, 2)))
        feed_take = Signal()
        m.d.comb += feed_take.eq(fc1.i_stream.valid & fc1.i_stream.ready)
        next_feed = Signal.like(feed_index)
        m.d.comb += next_feed.eq(Mux(feed_take & (feed_head == heads - 1), feed_index + 1,
                                     feed_index))
        head_h = Array(
            hrd.data.as_value()[i * hd * cfg.token_bits:(i + 1) * hd * cfg.token_bits]
            for i in range(heads))[feed_head]
        m.d.comb += [hrd.addr.eq(next_feed), hrd.en.eq(1),
                     fc1.i_stream.valid.eq(scoring & primed & (feed_index < n_tokens))]
        if cfg.center:
            # fc1 reads h - m (token_bits + 1 bits): the head's channels of the token minus
            # those of the image's mean token, one subtractor per MAC.
            h_head = Signal(data.ArrayLayout(signed(cfg.token_bits), hd))
            m_head = Signal(data.ArrayLayout(signed(cfg.token_bits), hd))
            m.d.comb += [h_head.eq(head_h), m_head.eq(Array(
                Cat(means[i * hd:(i + 1) * hd]) for i in range(heads))[feed_head])]
            m.d.comb += [fc1.i_stream.payload[j].eq(h_head[j] - m_head[j]) for j in range(hd)]
        else:
            m.d.comb += fc1.i_stream.payload.eq(head_h)
        with m.If(feed_take):
            m.d.sync += [feed_head.eq(Mux(feed_head == heads - 1, 0, feed_head + 1)),
                         feed_index.eq(next_feed)]
        wiring.connect(m, fc1.o_stream, gelu.i_stream)

        vec = Signal(data.ArrayLayout(signed(8), hidden))
        vec_count = Signal(range(hidden + 1))
        vec_full = Signal()
        fc2_take = Signal()
        m.d.comb += [fc2.i_stream.valid.eq(vec_full), fc2.i_stream.payload.eq(vec),
                     fc2_take.eq(fc2.i_stream.valid & fc2.i_stream.ready),
                     gelu.o_stream.ready.eq(~vec_full | fc2_take)]
        count_now = Signal.like(vec_count)
        m.d.comb += count_now.eq(Mux(fc2_take, 0, vec_count))
        with m.If(fc2_take):
            m.d.sync += [vec_full.eq(0), vec_count.eq(0)]
        with m.If(gelu.o_stream.valid & gelu.o_stream.ready):
            m.d.sync += [vec[k].eq(Mux(count_now == k, gelu.o_stream.payload, vec[k]))
                         for k in range(hidden)]
            m.d.sync += [vec_count.eq(count_now + 1), vec_full.eq(count_now == hidden - 1)]
        wiring.connect(m, fc2.o_stream, sig.i_stream)

        # ---- score: sum over heads of a_i * sig_i, >> 7 ----
        score_head = Signal(range(max(heads, 2)))
        score_acc = Signal(unsigned(7 + 8 + heads.bit_length()))
        score = Signal(unsigned(8))
        score_valid = Signal()
        m.d.comb += sig.o_stream.ready.eq(~score_valid)
        with m.If(sig.o_stream.valid & sig.o_stream.ready):
            term = sig.o_stream.payload * Array(a_q)[score_head]
            with m.If(score_head == heads - 1):
                m.d.sync += [score.eq((score_acc + term) >> cfg.score_frac_bits),
                             score_valid.eq(1), score_acc.eq(0), score_head.eq(0)]
            with m.Else():
                m.d.sync += [score_acc.eq(score_acc + term), score_head.eq(score_head + 1)]

        # ---- packager: score + the token's x and force, in order ----
        pack_index = Signal(range(T + 1))
        pack_take = Signal()
        m.d.comb += [pack_take.eq(pkr.i_stream.valid & pkr.i_stream.ready),
                     xrd.addr.eq(Mux(pack_take, pack_index + 1, pack_index)), xrd.en.eq(1)]
        beat = pkr.i_stream.payload
        m.d.comb += [pkr.i_stream.valid.eq(score_valid), beat.score.eq(score),
                     beat.force.eq(xrd.data.force), beat.last.eq(pack_index == n_tokens - 1)]
        m.d.comb += [beat.data[k].eq(xrd.data.x[k]) for k in range(dim)]
        with m.If(pack_take):
            m.d.sync += [score_valid.eq(0), pack_index.eq(pack_index + 1)]
            with m.If(xrd.data.force | (score >= cfg.threshold)):
                m.d.sync += mask.bit_select(pack_index, 1).eq(1)

        # ---- package division: q = (|num| + den // 2) // max(den, 1), serially ----
        # |package| <= 2**(data_bits - 1) (a weighted mean of data_bits codes), so
        # data_bits quotient bits suffice: the remainder starts as num >> data_bits < den.
        DIV_BITS = cfg.data_bits  # noqa: N806
        num = [Signal(signed(pk.acc_bits), name=f"num{k}") for k in range(dim)]
        den = Signal(unsigned(pk.weight_bits))
        rem = Signal(unsigned(pk.weight_bits + 1))
        low = Signal(DIV_BITS)
        quot = Signal(DIV_BITS)
        step = Signal(range(DIV_BITS))
        channel = Signal(range(dim))
        pkg = [Signal(signed(cfg.data_bits), name=f"package{k}") for k in range(dim)]
        den_eff = Signal.like(den)
        m.d.comb += den_eff.eq(Mux(den == 0, 1, den))
        magnitude = Signal(unsigned(pk.acc_bits + 1))
        m.d.comb += magnitude.eq(Mux(num[0] < 0, -num[0], num[0]) + (den_eff >> 1))
        rem_in = Signal.like(rem)
        low_in = Signal.like(low)
        m.d.comb += [rem_in.eq(Mux(step == 0, magnitude >> DIV_BITS, rem)),
                     low_in.eq(Mux(step == 0, magnitude[:DIV_BITS], low))]
        trial = Signal(unsigned(pk.weight_bits + 2))
        m.d.comb += trial.eq(Cat(low_in[DIV_BITS - 1], rem_in))
        fits = Signal()
        m.d.comb += fits.eq(trial >= den_eff)
        quot_next = Signal(DIV_BITS)
        m.d.comb += quot_next.eq(Cat(fits, Mux(step == 0, 0, quot)))

        # ---- head softmax: max, exp, sum, reciprocal, multiply ----
        hmax = logits[0]
        for i in range(1, heads):
            hmax = Mux(logits[i] > hmax, logits[i], hmax)
        exp_index = Signal(range(heads + 1))
        exps = [Signal(unsigned(cfg.exp.out_bits), name=f"head_exp{i}") for i in range(heads)]
        exp_got = Signal(range(heads + 1))
        esum = Signal(unsigned(cfg.exp.out_bits + heads.bit_length()))
        rrem = Signal(unsigned(esum.shape().width + 1))
        rquot = Signal(RECIP_BITS)
        rstep = Signal(range(RECIP_BITS + 1))
        rtrial = Signal(unsigned(esum.shape().width + 2))
        m.d.comb += rtrial.eq(rrem << 1)     # the dividend's low 17 bits are 0
        m.d.comb += exp.o_stream.ready.eq(1)
        with m.If(exp.o_stream.valid):
            m.d.sync += [exps[i].eq(Mux(exp_got == i, exp.o_stream.payload, exps[i]))
                         for i in range(heads)]
            m.d.sync += [exp_got.eq(exp_got + 1), esum.eq(esum + exp.o_stream.payload)]
        # The max-subtracted logit, saturated to the exp unit's input range (int_softmax).
        diff = Signal(signed(cfg.exp.in_bits + 1))
        m.d.comb += diff.eq(Array(logits)[exp_index] - hmax)
        lowest = -(1 << (cfg.exp.in_bits - 1))
        m.d.comb += exp.i_stream.payload.eq(Mux(diff < lowest, lowest, diff))

        # ---- output stream ----
        out_index = Signal(range(T + 2))
        out_take = Signal()
        m.d.comb += [out_take.eq(self.m_axis_tvalid & self.m_axis_tready),
                     ord_.addr.eq(Mux(out_take, out_index + 1, out_index)), ord_.en.eq(1)]
        is_last = Signal()
        m.d.comb += is_last.eq(out_index == out_count - 1)
        m.d.comb += [self.m_axis_tlast.eq(is_last),
                     self.m_axis_tdata.package.eq(is_last & has_package),
                     self.m_axis_tdata.mask.eq(Mux(is_last, mask, 0))]
        m.d.comb += [self.m_axis_tdata.data[k].eq(ord_.data[k]) for k in range(dim)]

        # ---- the controller ----
        m.d.comb += [hwr.addr.eq(n_tokens), hwr.data.eq(self.s_axis_tdata.h),
                     xwr.addr.eq(n_tokens), xwr.data.x.eq(self.s_axis_tdata.x),
                     xwr.data.force.eq(self.s_axis_tdata.force)]
        m.d.comb += [fc1.w_stream.payload.eq(wrd.data), fc2.w_stream.payload.eq(wrd.data)]
        row = Signal(range(hidden + 2))
        with m.FSM(name="selector_state"):
            with m.State("IDLE"):
                m.d.comb += self.s_axis_tready.eq(~load_cmd)
                with m.If(load_cmd):
                    m.d.sync += row.eq(0)
                    m.next = "LOAD_ROWS"
                with m.Elif(self.s_axis_tvalid):
                    m.d.comb += [hwr.en.eq(1), xwr.en.eq(1)]
                    m.d.sync += n_tokens.eq(n_tokens + 1)
                    if cfg.center:
                        m.d.sync += [sums[k].eq(Mux(n_tokens == 0, 0, sums[k])
                                                + self.s_axis_tdata.h[k]) for k in range(dim)]
                    with m.If(self.s_axis_tlast | (n_tokens == T - 1)):
                        if cfg.center:
                            m.d.sync += [recip.eq(recips[n_tokens]), mean_channel.eq(0)]
                            m.next = "MEAN"
                        else:
                            m.d.sync += [scoring.eq(1), primed.eq(0)]
                            m.next = "SCORE"
            if cfg.center:
                with m.State("MEAN"):
                    m.d.comb += self.busy.eq(1)
                    m.d.sync += [means[k].eq(means[k + 1]) for k in range(dim - 1)]
                    m.d.sync += [means[dim - 1].eq(mean_next), mean_channel.eq(mean_channel + 1)]
                    with m.If(mean_channel == dim - 1):
                        m.d.sync += [scoring.eq(1), primed.eq(0)]
                        m.next = "SCORE"
            with m.State("LOAD_ROWS"):
                # wrd.data is row `row - 1` (read in the previous cycle).
                m.d.comb += [wrd.addr.eq(row), self.busy.eq(1)]
                m.d.sync += row.eq(row + 1)
                with m.If((row >= 1) & (row <= hidden)):
                    m.d.comb += fc1.w_stream.valid.eq(1)
                with m.If(row == hidden + 1):
                    m.d.comb += fc2.w_stream.valid.eq(1)
                    m.d.sync += [exp_index.eq(0), exp_got.eq(0), esum.eq(0)]
                    m.next = "LOAD_EXP"
            with m.State("LOAD_EXP"):
                m.d.comb += [self.busy.eq(1), exp.i_stream.valid.eq(exp_index < heads)]
                with m.If(exp.i_stream.valid & exp.i_stream.ready):
                    m.d.sync += exp_index.eq(exp_index + 1)
                with m.If(exp_got == heads):
                    # rrem starts as 2**31 >> RECIP_BITS (< esum).
                    m.d.sync += [rrem.eq(1 << (31 - RECIP_BITS)), rquot.eq(0), rstep.eq(0)]
                    m.next = "LOAD_RECIP"
            with m.State("LOAD_RECIP"):
                m.d.comb += self.busy.eq(1)
                rfits = rtrial >= esum
                m.d.sync += [rrem.eq(Mux(rfits, rtrial - esum, rtrial)),
                             rquot.eq(Cat(rfits, rquot)), rstep.eq(rstep + 1)]
                with m.If(rstep == RECIP_BITS - 1):
                    m.next = "LOAD_MUL"
            with m.State("LOAD_MUL"):
                m.d.comb += self.busy.eq(1)
                shift = 31 - cfg.score_frac_bits
                for i in range(heads):
                    prod = (exps[i] * rquot) >> shift
                    m.d.sync += a_q[i].eq(Mux(prod > 127, 127, prod))
                m.next = "IDLE"
            with m.State("SCORE"):
                m.d.comb += [self.busy.eq(1), pkr.o_stream.ready.eq(1)]
                m.d.sync += primed.eq(1)
                out = pkr.o_stream.payload
                m.d.comb += [owr.addr.eq(out_count)]
                m.d.comb += [owr.data[k].eq(out.data[k]) for k in range(dim)]
                with m.If(pkr.o_stream.valid):
                    with m.If(out.package):
                        m.d.sync += [num[k].eq(out.data[k]) for k in range(dim)]
                        m.d.sync += [den.eq(out.weight), has_package.eq(1), step.eq(0),
                                     channel.eq(0)]
                    with m.Else():
                        m.d.comb += owr.en.eq(1)
                        m.d.sync += out_count.eq(out_count + 1)
                    with m.If(out.last):
                        m.d.sync += scoring.eq(0)
                        with m.If(out.package):
                            m.next = "DIVIDE"
                        with m.Else():
                            m.next = "OUT_PRIME"
            with m.State("DIVIDE"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += [rem.eq(Mux(fits, trial - den_eff, trial)),
                             low.eq(low_in << 1), quot.eq(quot_next), step.eq(step + 1)]
                with m.If(step == DIV_BITS - 1):
                    value = Mux(num[0] < 0, -quot_next, quot_next)
                    m.d.sync += [pkg[k].eq(pkg[k + 1]) for k in range(dim - 1)]
                    m.d.sync += [pkg[dim - 1].eq(value), step.eq(0)]
                    m.d.sync += [num[k].eq(num[k + 1]) for k in range(dim - 1)]
                    m.d.sync += channel.eq(channel + 1)
                    with m.If(channel == dim - 1):
                        m.next = "WRITE_PACKAGE"
            with m.State("WRITE_PACKAGE"):
                m.d.comb += [self.busy.eq(1), owr.addr.eq(out_count), owr.en.eq(1)]
                m.d.comb += [owr.data[k].eq(pkg[k]) for k in range(dim)]
                m.d.sync += out_count.eq(out_count + 1)
                m.next = "OUT_PRIME"
            with m.State("OUT_PRIME"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += [out_index.eq(0), self.m_axis_tvalid.eq(1)]
                m.next = "OUT"
            with m.State("OUT"):
                m.d.comb += self.busy.eq(1)
                with m.If(out_take):
                    m.d.sync += out_index.eq(out_index + 1)
                    with m.If(is_last):
                        m.d.sync += [self.m_axis_tvalid.eq(0), n_tokens.eq(0), mask.eq(0),
                                     out_index.eq(0),
                                     out_count.eq(0), has_package.eq(0), feed_index.eq(0),
                                     feed_head.eq(0), pack_index.eq(0)]
                        m.next = "IDLE"
        return m
