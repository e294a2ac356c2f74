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
"""

from __future__ import annotations

import dataclasses
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
from chipforge.sim.executor import exact_int_matmul
from chipforge.sim.graph import Node
from chipforge.sim.ref.crossbar import adc_convert, input_slices

__all__ = ["CrossbarMatmul", "LayerStats", "MappedLayer", "MappedModel", "ProgrammedLayer",
           "can_never_saturate", "crossbar_layer_matmul", "effective_weights", "program_layer"]

# Batch chunking: each chunk's GEMMs get at least _MIN_ROWS stacked rows (BLAS needs tall
# operands to run near peak), and its analog-sum array stays below _CHUNK_BYTES (memory
# stays flat for big batches).
_CHUNK_BYTES = 96 << 20
_MIN_ROWS = 1024


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
        """K: rows of the layer's weight matrix."""
        return int(self.row_index.max(initial=-1)) + 1


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


def _seed_stream(seed: int, layer_index: int, purpose: int) -> np.random.Generator:
    # One independent stream per (seed, layer, purpose): the fault map of a layer depends
    # only on the seed and the layer's position, never on draws made for other purposes.
    return np.random.default_rng(np.random.SeedSequence([int(seed), layer_index, purpose]))


_FAULTS, _VARIATION, _READ = 1, 2, 3


def program_layer(layer: MappedLayer, device: ReramDeviceConfig = IDEAL_DEVICE, *,
                  seed: int = 0, layer_index: int = 0) -> ProgrammedLayer:
    """Program a mapped layer's cells on ``device`` (faults and variation from ``seed``)."""
    faults = None
    if device.stuck_at_rate > 0:
        faults = draw_fault_map(layer.levels.shape, device,
                                _seed_stream(seed, layer_index, _FAULTS))
    # Exact integer sums stay exact in float32 below 2**24 (the reference's rule).
    bound = layer.levels.shape[1] * ((1 << layer.dac_bits) - 1) * ((1 << layer.cell_bits) - 1)
    dtype = np.float32 if bound < (1 << 24) else np.float64
    g = program_cells(layer.levels, layer.cell_bits, device,
                      _seed_stream(seed, layer_index, _VARIATION), faults, dtype=dtype)
    noise_var = None
    if device.read_noise > 0 and device.read_noise_model is ReadNoiseModel.PROPORTIONAL:
        base = device.g_off / device.level_step(layer.cell_bits)
        noise_var = (np.square(g.astype(np.float64) + base) * device.read_noise ** 2
                     ).astype(dtype)
    return ProgrammedLayer(layer, g, faults, noise_var, device)


def _cycle_weights(cfg: CrossbarConfig) -> np.ndarray:
    """Signed weight of each input cycle in the MSB-first Horner recurrence."""
    widths = cfg.input_slice_widths
    below = np.cumsum(widths[::-1])[::-1] - np.array(widths)
    w = np.left_shift(np.int64(1), below.astype(np.int64))
    if cfg.signed_inputs:
        w[0] = -w[0]
    return w


def crossbar_layer_matmul(x_q: np.ndarray, programmed: ProgrammedLayer, *, input_bits: int,
                          signed_inputs: bool, rng: np.random.Generator | None = None,
                          report: dict[str, int] | None = None) -> np.ndarray:
    """``x_q @ w_q`` of one mapped layer computed by its crossbars: int64 (M, N).

    ``x_q`` (M, K) integers in the ``input_bits`` range (signed or not), fed bit-serially
    through ``dac_bits`` DACs. ``rng`` draws the read noise (required when the device has
    read noise). ``report``, if given, accumulates ``adc_reads`` and ``saturated`` counts.
    """
    layer = programmed.layer
    device = programmed.device
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
    if device.read_noise > 0 and rng is None:
        raise ValueError("a device with read noise needs an rng for the reads")
    cycle_w = _cycle_weights(cfg)
    n_groups, rows, cols = layer.levels.shape
    n_out, per = layer.outputs, layer.per_output
    mask = (1 << layer.cell_bits) - 1
    full = (1 << layer.adc_bits) - 1
    dtype = programmed.conductance.dtype
    # Work in slice-major column order (c' = p * N + n), so adding an output's slices
    # reduces over contiguous blocks instead of a short strided axis.
    order = np.arange(cols).reshape(n_out, per).T.reshape(-1)
    cells = programmed.conductance[:, :, order]
    noise_var = None if programmed.noise_var is None else programmed.noise_var[:, :, order]

    # Fold flips into the digital weights: value = code * (1 - 2f) + f * mask * unit.
    sign_coef = np.where(layer.flipped, -layer.coef, layer.coef)            # (G, C)
    flip_coef = (layer.flipped * layer.coef).reshape(n_groups, n_out, per).sum(-1) * mask
    unit_coef = (flip_coef - layer.offset).astype(np.float64)                # (G, N)
    # Codes times coefficients, summed over groups and slices, stay exact in float32 while
    # below 2**24; otherwise use float64.
    bound = full * float(np.abs(layer.coef).reshape(n_groups, n_out, per).sum(axis=(0, 2)).max())
    acc_dtype = np.float32 if bound < (1 << 24) else np.float64
    sign_coef = sign_coef[:, order].astype(acc_dtype)[:, None, :]             # (G, 1, C)

    # Row gather: a zero column at index K feeds the unused crossbar rows.
    gather = np.where(layer.row_index < 0, k, layer.row_index).reshape(-1)
    indep_var = None
    if device.read_noise > 0 and device.read_noise_model is ReadNoiseModel.INDEPENDENT:
        indep_var = (device.read_noise * mask) ** 2

    cycles = cfg.input_cycles
    per_row_bytes = cycles * n_groups * cols * np.dtype(dtype).itemsize
    chunk = max(1, -(-_MIN_ROWS // cycles), _CHUNK_BYTES // max(per_row_bytes, 1))
    chunk = min(m_total, chunk)
    out = np.empty((m_total, n_out), dtype=np.int64)
    saturated = 0
    for start in range(0, m_total, chunk):
        xs = x_q[start:start + chunk]
        mb = xs.shape[0]
        planes = input_slices(xs, cfg)                                      # (T, mb, K)
        planes = np.concatenate([planes, np.zeros((cycles, mb, 1), planes.dtype)], axis=2)
        a = planes[:, :, gather].astype(dtype).reshape(cycles * mb, n_groups, rows)
        a = np.ascontiguousarray(a.transpose(1, 0, 2))                      # (G, T*mb, R)
        sums = np.matmul(a, cells)                                           # (G, T*mb, C)
        unit = a.sum(axis=2)                                                 # (G, T*mb)
        if device.read_noise > 0:
            a2 = a if layer.dac_bits == 1 else a * a
            noise = rng.standard_normal(sums.shape, dtype=np.float32)
            if noise_var is not None:
                std = np.matmul(a2, noise_var)               # the variance: one more GEMM
                np.sqrt(std, out=std)
                std *= noise
                sums += std
            else:
                noise *= np.sqrt(a2.sum(axis=2) * indep_var, dtype=np.float32)[:, :, None]
                sums += noise
            del noise
        if report is not None:
            saturated += int(np.count_nonzero(sums > full + 0.5))
        codes = adc_convert(sums, layer.adc_bits, out=sums)
        unit_codes = np.minimum(unit, full).astype(np.float64)
        if layer.unit_column:
            saturated += int(np.count_nonzero(unit > full))
        # Digital side: weight the columns, add the groups, then the slices of each output.
        codes = codes.astype(acc_dtype, copy=False)
        codes *= sign_coef
        if n_groups > 1:
            codes = codes.sum(axis=0, keepdims=True)
        per_cycle = codes.reshape(cycles * mb, per, n_out).sum(axis=1)
        per_cycle = np.rint(per_cycle).astype(np.int64)
        if layer.unit_column:
            per_cycle += np.rint(unit_codes.T @ unit_coef).astype(np.int64)
        per_cycle = per_cycle.reshape(cycles, mb, n_out)
        out[start:start + mb] = np.tensordot(cycle_w, per_cycle, axes=(0, 0))
    if report is not None:
        reads = m_total * layer.stats.adc_reads_per_vector
        report["adc_reads"] = report.get("adc_reads", 0) + reads
        report["saturated"] = report.get("saturated", 0) + saturated
    return out


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
    """

    def __init__(self, mapped: MappedModel, device: ReramDeviceConfig = IDEAL_DEVICE, *,
                 seed: int = 0, fast_path: bool = True) -> None:
        self.mapped = mapped
        self.device = device
        self.seed = seed
        self.programmed = {name: program_layer(layer, device, seed=seed, layer_index=i)
                           for i, (name, layer) in enumerate(mapped.layers.items())}
        # Integer cells, no noise, no possible saturation: one exact product per layer.
        self.effective = {}
        if fast_path:
            for name, programmed in self.programmed.items():
                w_eff = effective_weights(programmed)
                if w_eff is not None:
                    self.effective[name] = w_eff
        # SFC64: the read noise needs one Gaussian per ADC read, and bit generation is the
        # cost that dominates it (SFC64 is the fastest of numpy's generators).
        self.rng = np.random.Generator(np.random.SFC64(np.random.SeedSequence([int(seed), 0,
                                                                              _READ])))
        self.report: dict[str, int] = {}

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
            self.report["adc_reads"] = (self.report.get("adc_reads", 0)
                                        + len(x_q) * layer.stats.adc_reads_per_vector)
            self.report.setdefault("saturated", 0)
            if int(node.attrs.get("groups", 1)) > 1:
                return _block_diagonal_product(x_q[:, :layer.rows], w_eff,
                                               int(node.attrs["groups"]))
            return exact_int_matmul(node, x_q[:, :layer.rows], w_eff)
        return crossbar_layer_matmul(x_q, programmed, input_bits=int(node.attrs["act_bits"]),
                                     signed_inputs=bool(node.attrs["act_signed"]),
                                     rng=self.rng, report=self.report)

