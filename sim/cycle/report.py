"""Reports of the cycle model: per-layer and per-model tables, the energy breakdown plot.

:func:`cycle_reports` is the one call a front end needs (``chipforge simulate`` prints
:func:`format_report` next to the accuracy): a graph, input images and architectures in,
one :class:`~chipforge.sim.cycle.model.ModelReport` per architecture out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from chipforge.sim.cycle.arch import FORMS4, FORMS8, FORMS16, ISAAC, ISAAC8, ReramArchConfig
from chipforge.sim.cycle.components import Category
from chipforge.sim.cycle.elementwise import ELEMENTWISE_PJ_PER_VALUE, elementwise_activity
from chipforge.sim.cycle.model import (
    LayerWorkload,
    ModelReport,
    capture_workloads,
    simulate_cycles,
)
from chipforge.sim.graph import Graph

__all__ = ["ARCHITECTURES", "arch_for", "breakdown_rows", "cycle_reports", "format_breakdown",
           "format_comparison", "format_report", "plot_breakdown"]

ARCHITECTURES: dict[str, ReramArchConfig] = {
    "isaac": ISAAC, "isaac8": ISAAC8, "forms4": FORMS4, "forms8": FORMS8, "forms16": FORMS16,
}
"""Presets by the name ``chipforge simulate --cycle`` takes."""


def arch_for(name: str | ReramArchConfig, *, weight_bits: int | None = None,
             input_bits: int | None = None) -> ReramArchConfig:
    """An architecture preset by name (:data:`ARCHITECTURES`; also ``forms<m>`` for any
    fragment size m dividing 128), optionally with other weight / input widths."""
    if isinstance(name, ReramArchConfig):
        arch = name
    elif name in ARCHITECTURES:
        arch = ARCHITECTURES[name]
    elif name.startswith("forms") and name[5:].isdigit():
        arch = FORMS8.replace(name=f"FORMS-{int(name[5:])}", fragment_size=int(name[5:]))
    else:
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(ARCHITECTURES)}")
    changes = {k: v for k, v in (("weight_bits", weight_bits), ("input_bits", input_bits))
               if v is not None}
    return arch.replace(**changes) if changes else arch


def cycle_reports(graph: Graph, x: np.ndarray, archs: Sequence[ReramArchConfig | str], *,
                  placement: Mapping[str, tuple[np.ndarray, int]] | None = None,
                  workloads: list[LayerWorkload] | None = None) -> list[ModelReport]:
    """Run ``graph`` on ``x`` once, then the cycle model of each architecture on its inputs.

    ``workloads``: the layers' inputs already recorded on ``x`` (a
    :class:`~chipforge.sim.cycle.model.WorkloadRecorder` on the caller's own exact run),
    which skips the run here.

    ``placement`` (from a placement pass, as plain data): layer name -> (row groups
    ``(groups, rows_per_group)`` of input-row indices, -1 for empty rows; crossbars of one
    copy). Then the cycle model uses those rows and counts instead of its own tiling.
    """
    resolved = [arch_for(a) for a in archs]
    if workloads is None:
        workloads = capture_workloads(graph, x)
    if placement is not None:
        for w in workloads:
            if w.name in placement:
                w.row_groups, w.crossbars = placement[w.name]
    elementwise = elementwise_activity(graph)
    return [simulate_cycles(workloads, a, model=graph.name, elementwise=elementwise)
            for a in resolved]


def format_report(report: ModelReport) -> str:
    """Per-layer table plus the model totals, as text."""
    a = report.arch
    lines = [f"{a.name} on {report.model} ({report.frames} frames; cycle "
             f"{a.cycle_ns:.2f} ns; fragment {a.fragment_size}; zero-skipping "
             f"{'on' if a.zero_skipping else 'off'})",
             f"  {'layer':<12} {'K x N':>11} {'vec':>5} {'xbar':>5} {'rep':>4} {'tiles':>6} "
             f"{'cyc/vec':>8} {'EIC':>5} {'skip':>6} {'time us':>9} {'energy nJ':>10}"]
    per_tile = a.crossbars_per_tile
    for la in report.layers:
        tiles = la.crossbars * la.replicas / per_tile
        lines.append(f"  {la.name:<12} {f'{la.rows}x{la.cols}':>11} {la.vectors:>5.0f} "
                     f"{la.crossbars:>5} {la.replicas:>4} {tiles:>6.2f} "
                     f"{la.cycles_per_vector:>8.2f} "
                     f"{la.mean_group_eic:>5.2f} {la.skip_saving:>6.1%} "
                     f"{la.time_ns / 1e3:>9.3f} {la.energy_total_pj / 1e3:>10.3f}")
    lines.append(f"  model: {report.cycles:.0f} cycles/frame (pipeline period), latency "
                 f"{report.latency_ns / 1e3:.2f} us, {report.fps:,.0f} frames/s, "
                 f"{report.energy_per_frame_j * 1e9:.2f} nJ/frame")
    lines.append(f"  {report.crossbars} crossbars on {report.tiles} tiles "
                 f"({report.area_mm2:.3f} mm2), {report.gops:.2f} GOPs/s, "
                 f"{report.gops_per_mm2:.2f} GOPs/s/mm2, {report.gops_per_w:.1f} GOPs/W "
                 f"(activity; {report.gops_per_w_peak:.1f} at the tiles' table power), "
                 f"zero-skipping saves {report.skip_saving:.1%} of input cycles")
    if report.elementwise:
        values = sum(e.values for e in report.elementwise)
        lines.append(f"  element-wise units: {len(report.elementwise)} nodes, {values:,} values/"
                     f"frame, {sum(report.elementwise_ns(e) for e in report.elementwise) / 1e3:.3f}"
                     f" us, {sum(e.energy_pj for e in report.elementwise) / 1e3:.3f} nJ "
                     f"({ELEMENTWISE_PJ_PER_VALUE:.2f} pJ/value, ISAAC's sigmoid unit; rate "
                     "assumed)")
    energy = report.energy_pj
    total = sum(energy.values())
    lines.append("  energy: " + ", ".join(f"{c.value} {v / total:.1%}" for c, v in energy.items()))
    return "\n".join(lines)


def breakdown_rows(reports: Sequence[ModelReport]) -> list[dict[str, float | str]]:
    """Energy per frame by component (nJ), one row per report."""
    rows = []
    for r in reports:
        row: dict[str, float | str] = {"arch": r.arch.name, "model": r.model}
        row.update({c.value: v / 1e3 for c, v in r.energy_pj.items()})
        rows.append(row)
    return rows


def format_breakdown(reports: Sequence[ModelReport]) -> str:
    """Energy per frame by component (nJ and share), one row per report."""
    cats = list(Category)
    w = max(24, *(len(r.arch.name) for r in reports))
    lines = [f"  {'arch':<{w}} " + " ".join(f"{c.value:>12}" for c in cats) + f" {'total':>12}"]
    for r in reports:
        e = r.energy_pj
        total = sum(e.values())
        lines.append(f"  {r.arch.name:<{w}} "
                     + " ".join(f"{e[c] / 1e3:>12.2f}" for c in cats) + f" {total / 1e3:>12.2f}")
        lines.append(f"  {'':<{w}} " + " ".join(f"{e[c] / total:>12.1%}" for c in cats))
    return "\n".join(lines)


def format_comparison(reports: Sequence[ModelReport], baseline: int = 0) -> str:
    """One line per architecture, throughput and efficiency relative to ``baseline``."""
    base = reports[baseline]
    w = max(24, *(len(r.arch.name) for r in reports))
    lines = [f"  {'arch':<{w}} {'fps':>12} {'x':>6} {'GOPs/s/mm2':>11} {'x':>6} "
             f"{'GOPs/W':>9} {'x':>6} {'skip':>6}"]
    for r in reports:
        lines.append(f"  {r.arch.name:<{w}} {r.fps:>12,.0f} {r.fps / base.fps:>6.2f} "
                     f"{r.gops_per_mm2:>11.2f} {r.gops_per_mm2 / base.gops_per_mm2:>6.2f} "
                     f"{r.gops_per_w:>9.1f} {r.gops_per_w / base.gops_per_w:>6.2f} "
                     f"{r.skip_saving:>6.1%}")
    return "\n".join(lines)


def plot_breakdown(reports: Sequence[ModelReport], path: str | Path, *,
                   title: str | None = None) -> Path:
    """Stacked bars of energy per frame by component, one bar per report (PNG, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from chipforge.report import MICRO, si_scale

    path = Path(path)
    models = list(dict.fromkeys(r.model for r in reports))
    # one model: the architecture alone names a bar (the model goes to the title)
    labels = [r.arch.name if len(models) == 1 else f"{r.arch.name} / {r.model}"
              for r in reports]
    labels = [lab.replace(" (", "\n(") for lab in labels]     # widths on a second line
    totals = np.array([sum(r.energy_pj.values()) * 1e-12 for r in reports])
    factor, prefix = si_scale(totals.max(initial=0.0), micro=MICRO)
    fig, ax = plt.subplots(figsize=(max(3.5, 1.0 + 1.1 * len(reports)), 3.6))
    bottom = np.zeros(len(reports))
    for cat in Category:
        values = np.array([r.energy_pj[cat] * 1e-12 / factor for r in reports])
        ax.bar(labels, values, bottom=bottom, label=cat.value)
        bottom += values
    ax.set_ylabel(f"energy per inference ({prefix}J)", fontsize=8)
    ax.set_xlabel("architecture", fontsize=8)
    ax.set_title(title or f"energy per inference by component, {', '.join(models)}",
                 fontsize=8)
    ax.tick_params(axis="x", labelsize=6, labelrotation=30 if len(reports) > 3 else 0)
    ax.tick_params(axis="y", labelsize=7)
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    from chipforge.files import atomic_savefig

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_savefig(fig, path, dpi=150)
    plt.close(fig)
    return path
