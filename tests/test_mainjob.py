"""`chipforge simulate`'s main job: model (zoo / ONNX / npz) and data in, report out."""

import json

import numpy as np
import pytest
import torch

from chipforge.cli import main
from chipforge.mainjob import run_main_job


def test_zoo_model_report_files_and_numbers(tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["simulate", "lenet-digits-forms8", "--accelerator", "forms8", "--samples",
                 "40", "--cycle-samples", "20", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "accuracy hardware" in text and str(out / "report.json") in text
    report = json.loads((out / "report.json").read_text())
    sim = report["simulation"]
    assert sim["samples"] == 40 and sim["accelerator"] == "forms8"
    assert sim["accuracy_ideal"] == sim["accuracy_hardware"]     # ideal device, exact
    assert [la["node"] for la in sim["layers"]] == ["conv1", "conv2", "fc1", "fc2", "fc3"]
    assert (out / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cycle_model_latency_and_energy_in_the_report(tmp_path):
    job = run_main_job("lenet-digits-forms8", "forms8", "digits", out=tmp_path, samples=20,
                       cycle_samples=10, progress=False)
    report = json.loads(job.paths["json"].read_text())
    cycles = report["family"]["cycles"]          # the ReRAM family's own section
    assert [la["name"] for la in cycles["layers"]] == ["conv1", "conv2", "fc1", "fc2", "fc3"]
    assert cycles["energy_per_frame_j"] > 0 and cycles["latency_ns"] > 0
    assert report["cost"]["energy_j"] == pytest.approx(cycles["energy_per_frame_j"])
    assert [la["name"] for la in report["cost"]["layers"]] == [la["name"] for la in
                                                               cycles["layers"]]
    assert (tmp_path / "layers.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_float_onnx_model_with_npz_data_is_quantized_and_simulated(tmp_path):
    from chipforge.importers.torch import torch_to_onnx
    from chipforge.zoo.data import digits

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.MaxPool2d(2), torch.nn.Flatten(),
                              torch.nn.Linear(64, 10))
    (tmp_path / "net.onnx").write_bytes(torch_to_onnx(net, torch.rand(2, 1, 8, 8)))
    data = digits()
    np.savez(tmp_path / "data.npz", x=data.x_test[:30].reshape(30, 64), y=data.y_test[:30])
    job = run_main_job(tmp_path / "net.onnx", "isaac", tmp_path / "data.npz",
                       out=tmp_path / "r", progress=False, cycle_samples=10)
    assert job.simulation.samples == 30
    assert job.simulation.accuracy_ideal == job.simulation.accuracy_hardware
    assert any("quantized after training" in n for n in job.notes)
    assert json.loads(job.paths["json"].read_text())["notes"] == job.notes
    with pytest.raises(ValueError, match="are not quantized"):
        run_main_job(tmp_path / "net.onnx", "isaac", "digits", quantize="off",
                     progress=False)


def test_bad_model_and_data_are_one_line_errors(tmp_path, capsys):
    assert main(["simulate", str(tmp_path / "none.onnx")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    assert main(["simulate", "lenet-digits-forms8", "--data", str(tmp_path / "bad.npz")]) == 2
    assert "corrupt or truncated" in capsys.readouterr().err
