"""Integer reference of one ReRAM crossbar's bit-serial matrix-vector multiply (ISAAC IMA).

The pipeline, for an input batch ``x`` (batch, rows) and weights ``W`` (rows, cols):

1. :func:`encode_weights` turns each signed weight into ``slices`` cell levels of
   ``cell_bits`` bits (offset encoding with ISAAC's unit column, two columns of magnitudes,
   ISQED's fault-tolerant differential pair, or FORMS' magnitude with a digital sign per
   column), optionally flipping whole physical columns (ISAAC §4.4).
2. :func:`input_slices` splits each two's-complement input into DAC slices, most
   significant first; the sign bit is a 1-bit cycle of its own.
3. :func:`adc_codes` computes, per cycle, each physical column's analog sum
   ``sum_i a_i * level_i`` and digitizes it with :func:`adc_convert`, an ideal ADC that
   rounds and saturates at ``2**adc_bits - 1``. Analog non-idealities (device variation,
   read noise, faults: :mod:`chipforge.sim.reram`) perturb the sums and call the same
   :func:`adc_convert`; they never fork it.
4. :func:`shift_add` is the digital datapath that ``chipforge.hw.shift_add.ShiftAdd``
   implements: it undoes flips and the offset bias, weights the slices, and runs the
   MSB-first Horner recurrence over input cycles (the sign cycle subtracts).

:func:`crossbar_mvm` chains them and equals ``x @ W`` exactly whenever no code saturates.

All arithmetic is integer. The analog sums go through a float GEMM because BLAS has no
integer GEMM; the sums are exact because they stay far below 2**24 (float32) or 2**53.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from chipforge.config import CrossbarConfig, WeightEncoding

__all__ = [
    "AdcReadout",
    "CrossbarCells",
    "adc_codes",
    "adc_convert",
    "crossbar_mvm",
    "encode_weights",
    "flip_columns",
    "input_slices",
    "shift_add",
    "weight_levels",
]


@dataclass(frozen=True)
class CrossbarCells:
    """Cell levels of one crossbar, as programmed."""

    levels: np.ndarray
    """(rows, cols, P) integer levels in ``0 .. 2**cell_bits - 1``; P physical columns per
    weight column: ``slices`` (offset, magnitude) or ``2 * slices`` (w+ slices then w-
    slices; w_a then w_b for the differential pair), least significant slice first."""
    flipped: np.ndarray
    """(cols, P) bool: physical column stored complemented (ISAAC flip encoding)."""


@dataclass(frozen=True)
class AdcReadout:
    """What the ADCs hand to the digital side, per input vector and cycle."""

    codes: np.ndarray
    """(batch, cycles, cols, P) int64 ADC codes of the physical weight columns."""
    unit: np.ndarray
    """(batch, cycles) int64 code of the unit column (zeros without one)."""
    flipped: np.ndarray
    """(cols, P) bool flip flag of each physical column."""
    saturated: bool
    """Whether any code (including the unit column's) hit the ADC's full scale from above."""


def _as_int_array(name: str, value: np.ndarray, ndim: int, lo: int, hi: int) -> np.ndarray:
    arr = np.asarray(value)
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-D array, not shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        if arr.size and not np.array_equal(arr, np.round(arr)):
            raise ValueError(f"{name} must hold integers, not dtype {arr.dtype} with fractions")
    arr = arr.astype(np.int64)
    if arr.size and (arr.min() < lo or arr.max() > hi):
        raise ValueError(f"{name} values must lie in {lo}..{hi}, "
                         f"not {int(arr.min())}..{int(arr.max())}")
    return arr


def weight_levels(weights: np.ndarray, cfg: CrossbarConfig) -> np.ndarray:
    """Cell levels (..., P) of signed integer weights of any shape, before any flip.

    The slicing rule of :func:`encode_weights` without its shape check, for placement
    passes that tile a large matrix over many crossbars themselves.
    """
    w = np.asarray(weights, dtype=np.int64)
    mask = (1 << cfg.cell_bits) - 1
    shifts = cfg.cell_bits * np.arange(cfg.slices)
    encoding = cfg.weight_encoding
    if encoding is WeightEncoding.OFFSET:
        unsigned = w + (1 << (cfg.weight_bits - 1))
        return (unsigned[..., None] >> shifts) & mask
    if encoding is WeightEncoding.MAGNITUDE:
        return (np.abs(w)[..., None] >> shifts) & mask
    pos, neg = np.maximum(w, 0), np.maximum(-w, 0)
    if encoding is WeightEncoding.DIFFERENTIAL:
        # w_a = M - w-, w_b = M - w+: every cell of a zero weight sits at the top level.
        top = (1 << (cfg.slices * cfg.cell_bits)) - 1
        pos, neg = top - neg, top - pos
    return np.concatenate([(pos[..., None] >> shifts) & mask,
                           (neg[..., None] >> shifts) & mask], axis=-1)


def flip_columns(levels: np.ndarray, rows: int, cell_bits: int) -> np.ndarray:
    """ISAAC's flip rule: flip a column when its levels sum past half the maximum.

    ``levels`` (rows, ...) -> bool (...). Then no input can push the column's partial sum
    past half the full scale, and the ADC needs one bit less.
    """
    return 2 * np.asarray(levels).sum(axis=0) > rows * ((1 << cell_bits) - 1)


def encode_weights(weights: np.ndarray, cfg: CrossbarConfig) -> CrossbarCells:
    """Program signed integer weights (rows, cols) into cell levels."""
    lo, hi = cfg.weight_range
    w = _as_int_array("weights", weights, 2, lo, hi)
    rows, cols = w.shape
    if rows > cfg.rows or cols > cfg.cols:
        raise ValueError(f"weights of shape {w.shape} do not fit a {cfg.rows}x{cfg.cols} crossbar")
    levels = weight_levels(w, cfg)
    if cfg.flip_encoding:
        flipped = flip_columns(levels, rows, cfg.cell_bits)
        levels = np.where(flipped[None], ((1 << cfg.cell_bits) - 1) - levels, levels)
    else:
        flipped = np.zeros(levels.shape[1:], dtype=bool)
    return CrossbarCells(levels=levels, flipped=flipped)


def input_slices(x: np.ndarray, cfg: CrossbarConfig) -> np.ndarray:
    """DAC slice values (cycles, batch, rows) of integer inputs (batch, rows), MSB first."""
    lo, hi = cfg.input_range
    x = _as_int_array("inputs", x, 2, lo, hi)
    unsigned = x & ((1 << cfg.input_bits) - 1)  # two's complement bit pattern
    out = np.empty((cfg.input_cycles, *x.shape), dtype=np.int64)
    top = cfg.input_bits
    for cycle, width in enumerate(cfg.input_slice_widths):
        top -= width
        out[cycle] = (unsigned >> top) & ((1 << width) - 1)
    return out


def adc_convert(sums: np.ndarray, adc_bits: int, out: np.ndarray | None = None) -> np.ndarray:
    """An ideal ADC: analog column sums (in units of one level step) to integer codes.

    Rounds to the nearest step and saturates to ``0 .. 2**adc_bits - 1``. Exact integer
    sums pass through unchanged while they fit. Returns an array of the input's float
    dtype (int64 for integer input) holding integers; the caller casts where it needs to.
    ``out`` (float input only) receives the codes, e.g. ``out=sums`` converts in place.
    """
    sums = np.asarray(sums)
    full = (1 << adc_bits) - 1
    if np.issubdtype(sums.dtype, np.integer):
        return np.clip(sums, 0, full).astype(np.int64)
    codes = np.rint(sums, out=out)
    return np.clip(codes, 0, full, out=codes)


def adc_codes(x: np.ndarray, cells: CrossbarCells, cfg: CrossbarConfig) -> AdcReadout:
    """Ideal, saturating ADC codes of every physical column for every input cycle."""
    slices = input_slices(x, cfg)
    cycles, batch, rows = slices.shape
    if rows != cells.levels.shape[0]:
        raise ValueError(f"inputs have {rows} rows but the weights have {cells.levels.shape[0]}")
    _, cols, phys = cells.levels.shape
    bound = rows * ((1 << cfg.dac_bits) - 1) * ((1 << cfg.cell_bits) - 1)
    dtype = np.float32 if bound < (1 << 24) else np.float64
    stacked = slices.reshape(cycles * batch, rows).astype(dtype)
    sums = stacked @ cells.levels.reshape(rows, cols * phys).astype(dtype)
    sums = np.rint(sums).astype(np.int64).reshape(cycles, batch, cols, phys)
    full = cfg.adc_max_code
    if cfg.has_unit_column:
        unit = slices.sum(axis=2)  # the unit column: every cell at level 1
    else:
        unit = np.zeros((cycles, batch), dtype=np.int64)
    saturated = bool((sums > full).any() or (unit > full).any())
    codes = adc_convert(sums, cfg.adc_bits).transpose(1, 0, 2, 3)
    unit = adc_convert(unit, cfg.adc_bits).T
    return AdcReadout(codes=np.ascontiguousarray(codes), unit=np.ascontiguousarray(unit),
                      flipped=cells.flipped, saturated=saturated)


def shift_add(codes: np.ndarray, unit: np.ndarray, flipped: np.ndarray,
              cfg: CrossbarConfig, column_signs: np.ndarray | None = None) -> np.ndarray:
    """The digital shift-and-add: ADC codes (batch, cycles, cols, P) -> dot products.

    Per cycle, a flipped column's value is ``(2**cell_bits - 1) * unit - code``; the slices
    are weighted by ``2**(cell_bits * s)``; offset encoding subtracts
    ``2**(weight_bits - 1) * unit``, two-column and differential encodings subtract the
    second column group, magnitude encoding multiplies by ``column_signs`` (cols,) of +-1
    (FORMS' sign indicator; required for it). Across cycles, MSB first: the sign cycle
    starts the accumulator at ``-value``, every later cycle does
    ``acc = (acc << width) + value``. Returns int64 (batch, cols).
    """
    codes = np.asarray(codes, dtype=np.int64)
    unit = np.asarray(unit, dtype=np.int64)
    flipped = np.asarray(flipped, dtype=bool)
    batch, cycles, cols, phys = codes.shape
    if cycles != cfg.input_cycles:
        raise ValueError(f"codes have {cycles} cycles but the config feeds {cfg.input_cycles}")
    if phys != cfg.physical_cols_per_weight:
        raise ValueError(f"codes have {phys} physical columns per weight, "
                         f"the config needs {cfg.physical_cols_per_weight}")
    level_max = (1 << cfg.cell_bits) - 1
    values = np.where(flipped[None, None], level_max * unit[:, :, None, None] - codes, codes)
    weights = 1 << (cfg.cell_bits * np.arange(cfg.slices, dtype=np.int64))
    encoding = cfg.weight_encoding
    if (column_signs is None) != (encoding is not WeightEncoding.MAGNITUDE):
        raise ValueError("column_signs must be given exactly when weight_encoding is "
                         f"MAGNITUDE (it is {encoding.name})")
    if encoding is WeightEncoding.OFFSET:
        per_cycle = values @ weights - (1 << (cfg.weight_bits - 1)) * unit[:, :, None]
    elif encoding is WeightEncoding.MAGNITUDE:
        signs = np.asarray(column_signs, dtype=np.int64)
        if signs.shape != (cols,) or not np.isin(signs, (-1, 1)).all():
            raise ValueError(f"column_signs must be {cols} values of +1 / -1, "
                             f"not shape {signs.shape}")
        per_cycle = (values @ weights) * signs
    else:
        per_cycle = values[..., :cfg.slices] @ weights - values[..., cfg.slices:] @ weights
    acc = np.zeros((batch, cols), dtype=np.int64)
    for cycle, width in enumerate(cfg.input_slice_widths):
        if cycle == 0:
            acc = -per_cycle[:, 0] if cfg.signed_inputs else per_cycle[:, 0]
        else:
            acc = (acc << width) + per_cycle[:, cycle]
    return acc


def crossbar_mvm(x: np.ndarray, weights: np.ndarray, cfg: CrossbarConfig) -> np.ndarray:
    """``x @ weights`` computed the way the crossbar does (exact unless an ADC saturates).

    With MAGNITUDE encoding every column must be polarized (all non-zero weights of a
    column share one sign); the sign goes to the digital side.
    """
    cells = encode_weights(weights, cfg)
    readout = adc_codes(x, cells, cfg)
    signs = None
    if cfg.weight_encoding is WeightEncoding.MAGNITUDE:
        w = np.asarray(weights)
        if ((w > 0).any(axis=0) & (w < 0).any(axis=0)).any():
            raise ValueError("MAGNITUDE encoding needs polarized columns (one sign per column)")
        signs = np.where((w < 0).any(axis=0), -1, 1)
    return shift_add(readout.codes, readout.unit, readout.flipped, cfg, signs)
