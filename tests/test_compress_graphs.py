"""``chipforge compress`` on real graphs (issue 25): residual ResNets, depthwise / grouped
convolutions and concatenations written in plain torch and exported to ONNX at batch 1, a
binarized MLP for superbnn, defaults on shallow and deep models, progress, per-method help,
fingerprinted checkpoints and training data with too few classes (issue 28).

The CIFAR-stem ResNet-18 run is the slow test at the end; the fast tests use a tiny ResNet
(stem + 2 BasicBlocks, 8/16 channels, 16x16 inputs) on real MNIST made CIFAR-shaped.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import chipforge
from chipforge.cli import main
from chipforge.importers.model import load_model
from chipforge.mappings.torch_export import graph_module
from chipforge.sim.executor import run_graph
from chipforge.sim.fragments import check_polarized, num_fragments
from chipforge.sim.graph import Op, load_graph, save_graph

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))
nets = importlib.import_module("resnet_models")

TINY_FORMS = dict(prune_epochs=1, polarize_epochs=2, finetune_epochs=2, qat_epochs=1,
                  sign_update_every=1, prune_ratio=0.5)
"""A few hundred training steps: enough to exercise every stage, far too few to recover
the accuracy that polarization takes (FORMS' defaults train 92 epochs), so the tests below
check the structure, the constraints and hardware = model, and accuracy only against
chance."""


@pytest.fixture(scope="module")
def mnist16():
    """600 real MNIST training images (the first 500 train, 100 are held for the
    simulations) padded/cropped to 16x16 and replicated to 3 channels."""
    x, y = nets.mnist_cifar_shaped(600, 16)
    return (x[:500], y[:500]), (x[500:], y[500:])


def _exported(module, train, folder: Path, name: str, epochs: int):
    nets.train_briefly(module, *train, epochs=epochs, lr=1e-2)
    return nets.export_onnx(module, (3, 16, 16), folder / f"{name}.onnx")


@pytest.fixture(scope="module")
def tiny_resnet(mnist16, tmp_path_factory):
    return _exported(nets.tiny_resnet(width=16), mnist16[0], tmp_path_factory.mktemp("rn"),
                     "tiny-resnet", epochs=3)


@pytest.fixture(scope="module")
def grouped_concat(mnist16, tmp_path_factory):
    folder = tmp_path_factory.mktemp("gc")
    return {"grouped": _exported(nets.grouped_net(), mnist16[0], folder, "grouped", 4),
            "concat": _exported(nets.concat_net(), mnist16[0], folder, "concat", 3)}


def _wiring(graph):
    return [(n.op, n.name, tuple(n.inputs)) for n in graph.nodes]


# -- the torch module follows the graph ----------------------------------------------------

@pytest.mark.parametrize("net", ["resnet", "grouped", "concat"])
def test_graph_module_computes_what_the_executor_computes(net, tiny_resnet, grouped_concat,
                                                          mnist16):
    path = tiny_resnet if net == "resnet" else grouped_concat[net]
    graph = load_model(str(path))
    ops = {n.op for n in graph.nodes}
    expected = {"resnet": Op.ADD, "grouped": Op.CONV2D, "concat": Op.CONCAT}[net]
    assert expected in ops
    if net == "grouped":
        assert {n.attrs.get("groups", 1) for n in graph.weighted_nodes()} >= {8, 2}
    module = graph_module(graph).double().eval()
    x = mnist16[1][0][:16].astype(np.float64)
    with torch.no_grad():
        ours = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ours, run_graph(graph, x, quantized=False), rtol=1e-5,
                               atol=1e-9)
    # its conv / linear children carry the graph's weights under the node names
    children = dict(module.named_children())
    for n in graph.weighted_nodes():
        np.testing.assert_array_equal(
            children[n.name.replace(".", "_")].weight.detach().numpy(), n.params["weight"])


# -- ResNet, grouped and concat nets through compress --------------------------------------

def _check_polarized(graph, fragment_size: int = 8) -> None:
    for n in graph.weighted_nodes():
        groups = int(n.attrs.get("groups", 1))
        signs = n.params["fragment_signs"]
        assert signs.shape == (n.params["weight"].shape[0],
                               num_fragments(n.params["weight"].shape, fragment_size, groups))
        assert check_polarized(n.params["weight"], signs, fragment_size,
                               n.attrs["fragment_order"], groups) == 0, n.name


def test_tiny_resnet_through_forms_and_isqed_runs_on_forms8_and_isqed(tiny_resnet, mnist16,
                                                                      tmp_path):
    start = time.perf_counter()
    (x, y), test = mnist16
    source = load_model(str(tiny_resnet))
    float_acc = float((run_graph(source, test[0], quantized=False).argmax(1) == test[1])
                      .mean())
    assert float_acc > 0.5                       # the user's model learned something

    forms = chipforge.compress("forms", str(tiny_resnet), (x, y), progress=False,
                               **TINY_FORMS)
    assert _wiring(forms) == _wiring(source)     # the residual graph, node for node
    _check_polarized(forms)
    sparsity = [float((n.params["weight"] == 0).mean()) for n in forms.weighted_nodes()]
    assert min(sparsity) >= 0.5                  # pruned to 0.5, then polarized
    assert all(n.quantized for n in forms.weighted_nodes())
    on_forms = chipforge.simulate(forms, accelerator="forms8", data=test, cost=False)

    isqed = chipforge.compress("isqed", str(tiny_resnet), (x, y), progress=False,
                               ratios=(0.5,), prune_epochs=1, finetune_epochs=0,
                               qat_epochs=1, fault_trials=1)
    assert _wiring(isqed) == _wiring(source)
    on_isqed = chipforge.simulate(isqed, accelerator="isqed-differential", data=test,
                                  cost=False)
    for r in (on_forms, on_isqed):
        # compressed (pruned, polarized or fault-judged, 8-bit) and still a classifier
        # still a classifier (chance is 0.1), and the crossbars compute the model
        assert r.accuracy_ideal > 0.3 and r.agreement >= 0.9
    assert isqed.meta["provenance"]["result"]["steps"][0]["ratio"] == 0.5
    assert time.perf_counter() - start < 120      # "under ~60 s CPU" on a quiet machine


@pytest.mark.parametrize("net", ["grouped", "concat"])
def test_depthwise_grouped_and_concat_nets_through_forms(net, grouped_concat, mnist16,
                                                         tmp_path):
    (x, y), test = mnist16
    source = load_model(str(grouped_concat[net]))
    out = tmp_path / f"{net}-forms8.npz"
    assert main(["compress", "forms", str(grouped_concat[net]), "--data",
                 str(_npz(tmp_path, x, y)), "--out", str(out), "--no-progress",
                 *_flags(TINY_FORMS)]) == 0
    graph = load_graph(out)
    assert _wiring(graph) == _wiring(source)
    _check_polarized(graph)
    r = chipforge.simulate(graph, accelerator="forms8", data=test, cost=False)
    assert r.accuracy_ideal > 0.2 and r.agreement >= 0.9    # ten classes: chance is 0.1


def _npz(folder: Path, x, y) -> Path:
    path = folder / "train.npz"
    np.savez(path, x=x, y=y)
    return path


def _flags(options: dict) -> list[str]:
    return [a for k, v in options.items() for a in (f"--{k.replace('_', '-')}", str(v))]


# -- superbnn on a binarized MLP -----------------------------------------------------------

class BinarizedMlp(torch.nn.Module):
    """A BNN as a user writes it: +-1 weights, batch norm, sign activations."""

    def __init__(self) -> None:
        super().__init__()
        nn = torch.nn
        self.fc1, self.bn1 = nn.Linear(64, 32), nn.BatchNorm1d(32)
        self.fc2, self.bn2 = nn.Linear(32, 32), nn.BatchNorm1d(32)
        self.fc3 = nn.Linear(32, 10)
        with torch.no_grad():
            for fc in (self.fc1, self.fc2, self.fc3):
                fc.weight.copy_(torch.sign(fc.weight))

    def forward(self, x):
        x = torch.flatten(x, 1)
        x = torch.sign(self.bn1(self.fc1(x)))
        x = torch.sign(self.bn2(self.fc2(x)))
        return self.fc3(x)


def test_superbnn_takes_an_already_binarized_mlp(tmp_path):
    from chipforge.zoo.data import digits

    torch.manual_seed(0)
    net = BinarizedMlp().eval()
    path = tmp_path / "bnn.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, torch.zeros(1, 1, 8, 8), str(path), dynamo=False)
    graph = load_model(str(path))
    assert [n.op for n in graph.nodes].count(Op.SIGN) == 2
    # the imported sign activations compute what torch computes (no input is exactly 0)
    d = digits(8)
    x = d.x_test[:50].reshape(-1, 1, 8, 8).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(run_graph(graph, x, quantized=False),
                                   net(torch.from_numpy(x)).double().numpy(), rtol=1e-4,
                                   atol=1e-4)
    out = chipforge.compress("superbnn", str(path), (d.x_train, d.y_train), epochs=6,
                             progress=False)
    assert out.meta["provenance"]["result"]["layers"] == "64-32-32-10"
    for node in out.weighted_nodes():
        assert set(np.unique(node.params["weight"])) <= {-1.0, 1.0}
    r = chipforge.simulate(out, accelerator="superbnn", data=(d.x_test, d.y_test), cost=False)
    # the signs started inside the clamp train (from +-1 they stayed near chance, 0.1)
    assert r.accuracy_hardware > 0.3


class _Shift(torch.nn.Module):
    def forward(self, x):
        return x - 0.47


class _WhereSign(torch.nn.Module):
    """The other way users binarize: Where(x >= 0, 1, -1)."""

    def forward(self, x):
        return torch.where(x >= 0, 1.0, -1.0)


def test_superbnn_takes_a_bnn_with_its_own_input_encoder(tmp_path):
    """A BNN that binarizes its own inputs (flatten, x - 0.47, sign): the encoder's
    threshold becomes the AQFP encoder's, the rest trains as the MLP."""
    from chipforge.zoo.data import digits

    torch.manual_seed(0)
    hidden, out_layer = torch.nn.Linear(64, 32), torch.nn.Linear(32, 10)
    with torch.no_grad():
        for fc in (hidden, out_layer):
            fc.weight.copy_(torch.sign(fc.weight))
    net = torch.nn.Sequential(torch.nn.Flatten(), _Shift(), _WhereSign(), hidden,
                              torch.nn.BatchNorm1d(32), _WhereSign(), out_layer).eval()
    path = tmp_path / "bnn-encoder.onnx"
    nets.export_onnx(net, (1, 8, 8), path)
    d = digits(8)
    out = chipforge.compress("superbnn", str(path), (d.x_train, d.y_train), epochs=6,
                             progress=False)
    result = out.meta["provenance"]["result"]
    assert result["layers"] == "64-32-10"
    assert result["input_threshold (the model's own sign encoder)"] == pytest.approx(0.47)
    r = chipforge.simulate(out, accelerator="superbnn", data=(d.x_test, d.y_test), cost=False)
    assert r.accuracy_hardware > 0.3


# -- defaults on shallow and deep models ---------------------------------------------------

def test_heatvit_default_selector_blocks_follow_the_depth():
    from chipforge.mappings.heatvit_selectors import default_selector_blocks

    assert default_selector_blocks(2, 2) == (1,)     # one selector fits a 2-block ViT
    assert default_selector_blocks(3, 2) == (1, 2)
    assert default_selector_blocks(6, 2) == (1, 2)   # the measured 6-block placement
    assert default_selector_blocks(12, 2) == (2, 4)
    assert default_selector_blocks(12, 3) == (2, 4, 6)
    assert default_selector_blocks(1, 2) == ()


@pytest.mark.parametrize("depth, blocks, keep", [(2, [1], [0.7]), (12, [2, 4], [0.7, 0.5])])
def test_heatvit_defaults_work_on_a_2_and_a_12_block_vit(depth, blocks, keep):
    from heatvit_user_models import TimmStyleVit

    from chipforge.importers.torch import from_torch
    from chipforge.zoo.data import digits

    d = digits(8)
    torch.manual_seed(0)
    net = TimmStyleVit(dim=16, heads=1, depth=depth).eval()
    graph = from_torch(net, torch.tensor(d.x_test[:2]))
    out = chipforge.compress("heatvit", graph, (d.x_train[:200], d.y_train[:200]),
                             progress=False, epochs=1, warmup_epochs=0)
    result = out.meta["provenance"]["result"]
    assert result["selector_blocks"] == blocks
    assert [n.attrs["keep_ratio"] for n in out.nodes if n.op is Op.TOKEN_SELECT] == keep


@pytest.mark.parametrize("depth", [2, 12])
def test_cnn_methods_defaults_work_on_2_and_12_layer_models(depth, tmp_path):
    """forms, isqed and pim-qat with their default options (epochs cut to 1 for time) on a
    2- and a 12-layer residual CNN: every layer is pruned / quantized as the defaults say."""
    from chipforge.zoo.data import digits

    torch.manual_seed(0)
    d = digits(8)
    x = d.x_train[:150].reshape(-1, 1, 8, 8).astype(np.float32)
    y = d.y_train[:150]
    net = _deep_cnn(depth)
    nets.train_briefly(net, x, y, epochs=1)
    path = tmp_path / "deep.onnx"
    nets.export_onnx(net, (1, 8, 8), path)
    forms = chipforge.compress("forms", str(path), (x, y), progress=False, prune_epochs=1,
                               polarize_epochs=1, finetune_epochs=0, qat_epochs=1)
    assert len(forms.weighted_nodes()) == depth
    _check_polarized(forms)
    assert min(float((n.params["weight"] == 0).mean()) for n in forms.weighted_nodes()) > 0.6
    isqed = chipforge.compress("isqed", str(path), (x, y), progress=False, prune_epochs=1,
                               finetune_epochs=0, qat_epochs=1, fault_trials=1,
                               ratios=(0.5,))
    assert all(n.quantized for n in isqed.weighted_nodes())
    pim = chipforge.compress("pim-qat", str(path), (x, y), progress=False, qat_epochs=1,
                             epochs=1)
    assert all("pim_gain" in n.attrs for n in pim.weighted_nodes())
    # each result is a valid IR that its family runs
    test = (d.x_test[:20].reshape(-1, 1, 8, 8), d.y_test[:20])
    for graph, accel in ((forms, "forms8"), (isqed, "isqed-differential"), (pim, "cap-ram")):
        r = chipforge.simulate(graph, accelerator=accel, data=test, progress=False,
                               cycle_samples=4)
        assert r.samples == 20 and 0.0 <= r.accuracy_hardware <= 1.0


def test_graph_passes_prune_and_polarize_a_residual_graph(tmp_path):
    """``chipforge.mappings.passes`` (the zoo's graph-level passes) on a non-chain graph:
    same nodes and wiring back, the pruning and the polarization held."""
    from chipforge.mappings import passes
    from chipforge.mappings.admm import AdmmConfig
    from chipforge.mappings.polarize import PolarizeConfig
    from chipforge.zoo.data import digits

    torch.manual_seed(0)
    net = _deep_cnn(4).eval()
    path = nets.export_onnx(net, (1, 8, 8), tmp_path / "res.onnx")
    graph = load_model(str(path))
    assert any(n.op is Op.ADD for n in graph.nodes)
    d = digits(8)
    pruned = passes.prune(graph, 0.5, d, AdmmConfig(epochs=1, finetune_epochs=0))
    assert _wiring(pruned) == _wiring(graph)
    assert all((n.params["weight"] == 0).mean() >= 0.5 for n in pruned.weighted_nodes())
    polarized = passes.polarize(pruned, d, PolarizeConfig(
        admm=AdmmConfig(epochs=1, finetune_epochs=0)))
    _check_polarized(polarized)


def _deep_cnn(depth: int):
    """``depth`` weighted layers: a stem conv, residual 3x3 conv pairs, a linear head."""
    nn = torch.nn

    class Deep(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(1, 4, 3, padding=1)
            self.body = nn.ModuleList(nn.Conv2d(4, 4, 3, padding=1) for _ in range(depth - 2))
            self.fc = nn.Linear(4, 10)

        def forward(self, x):
            x = torch.relu(self.stem(x))
            for i in range(0, len(self.body), 2):
                y = torch.relu(self.body[i](x))
                if i + 1 < len(self.body):
                    y = self.body[i + 1](y)
                x = torch.relu(x + y)
            return self.fc(x.mean((2, 3)))

    return Deep()


# -- progress, help, checkpoints, class balance --------------------------------------------

def test_progress_off_a_terminal_prints_the_estimate_and_a_line_per_stage(
        tiny_resnet, mnist16, capsys):
    (x, y), _ = mnist16
    chipforge.compress("forms", str(tiny_resnet), (x, y), **TINY_FORMS)   # progress=None
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("forms: estimated run time about ")
    assert "8 epochs (prune + polarize + QAT) over 400 training images" in err[0]
    for stage, epochs in (("admm prune", 3), ("admm polarize", 4), ("quantize", 1)):
        assert f"forms: stage {stage!r} started ({epochs} epochs)" in err
        assert any(e.startswith(f"forms: stage {stage!r} done in ") for e in err)
    chipforge.compress("forms", str(tiny_resnet), (x, y), progress=False, **TINY_FORMS)
    assert capsys.readouterr().err == ""


def test_compress_method_help_lists_that_methods_options_only(capsys):
    with pytest.raises(SystemExit):
        main(["compress", "--help"])
    top = capsys.readouterr().out
    described = "".join(top.split("positional arguments")[0].split())   # unwrapped
    for method in ("forms", "isqed", "pim-qat", "superbnn", "heatvit"):
        assert f"{method}(" in described
    with pytest.raises(SystemExit):
        main(["compress", "forms", "--help"])
    forms = capsys.readouterr().out
    assert "--fragment-size" in forms and "--progress, --no-progress" in forms
    for other in ("--input-threshold", "--fault-rate", "--b-pim", "--keep"):
        assert other not in forms
    with pytest.raises(SystemExit):
        main(["compress", "superbnn", "--help"])
    superbnn = capsys.readouterr().out
    assert "--input-threshold" in superbnn and "--fragment-size" not in superbnn
    assert "heatvit" in main.__globals__["COMMANDS"]["compress"][0]


def test_an_edited_checkpoint_stage_is_refused_naming_the_stage(tiny_resnet, mnist16,
                                                                tmp_path, monkeypatch, capsys):
    from chipforge import compress_methods

    (x, y), _ = mnist16
    data = _npz(tmp_path, x, y)
    out = tmp_path / "m.npz"
    args = ["compress", "forms", str(tiny_resnet), "--data", str(data), "--out", str(out),
            "--no-progress", *_flags(TINY_FORMS)]

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(compress_methods, "_qat_stage", interrupted)
    assert main(args) == 130                      # interrupted in the last stage
    monkeypatch.undo()
    ckpt = tmp_path / "m.npz.ckpt"
    run = json.loads((ckpt / "run.json").read_text())
    assert set(run["stages"]) == {"prune", "polarize"}
    # edit one weight of the pruned model, as a careless (or hostile) user would
    pruned = load_graph(ckpt / "prune.graph.npz")
    pruned.weighted_nodes()[0].params["weight"][0, 0, 0, 0] += 1.0
    save_graph(pruned, ckpt / "prune.graph.npz")
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "checkpoint stage 'prune'" in err and "sha256 differs" in err
    assert not out.exists()
    # an untouched checkpoint resumes
    (ckpt / "prune.graph.npz").unlink()
    assert main(args) == 0 and out.exists() and not ckpt.exists()


def test_array_stages_and_external_stage_files_are_fingerprinted_too(tmp_path):
    """The ``arrays`` stages (pim-qat, superbnn) and files a method writes itself
    (heatvit's per-epoch state, via ``record_file``) are checked the same way."""
    from chipforge.compress import Checkpoint

    fingerprint = {"method": "superbnn", "seed": 0}
    first = Checkpoint(tmp_path / "ck", fingerprint)
    first.arrays("rbnn", lambda: {"w": np.arange(4.0)})
    state = tmp_path / "ck" / "selectors.epoch.npz"
    np.savez(state, w=np.ones(3))
    first.record_file("selectors-epoch", state)
    again = Checkpoint(tmp_path / "ck", fingerprint)
    np.testing.assert_array_equal(again.arrays("rbnn", lambda: {})["w"], np.arange(4.0))
    again.verify_file("selectors-epoch", state)            # untouched: accepted
    np.savez(tmp_path / "ck" / "rbnn.arrays.npz", w=np.zeros(4))
    np.savez(state, w=np.zeros(3))
    third = Checkpoint(tmp_path / "ck", fingerprint)
    with pytest.raises(ValueError, match="checkpoint stage 'rbnn' .*sha256 differs"):
        third.arrays("rbnn", lambda: {})
    with pytest.raises(ValueError, match="checkpoint stage 'selectors-epoch'"):
        third.verify_file("selectors-epoch", state)
    # a stage file that run.json does not know (copied in) is refused as well
    np.savez(tmp_path / "ck" / "digital-qat.arrays.npz", w=np.zeros(1))
    with pytest.raises(ValueError, match="'digital-qat' .*sha256 not recorded"):
        third.arrays("digital-qat", lambda: {})


def test_one_class_data_is_refused_and_a_rare_class_is_warned(tiny_resnet, mnist16,
                                                              tmp_path, capsys):
    (x, y), _ = mnist16
    out = tmp_path / "m.npz"
    data = _npz(tmp_path, x, np.zeros_like(y))
    assert main(["compress", "forms", str(tiny_resnet), "--data", str(data), "--out",
                 str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "all 500 training labels are class 0" in err and "at least two classes" in err
    assert not out.exists() and not (tmp_path / "m.npz.ckpt").exists()

    from chipforge.compress import check_class_balance

    labels = np.r_[np.zeros(300, int), np.ones(300, int), np.full(3, 2)]
    check_class_balance(labels, "train.npz")
    warned = capsys.readouterr().err.strip().splitlines()
    assert len(warned) == 1 and warned[0].startswith("warning: train.npz: class 2 has 3 of "
                                                     "603 training samples")
    check_class_balance(np.r_[np.zeros(30, int), np.ones(30, int), 2], "small")
    assert capsys.readouterr().err == ""   # a small set: no class has many


# -- the must-show: a CIFAR-stem ResNet-18 -------------------------------------------------

RESNET18_TRAIN = 400
"""Training images of the ResNet-18 must-show (80 of them are the validation split)."""
RESNET18_TEST = 50
"""Test images simulated on forms8 and isqed-differential."""


@pytest.mark.slow
def test_resnet18_through_forms_and_isqed_on_cifar_shaped_mnist(tmp_path):
    """The issue's must-show: a CIFAR-stem ResNet-18 in plain torch (3x3 stem, no max pool,
    4 stages of BasicBlocks with 1x1-conv shortcuts, global average pooling, fc) exported to
    ONNX at batch 1, through ``compress forms`` and ``compress isqed`` on real MNIST padded
    to 3x32x32 (few epochs, few hundred images), simulated on forms8 and isqed-differential.
    """
    times = resnet18_must_show(tmp_path, RESNET18_TRAIN, RESNET18_TEST)
    print(f"ResNet-18 seconds ({RESNET18_TRAIN} training images): {times}")


def resnet18_must_show(folder: Path, n_train: int, n_test: int) -> dict[str, float]:
    """The must-show at a given size; returns the measured wall seconds of each step."""
    times = {}
    start = time.perf_counter()
    x, y = nets.mnist_cifar_shaped(n_train, 32)
    test = nets.mnist_cifar_shaped(n_test, 32, split="test")
    net = nets.resnet18()
    nets.train_briefly(net, x, y, epochs=2, lr=1e-2)
    path = nets.export_onnx(net, (3, 32, 32), folder / "resnet18.onnx")
    source = load_model(str(path))
    assert len(source.weighted_nodes()) == 21             # 20 convs (3 of them 1x1) + fc
    assert sum(n.op is Op.ADD for n in source.nodes) == 8  # 8 BasicBlocks
    assert sum(n.attrs.get("kernel") is None and n.op is Op.CONV2D
               and n.params["weight"].shape[-1] == 1 for n in source.nodes) == 3
    train = _npz(folder, x, y)
    times["user training (2 epochs) + export"] = time.perf_counter() - start
    for method, accel, flags in (
            ("forms", "forms8", _flags(TINY_FORMS)),
            # threshold 0.5: a step is accepted unless the fault-injected accuracy drops by
            # 50 points, so one trial, not one per layer-size block (minutes each here)
            ("isqed", "isqed-differential", ["--ratios", "0.5", "--prune-epochs", "1",
                                             "--finetune-epochs", "1", "--qat-epochs", "1",
                                             "--fault-trials", "1", "--threshold", "0.5"])):
        out = folder / f"resnet18-{method}.npz"
        start = time.perf_counter()
        assert main(["compress", method, str(path), "--data", str(train), "--out", str(out),
                     *flags]) == 0
        times[f"compress {method}"] = time.perf_counter() - start
        print(times, flush=True)
        graph = load_graph(out)
        assert _wiring(graph) == _wiring(source)
        if method == "forms":
            _check_polarized(graph)
        start = time.perf_counter()
        r = chipforge.simulate(graph, accelerator=accel, data=test, progress=False,
                               cycle_samples=4)
        times[f"simulate {accel} ({n_test} images)"] = time.perf_counter() - start
        assert r.agreement >= 0.9, (method, r.agreement)
        times[f"{method} accuracy ideal / hardware"] = (r.accuracy_ideal, r.accuracy_hardware)
        print(times, flush=True)
    return times


@pytest.mark.parametrize("which", ["mobilenet_v3_small", "efficientnet_b0"])
def test_graph_module_runs_mobile_cnns_as_the_executor_does(which, tmp_path):
    """compress trains through the graph module: squeeze-and-excitation's activation
    product, Sigmoid / HardSigmoid / HardSwish / SiLU and MaxPool ceil_mode must compute in
    torch what the executor computes (reduced width, random weights, 32x32)."""
    mobile = importlib.import_module("mobile_models")
    torch.manual_seed(0)
    model = getattr(mobile, which)(width=0.25, num_classes=10).eval()
    path = tmp_path / f"{which}.onnx"
    torch.onnx.export(model, (torch.zeros(1, 3, 32, 32),), str(path), dynamo=False)
    graph = load_model(str(path))
    ops = {n.op for n in graph.nodes}
    assert Op.MUL in ops and ops & {Op.HARDSWISH, Op.SILU}
    module = graph_module(graph).double().eval()
    x = np.random.default_rng(0).random((4, 3, 32, 32))
    with torch.no_grad():
        ours = module(torch.from_numpy(x)).numpy()
        theirs = model.double()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ours, run_graph(graph, x, quantized=False), rtol=1e-6,
                               atol=1e-9)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-7)


def test_graph_module_maxpool_ceil_mode():
    from chipforge.sim.graph import Graph, Node

    graph = Graph("pool", (1, 7, 7), [Node(Op.MAXPOOL2D, "p", ("input",),
                                           {"kernel": 2, "stride": 2, "ceil_mode": True}),
                                      Node(Op.FLATTEN, "f", ("p",))])
    x = np.random.default_rng(1).random((2, 1, 7, 7))
    with torch.no_grad():
        ours = graph_module(graph).double()(torch.from_numpy(x)).numpy()
    assert ours.shape == (2, 16)                      # 4x4 with ceil_mode, 3x3 without
    np.testing.assert_array_equal(ours, run_graph(graph, x, quantized=False))
