"""One entry point: ``chipforge.simulate(...)`` in Python is what ``chipforge simulate`` runs
(PTQ of a float model with the same calibration rule, cost model, report files), and
``--chips N`` / ``chips=N`` runs N programmed chips on one mapping."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import chipforge
from chipforge.chips import chip_seeds, spread
from chipforge.cli import main
from chipforge.importers.torch import torch_to_onnx
from chipforge.zoo.data import digits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from digits_cnn import train_digits_cnn  # noqa: E402


@pytest.fixture(scope="module")
def float_cnn(tmp_path_factory):
    """A tiny float CNN trained for a few epochs on sklearn digits (8x8), as a torch module,
    its ONNX file and an .npz of 120 test images."""
    d = digits()
    net, x = train_digits_cnn(0)
    folder = tmp_path_factory.mktemp("cnn")
    (folder / "cnn.onnx").write_bytes(torch_to_onnx(net, x[:2]))
    x_test, y_test = d.x_test[:120].reshape(120, 1, 8, 8), d.y_test[:120]
    np.savez(folder / "test.npz", x=x_test, y=y_test)
    return net, folder, x_test, y_test


@pytest.mark.parametrize("accelerator, flags", [("isaac", ["--variation", "0.08"]),
                                                ("cap-ram", [])])
def test_python_and_cli_give_the_same_numbers_on_a_float_torch_model(
        float_cnn, tmp_path, capsys, accelerator, flags):
    net, folder, x_test, y_test = float_cnn
    graph = chipforge.from_torch(net, torch.tensor(x_test[:2], dtype=torch.float32))
    options = {"variation": 0.08} if flags else {}
    result = chipforge.simulate(graph, accelerator=accelerator, data=(x_test, y_test),
                                seed=2, cycle_samples=5, progress=False,
                                out=tmp_path / "py", **options)
    assert any("quantized after training" in n for n in result.notes)  # the PTQ ran
    assert main(["simulate", str(folder / "cnn.onnx"), "--accelerator", accelerator,
                 "--data", str(folder / "test.npz"), "--seed", "2", "--cycle-samples", "5",
                 "--out", str(tmp_path / "cli"), "--no-progress", *flags]) == 0
    assert "accuracy hardware" in capsys.readouterr().out
    cli = json.loads((tmp_path / "cli" / "report.json").read_text())
    py = json.loads(result.paths["json"].read_text())
    for key in ("accuracy_float", "accuracy_ideal", "accuracy_hardware", "agreement",
                "samples"):
        assert py["simulation"][key] == cli["simulation"][key], key
    assert py["cost"] == cli["cost"] and result.cost == cli["cost"]
    assert result.cost["energy_j"] > 0 and result.cost_report is not None
    assert py["notes"] == cli["notes"] == result.notes
    assert 0.5 < result.accuracy_ideal <= 1.0   # the trained model, not chance
    if accelerator == "isaac":                   # the variation costs accuracy
        assert result.accuracy_hardware != result.accuracy_ideal


def test_the_readme_python_example_form_runs_on_a_float_net(float_cnn):
    """The README's shape: from_torch, then simulate with data; no FamilyError."""
    net, _, x_test, y_test = float_cnn
    graph = chipforge.from_torch(net, torch.tensor(x_test[:2], dtype=torch.float32))
    r = chipforge.simulate(graph, accelerator="isqed-differential", data=(x_test, y_test),
                           fault_rate=0.005, seed=1, progress=False, cycle_samples=3)
    assert r.samples == 120 and r.accuracy_float is not None


def test_chips_are_distinct_chip_zero_is_the_seed_run_and_the_spread_is_over_rows():
    common = dict(accelerator="forms8", data="digits", samples=60, cycle_samples=3,
                  progress=False, fault_rate=0.02, variation=0.1)
    many = chipforge.simulate("lenet-digits-forms8", seed=5, chips=3, **common)
    plain = chipforge.simulate("lenet-digits-forms8", seed=5, **common)
    rows = many.chips
    assert [r["seed"] for r in rows] == chip_seeds(5, 3)
    accs = [r["accuracy_hardware"] for r in rows]
    assert len(set(accs)) == 3                               # three different chips
    assert accs[0] == plain.accuracy_hardware                # chip 0 is the seed-5 run
    assert rows[0]["agreement"] == plain.agreement
    assert plain.chips == [{"chip": 0, "seed": 5, "accuracy_hardware":
                            plain.accuracy_hardware, "agreement": plain.agreement}]
    assert plain.accuracy_hardware_spread is None
    expected = spread(accs)
    assert many.accuracy_hardware_spread == expected
    assert many.accuracy_hardware == expected["mean"]
    assert many.accuracy_hardware_spread["ci95_low"] < many.accuracy_hardware \
        < many.accuracy_hardware_spread["ci95_high"]
    # float and ideal accuracy do not depend on the chip
    assert many.accuracy_ideal == plain.accuracy_ideal
    assert many.accuracy_float == plain.accuracy_float
    again = chipforge.simulate("lenet-digits-forms8", seed=5, chips=3, **common)
    assert again.chips == many.chips                          # deterministic


def test_cli_chips_rows_in_report_json_and_text(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["simulate", "lenet-digits-forms8", "--accelerator", "forms8", "--samples",
                 "40", "--cycle-samples", "3", "--fault-rate", "0.02", "--chips", "2",
                 "--seed", "1", "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    sim = json.loads((out / "report.json").read_text())["simulation"]
    assert [r["seed"] for r in sim["chips"]] == chip_seeds(1, 2)
    assert sim["accuracy_hardware_spread"]["chips"] == 2
    assert "over 2 chips" in text and str(chip_seeds(1, 2)[1]) in text
    assert main(["simulate", "lenet-digits-forms8", "--chips", "0"]) == 2
    assert "--chips must be >= 1" in capsys.readouterr().err


def test_bad_chips_run_options_and_out_are_value_errors(tmp_path):
    (tmp_path / "file").write_text("mine")
    with pytest.raises(ValueError, match="out .*file: exists and is not a folder"):
        chipforge.simulate("mlp-digits", accelerator="isaac", out=tmp_path / "file")
    assert (tmp_path / "file").read_text() == "mine"
    with pytest.raises(ValueError, match="chips must be an integer >= 1"):
        chipforge.simulate("mlp-digits", accelerator="isaac", chips=0)
    with pytest.raises(ValueError, match="do not apply to accelerator 'superbnn'"):
        chipforge.simulate("bnn-digits", accelerator="superbnn",
                           run_options={"max_memory": "1G"})


def test_cost_false_skips_the_cost_model_and_says_so():
    from chipforge.simulate import simulate

    r = simulate("lenet-digits", accelerator="isaac", samples=16, cost=False, progress=False)
    assert r.cost is None and any("cost model skipped" in n for n in r.notes)
    assert all(s["stage"] != "cost" for s in r.stages)
    assert simulate("lenet-digits", accelerator="isaac", samples=16,
                    progress=False).cost["latency_s"] > 0
