"""HeatViT's token-selector datapath blocks (Dong et al., HPCA'23): a fixed-point linear
layer over the token stream on a row of MACs, the polynomial GELU, the PLAN sigmoid, and
the keep-decision + token-packaging unit.

Each is bit-exact with its reference in ``chipforge.sim.ref`` (``token_linear``,
``poly_gelu``, ``plan_sigmoid``, ``token_packager``). In HeatViT the selector's linear
layers run on the backbone's GEMM engine (hardware reuse, modelled by
``chipforge.sim.cycle.heatvit``); ``TokenLinear`` is one MAC row of such an engine, sized
for the vit-digits selector.
"""

from __future__ import annotations

import math

from amaranth import Array, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from chipforge.config import (
    PlanSigmoidConfig,
    PolyExpConfig,
    PolyGeluConfig,
    TokenLinearConfig,
    TokenPackagerConfig,
)

__all__ = ["PlanSigmoid", "PolyExp", "PolyGelu", "TokenLinear", "TokenPackager",
           "linear_weight_layout", "packager_in_layout", "packager_out_layout"]

# The I-BERT constants (mirror chipforge.sim.ref.poly_gelu, poly_exp; hw never imports sim).
_ERF_A, _ERF_B = -0.2888, -1.769
_EXP_A, _EXP_B, _EXP_C = 0.3585, 1.353, 0.344


def _gelu_constants(cfg: PolyGeluConfig) -> tuple[int, int]:
    return (round(-_ERF_B * math.sqrt(2) * (1 << cfg.frac_bits)),
            round(-_ERF_A / 2 * (1 << cfg.coeff_frac_bits)))


def _pipeline(m: Module, i_stream, o_stream, stages: list[tuple[Signal, Signal]]) -> list:
    """Wire a stall-on-back-pressure pipeline of registered stages.

    ``stages`` is a list of (valid register, advance signal) pairs, first stage first; the
    caller loads each stage's data registers under ``advance``. Every stage advances when
    it is empty or the next one advances, so the pipeline moves one beat per cycle.
    """
    for k, (valid, advance) in enumerate(stages):
        downstream = o_stream.ready if k == len(stages) - 1 else stages[k + 1][1]
        m.d.comb += advance.eq(~valid | downstream)
        upstream_valid = i_stream.valid if k == 0 else stages[k - 1][0]
        with m.If(advance):
            m.d.sync += valid.eq(upstream_valid)
    m.d.comb += [i_stream.ready.eq(stages[0][1]), o_stream.valid.eq(stages[-1][0])]
    return stages


class PolyGelu(wiring.Component):
    """Polynomial GELU unit: one signed ``data_bits`` code in, its GELU out (same format).

    Stage 1 clips ``|x|`` and squares it, stage 2 scales by the erf curvature, stage 3
    forms ``x * (1 + L) / 2`` with rounding (see ``chipforge.sim.ref.poly_gelu``).

    Latency: 3 cycles from input transfer to output valid.
    Throughput: 1 value per cycle; back-pressure stalls the whole pipeline.
    """

    def __init__(self, cfg: PolyGeluConfig):
        if not isinstance(cfg, PolyGeluConfig):
            raise TypeError(f"cfg must be a PolyGeluConfig, not {cfg!r}")
        self.cfg = cfg
        super().__init__({
            "i_stream": In(stream.Signature(signed(cfg.data_bits))),
            "o_stream": Out(stream.Signature(signed(cfg.data_bits))),
        })

    def elaborate(self, platform):
        cfg = self.cfg
        m = Module()
        clip, curvature = _gelu_constants(cfg)
        e = cfg.erf_frac_bits
        shift = 2 * cfg.frac_bits + cfg.coeff_frac_bits - e
        stages = [(Signal(name=f"valid{k}"), Signal(name=f"advance{k}")) for k in range(3)]
        _pipeline(m, self.i_stream, self.o_stream, stages)
        x = self.i_stream.payload

        # Stage 1: t = min(|x|, C) - C, t*t.
        x1 = Signal(signed(cfg.data_bits))
        tsq = Signal(unsigned(2 * clip.bit_length()))
        magnitude = Mux(x < 0, -x, x)
        t = Signal(signed(clip.bit_length() + 2))
        m.d.comb += t.eq(Mux(magnitude < clip, magnitude, clip) - clip)
        with m.If(stages[0][1]):
            m.d.sync += [x1.eq(x), tsq.eq(t * t)]

        # Stage 2: |L| = 2**E - ((A * t*t) >> shift).
        x2 = Signal(signed(cfg.data_bits))
        mag = Signal(unsigned(e + 1))
        with m.If(stages[1][1]):
            m.d.sync += [x2.eq(x1), mag.eq((1 << e) - ((curvature * tsq) >> shift))]

        # Stage 3: (x * (2**E + sign(x) * |L|) + 2**E) >> (E + 1).
        factor = Signal(unsigned(e + 2))
        m.d.comb += factor.eq(Mux(x2 > 0, (1 << e) + mag,
                                  Mux(x2 < 0, (1 << e) - mag, 1 << e)))
        product = Signal(signed(cfg.data_bits + e + 3))
        m.d.comb += product.eq(x2 * factor + (1 << e))
        with m.If(stages[2][1]):
            m.d.sync += self.o_stream.payload.eq(product >> (e + 1))
        return m


def _reciprocal(divisor: int, max_dividend: int) -> tuple[int, int]:
    """(M, S) with ``(n * M) >> S == n // divisor`` for every n in 0..max_dividend."""
    n = list(range(max_dividend + 1))
    for shift in range(1, 64):
        mult = -(-(1 << shift) // divisor)
        if all((k * mult) >> shift == k // divisor for k in n):
            return mult, shift
    raise ValueError(f"no reciprocal of {divisor} up to 2**63")  # pragma: no cover


class PolyExp(wiring.Component):
    """Polynomial exp unit of the integer softmax: a signed ``in_bits`` code ``x <= 0`` in
    (the row maximum already subtracted), ``exp(x)`` out as an unsigned
    ``out_frac_bits + 1``-bit code (see ``chipforge.sim.ref.poly_exp``). Inputs above 0
    are outside its contract.

    Stage 1 splits ``-x = z ln2 - p`` (the division by the constant ln2 is a multiply by
    its reciprocal, checked exact over the whole input range at elaboration), stage 2
    evaluates ``0.3585 (p + 1.353)**2 + 0.344``, stage 3 shifts right by z.

    Latency: 3 cycles. Throughput: 1 value per cycle.
    """

    def __init__(self, cfg: PolyExpConfig):
        if not isinstance(cfg, PolyExpConfig):
            raise TypeError(f"cfg must be a PolyExpConfig, not {cfg!r}")
        self.cfg = cfg
        super().__init__({
            "i_stream": In(stream.Signature(signed(cfg.in_bits))),
            "o_stream": Out(stream.Signature(unsigned(cfg.out_bits))),
        })

    def elaborate(self, platform):
        cfg = self.cfg
        m = Module()
        f, e, k = cfg.frac_bits, cfg.out_frac_bits, cfg.coeff_frac_bits
        ln2 = round(math.log(2) * (1 << f))
        a, b, c = (round(_EXP_A * (1 << k)), round(_EXP_B * (1 << f)),
                   round(_EXP_C * (1 << e)))
        max_neg = 1 << (cfg.in_bits - 1)
        mult, shift = _reciprocal(ln2, max_neg)
        stages = [(Signal(name=f"valid{i}"), Signal(name=f"advance{i}")) for i in range(3)]
        _pipeline(m, self.i_stream, self.o_stream, stages)

        # Stage 1: z = (-x) // ln2, p = x + z ln2.
        neg = Signal(unsigned(cfg.in_bits))
        m.d.comb += neg.eq(-self.i_stream.payload)
        z_now = Signal(range(max_neg // ln2 + 1))
        m.d.comb += z_now.eq((neg * mult) >> shift)
        z1 = Signal.like(z_now)
        p1 = Signal(signed(ln2.bit_length() + 1))
        with m.If(stages[0][1]):
            m.d.sync += [z1.eq(z_now), p1.eq(z_now * ln2 - neg)]

        # Stage 2: poly = ((A (p + B)**2) >> (2f + K - E)) + C.
        z2 = Signal.like(z_now)
        poly = Signal(unsigned(e + 2))
        q = Signal(signed(p1.shape().width + 2))
        m.d.comb += q.eq(p1 + b)
        with m.If(stages[1][1]):
            m.d.sync += [z2.eq(z1), poly.eq(((a * (q * q)) >> (2 * f + k - e)) + c)]

        # Stage 3: exp = poly >> z, 0 beyond the output precision.
        with m.If(stages[2][1]):
            m.d.sync += self.o_stream.payload.eq(Mux(z2 > e + 1, 0, poly >> z2))
        return m


class PlanSigmoid(wiring.Component):
    """PLAN piecewise-linear sigmoid: a signed ``in_bits`` code in, an unsigned
    ``out_frac_bits + 1``-bit probability out (see ``chipforge.sim.ref.plan_sigmoid``).
    Shifts, adds and comparisons only (no multiplier).

    Latency: 1 cycle. Throughput: 1 value per cycle.
    """

    def __init__(self, cfg: PlanSigmoidConfig):
        if not isinstance(cfg, PlanSigmoidConfig):
            raise TypeError(f"cfg must be a PlanSigmoidConfig, not {cfg!r}")
        self.cfg = cfg
        super().__init__({
            "i_stream": In(stream.Signature(signed(cfg.in_bits))),
            "o_stream": Out(stream.Signature(unsigned(cfg.out_bits))),
        })

    def elaborate(self, platform):
        cfg = self.cfg
        m = Module()
        fi, fo = cfg.frac_bits, cfg.out_frac_bits
        stage = (Signal(name="valid0"), Signal(name="advance0"))
        _pipeline(m, self.i_stream, self.o_stream, [stage])
        x = self.i_stream.payload
        mag = Signal(unsigned(cfg.in_bits))
        m.d.comb += mag.eq(Mux(x < 0, -x, x))
        big = Signal(unsigned(cfg.in_bits + fo))
        m.d.comb += big.eq(mag << fo)
        one = 1 << fi
        y = Signal(unsigned(fo + 1))
        with m.If(mag >= 5 * one):
            m.d.comb += y.eq(1 << fo)
        with m.Elif(8 * mag >= 19 * one):
            m.d.comb += y.eq((big >> (fi + 5)) + (27 << (fo - 5)))
        with m.Elif(mag >= one):
            m.d.comb += y.eq((big >> (fi + 3)) + (5 << (fo - 3)))
        with m.Else():
            m.d.comb += y.eq((big >> (fi + 2)) + (1 << (fo - 1)))
        with m.If(stage[1]):
            m.d.sync += self.o_stream.payload.eq(Mux(x < 0, (1 << fo) - y, y))
        return m


def packager_in_layout(cfg: TokenPackagerConfig) -> data.StructLayout:
    """One token: its channels, keep score, ``force`` (always keep: class and package
    tokens) and ``last`` (final token of the image)."""
    return data.StructLayout({
        "data": data.ArrayLayout(signed(cfg.data_bits), cfg.channels),
        "score": unsigned(cfg.score_bits),
        "force": unsigned(1),
        "last": unsigned(1),
    })


def packager_out_layout(cfg: TokenPackagerConfig) -> data.StructLayout:
    """A kept token (``package`` = 0; ``weight`` = its score) or the package token
    (``package`` = 1; ``data`` = sum of score * token, ``weight`` = sum of scores, i.e.
    the numerator and denominator of Eq. 10); ``last`` ends the image."""
    return data.StructLayout({
        "data": data.ArrayLayout(signed(cfg.acc_bits), cfg.channels),
        "weight": unsigned(cfg.weight_bits),
        "package": unsigned(1),
        "last": unsigned(1),
    })


class TokenPackager(wiring.Component):
    """Keep decision and token packaging of a scored token stream (HeatViT Eq. 10).

    A token is kept iff ``force`` or ``score >= threshold``; kept tokens go out in order.
    A pruned token is added into the package accumulators (``channels`` multipliers,
    ``score * x``, and the score sum). After an image's ``last`` token, if any token was
    pruned, the package beat goes out with ``last`` set (else the last kept token carries
    ``last``). Bit-exact with ``chipforge.sim.ref.token_packager.packager_beats``.

    Latency: 1 cycle from a token's transfer to its output beat (the package beat is
    valid 1 cycle after the last token, or 2 when the last token is itself kept).
    Throughput: 1 token per cycle; one extra cycle per image when its last token is kept
    and a package follows.
    """

    def __init__(self, cfg: TokenPackagerConfig):
        if not isinstance(cfg, TokenPackagerConfig):
            raise TypeError(f"cfg must be a TokenPackagerConfig, not {cfg!r}")
        self.cfg = cfg
        super().__init__({
            "i_stream": In(stream.Signature(packager_in_layout(cfg))),
            "o_stream": Out(stream.Signature(packager_out_layout(cfg))),
        })

    def elaborate(self, platform):
        cfg = self.cfg
        m = Module()
        beat, out = self.i_stream.payload, self.o_stream.payload
        acc = [Signal(signed(cfg.acc_bits), name=f"acc{k}") for k in range(cfg.channels)]
        den = Signal(unsigned(cfg.weight_bits))
        any_pruned = Signal()
        pending = Signal()     # a package beat waits behind a kept last token

        can_load = Signal()
        m.d.comb += can_load.eq(~self.o_stream.valid | self.o_stream.ready)
        m.d.comb += self.i_stream.ready.eq(can_load & ~pending)
        with m.If(self.o_stream.valid & self.o_stream.ready):
            m.d.sync += self.o_stream.valid.eq(0)

        keep = Signal()
        m.d.comb += keep.eq(beat.force | (beat.score >= cfg.threshold))
        acc_next = [Signal(signed(cfg.acc_bits), name=f"acc_next{k}")
                    for k in range(cfg.channels)]
        for k in range(cfg.channels):
            m.d.comb += acc_next[k].eq(acc[k] + beat.score * beat.data[k])
        den_next = Signal(unsigned(cfg.weight_bits))
        m.d.comb += den_next.eq(den + beat.score)

        def emit_package(values, weight):
            m.d.sync += [out.package.eq(1), out.last.eq(1), out.weight.eq(weight),
                         self.o_stream.valid.eq(1), any_pruned.eq(0), den.eq(0)]
            m.d.sync += [out.data[k].eq(values[k]) for k in range(cfg.channels)]
            m.d.sync += [a.eq(0) for a in acc]

        with m.If(pending & can_load):
            m.d.sync += pending.eq(0)
            emit_package(acc, den)
        with m.Elif(self.i_stream.valid & self.i_stream.ready):
            with m.If(keep):
                m.d.sync += [out.package.eq(0), out.weight.eq(beat.score),
                             out.last.eq(beat.last & ~any_pruned), self.o_stream.valid.eq(1)]
                m.d.sync += [out.data[k].eq(beat.data[k]) for k in range(cfg.channels)]
                with m.If(beat.last & any_pruned):
                    m.d.sync += pending.eq(1)
            with m.Else():
                with m.If(beat.last):
                    emit_package(acc_next, den_next)
                with m.Else():
                    m.d.sync += [acc[k].eq(acc_next[k]) for k in range(cfg.channels)]
                    m.d.sync += [den.eq(den_next), any_pruned.eq(1)]
        return m


def linear_weight_layout(cfg: TokenLinearConfig) -> data.StructLayout:
    """One weight row (one output's ``in_features`` weights) and its bias."""
    return data.StructLayout({
        "row": data.ArrayLayout(signed(cfg.data_bits), cfg.in_features),
        "bias": signed(cfg.bias_bits),
    })


class TokenLinear(wiring.Component):
    """Fixed-point linear layer over a token stream on a row of ``in_features`` MACs.

    ``w_stream`` loads the weight rows and biases, output 0 first (it wraps after
    ``out_features`` rows; load them all before the tokens that use them). Each
    ``i_stream`` beat is one token (``in_features`` signed codes); for it, the MAC row
    computes one output per cycle, ``sat((row_o . x + bias_o) >> out_shift)`` with
    rounding, and ``o_stream`` carries them token by token, output 0 first. Bit-exact
    with ``chipforge.sim.ref.token_linear.token_linear``.

    Latency: the first output of a token is valid 2 cycles after the token's transfer.
    Throughput: one output per cycle, so one token every ``out_features`` cycles, back to
    back (the next token is taken while the last output of the previous one is formed).
    """

    def __init__(self, cfg: TokenLinearConfig):
        if not isinstance(cfg, TokenLinearConfig):
            raise TypeError(f"cfg must be a TokenLinearConfig, not {cfg!r}")
        self.cfg = cfg
        super().__init__({
            "w_stream": In(stream.Signature(linear_weight_layout(cfg))),
            "i_stream": In(stream.Signature(data.ArrayLayout(signed(cfg.data_bits),
                                                             cfg.in_features))),
            "o_stream": Out(stream.Signature(signed(cfg.out_bits))),
        })

    def elaborate(self, platform):
        cfg = self.cfg
        m = Module()
        n_in, n_out = cfg.in_features, cfg.out_features
        rows = [Signal(linear_weight_layout(cfg), name=f"w{o}") for o in range(n_out)]

        # Weight loading, round robin.
        load_index = Signal(range(max(n_out, 2)))
        m.d.comb += self.w_stream.ready.eq(1)
        with m.If(self.w_stream.valid):
            for o in range(n_out):
                with m.If(load_index == o):
                    m.d.sync += rows[o].eq(self.w_stream.payload)
            m.d.sync += load_index.eq(Mux(load_index == n_out - 1, 0, load_index + 1))

        # The token being worked on and the output index.
        token = Signal(data.ArrayLayout(signed(cfg.data_bits), n_in))
        have_token = Signal()
        index = Signal(range(max(n_out, 2)))
        can_emit = Signal()
        finishing = Signal()
        m.d.comb += [
            can_emit.eq(have_token & (~self.o_stream.valid | self.o_stream.ready)),
            finishing.eq(can_emit & (index == n_out - 1)),
            self.i_stream.ready.eq(~have_token | finishing),
        ]
        with m.If(self.o_stream.valid & self.o_stream.ready):
            m.d.sync += self.o_stream.valid.eq(0)

        # One MAC row: in_features products of the selected weight row, summed. (The row
        # goes through a signal so that the products are not replicated per row.)
        row = Signal(linear_weight_layout(cfg))
        m.d.comb += row.eq(Array(rows)[index])
        acc = Signal(signed(cfg.acc_bits))
        m.d.comb += acc.eq(sum(row.row[i] * token[i] for i in range(n_in)) + row.bias)
        shifted = Signal(signed(cfg.acc_bits + 1))
        if cfg.out_shift:
            m.d.comb += shifted.eq((acc + (1 << (cfg.out_shift - 1))) >> cfg.out_shift)
        else:
            m.d.comb += shifted.eq(acc)
        lim = 1 << (cfg.out_bits - 1)
        result = Mux(shifted > lim - 1, lim - 1, Mux(shifted < -lim, -lim, shifted))

        with m.If(can_emit):
            m.d.sync += [self.o_stream.payload.eq(result), self.o_stream.valid.eq(1),
                         index.eq(Mux(finishing, 0, index + 1))]
            with m.If(finishing):
                m.d.sync += have_token.eq(0)
        with m.If(self.i_stream.valid & self.i_stream.ready):
            m.d.sync += [token.eq(self.i_stream.payload), have_token.eq(1)]
        return m
