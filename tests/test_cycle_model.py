"""The cycle model: timing constants, hand-counted layers, zero-skipping on real data,
replication, reports and plots."""

import numpy as np
import pytest

from chipforge.sim.cycle.arch import FORMS4, FORMS8, FORMS16, ISAAC, ISAAC8, ReramArchConfig
from chipforge.sim.cycle.components import Category
from chipforge.sim.cycle.model import (
    LayerWorkload,
    capture_workloads,
    group_eic,
    replicate,
    simulate_cycles,
)
from chipforge.sim.cycle.report import (
    breakdown_rows,
    cycle_reports,
    format_breakdown,
    format_comparison,
    format_report,
    plot_breakdown,
)
from chipforge.sim.cycle.workloads import digits_cnn
from chipforge.sim.executor import run_graph


def test_cycle_times_of_the_presets():
    # ISAAC: 128 columns through one 1.2-GSps ADC = 106.7 ns; FORMS: 32 columns per 2.1-GSps
    # ADC = 15.2 ns (FORMS §IV-C).
    assert ISAAC.cycle_ns == pytest.approx(106.67, abs=0.01)
    assert FORMS8.cycle_ns == pytest.approx(15.24, abs=0.01)
    assert (ISAAC.cells_per_weight, ISAAC8.cells_per_weight, FORMS8.cells_per_weight) == (8, 4, 4)
    with pytest.raises(ValueError, match="fragment_size must divide"):
        ReramArchConfig(fragment_size=12)
    with pytest.raises(ValueError, match="adc_rate"):
        FORMS8.replace(adc_rate=0)


def test_group_eic_is_the_max_effective_bits_per_group():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 1 << 16, (50, 21)) >> rng.integers(0, 17, (50, 21))
    eic = group_eic(x, 16, 8)
    assert eic.shape == (50, 3)
    for g in range(3):
        brute = [max(int(v).bit_length() for v in row[8 * g:8 * g + 8]) for row in x]
        assert eic[:, g].tolist() == brute


def test_hand_counted_layer():
    """K=20 rows, N=3 columns, one vector: FORMS-8 has groups of 8, 8 and 4 rows."""
    w = np.ones((20, 3), dtype=np.int64)
    x = np.zeros((1, 20), dtype=np.int64)
    x[0, 3] = 5         # group 0: EIC 3
    x[0, 19] = 1 << 9   # group 2: EIC 10; group 1 is all zero: EIC 0
    work = [LayerWorkload(name="l", weights=w, inputs=x, frames=1)]
    forms = simulate_cycles(work, FORMS8).layers[0]
    assert forms.crossbars == 1 and forms.replicas == 1
    assert forms.cycles_per_vector == (3 + 1) + (0 + 1) + (10 + 1)
    assert forms.full_cycles_per_vector == 3 * 17
    assert forms.actions["adc"] == (3 + 0 + 10) * 3 * 4           # cycles x 12 cell columns
    assert forms.actions["dac"] == 3 * 8 + 0 * 8 + 10 * 4          # active rows x cycles
    assert forms.actions["sign_ops"] == 3 * 3
    assert forms.time_ns == pytest.approx(16 * FORMS8.cycle_ns)
    isaac = simulate_cycles(work, ISAAC8).layers[0]
    assert isaac.cycles_per_vector == 16
    assert isaac.actions["adc"] == 16 * (3 * 4 + 1)                # + the unit column
    assert isaac.time_ns == pytest.approx(16 * ISAAC8.cycle_ns)
    skip128 = simulate_cycles(work, ISAAC8.replace(zero_skipping=True)).layers[0]
    assert skip128.cycles_per_vector == 10


def test_pruned_rows_and_columns_leave_the_crossbars():
    rng = np.random.default_rng(1)
    w = rng.integers(-5, 6, (300, 40))
    w[w == 0] = 1
    x = rng.integers(0, 100, (4, 300))
    full = simulate_cycles([LayerWorkload(name="l", weights=w, inputs=x, frames=4)], ISAAC8)
    assert full.layers[0].crossbars == 3 * 2      # ceil(300/128) x ceil(160/128)
    w[130:300] = 0
    w[:, 32:] = 0
    pruned = simulate_cycles([LayerWorkload(name="l", weights=w, inputs=x, frames=4)], ISAAC8)
    assert (pruned.layers[0].rows, pruned.layers[0].cols, pruned.layers[0].crossbars) == \
        (130, 32, 2)


def test_replication_balances_the_pipeline_and_respects_the_budget():
    reps = replicate([2, 1, 4], [10.0, 10.0, 10.0], [64, 16, 1], budget=40)
    assert reps[2] == 1                              # one vector: a second copy is useless
    assert 2 * reps[0] + reps[1] + 4 <= 40
    times = [np.ceil(v / r) * 10 for v, r in zip([64, 16, 1], reps, strict=True)]
    assert max(times) <= 10 * np.ceil(64 / reps[0])
    assert reps[0] > reps[1] > 1
    with pytest.raises(ValueError, match="needs 7 crossbars"):
        replicate([2, 1, 4], [1.0, 1.0, 1.0], [1, 1, 1], budget=6)


def test_captured_inputs_are_the_executors_integers_and_skipping_saves_cycles():
    from chipforge.zoo.data import digits

    graph = digits_cnn()
    x = digits().x_test[:64]
    work = capture_workloads(graph, x)
    assert [w.name for w in work] == ["conv1", "conv2", "fc"]
    assert work[0].inputs.shape == (64 * 64, 9) and work[0].inputs.max() <= 65535
    seen = {}
    run_graph(graph, x, matmul=lambda n, xq, wq: seen.setdefault(n.name, xq) @ wq)
    assert np.array_equal(seen["conv1"], work[0].inputs)
    reports = {a.name: simulate_cycles(work, a) for a in (FORMS4, FORMS8, FORMS16,
                                                        ISAAC8.replace(zero_skipping=True))}
    eic = [np.mean([la.mean_group_eic for la in r.layers]) for r in reports.values()]
    assert eic == sorted(eic)                        # bigger groups, more effective cycles
    for r in reports.values():
        assert 0.0 < r.skip_saving < 1.0
    noskip = simulate_cycles(work, FORMS8.replace(zero_skipping=False))
    assert noskip.skip_saving == 0.0
    skip = reports["FORMS-8"]
    assert skip.fps > noskip.fps
    assert skip.energy_pj[Category.ADC] < noskip.energy_pj[Category.ADC]
    assert skip.energy_pj[Category.DAC] < noskip.energy_pj[Category.DAC]


def test_reports_table_and_plot(tmp_path):
    from chipforge.zoo.data import digits

    reports = cycle_reports(digits_cnn(), digits().x_test[:16], ["isaac8", "forms8"])
    text = format_report(reports[1])
    for word in ("conv1", "fc", "frames/s", "GOPs/s/mm2", "GOPs/W", "crossbars", "energy:"):
        assert word in text
    assert "FORMS-8" in format_comparison(reports)
    table = format_breakdown(reports)
    assert "eDRAM" in table and "%" in table
    rows = breakdown_rows(reports)
    assert set(rows[0]) >= {"arch", "ADC", "DAC", "crossbar", "eDRAM", "digital"}
    png = plot_breakdown(reports, tmp_path / "b.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    r = reports[0]
    # (fps = 1e9 / period and GOPs/W = ops / energy are definitions, not checked here; the
    # period itself is checked against the RTL and the paper in test_cycle_paper.py.)
    assert r.latency_ns > r.period_ns > 0
    with pytest.raises(ValueError, match="unknown architecture"):
        cycle_reports(digits_cnn(), digits().x_test[:2], ["tpu"])


def test_cli_cycles_on_a_model_file(tmp_path, capsys):
    from chipforge.cli import main
    from chipforge.sim.graph import save_graph

    path = save_graph(digits_cnn(), tmp_path / "m.npz")
    assert main(["cycles", str(path), "--images", "8", "--arch", "isaac8", "forms8",
                 "--components", "--plot", str(tmp_path / "p.png")]) == 0
    out = capsys.readouterr().out
    assert "ISAAC-CE" in out and "FORMS-8" in out and "frames/s" in out
    assert (tmp_path / "p.png").exists()
    assert main(["cycles", str(path), "--images", "0"]) == 2


def test_float_graphs_are_quantized_for_the_cycle_count():
    from chipforge.zoo.data import digits

    graph = digits_cnn()
    for node in graph.weighted_nodes():
        for key in ("weight_bits", "weight_scale", "act_bits", "act_scale", "act_signed"):
            node.attrs.pop(key)
    work = capture_workloads(graph, digits().x_test[:8], act_bits=12)
    for w in work:
        assert w.inputs.min() >= 0 and w.inputs.max() == (1 << 12) - 1   # max-abs scaled
        assert np.abs(w.weights).max() == 127
    assert simulate_cycles(work, FORMS8).skip_saving > 4 / 17     # 12-bit values in 16 bits


def test_a_placements_row_groups_and_crossbars_are_used_as_given():
    """Same layer, rows given by a placement (reversed order, an empty row) vs our own."""
    rng = np.random.default_rng(3)
    w = rng.integers(1, 9, (15, 4))
    x = rng.integers(0, 1 << 16, (6, 15)) >> rng.integers(0, 16, (6, 15))
    order = np.concatenate([np.arange(15)[::-1], [-1]]).reshape(2, 8)
    placed = LayerWorkload(name="l", weights=w, inputs=x, frames=6, row_groups=order,
                           crossbars=5)
    own = LayerWorkload(name="l", weights=w[::-1], inputs=x[:, ::-1], frames=6)
    a, b = simulate_cycles([placed], FORMS8).layers[0], simulate_cycles([own], FORMS8).layers[0]
    assert a.crossbars == 5 and b.crossbars == 1
    assert a.cycles_per_vector == b.cycles_per_vector
    assert a.actions == b.actions
    with pytest.raises(ValueError, match="row_groups must be"):
        simulate_cycles([LayerWorkload(name="l", weights=w, inputs=x, frames=6,
                                       row_groups=order.reshape(4, 4))], FORMS8)


def test_arch_for_names_and_placement_passthrough():
    from chipforge.sim.cycle.report import arch_for
    from chipforge.zoo.data import digits

    assert arch_for("forms8") is FORMS8 and arch_for("forms32").fragment_size == 32
    assert arch_for("isaac", weight_bits=8).cells_per_weight == 4
    with pytest.raises(ValueError, match="unknown architecture"):
        arch_for("forms12x")
    graph = digits_cnn()
    k = 9    # conv1: 1 channel x 3 x 3 rows -> two fragments of 8 (7 empty rows)
    groups = np.concatenate([np.arange(k), -np.ones(16 - k, dtype=np.int64)]).reshape(2, 8)
    (r,) = cycle_reports(graph, digits().x_test[:8], ["forms8"],
                         placement={"conv1": (groups, 3)})
    assert r.layers[0].crossbars == 3 and r.layers[1].crossbars == 1


def test_main_job_cycle_model_uses_the_reram_placement():
    """chipforge simulate's cycle model maps every layer exactly as the placement did."""
    from chipforge import zoo
    from chipforge.families.reram import cycle_placement
    from chipforge.mappings.placement import place
    from chipforge.zoo.data import digits

    graph = zoo.load("lenet-digits-forms8")
    mapped = place(graph, "forms8")
    (report,) = cycle_reports(graph, digits(16).x_test[:8], ["forms8"],
                              placement=cycle_placement(mapped))
    assert [la.crossbars for la in report.layers] == \
        [mapped.layers[la.name].stats.crossbars for la in report.layers]


def test_placed_group_cycles_are_each_groups_widest_input():
    """Zero-skipping on a placement: a row group takes the bits of its widest input (a
    negative input all bits, an empty row none), for narrow and wide input types."""
    from chipforge.sim.cycle.model import _placed_group_eic

    row_groups = np.array([[0, 1], [2, -1], [3, 3]])
    expected = np.array([[1, 2, 8], [2, 8, 3]])
    for x in (np.array([[0, 1, 2, 255], [3, 0, 128, 7]], dtype=np.uint8),
              np.array([[0, 1, 2, -1], [3, 0, -128, 7]], dtype=np.int8),
              np.array([[0, 1, 2, -1], [3, 0, -128, 7]], dtype=np.int64)):
        got = _placed_group_eic(x, int(x.min()), int(x.max()), row_groups, 8)
        assert got.tolist() == expected.tolist(), x.dtype
    wide = np.array([[70000, 0]])          # more than 2**16 distinct values possible
    assert _placed_group_eic(wide, 0, 70000, np.array([[0, 1], [1, -1]]), 17).tolist() \
        == [[17, 0]]
