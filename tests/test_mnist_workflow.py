"""examples/mnist_workflow.py: the whole workflow on real MNIST with the user's own torch
models and data files, through public commands and the Python API only (issue 25's
"Must show"). ``--quick`` in ``make test``; the full run is marked slow."""

from __future__ import annotations

import csv
import importlib.util
import io
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "mnist_workflow.py"
PRESETS = {"isaac", "isqed-two-column", "isqed-differential", "cap-ram", "cap-ram-ternary",
           "pim-bit-serial", "pim-ideal", "heatvit"}
ON_FAMILY = {"forms4", "forms8", "forms16", "isqed-differential", "cap-ram", "superbnn",
             "heatvit"}


def _workflow():
    spec = importlib.util.spec_from_file_location("mnist_workflow", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _check(summary: dict, out: Path, *, chips: int) -> None:
    assert summary["python_equals_cli"] is True
    # simulate: every preset the plain models fit, each with accuracy, latency and energy
    rows = {r["accelerator"]: r for r in summary["simulate"]}
    assert set(rows) == PRESETS
    for name, r in rows.items():
        assert 0.0 <= r["hardware"] <= 1.0 and r["ideal"] > 0.3, (name, r)
        assert r["latency_s"] > 0 and r["energy_j"] > 0, (name, r)
        if name != "heatvit":
            assert r["hardware_std"] is not None          # over the chips
    # compress with all five methods, each simulated on its family
    done = {r["accelerator"]: r for r in summary["compress"]}
    assert set(done) == ON_FAMILY
    assert {r["method"] for r in summary["compress"]} >= {"forms", "forms16", "isqed",
                                                          "pim-qat", "superbnn", "heatvit"}
    for name, r in done.items():
        assert r["ideal"] > 0.3 and r["latency_s"] > 0 and r["energy_j"] > 0, (name, r)
    # RTL: the tile's Verilog under --out, the layer bit-exact with cycles = the model
    assert summary["rtl_tile"] and all(p.endswith(".v") for p in summary["rtl_tile"])
    for report in summary["rtl_loop"].values():
        assert report["bit_exact"] is True and report["mismatches"] == 0
        assert report["cycles"] == report["model_cycles"] > 0
        assert report["data"].endswith("test.npz")
    assert summary["rtl_selector"]
    # the fault sweep: 3 rates x 2 mappings, 4 chips each, on the user's data
    table = list(csv.DictReader(io.StringIO(summary["sweep_faults"])))
    assert len(table) == 6
    assert {r["mapping"] for r in table} == {"two_column", "differential"}
    assert {float(r["fault_rate"]) for r in table} == {0.001, 0.01, 0.05}
    assert all(int(r["n"]) == 4 and r["data"].endswith("test.npz") for r in table)
    assert (out / "summary.json").is_file()


def test_the_reduced_workflow_runs_end_to_end(tmp_path):
    summary = _workflow().main(["--out", str(tmp_path), "--quick"])
    _check(summary, tmp_path, chips=2)


@pytest.mark.slow
def test_the_full_workflow_runs_end_to_end(tmp_path):
    summary = _workflow().main(["--out", str(tmp_path)])
    _check(summary, tmp_path, chips=4)
    assert "rtl-loop-tile" in summary["rtl_loop"]
    # trained on 3,500 images for 8 epochs, the user's CNN is a real MNIST model
    assert summary["torch_val_accuracy"]["cnn"] > 0.9
