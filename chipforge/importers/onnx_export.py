"""Write a chipforge :class:`~chipforge.sim.graph.Graph` as an ONNX model, so that
onnxruntime (or any ONNX tool) runs exactly the model chipforge simulates.

``to_onnx(graph)`` returns a ``ModelProto`` (opset 21, batch axis dynamic). A quantized
layer becomes the QDQ pattern onnxruntime writes itself: ``QuantizeLinear ->
DequantizeLinear`` on the input (zero point 0, ``uint8``/``int8``, ``uint16``/``int16`` or
4-bit types by ``act_bits``; other widths clip to their range first, so the codes are the
executor's) and ``DequantizeLinear`` of the integer weights (``int8``, ``int16`` or
``int4``; per output channel when ``weight_scale`` is a list). Re-importing with
:func:`chipforge.importers.onnx.load_onnx` gives back the same computation; bit widths
other than 4, 8 and 16 are kept in the model's metadata and restored.

ONNX stores scales as float32. A scale that float32 cannot hold exactly (the zoo's input
scale 1/255) moves exact rounding ties: a pixel of 0.5 is code 127.5 in float64, which
rounds to 128, but just under 127.5 with the float32 scale, which rounds to 127. The
re-imported graph carries the float32 scales, so it and onnxruntime agree.

IR-only attributes that do not change the computation (FORMS fragment signs, masks) are not
written: ONNX has no place for them.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from chipforge.sim.executor import integer_weights, run_graph
from chipforge.sim.graph import Graph, Node, Op

__all__ = ["OPSET", "save_onnx", "to_onnx"]

WEIGHT_BITS_KEY = "chipforge.weight_bits"
OPSET = 21
"""ONNX opset written (21: 4-bit QDQ types; Gelu needs 20)."""
IR_VERSION = 10


def _int_type(bits: int, signed: bool) -> tuple[int, int]:
    """(ONNX element type, container bits) for a ``bits``-wide integer."""
    for width, s_type, u_type in ((4, TensorProto.INT4, TensorProto.UINT4),
                                  (8, TensorProto.INT8, TensorProto.UINT8),
                                  (16, TensorProto.INT16, TensorProto.UINT16)):
        if bits <= width:
            return (s_type if signed else u_type), width
    raise ValueError(f"{bits}-bit integers have no ONNX QDQ type (at most 16 bits)")


class _Writer:
    def __init__(self, graph: Graph, quantized: bool):
        self.graph, self.quantized = graph, quantized
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def const(self, name: str, value, dtype=np.float32) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def int_const(self, name: str, value: np.ndarray, elem_type: int) -> str:
        self.inits.append(helper.make_tensor(name, elem_type, value.shape,
                                             value.astype(np.int64).reshape(-1).tolist()))
        return name

    def add(self, op: str, inputs: list[str], output: str, name: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op, inputs, [output], name, **attrs))
        return output

    def quantized_input(self, node: Node, x: str) -> str:
        """QuantizeLinear -> DequantizeLinear of a quantized layer's input."""
        a = node.attrs
        bits, signed, scale = int(a["act_bits"]), bool(a["act_signed"]), float(a["act_scale"])
        elem, width = _int_type(bits, signed)
        if bits != width:             # e.g. 3-bit codes in a uint4: clip to 0..7 first
            lo, hi = ((-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed
                      else (0, (1 << bits) - 1))
            x = self.add("Clip", [x, self.const(f"{node.name}.act_lo", lo * scale),
                                  self.const(f"{node.name}.act_hi", hi * scale)],
                         f"{node.name}.clipped", f"{node.name}.clip")
        s = self.const(f"{node.name}.act_scale", scale)
        z = self.int_const(f"{node.name}.act_zero_point", np.zeros(()), elem)
        q = self.add("QuantizeLinear", [x, s, z], f"{node.name}.act_q", f"{node.name}.quantize")
        return self.add("DequantizeLinear", [q, s, z], f"{node.name}.act_dq",
                        f"{node.name}.dequantize")

    def weight(self, node: Node, transpose: bool) -> str:
        """The weight tensor (dequantized from integers when the layer is quantized)."""
        w = node.params["weight"]
        if "weight_bits" not in node.attrs or not self.quantized:
            return self.const(f"{node.name}.weight", w.T if transpose else w)
        q = integer_weights(node)
        scale = np.asarray(node.attrs["weight_scale"], dtype=np.float64).reshape(-1)
        elem, _ = _int_type(int(node.attrs["weight_bits"]), True)
        qi = self.int_const(f"{node.name}.weight_quantized", q.T if transpose else q, elem)
        per_channel = scale.size > 1
        s = self.const(f"{node.name}.weight_scale", scale if per_channel else scale[0])
        z = self.int_const(f"{node.name}.weight_zero_point",
                           np.zeros(scale.shape if per_channel else ()), elem)
        attrs = {"axis": 1 if transpose else 0} if per_channel else {}
        return self.add("DequantizeLinear", [qi, s, z], f"{node.name}.weight",
                        f"{node.name}.weight_dequantize", **attrs)

    def node(self, node: Node, names: dict[str, str]) -> str:
        a, out, x = node.attrs, node.name, names[node.inputs[0]]
        match node.op:
            case Op.CONV2D | Op.LINEAR:
                if node.quantized and self.quantized:
                    x = self.quantized_input(node, x)
                if node.op is Op.CONV2D:
                    inputs = [x, self.weight(node, False)]
                    if "bias" in node.params:
                        inputs.append(self.const(f"{out}.bias", node.params["bias"]))
                    p = int(a.get("padding", 0))
                    s = int(a.get("stride", 1))
                    return self.add("Conv", inputs, out, out, strides=[s, s], pads=[p] * 4,
                                    group=int(a.get("groups", 1)))
                bias = "bias" in node.params
                y = self.add("MatMul", [x, self.weight(node, True)],
                             f"{out}.matmul" if bias else out, out)
                if bias:
                    y = self.add("Add", [y, self.const(f"{out}.bias", node.params["bias"])],
                                 out, f"{out}.add_bias")
                return y
            case Op.RELU:
                return self.add("Relu", [x], out, out)
            case Op.CLIP:
                bounds = [self.const(f"{out}.{k}", a[k]) if a.get(k) is not None else ""
                          for k in ("min", "max")]
                return self.add("Clip", [x, *bounds], out, out)
            case Op.MAXPOOL2D | Op.AVGPOOL2D:
                k = int(a["kernel"])
                s, p = int(a.get("stride", k)), int(a.get("padding", 0))
                extra = {"count_include_pad": 1} if node.op is Op.AVGPOOL2D else {}
                if a.get("ceil_mode"):
                    extra["ceil_mode"] = 1
                return self.add("MaxPool" if node.op is Op.MAXPOOL2D else "AveragePool", [x],
                                out, out, kernel_shape=[k, k], strides=[s, s], pads=[p] * 4,
                                **extra)
            case Op.GLOBAL_AVGPOOL:
                return self.add("GlobalAveragePool", [x], out, out)
            case Op.FLATTEN:
                return self.add("Flatten", [x], out, out, axis=1)
            case Op.ADD:
                return self.add("Add", [x, names[node.inputs[1]]], out, out)
            case Op.MATMUL:
                return self.add("MatMul", [x, names[node.inputs[1]]], out, out)
            case Op.MUL:
                return self.add("Mul", [x, names[node.inputs[1]]], out, out)
            case Op.SIGMOID:
                return self.add("Sigmoid", [x], out, out)
            case Op.HARDSIGMOID:
                return self.add("HardSigmoid", [x], out, out, alpha=float(a.get("alpha", 0.2)),
                                beta=float(a.get("beta", 0.5)))
            case Op.HARDSWISH:
                return self.add("HardSwish", [x], out, out)
            case Op.SILU:
                gate = self.add("Sigmoid", [x], f"{out}.sigmoid", f"{out}.sigmoid")
                return self.add("Mul", [x, gate], out, out)
            case Op.SOFTMAX:
                return self.add("Softmax", [x], out, out, axis=int(a.get("axis", -1)))
            case Op.BATCHNORM:     # ONNX wants one value per channel, the IR broadcasts
                channels = self.shapes[node.inputs[0]][1]
                p = {k: np.broadcast_to(np.asarray(v, dtype=np.float64).reshape(-1),
                                        (channels,)) for k, v in node.params.items()}
                return self.add("BatchNormalization",
                                [x] + [self.const(f"{out}.{k}", p[k])
                                       for k in ("gamma", "beta", "mean", "var")],
                                out, out, epsilon=float(a.get("eps", 1e-5)))
            case Op.QUANTIZE if not self.quantized:
                return self.add("Identity", [x], out, out)
            case Op.QUANTIZE:
                elem, width = _int_type(int(a["bits"]), bool(a["signed"]))
                if width != int(a["bits"]):
                    raise ValueError(f"node {out!r}: a {a['bits']}-bit quantize node has no "
                                     "ONNX type")
                s = self.const(f"{out}.scale", float(a["scale"]))
                z = self.int_const(f"{out}.zero_point", np.asarray(int(a["zero_point"])), elem)
                q = self.add("QuantizeLinear", [x, s, z], f"{out}.q", f"{out}.quantize")
                return self.add("DequantizeLinear", [q, s, z], out, out)
            case Op.ADD_CONST | Op.MUL_CONST:
                c = self.const(f"{out}.constant", node.params["constant"])
                return self.add("Add" if node.op is Op.ADD_CONST else "Mul", [x, c], out, out)
            case Op.SIGN:     # the IR maps 0 to +1; ONNX Sign maps it to 0
                ge = self.add("GreaterOrEqual", [x, self.const(f"{out}.zero", 0.0)],
                              f"{out}.ge", f"{out}.ge")
                return self.add("Where", [ge, self.const(f"{out}.one", 1.0),
                                          self.const(f"{out}.minus_one", -1.0)], out, out)
            case Op.LAYERNORM:
                return self.add("LayerNormalization",
                                [x, self.const(f"{out}.gamma", node.params["gamma"]),
                                 self.const(f"{out}.beta", node.params["beta"])],
                                out, out, axis=-1, epsilon=float(a.get("eps", 1e-5)))
            case Op.GELU:
                return self.add("Gelu", [x], out, out, approximate=a.get("approximate", "none"))
            case Op.TRANSPOSE:
                return self.add("Transpose", [x], out, out, perm=[0, *map(int, a["perm"])])
            case Op.RESHAPE:
                shape = self.const(f"{out}.shape", [0, *map(int, a["shape"])], np.int64)
                return self.add("Reshape", [x, shape], out, out)
            case Op.SLICE:
                axis, start, stop = int(a["axis"]), int(a["start"]), int(a["stop"])
                return self.add("Slice", [x, self.const(f"{out}.starts", [start], np.int64),
                                          self.const(f"{out}.ends", [stop], np.int64),
                                          self.const(f"{out}.axes", [axis], np.int64)],
                                out, out)
            case Op.CONCAT:
                inputs = [names[i] for i in node.inputs]
                if "constant" in node.params:
                    c = node.params["constant"]
                    batch = self.add("Shape", [x], f"{out}.shape", f"{out}.shape", start=0,
                                     end=1)
                    shape = self.add("Concat", [batch, self.const(f"{out}.rest", c.shape[1:],
                                                                  np.int64)],
                                     f"{out}.expand_shape", f"{out}.expand_shape", axis=0)
                    expanded = self.add("Expand", [self.const(f"{out}.constant", c), shape],
                                        f"{out}.expanded", f"{out}.expand")
                    inputs.insert(int(a.get("constant_index", 0)), expanded)
                return self.add("Concat", inputs, out, out, axis=int(a["axis"]))
            case Op.MEAN:
                axes = self.const(f"{out}.axes", [int(i) for i in a["axes"]], np.int64)
                return self.add("ReduceMean", [x, axes], out, out,
                                keepdims=int(bool(a.get("keepdims", True))))
        raise ValueError(f"node {out!r}: op {node.op.value} has no ONNX export")


def to_onnx(graph: Graph, *, quantized: bool = True) -> onnx.ModelProto:
    """The ONNX model of ``graph`` (input ``"input"``, output ``"output"``).

    ``quantized=False`` writes the float view (what ``run_graph(..., quantized=False)``
    computes): float weights, no Q/DQ nodes.
    """
    writer = _Writer(graph, quantized)
    probe = run_graph(graph, np.zeros((1, *graph.input_shape)), quantized=False,
                      return_all=True)
    writer.shapes = {k: v.shape for k, v in probe.items()}
    names = {"input": "input"}
    for node in graph.nodes:
        names[node.name] = writer.node(node, names)
    last = writer.add("Identity", [names[graph.output_name]], "output", "output")
    out_shape = writer.shapes[graph.output_name][1:]
    model = helper.make_model(
        helper.make_graph(
            writer.nodes, graph.name,
            [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                           ["batch", *graph.input_shape])],
            [helper.make_tensor_value_info(last, TensorProto.FLOAT, ["batch", *out_shape])],
            writer.inits),
        opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION,
        producer_name="chipforge")
    # Weight widths that no ONNX type has (2-bit BNN weights in an int4): recorded here, and
    # restored by load_onnx.
    narrow = {n.name: int(n.attrs["weight_bits"]) for n in graph.weighted_nodes()
              if quantized and "weight_bits" in n.attrs
              and int(n.attrs["weight_bits"]) not in (4, 8, 16)}
    if narrow:
        helper.set_model_props(model, {WEIGHT_BITS_KEY: json.dumps(narrow, sort_keys=True)})
    return model


def save_onnx(graph: Graph, path, *, quantized: bool = True) -> None:
    from chipforge.files import atomic_write

    atomic_write(path, to_onnx(graph, quantized=quantized).SerializeToString())
