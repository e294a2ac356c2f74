"""`chipforge compare`: one model over presets of several families, on one footing."""

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest

import chipforge
import chipforge.compare as compare_module
from chipforge.chips import spread
from chipforge.cli import main
from chipforge.importers.torch import torch_to_onnx
from chipforge.zoo.data import digits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from digits_cnn import train_digits_cnn  # noqa: E402

PRESETS = ["isaac", "isqed-differential", "cap-ram", "pim-bit-serial", "heatvit"]
CLIP_TOML = Path(chipforge.__file__).parent / "presets" / "forms8_clip.toml"
COMMON = {"chips": 2, "samples": 48, "seed": 3, "cycle_samples": 4}


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    """A tiny float CNN trained briefly on sklearn digits, as ONNX, and 48 test images."""
    d = digits()
    net, x = train_digits_cnn(1)
    folder = tmp_path_factory.mktemp("cnn")
    (folder / "cnn.onnx").write_bytes(torch_to_onnx(net, x[:2]))
    np.savez(folder / "test.npz", x=d.x_test[:48].reshape(48, 1, 8, 8), y=d.y_test[:48])
    return folder


@pytest.fixture(scope="module")
def compared(cnn, tmp_path_factory):
    out = tmp_path_factory.mktemp("compare") / "out"
    lines = []
    result = chipforge.compare(cnn / "cnn.onnx", ",".join(PRESETS), cnn / "test.npz",
                               out=out, log=lines.append, **COMMON)
    return result, out, lines


def test_rows_equal_single_simulate_runs(cnn, compared):
    result, _, _ = compared
    assert [r["preset"] for r in result.rows] == PRESETS[:4]
    assert {r["family"] for r in result.rows} == {"reram", "pim"}
    for row in result.rows:
        single = chipforge.simulate(cnn / "cnn.onnx", accelerator=row["preset"],
                                    data=cnn / "test.npz", progress=False, **COMMON)
        assert row["accuracy_ideal"] == single.accuracy_ideal
        assert row["accuracy_float"] == single.accuracy_float
        assert row["accuracy_hardware"] == single.accuracy_hardware
        accs = [c["accuracy_hardware"] for c in single.chips]
        s = spread(accs)
        assert row["accuracy_hardware_ci95_low"] == s["ci95_low"]
        assert row["accuracy_hardware_ci95_high"] == s["ci95_high"]
        assert row["chips"] == 2
        # ops: 2 x MACs of conv (4 x 8 x 8 outputs x 9) and linear (10 x 64)
        assert row["ops_per_inference"] == 2 * (4 * 8 * 8 * 9 + 10 * 64)
        if single.cost is None:      # the empty cells say why
            assert all(row[k] is None for k in ("latency_s", "energy_j", "edp_js",
                                                "tops_per_w"))
            assert f"no cost model (family {row['family']})" in row["notes"]
            continue
        for key in ("latency_s", "throughput_per_s", "energy_j", "area_mm2"):
            assert row[key] == single.cost[key], (row["preset"], key)
        assert row["edp_js"] == single.cost["energy_j"] * single.cost["latency_s"]
        assert row["tops_per_w"] == pytest.approx(row["ops_per_inference"]
                                                  / single.cost["energy_j"] / 1e12)
        assert row["notes"] == ""                     # every cell has its number


def test_a_refused_preset_is_skipped_with_the_familys_reason(compared):
    result, _, lines = compared
    assert [s["preset"] for s in result.skipped] == ["heatvit"]
    reason = result.skipped[0]["reason"]
    assert "is not a ViT the HeatViT engine runs" in reason and "\n" not in reason
    assert any(line.startswith("heatvit: skipped") and reason in line for line in lines)


def test_csv_markdown_latex_are_written_and_parse(compared):
    result, out, _ = compared
    with open(out / "compare.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["preset"] for r in table] == PRESETS
    assert table[-1]["status"] == "skipped" and "ViT" in table[-1]["notes"]
    isaac = table[0]
    assert float(isaac["energy_j"]) == result.rows[0]["energy_j"]
    assert float(isaac["accuracy_hardware"]) == result.rows[0]["accuracy_hardware"]
    md = (out / "compare.md").read_text().splitlines()
    header = [c.strip() for c in md[0].strip("|").split("|")]
    assert "energy / inference" in header and "TOPS/W" in header
    body = [line for line in md[2:] if line.startswith("|")]
    assert len(body) == 4 and all(len(line.strip("|").split(" | ")) == len(header)
                                  for line in body)
    assert any(line.startswith("- skipped heatvit") for line in md)
    tex = (out / "compare.tex").read_text()
    assert tex.count(r"\begin{tabular}") == 1 and tex.count(r"\end{tabular}") == 1
    rows = [line for line in tex.splitlines() if line.endswith(r"\\")]
    assert len(rows) == 5 and all(r.count(" & ") == 13 for r in rows)   # header + 4
    assert "%" not in tex.replace(r"\%", "").split(r"\begin{tabular}")[1].split(
        r"\end{tabular}")[0]                                             # escaped


def test_resume_skips_finished_presets_and_refuses_other_args(cnn, compared, monkeypatch):
    result, out, _ = compared
    calls = []
    real = compare_module.run_preset
    monkeypatch.setattr(compare_module, "run_preset",
                        lambda task: calls.append(task["preset"]) or real(task))
    (out / "presets" / "cap-ram.json").unlink()          # as if interrupted before it
    again = chipforge.compare(cnn / "cnn.onnx", ",".join(PRESETS), cnn / "test.npz",
                              out=out, **COMMON)
    assert calls == ["cap-ram"] and again.computed == ["cap-ram"]
    assert again.rows == result.rows
    with pytest.raises(ValueError, match="holds a compare with other arguments .*chips"):
        chipforge.compare(cnn / "cnn.onnx", ",".join(PRESETS), cnn / "test.npz",
                          out=out, **(COMMON | {"chips": 3}))


def test_resume_refuses_a_changed_data_file(cnn, tmp_path):
    data = tmp_path / "test.npz"
    with np.load(cnn / "test.npz") as f:
        np.savez(data, x=f["x"][:12], y=f["y"][:12])
    chipforge.compare(cnn / "cnn.onnx", "isaac", data, out=tmp_path / "out", cycle_samples=2)
    with np.load(cnn / "test.npz") as f:
        np.savez(data, x=f["x"][12:24], y=f["y"][12:24])   # same name, other images
    with pytest.raises(ValueError, match=r"other arguments \(data differ\)"):
        chipforge.compare(cnn / "cnn.onnx", "isaac", data, out=tmp_path / "out",
                          cycle_samples=2)


def test_pareto_figure_axes_units_and_front(compared):
    from matplotlib.ticker import EngFormatter

    result, out, _ = compared
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    fig = compare_module.pareto_figure(result.rows)
    energy, latency = fig.axes
    assert energy.get_xscale() == "log" and latency.get_xscale() == "log"
    assert energy.get_xlabel().startswith("energy per inference (J")
    assert latency.get_xlabel().startswith("latency per inference (s")
    assert energy.get_ylabel() == "hardware accuracy (%)"
    for ax, unit in ((energy, "J"), (latency, "s")):
        formatter = ax.xaxis.get_major_formatter()
        assert isinstance(formatter, EngFormatter) and formatter.unit == unit
        labels = {t.get_text() for t in ax.texts}
        assert {r["preset"] for r in result.rows if r["energy_j"]} <= labels
    assert "2 chips" in fig._suptitle.get_text()
    front_line = [line for line in energy.get_lines() if line.get_label() == "Pareto front"]
    assert len(front_line) == 1
    costed = [r for r in result.rows if r["energy_j"]]
    xs = [r["energy_j"] for r in costed]
    ys = [100 * r["accuracy_hardware"] for r in costed]
    front = compare_module.pareto_front(list(zip(xs, ys, strict=True)))
    assert list(front_line[0].get_xdata()) == [xs[i] for i in front]
    assert min(xs) == xs[front[0]]                       # the cheapest is always on it
    for i in range(len(xs)):                             # nothing beats a front point
        for j in front:
            assert not (xs[i] < xs[j] and ys[i] > ys[j])


def test_pareto_front_keeps_only_undominated_points():
    points = [(1.0, 50.0), (2.0, 80.0), (3.0, 70.0), (4.0, 90.0), (2.0, 60.0)]
    assert compare_module.pareto_front(points) == [0, 1, 3]


def test_cli_compare_per_preset_model_and_parallel_pool(cnn, tmp_path, capsys):
    """A preset named with its own model (cap-ram=...), the CLI's one-line skips, and the
    same numbers on a process pool of 2 workers as serially."""
    args = ["compare", str(cnn / "cnn.onnx"), "--accelerators",
            f"isaac,superbnn,cap-ram=mlp-digits,{CLIP_TOML}",
            "--data", "digits", "--samples", "30",
            "--chips", "2", "--cycle-samples", "3"]
    assert main([*args, "--out", str(tmp_path / "serial")]) == 0
    text = capsys.readouterr().out
    assert "superbnn: skipped" in text
    # a TOML accelerator stands for a preset, labelled by its name; the family's reason
    assert "forms8-clip: skipped" in text and "not polarized for fragment size 8" in text
    assert main([*args, "--out", str(tmp_path / "pool"), "--workers", "2"]) == 0
    serial = json.loads((tmp_path / "serial" / "presets" / "cap-ram.json").read_text())
    pool = json.loads((tmp_path / "pool" / "presets" / "cap-ram.json").read_text())
    assert serial["model"] == "mlp-digits" and serial == pool
    assert main(["compare", "mlp-digits", "--accelerators", "isaac,nope"]) == 2
    assert "unknown preset 'nope'" in capsys.readouterr().err
    assert main(["compare", "mlp-digits", "--accelerators", "isaac=missing.onnx"]) == 2
    assert "missing.onnx does not exist" in capsys.readouterr().err


def test_ops_count_equals_the_heatvit_engines_dense_macs():
    """count_macs from the layer shapes against the HeatViT engine model's own count of
    the same ViT's dense MACs (attention matmuls included)."""
    from chipforge.zoo import load

    r = chipforge.simulate("vit-digits-keep50", accelerator="heatvit", samples=4,
                           progress=False, cycle_samples=2)
    assert compare_module.count_macs(load("vit-digits-keep50")) == \
        r.metrics["macs_per_image_dense"]


def test_no_preset_running_is_an_error_naming_the_reason(tmp_path):
    with pytest.raises(ValueError, match="no preset ran the model; heatvit: .*not a ViT"):
        chipforge.compare("mlp-digits", "heatvit", samples=5, out=tmp_path / "o")


def test_family_options_reach_the_presets_whose_family_has_them(tmp_path):
    """--variation / --fault-rate go to the ReRAM presets only; the row says so; an
    option no compared family has is refused."""
    from chipforge.compare import CompareError, compare

    result = compare("lenet-digits", "isaac,cap-ram", samples=24, chips=2, fault_rate=0.05,
                     variation=0.1)
    rows = {r["preset"]: r for r in result.rows}
    assert rows["isaac"]["conditions"] == "fault_rate=0.05, variation=0.1"
    assert rows["cap-ram"]["conditions"] == "preset defaults"
    plain = compare("lenet-digits", "isaac", samples=24, chips=2).rows[0]
    # the faults and variation change the ReRAM chips (not the ideal run)
    assert plain["accuracy_ideal"] == rows["isaac"]["accuracy_ideal"]
    assert [c["accuracy_hardware"] for c in plain["per_chip"]] != \
        [c["accuracy_hardware"] for c in rows["isaac"]["per_chip"]]
    with pytest.raises(CompareError, match="sigma_ua apply to none"):
        compare("lenet-digits", "isaac,cap-ram", samples=8, sigma_ua=2.0)


def test_an_aqfp_row_states_its_4_kelvin_and_wall_plug_energy():
    from chipforge.compare import compare

    row = compare("bnn-digits", "superbnn", samples=24).rows[0]
    assert row["energy_wall_plug_j"] == pytest.approx(row["energy_j"] * 401, rel=1e-12)
    assert "4.2 K" in row["notes"] and "wall-plug" in row["notes"]
    assert row["area_mm2"] > 0
