"""The digital stochastic-computing accumulator of a SupeRBNN-style binary-network array."""

from __future__ import annotations

from amaranth import Module, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from chipforge.sc_config import ScAccumulation, ScAccumulatorConfig

__all__ = ["ScAccumulator", "sc_input_layout", "sc_output_layout"]


def sc_input_layout(cfg: ScAccumulatorConfig) -> data.ArrayLayout:
    """One input beat: ``streams`` probability codes of ``code_bits`` bits."""
    return data.ArrayLayout(unsigned(cfg.code_bits), cfg.streams)


def sc_output_layout(cfg: ScAccumulatorConfig) -> data.StructLayout:
    """One output beat: the accumulated ``count`` and ``sign`` (1 means +1, 0 means -1)."""
    return data.StructLayout({"count": unsigned(cfg.count_bits), "sign": unsigned(1)})


class ScAccumulator(wiring.Component):
    """LFSR stochastic number generators, bitstream accumulation and threshold to sign.

    Each ``i_stream`` beat carries ``cfg.streams`` probability codes. The block then runs
    ``cfg.length`` bitstream cycles: in each, SNG ``k`` emits ``code_k >= lfsr_k`` and its
    Galois LFSR steps; the bits are counted (COUNT) or majority-voted then counted
    (MAJORITY). The ``o_stream`` beat carries the count and its sign
    (``2 * count >= cfg.votes_per_vector``). Bit-exact with
    ``chipforge.sim.ref.sc_accumulator.sc_accumulate``; the LFSRs reset to
    ``cfg.lfsr_seeds`` and run free across vectors, stepping on bitstream cycles only.

    Latency: the result is valid ``cfg.length + 1`` cycles after the input beat is
    accepted (``cfg.length`` bitstream cycles, then the output register).
    Throughput: one vector every ``cfg.length + 1`` cycles (``cfg.cycles_per_vector``),
    back to back while ``o_stream`` is ready: ``i_stream.ready`` is high only while the
    block is idle and no result waits on ``o_stream``.
    """

    def __init__(self, cfg: ScAccumulatorConfig):
        if not isinstance(cfg, ScAccumulatorConfig):
            raise TypeError(f"cfg must be a ScAccumulatorConfig, not {cfg!r}")
        self.cfg = cfg
        super().__init__({
            "i_stream": In(stream.Signature(sc_input_layout(cfg))),
            "o_stream": Out(stream.Signature(sc_output_layout(cfg))),
        })

    def elaborate(self, platform):
        cfg = self.cfg
        m = Module()
        mask = cfg.lfsr_mask

        codes = Signal(sc_input_layout(cfg))
        busy = Signal()
        cycle = Signal(range(max(cfg.length, 2)))
        count = Signal(cfg.count_bits)
        lfsrs = [Signal(cfg.code_bits, name=f"lfsr{k}", init=seed)
                 for k, seed in enumerate(cfg.lfsr_seeds)]

        bits = [Signal(name=f"bit{k}") for k in range(cfg.streams)]
        m.d.comb += [bit.eq(codes[k] >= lfsr) for k, (bit, lfsr) in enumerate(zip(bits, lfsrs,
                                                                                   strict=True))]
        ones = Signal(range(cfg.streams + 1))
        m.d.comb += ones.eq(sum(bits))
        increment = Signal(range(cfg.streams + 1))
        if cfg.accumulation is ScAccumulation.COUNT:
            m.d.comb += increment.eq(ones)
        else:
            m.d.comb += increment.eq(2 * ones >= cfg.streams)
        count_next = Signal(cfg.count_bits)
        m.d.comb += count_next.eq(count + increment)

        m.d.comb += self.i_stream.ready.eq(~busy & (~self.o_stream.valid | self.o_stream.ready))
        with m.If(self.o_stream.valid & self.o_stream.ready):
            m.d.sync += self.o_stream.valid.eq(0)
        with m.If(self.i_stream.valid & self.i_stream.ready):
            m.d.sync += [codes.eq(self.i_stream.payload), busy.eq(1), cycle.eq(0),
                         count.eq(0)]
        with m.If(busy):
            # Galois step: shift right, toggle the tap mask when the bit shifted out is 1.
            for lfsr in lfsrs:
                m.d.sync += lfsr.eq((lfsr >> 1) ^ (lfsr[0].replicate(cfg.code_bits) & mask))
            m.d.sync += [count.eq(count_next), cycle.eq(cycle + 1)]
            with m.If(cycle == cfg.length - 1):
                m.d.sync += [
                    busy.eq(0),
                    self.o_stream.payload.count.eq(count_next),
                    self.o_stream.payload.sign.eq(2 * count_next >= cfg.votes_per_vector),
                    self.o_stream.valid.eq(1),
                ]
        return m
