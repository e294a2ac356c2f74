"""Cycle-level model of a mapped network on ISAAC or FORMS, driven by the real input bits.

For every weighted layer the model takes the layer's integer weight matrix (K, N) and the
integer inputs it actually sees (M vectors of K, recorded through the executor's ``matmul``
hook, so they are exactly what the crossbars would be fed), and counts:

- **Mapping.** Pruned rows and columns (all zero) are dropped, as crossbar-aware structured
  pruning intends (rows only in whole fragments when the layer was polarized with the
  architecture's fragment size); the remaining K' x N' matrix occupies ``ceil(K'/rows)``
  row tiles times ``ceil(N' * cells_per_weight / cols)`` column tiles of crossbars. A row tile holds
  ``rows / fragment_size`` row groups (ISAAC: one group of 128 rows; FORMS: fragments),
  converted one after the other (FORMS §IV-C) unless ``parallel_groups``.
  With a ``fragment_order`` attribute (``w-major``, ``h-major``, ``c-major``) a layer's rows
  are reordered the way FORMS polarized them (:func:`chipforge.sim.fragments.row_order`).
- **Input cycles.** A row group takes ``input_bits`` cycles, or with zero-skipping its
  effective input cycles EIC = max over its inputs of (bit width - leading zeros), plus
  ``group_overhead_cycles``. Row groups of one crossbar run one after the other (FORMS
  activates one fragment at a time); crossbars of different row tiles run in parallel, so a
  vector takes the slowest row tile's sum. One cycle is ``cycle_ns``.
- **Activity.** DAC conversions and crossbar row-cycles (active rows x cycles), ADC
  conversions (cycles x occupied columns, + the unit column on ISAAC), shift-and-adds (one
  per ADC code), sign-indicator add/subtracts (FORMS: one per fragment and weight column),
  eDRAM and bus traffic (inputs in, outputs out, 16 bits each), router flits.
- **Pipelining.** Layers run as an inter-layer pipeline (ISAAC §5) with weight replication:
  replicas are added greedily to the bottleneck layer while the tile budget lasts (a layer
  never gets more replicas than it has vectors per inference), which balances the layer
  times like ISAAC's ``S_x * S_y`` rule. Throughput is one frame per bottleneck layer time;
  latency sums each layer's time plus the ``pipeline_stages - input_bits`` non-crossbar
  stages (no overlap of layers within one frame: an upper bound).

Energy is activity times the per-action energies of :mod:`chipforge.sim.cycle.components`;
area and peak power come from the component tables.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np

from chipforge.sim.cycle.arch import Architecture, ReramArchConfig, action_energy, chip_model
from chipforge.sim.cycle.components import Category
from chipforge.sim.cycle.elementwise import ElementwiseActivity, elementwise_time_ns
from chipforge.sim.executor import (
    activation_range,
    block_diagonal_weights,
    exact_product,
    integer_weights,
    run_graph,
)
from chipforge.sim.fragments import row_order
from chipforge.sim.graph import Graph, Node, Op
from chipforge.sim.ref.forms_fragment import effective_bits

__all__ = [
    "LayerActivity",
    "LayerWorkload",
    "ModelReport",
    "WorkloadRecorder",
    "capture_workloads",
    "effective_bits",
    "replicate",
    "group_eic",
    "simulate_cycles",
]


def group_eic(x: np.ndarray, bits: int, group: int) -> np.ndarray:
    """Effective input cycles of each row group: (M, K) inputs -> (M, ceil(K/group)).

    The last group is padded with zero inputs (unused rows feed zeros).
    """
    eb = effective_bits(x, bits)
    m, k = eb.shape
    groups = -(-k // group)
    padded = np.zeros((m, groups * group), dtype=np.int64)
    padded[:, :k] = eb
    return padded.reshape(m, groups, group).max(axis=2)


@dataclasses.dataclass
class LayerWorkload:
    """One weighted layer as the crossbars see it."""

    name: str
    weights: np.ndarray
    """(K, N) integer weights (rows = inputs), pruned rows/cols still in."""
    inputs: np.ndarray
    """(M, K) integer inputs fed to the crossbars, M = frames x vectors per frame."""
    frames: int
    """Frames (images) the inputs cover."""
    input_bits_of_model: int | None = None
    """The model's activation width (``act_bits``), for reports."""
    row_groups: np.ndarray | None = None
    """From a placement: (groups, fragment_size) input-row indices of each row group in
    crossbar order (-1: an empty row). Then the placement's rows are used as they are (no
    compaction, no reordering here)."""
    crossbars: int | None = None
    """From a placement: crossbars of one copy of the layer (else computed here)."""
    fragment_size: int | None = None
    """The fragment size the weights were polarized with (attr ``fragment_size``): an
    architecture with that fragment size keeps the fragments whole when it drops pruned
    rows."""


def _row_permutation(node: Node) -> np.ndarray | None:
    """Crossbar row order of a polarized layer (``chipforge.sim.fragments.row_order``)."""
    order = node.attrs.get("fragment_order")
    if order is None:
        return None
    return row_order(tuple(node.params["weight"].shape), order)


def _narrow_int(node: Node) -> type:
    """The narrowest integer dtype holding a quantized node's activation range."""
    lo, hi = activation_range(node)
    for dtype in (np.uint8, np.int8, np.uint16, np.int16, np.int32):
        info = np.iinfo(dtype)
        if info.min <= lo and hi <= info.max:
            return dtype
    return np.int64


class WorkloadRecorder:
    """A matmul hook for :func:`chipforge.sim.executor.run_graph` that computes the exact
    integer product (the ideal run's arithmetic) and records each quantized weighted
    layer's integer inputs and weights on the way; :meth:`workloads` makes them the cycle
    model's :class:`LayerWorkload` list. So a caller that runs the ideal pass anyway
    (``simulate``) gets the cost model's inputs without a second exact pass: the same
    values :func:`capture_workloads` records. Quantized graphs only."""

    takes_float_integers = True       # the executor skips its int64 conversion

    def __init__(self, graph: Graph):
        self.graph = graph
        self.recorded: dict[str, list[np.ndarray]] = {}
        self.weights: dict[str, np.ndarray] = {}

    def __call__(self, node: Node, x_q: np.ndarray, w_q: np.ndarray) -> np.ndarray:
        # (a grouped conv comes as one product: all groups' patches, block-diagonal w_q)
        # x_q: the quantized integers as float64 values (takes_float_integers), kept in the
        # narrowest integer type of the node's activation range (uint8 for 8-bit unsigned:
        # an eighth of int64's memory and copies; the cycle model reads int64)
        self.recorded.setdefault(node.name, []).append(x_q.astype(_narrow_int(node)))
        self.weights[node.name] = w_q
        # the exact integers by float32 GEMMs where they fit, bounded by the node's
        # activation range (the ideal run's arithmetic), else float64: the same values
        y = exact_product(node, x_q, w_q)
        return x_q @ w_q.astype(np.float64) if y is None else y

    def workloads(self, frames: int) -> list[LayerWorkload]:
        """The recorded layers (in graph order) as workloads of ``frames`` inputs; the
        recorded inputs are handed over (the recorder is emptied)."""
        recorded, self.recorded = self.recorded, {}
        return _workloads(self.graph, recorded, self.weights, frames)


def _workloads(graph: Graph, recorded: dict[str, list[np.ndarray]],
               weights: dict[str, np.ndarray], frames: int) -> list[LayerWorkload]:
    out = []
    for node in graph.weighted_nodes():
        name = node.name
        if name not in recorded:
            continue
        parts = recorded.pop(name)        # drop each layer's parts once joined
        inputs = parts[0] if len(parts) == 1 else np.concatenate(parts)
        del parts
        w = weights[name]
        if node.quantized and node.op is Op.CONV2D and int(node.attrs.get("groups", 1)) > 1:
            w = block_diagonal_weights(node, integer_weights(node))
        perm = _row_permutation(node)
        if perm is not None and perm.size == w.shape[0]:
            w, inputs = w[perm], inputs[:, perm]
        out.append(LayerWorkload(name=name, weights=w, inputs=inputs, frames=frames,
                                 input_bits_of_model=node.attrs.get("act_bits"),
                                 fragment_size=node.attrs.get("fragment_size")))
    return out


def capture_workloads(graph: Graph, x: np.ndarray, *, act_bits: int = 16) -> list[LayerWorkload]:
    """Run ``graph`` on ``x`` and record every weighted layer's integer inputs and weights.

    Quantized nodes give their own integers (the executor's ``x_q``, ``w_q``; see
    :class:`WorkloadRecorder`). Float nodes are quantized here to ``act_bits``
    (activations, max-abs scale, unsigned when the input is non-negative) and 8-bit
    weights (max-abs per layer), which only sets the bits the cycle model sees.
    """
    nodes = {n.name: n for n in graph.weighted_nodes()}
    if all(n.quantized for n in nodes.values()):
        recorder = WorkloadRecorder(graph)
        run_graph(graph, x, matmul=recorder)
        return recorder.workloads(len(x))
    recorded: dict[str, list[np.ndarray]] = {}
    weights: dict[str, np.ndarray] = {}
    values = run_graph(graph, x, quantized=False, return_all=True)
    for name, node in nodes.items():
        inp = values[node.inputs[0]]
        if node.op is Op.CONV2D:
            from chipforge.sim.executor import im2col
            _, _, kh, kw = node.params["weight"].shape
            cols, _, _ = im2col(inp, kh, kw, int(node.attrs.get("stride", 1)),
                                int(node.attrs.get("padding", 0)))
        else:
            cols = inp.reshape(inp.shape[0], -1)
        signed = bool((cols < 0).any())
        top = (1 << (act_bits - 1)) - 1 if signed else (1 << act_bits) - 1
        scale = float(np.abs(cols).max()) / top or 1.0
        recorded[name] = [np.rint(cols / scale).astype(np.int64)]
        w = block_diagonal_weights(node)
        wscale = float(np.abs(w).max()) / 127 or 1.0
        weights[name] = np.rint(w / wscale).astype(np.int64)
    return _workloads(graph, recorded, weights, len(x))


@dataclasses.dataclass(frozen=True)
class LayerActivity:
    """What one layer costs per frame on one architecture."""

    name: str
    rows: int
    """K' rows after dropping pruned (all-zero) rows."""
    cols: int
    """N' weight columns after dropping pruned columns."""
    macs: int
    """K' * N' multiply-accumulates per vector."""
    vectors: int
    """Input vectors per frame (output positions)."""
    crossbars: int
    """Crossbars of one copy."""
    replicas: int
    cycles_per_vector: float
    """Mean cycles one vector occupies a crossbar (the slowest row tile), overheads in."""
    full_cycles_per_vector: float
    """The same without zero-skipping (every group takes ``input_bits`` cycles)."""
    mean_group_eic: float
    """Mean effective input cycles of this layer's row groups (over all vectors)."""
    time_ns: float
    """Time per frame with the replicas sharing the vectors."""
    actions: Mapping[str, float]
    """Per frame: dac, row_cycles, adc, shift_add, sign_ops, edram_accesses, bus_bits,
    router_flits."""
    energy_pj: Mapping[Category, float]

    @property
    def cycles(self) -> float:
        """Cycles per frame of one copy (all vectors through one replica)."""
        return self.cycles_per_vector * self.vectors

    @property
    def skip_saving(self) -> float:
        """Fraction of input cycles zero-skipping saves on this layer."""
        return 1.0 - self.cycles_per_vector / self.full_cycles_per_vector

    @property
    def energy_total_pj(self) -> float:
        return float(sum(self.energy_pj.values()))


@dataclasses.dataclass(frozen=True)
class ModelReport:
    """Per-layer and per-model results of one architecture on one model and data set."""

    model: str
    arch: ReramArchConfig
    layers: tuple[LayerActivity, ...]
    frames: int
    elementwise: tuple[ElementwiseActivity, ...] = ()
    """Element-wise ops of the digital units (:mod:`chipforge.sim.cycle.elementwise`)."""

    @property
    def cycle_ns(self) -> float:
        return self.arch.cycle_ns

    def elementwise_ns(self, activity: ElementwiseActivity) -> float:
        """Time of one element-wise node on the digital units of the tiles in use."""
        return elementwise_time_ns(activity, self.tiles)

    @property
    def bottleneck(self) -> LayerActivity:
        return max(self.layers, key=lambda la: la.time_ns)

    @property
    def period_ns(self) -> float:
        """Time between frames in the inter-layer pipeline (the slowest layer, or the
        slowest element-wise node on the digital units)."""
        return max([self.bottleneck.time_ns] + [self.elementwise_ns(a)
                                                for a in self.elementwise])

    @property
    def fps(self) -> float:
        return 1e9 / self.period_ns

    @property
    def latency_ns(self) -> float:
        extra = (self.arch.pipeline_stages - self.arch.input_bits) * self.cycle_ns
        return (sum(la.time_ns + extra for la in self.layers)
                + sum(self.elementwise_ns(a) for a in self.elementwise))

    @property
    def cycles(self) -> float:
        """Cycles per frame in the pipeline (period / cycle time)."""
        return self.period_ns / self.cycle_ns

    @property
    def ops(self) -> float:
        """Operations per frame: 2 per executed MAC (pruned weights not counted)."""
        return 2.0 * sum(la.macs * la.vectors for la in self.layers)

    @property
    def crossbars(self) -> int:
        """Crossbars used, replicas included."""
        return sum(la.crossbars * la.replicas for la in self.layers)

    @property
    def tiles(self) -> int:
        return -(-self.crossbars // self.arch.crossbars_per_tile)

    @property
    def energy_pj(self) -> dict[Category, float]:
        total = dict.fromkeys(Category, 0.0)
        for la in self.layers:
            for k, v in la.energy_pj.items():
                total[k] += v
        total[Category.DIGITAL] += sum(a.energy_pj for a in self.elementwise)
        return total

    @property
    def energy_per_frame_j(self) -> float:
        return sum(self.energy_pj.values()) * 1e-12

    @property
    def area_mm2(self) -> float:
        """Area of the tiles used (HyperTransport excluded)."""
        return self.tiles * chip_model(self.arch).totals().tile_area_mm2

    @property
    def chip_area_mm2(self) -> float:
        return chip_model(self.arch).totals().chip_area_mm2

    @property
    def peak_power_w(self) -> float:
        """Peak power of the tiles used, from the component table."""
        return self.tiles * chip_model(self.arch).totals().tile_power_mw / 1e3

    @property
    def gops(self) -> float:
        return self.ops * self.fps / 1e9

    @property
    def gops_per_mm2(self) -> float:
        return self.gops / self.area_mm2

    @property
    def gops_per_w(self) -> float:
        """Operations per joule of activity energy (GOPs/W)."""
        return self.ops / self.energy_per_frame_j / 1e9

    @property
    def gops_per_w_peak(self) -> float:
        """GOPs/s over the used tiles' table power (ISAAC Table IV's way, HyperTransport out)."""
        return self.gops / self.peak_power_w

    @property
    def skip_saving(self) -> float:
        """Input cycles saved by zero-skipping, over all row groups of all layers."""
        used = sum(la.cycles_per_vector * la.vectors for la in self.layers)
        full = sum(la.full_cycles_per_vector * la.vectors for la in self.layers)
        return 1.0 - used / full

    def summary(self) -> dict[str, float | int | str]:
        return {
            "arch": self.arch.name, "model": self.model, "cycles": self.cycles,
            "latency_us": self.latency_ns / 1e3, "fps": self.fps,
            "energy_uj": self.energy_per_frame_j * 1e6, "gops_per_s_mm2": self.gops_per_mm2,
            "gops_per_w": self.gops_per_w, "gops_per_w_peak": self.gops_per_w_peak,
            "crossbars": self.crossbars, "tiles": self.tiles,
            "skip_saving": self.skip_saving,
        }


def _compact(w: np.ndarray, x: np.ndarray, fragment: int | None
             ) -> tuple[np.ndarray, np.ndarray]:
    """Drop pruned (all-zero) columns, and pruned rows; with ``fragment`` (the weights were
    polarized in fragments of that many rows) only whole all-zero fragments go, so every
    fragment keeps the rows its sign was chosen for."""
    cols = np.flatnonzero(np.any(w != 0, axis=0))
    if fragment:
        k = w.shape[0]
        live = np.any(w != 0, axis=1)
        groups = -(-k // fragment)
        padded = np.zeros(groups * fragment, dtype=bool)
        padded[:k] = live
        keep_group = padded.reshape(groups, fragment).any(axis=1)
        rows = np.flatnonzero(np.repeat(keep_group, fragment)[:k])
    else:
        rows = np.flatnonzero(np.any(w != 0, axis=1))
    return w[rows][:, cols], x[:, rows]


def _vector_cycles(group_cycles: np.ndarray, row_tiles: int, arch: ReramArchConfig
                   ) -> np.ndarray:
    """(M, groups) cycles -> (M,) cycles: a crossbar's groups one after the other (or at
    once with ``parallel_groups``), row tiles in parallel."""
    m, groups = group_cycles.shape
    per_tile = arch.groups_per_crossbar
    padded = np.zeros((m, row_tiles * per_tile), dtype=np.int64)
    padded[:, :groups] = group_cycles
    per_crossbar = padded.reshape(m, row_tiles, per_tile)
    combine = per_crossbar.max if arch.parallel_groups else per_crossbar.sum
    return combine(axis=2).max(axis=1)


def _placed_group_eic(x: np.ndarray, x_min: int, x_max: int, row_groups: np.ndarray,
                      bits: int) -> np.ndarray:
    """Effective input cycles of each placed row group: (M, K) integer inputs in
    ``x_min..x_max`` -> (M, groups), an empty row (-1) feeding zero. ``effective_bits`` of
    the inputs' few distinct values looked up (narrow inputs: uint8 indices and bits, no
    int64 copy of the (M, groups, g) gather): the same numbers."""
    m, k = x.shape
    if x_max - x_min >= 1 << 16:          # wide values: the plain computation
        padded = np.concatenate([x.astype(np.int64), np.zeros((m, 1), dtype=np.int64)], axis=1)
        gathered = padded[:, np.where(row_groups >= 0, row_groups, k)]      # (M, G, g)
        return effective_bits(gathered, bits).max(axis=2)
    table = effective_bits(np.arange(x_min, x_max + 1), bits).astype(np.uint8)
    index = x if x_min == 0 else x.astype(np.int64) - x_min
    eb = np.zeros((m, k + 1), dtype=np.uint8)           # the last column: an empty row
    eb[:, :k] = table[index]
    return eb[:, np.where(row_groups >= 0, row_groups, k)].max(axis=2).astype(np.int64)


def _layer_costs(work: LayerWorkload, arch: ReramArchConfig) -> dict:
    """Replication-independent costs of one layer: crossbars, cycles, activity, energy."""
    x = np.asarray(work.inputs)
    if x.dtype.kind not in "ui":
        x = x.astype(np.int64)
    lo, hi = -(1 << (arch.input_bits - 1)), (1 << arch.input_bits) - 1
    x_min, x_max = int(x.min(initial=0)), int(x.max(initial=0))
    if x_min < lo or x_max > hi:
        raise ValueError(f"layer {work.name!r}: inputs span {x_min}..{x_max}, "
                         f"which {arch.input_bits}-bit inputs cannot feed")
    g = arch.fragment_size
    if work.row_groups is not None:
        # A placement decided the rows: group j holds inputs row_groups[j] (-1: empty row).
        row_groups = np.asarray(work.row_groups, dtype=np.int64)
        if row_groups.ndim != 2 or row_groups.shape[1] != g:
            raise ValueError(f"layer {work.name!r}: row_groups must be (groups, {g}) for "
                             f"fragment_size {g}, not {row_groups.shape}")
        # only zero-skipping reads the inputs' bits (else every group takes input_bits)
        eic_all = (_placed_group_eic(x, x_min, x_max, row_groups, arch.input_bits)
                   if arch.zero_skipping else None)
        rows_in_group = (row_groups >= 0).sum(axis=1)
        k, n = int(rows_in_group.sum()), int(np.asarray(work.weights).shape[1])
        groups = row_groups.shape[0]
        row_tiles = -(-groups * g // arch.crossbar_rows)
    else:
        x = x.astype(np.int64, copy=False)
        polarized = bool(work.fragment_size) and work.fragment_size % arch.fragment_size == 0
        w, x = _compact(np.asarray(work.weights), x, arch.fragment_size if polarized else None)
        k, n = w.shape
        if k == 0 or n == 0:
            raise ValueError(f"layer {work.name!r} has no non-zero weights to map")
        groups = -(-k // g)
        rows_in_group = np.minimum(g, k - g * np.arange(groups))        # (groups,)
        eic_all = group_eic(x, arch.input_bits, g) if arch.zero_skipping else None
        row_tiles = -(-k // arch.crossbar_rows)
    m = x.shape[0]
    vectors = m / work.frames
    phys_cols = n * arch.cells_per_weight
    col_tiles = -(-phys_cols // arch.crossbar_cols)
    crossbars = work.crossbars or row_tiles * col_tiles
    if arch.zero_skipping:
        eic = eic_all                                                   # (M, groups)
    else:
        eic = np.full((m, groups), arch.input_bits, dtype=np.int64)
    vector_cycles = _vector_cycles(eic + arch.group_overhead_cycles, row_tiles, arch)
    full = np.full((1, groups), arch.input_bits + arch.group_overhead_cycles, dtype=np.int64)
    full_vector = _vector_cycles(full, row_tiles, arch)[0]
    # Activity per frame.
    active_row_cycles = float((eic * rows_in_group).sum()) / work.frames
    col_conversions = phys_cols + (col_tiles if arch.unit_column else 0)
    adc = float(eic.sum()) * col_conversions / work.frames
    # FORMS' sign indicator: one add/subtract per fragment and weight column.
    sign_ops = groups * n * vectors if arch.architecture is Architecture.FORMS else 0.0
    word_bits = 16
    bus_bits = (k * arch.input_bits + n * word_bits) * vectors
    e = action_energy(arch)
    edram_accesses = bus_bits / e.edram_bus_bits
    router_flits = n * word_bits * vectors / 256
    actions = {"dac": active_row_cycles, "row_cycles": active_row_cycles, "adc": adc,
               "shift_add": adc, "sign_ops": float(sign_ops),
               "edram_accesses": edram_accesses, "bus_bits": float(bus_bits),
               "router_flits": router_flits}
    energy = dict.fromkeys(Category, 0.0)
    energy[Category.DAC] = actions["dac"] * e.dac_conversion_pj
    energy[Category.CROSSBAR] = actions["row_cycles"] * e.crossbar_row_cycle_pj
    energy[Category.ADC] = adc * e.adc_conversion_pj
    energy[Category.DIGITAL] = (adc + actions["sign_ops"]) * e.shift_add_pj
    energy[Category.EDRAM] = edram_accesses * e.edram_access_pj + bus_bits * e.edram_bus_pj_per_bit
    energy[Category.INTERCONNECT] = router_flits * e.router_pj
    return dict(name=work.name, rows=k, cols=n, macs=k * n, vectors=vectors,
                crossbars=crossbars, cycles_per_vector=float(vector_cycles.mean()),
                full_cycles_per_vector=float(full_vector),
                mean_group_eic=float(eic.mean()), actions=actions, energy_pj=energy)


def replicate(crossbars: Sequence[int], vector_ns: Sequence[float], vectors: Sequence[float],
              budget: int) -> list[int]:
    """Greedy balanced replication: give the bottleneck layer one more copy while it fits.

    A layer with ``r`` copies takes ``ceil(vectors / r) * vector_ns`` per frame; it gets at
    most ``ceil(vectors)`` copies (a copy needs a vector to work on).
    """
    need = sum(crossbars)
    if need > budget:
        raise ValueError(f"the model needs {need} crossbars for one copy of its weights, "
                         f"the architecture has {budget}: raise tiles or map fewer layers")
    reps = [1] * len(crossbars)
    left = budget - need
    caps = [max(1, math.ceil(v)) for v in vectors]
    while True:
        times = [math.ceil(v / r) * t for v, t, r in zip(vectors, vector_ns, reps, strict=True)]
        worst = max(range(len(reps)), key=lambda i: times[i])
        if reps[worst] >= caps[worst] or crossbars[worst] > left:
            return reps
        reps[worst] += 1
        left -= crossbars[worst]


def simulate_cycles(workloads: Sequence[LayerWorkload], arch: ReramArchConfig, *,
                    model: str = "model",
                    elementwise: Sequence[ElementwiseActivity] = ()) -> ModelReport:
    """Cycle, energy and area report of ``workloads`` (from :func:`capture_workloads`),
    plus the ``elementwise`` ops of the digital units (from
    :func:`chipforge.sim.cycle.elementwise.elementwise_activity`)."""
    if not workloads:
        raise ValueError("no weighted layers to simulate")
    costs = [_layer_costs(w, arch) for w in workloads]
    per_vector = [c["cycles_per_vector"] * arch.cycle_ns for c in costs]
    reps = replicate([c["crossbars"] for c in costs], per_vector, [c["vectors"] for c in costs],
                     arch.crossbars)
    layers = tuple(LayerActivity(replicas=r, time_ns=math.ceil(c["vectors"] / r) * t, **c)
                   for c, r, t in zip(costs, reps, per_vector, strict=True))
    return ModelReport(model=model, arch=arch, layers=layers, frames=workloads[0].frames,
                       elementwise=tuple(elementwise))
