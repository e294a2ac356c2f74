"""A whole ReRAM accelerator tile around an external (analog) crossbar array.

ISAAC and FORMS variants, generated from an accelerator config (:func:`tile_config`). The
analog crossbars and their ADCs stay outside: the tile drives input bit planes on the
crossbar port and receives the ADC codes back. Everything digital is inside: the AXI4-Stream
activation input, the input buffer (a simple dual-port memory, inferred as block RAM), the
bit-serial DAC registers, the shift-and-add units of every column, the adder tree across
row groups, requantization and ReLU, the output buffer and the AXI4-Stream result output.
The register map is in :data:`REGISTER_MAP`; the reference model is
:mod:`chipforge.sim.ref.reram_tile`, whose :func:`~chipforge.sim.ref.reram_tile.tile_timeline`
is the cycle model.
"""

from __future__ import annotations

import dataclasses

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out

from chipforge.config import ConfigBase, CrossbarConfig, WeightEncoding, check_int
from chipforge.hw.shift_add import (
    ShiftAdd,
    _signed_width,
    column_value,
    shift_add_layout,
    shift_add_value_range,
    tree_sum,
)

__all__ = ["REGISTER_MAP", "ReramTile", "TileConfig", "tile_result_range"]

REGISTER_MAP = {
    "CTRL": (0x000, "bit 0 RELU: clip results to 0..2**out_bits-1 (else the signed out_bits "
                    "range); bit 1 RAW: emit the raw dot products, no requantization"),
    "K": (0x001, "inputs per vector (1..rows_total); the vector is the first K beats"),
    "N": (0x002, "output columns per vector (1..cols)"),
    "SHIFT": (0x003, "requantization right shift S (0..63)"),
    "MULT": (0x100, "+c: signed requantization multiplier of column c"),
    "BIAS": (0x200, "+c: signed requantization bias of column c (in units of 2**-S)"),
    "META": (0x400, "+g*cols+c: column metadata of row group g: bits P-1..0 the ISAAC flip "
                    "flags of the physical columns, bit P the FORMS sign indicator (1: minus)"),
}
"""Registers: ``name: (address, meaning)``. Written through ``cfg_we/cfg_addr/cfg_wdata``
(64-bit data) while the tile is idle (``busy`` low and no vector buffered). Requantized
result of column c: ``clip((acc * MULT[c] + BIAS[c] + 2**(S-1)) >> S)`` (``>> 0`` adds 0)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class TileConfig(ConfigBase):
    """Sizes of one generated tile."""

    crossbar: CrossbarConfig
    """One row group's crossbar: an ISAAC crossbar, or one FORMS fragment (``rows`` =
    fragment size, MAGNITUDE encoding). ``input_bits``/``signed_inputs`` are the layer's."""
    row_groups: int = 2
    """Row groups summed by the adder tree (ISAAC: crossbars; FORMS: fragments)."""
    cols: int = 8
    """Weight columns computed per vector."""
    out_bits: int = 8
    """Bits of a requantized result."""
    mult_bits: int = 32
    """Bits of a requantization multiplier (signed)."""
    accelerator: str = "isaac"
    """Name of the accelerator preset it was derived from (documentation only)."""

    def __post_init__(self) -> None:
        if not isinstance(self.crossbar, CrossbarConfig):
            raise ValueError(f"crossbar must be a CrossbarConfig, not {self.crossbar!r}")
        check_int("row_groups", self.row_groups, 1, 256)
        check_int("cols", self.cols, 1, 256)
        check_int("out_bits", self.out_bits, 2, 32)
        check_int("mult_bits", self.mult_bits, 2, 48)
        if self.crossbar.dac_bits != 1:
            raise ValueError(f"crossbar.dac_bits must be 1 (bit-serial planes), "
                             f"not {self.crossbar.dac_bits}")
        if self.forms and self.crossbar.signed_inputs:
            raise ValueError("a FORMS tile (MAGNITUDE encoding) needs unsigned inputs "
                             "(crossbar.signed_inputs=False): zero-skipping counts leading "
                             "zeros")
        if self.row_groups * self.cols > 0x400:
            raise ValueError(f"row_groups * cols must be at most 1024 (the META window), "
                             f"not {self.row_groups * self.cols}")

    @property
    def forms(self) -> bool:
        """FORMS variant: sign indicators, LSB-first planes with zero-skipping."""
        return self.crossbar.weight_encoding is WeightEncoding.MAGNITUDE

    @property
    def rows_total(self) -> int:
        return self.crossbar.rows * self.row_groups

    @property
    def input_bits(self) -> int:
        return self.crossbar.input_bits

    @property
    def meta_bits(self) -> int:
        return self.crossbar.physical_cols_per_weight + 1


def _select(index, values):
    """``values[index]`` (0 past the end) as an AND-OR of plain expressions: the Verilog gets
    continuous assignments, which Icarus evaluates at time 0 (a case statement whose select
    keeps its initial value would stay X there)."""
    out = 0
    for i, v in enumerate(values):
        out = out | Mux(index == i, v, 0)
    return out


def tile_result_range(cfg: TileConfig) -> tuple[int, int]:
    """Bounds of a column's dot product over every possible ADC code (sizes the datapath)."""
    xb = cfg.crossbar
    if cfg.forms:
        (lo, hi), _ = shift_add_value_range(xb)
        bound = max(-lo, hi) * cfg.row_groups * ((1 << xb.input_bits) - 1)
        return -bound, bound
    _, (lo, hi) = shift_add_value_range(xb)
    return lo * cfg.row_groups, hi * cfg.row_groups


def adc_port_layout(cfg: TileConfig) -> data.StructLayout:
    """The ADC codes of one plane: ``groups[g]`` has :func:`shift_add_layout`'s ``codes`` of
    every column (``cols[c][p]``) and the group's unit-column code."""
    xb = cfg.crossbar
    group = {"cols": data.ArrayLayout(data.ArrayLayout(unsigned(xb.adc_bits),
                                                       xb.physical_cols_per_weight), cfg.cols)}
    if xb.has_unit_column:
        group["unit"] = unsigned(xb.adc_bits)
    return data.StructLayout({"groups": data.ArrayLayout(data.StructLayout(group),
                                                         cfg.row_groups)})


class ReramTile(wiring.Component):
    """One ReRAM tile: activations in, requantized results out (see the module doc).

    Ports: ``s_axis_tdata/tvalid/tready`` (one activation per beat, ``input_bits`` wide),
    ``m_axis_tdata/tvalid/tready/tlast`` (one result per beat, column order, ``tlast`` on a
    vector's last column), ``cfg_we/cfg_addr/cfg_wdata`` (:data:`REGISTER_MAP`), the crossbar
    port ``xbar_dac`` (one bit per row, row ``g * rows + r``), ``xbar_dac_valid`` (one-cycle
    request per plane; ``xbar_dac`` holds until the answer), ``xbar_active`` (FORMS: the
    row groups whose conversion is needed), ``xbar_adc_valid``/``xbar_adc_codes`` (the
    answer, layout :func:`adc_port_layout`), and ``busy``.

    Timing (per vector; L = cycles from a request to its answer; P = planes):
    the input buffer takes one beat per cycle while it is not full (the next vector fills
    while this one computes). Then 1 cycle to start, K cycles to load the DAC registers from
    the buffer (the buffer is free again after them), per plane 1 request cycle + L waiting
    cycles, then (ISAAC) 2 cycles for the shift-and-add units' second pipeline stage and
    the balanced adder tree across row groups or (FORMS) 1 cycle to see that nothing is
    left to shift (the last plane's registered sum is accumulated in it), N - 1 +
    ``REQUANT_STAGES`` cycles of requantization into the output buffer (a pipeline of
    ``chipforge.sim.ref.reram_tile.REQUANT_STAGES`` stages), and N output beats, one per cycle while
    ``m_axis_tready`` is high. ISAAC: P = input_bits; FORMS: P = the vector's effective
    input cycles (its widest input's bit length; 0 for an all-zero vector): planes are
    driven LSB first and stop when every remaining bit is zero (zero-skipping), and
    ``xbar_active`` drops per fragment as its own bits run out.
    """

    def __init__(self, cfg: TileConfig):
        if not isinstance(cfg, TileConfig):
            raise TypeError(f"cfg must be a TileConfig, not {cfg!r}")
        self.cfg = cfg
        lo, hi = tile_result_range(cfg)
        self.result_width = _signed_width(lo, hi)
        self.data_width = 32 if max(self.result_width, cfg.out_bits) <= 32 else 64
        xb = cfg.crossbar
        super().__init__({
            "s_axis_tdata": In(xb.input_bits),
            "s_axis_tvalid": In(1),
            "s_axis_tready": Out(1),
            "m_axis_tdata": Out(self.data_width),
            "m_axis_tvalid": Out(1),
            "m_axis_tready": In(1),
            "m_axis_tlast": Out(1),
            "cfg_we": In(1),
            "cfg_addr": In(12),
            "cfg_wdata": In(64),
            "xbar_dac": Out(cfg.rows_total),
            "xbar_dac_valid": Out(1),
            "xbar_active": Out(cfg.row_groups),
            "xbar_adc_valid": In(1),
            "xbar_adc_codes": In(adc_port_layout(cfg)),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        cfg, xb = self.cfg, self.cfg.crossbar
        m = Module()
        rows, groups, cols, bits = cfg.rows_total, cfg.row_groups, cfg.cols, xb.input_bits
        phys = xb.physical_cols_per_weight

        # ---- registers (REGISTER_MAP) ----
        relu = Signal(name="reg_relu")
        raw = Signal(name="reg_raw")
        k_reg = Signal(range(rows + 1), name="reg_k", init=rows)
        n_reg = Signal(range(cols + 1), name="reg_n", init=cols)
        shift_reg = Signal(6, name="reg_shift")
        mult = [Signal(signed(cfg.mult_bits), name=f"reg_mult{c}") for c in range(cols)]
        bias = [Signal(signed(64), name=f"reg_bias{c}") for c in range(cols)]
        meta = [[Signal(cfg.meta_bits, name=f"reg_meta{g}_{c}") for c in range(cols)]
                for g in range(groups)]
        with m.If(self.cfg_we):
            with m.Switch(self.cfg_addr):
                with m.Case(0x000):
                    m.d.sync += [relu.eq(self.cfg_wdata[0]), raw.eq(self.cfg_wdata[1])]
                with m.Case(0x001):
                    m.d.sync += k_reg.eq(self.cfg_wdata)
                with m.Case(0x002):
                    m.d.sync += n_reg.eq(self.cfg_wdata)
                with m.Case(0x003):
                    m.d.sync += shift_reg.eq(self.cfg_wdata)
                for c in range(cols):
                    with m.Case(0x100 + c):
                        m.d.sync += mult[c].eq(self.cfg_wdata)
                    with m.Case(0x200 + c):
                        m.d.sync += bias[c].eq(self.cfg_wdata)
                for g in range(groups):
                    for c in range(cols):
                        with m.Case(0x400 + g * cols + c):
                            m.d.sync += meta[g][c].eq(self.cfg_wdata)

        # ---- input buffer: written by the stream, read into the DAC registers ----
        buf = memory.Memory(shape=unsigned(bits), depth=rows, init=[])
        m.submodules.input_buffer = buf
        wr = buf.write_port()
        rd = buf.read_port()
        fill = Signal(range(rows + 1))
        full = Signal()
        m.d.comb += self.s_axis_tready.eq(~full)
        m.d.comb += [wr.addr.eq(fill), wr.data.eq(self.s_axis_tdata),
                     wr.en.eq(self.s_axis_tvalid & ~full)]
        with m.If(self.s_axis_tvalid & ~full):
            with m.If(fill == k_reg - 1):
                m.d.sync += [fill.eq(0), full.eq(1)]
            with m.Else():
                m.d.sync += fill.eq(fill + 1)

        # ---- DAC registers: a chain loaded from the buffer, shifted once per plane ----
        dac = [Signal(bits, name=f"dac{r}") for r in range(rows)]
        if cfg.forms:   # LSB first
            m.d.comb += self.xbar_dac.eq(Cat(*(d[0] for d in dac)))
        else:           # MSB first
            m.d.comb += self.xbar_dac.eq(Cat(*(d[bits - 1] for d in dac)))
        group_left = [Signal(name=f"group_left{g}") for g in range(groups)]
        for g in range(groups):
            m.d.comb += group_left[g].eq(Cat(*(dac[g * xb.rows + r] != 0
                                                for r in range(xb.rows))).any())
        anything_left = Signal()
        m.d.comb += anything_left.eq(Cat(*group_left).any())
        if cfg.forms:
            m.d.comb += self.xbar_active.eq(Cat(*group_left))
        else:
            m.d.comb += self.xbar_active.eq((1 << groups) - 1)

        # ---- per-column datapath ----
        codes = self.xbar_adc_codes.groups
        result = [Signal(signed(self.result_width), name=f"result{c}") for c in range(cols)]
        plane = Signal(range(bits + 1))
        take_plane = Signal()       # an answer arrives while waiting for it
        sum_results = Signal()      # ISAAC: shift-and-add results are valid
        clear_acc = Signal()
        plane_taken = Signal()      # FORMS: the cycle after an answer (accumulate it)
        held_plane = Signal(range(bits + 1))
        if cfg.forms:
            m.d.sync += plane_taken.eq(take_plane)
            with m.If(take_plane):
                m.d.sync += held_plane.eq(plane)
            (vlo, vhi), _ = shift_add_value_range(xb)
            value_width = _signed_width(vlo, vhi)
            for c in range(cols):
                signed_values = []
                for g in range(groups):
                    beat = Signal(shift_add_layout(xb), name=f"beat{g}_{c}")
                    m.d.comb += beat.codes.eq(codes[g].cols[c])
                    if xb.has_unit_column:
                        m.d.comb += beat.unit.eq(codes[g].unit)
                    if xb.flip_encoding:
                        m.d.comb += beat.flip.eq(meta[g][c][:phys])
                    value = column_value(m, xb, beat, value_width, prefix=f"g{g}c{c}_",
                                         enable=self.xbar_active[g])
                    signed_values.append(Mux(meta[g][c][phys], -value, value))
                column_sum = Signal(signed(value_width + (groups - 1).bit_length() + 1),
                                    name=f"plane_sum{c}")
                m.d.comb += column_sum.eq(tree_sum(signed_values))
                # Registered, then accumulated in the next cycle (the REQUEST cycle that
                # follows every answer): the column values and the accumulator's shift-add
                # are separate register-to-register paths.
                held_sum = Signal.like(column_sum, name=f"held_plane_sum{c}")
                with m.If(take_plane):
                    m.d.sync += held_sum.eq(column_sum)
                with m.If(clear_acc):
                    m.d.sync += result[c].eq(0)
                with m.Elif(plane_taken):
                    m.d.sync += result[c].eq(result[c] + (held_sum << held_plane))
        else:
            for c in range(cols):
                dots = []
                for g in range(groups):
                    unit = ShiftAdd(xb)
                    m.submodules[f"shift_add{g}_{c}"] = unit
                    payload = unit.i_stream.payload
                    m.d.comb += payload.codes.eq(codes[g].cols[c])
                    if xb.has_unit_column:
                        m.d.comb += payload.unit.eq(codes[g].unit)
                    if xb.flip_encoding:
                        m.d.comb += payload.flip.eq(meta[g][c][:phys])
                    m.d.comb += [unit.i_stream.valid.eq(take_plane),
                                 unit.o_stream.ready.eq(sum_results)]
                    dots.append(unit.o_stream.payload)
                with m.If(sum_results):       # the adder tree across row groups
                    m.d.sync += result[c].eq(tree_sum(dots))

        # ---- requantization into the output buffer, then the output stream ----
        # Three stages (REQUANT_STAGES): (1) the two halves of the multiplier (two
        # result_width x mult_bits/2 products instead of one full one: the iCE40 builds
        # them from LUTs), (2) their sum plus bias and rounding, (3) the shift and the clip
        # into the output buffer.
        out_buf = [Signal(self.data_width, name=f"out_buf{c}") for c in range(cols)]
        low_bits = cfg.mult_bits // 2
        product_lo = Signal(signed(self.result_width + low_bits + 1))
        product_hi = Signal(signed(self.result_width + cfg.mult_bits - low_bits))
        product_col = Signal(range(cols + 2))
        scaled_col = Signal(range(cols + 2))
        rq_col = Signal(range(cols + 2))
        out_col = Signal(range(cols + 1))
        hi_relu, lo_relu = (1 << cfg.out_bits) - 1, 0
        hi_signed, lo_signed = (1 << (cfg.out_bits - 1)) - 1, -(1 << (cfg.out_bits - 1))
        wide = max(self.result_width + cfg.mult_bits, 64) + 2
        scaled = Signal(signed(wide))
        rounded = Signal(signed(wide))
        bias_sel = Signal(signed(64))
        m.d.comb += bias_sel.eq(_select(product_col, bias))
        m.d.comb += rounded.eq(scaled >> shift_reg)
        clipped = Signal(signed(cfg.out_bits + 1))
        lo = Mux(relu, lo_relu, lo_signed)
        hi = Mux(relu, hi_relu, hi_signed)
        with m.If(rounded < lo):
            m.d.comb += clipped.eq(lo)
        with m.Elif(rounded > hi):
            m.d.comb += clipped.eq(hi)
        with m.Else():
            m.d.comb += clipped.eq(rounded)
        result_sel = Signal(signed(self.result_width))
        mult_sel = Signal(signed(cfg.mult_bits))
        m.d.comb += [result_sel.eq(_select(rq_col, result)), mult_sel.eq(_select(rq_col, mult))]

        out_word = Signal(self.data_width)
        m.d.comb += out_word.eq(_select(out_col, out_buf))
        m.d.comb += self.m_axis_tdata.eq(out_word)
        m.d.comb += self.m_axis_tlast.eq(out_col == n_reg - 1)

        # ---- control ----
        with m.FSM(name="tile") as fsm:
            with m.State("IDLE"):
                m.d.comb += rd.addr.eq(k_reg - 1)
                with m.If(full):
                    m.d.sync += [d.eq(0) for d in dac]
                    m.d.sync += plane.eq(0)
                    m.d.sync += fill.eq(k_reg - 1)   # reused as the load counter
                    m.next = "LOAD"
            with m.State("LOAD"):
                m.d.sync += dac[0].eq(rd.data)
                m.d.sync += [dac[r + 1].eq(dac[r]) for r in range(rows - 1)]
                m.d.comb += rd.addr.eq(fill - 1)
                with m.If(fill == 0):
                    m.d.sync += full.eq(0)
                    m.d.comb += clear_acc.eq(1)
                    m.next = "REQUEST"
                with m.Else():
                    m.d.sync += fill.eq(fill - 1)
            with m.State("REQUEST"):
                if cfg.forms:
                    with m.If(anything_left):
                        m.next = "WAIT"
                    with m.Else():
                        m.d.sync += rq_col.eq(0)
                        m.next = "REQUANT"
                else:
                    m.next = "WAIT"
            with m.State("WAIT"):
                with m.If(self.xbar_adc_valid):
                    m.d.comb += take_plane.eq(1)
                    m.d.sync += plane.eq(plane + 1)
                    if cfg.forms:
                        m.d.sync += [d.eq(d >> 1) for d in dac]
                        m.next = "REQUEST"
                    else:
                        m.d.sync += [d.eq(d << 1) for d in dac]
                        with m.If(plane == bits - 1):
                            m.next = "DRAIN"
                        with m.Else():
                            m.next = "REQUEST"
            if not cfg.forms:
                with m.State("DRAIN"):      # the shift-and-add units' second stage
                    m.next = "SUM"
                with m.State("SUM"):
                    m.d.comb += sum_results.eq(1)
                    m.d.sync += rq_col.eq(0)
                    m.next = "REQUANT"
            with m.State("REQUANT"):
                # Column rq_col enters stage 1, product_col is in stage 2, scaled_col in
                # stage 3 (stored into the output buffer).
                m.d.sync += [product_lo.eq(result_sel * mult_sel[:low_bits]),
                             product_hi.eq(result_sel * mult_sel[low_bits:].as_signed()),
                             product_col.eq(rq_col), scaled_col.eq(product_col),
                             rq_col.eq(rq_col + 1)]
                m.d.sync += scaled.eq((product_hi << low_bits) + product_lo + bias_sel
                                      + ((Const(1, 65) << shift_reg) >> 1).as_signed())
                with m.If(rq_col >= 2):
                    with m.Switch(scaled_col):
                        for c in range(cols):
                            with m.Case(c):
                                m.d.sync += out_buf[c].eq(Mux(
                                    raw, result[c].as_signed(), clipped))
                with m.If(rq_col == n_reg + 1):
                    m.d.sync += out_col.eq(0)
                    m.next = "OUTPUT"
            with m.State("OUTPUT"):
                with m.If(self.m_axis_tready):
                    m.d.sync += out_col.eq(out_col + 1)
                    with m.If(out_col == n_reg - 1):
                        m.next = "IDLE"
        # The outputs decoded from the state as plain expressions (continuous assignments
        # in the Verilog: Icarus evaluates those at time 0, unlike a never-triggered
        # always block).
        request = fsm.ongoing("REQUEST")
        m.d.comb += [
            self.busy.eq(~fsm.ongoing("IDLE")),
            self.xbar_dac_valid.eq(request & anything_left if cfg.forms else request),
            self.m_axis_tvalid.eq(fsm.ongoing("OUTPUT")),
        ]
        return m


def tile_config(accelerator, k: int, n: int, *, input_bits: int = 8,
                signed_inputs: bool = False, crossbar_rows: int = 16,
                max_cols: int = 16) -> TileConfig:
    """A tile of ``accelerator`` (a ReRAM preset name or config) sized for a layer of K
    inputs and N outputs: ISAAC-style presets get row groups of ``crossbar_rows`` rows
    (capped at the preset's rows), FORMS presets fragments of ``fragment_size`` rows; the
    row groups cover K, the columns min(N, ``max_cols``) (more outputs take several column
    passes). The cells, weights, ADC and encoding are the preset's."""
    from chipforge.accelerators import PlacementScheme, get_accelerator

    accel = get_accelerator(accelerator)
    check_int("k", k, 1, 4096)
    check_int("n", n, 1, 4096)
    if accel.scheme is PlacementScheme.POLARIZED:
        rows = accel.fragment_size
    else:
        rows = min(accel.rows, crossbar_rows)
    xb = accel.crossbar_config(input_bits=input_bits, signed_inputs=signed_inputs)
    cols = min(n, max_cols)
    xb = xb.replace(rows=rows, cols=cols, adcs_per_crossbar=min(xb.adcs_per_crossbar, cols))
    return TileConfig(crossbar=xb, row_groups=-(-k // rows), cols=min(n, max_cols),
                      accelerator=accel.name)
