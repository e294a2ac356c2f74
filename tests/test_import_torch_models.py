"""The networks users bring (chipforge.zoo.torch_models), exported the two ways PyTorch
offers (``torch.onnx.export`` defaults = the dynamo exporter, and ``dynamo=False``), import
and equal PyTorch's output; reduced widths here, full sizes under ``-m slow``."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from chipforge.importers.onnx import OnnxImportError, load_onnx
from chipforge.sim.executor import run_graph
from chipforge.zoo import torch_models as tm

sys.path.insert(0, str(Path(__file__).parent))
import mobile_models as mm  # noqa: E402

RTOL, ATOL = 1e-4, 1e-5


trained_like = mm.randomize_batchnorm
export = mm.export


def check(model, shape, dynamo, batch=2):
    torch.manual_seed(1)
    x = torch.randn(batch, *shape)
    with torch.no_grad():
        want = model(x).double().numpy()
    graph = load_onnx(export(model, x, dynamo))
    got = run_graph(graph, x.double().numpy(), quantized=False)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    # the IR is batch-independent: another batch size runs too
    x3 = torch.randn(3, *shape)
    with torch.no_grad():
        np.testing.assert_allclose(run_graph(graph, x3.double().numpy(), quantized=False),
                                   model(x3).double().numpy(), rtol=RTOL, atol=ATOL)
    return graph


SMALL = {
    "resnet18-cifar": (lambda: tm.resnet18(num_classes=10, width=8, stem="cifar"), (3, 16, 16)),
    "resnet18-imagenet": (lambda: tm.resnet18(num_classes=10, width=8), (3, 32, 32)),
    "vgg11_bn": (lambda: tm.vgg11_bn(num_classes=10, width_div=16, image_size=32, hidden=32),
                 (3, 32, 32)),
    "mobilenet_v2": (lambda: tm.mobilenet_v2(num_classes=10, width_mult=0.25, first_stride=1,
                                             last_channel=64), (3, 16, 16)),
    "deit_tiny": (lambda: tm.deit_tiny(image_size=16, patch=4, dim=24, depth=2, heads=3,
                                       num_classes=10), (3, 16, 16)),
}
ENCODER = dict(image_size=16, patch=4, dim=24, depth=2, heads=3, num_classes=10)


# The default (dynamo) exporter takes 5-30 s a model on this machine: the fast tests export
# one of each family with it (resnet18-imagenet's only difference, the 7x7 stem and max
# pool, runs with dynamo=False), the rest under -m slow.
FAST = [(n, False) for n in SMALL] + [(n, True) for n in SMALL if n != "resnet18-imagenet"]


@pytest.mark.parametrize("name,dynamo", FAST + [
    pytest.param("resnet18-imagenet", True, marks=pytest.mark.slow)],
    ids=lambda v: v if isinstance(v, str) else ("default" if v else "dynamo=False"))
def test_reduced_zoo_network_imports_and_equals_torch(name, dynamo):
    make, shape = SMALL[name]
    torch.manual_seed(0)
    # deit: dynamo bakes the example's batch size into its shapes; a batch of 1 must not
    # merge the batch with another axis of size 1
    graph = check(trained_like(make()), shape, dynamo, batch=1 if name == "deit_tiny" else 2)
    if name == "mobilenet_v2":
        assert any(n.attrs.get("groups", 1) > 1 for n in graph.weighted_nodes())


@pytest.mark.parametrize("batch_first,norm_first,dynamo", [
    (True, True, False), (False, False, False), (True, False, False), (False, True, False),
    (True, True, True), pytest.param(False, False, True, marks=pytest.mark.slow)])
def test_transformer_encoder_layer_vit_imports_and_equals_torch(batch_first, norm_first,
                                                                dynamo):
    torch.manual_seed(0)
    model = tm.vit_encoder(**ENCODER, batch_first=batch_first, norm_first=norm_first).eval()
    check(model, (3, 16, 16), dynamo)


def test_onnxscript_is_installed_so_the_default_exporter_works():
    import onnxscript  # noqa: F401  (torch.onnx.export's default path imports it)


@pytest.mark.slow
@pytest.mark.parametrize("dynamo", [False, True], ids=["dynamo=False", "default"])
@pytest.mark.parametrize("name", ["resnet18-cifar", "resnet18-imagenet", "vgg11_bn",
                                  "mobilenet_v2", "deit_tiny", "vit_encoder"])
def test_full_size_network_imports_and_equals_torch(name, dynamo):
    torch.manual_seed(0)
    make, shape = {
        "resnet18-cifar": (lambda: tm.resnet18(num_classes=10, stem="cifar"), (3, 32, 32)),
        "resnet18-imagenet": (tm.resnet18, (3, 224, 224)),
        "vgg11_bn": (tm.vgg11_bn, (3, 224, 224)),
        "mobilenet_v2": (tm.mobilenet_v2, (3, 224, 224)),
        "deit_tiny": (tm.deit_tiny, (3, 224, 224)),
        "vit_encoder": (tm.vit_encoder, (3, 224, 224)),
    }[name]
    check(trained_like(make()), shape, dynamo)


def test_nan_weights_are_refused_naming_the_tensor():
    model = tm.resnet18(num_classes=10, width=8, stem="cifar").eval()
    with torch.no_grad():
        model.fc.weight[0, 0] = float("nan")
    x = torch.randn(2, 3, 16, 16)
    with pytest.raises(OnnxImportError, match=r"weights must be finite numbers; not finite: "
                                              r"'fc.weight' \(1 NaN, 0 infinite of 640\)"):
        load_onnx(export(model, x, dynamo=False))


@pytest.mark.slow
@pytest.mark.parametrize("accelerator", ["isaac", "isqed-differential"])
def test_mobilenet_v2_runs_on_reram_presets(accelerator, tmp_path, capsys):
    """chipforge simulate of a (reduced, briefly trained) MobileNetV2 on digits: depthwise
    layers placed; the ideal hardware gives the quantized model's predictions."""
    from chipforge.cli import main
    from chipforge.importers.torch import torch_to_onnx
    from chipforge.zoo.data import digits

    torch.manual_seed(0)
    data = digits(16)
    model = tm.mobilenet_v2(num_classes=10, width_mult=0.25, first_stride=1, in_channels=1,
                            last_channel=64)
    x, y = torch.tensor(data.x_train, dtype=torch.float32), torch.tensor(data.y_train)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(3):
        for i in range(0, len(x), 64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[i:i + 64]), y[i:i + 64]).backward()
            opt.step()
    path = tmp_path / "mnv2.onnx"
    path.write_bytes(torch_to_onnx(model.eval(), x[:2]))
    assert main(["simulate", str(path), "--accelerator", accelerator, "--samples", "60",
                 "--out", str(tmp_path / "report")]) == 0
    out = capsys.readouterr().out
    assert "100.0 % same predictions" in out
    assert "conv.1.conv.1.0.Conv" in out and "x1x3x3" in out      # a depthwise layer
