"""Memory of a crossbar simulation: estimate it before running, stream the batch to a budget.

The peak of a simulation is three terms, each estimated from the model before any work:

- the programmed chip (fixed): per layer its cell levels, fault map, conductances,
  read-noise variances and the kernels' layouts of them
  (:func:`programmed_bytes`), or the exact effective weights of the fast path;
- the executor's activations (per sample): every node's output of a batch is kept while
  the batch runs, plus the working set of the widest weighted node (its im2col patches in
  float64, their integer quantization and the kernel's padded copy)
  (:func:`executor_bytes_per_sample`);
- the crossbar kernels' temporaries (per input row): bit planes and column sums of the
  GEMM path, bounded by ``chunk_bytes`` (:func:`chipforge.sim.reram.layer_chunk_bytes_per_row`).

:func:`plan_memory` splits a budget (default: half the memory available now) between the
executor's batch and the kernels' chunk, and refuses with one line when even one sample
does not fit. Results do not depend on the plan: the read noise is indexed by read, not by
chunk (:mod:`chipforge.sim.reram_kernels`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from chipforge.guard import available_memory
from chipforge.sim.devices import ReadNoiseModel
from chipforge.sim.executor import run_graph
from chipforge.sim.graph import Graph, Op
from chipforge.sim.reram import _GRID_TERMS_FLOAT32, layer_chunk_bytes_per_row

__all__ = ["MemoryPlan", "available_memory", "executor_bytes_per_sample", "format_bytes",
           "parse_size", "plan_memory", "programmed_bytes"]

DEFAULT_FRACTION = 0.5
"""Default budget: this fraction of the memory available when the simulation starts."""

_MAX_CHUNK = 256 << 20      # bigger kernel chunks do not run faster
_MIN_CHUNK = 8 << 20


_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20,
          "mb": 1 << 20, "mib": 1 << 20, "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30,
          "t": 1 << 40, "tb": 1 << 40, "tib": 1 << 40}


def parse_size(text: str | int, what: str = "--max-memory") -> int:
    """Bytes from ``"2G"``, ``"1.5GiB"``, ``"500M"`` or a plain number of bytes."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
        if not m or m.group(2).lower() not in _UNITS:
            raise ValueError(f"{what} must be a size such as 2G, 500M or 1.5GiB, not {text!r}")
        value = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if value < (16 << 20):
        raise ValueError(f"{what} must be at least 16M, not {text!r}")
    return value


def format_bytes(n: float) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


def programmed_bytes(mapped, device) -> int:
    """Bytes the programmed chip holds (see the module doc)."""
    total = transient = 0
    for layer in mapped.layers.values():
        g, r, c = layer.levels.shape
        cells = g * r * c
        rows = layer.rows
        bound = r * ((1 << layer.dac_bits) - 1) * ((1 << layer.cell_bits) - 1)
        item = 4 if bound < (1 << 24) else 8
        if (device.programming_sigma > 0 or device.read_noise > 0) \
                and r * ((1 << layer.dac_bits) - 1) ** 2 > _GRID_TERMS_FLOAT32:
            item = 8                       # programmed in float64 (chipforge.sim.reram)
        total += layer.levels.nbytes + layer.row_index.nbytes + layer.coef.nbytes * 2
        if device.ideal or (device.programming_sigma == 0 and device.read_noise == 0):
            total += cells + 8 * rows * layer.outputs        # faults, effective weights
        proportional = (device.read_noise > 0
                        and device.read_noise_model is ReadNoiseModel.PROPORTIONAL)
        total += cells * item * (2 if proportional else 1)  # conductance (+variances)
        if device.stuck_at_rate > 0:
            total += cells
        # Programming temporaries (layers are programmed one at a time: the largest counts):
        # the log-normal draw in float64 and its exact-grid copy; the proportional read
        # noise's float64 variances, or the [cells | variances] buffer while both halves
        # are still separate (chipforge.sim.reram.program_layer).
        # (measured with tracemalloc on a 512 x 512 layer: the estimate equals the peak)
        layer_transient = 0
        if device.stuck_at_rate > 0:
            layer_transient = cells * 8                   # the fault map's uniform draw
        if device.programming_sigma > 0:
            layer_transient = max(layer_transient, cells * (16 + item))
        if proportional:
            layer_transient = max(layer_transient, cells * max(8, 2 * item))
        transient = max(transient, layer_transient)
    return total + transient


def executor_bytes_per_sample(graph: Graph) -> int:
    """Bytes of the executor's working set per sample (see the module doc)."""
    x = np.zeros((1, *graph.input_shape))
    values = run_graph(graph, x, quantized=False, return_all=True)
    kept = sum(v.nbytes for v in values.values())
    widest = 0
    for node in graph.nodes:
        if node.op is Op.CONV2D:
            k = int(np.prod(node.params["weight"].shape[1:]))
            rows = values[node.name][0, 0].size
            widest = max(widest, rows * k)
        elif node.op is Op.LINEAR:
            rows = values[node.name].size // node.params["weight"].shape[0]
            widest = max(widest, rows * node.params["weight"].shape[1])
    # patches (float64) + quantized inputs (int64) + the kernel's padded copy (int64)
    # + the quantizer's float temporary
    return kept + 4 * 8 * widest


@dataclass(frozen=True)
class MemoryPlan:
    """How a simulation fits its memory budget."""

    budget: int
    fixed: int
    """The programmed chip."""
    per_sample: int
    """The executor's working set per sample."""
    batch: int
    """Samples per executor batch."""
    chunk_bytes: int
    """Bound on one layer's kernel temporaries."""

    @property
    def estimate(self) -> int:
        """Estimated peak: chip + one batch + one kernel chunk."""
        return self.fixed + self.per_sample * self.batch + self.chunk_bytes

    def describe(self) -> str:
        return (f"memory: estimated peak {format_bytes(self.estimate)} of a "
                f"{format_bytes(self.budget)} budget (chip {format_bytes(self.fixed)}, "
                f"batches of {self.batch} samples x {format_bytes(self.per_sample)}, kernel "
                f"chunks of {format_bytes(self.chunk_bytes)})")


def plan_memory(graph: Graph, mapped, device, samples: int, budget: int | None = None,
                *, max_batch: int = 512) -> MemoryPlan:
    """Split ``budget`` bytes (default: :data:`DEFAULT_FRACTION` of the available memory)
    between the executor's batch and the kernels' chunk; ``ValueError`` when one sample
    with the smallest chunk does not fit."""
    if budget is None:
        budget = int(available_memory() * DEFAULT_FRACTION)
    fixed = programmed_bytes(mapped, device)
    per_sample = max(1, executor_bytes_per_sample(graph))
    free = budget - fixed
    if free < per_sample + _MIN_CHUNK:
        raise ValueError(f"the simulation needs at least "
                         f"{format_bytes(fixed + per_sample + _MIN_CHUNK)} (the programmed "
                         f"chip alone {format_bytes(fixed)}); the memory budget is "
                         f"{format_bytes(budget)} (raise --max-memory or use a smaller model)")
    chunk = int(min(_MAX_CHUNK, max(_MIN_CHUNK, free // 4)))
    # A kernel chunk holds at least one input row of the widest layer.
    nodes = {n.name: n for n in graph.nodes}
    one_row = max((layer_chunk_bytes_per_row(
        layer, int(nodes[name].attrs.get("act_bits", 16)) + 1, device.read_noise > 0)
        for name, layer in mapped.layers.items()), default=0)
    chunk = max(chunk, one_row)
    if free < per_sample + chunk:
        raise ValueError(f"the simulation needs at least "
                         f"{format_bytes(fixed + per_sample + chunk)} (the programmed chip "
                         f"{format_bytes(fixed)}, one input row of its widest layer "
                         f"{format_bytes(one_row)}); the memory budget is "
                         f"{format_bytes(budget)} (raise --max-memory)")
    batch = int(max(1, min(max_batch, samples, (free - chunk) // per_sample)))
    return MemoryPlan(budget, fixed, per_sample, batch, chunk)
