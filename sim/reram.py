"""Functional simulation of a model mapped onto ReRAM crossbars (the cores, CrossSim-style).

The placement passes (:mod:`chipforge.mappings.placement`) turn each quantized weighted
layer into a :class:`MappedLayer`: plain arrays of cell levels, the digital weight of each
physical column, flip flags and the input row feeding each crossbar row. This module runs
such layers on cells from :mod:`chipforge.sim.devices`, digitizes every column read with
the reference ADC (:func:`chipforge.sim.ref.crossbar.adc_convert`) and does the reference's
shift-and-add, vectorized over the batch, the input bit planes and all row groups.

The arithmetic of one layer, for input bit plane ``t`` (MSB first, from
:func:`chipforge.sim.ref.crossbar.input_slices`) and sample ``m``::

    sum[g, t, m, c]  = sum_r a[t, m, row(g, r)] * cell[g, r, c]         (analog, one ADC read)
    code[g, t, m, c] = adc_convert(sum + read noise)
    value            = (2**cell_bits - 1) * unit[g, t, m] - code   if flipped[g, c] else code
    cycle[t, m, n]   = sum_{g, p} coef[g, n*P + p] * value[g, t, m, n*P + p]
                       - offset * sum_g unit[g, t, m]
    y[m, n]          = -cycle[0] * 2**(bits below) + ...                    (Horner, MSB first)

``g`` is an *analog row group*: the rows summed on one bit line before one ADC read (a
whole crossbar's rows for ISAAC-style tiling, one fragment for FORMS). Partial sums of the
groups are accumulated digitally. ``unit`` is the unit column (the number of input ones
of the group, read through the same ADC). With ideal devices every step is exact integer
arithmetic, so the layer reproduces ``x_q @ w_q`` bit for bit unless an ADC saturates.

Read noise drawn anew for every cell at every read is, summed on a bit line, one Gaussian
per ADC read with variance ``sum_r a_r**2 * sigma_r**2``; for proportional noise that is
one more matrix product (``a**2 @ (sigma * G)**2``), so no per-cell noise is ever drawn.

How it runs. The numpy backend uses compiled kernels (:mod:`chipforge.sim.reram_kernels`):
short row groups (FORMS fragments) are read by one fused kernel that skips all-zero reads;
whole crossbars by one batched float32 GEMM ``a @ [cells | variances]`` followed by one
fused pass (noise, ADC, shift-and-add). The torch backend (:mod:`chipforge.sim.reram_torch`,
CPU or CUDA) does the same with tensor operations. A read's Gaussian is indexed by the
read (seed, layer, input row, group, cycle, column), the input row counted from the
sample's index in the whole run (:meth:`CrossbarMatmul.window`), so results do not depend
on chunking, sharding over workers (:mod:`chipforge.campaign`), the memory budget
(:mod:`chipforge.sim.memory`) or thread counts.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from chipforge.config import CrossbarConfig
from chipforge.sim.devices import (
    IDEAL_DEVICE,
    ReadNoiseModel,
    ReramDeviceConfig,
    draw_fault_map,
    program_cells,
)
from chipforge.sim.executor import exact_int_matmul, exact_product
from chipforge.sim.graph import Node

__all__ = ["CrossbarMatmul", "LayerStats", "MappedLayer", "MappedModel", "ProgrammedLayer",
           "adc_error_warnings", "adc_steps", "calibrate_adc", "can_never_saturate",
           "check_adc_range", "crossbar_layer_matmul", "cycle_adc_steps", "effective_weights",
           "layer_chunk_bytes_per_row", "max_column_sum", "predicted_adc_error",
           "program_layer"]

# Default bound on one layer's kernel temporaries (rows are streamed in chunks that fit);
# CrossbarMatmul's memory budget replaces it.
_CHUNK_BYTES = 256 << 20


@dataclass(frozen=True)
class LayerStats:
    """Mapping statistics of one layer."""

    node: str
    scheme: str
    weight_shape: tuple[int, ...]
    crossbars: int
    """Crossbars of ``crossbar_rows x crossbar_cols`` cells the layer occupies."""
    row_tiles: int
    col_tiles: int
    cells: int
    """Weight cells programmed (unit columns excluded)."""
    capacity: int
    """Cells of the occupied crossbars."""
    adc_reads_per_vector: int
    """ADC conversions per input vector (all cycles, row groups and columns, unit columns
    included)."""
    nonzero_weights: int
    weights: int

    @property
    def utilization(self) -> float:
        return self.cells / self.capacity if self.capacity else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["weight_shape"] = list(self.weight_shape)
        d["utilization"] = self.utilization
        return d


@dataclass(frozen=True)
class MappedLayer:
    """One weighted layer placed on crossbars: what the hardware holds, as plain arrays."""

    node: str
    """Name of the graph node this layer computes."""
    scheme: str
    """Placement scheme (for reports)."""
    levels: np.ndarray
    """(G, R, C) uint8 cell levels: G analog row groups of R rows, C physical columns."""
    row_index: np.ndarray
    """(G, R) int64: the row of the layer's (K, N) weight matrix that feeds each crossbar
    row; -1 for an unused row (it receives a zero input)."""
    coef: np.ndarray
    """(G, C) int64: digital weight of each physical column's value (the slice weight
    ``2**(cell_bits * s)`` times the sign of its column group or fragment)."""
    flipped: np.ndarray
    """(G, C) bool: column stored complemented (ISAAC flip encoding)."""
    outputs: int
    """N: physical column ``c`` belongs to output ``c // per_output``."""
    per_output: int
    """P: physical columns per output."""
    offset: int
    """Subtracted once per input one counted by the unit column (offset mapping), else 0."""
    unit_column: bool
    """Whether each row group has a unit column (offset mapping or flip encoding)."""
    cell_bits: int
    dac_bits: int
    adc_bits: int
    stats: LayerStats

    def __post_init__(self) -> None:
        g, r, c = self.levels.shape
        if self.row_index.shape != (g, r) or self.coef.shape != (g, c) \
                or self.flipped.shape != (g, c):
            raise ValueError(f"mapped layer {self.node!r}: inconsistent shapes levels "
                             f"{self.levels.shape}, row_index {self.row_index.shape}, coef "
                             f"{self.coef.shape}, flipped {self.flipped.shape}")
        if c != self.outputs * self.per_output:
            raise ValueError(f"mapped layer {self.node!r}: {c} physical columns are not "
                             f"{self.outputs} outputs x {self.per_output}")
        if self.flipped.any() and not self.unit_column:
            raise ValueError(f"mapped layer {self.node!r}: flipped columns need a unit column")

    @property
    def rows(self) -> int:
        """K: rows of the layer's weight matrix (all-zero rows that the placement dropped
        included, so not the largest ``row_index``)."""
        return self.stats.weights // max(self.outputs, 1)


@dataclass
class MappedModel:
    """A graph's weighted layers placed on an accelerator's crossbars."""

    accelerator: str
    layers: dict[str, MappedLayer]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def crossbars(self) -> int:
        return sum(layer.stats.crossbars for layer in self.layers.values())

    @property
    def cells(self) -> int:
        return sum(layer.stats.cells for layer in self.layers.values())

    @property
    def capacity(self) -> int:
        return sum(layer.stats.capacity for layer in self.layers.values())

    def stats_table(self) -> list[dict[str, Any]]:
        return [layer.stats.to_dict() for layer in self.layers.values()]


@dataclass(frozen=True)
class ProgrammedLayer:
    """A mapped layer's cells as programmed on one chip instance (variation + faults)."""

    layer: MappedLayer
    conductance: np.ndarray
    """(G, R, C) float cell conductances in level units (== levels on ideal devices)."""
    faults: np.ndarray | None
    """(G, R, C) int8 fault map, or None without faults."""
    noise_var: np.ndarray | None
    """(G, R, C) per-cell read-noise variance in level units squared (proportional noise)."""
    device: ReramDeviceConfig
    cache: dict = field(default_factory=dict, compare=False, repr=False)
    """Derived arrays of the kernels (filled on first use)."""


def _seed_stream(seed: int, layer_index: int, purpose: int) -> np.random.Generator:
    # One independent stream per (seed, layer, purpose): the fault map of a layer depends
    # only on the seed and the layer's position, never on draws made for other purposes.
    return np.random.default_rng(np.random.SeedSequence([int(seed), layer_index, purpose]))


_FAULTS, _VARIATION, _READ = 1, 2, 3


# Largest number of terms of a float32 column sum: grid steps of at most 2**-12 of the
# largest value (rows x DAC max**2 above it: the layer's cells are float64).
_GRID_TERMS_FLOAT32 = 1 << 11


def _on_exact_grid(values: np.ndarray, terms: int, dtype: type, *,
                   overwrite: bool = False) -> np.ndarray:
    """``values`` rounded to multiples of a power of two so coarse that any sum of ``terms``
    of them (an analog column sum, integer DAC weights folded into ``terms``) is exact in
    the float type ``dtype`` (the result's), and so fine that it moves each value by at most
    ``terms * 2**-mantissa`` of the largest (float32: 1.5e-5 for a 128-row crossbar;
    layers with more than ``_GRID_TERMS_FLOAT32`` terms are programmed in float64). Column
    sums then do not depend on the GEMM's summation order: the BLAS blocking, the chunk
    size and the thread count leave every bit unchanged, and torch's GEMM gives numpy's
    sums. (Integer levels are already on the grid.)"""
    largest = max(-float(values.min(initial=0.0)), float(values.max(initial=0.0)))
    if largest == 0.0:
        return values.astype(dtype)
    digits = np.finfo(dtype).nmant + 1
    exponent = math.ceil(math.log2(largest * terms)) + 1 - digits
    grid = 2.0 ** exponent
    # rint(values / grid) * grid in one buffer (the same operations, the same bits);
    # ``overwrite``: the caller's temporary ``values`` is that buffer
    scaled = np.divide(values, grid, out=values) if overwrite else values / grid
    np.rint(scaled, out=scaled)
    scaled *= grid
    return scaled.astype(dtype, copy=False)


def program_layer(layer: MappedLayer, device: ReramDeviceConfig = IDEAL_DEVICE, *,
                  seed: int = 0, layer_index: int = 0) -> ProgrammedLayer:
    """Program a mapped layer's cells on ``device`` (faults and variation from ``seed``)."""
    faults = None
    if device.stuck_at_rate > 0:
        faults = draw_fault_map(layer.levels.shape, device,
                                _seed_stream(seed, layer_index, _FAULTS))
    # Exact integer sums stay exact in float32 below 2**24 (the reference's rule).
    dac_max = (1 << layer.dac_bits) - 1
    bound = layer.levels.shape[1] * dac_max * ((1 << layer.cell_bits) - 1)
    dtype = np.float32 if bound < (1 << 24) else np.float64
    if (device.programming_sigma > 0 or device.read_noise > 0) \
            and layer.levels.shape[1] * dac_max ** 2 > _GRID_TERMS_FLOAT32:
        dtype = np.float64          # a float32 grid would be coarser than 2**-12 (see below)
    g = program_cells(layer.levels, layer.cell_bits, device,
                      _seed_stream(seed, layer_index, _VARIATION), faults, dtype=dtype)
    noise_var = None
    cache: dict = {}
    n_groups, rows, cols = g.shape
    if device.programming_sigma > 0:
        g = _on_exact_grid(g, rows * dac_max, dtype)
    # (The fused path reads the fields as they are: (G, R, C), C contiguous.)
    if device.read_noise > 0 and device.read_noise_model is ReadNoiseModel.PROPORTIONAL:
        base = device.g_off / device.level_step(layer.cell_bits)
        # (g + base)**2 * sigma**2 in one float64 temporary (the programming peak that
        # chipforge.sim.memory.programmed_bytes counts)
        variance = g.astype(np.float64)
        variance += base
        np.square(variance, out=variance)
        variance *= device.read_noise ** 2
        noise_var = _on_exact_grid(variance, rows * dac_max ** 2, dtype, overwrite=True)
        del variance
        if rows > _FUSED_MAX_ROWS:
            # One buffer [cells | variances] for the GEMM path; the fields are views of it.
            both = np.empty((n_groups, rows, 2 * cols), dtype=dtype)
            both[:, :, :cols], both[:, :, cols:] = g, noise_var
            cache["cells_nv"] = both
            g, noise_var = both[:, :, :cols], both[:, :, cols:]
        else:
            noise_var = noise_var.astype(dtype)
    return ProgrammedLayer(layer, g, faults, noise_var, device, cache)


def _cycle_weights(cfg: CrossbarConfig) -> np.ndarray:
    """Signed weight of each input cycle in the MSB-first Horner recurrence."""
    widths = cfg.input_slice_widths
    below = np.cumsum(widths[::-1])[::-1] - np.array(widths)
    w = np.left_shift(np.int64(1), below.astype(np.int64))
    if cfg.signed_inputs:
        w[0] = -w[0]
    return w


def _input_planes_spec(cfg: CrossbarConfig) -> tuple[np.ndarray, np.ndarray]:
    """Shift and mask of each input cycle's DAC slice (MSB first)."""
    shifts, masks = [], []
    top = cfg.input_bits
    for width in cfg.input_slice_widths:
        top -= width
        shifts.append(top)
        masks.append((1 << width) - 1)
    return np.array(shifts, dtype=np.int64), np.array(masks, dtype=np.int64)


@dataclass(frozen=True)
class _Prepared:
    """A programmed layer's arrays in the layouts the kernels read (computed once)."""

    rowidx: np.ndarray        # (G, R) int64, unused rows -> K (a zero input column)
    cells: np.ndarray         # (G, R, C) conductances in level units
    nvar: np.ndarray | None   # (G, R, C) proportional read-noise variances
    cells_t: np.ndarray       # (G, R, C) contiguous conductances (fused path)
    nvar_t: np.ndarray        # (G, R, C) contiguous noise variances, or (1, 1, 1)
    cells_nv: np.ndarray      # (G, R, C or 2C) [cells | variances] (GEMM path)
    scoef: np.ndarray         # (G, C) float64 digital weight with the flip sign folded in
    col_out: np.ndarray       # (C,) int64 output of each physical column
    ucoef: np.ndarray         # (G, N) float64 weight of the unit column's code
    noise_mode: int           # 0 none, 1 proportional (GEMM variance), 2 independent
    indep_var: float          # independent noise variance per unit of input squared
    exact_bound: float        # largest |accumulator| per input cycle weight


# Row groups up to this many rows are read by the fused kernel (inputs gathered and
# multiplied in registers, all-zero reads skipped); taller ones by BLAS + one fused pass.
_FUSED_MAX_ROWS = 16


def _prepare(programmed: ProgrammedLayer) -> _Prepared:
    cached = programmed.cache.get("prepared")
    if cached is not None:
        return cached
    layer, device = programmed.layer, programmed.device
    n_groups, rows, cols = layer.levels.shape
    mask = (1 << layer.cell_bits) - 1
    full = (1 << layer.adc_bits) - 1
    rowidx = np.where(layer.row_index < 0, layer.rows, layer.row_index).astype(np.int64)
    cells = programmed.conductance
    noise_mode, indep_var = 0, 0.0
    if device.read_noise > 0:
        if device.read_noise_model is ReadNoiseModel.PROPORTIONAL:
            noise_mode = 1
        else:
            noise_mode, indep_var = 2, float((device.read_noise * mask) ** 2)
    nvar = programmed.noise_var
    # Each path's layout only (the programmed fields are views of it where possible).
    empty = np.zeros((1, 1, 1), dtype=cells.dtype)
    if rows > _FUSED_MAX_ROWS:
        cells_nv = programmed.cache.get("cells_nv")
        if cells_nv is None:
            cells_nv = (np.concatenate([cells, nvar.astype(cells.dtype)], axis=2)
                        if noise_mode == 1 else np.ascontiguousarray(cells))
        cells_t = nvar_t = empty
    else:
        cells_nv = empty
        cells_t = np.ascontiguousarray(cells)
        nvar_t = np.ascontiguousarray(nvar) if noise_mode == 1 else empty
    scoef = np.where(layer.flipped, -layer.coef, layer.coef).astype(np.float64)
    flip_coef = (layer.flipped * layer.coef).reshape(n_groups, layer.outputs,
                                                      layer.per_output).sum(-1) * mask
    ucoef = (flip_coef - layer.offset).astype(np.float64)
    col_out = (np.arange(cols) // layer.per_output).astype(np.int64)
    per_out = np.abs(scoef).reshape(n_groups, layer.outputs, layer.per_output).sum(axis=(0, 2))
    bound = full * float(per_out.max(initial=0) + np.abs(ucoef).sum(axis=0).max(initial=0))
    prepared = _Prepared(rowidx, cells, nvar if noise_mode == 1 else None, cells_t, nvar_t,
                         cells_nv, scoef, col_out, ucoef, noise_mode, indep_var, bound)
    programmed.cache["prepared"] = prepared
    return prepared


def layer_chunk_bytes_per_row(layer: MappedLayer, cycles: int, noise: bool) -> int:
    """Bytes of kernel temporaries per input row (one output pixel of one sample) of a
    layer: the GEMM path's DAC inputs and column sums (sums and variances with noise);
    the fused path keeps only the inputs and the output row."""
    n_groups, rows, cols = layer.levels.shape
    k1 = layer.rows + 1
    base = 8 * k1 + 8 * layer.outputs + 8            # unsigned inputs, accumulators, counts
    if rows <= _FUSED_MAX_ROWS:
        return base
    width = 2 * cols if noise else cols
    return base + cycles * n_groups * (4 * rows + 4 * width + 16)


def crossbar_layer_matmul(x_q: np.ndarray, programmed: ProgrammedLayer, *, input_bits: int,
                          signed_inputs: bool, rng: np.random.Generator | None = None,
                          report: dict[str, int] | None = None, noise_key: int | None = None,
                          row_offset: int = 0, chunk_bytes: int | None = None,
                          backend: str = "numpy", device: str = "cpu",
                          adc_step: float = 1.0) -> np.ndarray:
    """``x_q @ w_q`` of one mapped layer computed by its crossbars: int64 (M, N).

    ``x_q`` (M, K) integers in the ``input_bits`` range (signed or not), fed bit-serially
    through ``dac_bits`` DACs. Read noise (one Gaussian per ADC read) comes from the
    counter-based stream ``noise_key``: the read of input row ``row_offset + m`` draws the
    same number however the rows are chunked (:mod:`chipforge.sim.reram_kernels`); without
    a key, ``rng`` supplies one (required when the device has read noise). ``report``, if
    given, accumulates ``adc_reads`` and ``saturated`` counts. ``chunk_bytes`` bounds the
    temporaries (rows are streamed in chunks that fit). ``backend``: ``"numpy"`` (the
    compiled CPU kernels) or ``"torch"`` on ``device`` (``cpu`` or ``cuda``; same integers
    where the arithmetic is integer, its own Gaussians otherwise). ``adc_step``: the ADC's
    step in level units (1: codes count levels, full scale ``2**adc_bits - 1`` levels; a
    larger step widens the range, see :func:`adc_steps`) of the widest DAC slice; narrower
    slices read with proportionally finer steps (:func:`cycle_adc_steps`); with a step other
    than 1 the result is float64.
    """
    layer = programmed.layer
    dev = programmed.device
    x_q = np.asarray(x_q)
    if x_q.ndim != 2:
        raise ValueError(f"layer {layer.node!r}: inputs must be 2-D (M, K), not {x_q.shape}")
    m_total, k = x_q.shape
    if k < layer.rows:
        raise ValueError(f"layer {layer.node!r}: inputs have {k} columns, the mapped "
                         f"weights need {layer.rows}")
    cfg = CrossbarConfig(rows=1, cols=1, cell_bits=layer.cell_bits, weight_bits=1,
                         input_bits=input_bits, dac_bits=layer.dac_bits, adc_bits=layer.adc_bits,
                         signed_inputs=signed_inputs)
    lo, hi = cfg.input_range
    if x_q.size and (int(x_q.min()) < lo or int(x_q.max()) > hi):
        raise ValueError(f"layer {layer.node!r}: inputs must lie in {lo}..{hi} for "
                         f"{input_bits}-bit {'signed' if signed_inputs else 'unsigned'} inputs, "
                         f"not {int(x_q.min())}..{int(x_q.max())}")
    if dev.read_noise > 0 and noise_key is None:
        if rng is None:
            raise ValueError("a device with read noise needs an rng for the reads")
        noise_key = int(rng.integers(0, 2**63))
    prep = _prepare(programmed)
    cycle_w = _cycle_weights(cfg)
    shifts, dmasks = _input_planes_spec(cfg)
    full = (1 << layer.adc_bits) - 1
    # Pad the inputs to the layer's rows plus one zero column (unused crossbar rows read it).
    xu = np.zeros((m_total, layer.rows + 1), dtype=np.int64)
    xu[:, :layer.rows] = x_q[:, :layer.rows]
    xu[:, :layer.rows] &= (1 << input_bits) - 1        # two's complement bit pattern
    key = int(noise_key or 0)
    steps = cycle_adc_steps(adc_step, dmasks)
    if backend == "torch":
        from chipforge.sim.reram_torch import layer_matmul_torch

        out, saturated = layer_matmul_torch(xu, layer, prep, shifts, dmasks, cycle_w, full,
                                            key, row_offset, chunk_bytes, device, steps)
    elif backend != "numpy":
        raise ValueError(f"backend must be 'numpy' or 'torch', not {backend!r}")
    else:
        out, saturated = _layer_matmul_numpy(xu, layer, prep, shifts, dmasks, cycle_w, full,
                                             key, row_offset, chunk_bytes, steps)
    if report is not None:
        reads = m_total * layer.stats.adc_reads_per_vector
        report["adc_reads"] = report.get("adc_reads", 0) + reads
        report["saturated"] = report.get("saturated", 0) + saturated
    return out


def cycle_adc_steps(adc_step: float | np.ndarray, dac_max: np.ndarray) -> np.ndarray:
    """The ADC step of each input cycle (T,): ``adc_step`` for the widest DAC slice, and
    for a narrower one (the 1-bit two's-complement sign cycle, a narrow top slice) the step
    scaled by its DAC full scale, never finer than one level: the ADC range follows each
    cycle's largest possible column sum, so a 1-bit cycle is not read with the 2**b - 1
    times coarser step of a b-bit one (with an 8-bit DAC, 8-bit cells and a calibrated
    8-bit ADC that gave relative errors of 30 on signed inputs). An array is one step per
    cycle already (the ``"calibrated"`` range: each cycle's largest column sum seen)."""
    dac_max = np.asarray(dac_max, dtype=np.float64)
    step = np.asarray(adc_step, dtype=np.float64)
    if step.ndim == 1:                       # already one step per cycle (a calibration)
        if step.shape != dac_max.shape:
            raise ValueError(f"{len(step)} ADC steps for {len(dac_max)} input cycles")
        return np.maximum(1.0, step)
    if float(step) == 1.0:
        return np.ones(len(dac_max))
    return np.maximum(1.0, float(step) * dac_max / dac_max.max())


_GEMM_POOL_LOCK = threading.Lock()   # one pooled GEMM section at a time (see below)
_gemm_pool: dict[str, Any] = {}       # "blas": ThreadpoolController, workers -> executor


def _blas_controller():
    """threadpoolctl's controller of the BLAS libraries loaded (None: none can be limited)."""
    if "blas" not in _gemm_pool:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
            _gemm_pool["blas"] = None
        else:
            blas = ThreadpoolController().select(user_api="blas")
            _gemm_pool["blas"] = blas if blas.lib_controllers else None
    return _gemm_pool["blas"]


def _gemm_workers(n_groups: int) -> int:
    """How many threads :func:`_group_gemms` spreads the row groups' GEMMs over, each GEMM
    on one BLAS thread: the threads the caller allows (numba's count in this thread, which
    a campaign worker sets to 1, and BLAS's own limit), if there are at least that many
    groups; else 1 (one stacked GEMM, BLAS's own threads). A multi-threaded OpenBLAS call
    wastes about half its CPU on a loaded machine (issue 27: ISAAC 2.7 CPU s per ResNet-18
    image, 1.45 with one BLAS thread)."""
    import numba

    workers = numba.get_num_threads()
    if workers < 2 or n_groups < workers:
        return 1
    blas = _blas_controller()
    if blas is None:
        return 1                  # BLAS's threads cannot be limited: keep its own threading
    return max(1, min([workers] + [lib.num_threads for lib in blas.lib_controllers]))


def _group_gemms(a: np.ndarray, cells: np.ndarray, cols: int, *, squared: bool) -> np.ndarray:
    """The column sums of every row group's reads: ``a[g] @ cells[g]`` (G, reads, C or 2C);
    ``squared``: the variance half (columns ``cols:``) from ``a[g]**2`` instead (multi-bit
    DACs). The values are sums of integer-valued float products, exact in any order, so the
    threading does not change them. Memory: the output plus one group's squares per
    thread (less than the stacked products and their concatenation)."""
    n_groups, reads, _ = a.shape
    sums = np.empty((n_groups, reads, cells.shape[2]), dtype=np.result_type(a, cells))

    def one_group(g: int) -> None:
        if squared:
            np.matmul(a[g], cells[g, :, :cols], out=sums[g, :, :cols])
            np.matmul(a[g] * a[g], cells[g, :, cols:], out=sums[g, :, cols:])
        else:
            np.matmul(a[g], cells[g], out=sums[g])

    workers = _gemm_workers(n_groups)
    if workers == 1:
        if squared:
            for g in range(n_groups):
                one_group(g)
        else:
            np.matmul(a, cells, out=sums)
        return sums
    # The BLAS limit is process-wide: the lock keeps two callers' limit/restore pairs from
    # interleaving (which could leave BLAS on one thread for good).
    with _GEMM_POOL_LOCK:
        pool = _gemm_pool.get(workers)
        if pool is None:
            pool = _gemm_pool[workers] = ThreadPoolExecutor(workers,
                                                            thread_name_prefix="crossbar-gemm")
        with _blas_controller().limit(limits=1):   # not None: _gemm_workers checked it
            list(pool.map(one_group, range(n_groups)))
    return sums


def _layer_matmul_numpy(xu, layer, prep, shifts, dmasks, cycle_w, full, key, row_offset,
                        chunk_bytes, adc_step=1.0) -> tuple[np.ndarray, int]:
    from chipforge.sim import reram_kernels as kern

    m_total = xu.shape[0]
    n_groups, rows, cols = layer.levels.shape
    cycles = len(shifts)
    if float(np.abs(cycle_w).sum()) * prep.exact_bound >= 2.0**53:
        raise ValueError(f"layer {layer.node!r}: partial sums of up to "
                         f"{float(np.abs(cycle_w).sum()) * prep.exact_bound:.3g} do not stay "
                         "exact in float64 accumulators (use fewer weight or input bits)")
    out = np.zeros((m_total, layer.outputs), dtype=np.float64)
    sat = np.zeros(m_total, dtype=np.int64)
    if rows <= _FUSED_MAX_ROWS:
        kern.reads_fused(xu, prep.rowidx, shifts, dmasks, cycle_w, prep.cells_t, prep.nvar_t,
                         prep.indep_var, prep.scoef, layer.per_output, prep.ucoef, full,
                         layer.unit_column, prep.noise_mode, key, row_offset, out, sat,
                         adc_step)
    else:
        per_row = layer_chunk_bytes_per_row(layer, cycles, prep.noise_mode == 1)
        chunk = max(1, int(chunk_bytes or _CHUNK_BYTES) // per_row)
        dtype = prep.cells_nv.dtype
        for start in range(0, m_total, chunk):
            stop = min(m_total, start + chunk)
            a, ones, squares = kern.bit_planes(xu[start:stop], prep.rowidx, shifts, dmasks,
                                               dtype)
            sums = _group_gemms(a, prep.cells_nv, cols,
                                squared=prep.noise_mode == 1 and layer.dac_bits > 1)
            del a
            kern.reads_post(sums, cols, ones, squares, cycle_w, prep.indep_var, prep.scoef,
                            layer.per_output, prep.ucoef, full, layer.unit_column, prep.noise_mode,
                            key, row_offset + start, out[start:stop], sat[start:stop],
                            adc_step)
            # free this chunk before the next one allocates its own (else two chunks'
            # temporaries are alive at once: twice the budget's chunk)
            del sums, ones, squares
    if np.any(np.asarray(adc_step) != 1.0):
        return out, int(sat.sum())
    return np.rint(out).astype(np.int64), int(sat.sum())


def max_column_sum(x_q: np.ndarray, programmed: ProgrammedLayer, *, input_bits: int,
                   signed_inputs: bool, per_cycle: bool = False) -> float | np.ndarray:
    """The largest noise-free column sum (level units) of any read for inputs ``x_q``: the
    calibration of :func:`adc_steps` (unit columns included); ``per_cycle``: one maximum
    per input cycle (T,), most significant first."""
    from chipforge.sim import reram_kernels as kern

    layer = programmed.layer
    cfg = CrossbarConfig(rows=1, cols=1, cell_bits=layer.cell_bits, weight_bits=1,
                         input_bits=input_bits, dac_bits=layer.dac_bits,
                         adc_bits=layer.adc_bits, signed_inputs=signed_inputs)
    shifts, dmasks = _input_planes_spec(cfg)
    prep = _prepare(programmed)
    xu = np.zeros((len(x_q), layer.rows + 1), dtype=np.int64)
    xu[:, :layer.rows] = np.asarray(x_q)[:, :layer.rows] & ((1 << input_bits) - 1)
    cells = np.ascontiguousarray(programmed.conductance)
    cycles = len(shifts)
    top = np.zeros(cycles)
    step = max(1, (64 << 20) // max(1, layer_chunk_bytes_per_row(layer, cycles, False)))
    for start in range(0, len(xu), step):
        a, ones, _ = kern.bit_planes(xu[start:start + step], prep.rowidx, shifts, dmasks,
                                     cells.dtype)
        g = a.shape[0]                                       # reads are rows m * T + t
        sums = np.matmul(a, cells).reshape(g, -1, cycles, cells.shape[-1])
        top = np.maximum(top, sums.max(axis=(0, 1, 3), initial=0))
        if layer.unit_column:
            top = np.maximum(top, ones.reshape(g, -1, cycles).max(axis=(0, 1), initial=0))
    return top if per_cycle else float(top.max(initial=0))


def predicted_adc_error(programmed: ProgrammedLayer, adc_step: float, *, input_bits: int,
                        signed_inputs: bool) -> tuple[np.ndarray, np.ndarray]:
    """What the ADC's rounding alone does to each output (N,), without saturation or noise:
    (worst case, rms). An output is ``sum over reads of weight x step x code``; each code
    rounds its column sum by at most half a step, so the error is at most
    ``sum_t |cycle weight_t| step_t / 2 x (sum of the output's |column coefficients|
    + |unit-column coefficients|)``; rounding errors uniform and independent give
    ``sqrt(sum_t (cycle weight_t step_t)**2 / 12 x sum of squared coefficients)``. A cycle
    read at one level per code (step 1, integer cells) rounds nothing. The unit column's
    coefficient is minus the offset (ISAAC: 128 for 8-bit weights): its rounding is
    amplified that much, the reason offset encodings need a fine ADC step."""
    layer = programmed.layer
    cfg = CrossbarConfig(rows=1, cols=1, cell_bits=layer.cell_bits, weight_bits=1,
                         input_bits=input_bits, dac_bits=layer.dac_bits,
                         adc_bits=layer.adc_bits, signed_inputs=signed_inputs)
    _, dmasks = _input_planes_spec(cfg)
    steps = cycle_adc_steps(adc_step, dmasks)
    rounding = np.where(steps == 1.0, 0.0, steps) * np.abs(_cycle_weights(cfg))      # (T,)
    prep = _prepare(programmed)
    n_groups = layer.levels.shape[0]
    col = np.abs(prep.scoef).reshape(n_groups, layer.outputs, layer.per_output)
    l1 = col.sum(axis=(0, 2))
    l2 = np.square(col).sum(axis=(0, 2))
    if layer.unit_column:
        l1 = l1 + np.abs(prep.ucoef).sum(axis=0)
        l2 = l2 + np.square(prep.ucoef).sum(axis=0)
    worst = rounding.sum() / 2 * l1
    rms = np.sqrt(np.square(rounding).sum() / 12 * l2)
    return worst, rms


def check_adc_range(mode: object) -> str:
    """``mode`` if it is an ADC range :func:`adc_steps` takes, else ValueError stating the
    rule (checked before any work)."""
    rule = "--adc-range must be max, fraction:F (0 < F <= 1) or calibrated"
    if not isinstance(mode, str):
        raise ValueError(f"{rule}, not {mode!r}")
    if mode in ("max", "calibrated"):
        return mode
    if mode.startswith("fraction:"):
        try:
            fraction = float(mode.split(":", 1)[1])
        except ValueError:
            fraction = -1.0
        if 0 < fraction <= 1:
            return mode
    raise ValueError(f"{rule}, not {mode!r}")


def adc_steps(mode: str, mapped: MappedModel, calibration: dict[str, float] | None = None
              ) -> dict[str, float | np.ndarray]:
    """Each layer's ADC step (level units per code) for an ADC range ``mode``:

    - ``"max"``: one level per code (full scale ``2**adc_bits - 1`` levels; exact integer
      codes until saturation: the presets' setting);
    - ``"fraction:F"``: full scale ``F`` times the array's largest possible column sum
      (rows x DAC max x cell max), never finer than one level;
    - ``"calibrated"``: full scale the largest column sum seen on a calibration batch
      (``calibration``: layer -> :func:`max_column_sum`, per input cycle when it is an
      array: then each cycle its own step), never finer than one level.
    """
    steps = {}
    for name, layer in mapped.layers.items():
        full = (1 << layer.adc_bits) - 1
        if mode == "max":
            scale = float(full)
        elif mode.startswith("fraction:"):
            try:
                fraction = float(mode.split(":", 1)[1])
            except ValueError:
                fraction = -1.0
            if not 0 < fraction <= 1:
                raise ValueError(f"adc range fraction must be in (0, 1], not {mode!r}")
            rows = layer.levels.shape[1]
            scale = fraction * rows * ((1 << layer.dac_bits) - 1) * ((1 << layer.cell_bits) - 1)
        elif mode == "calibrated":
            if calibration is None or name not in calibration:
                raise ValueError(f"adc range 'calibrated' needs a calibration of layer {name!r}")
            scale = np.asarray(calibration[name], dtype=np.float64)
            if scale.ndim:
                steps[name] = np.maximum(1.0, scale / full)     # one step per input cycle
                continue
        else:
            raise ValueError(f"adc range must be 'max', 'fraction:F' or 'calibrated', "
                             f"not {mode!r}")
        steps[name] = max(1.0, scale / full)
    return steps


def can_never_saturate(layer: MappedLayer) -> bool:
    """Whether no column sum (nor the unit column) can exceed the ADC's full scale, for any
    input and any cell levels (stuck cells included)."""
    rows = layer.levels.shape[1]
    worst = rows * ((1 << layer.dac_bits) - 1) * ((1 << layer.cell_bits) - 1)
    return worst <= (1 << layer.adc_bits) - 1


def effective_weights(programmed: ProgrammedLayer) -> np.ndarray | None:
    """The integer (K, N) weights the programmed cells compute, or None if there are none.

    When every cell holds an integer level (no programming variation; stuck-at faults are
    fine), there is no read noise and no ADC can saturate, the bit-serial crossbar computes
    exactly ``x_q @ W_eff`` with ``W_eff = sum_p coef * (unflipped level) - offset``: the
    same integers as :func:`crossbar_layer_matmul`, with one matrix product instead of one
    per input bit. (Tested equal to the bit-serial path.)
    """
    layer = programmed.layer
    if programmed.device.programming_sigma > 0 or programmed.device.read_noise > 0:
        return None
    if not can_never_saturate(layer):
        return None
    mask = (1 << layer.cell_bits) - 1
    levels = np.rint(programmed.conductance).astype(np.int64)              # (G, R, C)
    levels = np.where(layer.flipped[:, None, :], mask - levels, levels)
    g, r, c = levels.shape
    per_col = levels * layer.coef[:, None, :]
    w = per_col.reshape(g * r, layer.outputs, layer.per_output).sum(axis=2) - layer.offset
    out = np.zeros((layer.rows, layer.outputs), dtype=np.int64)
    index = layer.row_index.reshape(-1)
    used = index >= 0
    out[index[used]] = w[used]
    return out


def _block_diagonal_product(x_q: np.ndarray, w: np.ndarray, groups: int) -> np.ndarray:
    """x_q @ w for a block-diagonal w (a grouped convolution): only the diagonal blocks are
    multiplied (G times fewer products than the full matrix)."""
    k_g, n_g = w.shape[0] // groups, w.shape[1] // groups
    blocks = np.stack([w[g * k_g:(g + 1) * k_g, g * n_g:(g + 1) * n_g] for g in range(groups)])
    # float64 is exact here: |sums| <= K_g * 2**16 * 2**15, far below 2**53
    y = np.einsum("mgk,gkn->mgn", x_q.reshape(len(x_q), groups, k_g).astype(np.float64),
                  blocks.astype(np.float64))
    return np.rint(y).astype(np.int64).reshape(len(x_q), groups * n_g)


class CrossbarMatmul:
    """The executor's ``matmul`` hook for a mapped model on one chip instance.

    Programs every mapped layer once (variation and faults from ``seed``); read noise is
    drawn from a stream seeded by ``seed`` too, so one seed gives one result. Pass an
    instance as ``run_graph(graph, x, matmul=hook)``.

    ``programmed``: the layers of a chip programmed before (another hook's
    :attr:`programmed`, same ``mapped``, ``device`` and ``seed``): this hook reads the same
    chip without drawing its variation and faults again. :meth:`window` keys the read noise
    by the global sample index, so a campaign's (chip, sample chunk) shards read exactly as
    one run over all the samples.
    """

    takes_float_integers = True
    """The executor may pass the quantized activations as integer-valued float64."""

    def __init__(self, mapped: MappedModel, device: ReramDeviceConfig = IDEAL_DEVICE, *,
                 seed: int = 0, fast_path: bool = True, chunk_bytes: int | None = None,
                 backend: str = "numpy", array_device: str = "cpu",
                 adc_steps: dict[str, float] | None = None,
                 programmed: dict[str, ProgrammedLayer] | None = None) -> None:
        self.mapped = mapped
        self.adc_steps = adc_steps or {}
        self.device = device
        self.seed = seed
        self.chunk_bytes = chunk_bytes
        self.backend = backend
        self.array_device = array_device
        if programmed is not None and set(programmed) != set(mapped.layers):
            raise ValueError("programmed layers do not match the mapped model's layers")
        self.programmed = programmed if programmed is not None else {
            name: program_layer(layer, device, seed=seed, layer_index=i)
            for i, (name, layer) in enumerate(mapped.layers.items())}
        # Integer cells, no noise, no possible saturation: one exact product per layer.
        self.effective = {}
        if fast_path:
            for name, programmed in self.programmed.items():
                if np.any(np.asarray(self.adc_steps.get(name, 1.0)) != 1.0):
                    continue
                w_eff = effective_weights(programmed)
                if w_eff is not None:
                    self.effective[name] = w_eff
        # Read noise: one counter-based stream per layer; a read's Gaussian depends on the
        # seed, the layer and the read's index (input rows counted since programming), so
        # results do not depend on how the batch is chunked or on the thread count.
        from chipforge.sim.reram_kernels import stream_key

        self.noise_keys = {name: stream_key(seed, i, _READ)
                           for i, name in enumerate(mapped.layers)}
        self.rows_done = dict.fromkeys(mapped.layers, 0)
        self._window: tuple[int, int] | None = None
        self.report: dict[str, int] = {}
        self._exact_layout: dict[str, np.ndarray | None] = {}

    def window(self, first_sample: int, samples: int) -> None:
        """The next ``run_graph`` batch holds the samples ``first_sample`` ..
        ``first_sample + samples - 1`` of the whole run (one executor batch: each layer is
        read once for it). A layer's read of input row ``m`` of the batch then draws the
        noise of row ``first_sample * rows_per_sample + m``: exactly the rows a single run
        over all samples from sample 0 reads, whatever the chunking or the order."""
        if first_sample < 0 or samples < 1:
            raise ValueError(f"window needs first_sample >= 0 and samples >= 1, not "
                             f"{first_sample}, {samples}")
        self._window = (int(first_sample), int(samples))

    def _row_offset(self, name: str, rows: int) -> int:
        if self._window is None:     # consecutive calls: rows counted since programming
            offset = self.rows_done[name]
            self.rows_done[name] = offset + rows
            return offset
        first, samples = self._window
        if rows % samples:
            raise ValueError(f"layer {name!r}: {rows} input rows are not a whole number per "
                             f"sample of the {samples}-sample window")
        return first * (rows // samples)

    def exact_weights(self, node: Node) -> np.ndarray | None:
        """The integer weights this chip computes node's product with exactly (integer
        cells, no noise, no ADC that can saturate), shaped like ``node.params["weight"]``
        (float32), or None. The executor then convolves directly
        (:func:`chipforge.sim.executor.exact_conv`) and reports the vectors with
        :meth:`exact_product_done`."""
        if node.name not in self._exact_layout:
            w2d = self.effective.get(node.name)
            if w2d is not None:
                shape = node.params["weight"].shape
                groups = int(node.attrs.get("groups", 1))
                if groups > 1:             # the diagonal blocks of the placed matrix
                    k_g, n_g = w2d.shape[0] // groups, w2d.shape[1] // groups
                    w2d = np.concatenate([w2d[g * k_g:(g + 1) * k_g, g * n_g:(g + 1) * n_g]
                                          for g in range(groups)], axis=1)
                w2d = np.ascontiguousarray(w2d.T.reshape(shape), dtype=np.float32)
            self._exact_layout[node.name] = w2d
        return self._exact_layout[node.name]

    def exact_product_done(self, node: Node, vectors: int) -> None:
        layer = self.programmed[node.name].layer
        self.report["adc_reads"] = (self.report.get("adc_reads", 0)
                                    + vectors * layer.stats.adc_reads_per_vector)
        self.report.setdefault("saturated", 0)

    def __call__(self, node: Node, x_q: np.ndarray, w_q: np.ndarray) -> np.ndarray:
        programmed = self.programmed.get(node.name)
        if programmed is None:
            raise ValueError(f"node {node.name!r} is not mapped onto the crossbars; mapped: "
                             f"{', '.join(self.programmed) or 'none'}")
        layer = programmed.layer
        if w_q.shape != (layer.rows, layer.outputs):
            raise ValueError(f"node {node.name!r}: weights of shape {w_q.shape} do not match "
                             f"the mapped layer ({layer.rows}, {layer.outputs})")
        w_eff = self.effective.get(node.name)
        if w_eff is not None:
            self.exact_product_done(node, len(x_q))
            if int(node.attrs.get("groups", 1)) > 1:
                return _block_diagonal_product(x_q[:, :layer.rows], w_eff,
                                               int(node.attrs["groups"]))
            y = exact_product(node, x_q[:, :layer.rows], w_eff)
            return y if y is not None else exact_int_matmul(node, x_q[:, :layer.rows], w_eff)
        if x_q.dtype.kind == "f":
            x_q = x_q.astype(np.int64)
        offset = self._row_offset(node.name, len(x_q))
        return crossbar_layer_matmul(x_q, programmed, input_bits=int(node.attrs["act_bits"]),
                                     signed_inputs=bool(node.attrs["act_signed"]),
                                     noise_key=self.noise_keys[node.name], row_offset=offset,
                                     report=self.report, chunk_bytes=self.chunk_bytes,
                                     backend=self.backend, device=self.array_device,
                                     adc_step=self.adc_steps.get(node.name, 1.0))


def calibrate_adc(graph, x: np.ndarray, hook: CrossbarMatmul) -> dict[str, np.ndarray]:
    """Largest column sum of each mapped layer and input cycle (T,) on calibration inputs
    ``x`` (the ideal quantized activations feed every layer): the ``"calibrated"`` ADC
    range, each input cycle its own (a 1-bit sign cycle is not read with the range of the
    8-bit cycles)."""
    from chipforge.sim.executor import exact_int_matmul, run_graph

    seen: dict[str, np.ndarray] = {}

    def record(node, x_q, w_q):
        programmed = hook.programmed.get(node.name)
        if programmed is not None:
            top = max_column_sum(x_q, programmed, input_bits=int(node.attrs["act_bits"]),
                                 signed_inputs=bool(node.attrs["act_signed"]),
                                 per_cycle=True)
            seen[node.name] = np.maximum(seen.get(node.name, top), top)
        return exact_int_matmul(node, x_q, w_q)

    run_graph(graph, x, matmul=record)
    return seen


ADC_WARNING_RELATIVE_ERROR = 0.5
"""Predicted rms error of a layer's output over the rms of its exact W.X above which a run
says so in one line (the ADC's rounding then swamps the product)."""


def adc_error_warnings(graph, x: np.ndarray, hook: CrossbarMatmul,
                       steps: dict[str, float | np.ndarray]) -> list[str]:
    """One line per layer whose ADC range predicts (:func:`predicted_adc_error`) an rms error
    above :data:`ADC_WARNING_RELATIVE_ERROR` times the rms of its exact outputs on ``x``."""
    from chipforge.sim.executor import exact_int_matmul, run_graph

    lines: list[str] = []

    def record(node, x_q, w_q):
        y = exact_int_matmul(node, x_q, w_q)
        programmed = hook.programmed.get(node.name)
        step = steps.get(node.name, 1.0)
        if programmed is not None and np.any(np.asarray(step) != 1.0):
            _, rms = predicted_adc_error(programmed, step,
                                         input_bits=int(node.attrs["act_bits"]),
                                         signed_inputs=bool(node.attrs["act_signed"]))
            exact = float(np.sqrt(np.mean(np.square(y.astype(np.float64))))) or 1.0
            relative = float(np.sqrt(np.mean(np.square(rms)))) / exact
            layer = programmed.layer
            if relative > ADC_WARNING_RELATIVE_ERROR and not any(
                    f"layer {node.name!r}" in line for line in lines):
                lines.append(
                    f"warning: layer {node.name!r}: the ADC range reads with a step of "
                    f"{float(np.max(step)):.4g} levels, whose rounding predicts a relative "
                    f"error of {relative:.2g} against W.X ({layer.dac_bits}-bit DACs, "
                    f"{layer.cell_bits}-bit cells, {layer.adc_bits}-bit ADC"
                    f"{f', unit column x{layer.offset}' if layer.offset else ''}): use "
                    "fewer DAC or cell bits, a wider ADC or the 'max' range")
        return y

    run_graph(graph, x, matmul=record)
    return lines
