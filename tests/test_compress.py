"""``chipforge compress``: every method on a user's own small model, with tiny epochs.

The full runs (default schedules, the issue's claims) are in test_compress_paper.py (slow).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest

import chipforge
from chipforge.cli import main
from chipforge.compress import graph_sha256
from chipforge.sim.executor import run_graph
from chipforge.sim.graph import load_graph

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))
helpers = importlib.import_module("compress_helpers")

TINY_FORMS = dict(prune_epochs=1, polarize_epochs=1, finetune_epochs=1, qat_epochs=1,
                  sign_update_every=1)


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    """A user CNN on 8x8 digits (2 epochs), as ONNX + train/test .npz."""
    folder = tmp_path_factory.mktemp("cnn")
    return helpers.train_and_export(helpers.user_cnn(size=8, width=4), 8, 3, folder, "cnn")


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mlp")
    return helpers.train_and_export(helpers.user_mlp((32, 32)), 8, 6, folder, "mlp")


def _test_accuracy(graph, files, matmul=None) -> float:
    with np.load(files["test"]) as f:
        x, y = f["x"].astype(np.float64), f["y"]
    return float((run_graph(graph, x, matmul=matmul).argmax(1) == y).mean())


def test_forms_cli_writes_polarized_model_with_provenance_and_simulate_prints_it(
        cnn, tmp_path, capsys):
    out = tmp_path / "cnn-forms4.npz"
    args = ["compress", "forms", str(cnn["model"]), "--data", str(cnn["train"]), "--out",
            str(out), "--fragment-size", "4", "--prune-ratio", "0.5", "--seed", "3"]
    args += [f"--{k.replace('_', '-')}={v}" for k, v in TINY_FORMS.items()]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "compressed by `chipforge compress forms`" in printed
    graph = load_graph(out)
    p = graph.meta["provenance"]
    source = chipforge.load_onnx(cnn["model"])
    assert p["method"] == "forms" and p["seed"] == 3
    assert p["options"]["fragment_size"] == 4 and p["options"]["prune_ratio"] == 0.5
    assert p["source_sha256"] == graph_sha256(source)
    assert p["train_samples"] + p["validation_samples"] == 1437
    assert p["validation_samples"] == pytest.approx(0.2 * 1437, abs=10)
    # validation accuracy is the written model's, on the held-out part of the training file
    assert 0.3 < p["validation_accuracy"] <= 1.0
    for node in graph.weighted_nodes():
        w = node.params["weight"]
        assert node.attrs["fragment_size"] == 4 and node.quantized
        assert 0.45 <= float((w == 0).mean()) <= 0.9       # pruned to (at least) the ratio
    assert not (out.parent / (out.name + ".ckpt")).exists()  # checkpoints removed on success
    # the output runs on forms4 (placement refuses an unpolarized model)
    report = tmp_path / "report"
    assert main(["simulate", str(out), "--accelerator", "forms4", "--data", str(cnn["test"]),
                 "--out", str(report), "--samples", "40", "--cycle-samples", "4"]) == 0
    printed = capsys.readouterr().out
    assert "note: compressed by `chipforge compress forms`" in printed
    assert "crossbars" in printed


def test_forms_is_reproducible_and_resumes_from_its_checkpoint(cnn, tmp_path, monkeypatch):
    from chipforge import compress_methods

    options = dict(TINY_FORMS, fragment_size=8, prune_ratio=0.5)
    first = chipforge.compress("forms", cnn["model"], cnn["train"], seed=1, progress=False,
                               **options)
    again = chipforge.compress("forms", cnn["model"], cnn["train"], seed=1, progress=False,
                               **options)
    assert graph_sha256(first) == graph_sha256(again)
    other = chipforge.compress("forms", cnn["model"], cnn["train"], seed=2, progress=False,
                               **options)
    assert graph_sha256(first) != graph_sha256(other)

    # interrupted in the last stage: the rerun resumes after prune and polarize
    ckpt = tmp_path / "ckpt"
    real = compress_methods._qat_stage

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(compress_methods, "_qat_stage", interrupted)
    with pytest.raises(KeyboardInterrupt):
        chipforge.compress("forms", cnn["model"], cnn["train"], seed=1, checkpoint=ckpt,
                           progress=False, **options)
    saved = sorted(p.name for p in ckpt.iterdir())
    assert saved == ["polarize.graph.npz", "prune.graph.npz", "run.json"]
    for p in ckpt.glob("*.npz"):                 # written without pickle
        with np.load(p, allow_pickle=False) as f:
            assert all(f[k].dtype != object for k in f.files)
    monkeypatch.setattr(compress_methods, "_qat_stage", real)
    resumed = chipforge.compress("forms", cnn["model"], cnn["train"], seed=1, checkpoint=ckpt,
                                 progress=False, **options)
    assert resumed.meta["provenance"]["resumed_stages"] == ["prune", "polarize"]
    assert graph_sha256(resumed) == graph_sha256(first)
    # a checkpoint of another run is refused, not overwritten
    ckpt.mkdir(exist_ok=True)
    (ckpt / "run.json").write_text('{"method": "isqed"}')
    with pytest.raises(ValueError, match="belongs to another run"):
        chipforge.compress("forms", cnn["model"], cnn["train"], seed=1, checkpoint=ckpt,
                           progress=False, **options)


def test_isqed_accepts_steps_by_the_fault_injected_accuracy(cnn):
    clean = chipforge.compress("isqed", cnn["model"], cnn["train"], progress=False,
                               ratios=(0.5,), prune_epochs=1, finetune_epochs=1, qat_epochs=1,
                               fault_trials=1, fault_rate=0.0, threshold=0.05)
    r = clean.meta["provenance"]["result"]
    assert r["mapping"] == "isqed-differential"
    assert r["steps"] and r["steps"][0]["ratio"] == 0.5
    # at a fault rate that breaks the chip, the same evaluate reports it (it is not the clean
    # accuracy), and no pruning step can be accepted against the faulty reference margin
    faulty = chipforge.compress("isqed", cnn["model"], cnn["train"], progress=False,
                                ratios=(0.5,), prune_epochs=1, finetune_epochs=1, qat_epochs=1,
                                fault_trials=1, fault_rate=0.3, threshold=0.0)
    f = faulty.meta["provenance"]["result"]
    assert r["val_fault_accuracy_source"] > 0.6
    assert f["val_fault_accuracy_source"] < r["val_fault_accuracy_source"] - 0.3
    assert all(n.quantized for n in clean.weighted_nodes())


def test_pim_qat_export_matches_the_trained_torch_model(cnn):
    from chipforge.compress_methods import _pim_config
    from chipforge.compress_options import PimQatOptions

    with np.load(cnn["train"]) as f:            # a subset: the PIM forward pass is slow
        x, y = f["x"][:500], f["y"][:500]
    # pim-ideal's noiseless ADC cut to 6 bits: the torch twin and the simulator agree exactly
    graph = chipforge.compress("pim-qat", cnn["model"], (x, y), progress=False,
                               preset="pim-ideal", b_pim=6, qat_epochs=1, epochs=1)
    r = graph.meta["provenance"]["result"]
    for node in graph.weighted_nodes():
        assert node.quantized and node.attrs["weight_bits"] == 4
        assert node.attrs["act_signed"] is False
        assert len(node.attrs["pim_gain"]) == node.params["weight"].shape[0]  # per channel
        assert min(node.attrs["pim_gain"]) > 0
    # the exported graph (batch norms folded, gains as attrs) on the PIM macro reproduces
    # the trained torch model
    assert r["val_accuracy_pim"] == r["val_accuracy_pim_torch"]
    # the headline is the PIM accuracy (what the macro gives), the exact one beside it
    p = graph.meta["provenance"]
    assert p["validation_accuracy"] == r["val_accuracy_pim"]
    assert "simulated PIM macro" in p["validation_accuracy_on"]
    assert p["validation_accuracy_exact"] == r["val_accuracy_digital"]
    cfg = _pim_config(PimQatOptions(preset="pim-ideal", b_pim=6))
    assert graph.meta["pim"]["pim_config"] == cfg.to_dict()
    assert graph.meta["pim"]["overrides"] == ["adc.bits=6"]
    # and PIM-aware training helped over post-training quantization on the same macro
    assert r["val_accuracy_pim"] > r["val_accuracy_naive_pim (PTQ)"]


def test_superbnn_binarizes_a_user_mlp_for_the_aqfp_arrays(mlp, tmp_path, capsys):
    out = tmp_path / "mlp-bnn.npz"
    assert main(["compress", "superbnn", str(mlp["model"]), "--data", str(mlp["train"]),
                 "--out", str(out), "--epochs", "3"]) == 0
    graph = load_graph(out)
    assert graph.meta["provenance"]["result"]["layers"] == "64-32-32-10"
    for node in graph.weighted_nodes():
        assert set(np.unique(node.params["weight"])) <= {-1.0, 1.0}
    capsys.readouterr()
    assert main(["simulate", str(out), "--accelerator", "superbnn", "--data",
                 str(mlp["test"]), "--out", str(tmp_path / "r")]) == 0
    printed = capsys.readouterr().out
    assert "note: compressed by `chipforge compress superbnn`" in printed
    hardware = float(printed.split("accuracy hardware")[1].split("%")[0])
    assert hardware > 50.0


@pytest.mark.parametrize("case, message", [
    ("shape", "each input has shape"),
    ("labels", "labels must be class indices below the model's 10 outputs, found 12"),
    ("few", "too few"),
    ("superbnn-cnn", "binarizes MLPs"),
    ("unknown-option", "--fragment-size is not an option of superbnn"),
    ("pim-negative", "negative inputs"),
    ("fragment-order", "fragment_order must be one of"),
])
def test_bad_input_is_one_clear_error_before_training(cnn, tmp_path, capsys, case, message):
    out = tmp_path / "out.npz"
    with np.load(cnn["train"]) as f:
        x, y = f["x"], f["y"]
    data = cnn["train"]
    method, extra = "forms", []
    if case == "shape":
        data = tmp_path / "d.npz"
        np.savez(data, x=np.zeros((100, 1, 16, 16), np.float32), y=np.zeros(100, int))
    elif case == "labels":
        data = tmp_path / "d.npz"
        np.savez(data, x=x, y=np.where(y == 9, 12, y))
    elif case == "few":
        data = tmp_path / "d.npz"
        np.savez(data, x=x[:30], y=y[:30])
    elif case == "superbnn-cnn":
        method = "superbnn"
    elif case == "unknown-option":
        method, extra = "superbnn", ["--fragment-size", "8"]
    elif case == "pim-negative":
        method, data = "pim-qat", tmp_path / "d.npz"
        np.savez(data, x=x - 0.5, y=y)
    elif case == "fragment-order":
        extra = ["--fragment-order", "diagonal"]
    assert main(["compress", method, str(cnn["model"]), "--data", str(data), "--out", str(out),
                 *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not out.exists() and not (tmp_path / "out.npz.ckpt").exists()   # nothing written


def test_existing_output_is_not_overwritten(cnn, tmp_path, capsys):
    out = tmp_path / "mine.npz"
    out.write_bytes(b"the user's file")
    assert main(["compress", "forms", str(cnn["model"]), "--data", str(cnn["train"]),
                 "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    assert out.read_bytes() == b"the user's file"


def test_torch_module_from_python(mlp):
    import torch

    module = helpers.user_mlp((16,))
    with np.load(mlp["train"]) as f:
        x, y = f["x"], f["y"]
    graph = chipforge.compress("superbnn", module, (x, y), progress=False, epochs=1)
    assert graph.meta["provenance"]["source_model"] == "torch module Sequential"
    assert isinstance(module, torch.nn.Module)


def test_minibatches_never_leave_a_single_sample_batch():
    """Batch norm cannot train on one sample: a last batch of one joins the one before."""
    from chipforge.mappings.train import minibatches

    assert minibatches(129, 64) == [(0, 64), (64, 129)]
    assert minibatches(130, 64) == [(0, 64), (64, 128), (128, 130)]
    assert minibatches(1, 64) == [(0, 1)]
    for n in range(1, 300):
        batches = minibatches(n, 32)
        assert batches[0][0] == 0 and batches[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(batches, batches[1:], strict=False))
        assert n == 1 or min(hi - lo for lo, hi in batches) > 1
