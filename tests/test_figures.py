"""Every figure kind, drawn and read back from its matplotlib objects: words and SI units
on the axes (no offset factor such as 1e-5), short layer names in data-flow order, bar
totals that match the title, intervals inside [0, 1] with the trials stated, a column-wide
sweep plot without constant panels, and tick labels that do not overlap."""

from __future__ import annotations

import re
import types

import matplotlib

matplotlib.use("Agg")
import matplotlib.figure  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from chipforge.families.base import CostReport, LayerCost  # noqa: E402

UNIT = re.compile(r"\(([TGMkmµnpfaz]?)(s|J)\)$")
SCALE = {"": 1.0, "m": 1e-3, "µ": 1e-6, "n": 1e-9, "p": 1e-12, "f": 1e-15, "a": 1e-18,
         "z": 1e-21, "k": 1e3}


@pytest.fixture
def figures(monkeypatch):
    """The figures the code under test saves, kept for inspection."""
    saved = []
    original = matplotlib.figure.Figure.savefig

    def keep(fig, *args, **kwargs):
        saved.append(fig)
        return original(fig, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", keep)
    return saved


def _no_offset(ax):
    ax.figure.canvas.draw()
    assert ax.yaxis.get_offset_text().get_text() == "", ax.get_ylabel()


def _scale(label: str) -> float:
    match = UNIT.search(label)
    assert match, f"no SI unit in {label!r}"
    return SCALE[match.group(1)]


def _no_overlap(labels):
    boxes = [t.get_window_extent() for t in labels if t.get_text()]
    for a, b in zip(boxes, boxes[1:], strict=False):
        assert not a.overlaps(b)


def _result(name="user-cnn"):
    return types.SimpleNamespace(model=name, accelerator="acc")


def test_layer_plot_names_units_and_total(tmp_path, figures):
    from chipforge.report import _plot_cost

    names = ["node_Conv_0", "node_Relu_1", "node_Conv_2", "node_Gemm_21", "node_Gemm_23"]
    layers = [LayerCost(n, latency_s=t, energy_j=e, energy_by_component_j={"adc": e})
              for n, t, e in zip(names, [1.2e-6, 0.8e-6, 0.5e-6, 2e-7, 1e-7],
                                 [3e-17, 2e-17, 1e-17, 5e-18, 1e-18], strict=True)]
    cost = CostReport(layers=layers, cycles=None, latency_s=2.8e-6, throughput_per_s=1.0,
                      energy_j=6.6e-17, area_mm2=None)
    _plot_cost(cost, _result(), tmp_path / "layers.png")
    ax_t, ax_e = figures[-1].axes
    assert [t.get_text() for t in ax_t.get_xticklabels()] == \
        ["conv1", "relu1", "conv2", "fc1", "fc2"]            # short, data-flow order
    for ax in (ax_t, ax_e):
        assert "layer" in ax.get_xlabel()
        _no_offset(ax)
        _no_overlap(ax.get_xticklabels())
    scale = _scale(ax_t.get_ylabel())
    assert scale == 1e-6
    heights = sum(p.get_height() for p in ax_t.patches) * scale
    assert heights == pytest.approx(cost.latency_s)
    assert "sum 2.8 µs" in ax_t.get_title() and "overlap" not in ax_t.get_title()
    e_scale = _scale(ax_e.get_ylabel())
    assert e_scale == 1e-18                                    # aJ, not nJ x 1e-5
    assert sum(p.get_height() for p in ax_e.patches) * e_scale == pytest.approx(6.6e-17)


def test_layer_plot_says_when_layers_overlap(tmp_path, figures):
    from chipforge.report import _plot_cost

    layers = [LayerCost(f"block{i}", latency_s=1e-3) for i in range(3)]
    cost = CostReport(layers=layers, cycles=None, latency_s=2e-3, throughput_per_s=1.0,
                      energy_j=None, area_mm2=None)
    _plot_cost(cost, _result(), tmp_path / "layers.png")
    (ax,) = figures[-1].axes
    assert "sum 3 ms" in ax.get_title() and "overlap in the pipeline: latency 2 ms" in \
        ax.get_title()
    assert _scale(ax.get_ylabel()) == 1e-3


def test_sweep_plot_column_wide_clipped_and_no_constant_panel(tmp_path, figures):
    from chipforge.sim.sweep import plot_summary

    # fault rates bunched near 0: their tick labels must still not overlap
    rates = [0.0, 0.001, 0.005, 0.01, 0.05]
    grid = {"fault_rate": rates, "bits": [8]}
    summary = [{"fault_rate": f, "bits": 8, "n": 4, "accuracy_mean": m,
                "accuracy_std": 0.1, "accuracy_ci95": 0.2,
                "crossbars_mean": 12.0, "crossbars_std": 0.0, "crossbars_ci95": 0.0}
               for f, m in zip(rates, (0.95, 0.9, 0.6, 0.4, 0.1), strict=True)]
    plot_summary(summary, grid, ["accuracy", "crossbars"], "fault_rate",
                 tmp_path / "plot.png", title="faults")
    fig = figures[-1]
    assert fig.get_size_inches()[0] == pytest.approx(3.5)
    (ax,) = fig.axes                                           # crossbars is constant
    title = fig._suptitle.get_text()
    assert "over 4 trials" in title and "constant: crossbars = 12" in title
    assert "bits = 8" in title
    assert ax.get_xlabel().startswith("fault rate") and ax.get_ylabel() == "accuracy"
    assert [t.get_text() for t in ax.get_xticklabels()] == [str(r) for r in rates]
    ys = np.concatenate([np.asarray(seg)[:, 1] for c in ax.collections
                         for seg in c.get_segments()])
    assert ys.min() >= 0.0 and ys.max() <= 1.0
    assert ys.max() == pytest.approx(1.0) and ys.min() == pytest.approx(0.0)  # clipped
    _no_overlap(ax.get_xticklabels())


def test_cycles_breakdown_units_and_legible_ticks(tmp_path, figures):
    from chipforge.sim.cycle.report import cycle_reports, plot_breakdown
    from chipforge.sim.cycle.workloads import digits_cnn
    from chipforge.zoo.data import digits

    x = digits(8).x_test[:2]
    graph = digits_cnn()
    reports = cycle_reports(graph, x, ["isaac8", "forms4", "forms8", "forms16"])
    plot_breakdown(reports, tmp_path / "energy.png")
    (ax,) = figures[-1].axes
    scale = _scale(ax.get_ylabel())
    tops = [sum(p.get_height() for p in ax.patches if abs(p.get_x() - bar.get_x()) < 1e-9)
            for bar in ax.patches[:len(reports)]]
    assert [t * scale for t in tops] == pytest.approx(
        [r.energy_per_frame_j for r in reports])
    assert ax.get_xlabel() == "architecture"
    _no_offset(ax)
    _no_overlap(ax.get_xticklabels())
