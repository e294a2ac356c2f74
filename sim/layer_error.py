"""Where accuracy is lost: each crossbar layer's output against the ideal run.

:func:`layer_error_table` runs the quantized graph twice on the same samples, once with
exact integer arithmetic (the ideal chip) and once through the simulated crossbars, and
compares every weighted layer's output: relative error ``||y_hw - y_ideal|| /
||y_ideal||`` and signal-to-noise ratio ``10 log10(||y_ideal||^2 / ||y_hw - y_ideal||^2)``
in dB. Errors compound: a layer's inputs are the hardware's own (noisy) activations, as on
the chip. The hardware run uses a fresh hook of the same chip instance and seed, so its
first samples see the same reads as the main run's.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from chipforge.sim.executor import run_graph
from chipforge.sim.graph import Graph

__all__ = ["format_layer_errors", "layer_error_table"]


def layer_error_table(graph: Graph, x: np.ndarray, make_hook: Callable[[], Any], *,
                      batch_size: int = 64) -> list[dict[str, Any]]:
    """Per weighted node: ``node``, ``relative_error``, ``snr_db`` (inf when exact)."""
    ideal = run_graph(graph, x, return_all=True, batch_size=batch_size)
    hardware = run_graph(graph, x, matmul=make_hook(), return_all=True, batch_size=batch_size)
    rows = []
    for node in graph.weighted_nodes():
        ref, got = ideal[node.name], hardware[node.name]
        signal = float(np.sum(np.square(ref)))
        noise = float(np.sum(np.square(got - ref)))
        rel = math.sqrt(noise / signal) if signal > 0 else (0.0 if noise == 0 else math.inf)
        snr = math.inf if noise == 0 else (10 * math.log10(signal / noise) if signal > 0
                                           else -math.inf)
        rows.append({"node": node.name, "relative_error": rel, "snr_db": snr})
    return rows


def format_layer_errors(rows: list[dict[str, Any]]) -> str:
    width = max([len("layer")] + [len(r["node"]) for r in rows])
    lines = [f"  {'layer'.ljust(width)}  relative error    SNR (dB)"]
    for r in rows:
        snr = "exact" if r["snr_db"] == math.inf else f"{r['snr_db']:.1f}"
        lines.append(f"  {r['node'].ljust(width)}  {r['relative_error']:14.4g}  {snr:>10}")
    return "\n".join(lines)
