"""The report of ``chipforge simulate``: a terminal table, a JSON file and PNG plots.

``write_report(result, out_dir, cost=..., section=...)`` takes the
:class:`~chipforge.simulate.SimulationResult` of the functional simulation, the family's
:class:`~chipforge.families.base.CostReport` (or None) and its family-specific numbers, and
writes into ``out_dir``, the same for every accelerator family:

- ``report.json`` (``schema`` 3) — ``simulation`` (accuracies, metrics, per-layer
  mapping), ``cost`` (cycles, latency, throughput, energy, area per layer and in total,
  with its basis), ``family`` (name and the family's own section), ``notes`` and, when the
  run measured it, ``layer_errors`` (each layer's relative error and SNR vs the ideal run):
  the results, byte-identical across identical runs. ``run`` holds what depends on the run
  itself: ``stages`` (measured wall and CPU seconds of each step, :mod:`chipforge.stages`),
  ``seconds``, ``memory`` (the budget taken from the memory free at the time, the batch
  chunk and its estimate) and ``report_dir``. Schema 3 moved ``stages`` (top level in
  schema 2) and ``simulation.seconds`` / ``simulation.metrics.memory_*`` there. Non-finite
  numbers are written as ``null`` (strict JSON); an exact layer has ``"exact": true``;
- ``accuracy.png`` — accuracy of the float model, ideal hardware and simulated hardware;
- ``layers.png`` — per-layer latency and energy by component (with a cost model), else
  the per-layer mapping.

Matplotlib runs on the Agg backend (no display needed).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
from pathlib import Path
from typing import Any

from chipforge.files import atomic_savefig, atomic_write

__all__ = ["RUN_METRICS", "SI_PREFIXES", "cycle_summary", "finite", "format_cost", "format_extra",
           "plain", "run_facts", "short_layer_names", "si", "si_scale", "write_report"]

SI_PREFIXES = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, ""), (1e-3, "m"),
               (1e-6, "u"), (1e-9, "n"), (1e-12, "p"), (1e-15, "f"), (1e-18, "a"),
               (1e-21, "z"))
"""Factor and prefix (``u`` for micro, plain ASCII for terminals and file names)."""


def si_scale(value: float, *, micro: str = "u") -> tuple[float, str]:
    """The factor and SI prefix that put ``|value|`` in [1, 1000) (1 and "" for 0);
    ``micro="µ"`` for plots."""
    magnitude = abs(float(value))
    if magnitude == 0 or magnitude != magnitude:
        return 1.0, ""
    for factor, prefix in SI_PREFIXES:
        if magnitude >= factor * (1 - 5e-13):
            return factor, micro if prefix == "u" else prefix
    return SI_PREFIXES[-1]


def si(value: float | None, unit: str, digits: int = 4, *, micro: str = "u") -> str:
    """``value`` with an SI prefix on ``unit``: ``si(3.3e-7, "J")`` -> ``"330 nJ"``."""
    if value is None or value != value:
        return "-"
    factor, prefix = si_scale(value, micro=micro)
    return f"{value / factor:.{digits}g} {prefix}{unit}"


MICRO = "\u00b5"
"""The micro sign plots use (text reports keep ASCII ``u``)."""

_SUFFIX_UNITS = {"_j": "J", "_s": "s", "_w": "W", "_hz": "Hz"}


def format_extra(key: str, value: Any) -> str:
    """``key value`` of a cost report's ``extra`` number: a key ending in ``_j``, ``_s``,
    ``_w`` or ``_hz`` is a quantity in that unit, printed with an SI prefix."""
    for suffix, unit in _SUFFIX_UNITS.items():
        if key.endswith(suffix) and isinstance(value, int | float):
            return f"{key[:-len(suffix)].replace('_', ' '):<24} {si(value, unit)}"
    text = f"{value:.4g}" if isinstance(value, float) else str(value)
    return f"{key.replace('_', ' '):<24} {text}"


def _plain(value: Any) -> Any:
    """JSON-able copy of dataclasses, enums, numpy scalars and arrays."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {str(_plain(k)): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist"):          # numpy scalars and arrays
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return value


plain = _plain


def _finite(value: Any) -> Any:
    """``value`` with infinities and NaN as None (JSON has no such numbers)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


finite = _finite


def cycle_summary(report) -> dict[str, Any]:
    """The numbers of a cycle-model report that the JSON file keeps."""
    layers = []
    for la in report.layers:
        layers.append({"name": la.name, "time_ns": float(la.time_ns),
                       "energy_pj": {_plain(k): float(v) for k, v in la.energy_pj.items()},
                       "crossbars": int(la.crossbars), "replicas": int(la.replicas),
                       "cycles_per_vector": float(la.cycles_per_vector)})
    return {"architecture": report.arch.name, "frames": int(report.frames),
            "latency_ns": float(report.latency_ns), "frames_per_s": float(report.fps),
            "energy_per_frame_j": float(report.energy_per_frame_j),
            "area_mm2": float(report.area_mm2), "crossbars": int(report.crossbars),
            "energy_pj_by_component": {_plain(k): float(v)
                                       for k, v in report.energy_pj.items()},
            "layers": layers}


def format_cost(cost) -> str:
    """The terminal table of a :class:`~chipforge.families.base.CostReport`."""
    def num(v, scale=1.0, fmt="{:.4g}"):
        return "-" if v is None or v != v else fmt.format(v * scale)

    lines = [f"cost model: {cost.basis}"]
    if cost.samples:
        lines[0] += f" ({cost.samples} inputs)"
    lines.append(f"  latency {si(cost.latency_s, 's')}, throughput "
                 f"{si(cost.throughput_per_s, 'inferences/s')}, energy "
                 f"{si(cost.energy_j, 'J')} per inference, cycles {num(cost.cycles)}, "
                 f"area {num(cost.area_mm2)} mm^2")
    header = ("layer", "cycles", "latency_us", "energy_nj", "area_mm2")
    rows = [(la.name, num(la.cycles), num(la.latency_s, 1e6), num(la.energy_j, 1e9),
             num(la.area_mm2)) for la in cost.layers]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(header)]
    lines.append("    " + "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    for r in rows:
        lines.append("    " + "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))
    if cost.energy_by_component_j:
        parts = ", ".join(f"{k} {v * 1e9:.3g}" for k, v in cost.energy_by_component_j.items())
        lines.append(f"  energy by component (nJ): {parts}")
    return "\n".join(lines)


# Facts of the run, not of the result: the measured times and what depends on the memory
# free at the time (the budget, hence the batch chunk and its estimate; the results are
# the same for any chunking, chipforge.sim.memory).
RUN_METRICS = ("memory_budget_bytes", "memory_estimate_bytes", "batch_chunk")


def run_facts(simulation: dict[str, Any], out: Path) -> dict[str, Any]:
    """Move the run-dependent facts out of a plain :class:`SimulationResult` into the
    report's ``run`` section (so the rest is byte-identical across identical runs)."""
    if not isinstance(simulation, dict):
        return {"report_dir": str(out)}
    metrics = simulation.get("metrics") or {}
    return {"report_dir": str(out), "stages": simulation.pop("stages", []),
            "seconds": simulation.pop("seconds", None),
            "memory": {k: metrics.pop(k) for k in RUN_METRICS if k in metrics}}


def write_report(result, out_dir: str | Path, *, cost=None, section: dict | None = None,
                 extra: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write ``report.json`` and the PNG plots into ``out_dir``; returns their paths.

    The JSON has the same keys for every family: ``simulation`` (the
    :class:`~chipforge.simulate.SimulationResult`), ``cost`` (the family's
    :class:`~chipforge.families.base.CostReport`, or null), ``family`` (its name plus the
    family-specific numbers of ``section``) and whatever ``extra`` adds (``notes``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    from chipforge.simulate import layer_errors

    if dataclasses.is_dataclass(result):   # the cost object, notes and paths go elsewhere
        simulation = {f.name: _plain(getattr(result, f.name))
                      for f in dataclasses.fields(result)
                      if f.name not in ("cost_report", "notes", "paths")}
    else:
        simulation = _plain(result)
    run = run_facts(simulation, out)
    data = {"schema": 3, "simulation": simulation,
            "cost": cost.to_dict() if cost is not None else None,
            "family": {"name": getattr(result, "family", ""), **_plain(section or {})},
            "run": run}
    errors = layer_errors(result) if hasattr(result, "layers") else None
    if errors is not None:
        data["layer_errors"] = {"samples": errors["samples"], "layers": [
            dict(r, exact=r["snr_db"] == float("inf")) for r in errors["layers"]]}
    if extra:
        data.update(_plain(extra))
    paths = {"json": out / "report.json"}
    atomic_write(paths["json"], json.dumps(_finite(data), indent=2, sort_keys=True,
                                           allow_nan=False) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names, values = [], []
    for label, key in (("float", "accuracy_float"), ("ideal", "accuracy_ideal"),
                       ("hardware", "accuracy_hardware")):
        v = getattr(result, key, None)
        if v is not None:
            names.append(label)
            values.append(100 * float(v))
    fig, ax = plt.subplots(figsize=(4.5, 3.6))
    bars = ax.bar(names, values, color=["#9e9e9e", "#4c72b0", "#dd8452"][-len(values):])
    ax.bar_label(bars, fmt="%.1f %%")
    ax.set_ylim(0, 105)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"{result.model} on {result.accelerator}\n({result.samples} samples; "
                 f"ideal: {result.ideal_label})", fontsize=8)
    fig.tight_layout()
    paths["accuracy"] = out / "accuracy.png"
    atomic_savefig(fig, paths["accuracy"], dpi=120)
    plt.close(fig)

    paths["layers"] = out / "layers.png"
    if cost is not None and cost.layers:
        _plot_cost(cost, result, paths["layers"])
    else:
        _plot_mapping(result, paths["layers"])
    return paths


_OP_WORDS = {"gemm": "fc", "matmul": "fc", "linear": "fc", "conv": "conv",
             "convtranspose": "deconv"}


def short_layer_names(names: list[str], limit: int = 12) -> list[str]:
    """Short, unique labels for plot axes, in the given (data-flow) order: machine names
    (``node_Gemm_21``, ``/features/0/Conv``, ``Conv_3``) become the op and its running
    number (``fc1``, ``conv1``); a readable name (``conv1``, ``block0``) stays, cut to
    ``limit`` characters."""
    import re

    counts: dict[str, int] = {}
    out: list[str] = []
    for name in names:
        machine = re.fullmatch(r"(?:node_)?([A-Za-z]+)_\d+", name) or (
            "/" in name and re.search(r"([A-Za-z]+)(?:_\d+)?$", name))
        if machine:
            op = machine.group(1).lower()
            word = _OP_WORDS.get(op, op[:6])
            counts[word] = counts.get(word, 0) + 1
            label = f"{word}{counts[word]}"
        else:
            label = name if len(name) <= limit else name[:limit - 1] + "~"
        while label in out:
            label += "'"
        out.append(label)
    return out


def _plot_cost(cost, result, path: Path) -> None:
    """Per-layer latency bars (their sum is the title's total, or a note says the layers
    overlap) and stacked per-layer energy by component, SI-prefixed units."""
    import matplotlib.pyplot as plt
    import numpy as np

    layer_names = short_layer_names([la.name for la in cost.layers])
    has_energy = any(la.energy_j is not None for la in cost.layers)
    width = max(3.5, 0.45 * len(layer_names) + 1.5)
    fig, axes = plt.subplots(1, 2 if has_energy else 1,
                             figsize=(2 * width if has_energy else width, 3.6))
    axes = np.atleast_1d(axes)
    ax_t = axes[0]
    latencies = np.array([la.latency_s or 0.0 for la in cost.layers])
    factor, prefix = si_scale(max(latencies.max(initial=0.0), cost.latency_s), micro=MICRO)
    ax_t.bar(layer_names, latencies / factor, color="#4c72b0")
    ax_t.set_ylabel(f"latency per inference ({prefix}s)")
    total = float(latencies.sum())
    title = f"latency by layer (sum {si(total, 's', 3, micro=MICRO)})"
    if not math.isclose(total, cost.latency_s, rel_tol=1e-6):
        latency = si(cost.latency_s, "s", 3, micro=MICRO)
        title += (f"\nlayers overlap in the pipeline: latency {latency}"
                  if total > cost.latency_s else
                  f"\nplus stages outside the layers: latency {latency}")
    ax_t.set_title(title, fontsize=8)
    if has_energy:
        ax_e = axes[1]
        categories = list(dict.fromkeys(k for la in cost.layers
                                        for k in la.energy_by_component_j))
        energies = np.array([la.energy_j or 0.0 for la in cost.layers])
        factor, prefix = si_scale(energies.max(initial=0.0), micro=MICRO)
        bottom = np.zeros(len(layer_names))
        if categories:
            for c in categories:
                vals = np.array([la.energy_by_component_j.get(c, 0.0) / factor
                                 for la in cost.layers])
                ax_e.bar(layer_names, vals, bottom=bottom, label=c.replace("_", " "))
                bottom += vals
            ax_e.set_ylim(0, 1.3 * bottom.max(initial=0.0) or 1.0)   # room for the legend
            ax_e.legend(fontsize=6, ncols=2)
        else:
            ax_e.bar(layer_names, energies / factor)
        ax_e.set_ylabel(f"energy per inference ({prefix}J)")
        ax_e.set_title(f"energy by layer and component (sum "
                       f"{si(energies.sum(), 'J', 3, micro=MICRO)})",
                       fontsize=8)
    for ax in axes:
        ax.set_xlabel("layer (data-flow order)")
        ax.tick_params(axis="x", labelrotation=45 if len(layer_names) > 6 else 0,
                       labelsize=7)
        ax.tick_params(axis="y", labelsize=7)
    fig.suptitle(f"{result.model} on {result.accelerator}", fontsize=9)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=150)
    plt.close(fig)


def _plot_mapping(result, path: Path) -> None:
    """Without a cost model: the first numeric per-layer statistic of the mapping."""
    import matplotlib.pyplot as plt

    rows = result.layers or []
    key = next((k for k in ("crossbars", "arrays", "josephson_junctions", "cells")
                if rows and k in rows[0]), None)
    if key is None and rows:
        key = next((k for k, v in rows[0].items()
                    if isinstance(v, int | float) and not isinstance(v, bool)), None)
    fig, ax = plt.subplots(figsize=(5, 3.6))
    if key is not None:
        ax.bar(short_layer_names([str(r.get("node", i)) for i, r in enumerate(rows)]),
               [float(r.get(key, 0)) for r in rows], color="#4c72b0")
        ax.set_ylabel(key.replace("_", " ") + " (count)")
        ax.set_xlabel("layer (data-flow order)")
        ax.tick_params(axis="x", labelrotation=45, labelsize=7)
    ax.set_title(f"{result.model} on {result.accelerator}: per-layer mapping (no cost model)",
                 fontsize=9)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=120)
    plt.close(fig)
