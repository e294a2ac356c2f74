"""Mobile CNNs and ViTs as users export them: the element-wise units of MobileNetV3 and
EfficientNet (Sigmoid, HardSigmoid, HardSwish, SiLU, squeeze-and-excitation's x * gate),
MaxPool ceil_mode (SqueezeNet), batch-1 exports of TransformerEncoderLayer ViTs, and
timm-style ViTs with scaled_dot_product_attention and Conv2d / unfold / slice patches,
through both exporters (``torch.onnx.export`` defaults = dynamo, and ``dynamo=False``),
then on isaac, the PIM macro and heatvit."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from chipforge.importers.onnx import OnnxImportError, load_onnx
from chipforge.mainjob import run_main_job
from chipforge.mappings.quantize import QuantizeConfig, quantize_graph
from chipforge.sim.cycle.components import Category
from chipforge.sim.cycle.elementwise import ELEMENTWISE_PJ_PER_VALUE
from chipforge.sim.cycle.report import cycle_reports
from chipforge.sim.executor import run_graph
from chipforge.sim.graph import Op
from chipforge.sim.vit_graph import graph_to_vit
from chipforge.zoo import torch_models as tm

sys.path.insert(0, str(Path(__file__).parent))
import mobile_models as mm  # noqa: E402

RTOL, ATOL = 1e-4, 1e-5
EXPORTERS = [pytest.param(False, id="dynamo=False"), pytest.param(True, id="default")]


export = mm.export


def imports_equal(model, shape, dynamo, *, batch=1, inputs=2):
    """Export at ``batch``, import, and compare with torch on ``inputs`` random batches of
    other sizes (the IR does not depend on the export's batch)."""
    model.eval()
    torch.manual_seed(1)
    graph = load_onnx(export(model, torch.randn(batch, *shape), dynamo))
    for k in range(inputs):
        x = torch.randn(2 + k, *shape)
        with torch.no_grad():
            want = model(x).double().numpy()
        np.testing.assert_allclose(run_graph(graph, x.double().numpy(), quantized=False),
                                   want, rtol=RTOL, atol=ATOL)
    return graph


# -- each new op in isolation ------------------------------------------------------------
class Then1x1(nn.Module):
    """``f(x)`` then a 1x1 convolution, so the quantized path quantizes f's output."""

    def __init__(self, f, channels=4):
        super().__init__()
        self.f, self.conv = f, nn.Conv2d(channels, 3, 1)

    def forward(self, x):
        return self.conv(self.f(x))


class SqueezeGate(nn.Module):
    """Squeeze-and-excitation's product of two activations, broadcast over H, W."""

    def __init__(self, gate):
        super().__init__()
        self.gate = gate

    def forward(self, x):
        return x * self.gate(x.mean((2, 3), keepdim=True) * 2.0)


class SiluSpelledOut(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(x)


OPS = {
    "sigmoid": (nn.Sigmoid, Op.SIGMOID),
    "hardsigmoid": (nn.Hardsigmoid, Op.HARDSIGMOID),
    "hardswish": (nn.Hardswish, Op.HARDSWISH),
    "silu": (nn.SiLU, Op.SILU),
    "silu-spelled-out": (SiluSpelledOut, Op.SILU),
    "se-hardsigmoid": (lambda: SqueezeGate(nn.Hardsigmoid()), Op.MUL),
    "se-sigmoid": (lambda: SqueezeGate(nn.Sigmoid()), Op.MUL),
}


@pytest.mark.parametrize("dynamo", EXPORTERS)
@pytest.mark.parametrize("name", list(OPS))
def test_new_op_imports_equal_to_torch_and_quantizes_within_a_step(name, dynamo):
    make, op = OPS[name]
    torch.manual_seed(0)
    model = Then1x1(make()).eval()
    shape = (4, 5, 5)
    graph = imports_equal(model, shape, dynamo)
    assert op in {n.op for n in graph.nodes}, [n.op for n in graph.nodes]
    # quantized path: the 1x1 conv's input is quantized to 8 bits (max calibration, no
    # clipping), so each output is off by at most half a step times the weights' L1 norm
    x = np.random.default_rng(2).uniform(-4, 4, (16, *shape))   # HardSwish's bends at +-3
    q = quantize_graph(graph, x, QuantizeConfig(calib_percentile=100.0))
    conv = q.weighted_nodes()[0]
    exact = run_graph(q, x, quantized=False)
    got = run_graph(q, x, quantized=True)
    bound = 0.5 * conv.attrs["act_scale"] * np.abs(conv.params["weight"]).reshape(3, -1).sum(1)
    err = np.abs(got - exact).max(axis=(0, 2, 3))
    assert (err <= bound * (1 + 1e-9)).all(), (err, bound)
    assert err.max() > 0          # the quantizer did act


@pytest.mark.parametrize("dynamo", EXPORTERS)
@pytest.mark.parametrize("kernel,stride,padding,size", [(3, 2, 0, 7), (2, 2, 0, 9),
                                                        (3, 2, 1, 8), (3, 3, 0, 10)])
def test_maxpool_ceil_mode_on_odd_sizes_equals_torch(kernel, stride, padding, size, dynamo):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 2, 1), nn.MaxPool2d(kernel, stride, padding,
                                                           ceil_mode=True)).eval()
    graph = imports_equal(model, (2, size, size), dynamo)
    pool = next(n for n in graph.nodes if n.op is Op.MAXPOOL2D)
    assert pool.attrs.get("ceil_mode") is True
    floor = (size + 2 * padding - kernel) // stride + 1
    assert run_graph(graph, np.zeros((1, 2, size, size)), quantized=False).shape[-1] == \
        floor + (1 if (size + 2 * padding - kernel) % stride else 0)


def test_mul_of_activations_that_do_not_broadcast_is_refused_in_one_line():
    from onnx import TensorProto, helper, numpy_helper

    # x (2, 4, 4) times x[:, :2] (2, 2, 4) per sample: no broadcast (torch cannot export it)
    consts = [numpy_helper.from_array(np.asarray(v, np.int64), n)
              for n, v in (("starts", [0]), ("ends", [2]), ("axes", [2]))]
    nodes = [helper.make_node("Slice", ["x", "starts", "ends", "axes"], ["part"], name="cut"),
             helper.make_node("Mul", ["x", "part"], ["y"], name="product")]
    model = helper.make_model(helper.make_graph(
        nodes, "bad", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2, 4, 4])], consts),
        opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(OnnxImportError, match=r"node 'product' \(Mul\): multiplies activations "
                                              r"of shapes \(2, 4, 4\) and \(2, 2, 4\) per "
                                              r"sample, which do not broadcast"):
        load_onnx(model.SerializeToString())


# -- MobileNetV3-small and EfficientNet-B0 -------------------------------------------------
CNNS = {
    "mobilenet_v3_small": lambda **kw: mm.mobilenet_v3_small(num_classes=10, **kw),
    "efficientnet_b0": lambda **kw: mm.efficientnet_b0(num_classes=10, **kw),
    "squeezenet1_1": lambda **kw: mm.SqueezeNet11(num_classes=10, **kw),
}


@pytest.mark.parametrize("dynamo", EXPORTERS)
@pytest.mark.parametrize("name", list(CNNS))
def test_mobile_cnn_imports_equal_to_torch(name, dynamo):
    torch.manual_seed(0)
    model = mm.randomize_batchnorm(CNNS[name]())
    graph = imports_equal(model, (3, 64, 64), dynamo)
    ops = {n.op for n in graph.nodes}
    if name == "squeezenet1_1":    # its pools are ceil_mode
        assert sum(n.attrs.get("ceil_mode", False) for n in graph.nodes) == 3
        return
    want = {Op.HARDSWISH, Op.HARDSIGMOID, Op.MUL} if name.startswith("mobilenet") else {
        Op.SILU, Op.SIGMOID, Op.MUL}
    assert want <= ops
    assert any(n.attrs.get("groups", 1) > 1 for n in graph.weighted_nodes())


def _isaac(graph, images=2, seed=0):
    x = np.random.default_rng(seed).standard_normal((images, *graph.input_shape))
    y = run_graph(graph, x, quantized=False).argmax(1)
    return run_main_job(graph, accelerator="isaac", data=(x, y), samples=images,
                        progress=False, cycle_samples=images)


def _check_isaac_run(job, graph):
    r = job.simulation
    assert r.accuracy_float == 1.0       # labels are the float predictions
    # ideal devices: the crossbars compute the quantized model exactly
    assert r.accuracy_hardware == r.accuracy_ideal
    elementwise = [n for n in graph.nodes if n.op in (Op.SIGMOID, Op.HARDSIGMOID,
                                                      Op.HARDSWISH, Op.SILU, Op.MUL)]
    names = {la.name for la in job.cost.layers}
    assert {n.name for n in elementwise} <= names    # every element-wise unit is costed


@pytest.mark.parametrize("name", list(CNNS))
def test_reduced_mobile_cnn_runs_on_isaac(name):
    # every new op (and SqueezeNet's ceil_mode pools) at a reduced width (and depth)
    torch.manual_seed(0)
    kw = {"width": 0.25} | ({"depth": 0.34} if name == "efficientnet_b0" else {})
    model = mm.randomize_batchnorm(CNNS[name](**kw))
    graph = load_onnx(export(model, torch.randn(1, 3, 64, 64), False))
    _check_isaac_run(_isaac(graph), graph)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CNNS))
def test_full_mobile_cnn_runs_on_isaac(name):
    # measured on the 2-core dev machine (shared): MobileNetV3-small 37 s, EfficientNet-B0
    # 383 s for 4 images (SqueezeNet 1.1 is fast, but rides along)
    torch.manual_seed(0)
    model = mm.randomize_batchnorm(CNNS[name]())
    graph = load_onnx(export(model, torch.randn(1, 3, 64, 64), True))
    _check_isaac_run(_isaac(graph), graph)


def test_cycle_model_counts_one_digital_op_per_value_of_each_elementwise_unit():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 8, 3, padding=1)
    base = nn.Sequential(conv, nn.ReLU(), nn.Conv2d(8, 4, 1)).eval()
    swish = nn.Sequential(conv, nn.Hardswish(), nn.Conv2d(8, 4, 1)).eval()
    swish[2].load_state_dict(base[2].state_dict())
    x = np.random.default_rng(0).random((2, 3, 6, 6))
    reports = []
    for m in (base, swish):
        g = quantize_graph(load_onnx(export(m, torch.randn(1, 3, 6, 6), False)), x)
        reports.append(cycle_reports(g, x, ["isaac"])[0])
    relu, hsw = reports
    assert [(a.op, a.values) for a in hsw.elementwise] == [("hardswish", 8 * 6 * 6)]
    assert relu.elementwise == ()
    # the units' energy and time are in the model totals (and nowhere else)
    without = dataclasses.replace(hsw, elementwise=())
    digital = hsw.energy_pj[Category.DIGITAL] - without.energy_pj[Category.DIGITAL]
    assert digital == pytest.approx(8 * 6 * 6 * ELEMENTWISE_PJ_PER_VALUE)
    assert hsw.energy_per_frame_j - without.energy_per_frame_j == pytest.approx(digital * 1e-12)
    assert hsw.latency_ns > without.latency_ns


# -- ViTs ----------------------------------------------------------------------------------
ENCODER = dict(image_size=16, patch=4, dim=24, depth=2, heads=3, num_classes=10)


@pytest.mark.parametrize("dynamo", EXPORTERS)
@pytest.mark.parametrize("batch_first,norm_first", [(True, True), (False, True),
                                                    (False, False)])
def test_transformer_encoder_layer_vit_exported_at_batch_1_imports(batch_first, norm_first,
                                                                   dynamo):
    torch.manual_seed(0)
    model = tm.vit_encoder(**ENCODER, batch_first=batch_first, norm_first=norm_first)
    graph = imports_equal(model, (3, 16, 16), dynamo, batch=1)
    if norm_first:        # the engine runs pre-norm blocks (checked against the graph)
        assert graph_to_vit(graph).config.depth == 2


@pytest.mark.parametrize("dynamo", EXPORTERS)
@pytest.mark.parametrize("patches", ["conv", "unfold", "slice", "torchvision"])
def test_sdpa_vit_imports_equal_to_torch_and_lowers_to_the_heatvit_engine(patches, dynamo):
    # timm-style (SDPA) with three kinds of patches, and torchvision's layout (conv_proj,
    # nn.MultiheadAttention, position embedding added in the encoder)
    torch.manual_seed(0)
    model = mm.TorchvisionVit() if patches == "torchvision" else mm.SdpaVit(patches=patches)
    graph = imports_equal(model, (3, 32, 32), dynamo)
    vit = graph_to_vit(graph)   # checks the engine's float run equals the graph's
    c = vit.config
    assert (c.patch_size, c.dim, c.heads, c.depth, c.num_patches) == (8, 48, 3, 2, 16)


def test_sdpa_vit_runs_on_heatvit():
    torch.manual_seed(0)
    model = mm.SdpaVit(patches="conv").eval()
    graph = load_onnx(export(model, torch.randn(1, 3, 32, 32), True))
    x = np.random.default_rng(0).random((4, 3, 32, 32))
    y = run_graph(graph, x, quantized=False).argmax(1)
    job = run_main_job(graph, accelerator="heatvit", data=(x, y), samples=4, progress=False,
                       cycle_samples=2)
    r = job.simulation
    assert r.accuracy_float == 1.0
    assert r.metrics["blocks"] == 2 and list(r.metrics["tokens_per_block"]) == [17.0, 17.0]
    assert job.cost.latency_s > 0


def test_mobile_ops_write_to_onnx_and_onnxruntime_agrees():
    import onnxruntime as ort

    from chipforge.importers.onnx_export import to_onnx

    torch.manual_seed(0)
    model = mm.randomize_batchnorm(mm.mobilenet_v3_small(num_classes=10, width=0.25))
    model.features.append(nn.MaxPool2d(3, 2, ceil_mode=True))    # 2x2 -> 1x1, ceil_mode
    model.features.append(mm.SqueezeExcitation(144, 8, nn.SiLU, nn.Sigmoid))
    graph = load_onnx(export(model, torch.randn(1, 3, 64, 64), False))
    assert {Op.SILU, Op.SIGMOID, Op.HARDSIGMOID, Op.HARDSWISH, Op.MUL} <= {
        n.op for n in graph.nodes}
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64))
    onnx_model = to_onnx(graph, quantized=False)
    session = ort.InferenceSession(onnx_model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": x.astype(np.float32)})[0]
    want = run_graph(graph, x, quantized=False)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    again = load_onnx(onnx_model)
    assert [n.op for n in again.nodes] == [n.op for n in graph.nodes]


def test_gates_and_squeeze_excitation_run_on_the_pim_macro():
    # the PIM macro's DACs take unsigned inputs: ReLU features, sigmoid-type gates (a
    # HardSwish or SiLU output feeding a layer is refused there, one line)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), mm.SqueezeExcitation(8, 4),
                          nn.Conv2d(8, 8, 3, 2), nn.Sigmoid(), nn.Conv2d(8, 8, 1),
                          nn.Hardsigmoid(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 4)).eval()
    graph = imports_equal(model, (3, 8, 8), False)
    x = np.random.default_rng(0).random((16, 3, 8, 8))
    y = run_graph(graph, x, quantized=False).argmax(1)
    job = run_main_job(graph, accelerator="pim-ideal", data=(x, y), samples=16,
                       progress=False, cycle_samples=2)
    assert job.simulation.accuracy_hardware == job.simulation.accuracy_ideal
    units = [n.name for n in graph.nodes if n.op in (Op.SIGMOID, Op.HARDSIGMOID, Op.MUL)]
    assert len(units) == 4
    costed = {la.name: la for la in job.cost.layers}
    assert all(costed[u].energy_j > 0 for u in units)


def test_qdq_mobilenet_v3_equals_onnxruntime(tmp_path):
    # quantize_static puts Q/DQ pairs around the gates and products too (quantize nodes)
    import onnxruntime as ort
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    torch.manual_seed(0)
    model = mm.randomize_batchnorm(mm.mobilenet_v3_small(num_classes=10, width=0.25))
    (tmp_path / "f.onnx").write_bytes(export(model, torch.randn(1, 3, 64, 64), False))
    x = np.random.default_rng(0).random((8, 3, 64, 64)).astype(np.float32)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"input": x[i:i + 1]} for i in range(len(x))])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(str(tmp_path / "f.onnx"), str(tmp_path / "q.onnx"), Reader(),
                    quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    extra_options={"ActivationSymmetric": True})
    graph = load_onnx(tmp_path / "q.onnx")
    assert all(n.quantized for n in graph.weighted_nodes())
    assert {Op.HARDSWISH, Op.HARDSIGMOID, Op.MUL, Op.QUANTIZE} <= {n.op for n in graph.nodes}
    options = ort.SessionOptions()      # Q/DQ as written (docs/import.md: which reference)
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    want = ort.InferenceSession(str(tmp_path / "q.onnx"), options,
                                providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    np.testing.assert_allclose(run_graph(graph, x.astype(np.float64)), want, rtol=1e-4,
                               atol=1e-5)


def test_pad_that_adds_values_is_refused_in_one_line():
    from onnx import TensorProto, helper, numpy_helper

    pads = numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads")
    model = helper.make_model(helper.make_graph(
        [helper.make_node("Pad", ["x", "pads"], ["y"], name="pad")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 1, 6, 6])], [pads]),
        opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(OnnxImportError, match=r"node 'pad' \(Pad\): pads \[0, 0, 1, 1, 0, 0, 1, "
                                              r"1\]: only a Pad that adds nothing"):
        load_onnx(model)
