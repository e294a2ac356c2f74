"""The digital shift-and-add unit behind a ReRAM crossbar's ADCs (ISAAC's S+A)."""

from __future__ import annotations

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from chipforge.config import CrossbarConfig, WeightEncoding

__all__ = ["ShiftAdd", "column_value", "shift_add_layout", "shift_add_value_range",
           "tree_sum"]


def tree_sum(values):
    """Sum as a balanced tree of adders (depth log2(n), not a chain of n - 1): shorter
    combinational paths for the same result."""
    values = list(values)
    if not values:
        return 0
    while len(values) > 1:
        values = [values[i] + values[i + 1] if i + 1 < len(values) else values[i]
                  for i in range(0, len(values), 2)]
    return values[0]


def shift_add_layout(cfg: CrossbarConfig) -> data.StructLayout:
    """Payload of one input beat: the ADC codes of one weight column for one input cycle.

    - ``codes``: ``physical_cols_per_weight`` codes, least significant slice first (for
      two-column encoding, the w+ slices then the w- slices);
    - ``unit``: the unit column's code (offset encoding only);
    - ``flip``: one flag per physical column (flip encoding only).
    """
    fields = {"codes": data.ArrayLayout(unsigned(cfg.adc_bits), cfg.physical_cols_per_weight)}
    if cfg.has_unit_column:
        fields["unit"] = unsigned(cfg.adc_bits)
    if cfg.flip_encoding:
        fields["flip"] = unsigned(cfg.physical_cols_per_weight)
    return data.StructLayout(fields)


def _signed_width(lo: int, hi: int) -> int:
    width = 1
    while not (-(1 << (width - 1)) <= lo and hi <= (1 << (width - 1)) - 1):
        width += 1
    return width


def shift_add_value_range(cfg: CrossbarConfig) -> tuple[tuple[int, int], tuple[int, int]]:
    """Bounds, over every possible ADC code, of (per-cycle column value, accumulator).

    The datapath is sized from these so that it is bit-exact with the reference even when
    codes saturate or are arbitrary (the testbenches drive the extremes).
    """
    code_max = cfg.adc_max_code
    level_max = (1 << cfg.cell_bits) - 1
    slice_lo, slice_hi = ((-code_max, max(code_max, level_max * code_max))
                          if cfg.flip_encoding else (0, code_max))
    scale = sum(1 << (cfg.cell_bits * s) for s in range(cfg.slices))
    if cfg.weight_encoding is WeightEncoding.OFFSET:
        bias = 1 << (cfg.weight_bits - 1)
        value = (scale * slice_lo - bias * code_max, scale * slice_hi)
    else:
        value = (scale * (slice_lo - slice_hi), scale * (slice_hi - slice_lo))
    lo, hi = (-value[1], -value[0]) if cfg.signed_inputs else value
    acc = (lo, hi)
    for width in cfg.input_slice_widths[1:]:
        lo, hi = (lo << width) + value[0], (hi << width) + value[1]
        acc = (min(acc[0], lo), max(acc[1], hi))
    return value, acc


def column_value(m: Module, cfg: CrossbarConfig, beat, value_width: int, prefix: str = "",
                 enable=None) -> Signal:
    """The per-cycle value of one weight column from its ADC codes (combinational).

    ``beat`` has the fields of :func:`shift_add_layout` (``codes``, and ``unit``/``flip``
    where the config has them). Flipped columns become ``(2**cell_bits - 1) * unit - code``,
    slices are weighted by ``2**(cell_bits * s)``, and the offset bias or the w- slices are
    subtracted. ``enable`` (a 1-bit value) forces the value to 0 when low (FORMS: a
    fragment whose conversion was skipped). Shared by :class:`ShiftAdd` and the ReRAM tile.
    """
    level_max = (1 << cfg.cell_bits) - 1
    phys = cfg.physical_cols_per_weight
    unit = Signal(signed(cfg.adc_bits + 1), name=f"{prefix}unit")
    if cfg.has_unit_column:
        m.d.comb += unit.eq(beat.unit)
    slice_values = []
    for p in range(phys):
        v = Signal(signed(cfg.adc_bits + cfg.cell_bits + 2), name=f"{prefix}slice{p}")
        if cfg.flip_encoding:
            with m.If(beat.flip[p]):
                m.d.comb += v.eq(level_max * unit - beat.codes[p])
            with m.Else():
                m.d.comb += v.eq(beat.codes[p])
        else:
            m.d.comb += v.eq(beat.codes[p])
        slice_values.append(v)

    value = Signal(signed(value_width), name=f"{prefix}value")
    weighted = [v << (cfg.cell_bits * (p % cfg.slices)) for p, v in enumerate(slice_values)]
    if cfg.weight_encoding is WeightEncoding.OFFSET:
        total = tree_sum(weighted) - (unit << (cfg.weight_bits - 1))
    else:
        total = tree_sum(weighted[:cfg.slices]) - tree_sum(weighted[cfg.slices:])
    if enable is None:
        m.d.comb += value.eq(total)
    else:
        m.d.comb += value.eq(Mux(enable, total, 0))
    return value


class ShiftAdd(wiring.Component):
    """Shift-and-add of one crossbar weight column over the bit-serial input cycles.

    Each ``i_stream`` beat carries the ADC codes of one input cycle (layout
    :func:`shift_add_layout`), most significant input slice first; ``cfg.input_cycles``
    beats make one dot product, emitted on ``o_stream`` as a signed integer. Bit-exact with
    ``chipforge.sim.ref.crossbar.shift_add``.

    Per beat, flipped columns become ``(2**cell_bits - 1) * unit - code``, the slices are
    weighted by ``2**(cell_bits * s)`` (constant shifts), the offset bias
    ``2**(weight_bits - 1) * unit`` or the w- slices are subtracted, and the accumulator
    does ``acc = (acc << width) + value`` (the sign beat starts it at ``-value``).

    Two pipeline stages: the per-beat column value is registered (stage 1), then
    accumulated (stage 2), so the flip correction and slice adders and the accumulator's
    adder are separate register-to-register paths (iCE40 HX8K Fmax, docs/rtl.md).

    Latency: the result is valid 2 cycles after the last beat of a vector is accepted
    (:data:`chipforge.sim.cycle.shift_add.SHIFT_ADD_LATENCY`).
    Throughput: 1 beat per cycle, so one dot product every ``cfg.input_cycles`` cycles,
    back to back; ``i_stream.ready`` drops only while a result waits on ``o_stream``
    (then both stages hold).
    """

    def __init__(self, cfg: CrossbarConfig):
        if not isinstance(cfg, CrossbarConfig):
            raise TypeError(f"cfg must be a CrossbarConfig, not {cfg!r}")
        self.cfg = cfg
        (self.value_lo, self.value_hi), (self.acc_lo, self.acc_hi) = shift_add_value_range(cfg)
        self.value_width = _signed_width(self.value_lo, self.value_hi)
        self.acc_width = _signed_width(self.acc_lo, self.acc_hi)
        super().__init__({
            "i_stream": In(stream.Signature(shift_add_layout(cfg))),
            "o_stream": Out(stream.Signature(signed(self.acc_width))),
        })

    def elaborate(self, platform):
        cfg = self.cfg
        m = Module()
        beat_in = self.i_stream.payload

        value = column_value(m, cfg, beat_in, self.value_width)

        widths = cfg.input_slice_widths
        beat = Signal(range(max(len(widths), 2)))            # stage 1: the accepted beat
        held_value = Signal(signed(self.value_width))        # stage 2: its registered value
        held_beat = Signal(range(max(len(widths), 2)))
        held_valid = Signal()
        acc = Signal(signed(self.acc_width))
        acc_next = Signal(signed(self.acc_width))
        with m.Switch(held_beat):
            for index, width in enumerate(widths):
                with m.Case(index):
                    if index == 0:
                        m.d.comb += acc_next.eq(-held_value if cfg.signed_inputs
                                                else held_value)
                    else:
                        m.d.comb += acc_next.eq((acc << width) + held_value)

        move = Signal()      # the pipeline advances: no result waits on a stalled output
        m.d.comb += move.eq(~self.o_stream.valid | self.o_stream.ready)
        m.d.comb += self.i_stream.ready.eq(move)
        with m.If(self.o_stream.valid & self.o_stream.ready):
            m.d.sync += self.o_stream.valid.eq(0)
        with m.If(move):
            m.d.sync += held_valid.eq(self.i_stream.valid)
            with m.If(self.i_stream.valid):
                m.d.sync += [held_value.eq(value), held_beat.eq(beat),
                             beat.eq(Mux(beat == len(widths) - 1, 0, beat + 1))]
            with m.If(held_valid):
                with m.If(held_beat == len(widths) - 1):
                    m.d.sync += [self.o_stream.payload.eq(acc_next),
                                 self.o_stream.valid.eq(1)]
                with m.Else():
                    m.d.sync += acc.eq(acc_next)
        return m
