"""ONNX and PyTorch import: the IR's outputs equal onnxruntime's; bad models get clear errors.

Float models: float64 numpy vs float32 onnxruntime, so "equal" is rtol 1e-4 / atol 1e-5.
"""

import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from chipforge.importers.onnx import OnnxImportError, load_onnx  # noqa: E402
from chipforge.importers.torch import from_torch, torch_to_onnx  # noqa: E402
from chipforge.sim.executor import run_graph  # noqa: E402
from chipforge.sim.graph import Op, load_graph, save_graph  # noqa: E402

RTOL, ATOL = 1e-4, 1e-5


def ort_run(model, x):
    """onnxruntime's output. Graph optimizations stay at the basic level (constant folding,
    no kernel fusion): with fusion, QDQ models run on fused u8s8 integer kernels whose
    16-bit intermediate sums saturate on x86 CPUs without VNNI (onnxruntime's documented
    "reduce_range" caveat; this machine: AVX2 only), so that run is not ONNX's QDQ
    semantics. Measured on the digits CNN: basic level = onnx.reference within one output
    step; fused = up to 28 steps off, 3.6 points less accuracy."""
    data = model if isinstance(model, bytes) else model.SerializeToString()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.astype(np.float32)})[0]


def make_model(nodes, initializers, input_shape, output="y", opset=17, out_rank=2):
    graph = helper.make_graph(
        nodes, "test",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *input_shape])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT,
                                       ["N", *(f"d{i}" for i in range(1, out_rank))])],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in initializers.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=9)


def f32(rng, *shape):
    return rng.normal(size=shape).astype(np.float32)


# -- models from PyTorch ------------------------------------------------------------------

class BasicBlock(torch.nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(cout)
        self.conv2 = torch.nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = torch.nn.BatchNorm2d(cout)
        self.shortcut = (torch.nn.Identity() if stride == 1 and cin == cout else
                         torch.nn.Sequential(torch.nn.Conv2d(cin, cout, 1, stride, bias=False),
                                             torch.nn.BatchNorm2d(cout)))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class TinyResNet(torch.nn.Module):
    """ResNet-style: stem, two residual stages (one with a strided 1x1 shortcut), GAP, FC."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, 1, 1), torch.nn.BatchNorm2d(8),
                                        torch.nn.ReLU())
        self.layer1 = BasicBlock(8, 8, 1)
        self.layer2 = BasicBlock(8, 16, 2)
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.fc = torch.nn.Linear(16, 10)

    def forward(self, x):
        x = self.pool(self.layer2(self.layer1(self.stem(x))))
        return self.fc(x.view(x.size(0), -1))    # exports as Shape/Gather/Concat/Reshape


def randomize_batchnorm(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) - 0.5)
    return module


def test_resnet_with_residual_adds_matches_onnxruntime():
    torch.manual_seed(0)
    net = randomize_batchnorm(TinyResNet()).eval()
    x = np.random.default_rng(0).random((16, 1, 8, 8)).astype(np.float32)
    data = torch_to_onnx(net, torch.tensor(x[:2]))
    graph = load_onnx(data)
    ops = [n.op for n in graph.nodes]
    assert ops.count(Op.ADD) == 2 and Op.BATCHNORM not in ops     # residuals kept, BN folded
    assert ops.count(Op.CONV2D) == 6 and Op.FLATTEN in ops
    np.testing.assert_allclose(run_graph(graph, x), ort_run(data, x), rtol=RTOL, atol=ATOL)


def test_from_torch_mlp_with_batchnorm1d_relu6_dropout_and_softmax():
    torch.manual_seed(1)
    net = randomize_batchnorm(torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.BatchNorm1d(32), torch.nn.ReLU6(),
        torch.nn.Dropout(0.3), torch.nn.Linear(32, 10), torch.nn.Softmax(dim=1)))
    x = torch.rand(8, 1, 8, 8)
    graph = from_torch(net, x)                  # checks itself against the module
    assert [n.op for n in graph.nodes] == [Op.FLATTEN, Op.LINEAR, Op.CLIP, Op.LINEAR,
                                           Op.SOFTMAX]   # BatchNorm1d folded into the Linear
    assert net.training                         # from_torch restores the module's mode
    xs = np.random.default_rng(1).random((20, 1, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(run_graph(graph, xs), ort_run(torch_to_onnx(net, x), xs),
                               rtol=RTOL, atol=ATOL)


def test_from_torch_reads_sparsity_and_round_trips_through_npz(tmp_path):
    torch.manual_seed(2)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.MaxPool2d(2), torch.nn.Flatten(), torch.nn.Linear(64, 10))
    with torch.no_grad():                       # prune: 3/4 of the conv, half of the FC
        net[0].weight[:3] = 0
        net[4].weight[:, ::2] = 0
    graph = from_torch(net, torch.rand(2, 1, 8, 8), name="pruned")
    assert graph.meta["density"] == {"0.Conv": 0.25, "4.Gemm": 0.5}
    loaded = load_graph(save_graph(graph, tmp_path / "pruned.npz"))
    x = np.random.default_rng(2).random((5, 1, 8, 8))
    assert np.array_equal(run_graph(loaded, x), run_graph(graph, x))


def test_import_chipforge_stays_free_of_torch_and_onnx():
    code = ("import sys, chipforge; before = {'torch', 'onnx'} & set(sys.modules); "
            "f = chipforge.from_torch; print(sorted(before), f.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.split() == ["[]", "from_torch"]


# -- hand-made ONNX graphs: each operator and attribute -----------------------------------

def test_gemm_trans_alpha_beta_and_matmul_with_constant_weight():
    rng = np.random.default_rng(3)
    w1, c1 = f32(rng, 6, 5), f32(rng, 6)           # transB=1: (out, in)
    w2, c2 = f32(rng, 6, 4), f32(rng, 1, 4)         # transB=0: (in, out), C (1, out)
    w3, b3 = f32(rng, 4, 3), f32(rng, 3)            # MatMul + Add constant -> bias
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "c1"], ["h1"], "g1", transB=1, alpha=0.5,
                         beta=2.0),
        helper.make_node("Relu", ["h1"], ["r1"], "r1"),
        helper.make_node("Gemm", ["r1", "w2", "c2"], ["h2"], "g2", transA=0, transB=0),
        helper.make_node("MatMul", ["h2", "w3"], ["h3"], "mm"),
        helper.make_node("Add", ["b3", "h3"], ["y"], "bias"),
    ]
    model = make_model(nodes, dict(w1=w1, c1=c1, w2=w2, c2=c2, w3=w3, b3=b3), [5])
    graph = load_onnx(model)
    assert [n.op for n in graph.nodes] == [Op.LINEAR, Op.RELU, Op.LINEAR, Op.LINEAR]
    np.testing.assert_allclose(graph.node("mm").params["bias"], b3)
    x = rng.normal(size=(7, 5))
    np.testing.assert_allclose(run_graph(graph, x), ort_run(model, x), rtol=RTOL, atol=ATOL)


def test_batchnorm_is_folded_after_conv_and_kept_elsewhere_pools_and_elementwise():
    rng = np.random.default_rng(4)
    c = 3
    bn = lambda p: {f"{p}s": f32(rng, c) + 1, f"{p}b": f32(rng, c),  # noqa: E731
                    f"{p}m": f32(rng, c), f"{p}v": rng.random(c).astype(np.float32) + 0.5}
    inits = dict(w=f32(rng, c, 2, 3, 3), k=np.float32(0.5), s=f32(rng, 1, c, 1, 1),
                 **bn("a"), **bn("b"))
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], "conv", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "as", "ab", "am", "av"], ["n1"], "bn_fold"),
        helper.make_node("Relu", ["n1"], ["r"], "relu"),
        helper.make_node("BatchNormalization", ["r", "bs", "bb", "bm", "bv"], ["n2"], "bn_kept",
                         epsilon=1e-3),
        helper.make_node("MaxPool", ["n2"], ["p1"], "maxpool", kernel_shape=[3, 3],
                         strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("AveragePool", ["p1"], ["p2"], "avgpool", kernel_shape=[2, 2],
                         strides=[1, 1], pads=[1, 1, 1, 1], count_include_pad=1),
        helper.make_node("Mul", ["p2", "k"], ["m"], "mul"),
        helper.make_node("Sub", ["m", "s"], ["d"], "sub"),
        helper.make_node("Div", ["d", "k"], ["e"], "div"),
        helper.make_node("GlobalAveragePool", ["e"], ["g"], "gap"),
        helper.make_node("Flatten", ["g"], ["y"], "flatten"),
    ]
    model = make_model(nodes, inits, [2, 7, 7])
    graph = load_onnx(model)
    assert [n.op for n in graph.nodes] == [
        Op.CONV2D, Op.RELU, Op.BATCHNORM, Op.MAXPOOL2D, Op.AVGPOOL2D, Op.MUL_CONST,
        Op.ADD_CONST, Op.MUL_CONST, Op.GLOBAL_AVGPOOL, Op.FLATTEN]
    assert graph.node("bn_kept").attrs["eps"] == pytest.approx(1e-3)
    x = rng.normal(size=(4, 2, 7, 7))
    np.testing.assert_allclose(run_graph(graph, x), ort_run(model, x), rtol=RTOL, atol=ATOL)


# -- errors -------------------------------------------------------------------------------

def test_unsupported_op_is_one_error_naming_op_node_and_supported_ops(tmp_path):
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 8), torch.nn.Tanh())
    path = tmp_path / "tanh.onnx"
    path.write_bytes(torch_to_onnx(net, torch.rand(2, 1, 8, 8)))
    with pytest.raises(OnnxImportError) as info:
        load_onnx(path)
    message = str(info.value)
    assert "'Tanh'" in message and "/2/Tanh" in message and "is not supported" in message
    assert "Supported ops: Conv, Gemm, MatMul, Relu" in message
    with pytest.raises(OnnxImportError, match="Tanh"):     # the same through from_torch
        from_torch(net, torch.rand(2, 1, 8, 8))


def test_unsupported_attribute_is_rejected_before_running():
    rng = np.random.default_rng(5)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], "dilated", dilations=[2, 2]),
             helper.make_node("AveragePool", ["c"], ["y"], "ceil", kernel_shape=[2, 2],
                              ceil_mode=1)]
    model = make_model(nodes, dict(w=f32(rng, 2, 1, 3, 3)), [1, 9, 9])
    with pytest.raises(OnnxImportError) as info:
        load_onnx(model)
    message = str(info.value)
    assert "node 'dilated' (Conv): attribute dilations=[2, 2] is not supported (must be 1)" \
        in message
    assert "node 'ceil' (AveragePool): attribute ceil_mode=1 is not supported (must be 0)" \
        in message


def test_shapes_that_do_not_fit_name_the_node():
    rng = np.random.default_rng(6)
    nodes = [helper.make_node("Gemm", ["x", "w"], ["y"], "fc1", transB=1)]
    model = make_model(nodes, dict(w=f32(rng, 4, 9)), [5])      # expects 9 inputs, gets 5
    with pytest.raises(OnnxImportError, match=r"node 'fc1' \(Gemm\): input shape\(s\) \(5,\)"):
        load_onnx(model)
    nodes = [helper.make_node("Relu", ["x"], ["a"], "a"), helper.make_node("Relu", ["x"], ["b"],
                                                                          "b"),
             helper.make_node("Flatten", ["b"], ["bf"], "bf"),
             helper.make_node("Add", ["a", "bf"], ["y"], "res")]
    model = make_model(nodes, {}, [2, 3])
    with pytest.raises(OnnxImportError, match=r"node 'res' \(Add\): adds shapes \(2, 3\) and "
                                              r"\(6,\)"):
        load_onnx(model)


def test_truncated_and_garbage_files_get_clear_errors(tmp_path):
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    data = torch_to_onnx(net, torch.rand(2, 1, 8, 8))
    for cut in (len(data) // 2, len(data) - 7, 10):
        (tmp_path / "cut.onnx").write_bytes(data[:cut])
        with pytest.raises(OnnxImportError, match=r"cut.onnx is not a valid ONNX (file|model)"):
            load_onnx(tmp_path / "cut.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"\x00\xff" * 100)
    with pytest.raises(OnnxImportError, match="not a valid ONNX"):
        load_onnx(tmp_path / "junk.onnx")
    with pytest.raises(OnnxImportError, match="does not exist"):
        load_onnx(tmp_path / "missing.onnx")


def test_cli_import_lists_layers_and_writes_npz(tmp_path, capsys):
    from chipforge.cli import main

    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(144, 10))
    (tmp_path / "m.onnx").write_bytes(torch_to_onnx(net, torch.rand(2, 1, 8, 8)))
    assert main(["import", str(tmp_path / "m.onnx"), "--out", str(tmp_path / "m.npz")]) == 0
    out = capsys.readouterr().out
    assert "0.Conv" in out and "3.Gemm" in out and "10x144" in out
    assert load_graph(tmp_path / "m.npz").input_shape == (1, 8, 8)
    (tmp_path / "bad.onnx").write_bytes(b"garbage")
    assert main(["import", str(tmp_path / "bad.onnx")]) == 2
    assert "not a valid ONNX" in capsys.readouterr().err


# -- QDQ-quantized models (onnxruntime.quantization.quantize_static) ----------------------

@pytest.fixture(scope="module")
def digits_cnn_onnx(tmp_path_factory):
    """A small CNN trained briefly on the shared digits split, exported to ONNX."""
    from chipforge.zoo.data import digits

    data = digits()
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)        # tiny batches: threads only contend (20x slower on 2 cores)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        torch.nn.MaxPool2d(2), torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU(),
        torch.nn.AvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(64, 10))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    x, y = torch.tensor(data.x_train), torch.tensor(data.y_train)
    for _ in range(3):
        for i in range(0, len(x), 64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x[i:i + 64]), y[i:i + 64]).backward()
            opt.step()
    torch.set_num_threads(threads)
    path = tmp_path_factory.mktemp("qdq") / "float.onnx"
    path.write_bytes(torch_to_onnx(net, x[:2]))
    return path, data


def quantize(float_path, data, out_path, **options):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    class Digits(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"input": data.x_train[i:i + 128]} for i in range(0, 512, 128)])

        def get_next(self):
            return next(self.batches, None)

    import logging
    logging.getLogger().setLevel(logging.ERROR)     # "consider pre-processing" notes
    quantize_static(str(float_path), str(out_path), Digits(), quant_format=QuantFormat.QDQ,
                    **options)
    return out_path


def initializer(model, name):
    return next(numpy_helper.to_array(t) for t in model.graph.initializer if t.name == name)


def dequantize_scale(model, tensor):
    """The scale initializer of the DequantizeLinear that produces ``tensor``."""
    dq = next(n for n in model.graph.node if n.output[0] == tensor)
    return initializer(model, dq.input[1])


@pytest.mark.parametrize("options", [
    dict(per_channel=False),                          # int8 activations, zero point -128
    dict(per_channel=True, activation_type="QUInt8"),
    dict(per_channel=False, extra_options={"ActivationSymmetric": True}),
], ids=["per-tensor-int8", "per-channel-uint8", "symmetric-int8"])
def test_qdq_model_imports_scales_and_matches_onnxruntime(digits_cnn_onnx, tmp_path, options):
    from onnxruntime.quantization import QuantType

    float_path, data = digits_cnn_onnx
    if "activation_type" in options:
        options = options | {"activation_type": QuantType.QUInt8}
    path = quantize(float_path, data, tmp_path / "qdq.onnx", **options)
    model = onnx.load(path)
    graph = load_onnx(path)

    # Scales and bit widths come from the QDQ nodes.
    weighted = graph.weighted_nodes()
    assert [n.name for n in weighted] == ["0.Conv", "4.Conv", "8.Gemm"]
    assert all(n.quantized and n.attrs["weight_bits"] == 8 and n.attrs["act_bits"] == 8
               for n in weighted)
    conv = graph.node("0.Conv")
    assert conv.attrs["act_scale"] == pytest.approx(float(initializer(model, "input_scale")))
    symmetric = "extra_options" in options
    assert conv.attrs["act_signed"] is symmetric       # [0, 1] pixels: unsigned unless forced
    w_scale = np.asarray(conv.attrs["weight_scale"])
    assert w_scale.shape == ((8,) if options["per_channel"] else ())
    first_conv = next(n for n in model.graph.node if n.op_type == "Conv")
    np.testing.assert_allclose(w_scale, dequantize_scale(model, first_conv.input[1]), rtol=1e-7)

    # chipforge's quantized execution (exact integer products) vs onnxruntime's.
    x = data.x_test
    ours, theirs = run_graph(graph, x), ort_run(model, x)
    out_scale = graph.nodes[-1].attrs["scale"]
    assert graph.nodes[-1].op is Op.QUANTIZE               # the quantized logits
    diff = np.abs(ours - theirs)
    # Differences are whole output steps, from rounding ties broken differently by float32
    # (onnxruntime) and float64 (chipforge) arithmetic: a 2x2 average of integer codes is an
    # exact .5 tie for a quarter of its outputs. Measured: at most 1 step, 0-14 % of logits,
    # 99.2-100 % of predictions agree (docs/models-onnx-pytorch.md).
    assert diff.max() <= 2 * out_scale * 1.001
    assert (diff > 1e-5).mean() < 0.25
    assert (ours.argmax(1) == theirs.argmax(1)).mean() >= 0.98
    assert (ours.argmax(1) == data.y_test).mean() > 0.85


def test_nonzero_activation_zero_point_into_a_layer_is_rejected(digits_cnn_onnx, tmp_path):
    float_path, data = digits_cnn_onnx
    shifted = type(data)(data.x_train - 0.3, data.y_train, data.x_test, data.y_test)
    path = quantize(float_path, shifted, tmp_path / "asym.onnx", per_channel=False)
    with pytest.raises(OnnxImportError, match=r"node '/0/Conv' \(Conv\): its input "
                                              r"'input_DequantizeLinear_Output' is quantized "
                                              r"with zero point -5[0-9]"):
        load_onnx(path)


# -- transformer (ViT) ops ------------------------------------------------------------------

class EncoderBlock(torch.nn.Module):
    """Pre-norm ViT block. ``timm_style``: q/k/v split as timm does, through a transpose
    that moves the batch axis (``permute(2, 0, 3, 1, 4)``); else batch-first ``chunk``."""

    def __init__(self, dim, heads, timm_style):
        super().__init__()
        self.heads, self.timm_style = heads, timm_style
        self.ln1, self.ln2 = torch.nn.LayerNorm(dim), torch.nn.LayerNorm(dim)
        self.qkv, self.proj = torch.nn.Linear(dim, 3 * dim), torch.nn.Linear(dim, dim)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(dim, 2 * dim), torch.nn.GELU(),
                                       torch.nn.Linear(2 * dim, dim))

    def forward(self, x):
        b, t, d = x.shape
        h = self.heads
        if self.timm_style:
            q, k, v = self.qkv(self.ln1(x)).reshape(b, t, 3, h, d // h).permute(2, 0, 3, 1, 4)
        else:
            q, k, v = (p.reshape(b, t, h, d // h).transpose(1, 2)
                       for p in self.qkv(self.ln1(x)).chunk(3, dim=-1))
        attention = ((q @ k.transpose(-2, -1)) * (d // h) ** -0.5).softmax(-1)
        x = x + self.proj((attention @ v).transpose(1, 2).reshape(b, t, d))
        return x + self.mlp(self.ln2(x))


class TinyViT(torch.nn.Module):
    def __init__(self, dim=16, heads=2, depth=2):
        super().__init__()
        self.patch = torch.nn.Conv2d(1, dim, 4, 4)                 # 8x8 -> 2x2 patches
        self.cls = torch.nn.Parameter(torch.randn(1, 1, dim) * 0.1)   # class token
        self.pos = torch.nn.Parameter(torch.randn(1, 5, dim) * 0.1)
        self.blocks = torch.nn.Sequential(*[EncoderBlock(dim, heads, timm_style=i % 2 == 1)
                                            for i in range(depth)])
        self.norm, self.head = torch.nn.LayerNorm(dim), torch.nn.Linear(dim, 10)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0]) + self.head(x.mean(1))     # Gather + ReduceMean


@pytest.mark.parametrize("opset", [17, 20])   # 17 writes GELU as Div/Erf/Add/Mul/Mul
def test_small_vit_matches_onnxruntime(opset):
    torch.manual_seed(3)
    net = TinyViT().eval()
    data = torch_to_onnx(net, torch.rand(2, 1, 8, 8), opset=opset)
    graph = load_onnx(data)
    ops = [n.op for n in graph.nodes]
    for op in (Op.LAYERNORM, Op.GELU, Op.TRANSPOSE, Op.MATMUL, Op.SLICE, Op.MEAN, Op.CONCAT):
        assert op in ops, op
    assert ops.count(Op.GELU) == 2 and ops.count(Op.MATMUL) == 4
    x = np.random.default_rng(3).random((6, 1, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(run_graph(graph, x), ort_run(data, x), rtol=RTOL, atol=ATOL)
    # ... and back out: chipforge's own ONNX export of the imported ViT runs the same.
    from chipforge.importers.onnx_export import to_onnx
    np.testing.assert_allclose(ort_run(to_onnx(graph), x), ort_run(data, x), rtol=RTOL,
                               atol=ATOL)


def test_a_batch_moving_transpose_must_be_undone_before_the_output():
    nodes = [helper.make_node("Transpose", ["x"], ["t"], "swap", perm=[1, 0, 2]),
             helper.make_node("Relu", ["t"], ["y"], "relu")]
    with pytest.raises(OnnxImportError, match=r"output 'y' does not have the batch axis "
                                              r"first \(a Transpose or Reshape moved it\)"):
        load_onnx(make_model(nodes, {}, [3, 4], out_rank=3))
    # ... and once it is undone, the ops in between run on the batch-first copy
    nodes = [nodes[0], helper.make_node("Relu", ["t"], ["r"], "relu"),
             helper.make_node("Softmax", ["r"], ["s"], "soft", axis=0),
             helper.make_node("Transpose", ["s"], ["y"], "back", perm=[1, 0, 2])]
    graph = load_onnx(make_model(nodes, {}, [3, 4], out_rank=3))
    x = np.random.default_rng(0).normal(size=(2, 3, 4))
    r = np.maximum(x.transpose(1, 0, 2), 0)
    want = (np.exp(r) / np.exp(r).sum(0, keepdims=True)).transpose(1, 0, 2)
    np.testing.assert_allclose(run_graph(graph, x, quantized=False), want, rtol=1e-12)


# -- chipforge graphs -> ONNX -> onnxruntime ----------------------------------------------

def quantized_test_graphs():
    """Quantized IR graphs as the zoo and the mapping passes write them (small_cnn of the
    executor tests, per-tensor and per-channel; a 4-bit variant; a residual net)."""
    from chipforge.sim.graph import Graph, Node

    rng = np.random.default_rng(7)
    q = lambda wb, ws, ab, a_s, signed: dict(weight_bits=wb, weight_scale=ws,  # noqa: E731
                                             act_bits=ab, act_scale=a_s, act_signed=signed)
    graphs = []
    for wb, ab in ((8, 8), (4, 4), (3, 6)):
        lim = (1 << (wb - 1)) - 1
        conv_w = rng.integers(-lim, lim + 1, (4, 1, 3, 3)) * 0.05
        scales = rng.uniform(0.005, 0.02, 3)
        fc_w = rng.integers(-lim, lim + 1, (3, 36)) * scales[:, None]
        graphs.append(Graph(f"cnn-w{wb}a{ab}", (1, 6, 6), [
            Node(Op.CONV2D, "conv", ("input",), dict(stride=1, padding=1)
                 | q(wb, 0.05, ab, 1 / 16, False), {"weight": conv_w, "bias": rng.normal(size=4)}),
            Node(Op.RELU, "relu", ("conv",)),
            Node(Op.MAXPOOL2D, "pool", ("relu",), dict(kernel=2, stride=2)),
            Node(Op.FLATTEN, "flat", ("pool",)),
            Node(Op.LINEAR, "fc", ("flat",), q(wb, scales.tolist(), ab, 0.25, False),
                 {"weight": fc_w, "bias": rng.normal(size=3)}),
            Node(Op.SOFTMAX, "prob", ("fc",), dict(axis=1))]))
    w1 = rng.integers(-127, 128, (8, 8)) * 0.01
    graphs.append(Graph("mlp-residual", (8,), [
        Node(Op.LINEAR, "fc1", ("input",), q(8, 0.01, 8, 0.02, True), {"weight": w1}),
        Node(Op.RELU, "r1", ("fc1",)),
        Node(Op.ADD, "res", ("r1", "input")),
        Node(Op.QUANTIZE, "q", ("res",), dict(scale=0.05, zero_point=3, bits=8, signed=False)),
        Node(Op.LINEAR, "fc2", ("q",), {}, {"weight": rng.normal(size=(4, 8))})]))
    return graphs


@pytest.mark.parametrize("graph", quantized_test_graphs(), ids=lambda g: g.name)
def test_exported_graph_runs_identically_in_onnxruntime_and_reimports(graph, tmp_path):
    from chipforge.importers.onnx_export import save_onnx

    save_onnx(graph, tmp_path / "g.onnx")
    x = np.random.default_rng(8).random((200, *graph.input_shape))
    ours = run_graph(graph, x)                       # the quantized model, exact integers
    theirs = ort_run(onnx.load(tmp_path / "g.onnx"), x)
    np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=ATOL)
    back = load_onnx(tmp_path / "g.onnx")
    assert [n.name for n in back.weighted_nodes()] == [n.name for n in graph.weighted_nodes()]
    for a, b in zip(graph.weighted_nodes(), back.weighted_nodes(), strict=True):
        assert b.quantized == a.quantized
        if a.quantized:
            assert b.attrs["act_bits"] >= a.attrs["act_bits"]      # container width
            np.testing.assert_allclose(b.attrs["weight_scale"], a.attrs["weight_scale"],
                                       rtol=1e-7)
    np.testing.assert_allclose(run_graph(back, x), ours, rtol=RTOL, atol=ATOL)


def test_model_and_data_specs_are_loaded_and_validated(tmp_path):
    from chipforge.importers.model import load_data, load_model

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    (tmp_path / "m.onnx").write_bytes(torch_to_onnx(net, torch.rand(2, 1, 8, 8)))
    graph = load_model(tmp_path / "m.onnx")
    save_graph(graph, tmp_path / "m.npz")
    assert load_model(str(tmp_path / "m.npz")).input_shape == (1, 8, 8)
    with pytest.raises(ValueError, match="not an .onnx file, an .npz graph or a zoo model"):
        load_model("no-such-model")

    x, y = load_data("digits", graph)
    assert x.shape == (360, 1, 8, 8) and y.shape == (360,)
    rng = np.random.default_rng(9)
    np.savez(tmp_path / "d.npz", inputs=rng.random((5, 64)), labels=np.arange(5))
    x, y = load_data(tmp_path / "d.npz", graph)      # flat samples reshaped to the input
    assert x.shape == (5, 1, 8, 8) and y.tolist() == [0, 1, 2, 3, 4]
    bad = {"objects.npz": dict(x=np.array([{"a": 1}] * 3, dtype=object), y=np.zeros(3, int)),
           "short.npz": dict(x=rng.random((4, 64)), y=np.zeros(3, int)),
           "shape.npz": dict(x=rng.random((3, 10)), y=np.zeros(3, int)),
           "nan.npz": dict(x=np.full((3, 64), np.nan), y=np.zeros(3, int)),
           "keys.npz": dict(a=rng.random((3, 64)))}
    messages = {"objects.npz": "Python objects", "short.npz": "4 inputs and 3 labels",
                "shape.npz": r"takes \(1, 8, 8\)", "nan.npz": "NaN",
                "keys.npz": "must hold one input array"}
    for name, arrays in bad.items():
        np.savez(tmp_path / name, **arrays)
        with pytest.raises(ValueError, match=messages[name]):
            load_data(tmp_path / name, graph)
    (tmp_path / "cut.npz").write_bytes((tmp_path / "d.npz").read_bytes()[:50])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        load_data(tmp_path / "cut.npz", graph)


def test_external_weight_data_is_read_and_a_missing_file_is_a_clear_error(tmp_path):
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    model = onnx.load_from_string(torch_to_onnx(net, torch.rand(2, 1, 8, 8)))
    onnx.save(model, tmp_path / "m.onnx", save_as_external_data=True, location="w.bin",
              size_threshold=0)
    x = np.random.default_rng(10).random((3, 1, 8, 8))
    np.testing.assert_allclose(run_graph(load_onnx(tmp_path / "m.onnx"), x),
                               net(torch.tensor(x, dtype=torch.float32)).detach().numpy(),
                               rtol=RTOL, atol=ATOL)
    (tmp_path / "w.bin").unlink()
    with pytest.raises(OnnxImportError, match="external weight data cannot be read"):
        load_onnx(tmp_path / "m.onnx")


def test_qdq_vit_with_symmetric_activations_matches_onnxruntime(tmp_path):
    from chipforge.zoo.data import digits

    torch.manual_seed(3)
    data = digits()
    (tmp_path / "vit.onnx").write_bytes(torch_to_onnx(TinyViT().eval(), torch.rand(2, 1, 8, 8)))
    path = quantize(tmp_path / "vit.onnx", data, tmp_path / "vit-qdq.onnx",
                    extra_options={"ActivationSymmetric": True})
    graph = load_onnx(path)
    weighted = graph.weighted_nodes()
    assert len(weighted) == 11 and all(n.quantized and n.attrs["act_signed"] for n in weighted)
    ours, theirs = run_graph(graph, data.x_test), ort_run(onnx.load(path), data.x_test)
    # Equal but for rounding ties that float32 (onnxruntime) and float64 (chipforge) break
    # differently: one output step, measured on 1 of 3600 logits.
    assert graph.nodes[-1].op is Op.QUANTIZE
    diff = np.abs(ours - theirs)
    assert diff.max() <= graph.nodes[-1].attrs["scale"] * 1.001
    assert (diff > 1e-5).mean() < 0.005
    # Default (asymmetric) activations: LayerNorm outputs get non-zero zero points.
    path = quantize(tmp_path / "vit.onnx", data, tmp_path / "vit-asym.onnx")
    with pytest.raises(OnnxImportError, match=r"qkv/MatMul' \(MatMul\): its input .* is "
                                              "quantized with zero point"):
        load_onnx(path)


def zoo_names():
    from chipforge import zoo

    return zoo.names() if hasattr(zoo, "names") else []


@pytest.mark.parametrize("name", zoo_names())
def test_every_zoo_model_equals_onnxruntime(name):
    """Each zoo graph written as ONNX: the float view equals onnxruntime's within float
    tolerance; the quantized model (QDQ) too, up to rare float32 near-tie roundings."""
    from chipforge import zoo
    from chipforge.importers.model import load_data
    from chipforge.importers.onnx_export import to_onnx

    graph = zoo.load(name)
    x, y = load_data("digits", graph)
    np.testing.assert_allclose(run_graph(graph, x, quantized=False),
                               ort_run(to_onnx(graph, quantized=False), x), rtol=RTOL,
                               atol=ATOL)
    # Quantized: onnxruntime without graph optimizations runs QDQ as written (float32
    # quantize/dequantize); chipforge runs the graph imported from the same file (its
    # scales are the file's float32 ones) with exact integer products.
    model = to_onnx(graph)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    theirs = session.run(None, {"input": x.astype(np.float32)})[0]
    imported = load_onnx(model)
    assert [n.attrs.get("weight_bits") for n in imported.weighted_nodes()] == \
        [n.attrs.get("weight_bits") for n in graph.weighted_nodes()]
    ours = run_graph(imported, x)
    close = np.isclose(ours, theirs, rtol=RTOL, atol=ATOL)
    assert close.mean() >= 0.99, f"{(~close).sum()} of {close.size} logits differ"
    assert (ours.argmax(1) == theirs.argmax(1)).all()
    assert (run_graph(graph, x).argmax(1) == ours.argmax(1)).mean() >= 0.99


def test_bundled_vit_backbone_imports_through_pytorch_and_onnx():
    """The bundled vit-digits (HeatViT's backbone, stored in its own format) rebuilt as a
    plain PyTorch module from its parameters, imported with from_torch: the IR's float
    output equals chipforge.sim.vit's float run of the same model (no token selectors)."""
    import chipforge.zoo.vit as vit
    from chipforge.sim.vit import run_vit
    from chipforge.zoo.data import digits

    model = vit.load_vit("vit-digits")
    c = model.config

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.norm1, self.norm2 = torch.nn.LayerNorm(c.dim), torch.nn.LayerNorm(c.dim)
            self.qkv, self.proj = torch.nn.Linear(c.dim, 3 * c.dim), torch.nn.Linear(c.dim, c.dim)
            self.fc1 = torch.nn.Linear(c.dim, c.mlp_hidden)
            self.fc2 = torch.nn.Linear(c.mlp_hidden, c.dim)

        def forward(self, x):
            n, t, _ = x.shape
            q, k, v = self.qkv(self.norm1(x)).reshape(n, t, 3, c.heads, c.head_dim) \
                .permute(2, 0, 3, 1, 4)
            attention = (q @ k.transpose(-2, -1) / c.head_dim ** 0.5).softmax(-1)
            x = x + self.proj((attention @ v).transpose(1, 2).reshape(n, t, c.dim))
            return x + self.fc2(torch.nn.functional.gelu(self.fc1(self.norm2(x))))

    class Vit(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.patch_embed = torch.nn.Linear(c.patch_dim, c.dim)
            self.cls_token = torch.nn.Parameter(torch.zeros(1, 1, c.dim))
            self.pos_embed = torch.nn.Parameter(torch.zeros(1, c.num_patches + 1, c.dim))
            self.blocks = torch.nn.ModuleList(Block() for _ in range(c.depth))
            self.norm, self.head = torch.nn.LayerNorm(c.dim), torch.nn.Linear(c.dim,
                                                                              c.num_classes)

        def forward(self, images):
            n, g, p = images.shape[0], c.image_size // c.patch_size, c.patch_size
            patches = images.reshape(n, g, p, g, p).permute(0, 1, 3, 2, 4).reshape(n, g * g,
                                                                                   p * p)
            x = torch.cat([self.cls_token.expand(n, -1, -1), self.patch_embed(patches)], 1)
            x = x + self.pos_embed
            for block in self.blocks:
                x = block(x)
            return self.head(self.norm(x[:, 0]))

    net = Vit()
    net.load_state_dict({k: torch.tensor(v, dtype=torch.float32) for k, v in
                         model.params.items() if not k.startswith("selectors.")})
    data = digits()
    graph = from_torch(net, torch.tensor(data.x_test[:4]))
    assert sum(n.op is Op.LINEAR for n in graph.nodes) == 2 + 4 * c.depth
    ours = run_graph(graph, data.x_test)
    theirs = run_vit(model, data.x_test, fixed=False, use_selectors=False).logits
    # chipforge.sim.vit divides by (sum + 1e-6) in its softmax: a 1e-6 relative difference.
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)
    assert (ours.argmax(1) == theirs.argmax(1)).all()


@pytest.mark.parametrize("accelerator", ["isaac", "forms8", "isqed-differential"])
def test_qdq_model_on_ideal_crossbars_equals_onnxruntime(digits_cnn_onnx, tmp_path,
                                                         accelerator):
    """The imported QDQ model placed on an accelerator's ideal crossbars (bit-sliced cells,
    ADCs, shift-and-add) gives exactly chipforge's quantized output, hence onnxruntime's up
    to the rounding ties of the QDQ test above."""
    from onnxruntime.quantization import QuantType

    from chipforge.accelerators import get_accelerator
    from chipforge.mappings.placement import place
    from chipforge.sim.reram import CrossbarMatmul

    float_path, data = digits_cnn_onnx
    path = quantize(float_path, data, tmp_path / "qdq.onnx", per_channel=True,
                    activation_type=QuantType.QUInt8)
    graph = load_onnx(path)
    accel = get_accelerator(accelerator)
    if accelerator == "forms8":      # FORMS needs sign-polarized fragments: not this model
        with pytest.raises(ValueError, match="polariz"):
            place(graph, accel)
        return
    x = data.x_test[:120]
    hardware = run_graph(graph, x, matmul=CrossbarMatmul(place(graph, accel), accel.device))
    assert np.array_equal(hardware, run_graph(graph, x))
    theirs = ort_run(onnx.load(path), x)
    assert np.abs(hardware - theirs).max() <= 2 * graph.nodes[-1].attrs["scale"] * 1.001
    assert (hardware.argmax(1) == theirs.argmax(1)).mean() >= 0.98


def test_default_quantize_static_model_float_view_restores_the_folded_relus(digits_cnn_onnx,
                                                                             tmp_path):
    """quantize_static's defaults delete each ReLU before a QDQ pair (the int8 range with
    zero point -128 clamps at 0 instead): the float view puts the clamp back, so it equals
    onnxruntime running the float model with the QDQ file's (dequantized) weights, and the
    quantized run equals onnxruntime's run of the QDQ file."""
    float_path, data = digits_cnn_onnx
    path = quantize(float_path, data, tmp_path / "default.onnx")
    qdq, graph = onnx.load(path), load_onnx(path)
    assert "Relu" not in {n.op_type for n in qdq.graph.node}
    assert graph.meta["restored_clamps"] == ["/2/Relu_output_0", "/5/Relu_output_0"]

    # The float model, its weights replaced by the QDQ file's dequantized weights.
    reference = onnx.load(float_path)
    dq = {n.output[0]: n for n in qdq.graph.node if n.op_type == "DequantizeLinear"}
    ints = {t.name: numpy_helper.to_array(t) for t in qdq.graph.initializer}
    for t in reference.graph.initializer:
        node = dq.get(t.name) or dq.get(t.name + "_DequantizeLinear_Output")
        if node is not None and node.input[0] in ints:
            q, scale, zero = (ints[i] for i in node.input)
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            shape = [1] * q.ndim
            if scale.size > 1:
                shape[axis] = -1
            w = (q.astype(np.float64) - zero.reshape(shape)) * scale.reshape(shape)
            t.CopyFrom(numpy_helper.from_array(w.astype(np.float32), t.name))
    x, y = data.x_test, data.y_test
    ours = run_graph(graph, x, quantized=False)
    np.testing.assert_allclose(ours, ort_run(reference, x), rtol=RTOL, atol=ATOL)
    float_accuracy = (ort_run(onnx.load(float_path), x).argmax(1) == y).mean()
    assert abs((ours.argmax(1) == y).mean() - float_accuracy) <= 0.01   # int8 weights only
    quantized, theirs = run_graph(graph, x), ort_run(qdq, x)
    assert (quantized.argmax(1) == y).mean() == pytest.approx((theirs.argmax(1) == y).mean(),
                                                              abs=1 / len(y) + 1e-12)


@pytest.mark.parametrize("first", [-1, "batch-product"])
def test_reshape_merging_the_batch_with_tokens_around_a_gemm(first):
    """x.view(-1, E) @ W.T -> view(B, N, E'): the (B*N, E) view of PyTorch linear layers on
    3-D inputs (and nn.MultiheadAttention's out-projection)."""
    rng = np.random.default_rng(5)
    w, b = f32(rng, 5, 6), f32(rng, 5)
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "zero"], ["batch"], axis=0),
             helper.make_node("Mul", ["batch", "four"], ["bn"]),
             helper.make_node("Concat", ["bn" if first != -1 else "minus1", "six"], ["t1"],
                              axis=0),
             helper.make_node("Reshape", ["x", "t1"], ["flat"]),
             helper.make_node("Gemm", ["flat", "w", "b"], ["g"], transB=1),
             helper.make_node("Concat", ["minus1", "four", "five"], ["t2"], axis=0),
             helper.make_node("Reshape", ["g", "t2"], ["y"])]
    consts = dict(zero=np.array(0), four=np.array([4]), six=np.array([6]),
                  five=np.array([5]), minus1=np.array([-1]), w=w, b=b)
    graph = load_onnx(make_model(nodes, consts, [4, 6], out_rank=3))
    x = rng.normal(size=(3, 4, 6))
    np.testing.assert_allclose(run_graph(graph, x, quantized=False), x @ w.T + b, rtol=1e-6,
                               atol=1e-6)


def test_labels_beyond_the_models_classes_flatten_axis_and_empty_reducemean_are_refused(
        tmp_path):
    from chipforge.importers.model import load_data

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    graph = from_torch(net, torch.rand(2, 1, 8, 8))
    np.savez(tmp_path / "d.npz", x=np.zeros((3, 64)), y=np.array([0, 9, 10]))
    with pytest.raises(ValueError, match="labels must be class indices below the model's 10 "
                                         "outputs, found 10"):
        load_data(tmp_path / "d.npz", graph)
    np.savez(tmp_path / "ok.npz", x=np.zeros((3, 64)), y=np.array([0, 9, 3]))
    assert load_data(tmp_path / "ok.npz", graph)[1].tolist() == [0, 9, 3]

    flatten = [helper.make_node("Flatten", ["x"], ["y"], "flat", axis=2)]
    with pytest.raises(OnnxImportError, match=r"Flatten with axis=2 merges the batch axis"):
        load_onnx(make_model(flatten, {}, [3, 4, 5]))
    reduce = [helper.make_node("ReduceMean", ["x", "axes"], ["y"], "mean")]
    with pytest.raises(OnnxImportError, match=r"reduces over all axes, the batch axis "
                                              "included"):
        load_onnx(make_model(reduce, {"axes": np.zeros(0, np.int64)}, [3, 4], opset=18))
    # one pass-through node: the real reason, not "not computed by any supported node"
    with pytest.raises(OnnxImportError, match="is the input itself"):
        load_onnx(make_model([helper.make_node("Identity", ["x"], ["y"])], {}, [4]))
