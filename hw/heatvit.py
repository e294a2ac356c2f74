"""HeatViT's token-selector datapath blocks (Dong et al., HPCA'23): the polynomial GELU,
the PLAN sigmoid and the keep-decision + token-packaging unit.

Each is bit-exact with its reference in ``chipforge.sim.ref`` (``poly_gelu``,
``plan_sigmoid``, ``token_packager``). The selector's linear layers run on the backbone's
GEMM engine (HeatViT's hardware reuse), which ``chipforge.sim.cycle.heatvit`` models.
"""

from __future__ import annotations

import math

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from chipforge.config import PlanSigmoidConfig, PolyGeluConfig, TokenPackagerConfig

__all__ = ["PlanSigmoid", "PolyGelu", "TokenPackager", "packager_in_layout",
           "packager_out_layout"]

# The I-BERT erf constants (mirrors chipforge.sim.ref.poly_gelu; hw never imports sim).
_ERF_A, _ERF_B = -0.2888, -1.769


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
