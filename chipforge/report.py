"""The report of ``chipforge simulate``: a terminal table, a JSON file and PNG plots.

``write_report(result, out_dir, cycles=None)`` takes the
:class:`~chipforge.simulate.SimulationResult` of the functional simulation and, when the
accelerator has a cycle model, its per-layer :class:`~chipforge.sim.cycle.model.ModelReport`,
and writes into ``out_dir``:

- ``report.json`` — every number of the terminal table (accuracies, accelerator metrics,
  per-layer mapping, cycle-level latency / throughput / energy per layer and component);
- ``accuracy.png`` — accuracy of the float model, the quantized model on ideal hardware
  and the simulated hardware;
- ``layers.png`` (with a cycle model) — per-layer latency, and per-layer energy stacked by
  component.

Matplotlib runs on the Agg backend (no display needed).
"""

from __future__ import annotations

import dataclasses
import enum
import json
from pathlib import Path
from typing import Any

__all__ = ["cycle_summary", "write_report"]


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


def write_report(result, out_dir: str | Path, *, cycles=None,
                 extra: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write ``report.json`` and the PNG plots into ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = {"simulation": _plain(result)}
    if cycles is not None:
        data["cycles"] = cycle_summary(cycles)
    if extra:
        data.update(_plain(extra))
    paths = {"json": out / "report.json"}
    paths["json"].write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names, values = [], []
    for label, key in (("float", "accuracy_float"), ("ideal\n(quantized)", "accuracy_ideal"),
                       ("hardware", "accuracy_hardware")):
        v = getattr(result, key, None)
        if v is not None:
            names.append(label)
            values.append(100 * float(v))
    fig, ax = plt.subplots(figsize=(4.5, 3.6))
    bars = ax.bar(names, values, color=["#9e9e9e", "#4c72b0", "#dd8452"][:len(values)])
    ax.bar_label(bars, fmt="%.1f %%")
    ax.set_ylim(0, 105)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"{result.model} on {result.accelerator}\n({result.samples} samples)",
                 fontsize=9)
    fig.tight_layout()
    paths["accuracy"] = out / "accuracy.png"
    fig.savefig(paths["accuracy"], dpi=120)
    plt.close(fig)

    if cycles is not None:
        import numpy as np

        layer_names = [la.name for la in cycles.layers]
        fig, (ax_t, ax_e) = plt.subplots(1, 2, figsize=(9, 3.8))
        ax_t.bar(layer_names, [la.time_ns / 1e3 for la in cycles.layers], color="#4c72b0")
        ax_t.set_ylabel("time per frame (us)")
        ax_t.set_title(f"latency by layer (total {cycles.latency_ns / 1e3:.2f} us)",
                       fontsize=9)
        categories = list(cycles.layers[0].energy_pj) if cycles.layers else []
        bottom = np.zeros(len(layer_names))
        for c in categories:
            vals = np.array([la.energy_pj.get(c, 0.0) / 1e3 for la in cycles.layers])
            ax_e.bar(layer_names, vals, bottom=bottom, label=_plain(c))
            bottom += vals
        ax_e.set_ylabel("energy per frame (nJ)")
        ax_e.set_title(f"energy by layer and component "
                       f"(total {cycles.energy_per_frame_j * 1e9:.2f} nJ)", fontsize=9)
        ax_e.legend(fontsize=7)
        for ax in (ax_t, ax_e):
            ax.tick_params(axis="x", labelrotation=45, labelsize=7)
        fig.suptitle(f"{cycles.model} on {cycles.arch.name}", fontsize=10)
        fig.tight_layout()
        paths["layers"] = out / "layers.png"
        fig.savefig(paths["layers"], dpi=120)
        plt.close(fig)
    return paths
