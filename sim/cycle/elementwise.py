"""Cost of the element-wise ops the digital periphery computes (not the crossbars).

Mobile CNNs add activation units and products of two activations between their weighted
layers: ``SIGMOID``, ``HARDSIGMOID``, ``HARDSWISH``, ``SILU`` and ``MUL``
(squeeze-and-excitation's ``x * gate``), :data:`chipforge.sim.graph.ELEMENTWISE_OPS`.
Each is counted as one element-wise operation per output value at the tile's digital
unit, ISAAC's ``sigmoid`` unit (Table I: 2 units per tile, 0.52 mW, 0.0006 mm² together):

- energy: :data:`ELEMENTWISE_PJ_PER_VALUE` = 0.52 mW / 2 units / 1 GHz = 0.26 pJ per value.
  The 1 GHz rate (one value per unit per ns) is our assumption: ISAAC gives the unit's
  power, not its throughput. A SiLU or HardSwish (a nonlinearity and a product) counts as
  one value, as the unit computes it in one pass (assumed too).
- time: the values of one layer over the units of the tiles in use, at that rate
  (:func:`elementwise_time_ns`). The units run beside the crossbars (ISAAC's pipeline
  puts them after the shift-and-add stage), so this time is added to the latency and
  compared with the pipeline's bottleneck, not added to every layer.

ReLU, pooling and residual adds stay uncounted, as in the cycle model of the papers (they
fold into the output register path); the new ops are counted because a mobile CNN spends
a noticeable share of its digital work in them.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from chipforge.sim.graph import ELEMENTWISE_OPS, Graph

__all__ = ["ELEMENTWISE_PJ_PER_VALUE", "ELEMENTWISE_SOURCE", "ELEMENTWISE_UNITS_PER_TILE",
           "ElementwiseActivity", "elementwise_activity", "elementwise_time_ns"]

ELEMENTWISE_UNITS_PER_TILE = 2
"""ISAAC Table I: two sigmoid units per tile."""
ELEMENTWISE_VALUES_PER_NS = 1.0
"""Values one unit computes per ns (assumed: 1 GHz; ISAAC Table I gives no rate)."""
ELEMENTWISE_PJ_PER_VALUE = 0.52e-3 / ELEMENTWISE_UNITS_PER_TILE / (
    ELEMENTWISE_VALUES_PER_NS * 1e9) * 1e12
"""0.26 pJ per value: ISAAC Table I's sigmoid units (0.52 mW for 2) at the assumed rate."""
ELEMENTWISE_SOURCE = ("ISAAC Table I sigmoid unit (2 per tile, 0.52 mW); one value per unit "
                      "per ns assumed; 0.26 pJ per value")


@dataclasses.dataclass(frozen=True)
class ElementwiseActivity:
    """One element-wise node's work per frame."""

    name: str
    op: str
    values: int
    """Output values per frame (one operation each)."""

    @property
    def energy_pj(self) -> float:
        return self.values * ELEMENTWISE_PJ_PER_VALUE


def elementwise_activity(graph: Graph) -> list[ElementwiseActivity]:
    """The element-wise nodes of ``graph`` with their values per frame (shapes from one
    zero probe: they do not depend on the data)."""
    nodes = [n for n in graph.nodes if n.op in ELEMENTWISE_OPS]
    if not nodes:
        return []
    from chipforge.sim.executor import run_graph

    values = run_graph(graph, np.zeros((1, *graph.input_shape)), quantized=False,
                       return_all=True)
    return [ElementwiseActivity(n.name, n.op.value, int(values[n.name][0].size))
            for n in nodes]


def elementwise_time_ns(activity: ElementwiseActivity, tiles: int) -> float:
    """Time of one node's values on the digital units of ``tiles`` tiles."""
    units = ELEMENTWISE_UNITS_PER_TILE * max(int(tiles), 1)
    return activity.values / (units * ELEMENTWISE_VALUES_PER_NS)
