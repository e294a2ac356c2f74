"""``faults``: accuracy under stuck-at faults, per placement scheme and pruning (ISQED'21).

The ISQED'21 experiment (Yuan et al., papers.md §2.4, Fig. 6): inject stuck-at faults
(stuck-off : stuck-on = 1 : 5.2, independent per cell) into the crossbars holding a pruned
CNN and measure the accuracy drop against the fault-free quantized model, for the
traditional two-column mapping and the fault-tolerant differential mapping.

A trial is a pure function of ``(point, seed)``: :func:`trial`. A point has the axes

- ``model``: a zoo name, ``.onnx`` or ``.npz`` path (a float model is quantized after
  training to 8 bits as ``chipforge simulate`` does it; the pruning ratio comes with the
  model and is reported as a metric),
- ``mapping``: ``two_column``, ``differential`` or ``offset``,
- ``fault_rate``: the total stuck-at rate,

and optionally ``data`` (``chipforge sweep faults --data FILE.npz``: the user's test inputs
and labels, also the calibration of a float model; default: the digits test split, at the
model's input size), on the ISQED-style hardware of
:data:`chipforge.accelerators.ISQED_TWO_COLUMN` (128x128 crossbars, 8-bit weights in four
2-bit cells per polarity, a 9-bit ADC that never saturates), so the mapping is the only
difference. The seed picks the chip instance (the fault map); it is independent of
everything else. ``--chips N`` runs the same N chips
(seeds from :func:`chipforge.chips.chip_seeds`) at every point.

``chipforge sweep faults`` (or :func:`run_fault_sweep`) runs the grid on the generic,
resumable sweep engine (:mod:`chipforge.sim.sweep`, any executor, Dask included) and adds
``faults.png``: accuracy vs failure rate, one curve per mapping, +-1 std over trials.
:func:`tolerated_rate` and :func:`tolerance_ratio` read the ISQED claim off the results.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from chipforge.sim.sweep import SweepDef

__all__ = ["DEFAULT_GRID", "MAPPINGS", "METRICS", "SWEEP", "check_point", "plot_fault_sweep",
           "run_fault_sweep", "summarize", "tolerance_ratio", "tolerated_rate", "trial"]

MAPPINGS = ("two_column", "differential", "offset")
METRICS = ("accuracy", "accuracy_drop", "ideal_accuracy", "pruning_ratio")
# ISQED Fig. 6 (CIFAR-10) x-axis, extended down: our small model is more fragile.
DEFAULT_GRID: dict[str, list[Any]] = {
    "model": ["lenet-digits-pruned", "lenet-digits-p60", "lenet-digits"],
    "mapping": ["two_column", "differential"],
    "fault_rate": [0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05],
}


def accelerator_for(mapping: str):
    """The ISQED-style accelerator with the given placement scheme."""
    from chipforge.accelerators import ISQED_TWO_COLUMN, PlacementScheme

    if mapping not in MAPPINGS:
        raise ValueError(f"mapping must be one of {', '.join(MAPPINGS)}, not {mapping!r}")
    return ISQED_TWO_COLUMN.replace(name=f"isqed-{mapping.replace('_', '-')}",
                                    scheme=PlacementScheme(mapping))


@lru_cache(maxsize=8)
def _prepared(model: str, mapping: str, data: str = "digits"):
    """Graph, test data, ideal logits, mapped model and pruning ratio (cached per worker).
    Model and data are read as ``chipforge simulate`` reads them
    (:func:`chipforge.mainjob.load_inputs`: float models quantized on the same calibration
    data)."""
    from chipforge.families import get_accelerator_spec
    from chipforge.mainjob import load_inputs
    from chipforge.mappings.placement import place
    from chipforge.sim.executor import run_graph

    family = get_accelerator_spec("isqed-two-column").family
    graph, x, y = load_inputs(family, model, data, quantize="auto")
    ideal = run_graph(graph, x)
    mapped = place(graph, accelerator_for(mapping))
    weights = sum(layer.stats.weights for layer in mapped.layers.values())
    nonzero = sum(layer.stats.nonzero_weights for layer in mapped.layers.values())
    return graph, x, y, ideal, mapped, 1.0 - nonzero / weights


def check_point(point: dict[str, Any]) -> None:
    """Reject a point the trial cannot run, before any work starts."""
    accelerator_for(point["mapping"])
    rate = point["fault_rate"]
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1:
        raise ValueError(f"fault_rate must be a number in [0, 1], not {rate!r}")


def trial(point: dict[str, Any], seed: int) -> dict[str, float]:
    """Accuracy of one faulty chip (fault map from ``seed``) at ``point``."""
    from chipforge.families.reram import run_reram

    check_point(point)
    graph, x, y, ideal, mapped, pruning = _prepared(str(point["model"]), point["mapping"],
                                                    str(point.get("data", "digits")))
    result = run_reram(graph, accelerator_for(point["mapping"]), x, y, seed=seed,
                       mapped=mapped, ideal_logits=ideal, float_accuracy=False,
                       fault_rate=float(point["fault_rate"]))
    return {"accuracy": result.accuracy_hardware, "accuracy_drop": result.accuracy_drop,
            "ideal_accuracy": result.accuracy_ideal, "pruning_ratio": pruning}


def run_fault_sweep(out: str | Path, *, grid: dict[str, Sequence[Any]] | None = None,
                    trials: int | None = None, seed: int = 0, executor: Any = None,
                    workers: int | None = None, resume: bool = False,
                    progress: bool | None = False, data: str | None = None,
                    chips: int | None = None) -> list[dict[str, Any]]:
    """Run the sweep on the generic engine (:func:`chipforge.sim.sweep.run_sweep`): resumable
    ``results.csv``, ``summary.csv`` and the engine's ``plot.png`` in ``out``, plus
    ``faults.png`` (:func:`plot_fault_sweep`). ``data``: an ``.npz`` of test inputs and
    labels (default: digits); ``chips``: the same N chips at every point instead of
    ``trials``. Returns the result rows."""
    from chipforge.sim.sweep import load_results, run_sweep

    full = {**SWEEP.grid, **(grid or {})}
    if data is not None:
        full["data"] = [str(data)]
    run_sweep(SWEEP, out, grid=full, trials=trials, seed=seed, executor=executor,
              workers=workers, resume=resume, progress=progress, chips=chips, echo=None)
    header, lines = load_results(out)
    rows = [dict(zip(header, line, strict=True)) for line in lines]
    plot_fault_sweep(rows, Path(out) / "faults.png")
    return rows


def summarize(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and standard deviation of accuracy and drop per (model, mapping, fault_rate)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        key = (str(row["model"]), str(row["mapping"]), float(row["fault_rate"]))
        groups.setdefault(key, []).append(row)
    table = []
    for (model, mapping, rate), members in sorted(groups.items()):
        acc = np.array([float(r["accuracy"]) for r in members])
        drop = np.array([float(r["accuracy_drop"]) for r in members])
        table.append({"model": model, "mapping": mapping, "fault_rate": rate,
                      "trials": len(members), "accuracy_mean": float(acc.mean()),
                      "accuracy_std": float(acc.std()), "drop_mean": float(drop.mean()),
                      "drop_std": float(drop.std()),
                      "ideal_accuracy": float(members[0]["ideal_accuracy"]),
                      "pruning_ratio": float(members[0]["pruning_ratio"])})
    return table


def tolerated_rate(summary: list[dict[str, Any]], model: str, mapping: str,
                   target_drop: float) -> float:
    """The fault rate at which the mean accuracy drop reaches ``target_drop`` (0..1 scale),
    interpolated linearly in log(rate); ``nan`` if the curve never reaches it."""
    curve = sorted((r["fault_rate"], r["drop_mean"]) for r in summary
                   if r["model"] == model and r["mapping"] == mapping and r["fault_rate"] > 0)
    previous = None
    for rate, drop in curve:
        if drop >= target_drop:
            if previous is None:
                return rate
            r0, d0 = previous
            frac = (target_drop - d0) / (drop - d0) if drop > d0 else 0.0
            return float(math.exp(math.log(r0) + frac * (math.log(rate) - math.log(r0))))
        previous = (rate, drop)
    return float("nan")


def tolerance_ratio(summary: list[dict[str, Any]], model: str, target_drop: float,
                    better: str = "differential", baseline: str = "two_column") -> float:
    """How many times higher a fault rate ``better`` tolerates than ``baseline`` for the
    same mean accuracy drop (ISQED's "almost an order of magnitude")."""
    return (tolerated_rate(summary, model, better, target_drop)
            / tolerated_rate(summary, model, baseline, target_drop))


def plot_fault_sweep(rows: Iterable[dict[str, Any]], path: str | Path) -> Path:
    """Accuracy vs failure rate, one curve per (model, mapping), band = +-1 std over trials."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = summarize(rows)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    styles = ["-", "--", ":", "-."]
    models = sorted({r["model"] for r in summary})
    for mi, model in enumerate(models):
        for mapping in MAPPINGS:
            curve = [r for r in summary if r["model"] == model and r["mapping"] == mapping]
            if not curve:
                continue
            rate = np.array([r["fault_rate"] for r in curve])
            mean = 100 * np.array([r["accuracy_mean"] for r in curve])
            std = 100 * np.array([r["accuracy_std"] for r in curve])
            line, = ax.plot(rate, mean, styles[mi % len(styles)], marker="o", markersize=3,
                            label=f"{mapping.replace('_', '-')} ({Path(model).stem}, pruned "
                                  f"{100 * curve[0]['pruning_ratio']:.0f} %)")
            ax.fill_between(rate, mean - std, mean + std, color=line.get_color(), alpha=0.15)
        ideal = next(r["ideal_accuracy"] for r in summary if r["model"] == model)
        ax.axhline(100 * ideal, color="grey", lw=0.8, ls=styles[mi % len(styles)])
    ax.set_xscale("log")
    ax.set_xlabel("total stuck-at failure rate (stuck-off : stuck-on = 1 : 5.2)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Stuck-at faults: two-column vs differential mapping (ISQED'21 Fig. 6 setup)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    from chipforge.files import atomic_savefig

    path = atomic_savefig(fig, Path(path), dpi=120)
    plt.close(fig)
    return path


SWEEP = SweepDef(
    name="faults",
    trial=trial,
    grid=DEFAULT_GRID,
    metrics=METRICS,
    x_axis="fault_rate",
    trials=5,
    check_point=check_point,
    takes_data=True,
    description="ISQED'21: accuracy vs stuck-at rate (1:5.2) per mapping and pruning",
    log_x=True,
)
