"""Import an ONNX model into chipforge's model IR (:class:`chipforge.sim.graph.Graph`).

``load_onnx(path)`` reads a float or QDQ-quantized ONNX model (one image/vector input, one
output, batch axis first) and returns a :class:`Graph` that the numpy executor and the
accelerator simulators run. Supported operators: :data:`SUPPORTED_OPS`.

How it works:

1. **Check everything first.** The file is parsed and checked with ``onnx.checker``
   (a corrupt or truncated file is one ``OnnxImportError``); then every node's operator,
   domain and attributes are checked against :data:`SUPPORTED_OPS`, and all the problems
   found are reported in ONE error naming each op and node and listing what is supported.
   Nothing runs before this passes.
2. **Convert node by node.** Constant sub-graphs (initializers, ``Constant``, the
   ``Shape -> Gather -> Concat`` chains that exporters emit for ``x.view(x.size(0), -1)``,
   ``DequantizeLinear`` of integer weights) are folded with numpy; the batch size stays
   symbolic. Each new IR node is run once on a one-sample probe, so a shape that does not
   fit is an error naming the ONNX node, raised during import.
3. **Fold what the IR expresses more simply.** ``BatchNormalization`` after a float
   ``Conv``/``Gemm`` is folded into its weights (else kept as ``BATCHNORM``); ``Add`` of a
   per-channel constant after a ``Conv``/``Gemm``/``MatMul`` becomes its bias; ``Gemm``'s
   ``alpha``/``beta`` and ``transB`` are folded into the weight and bias.

Quantized (QDQ) models — ``QuantizeLinear``/``DequantizeLinear`` pairs as written by
``onnxruntime.quantization.quantize_static(quant_format=QuantFormat.QDQ)``:

- A ``DequantizeLinear`` of an integer weight initializer gives the layer's
  ``weight_bits`` (from the integer type) and ``weight_scale`` (a float, or a list per
  output channel). Weights must be symmetric: signed integers with zero point 0.
- A ``QuantizeLinear -> DequantizeLinear`` pair on an activation becomes a ``QUANTIZE``
  node (fake quantization, exactly ONNX's rounding: half to even, saturating). When a
  ``Conv``/``Gemm``/``MatMul`` reads it, the pair is absorbed into that layer's
  ``act_bits``/``act_scale``/``act_signed``, and the layer's integer product goes through
  the executor's ``matmul`` hook. This needs activation zero point 0 (unsigned after a
  ReLU, or signed symmetric): a non-zero zero point would shift every input code and the
  crossbar would need a correction term that the IR does not model, so it is rejected,
  naming the tensor and the fix (``extra_options={"ActivationSymmetric": True}``, or
  quantize only post-ReLU activations). Pairs elsewhere (around ``Add``, pooling, the
  output) stay as ``QUANTIZE`` nodes with their zero points.
- Integer biases (``DequantizeLinear`` of int32, scale = input scale x weight scale) are
  folded to their float values, which are what onnxruntime adds too.

Sparsity is read from the weights: ``graph.meta["density"]`` holds each weighted layer's
fraction of non-zero weights (:func:`weight_density`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from chipforge.sim.executor import run_node
from chipforge.sim.graph import Graph, Node, Op

__all__ = ["SUPPORTED_OPS", "OnnxImportError", "import_onnx", "load_onnx", "weight_density"]


class OnnxImportError(ValueError):
    """The ONNX model cannot be imported: the message names the node, op and rule."""


# What each supported ONNX operator may be, in words (for error messages and the README).
SUPPORTED_OPS: dict[str, str] = {
    "Conv": "2-D, square stride, symmetric pads, dilation 1, any group count",
    "Gemm": "activation A (transA=0), constant B (transB 0 or 1), alpha, beta, constant C",
    "MatMul": "activation x constant 2-D weight (-> linear), or two activations",
    "Relu": "",
    "Sign": "binarization to +-1 (BNNs); an input of exactly 0 gives +1, not ONNX's 0",
    "Clip": "constant bounds (ReLU6; narrow activation codes before QuantizeLinear)",
    "BatchNormalization": "inference mode; folded into a preceding float Conv/Gemm",
    "MaxPool": "2-D, square kernel and stride, symmetric pads, ceil_mode 0 or 1, dilation 1",
    "AveragePool": "2-D, square kernel and stride, symmetric pads, ceil_mode=0, "
                   "count_include_pad=1 when padded",
    "GlobalAveragePool": "2-D",
    "Flatten": "axis 1 (other axes merge the batch)",
    "Reshape": "batch axis kept (first target dim: batch, 0 or -1); allowzero=1 without a 0 "
               "in the target shape",
    "Add": "two activations of one shape (residual), or activation + constant",
    "Sub": "activation - constant",
    "Mul": "activation x constant; two activations of one rank, broadcast over non-batch "
           "axes (squeeze-and-excitation's x * gate); x * Sigmoid(x) is SiLU",
    "Sigmoid": "", "HardSigmoid": "any alpha, beta", "HardSwish": "",
    "Div": "activation / constant",
    "Softmax": "over a non-batch axis",
    "LayerNormalization": "over the last axis",
    "Gelu": "approximate none or tanh; also the Div/Erf/Add/Mul/Mul pattern of older opsets",
    "Split": "along a non-batch axis",
    "ReduceMean": "over non-batch axes (given; empty axes mean all axes: refused)",
    "Pow": "on constants",
    "Sqrt": "on constants",
    "Expand": "on constants (over the batch only into a Concat)",
    "Transpose": "batch axis stays first",
    "QuantizeLinear": "per-tensor on activations, per-tensor or per-channel on weights, "
                      "8/16/4-bit integers",
    "DequantizeLinear": "paired with QuantizeLinear, or on integer initializers",
    "Identity": "",
    "Dropout": "inference (identity)",
    "Constant": "",
    "Cast": "on constants, or to float on activations",
    "Shape": "shape computations on constants only",
    "Gather": "on constants, or a constant index (scalar or tensor) of a non-batch axis",
    "Unsqueeze": "any non-batch axes",
    "Squeeze": "any non-batch axes",
    "Concat": "on constants; activations along a non-batch axis, with constants expanded "
              "over the batch (class tokens)",
    "ConstantOfShape": "shape computations", "Equal": "shape computations",
    "Where": "shape computations; Where(x >= 0, 1, -1) is the IR's sign (BNNs)",
    "GreaterOrEqual": "x >= 0 inside Where(x >= 0, 1, -1)",
    "Slice": "step 1 along non-batch axes",
    "Pad": "zero pads only (F.unfold without padding)",
}

# Attributes each operator may carry, with a check of the value (None: any value).
_ANY = None


def _ints_equal(v) -> bool:
    return len(set(v)) <= 1


def _all_one(v) -> bool:
    return all(int(d) == 1 for d in v)


_ATTRS: dict[str, dict[str, Any]] = {
    "Conv": {"kernel_shape": _ANY, "strides": (_ints_equal, "equal in both axes"),
             "pads": (_ints_equal, "symmetric and equal in both axes"),
             "dilations": (_all_one, "1"), "group": _ANY,
             "auto_pad": (lambda v: v in (b"NOTSET", b"VALID"), "NOTSET or VALID")},
    "Gemm": {"alpha": _ANY, "beta": _ANY, "transA": (lambda v: v == 0, "0"), "transB": _ANY},
    "BatchNormalization": {"epsilon": _ANY, "momentum": _ANY,
                           "training_mode": (lambda v: v == 0, "0 (inference)"),
                           "spatial": (lambda v: v == 1, "1")},
    "MaxPool": {"kernel_shape": (_ints_equal, "square"), "strides": (_ints_equal, "square"),
                "pads": (_ints_equal, "symmetric and equal in both axes"),
                "dilations": (_all_one, "1"), "ceil_mode": (lambda v: v in (0, 1), "0 or 1"),
                "storage_order": (lambda v: v == 0, "0"),
                "auto_pad": (lambda v: v in (b"NOTSET", b"VALID"), "NOTSET or VALID")},
    "AveragePool": {"kernel_shape": (_ints_equal, "square"), "strides": (_ints_equal, "square"),
                    "pads": (_ints_equal, "symmetric and equal in both axes"),
                    "dilations": (_all_one, "1"), "ceil_mode": (lambda v: v == 0, "0"),
                    "count_include_pad": _ANY,
                    "auto_pad": (lambda v: v in (b"NOTSET", b"VALID"), "NOTSET or VALID")},
    "Flatten": {"axis": _ANY},
    "HardSigmoid": {"alpha": _ANY, "beta": _ANY},
    "Clip": {"min": _ANY, "max": _ANY},
    "Reshape": {"allowzero": _ANY},
    "Softmax": {"axis": _ANY},
    "LayerNormalization": {"axis": _ANY, "epsilon": _ANY, "stash_type": _ANY},
    "Gelu": {"approximate": (lambda v: v in (b"none", b"tanh"), "none or tanh")},
    "Transpose": {"perm": _ANY},
    "QuantizeLinear": {"axis": _ANY, "saturate": _ANY, "output_dtype": _ANY,
                       "block_size": (lambda v: v == 0, "0 (no blocked quantization)"),
                       "precision": _ANY},
    "DequantizeLinear": {"axis": _ANY, "block_size": (lambda v: v == 0, "0"),
                         "output_dtype": _ANY},
    "Dropout": {"seed": _ANY, "ratio": _ANY, "is_test": _ANY},
    "Constant": {"value": _ANY, "value_float": _ANY, "value_floats": _ANY, "value_int": _ANY,
                 "value_ints": _ANY},
    "Cast": {"to": _ANY, "saturate": _ANY, "round_mode": _ANY},
    "Shape": {"start": _ANY, "end": _ANY},
    "Gather": {"axis": _ANY},
    "Unsqueeze": {"axes": _ANY},
    "Squeeze": {"axes": _ANY},
    "Concat": {"axis": _ANY},
    "Slice": {"starts": _ANY, "ends": _ANY, "axes": _ANY},
    "Split": {"axis": _ANY, "split": _ANY, "num_outputs": _ANY},
    "ReduceMean": {"axes": _ANY, "keepdims": _ANY,
                   "noop_with_empty_axes": (lambda v: v == 0, "0")},
    "Pow": {}, "Sqrt": {}, "Pad": {"mode": _ANY, "pads": _ANY, "value": _ANY},
    "Expand": {},
    "ConstantOfShape": {"value": _ANY}, "Equal": {}, "Where": {}, "GreaterOrEqual": {},
}

# Ops that read views (tensors whose batch axis a Transpose/Reshape moved) directly.
_VIEW_OPS = frozenset({"Transpose", "Reshape", "Squeeze", "Unsqueeze", "Gather", "Split",
                       "Shape", "QuantizeLinear", "DequantizeLinear", "Identity", "Dropout",
                       "Slice"})
# Ops that run on a view's batch-first copy (they act on single non-batch axes).
_CANONICAL_OPS = frozenset({"Add", "Sub", "Mul", "Div", "Relu", "Clip", "Gelu", "Softmax",
                            "Sigmoid", "HardSigmoid", "HardSwish",
                            "LayerNormalization", "MatMul", "Gemm", "Cast", "Erf"})

# The batch size inside folded shape computations: a value no real dimension takes.
_BATCH = -(2**40) - 7

# Integer tensor types of QDQ models: numpy dtype name -> (bits, signed).
_INT_TYPES = {"int8": (8, True), "uint8": (8, False), "int16": (16, True),
              "uint16": (16, False), "int4": (4, True), "uint4": (4, False),
              "int32": (32, True)}


def supported_ops_text() -> str:
    return ", ".join(SUPPORTED_OPS)


def load_onnx(source: str | Path | bytes | onnx.ModelProto, *, name: str | None = None
              ) -> Graph:
    """Read an ONNX model (path, serialized bytes or ``ModelProto``) into a :class:`Graph`.

    Raises :class:`OnnxImportError` (a ``ValueError``) naming the file, node, op and rule
    when the file is unreadable or the model uses something the IR cannot express.
    """
    label = "ONNX model"
    if isinstance(source, onnx.ModelProto):
        model = source
    else:
        if isinstance(source, bytes):
            data = source
        else:
            path = Path(source)
            label = str(path)
            if path.exists() and not path.is_file() and not path.is_dir():
                raise OnnxImportError(f"ONNX file {path} is not a regular file (a pipe, "
                                      "device or socket); give a file")
            if not path.is_file():
                raise OnnxImportError(f"ONNX file {path} does not exist")
            data = path.read_bytes()
            name = name or path.stem
        model = onnx.ModelProto()
        try:
            model.ParseFromString(data)
        except Exception as e:  # protobuf raises DecodeError (a plain Exception subclass)
            raise OnnxImportError(f"{label} is not a valid ONNX file (corrupt or truncated): "
                                  f"{type(e).__name__}: {e}") from None
        if not model.HasField("graph") or not model.graph.node:
            raise OnnxImportError(f"{label} is not a valid ONNX file (corrupt or truncated): "
                                  "it holds no graph nodes")
        if not isinstance(source, bytes) and any(
                t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
            from onnx.external_data_helper import load_external_data_for_model

            try:     # weights saved next to the model (files over 2 GB, or by choice)
                load_external_data_for_model(model, str(Path(source).parent))
            except Exception as e:  # OSError, or onnx's ValidationError for a missing file
                raise OnnxImportError(f"{label}: its external weight data cannot be read: "
                                      f"{e}") from None
    try:
        onnx.checker.check_model(model)
    except Exception as e:  # ValidationError, or a protobuf error on half-written fields
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise OnnxImportError(f"{label} is not a valid ONNX model (corrupt or truncated?): "
                              f"{first}") from None
    return import_onnx(model, name=name or model.graph.name or "onnx_model", label=label)


def weight_density(graph: Graph) -> dict[str, float]:
    """Fraction of non-zero weights of each weighted layer (1.0 = dense)."""
    return {n.name: float(np.count_nonzero(n.params["weight"]) / n.params["weight"].size)
            for n in graph.weighted_nodes()}


def import_onnx(model: onnx.ModelProto, *, name: str = "onnx_model",
                label: str = "ONNX model") -> Graph:
    """Convert a checked ``ModelProto`` (see :func:`load_onnx`)."""
    model = _fuse_erf_gelu(model)
    _check_supported(model, label)
    _check_finite(model, label)
    return _Converter(model, name, label).run()


def _attr(node: onnx.NodeProto, key: str, default=None):
    for a in node.attribute:
        if a.name == key:
            return onnx.helper.get_attribute_value(a)
    return default


def _fuse_erf_gelu(model: onnx.ModelProto) -> onnx.ModelProto:
    """Exporters before opset 20 write GELU as x * (erf(x / sqrt 2) + 1) * 0.5 (five nodes);
    turn each such pattern into one ``Gelu`` node, as the hardware has one GELU unit."""
    nodes = list(model.graph.node)
    if not any(n.op_type == "Erf" for n in nodes):
        return model
    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for n in nodes:
        if n.op_type == "Constant" and _attr(n, "value") is not None:
            consts[n.output[0]] = numpy_helper.to_array(_attr(n, "value"))
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in nodes:
        for t in n.input:
            readers.setdefault(t, []).append(n)
    outputs = {o.name for o in model.graph.output}

    def only_reader(t):
        r = readers.get(t, [])
        return r[0] if len(r) == 1 and t not in outputs else None

    def other(node, t):      # the operand of a binary node that is not t
        return node.input[1] if node.input[0] == t else node.input[0]

    def is_const(t, value):
        return t in consts and consts[t].size == 1 and np.isclose(float(consts[t]), value,
                                                                  rtol=1e-5)

    producer = {o: n for n in nodes for o in n.output}
    remove, insert = set(), {}
    for erf in (n for n in nodes if n.op_type == "Erf"):
        div = producer.get(erf.input[0])
        if div is None or not (div.op_type == "Div" and is_const(div.input[1], np.sqrt(2))
                               or div.op_type == "Mul" and (is_const(div.input[1], 1 / np.sqrt(2))
                                                            or is_const(div.input[0],
                                                                        1 / np.sqrt(2)))):
            continue
        x = div.input[0] if div.op_type == "Div" or not is_const(div.input[0], 1 / np.sqrt(2)) \
            else div.input[1]
        add = only_reader(erf.output[0])
        if add is None or add.op_type != "Add" or not is_const(other(add, erf.output[0]), 1.0):
            continue
        mul1 = only_reader(add.output[0])
        if mul1 is None or mul1.op_type != "Mul":
            continue
        half = only_reader(mul1.output[0])
        if other(mul1, add.output[0]) == x and half is not None and half.op_type == "Mul" \
                and is_const(other(half, mul1.output[0]), 0.5):
            chain, out = [div, erf, add, mul1, half], half.output[0]
        else:
            continue
        if only_reader(div.output[0]) is not erf:
            continue
        gelu = onnx.helper.make_node("Gelu", [x], [out], name=erf.name.replace("Erf", "Gelu")
                                     or out)
        remove.update(id(c) for c in chain)
        insert[id(half)] = gelu
    if not remove:
        return model
    fused = onnx.ModelProto()
    fused.CopyFrom(model)
    del fused.graph.node[:]
    for n in nodes:
        if id(n) in insert:
            fused.graph.node.append(insert[id(n)])
        elif id(n) not in remove:
            fused.graph.node.append(n)
    return fused


# Ops that only read their input's shape: their output is a constant (the batch size a
# placeholder) whatever the input is.
_SHAPE_READERS = frozenset({"Shape"})
# Ops never folded: their value is not a function of their inputs.
_NOT_FOLDABLE = re.compile(r"Random.*|Bernoulli|Multinomial|If|Loop|Scan|SequenceMap")


def _constant_nodes(model: onnx.ModelProto) -> set[int]:
    """Indices of the nodes whose outputs are constants: all their inputs are initializers,
    ``Constant`` outputs or constant outputs themselves (shape computations), or they only
    read a shape. They are folded with numpy (onnx's reference implementation for ops that
    chipforge has no converter for), so any standard op may appear there."""
    known = {t.name for t in model.graph.initializer} | {""}
    found = set()
    for i, node in enumerate(model.graph.node):
        if _NOT_FOLDABLE.fullmatch(node.op_type):
            continue
        if (node.op_type == "Constant" or node.op_type in _SHAPE_READERS
                or (node.input and all(t in known for t in node.input))):
            found.add(i)
            known.update(node.output)
    return found


def _check_supported(model: onnx.ModelProto, label: str) -> None:
    """Every op, domain and attribute, before anything runs: one error listing all problems."""
    from onnx.reference.ops import load_op

    problems = []
    constant = _constant_nodes(model)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
    for i, node in enumerate(model.graph.node):
        where = f"node {node.name or f'#{i}'!r} ({node.op_type})"
        if node.domain not in ("", "ai.onnx"):
            problems.append(f"{where}: domain {node.domain!r} is not supported (only the "
                            "standard ONNX domain)")
            continue
        if i in constant and node.op_type not in SUPPORTED_OPS:
            try:      # folded by onnx's reference implementation
                load_op("", node.op_type, opset)
            except Exception:
                problems.append(f"{where}: op {node.op_type!r} on constants has no reference "
                                "implementation to fold it with")
            continue
        if node.op_type not in SUPPORTED_OPS:
            problems.append(f"{where}: op {node.op_type!r} is not supported")
            continue
        allowed = _ATTRS.get(node.op_type, {})
        for a in node.attribute:
            if a.name not in allowed:
                problems.append(f"{where}: attribute {a.name!r} is not supported "
                                f"(supported: {', '.join(allowed) or 'none'})")
                continue
            rule = allowed[a.name]
            if rule is not None and not rule[0](onnx.helper.get_attribute_value(a)):
                value = onnx.helper.get_attribute_value(a)
                if isinstance(value, bytes):
                    value = value.decode()
                problems.append(f"{where}: attribute {a.name}={value!r} is not supported "
                                f"(must be {rule[1]})")
    if problems:
        shown = problems[:10] + ([f"... and {len(problems) - 10} more"] if len(problems) > 10
                                 else [])
        raise OnnxImportError(
            f"{label} cannot be imported:\n  " + "\n  ".join(shown)
            + f"\nSupported ops: {supported_ops_text()}. The README section 'Bring your own "
            "model' lists their limits.")


def _check_finite(model: onnx.ModelProto, label: str) -> None:
    """NaN or infinite weights would run and report numbers (all-NaN logits argmax to class
    0): refuse them, naming the tensor."""
    tensors = [(t.name, t) for t in model.graph.initializer]
    tensors += [(n.output[0], a.t) for n in model.graph.node if n.op_type == "Constant"
                for a in n.attribute if a.name == "value"]
    bad = []
    for name, t in tensors:
        if t.data_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE,
                               onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16):
            continue
        v = numpy_helper.to_array(t)
        if not np.all(np.isfinite(v)):
            bad.append(f"{name!r} ({int(np.sum(np.isnan(v)))} NaN, "
                       f"{int(np.sum(np.isinf(v)))} infinite of {v.size})")
    if bad:
        raise OnnxImportError(f"{label}: weights must be finite numbers; not finite: "
                              f"{', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}")


@dataclass
class _WeightQuant:
    """A weight initializer that came through DequantizeLinear."""

    scale: np.ndarray  # scalar or per-channel along `axis`
    axis: int
    bits: int


@dataclass
class _PendingQuant:
    """The integer output of QuantizeLinear on an activation, waiting for its DequantizeLinear."""

    source: str        # ONNX tensor quantized
    scale: float
    zero_point: int
    bits: int
    signed: bool


def _sanitize(name: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.\-]+", ".", name.strip("/")).strip(".")
    return name or "node"


class _Converter:
    def __init__(self, model: onnx.ModelProto, name: str, label: str):
        self.model, self.name, self.label = model, name, label
        self.graph = model.graph
        self.consts: dict[str, np.ndarray] = {
            t.name: numpy_helper.to_array(t) for t in self.graph.initializer}
        self.weight_quant: dict[str, _WeightQuant] = {}
        self.pending: dict[str, _PendingQuant] = {}
        self.tensor_node: dict[str, str] = {}     # ONNX activation tensor -> IR node name
        self.values: dict[str, np.ndarray] = {}   # IR node name -> one-sample probe output
        self.nodes: list[Node] = []
        self.by_name: dict[str, Node] = {}
        self.used_names = {"input"}
        self.consumers: dict[str, int] = {}
        for node in self.graph.node:
            for t in node.input:
                if t:
                    self.consumers[t] = self.consumers.get(t, 0) + 1
        for out in self.graph.output:
            self.consumers[out.name] = self.consumers.get(out.name, 0) + 1
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
                          1)
        self._int_kind: dict[str, tuple[int, bool]] = {}   # folded QuantizeLinear outputs
        self._weight_problem: dict[str, str] = {}  # asymmetric weights: error if used
        self.batch_consts: dict[str, np.ndarray] = {}  # constants expanded over the batch
        self.batch_codes: dict[str, tuple] = {}    # ... quantized: (codes, scale, zero point)
        self.virtual: dict[str, tuple[str, tuple]] = {}  # batch moved: see view()
        self._canon_cache: dict[str, tuple] = {}
        self.restored_clamps: list[str] = []      # see _restore_clamp
        self.sign_conditions: dict[str, str] = {}  # x >= 0 tensors -> IR value x

    # -- errors -------------------------------------------------------------------------
    def fail(self, node: onnx.NodeProto, message: str) -> OnnxImportError:
        return OnnxImportError(f"{self.label}: node {node.name or node.output[0]!r} "
                               f"({node.op_type}): {message}")

    # -- inputs and outputs -------------------------------------------------------------
    def _graph_input(self) -> tuple[str, tuple[int, ...]]:
        inputs = [i for i in self.graph.input if i.name not in self.consts]
        if len(inputs) != 1:
            raise OnnxImportError(f"{self.label}: the IR takes exactly one input tensor, the "
                                  f"model has {len(inputs)}: "
                                  f"{', '.join(i.name for i in inputs)}")
        tin = inputs[0]
        ttype = tin.type.tensor_type
        if ttype.elem_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE,
                                   onnx.TensorProto.FLOAT16):
            raise OnnxImportError(f"{self.label}: input {tin.name!r} has element type "
                                  f"{onnx.TensorProto.DataType.Name(ttype.elem_type)}; "
                                  "only float inputs are supported")
        dims = list(ttype.shape.dim)
        if len(dims) < 2:
            raise OnnxImportError(f"{self.label}: input {tin.name!r} must be (batch, ...), "
                                  f"has rank {len(dims)}")
        shape = []
        for d in dims[1:]:
            if not d.HasField("dim_value"):
                raise OnnxImportError(f"{self.label}: input {tin.name!r} has a symbolic "
                                      f"dimension {d.dim_param!r} after the batch axis; "
                                      "export with a fixed sample shape")
            shape.append(int(d.dim_value))
        self.fixed_batch = int(dims[0].dim_value) if dims[0].HasField("dim_value") else None
        return tin.name, tuple(shape)

    # -- helpers ------------------------------------------------------------------------
    def is_const(self, t: str) -> bool:
        return t in self.consts

    def const(self, node: onnx.NodeProto, t: str, what: str) -> np.ndarray:
        if t not in self.consts:
            raise self.fail(node, f"{what} ({t!r}) must be a constant (an initializer), "
                                  "not a computed activation")
        return self.consts[t]

    def act(self, node: onnx.NodeProto, t: str) -> str:
        """IR node name of activation tensor ``t``."""
        if t in self.tensor_node:
            return self.tensor_node[t]
        if t in self.virtual:
            raise self.fail(node, f"reads {t!r}, whose batch axis a Transpose or Reshape "
                                  "moved; supported there: Transpose, Reshape, Split, Gather, "
                                  "Slice, Squeeze, Unsqueeze and the ops of one axis "
                                  "(elementwise, Softmax, LayerNormalization, MatMul)")
        if t in self.pending:
            raise self.fail(node, f"reads the integer output {t!r} of a QuantizeLinear; "
                                  "only DequantizeLinear may read it (QOperator models, e.g. "
                                  "QLinearConv, are not supported: export in QDQ format)")
        raise self.fail(node, f"input {t!r} is neither the graph input, a constant nor "
                              "the output of a supported node")

    def emit(self, onnx_node: onnx.NodeProto, op: Op, inputs: tuple[str, ...],
             attrs: dict | None = None, params: dict | None = None, output: str | None = None,
             suffix: str = "") -> Node:
        base = _sanitize(onnx_node.name or onnx_node.output[0]) + suffix
        name, k = base, 1
        while name in self.used_names:
            k += 1
            name = f"{base}_{k}"
        self.used_names.add(name)
        node = Node(op, name, inputs, attrs or {},
                    {k: np.asarray(v, dtype=np.float64) for k, v in (params or {}).items()})
        self.probe(onnx_node, node)
        self.nodes.append(node)
        self.by_name[name] = node
        self.tensor_node[output or onnx_node.output[0]] = name
        return node

    def probe(self, onnx_node: onnx.NodeProto, node: Node) -> None:
        args = [self.values[i] for i in node.inputs]
        try:
            with np.errstate(all="ignore"):
                self.values[node.name] = run_node(node, args, quantized=False)
        except (ValueError, IndexError) as e:
            shapes = ", ".join(str(tuple(a.shape[1:])) for a in args)
            raise self.fail(onnx_node, f"input shape(s) {shapes} (per sample) do not fit: "
                                       f"{e}") from None

    def shape(self, ir_name: str) -> tuple[int, ...]:
        """Per-sample shape of an IR value."""
        return tuple(self.values[ir_name].shape[1:])

    def only_consumer(self, t: str) -> bool:
        return self.consumers.get(t, 0) == 1

    # -- main ---------------------------------------------------------------------------
    def run(self) -> Graph:
        input_name, input_shape = self._graph_input()
        self.tensor_node[input_name] = "input"
        self.values["input"] = np.zeros((1, *input_shape))
        for node in self.graph.node:
            handler = getattr(self, f"op_{node.op_type}", self._fold_reference)
            try:
                if (node.op_type not in _VIEW_OPS
                        and any(t in self.virtual for t in node.input)):
                    self._through_canonical(node, handler)
                else:
                    handler(node)
            except OnnxImportError:
                raise
            except (ValueError, IndexError, TypeError, KeyError) as e:
                # A malformed node that the checks above did not foresee: still one line
                # naming the node, not a traceback from inside numpy.
                raise self.fail(node, f"cannot be imported ({type(e).__name__}: {e})") from None
        if len(self.graph.output) != 1:
            raise OnnxImportError(f"{self.label}: the IR has one output, the model has "
                                  f"{len(self.graph.output)}: "
                                  f"{', '.join(o.name for o in self.graph.output)}")
        out = self.graph.output[0].name
        if out in self.virtual:
            raise OnnxImportError(f"{self.label}: output {out!r} does not have the batch axis "
                                  "first (a Transpose or Reshape moved it); the IR's outputs "
                                  "are (batch, ...)")
        if self.tensor_node.get(out) == "input":
            raise OnnxImportError(f"{self.label}: output {out!r} is the input itself (the "
                                  "graph computes nothing from it)")
        if out in self.consts:
            raise OnnxImportError(f"{self.label}: output {out!r} is a constant (it does not "
                                  "depend on the input)")
        if out in self.pending:
            raise OnnxImportError(f"{self.label}: output {out!r} is the integer output of a "
                                  "QuantizeLinear; end the graph with its DequantizeLinear")
        if out not in self.tensor_node:
            raise OnnxImportError(f"{self.label}: output {out!r} is not computed by any "
                                  "supported node from the input (a constant or integer "
                                  "output?)")
        output = self.tensor_node[out]
        nodes = self._live_nodes(output)
        meta = {"source": "onnx", "onnx_producer": self.model.producer_name, "onnx_opset":
                self.opset}
        graph = Graph(_sanitize(self.name), input_shape, nodes, output=output, meta=meta)
        self._restore_weight_bits(graph)
        graph.meta["density"] = weight_density(graph)
        if self.restored_clamps:
            graph.meta["restored_clamps"] = list(self.restored_clamps)
        return graph

    def _restore_weight_bits(self, graph: Graph) -> None:
        """chipforge's own export records weight widths without an ONNX type (2-bit BNN
        weights stored in int4): take them back where the integer weights fit."""
        from chipforge.sim.executor import integer_weights

        props = {p.key: p.value for p in self.model.metadata_props}
        text = props.get("chipforge.weight_bits", "{}")
        try:
            narrow = json.loads(text)
        except json.JSONDecodeError:
            narrow = None
        if not isinstance(narrow, dict) or not all(
                isinstance(v, int) and not isinstance(v, bool) for v in narrow.values()):
            raise OnnxImportError(f"{self.label}: metadata 'chipforge.weight_bits' must be a "
                                  "JSON object of node name -> integer bits (as chipforge "
                                  f"writes it), not {text[:80]!r}")
        for node in graph.weighted_nodes():
            bits = narrow.get(node.name)
            if isinstance(bits, int) and "weight_bits" in node.attrs and 1 < bits < \
                    node.attrs["weight_bits"]:
                q = integer_weights(node)
                if q.size and -(1 << (bits - 1)) <= q.min() and q.max() < (1 << (bits - 1)):
                    node.attrs["weight_bits"] = bits

    def _live_nodes(self, output: str) -> list[Node]:
        live, stack = set(), [output]
        while stack:
            n = stack.pop()
            if n in live or n == "input":
                continue
            live.add(n)
            stack.extend(self.by_name[n].inputs)
        return [n for n in self.nodes if n.name in live]

    def alias(self, node: onnx.NodeProto, source: str) -> None:
        self.tensor_node[node.output[0]] = self.act(node, source)

    # -- constants and shape computations -----------------------------------------------
    def fold(self, node: onnx.NodeProto, value: np.ndarray) -> None:
        self.consts[node.output[0]] = np.asarray(value)

    def all_const(self, node: onnx.NodeProto) -> bool:
        return all(t == "" or t in self.consts for t in node.input)

    def _fold_reference(self, node):
        """A node of an op without a converter whose inputs are all constants (a shape
        computation such as ``Mod``, ``Range``, ``Max``): onnx's reference implementation."""
        from onnx.reference import ReferenceEvaluator

        if not self.all_const(node):    # _check_supported lets only constant nodes here
            raise self.fail(node, f"op {node.op_type!r} is supported on constants only")
        args = {t: self.consts[t] for t in node.input if t}
        if any(np.issubdtype(a.dtype, np.integer) and np.any(a == _BATCH)
               for a in args.values()):
            raise self.fail(node, "computes with the dynamic batch size; not supported "
                                  "(export with a fixed batch size, or without this op)")
        evaluator = ReferenceEvaluator(node, opsets={"": self.opset})
        for out, value in zip(node.output, evaluator.run(None, args), strict=False):
            if out:
                self.consts[out] = np.asarray(value)

    def op_Constant(self, node):
        for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
            v = _attr(node, key)
            if v is not None:
                self.fold(node, numpy_helper.to_array(v) if key == "value" else np.asarray(v))
                return
        raise self.fail(node, "has no supported value attribute")

    def op_Identity(self, node):
        if self.is_const(node.input[0]):
            self.fold(node, self.consts[node.input[0]])
        elif node.input[0] in self.pending:
            self.pending[node.output[0]] = self.pending[node.input[0]]
        else:
            self.alias(node, node.input[0])

    def op_Dropout(self, node):
        if len(node.input) > 2 and node.input[2]:
            mode = self.const(node, node.input[2], "training_mode")
            if bool(mode):
                raise self.fail(node, "training_mode must be false (inference)")
        if len(node.output) > 1 and node.output[1] and self.consumers.get(node.output[1]):
            raise self.fail(node, "its mask output is used; only inference Dropout "
                                  "(identity) is supported")
        self.op_Identity(node)

    def op_Cast(self, node):
        to = onnx.helper.tensor_dtype_to_np_dtype(_attr(node, "to"))
        if self.is_const(node.input[0]):
            self.fold(node, self.consts[node.input[0]].astype(to))
        elif np.issubdtype(to, np.floating):
            self.alias(node, node.input[0])
        else:
            raise self.fail(node, f"casts an activation to {to}; only casts to float are "
                                  "supported on activations")

    def op_Shape(self, node):
        t = node.input[0]
        if self.is_const(t):
            shape = np.array(self.consts[t].shape, dtype=np.int64)
        elif t in self.virtual:
            src, groups = self.virtual[t]
            shape = np.array([(_BATCH if 0 in g else 1) * self._view_sizes(
                src, [tuple(a for a in g if a)])[0][1] for g in groups], dtype=np.int64)
        else:
            shape = np.array((_BATCH, *self.shape(self.act(node, t))), dtype=np.int64)
        start, end = _attr(node, "start", 0), _attr(node, "end", None)
        self.fold(node, shape[start:end])

    def _const_only(self, node, what: str):
        if not self.all_const(node):
            raise self.fail(node, f"{what} is supported on constants and shape computations "
                                  "only, not on activations")

    def op_Gather(self, node):
        if not self.all_const(node):
            self._gather_activation(node)
            return
        data, idx = self.consts[node.input[0]], self.consts[node.input[1]]
        self.fold(node, np.take(data, idx, axis=_attr(node, "axis", 0)))

    def _batch_axis_check(self, node, axes, rank, what) -> list[int]:
        axes = [a + rank if a < 0 else a for a in axes]
        if 0 in axes:
            raise self.fail(node, f"{what} the batch axis; not supported")
        return axes

    def _gather_activation(self, node):
        """x[:, ..., i, ...] with one constant index: a slice, then the axis dropped."""
        t = node.input[0]
        if t in self.virtual:
            idx = self.const(node, node.input[1], "the index")
            axis = _attr(node, "axis", 0) % self._virtual_rank(t)
            if idx.ndim != 0:
                raise self.fail(node, "only a scalar constant index is supported on "
                                      "activations")
            i = int(idx) % self._virtual_dim(t, axis)
            self._virtual_take(node, node.output[0], axis, i, i + 1, drop=True)
            return
        src = self.act(node, node.input[0])
        idx = self.const(node, node.input[1], "the index")
        shape = self.shape(src)
        (axis,) = self._batch_axis_check(node, [_attr(node, "axis", 0)], len(shape) + 1,
                                         "gathers along")
        if idx.ndim != 0:
            self._gather_runs(node, src, axis, idx)
            return
        i = int(idx) % shape[axis - 1]
        sliced = self.emit(node, Op.SLICE, (src,), dict(axis=axis, start=i, stop=i + 1),
                           output=node.output[0] + "#slice", suffix=".slice")
        rest = shape[:axis - 1] + shape[axis:]
        self._reshape_to(node, sliced.name, rest)

    def _gather_runs(self, node, src: str, axis: int, idx: np.ndarray) -> None:
        """x gathered along ``axis`` by a constant index tensor (dynamo's ``unfold``: a
        (windows, size) index of consecutive runs): a SLICE per run of consecutive indices,
        a CONCAT of the runs, then the axis reshaped into the index's shape."""
        shape = self.shape(src)
        idx = np.asarray(idx, dtype=np.int64) % shape[axis - 1]
        flat = idx.reshape(-1)
        if flat.size == 0:
            raise self.fail(node, "gathers with an empty index; not supported")
        n = shape[axis - 1]
        if idx.ndim == 2 and idx.size == n and np.array_equal(
                idx, np.arange(n).reshape(idx.shape[::-1]).T):
            # F.unfold's windows of a stride-sized grid: index [a, b] = a + A * b, the axis
            # split as (B, A) and the two parts swapped
            split = self.emit(node, Op.RESHAPE, (src,), dict(
                shape=list(shape[:axis - 1] + idx.shape[::-1] + shape[axis:])),
                output=f"{node.output[0]}#split", suffix=".split").name
            perm = list(range(1, len(shape) + 2))
            perm[axis - 1], perm[axis] = perm[axis], perm[axis - 1]
            self.emit(node, Op.TRANSPOSE, (split,), dict(perm=perm))
            return
        breaks = np.flatnonzero(np.diff(flat) != 1) + 1
        parts = []
        for k, run in enumerate(np.split(flat, breaks)):
            parts.append(self.emit(node, Op.SLICE, (src,), dict(
                axis=axis, start=int(run[0]), stop=int(run[-1]) + 1),
                output=f"{node.output[0]}#run{k}", suffix=f".run{k}").name)
        joined = parts[0]
        if len(parts) > 1:
            joined = self.emit(node, Op.CONCAT, tuple(parts), dict(axis=axis),
                               output=f"{node.output[0]}#runs", suffix=".runs").name
        target = shape[:axis - 1] + tuple(int(d) for d in idx.shape) + shape[axis:]
        self._reshape_to(node, joined, target)

    def op_Pad(self, node):
        pads = self.const(node, node.input[1], "the pads") if len(node.input) > 1 and \
            node.input[1] else np.asarray(_attr(node, "pads", []))
        if self.is_const(node.input[0]):
            return self._fold_reference(node)
        if np.any(np.asarray(pads) != 0):
            raise self.fail(node, f"pads {np.asarray(pads).tolist()}: only a Pad that adds "
                                  "nothing (F.unfold without padding) is supported; pad "
                                  "inside Conv or the pooling op")
        self.alias(node, node.input[0])

    def op_Split(self, node):
        if self.all_const(node):
            x = self.consts[node.input[0]]
            axis = _attr(node, "axis", 0)
            sizes = self._split_sizes(node, x.shape[axis])
            for out, part in zip(node.output, np.split(x, np.cumsum(sizes)[:-1], axis=axis),
                                 strict=True):
                self.consts[out] = part
            return
        t = node.input[0]
        if t in self.virtual:
            axis = _attr(node, "axis", 0) % self._virtual_rank(t)
            start = 0
            for k, (out, size) in enumerate(zip(
                    node.output, self._split_sizes(node, self._virtual_dim(t, axis)),
                    strict=True)):
                self._virtual_take(node, out, axis, start, start + size, drop=False,
                                   suffix=f".{k}")
                start += size
            return
        src = self.act(node, node.input[0])
        shape = self.shape(src)
        (axis,) = self._batch_axis_check(node, [_attr(node, "axis", 0)], len(shape) + 1,
                                         "splits")
        start = 0
        for k, (out, size) in enumerate(zip(node.output,
                                            self._split_sizes(node, shape[axis - 1]),
                                            strict=True)):
            self.emit(node, Op.SLICE, (src,), dict(axis=axis, start=start, stop=start + size),
                      output=out, suffix=f".{k}")
            start += size

    def _split_sizes(self, node, length: int) -> list[int]:
        split = _attr(node, "split")
        if split is None and len(node.input) > 1 and node.input[1]:
            split = self.const(node, node.input[1], "the split sizes")
        if split is not None:
            return [int(v) for v in split]
        parts = len(node.output)
        size = -(-length // parts)        # ceil, as ONNX num_outputs
        return [min(size, length - k * size) for k in range(parts)]

    def op_ReduceMean(self, node):
        src = self.act(node, node.input[0])
        rank = len(self.shape(src)) + 1
        axes = _attr(node, "axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            axes = np.atleast_1d(self.const(node, node.input[1], "the axes")).tolist()
        if axes is None or len(axes) == 0:    # empty axes: all axes (noop_with_empty_axes=0)
            raise self.fail(node, "reduces over all axes, the batch axis included; not "
                                  "supported")
        axes = self._batch_axis_check(node, list(axes), rank, "averages over")
        self.emit(node, Op.MEAN, (src,), dict(axes=sorted(axes),
                                              keepdims=bool(_attr(node, "keepdims", 1))))

    def op_Pow(self, node):
        self._const_only(node, "Pow")
        self.fold(node, np.power(self.consts[node.input[0]], self.consts[node.input[1]]))

    def op_Sqrt(self, node):
        self._const_only(node, "Sqrt")
        self.fold(node, np.sqrt(self.consts[node.input[0]]))

    def op_Expand(self, node):
        self._const_only(node, "Expand")
        shape = np.asarray(self.consts[node.input[1]]).copy()
        x = self.consts[node.input[0]]
        if np.any(shape == _BATCH):
            # A constant repeated over the batch (a ViT class token): kept with a batch axis
            # of 1; only a Concat may read it.
            if shape[0] != _BATCH or np.any(shape[1:] == _BATCH):
                raise self.fail(node, "expands over the batch in an axis other than the "
                                      "first; not supported")
            shape[0] = 1
            self.batch_consts[node.output[0]] = x * np.ones(shape, dtype=x.dtype)
            return
        self.fold(node, x * np.ones(shape, dtype=x.dtype))

    def op_ConstantOfShape(self, node):
        self._const_only(node, "ConstantOfShape")
        shape = self.consts[node.input[0]]
        if np.any(shape == _BATCH):
            raise self.fail(node, "a constant as large as the batch is not supported")
        value = _attr(node, "value")
        value = numpy_helper.to_array(value) if value is not None else np.zeros(1, np.float32)
        self.fold(node, np.full(shape.astype(np.int64), value.reshape(-1)[0],
                                dtype=value.dtype))

    def op_Equal(self, node):
        self._const_only(node, "Equal")
        self.fold(node, np.equal(self.consts[node.input[0]], self.consts[node.input[1]]))

    def op_Where(self, node):
        cond = node.input[0]
        if cond in self.sign_conditions:     # Where(x >= 0, 1, -1): binarization
            a, b = (self.const(node, t, "a Where branch") for t in node.input[1:])
            if a.size != 1 or b.size != 1 or float(a) != 1.0 or float(b) != -1.0:
                raise self.fail(node, "only Where(x >= 0, 1, -1) (sign) is supported on "
                                      "activations")
            self.emit(node, Op.SIGN, (self.sign_conditions[cond],))
            return
        self._const_only(node, "Where")
        c, a, b = (self.consts[t] for t in node.input)
        self.fold(node, np.where(c, a, b))

    def op_GreaterOrEqual(self, node):
        if self.all_const(node):
            self.fold(node, np.greater_equal(*(self.consts[t] for t in node.input)))
            return
        zero = self.const(node, node.input[1], "the threshold")
        if zero.size != 1 or float(zero) != 0.0:
            raise self.fail(node, "only x >= 0 (inside Where(x >= 0, 1, -1)) is supported")
        self.sign_conditions[node.output[0]] = self.act(node, node.input[0])

    def _axes(self, node, index: int):
        axes = _attr(node, "axes")
        if axes is None and len(node.input) > index and node.input[index]:
            axes = self.consts[node.input[index]]
        return None if axes is None else [int(a) for a in np.atleast_1d(axes)]

    def op_Unsqueeze(self, node):
        axes = self._axes(node, 1)
        if node.input[0] in self.virtual:
            src, groups = self.virtual[node.input[0]]
            groups, rank = list(groups), len(groups) + len(axes)
            for a in sorted(a % rank for a in axes):
                groups.insert(a, ())
            self._settle(node, node.output[0], src, tuple(groups))
            return
        if not self.is_const(node.input[0]):
            src = self.act(node, node.input[0])
            shape = list(self.shape(src))
            rank = len(shape) + 1 + len(axes)
            for a in sorted(self._batch_axis_check(node, axes, rank, "inserts")):
                shape.insert(a - 1, 1)
            self._reshape_to(node, src, tuple(shape))
            return
        x = self.consts[node.input[0]]
        rank = x.ndim + len(axes)
        for a in sorted(a % rank for a in axes):
            x = np.expand_dims(x, a)
        self.fold(node, x)

    def op_Squeeze(self, node):
        axes = self._axes(node, 1)
        t = node.input[0]
        if t in self.virtual:
            src, groups = self.virtual[t]
            rank = len(groups)
            sizes = self._view_sizes(src, groups)
            if axes is None:
                axes = [a for a in range(rank) if sizes[a] == (0, 1)]
            axes = [a % rank for a in axes]
            if any(sizes[a] != (0, 1) for a in axes):
                raise self.fail(node, f"squeezes axes {axes}, which are not of size 1")
            self._settle(node, node.output[0], src,
                         tuple(g for k, g in enumerate(groups) if k not in axes))
            return
        if not self.is_const(node.input[0]):
            src = self.act(node, node.input[0])
            shape = self.shape(src)
            if axes is None:
                axes = [i + 1 for i, d in enumerate(shape) if d == 1]
            axes = self._batch_axis_check(node, axes, len(shape) + 1, "squeezes")
            if any(shape[a - 1] != 1 for a in axes):
                raise self.fail(node, f"squeezes axes {axes} of {shape}, which are not 1")
            self._reshape_to(node, src, tuple(d for i, d in enumerate(shape)
                                              if i + 1 not in axes))
            return
        x = self.consts[node.input[0]]
        self.fold(node, np.squeeze(x, axis=None if axes is None else tuple(axes)))

    def op_Concat(self, node):
        if self.all_const(node):
            arrays = [self.consts[t] for t in node.input]
            self.fold(node, np.concatenate(arrays, axis=_attr(node, "axis")))
            return
        for t in node.input:
            c = self.consts.get(t)
            if (c is not None and self.fixed_batch is not None and c.ndim >= 1
                    and c.shape[0] == self.fixed_batch and np.all(c == c[:1])):
                # A class token expanded to the exported (static) batch size: the same
                # constant for every sample.
                self.batch_consts[t] = c[:1]
        acts = [t for t in node.input if t not in self.batch_consts]
        if any(self.is_const(t) for t in acts):
            raise self.fail(node, "joins activations with a constant that is not expanded "
                                  "over the batch; not supported")
        sources = [self.act(node, t) for t in acts]
        rank = len(self.shape(sources[0])) + 1
        (axis,) = self._batch_axis_check(node, [_attr(node, "axis")], rank, "concatenates along")
        const_pos = [i for i, t in enumerate(node.input) if t in self.batch_consts]
        attrs, params = dict(axis=axis), {}
        if const_pos:
            if const_pos != list(range(const_pos[0], const_pos[0] + len(const_pos))):
                raise self.fail(node, "its constants are not next to each other; only one "
                                      "block of expanded constants is supported")
            params["constant"] = np.concatenate([self.batch_consts[node.input[i]]
                                                 for i in const_pos], axis=axis)
            attrs["constant_index"] = const_pos[0]
        self.emit(node, Op.CONCAT, tuple(sources), attrs, params)

    def op_Slice(self, node):
        if not self.is_const(node.input[0]):
            self._slice_activation(node)
            return
        self._const_only(node, "Slice")
        x = self.consts[node.input[0]]
        if self.opset < 10:
            starts, ends = _attr(node, "starts"), _attr(node, "ends")
            axes, steps = _attr(node, "axes"), None
        else:
            get = lambda i: (self.consts[node.input[i]] if len(node.input) > i  # noqa: E731
                             and node.input[i] else None)
            starts, ends, axes, steps = get(1), get(2), get(3), get(4)
        axes = list(range(len(starts))) if axes is None else list(axes)
        steps = [1] * len(starts) if steps is None else list(steps)
        index = [slice(None)] * x.ndim
        for s, e, a, st in zip(starts, ends, axes, steps, strict=True):
            index[int(a)] = slice(int(s), int(e), int(st))
        self.fold(node, x[tuple(index)])

    def _slice_activation(self, node):
        if node.input[0] in self.virtual:
            self._slice_view(node)
            return
        src = self.act(node, node.input[0])
        shape = self.shape(src)
        if self.opset < 10:
            starts, ends, axes, steps = (_attr(node, "starts"), _attr(node, "ends"),
                                         _attr(node, "axes"), None)
        else:
            get = lambda i: (self.const(node, node.input[i], "a slice bound")  # noqa: E731
                             if len(node.input) > i and node.input[i] else None)
            starts, ends, axes, steps = get(1), get(2), get(3), get(4)
        axes = list(range(len(starts))) if axes is None else [int(a) for a in axes]
        axes = self._batch_axis_check(node, axes, len(shape) + 1, "slices")
        if steps is not None and any(int(v) != 1 for v in steps):
            raise self.fail(node, "only step 1 is supported")
        src_name = src
        for k, (s, e, a) in enumerate(zip(starts, ends, axes, strict=True)):
            start, stop, _ = slice(int(s), int(e)).indices(self.shape(src_name)[a - 1])
            if stop <= start:
                raise self.fail(node, f"slice {s}:{e} of axis {a} is empty")
            last = k == len(axes) - 1
            src_name = self.emit(node, Op.SLICE, (src_name,), dict(axis=a, start=start,
                                                                   stop=stop),
                                 output=node.output[0] if last else f"{node.output[0]}#{k}",
                                 suffix="" if last else f".{k}").name

    def _slice_view(self, node):
        """Slices of a view (dynamo's unbind: Slice, then Squeeze), one axis at a time."""
        get = lambda i: (self.const(node, node.input[i], "a slice bound")  # noqa: E731
                         if len(node.input) > i and node.input[i] else None)
        starts, ends, axes, steps = ((_attr(node, "starts"), _attr(node, "ends"),
                                      _attr(node, "axes"), None) if self.opset < 10
                                     else (get(1), get(2), get(3), get(4)))
        t = node.input[0]
        rank = self._virtual_rank(t)
        axes = list(range(len(starts))) if axes is None else [int(a) % rank for a in axes]
        if steps is not None and any(int(v) != 1 for v in steps):
            raise self.fail(node, "only step 1 is supported")
        for k, (s, e, a) in enumerate(zip(starts, ends, axes, strict=True)):
            start, stop, _ = slice(int(s), int(e)).indices(self._virtual_dim(t, a))
            if stop <= start:
                raise self.fail(node, f"slice {s}:{e} of axis {a} is empty")
            out = node.output[0] if k == len(axes) - 1 else f"{node.output[0]}#{k}"
            self._virtual_take(node, out, a, start, stop, drop=False, suffix=f".{k}", t=t)
            t = out

    # -- quantization -------------------------------------------------------------------
    def _qparams(self, node) -> tuple[np.ndarray, np.ndarray, int, bool]:
        scale = np.asarray(self.const(node, node.input[1], "the scale"), dtype=np.float64)
        if len(node.input) > 2 and node.input[2]:
            zero = self.const(node, node.input[2], "the zero point")
        else:
            out_dtype = _attr(node, "output_dtype", 0)
            zero = np.zeros((), onnx.helper.tensor_dtype_to_np_dtype(out_dtype)
                            if out_dtype else np.uint8)
        kind = np.dtype(zero.dtype).name
        if kind not in _INT_TYPES or kind == "int32" and node.op_type == "QuantizeLinear":
            raise self.fail(node, f"quantizes to {kind}; supported: "
                                  f"{', '.join(k for k in _INT_TYPES if k != 'int32')}")
        bits, signed = _INT_TYPES[kind]
        return scale, np.asarray(zero).astype(np.int64), bits, signed

    def op_QuantizeLinear(self, node):
        scale, zero, bits, signed = self._qparams(node)
        lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
        x = node.input[0]
        if self.is_const(x):     # a float weight quantized in the graph: fold
            w = self.consts[x].astype(np.float64)
            axis = _attr(node, "axis", 1)
            s, z = _per_axis(scale, w.ndim, axis), _per_axis(zero, w.ndim, axis)
            q = np.clip(np.rint(w / s) + z, lo, hi).astype(np.int64)
            self.consts[node.output[0]] = q
            self._int_kind[node.output[0]] = (bits, signed)
            return
        if x in self.batch_consts:      # a class token: quantize the constant itself
            codes = np.clip(np.rint(self.batch_consts[x] / scale) + zero, lo, hi)
            self.batch_codes[node.output[0]] = (codes, scale, zero)
            return
        if scale.size != 1 or zero.size != 1:
            raise self.fail(node, "per-channel quantization of an activation is not "
                                  "supported (only of weights)")
        if x not in self.virtual:
            self.act(node, x)
        self.pending[node.output[0]] = _PendingQuant(x, float(scale.reshape(())),
                                                     int(zero.reshape(())), bits, signed)

    def op_DequantizeLinear(self, node):
        scale, zero, bits, signed = self._qparams(node)
        x = node.input[0]
        if self.is_const(x):     # integer weights or biases
            q = self.consts[x]
            kind = self._int_kind.get(x) or _INT_TYPES.get(np.dtype(q.dtype).name)
            if kind is None:
                raise self.fail(node, f"dequantizes a {q.dtype} constant; expected integers")
            axis = _attr(node, "axis", 1)
            q64 = q.astype(np.int64)
            s = _per_axis(scale, q.ndim, axis)
            self.consts[node.output[0]] = (q64 - _per_axis(zero, q.ndim, axis)) * s
            if kind[0] <= 16:     # int32 is a bias, whose value is all that matters
                if np.any(zero != 0) or not kind[1]:
                    self._weight_problem[node.output[0]] = (
                        f"its weights are {'un' if not kind[1] else ''}signed {kind[0]}-bit "
                        f"with zero point(s) {np.unique(zero)[:4].tolist()}; the crossbar "
                        "needs symmetric weights: signed integers with zero point 0 "
                        "(quantize_static's default WeightSymmetric=True, weight_type=QInt8)")
                self.weight_quant[node.output[0]] = _WeightQuant(
                    scale.reshape(-1) if scale.size > 1 else scale.reshape(()),
                    axis % max(q.ndim, 1), kind[0])
            return
        if x in self.batch_codes:
            codes, q_scale, q_zero = self.batch_codes[x]
            self.batch_consts[node.output[0]] = (codes - q_zero) * q_scale
            return
        if x not in self.pending:
            raise self.fail(node, f"dequantizes {x!r}, which is not the output of a "
                                  "QuantizeLinear in this graph (integer model inputs are not "
                                  "supported)")
        p = self.pending[x]
        if (scale.size != 1 or float(scale.reshape(())) != p.scale
                or int(zero.reshape(())) != p.zero_point or (bits, signed) != (p.bits, p.signed)):
            raise self.fail(node, "its scale, zero point or type differ from its "
                                  "QuantizeLinear's; only matching QDQ pairs are supported")
        attrs = dict(scale=p.scale, zero_point=p.zero_point, bits=p.bits, signed=p.signed)
        if p.source not in self.virtual:
            self._restore_clamp(node, p)
        if p.source in self.virtual:     # elementwise: quantize S, keep V's axis order
            src, groups = self.virtual[p.source]
            q = self.emit(node, Op.QUANTIZE, (src,), attrs, output=f"{node.output[0]}#q")
            self.virtual[node.output[0]] = (q.name, groups)
            return
        self.emit(node, Op.QUANTIZE, (self.act(node, p.source),), attrs)

    def _restore_clamp(self, node, p: _PendingQuant) -> None:
        """onnxruntime's quantizer deletes a ReLU (or ReLU6 Clip) before a QDQ pair whose
        range starts at 0 (and ends at 6): the integer range clamps there instead. The
        quantized run is the same either way; the float view (Q/DQ skipped) is not, so the
        clamp that the range implies is put back as a node of its own, unless the values
        cannot be negative anyway. Listed in graph.meta["restored_clamps"]."""
        lo = -(1 << (p.bits - 1)) if p.signed else 0
        hi = (1 << (p.bits - 1)) - 1 if p.signed else (1 << p.bits) - 1
        src = self.tensor_node.get(p.source)
        if p.zero_point != lo or src is None or src == "input" or self._non_negative(src):
            return
        top = (hi - p.zero_point) * p.scale
        six = bool(np.isclose(top, 6.0, rtol=1e-6, atol=0))
        clamp = self.emit(node, Op.CLIP if six else Op.RELU, (src,),
                          dict(min=0.0, max=6.0) if six else {},
                          output=f"{p.source}#clamp", suffix=".clamp")
        self.tensor_node[p.source] = clamp.name
        self.restored_clamps.append(p.source)

    def _non_negative(self, name: str) -> bool:
        node = self.by_name.get(name)
        if node is None:
            return False
        if node.op in (Op.RELU, Op.SOFTMAX) or node.op is Op.CLIP and (
                node.attrs.get("min") is not None and node.attrs["min"] >= 0):
            return True
        if node.op in (Op.MAXPOOL2D, Op.AVGPOOL2D, Op.GLOBAL_AVGPOOL, Op.FLATTEN, Op.RESHAPE,
                       Op.TRANSPOSE, Op.SLICE):
            return self._non_negative(node.inputs[0])
        if node.op is Op.QUANTIZE:
            return (node.attrs["zero_point"] == (-(1 << (node.attrs["bits"] - 1))
                                                 if node.attrs["signed"] else 0)
                    or self._non_negative(node.inputs[0]))
        return False

    # -- activations --------------------------------------------------------------------
    def quant_input(self, node: onnx.NodeProto, t: str, weight_tensor: str
                    ) -> tuple[str, dict]:
        """Input of a weighted node with quantized weights: absorbs a QDQ pair into the
        node's act_* attrs. (Before a float layer a QDQ pair stays a ``quantize`` node.)"""
        src = self.act(node, t)
        q = self.by_name.get(src)
        if (q is None or q.op is not Op.QUANTIZE or weight_tensor not in self.weight_quant):
            return src, {}
        a = q.attrs
        # Dequantized values are (code - zero) * scale with code in the type's range, i.e.
        # clip(round(x / scale), lo - zero, hi - zero) * scale. That is the IR's zero-point-0
        # quantizer whenever the shifted range is a plain signed or unsigned range: int8 with
        # zero point -128 is uint8 with 0, uint8 with 128 is int8 with 0.
        bits, zero = a["bits"], a["zero_point"]
        lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if a["signed"] else (0, (1 << bits)
                                                                                - 1)
        shifted = (lo - zero, hi - zero)
        if shifted == (0, (1 << bits) - 1):
            signed = False
        elif shifted == (-(1 << (bits - 1)), (1 << (bits - 1)) - 1):
            signed = True
        else:
            raise self.fail(node, f"its input {t!r} is quantized with zero point {zero} "
                                  f"({'' if a['signed'] else 'u'}int{bits}, scale "
                                  f"{a['scale']:.6g}); the IR's integer product needs "
                                  "activation zero point 0 (or the int8 -128 / uint8 128 "
                                  "that are the same thing): quantize activations "
                                  "symmetrically (onnxruntime: extra_options="
                                  "{'ActivationSymmetric': True}) or only after a ReLU")
        source = q.inputs[0]
        clip = self.by_name.get(source)
        if clip is not None and clip.op is Op.CLIP:
            # Clip to a narrower code range, then QDQ: a narrower activation width (what
            # to_onnx writes for, e.g., 3-bit codes in a uint4).
            scale = a["scale"]
            lo_code, hi_code = (clip.attrs["min"] / scale if clip.attrs["min"] is not None
                                else None), (clip.attrs["max"] / scale
                                             if clip.attrs["max"] is not None else None)
            for narrow in range(1, bits):
                want = ((-(1 << (narrow - 1)), (1 << (narrow - 1)) - 1) if signed
                        else (0, (1 << narrow) - 1))
                if (lo_code is not None and hi_code is not None
                        and np.isclose(lo_code, want[0], atol=1e-6)
                        and np.isclose(hi_code, want[1], atol=1e-6)):
                    bits, source = narrow, clip.inputs[0]
                    break
        return source, dict(act_bits=bits, act_scale=a["scale"], act_signed=signed)

    def weight_attrs(self, node: onnx.NodeProto, t: str, out_axis: int) -> dict:
        """weight_bits/weight_scale of a weight tensor that came through DequantizeLinear."""
        if t in self._weight_problem:
            raise self.fail(node, self._weight_problem[t])
        wq = self.weight_quant.get(t)
        if wq is None:
            return {}
        if wq.scale.ndim == 0:
            return dict(weight_bits=wq.bits, weight_scale=float(wq.scale))
        if wq.axis != out_axis:
            raise self.fail(node, f"its weights are quantized per channel along axis "
                                  f"{wq.axis}; only per-output-channel scales (axis "
                                  f"{out_axis}) are supported")
        return dict(weight_bits=wq.bits, weight_scale=[float(s) for s in wq.scale])

    def op_Clip(self, node):
        src = self.act(node, node.input[0])
        if self.opset < 11:
            lo, hi = _attr(node, "min"), _attr(node, "max")
        else:
            get = lambda i: (float(self.const(node, node.input[i], "a clip bound"))  # noqa: E731
                             if len(node.input) > i and node.input[i] else None)
            lo, hi = get(1), get(2)
        self.emit(node, Op.CLIP, (src,), dict(min=lo, max=hi))

    def op_Relu(self, node):
        self.emit(node, Op.RELU, (self.act(node, node.input[0]),))

    def op_Sigmoid(self, node):
        self.emit(node, Op.SIGMOID, (self.act(node, node.input[0]),))

    def op_HardSigmoid(self, node):
        self.emit(node, Op.HARDSIGMOID, (self.act(node, node.input[0]),),
                  dict(alpha=float(_attr(node, "alpha", 0.2)),
                       beta=float(_attr(node, "beta", 0.5))))

    def op_HardSwish(self, node):
        self.emit(node, Op.HARDSWISH, (self.act(node, node.input[0]),))

    def op_Sign(self, node):
        self.emit(node, Op.SIGN, (self.act(node, node.input[0]),))

    def op_Gelu(self, node):
        approximate = _attr(node, "approximate", b"none")
        self.emit(node, Op.GELU, (self.act(node, node.input[0]),),
                  dict(approximate=approximate.decode()))

    def op_Softmax(self, node):
        src = self.act(node, node.input[0])
        rank = len(self.shape(src)) + 1
        axis = _attr(node, "axis", -1 if self.opset >= 13 else 1)
        axis = axis + rank if axis < 0 else axis
        if axis == 0:
            raise self.fail(node, "softmax over the batch axis is not supported")
        if self.opset < 13 and axis != rank - 1:
            raise self.fail(node, f"opset {self.opset} Softmax flattens axes {axis}.. "
                                  "together; only the last axis is supported")
        self.emit(node, Op.SOFTMAX, (src,), dict(axis=axis))

    def op_Conv(self, node):
        src, qattrs = self.quant_input(node, node.input[0], node.input[1])
        w = self.const(node, node.input[1], "the weight")
        if w.ndim != 4 or len(self.shape(src)) != 3:
            raise self.fail(node, f"only 2-D convolutions are supported (weight shape "
                                  f"{w.shape}, input shape {self.shape(src)} per sample)")
        kernel = _attr(node, "kernel_shape")
        if kernel is not None and tuple(kernel) != w.shape[2:]:
            raise self.fail(node, f"kernel_shape {list(kernel)} does not match the weight "
                                  f"shape {w.shape}")
        params = {"weight": w}
        if len(node.input) > 2 and node.input[2]:
            params["bias"] = self.const(node, node.input[2], "the bias")
        pads = _attr(node, "pads", [0, 0, 0, 0])
        attrs = dict(stride=int(_attr(node, "strides", [1])[0]), padding=int(pads[0]),
                     groups=int(_attr(node, "group", 1)))
        attrs |= self.weight_attrs(node, node.input[1], 0) | qattrs
        self.emit(node, Op.CONV2D, (src,), attrs, params)

    def _linear(self, node, src, qattrs, weight, bias, wattrs):
        params = {"weight": weight} | ({"bias": bias} if bias is not None else {})
        self.emit(node, Op.LINEAR, (src,), wattrs | qattrs, params)

    def op_Gemm(self, node, canonical: bool = False):
        src, qattrs = self.quant_input(node, node.input[0], node.input[1])
        # (canonical: a (tokens*batch, features) view of a batch-first (tokens, features):
        # Gemm is then a linear layer over the last axis.)
        if len(self.shape(src)) != 1 and not canonical:
            raise self.fail(node, f"input A must be (batch, features), is (batch, "
                                  f"{', '.join(map(str, self.shape(src)))})")
        b = self.const(node, node.input[1], "input B (the weight)")
        trans_b = int(_attr(node, "transB", 0))
        alpha, beta = float(_attr(node, "alpha", 1.0)), float(_attr(node, "beta", 1.0))
        weight = (b if trans_b else b.T).astype(np.float64) * alpha
        wattrs = self.weight_attrs(node, node.input[1], 0 if trans_b else 1)
        if alpha != 1.0 and "weight_scale" in wattrs:
            ws = np.asarray(wattrs["weight_scale"]) * alpha
            wattrs["weight_scale"] = ws.tolist() if ws.ndim else float(ws)
        bias = None
        if len(node.input) > 2 and node.input[2]:
            c = np.asarray(self.const(node, node.input[2], "input C (the bias)"), np.float64)
            if c.ndim == 2 and c.shape[0] != 1 or c.ndim > 2:
                raise self.fail(node, f"input C of shape {c.shape} would differ per sample; "
                                      "only a scalar or a per-output bias is supported")
            bias = beta * np.broadcast_to(c.reshape(-1) if c.ndim else c, (weight.shape[0],))
        self._linear(node, src, qattrs, weight, bias, wattrs)

    def op_MatMul(self, node):
        a, b = node.input
        if self.is_const(a):
            raise self.fail(node, "a constant left operand is not supported (only x @ W)")
        if self.is_const(b):
            w = self.consts[b]
            if w.ndim != 2:
                raise self.fail(node, f"a {w.ndim}-D constant weight is not supported (2-D)")
            src, qattrs = self.quant_input(node, a, b)
            self._linear(node, src, qattrs, w.T.astype(np.float64), None,
                         self.weight_attrs(node, b, 1))
            return
        self.emit(node, Op.MATMUL, (self.act(node, a), self.act(node, b)))

    def op_BatchNormalization(self, node):
        src = self.act(node, node.input[0])
        gamma, beta, mean, var = (np.asarray(self.const(node, t, what), np.float64)
                                  for t, what in zip(node.input[1:5],
                                                     ("scale", "B", "mean", "var"),
                                                     strict=True))
        if len([o for o in node.output if o]) > 1:
            raise self.fail(node, "training-mode outputs (running mean/var) are not supported")
        eps = float(_attr(node, "epsilon", 1e-5))
        prev = self.by_name.get(src)
        shape = self.shape(src)
        if (prev is not None and prev.op in (Op.CONV2D, Op.LINEAR) and "weight_bits" not in
                prev.attrs and self.only_consumer(node.input[0])
                and (prev.op is Op.CONV2D or len(shape) == 1)):
            # y = (conv(x) - mean) * g / sqrt(var + eps) + beta: scale the weights per
            # output channel, shift the bias.
            k = gamma / np.sqrt(var + eps)
            w = prev.params["weight"]
            prev.params["weight"] = w * k.reshape((-1,) + (1,) * (w.ndim - 1))
            bias = prev.params.get("bias", np.zeros(w.shape[0]))
            prev.params["bias"] = (bias - mean) * k + beta
            self.probe(node, prev)
            self.tensor_node[node.output[0]] = prev.name
            return
        self.emit(node, Op.BATCHNORM, (src,), dict(eps=eps),
                  dict(gamma=gamma, beta=beta, mean=mean, var=var))

    def _pool(self, node, op: Op):
        src = self.act(node, node.input[0])
        if len(self.shape(src)) != 3:
            raise self.fail(node, f"only 2-D pooling of (batch, C, H, W) is supported; "
                                  f"input is {self.shape(src)} per sample")
        if len(node.output) > 1 and node.output[1] and self.consumers.get(node.output[1]):
            raise self.fail(node, "its Indices output is used; not supported")
        kernel = int(_attr(node, "kernel_shape")[0])
        pads = _attr(node, "pads", [0, 0, 0, 0])
        if op is Op.AVGPOOL2D and pads[0] and not _attr(node, "count_include_pad", 0):
            raise self.fail(node, "padded average pooling with count_include_pad=0 is not "
                                  "supported (the IR divides by the full kernel area; "
                                  "PyTorch's default count_include_pad=True exports as 1)")
        attrs = dict(kernel=kernel, stride=int(_attr(node, "strides", [1])[0]),
                     padding=int(pads[0]))
        if _attr(node, "ceil_mode", 0):
            attrs["ceil_mode"] = True
        self.emit(node, op, (src,), attrs)

    def op_MaxPool(self, node):
        self._pool(node, Op.MAXPOOL2D)

    def op_AveragePool(self, node):
        self._pool(node, Op.AVGPOOL2D)

    def op_GlobalAveragePool(self, node):
        src = self.act(node, node.input[0])
        if len(self.shape(src)) != 3:
            raise self.fail(node, f"only (batch, C, H, W) inputs are supported; input is "
                                  f"{self.shape(src)} per sample")
        self.emit(node, Op.GLOBAL_AVGPOOL, (src,))

    def _reshape_to(self, node, src: str, target: tuple[int, ...], output: str | None = None):
        output = output or node.output[0]
        if target == self.shape(src):
            self.tensor_node[output] = src
        elif len(target) == 1:
            self.emit(node, Op.FLATTEN, (src,), output=output)
        else:
            self.emit(node, Op.RESHAPE, (src,), dict(shape=list(target)), output=output)

    def op_Flatten(self, node):
        if self.is_const(node.input[0]):
            x = self.consts[node.input[0]]
            axis = _attr(node, "axis", 1) % max(x.ndim, 1)
            self.fold(node, x.reshape(int(np.prod(x.shape[:axis])), -1))
            return
        src = self.act(node, node.input[0])
        shape = self.shape(src)
        axis = _attr(node, "axis", 1)
        axis = axis + len(shape) + 1 if axis < 0 else axis
        if axis == 0:
            raise self.fail(node, "Flatten with axis=0 merges the batch axis; not supported")
        if axis >= 2:
            # ONNX's Flatten is always 2-D: (prod(dims[:axis]), prod(dims[axis:])), so the
            # batch merges with the axes before `axis`.
            raise self.fail(node, f"Flatten with axis={axis} merges the batch axis with "
                                  f"axes 1..{axis - 1} (ONNX's output is 2-D); only axis=1 "
                                  "keeps the batch (use Reshape to keep more axes)")
        self._reshape_to(node, src, (int(np.prod(shape)),))

    def op_Reshape(self, node):
        allowzero = bool(_attr(node, "allowzero", 0))
        if self.all_const(node):
            x = self.consts[node.input[0]]
            shape = [d if d != 0 or allowzero else x.shape[i]
                     for i, d in enumerate(self.consts[node.input[1]].tolist())]
            self.fold(node, x.reshape(shape))
            return
        target = [int(d) for d in self.const(node, node.input[1], "the target shape")]
        if allowzero and 0 in target:
            # allowzero=1 makes a 0 a real empty axis (not "copy this axis"): an empty
            # tensor, which no layer of the IR computes with. Without a 0 it changes nothing.
            raise self.fail(node, f"allowzero=1 with a 0 in the target shape {target} (an "
                                  "empty tensor) is not supported")
        if node.input[0] in self.virtual:
            self._view_reshape(node, *self.virtual[node.input[0]], target)
            return
        src = self.act(node, node.input[0])
        shape = self.shape(src)
        size = int(np.prod(shape))
        target = [shape[i - 1] if d == 0 and i > 0 else d for i, d in enumerate(target)]
        rest = target[1:]
        first = target[0] if target else None
        if any(d < -1 for d in rest) or rest.count(-1) > 1:
            # the batch size inside the non-first dims: a view (see view())
            self._view_reshape(node, *self.view(node, node.input[0]), target)
            return
        known = int(np.prod([d for d in rest if d != -1]))
        batch_ok = (first in (_BATCH, 0) or first == self.fixed_batch
                    or (first == -1 and -1 not in rest and known == size))
        if not batch_ok and first is not None:
            # The batch merged with or split into other axes (nn.MultiheadAttention's
            # (L, B*H, d)): a view of src, until the batch axis is alone and first again.
            self._view_reshape(node, *self.view(node, node.input[0]), target)
            return
        if not batch_ok:
            raise self.fail(node, f"target shape {[d if d != _BATCH else 'batch' for d in target]}"
                                  " does not keep the batch axis first; not supported")
        if -1 in rest:
            if known == 0 or size % known:
                raise self.fail(node, f"cannot reshape {shape} per sample to {rest}")
            rest = [size // known if d == -1 else d for d in rest]
        if int(np.prod(rest)) != size:
            raise self.fail(node, f"cannot reshape {shape} per sample ({size} values) to "
                                  f"{rest}")
        self._reshape_to(node, src, tuple(rest))

    def op_Transpose(self, node):
        if self.is_const(node.input[0]):
            self.fold(node, np.transpose(self.consts[node.input[0]], _attr(node, "perm")))
            return
        src, groups = self.view(node, node.input[0])
        perm = _attr(node, "perm", list(reversed(range(len(groups)))))
        self._settle(node, node.output[0], src, tuple(groups[p] for p in perm))

    # Views. A Transpose or Reshape that moves the batch axis (timm's qkv.reshape(B, N, 3, H,
    # d).permute(2, 0, 3, 1, 4); nn.MultiheadAttention's (L, B*H, d) views) leaves a *view*
    # V of a batch-first IR value S: V's axis k is S's axes groups[k] merged in that order
    # (an empty group is a new axis of size 1; S axes of size 1 may belong to no group). The
    # batch axis is S's axis 0. Transpose / Reshape / Split / Gather / Slice / Squeeze /
    # Unsqueeze of V become slices, reshapes and transposes of S; other ops run on a
    # batch-first copy of V with the batch's axis moved first (_through_canonical), which is
    # exact for ops that act on single non-batch axes.
    def view(self, node, t: str) -> tuple[str, tuple[tuple[int, ...], ...]]:
        if t in self.virtual:
            return self.virtual[t]
        src = self.act(node, t)
        return src, tuple((i,) for i in range(len(self.shape(src)) + 1))

    def _atom(self, src: str, a: int) -> tuple[int, int]:
        """Size of S axis ``a`` as (power of the batch size, factor)."""
        if a == 0:
            return (0, self.fixed_batch) if self.fixed_batch else (1, 1)
        return (0, self.shape(src)[a - 1])

    def _settle(self, node, out: str, src: str, groups, suffix: str = ""):
        """Make ``out`` = the view (src, groups): an IR value when the batch axis is alone
        and first, else a view."""
        if not groups or groups[0] != (0,):
            self.virtual[out] = (src, tuple(groups))
            return
        rank = len(self.shape(src)) + 1
        atoms = [a for g in groups[1:] for a in g]
        order = [0] + atoms + [a for a in range(1, rank) if a not in atoms]
        if order != list(range(rank)):
            src = self.emit(node, Op.TRANSPOSE, (src,), dict(perm=order[1:]),
                            output=f"{out}#t", suffix=suffix or ".transpose").name
        sizes, k = [], 1     # S's axes are now 0, the groups' atoms in order, leftovers
        for g in groups[1:]:
            n = 1
            for _ in g:
                n *= self.shape(src)[k - 1]
                k += 1
            sizes.append(n)
        if len(sizes) == 0:
            raise self.fail(node, "leaves only the batch axis; not supported")
        self._reshape_to(node, src, tuple(sizes), output=out)

    def _virtual_take(self, node, out: str, v_axis: int, start: int, stop: int, drop: bool,
                      suffix: str = "", t: str | None = None):
        src, groups = self.view(node, t or node.input[0])
        group = groups[v_axis]
        if 0 in group:
            raise self.fail(node, "slices the batch axis (moved by a Transpose or Reshape); "
                                  "not supported")
        if len(group) != 1:
            raise self.fail(node, f"slices axis {v_axis}, which merges {len(group)} axes of "
                                  "the tensor it was reshaped from; not supported")
        src = self.emit(node, Op.SLICE, (src,), dict(axis=group[0], start=start, stop=stop),
                        output=f"{out}#slice", suffix=f"{suffix}.slice" if drop else suffix).name
        if drop:     # the sliced S axis has size 1 now: it leaves the groups
            groups = groups[:v_axis] + groups[v_axis + 1:]
        self._settle(node, out, src, groups, suffix=f"{suffix}.transpose")

    def _virtual_rank(self, t: str) -> int:
        return len(self.virtual[t][1])

    def _view_sizes(self, src: str, groups) -> list[tuple[int, int]]:
        out = []
        for g in groups:
            p, n = 0, 1
            for a in g:
                ap, an = self._atom(src, a)
                p, n = p + ap, n * an
            out.append((p, n))
        return out

    def _virtual_dim(self, t: str, v_axis: int) -> int:
        src, groups = self.virtual[t]
        p, n = self._view_sizes(src, groups)[v_axis]
        if p:
            raise OnnxImportError(f"{self.label}: axis {v_axis} of {t!r} holds the batch")
        return n

    def _view_reshape(self, node, src: str, groups, target: list[int]):
        """Reshape of a view: the target dims are matched, in order, by merging S axes and
        splitting non-batch S axes (a reshape keeps the row-major order of the values)."""
        sizes = self._view_sizes(src, groups)
        batch = self.fixed_batch

        def decode(i, d):
            if d != 0 and d % _BATCH == 0:          # a multiple of the (dynamic) batch size
                return (0, batch * (d // _BATCH)) if batch else (1, d // _BATCH)
            if d == 0 and not _attr(node, "allowzero", 0):
                return sizes[i]
            return (0, d)

        dims = [decode(i, d) if d != -1 else None for i, d in enumerate(target)]
        total = (sum(p for p, _ in sizes), int(np.prod([n for _, n in sizes])))
        if dims.count(None) > 1:
            raise self.fail(node, f"target shape {target} has more than one -1")
        if None in dims:
            known = (sum(d[0] for d in dims if d), int(np.prod([d[1] for d in dims if d])))
            if known[1] == 0 or total[1] % known[1] or total[0] < known[0]:
                raise self.fail(node, f"cannot reshape to {target}")
            dims[dims.index(None)] = (total[0] - known[0], total[1] // known[1])
        atoms = [a for g in groups for a in g]
        rank = len(self.shape(src)) + 1
        atoms += [a for a in range(1, rank) if a not in atoms]     # size-1 leftovers
        new_groups, i = [], 0
        for d in dims:
            g, prod = [], (0, 1)
            if d == (0, 1) and i < len(atoms) and atoms[i] == 0 and self._atom(src, 0) == d:
                g.append(0)       # a batch of 1 goes with a target dim of 1
                i += 1
            while prod != d:
                if i >= len(atoms):
                    raise self.fail(node, f"cannot reshape to {target}")
                a = atoms[i]
                ap, an = self._atom(src, a)
                cand = (prod[0] + ap, prod[1] * an)
                if cand[0] <= d[0] and d[1] % cand[1] == 0:
                    g.append(a)
                    prod, i = cand, i + 1
                    continue
                need = d[1] // prod[1] if d[1] % prod[1] == 0 else 0
                if a == 0 or prod[0] != d[0] or need <= 1 or an % need:
                    raise self.fail(node, f"target shape {target} splits or merges the "
                                          "batch axis with others in a way the IR cannot "
                                          "express")
                # split S axis a into (need, an // need)
                shape = list(self.shape(src))
                shape[a - 1:a] = [need, an // need]
                src = self.emit(node, Op.RESHAPE, (src,), dict(shape=shape),
                                output=f"{node.output[0]}#split{a}", suffix=".split").name
                def bump(x, a=a):
                    return x + 1 if x > a else x
                new_groups = [tuple(bump(x) for x in gg) for gg in new_groups]
                g = [bump(x) for x in g] + [a]
                atoms = [bump(x) for x in atoms]
                atoms[i] = a + 1
                prod = d
            new_groups.append(tuple(g))
        rest = atoms[i:]
        if 0 in rest:
            if not new_groups:
                raise self.fail(node, f"cannot reshape to {target}")
            new_groups[-1] += tuple(rest)
        self._settle(node, node.output[0], src, tuple(new_groups))

    def _canonical(self, node, t: str):
        """A batch-first IR value C holding view ``t`` with its batch axis moved first:
        returns (C, q, extra) where q orders V's axes (the batch's first), and the batch's
        axis of V is C's axes 0..extra (the batch, then the axes merged after it)."""
        if t in self._canon_cache:
            return self._canon_cache[t]
        src, groups = self.virtual[t]
        j = next(k for k, g in enumerate(groups) if 0 in g)
        if groups[j][0] != 0:
            raise self.fail(node, f"reads {t!r}, whose axis {j} merges the batch after "
                                  "another axis; not supported")
        q = [j] + [k for k in range(len(groups)) if k != j]
        rank = len(self.shape(src)) + 1
        atoms = [a for k in q for a in groups[k]]
        order = atoms + [a for a in range(1, rank) if a not in atoms]
        x = src
        if order != list(range(rank)):
            x = self.emit(node, Op.TRANSPOSE, (x,), dict(perm=order[1:]),
                          output=f"{t}#canon.t", suffix=".canon").name
        sizes = self._view_sizes(src, [groups[k] for k in q[1:]])
        extra = [self._atom(src, a)[1] for a in groups[j][1:]]
        target = tuple(extra + [n for _, n in sizes])
        if target != self.shape(x):
            x = self.emit(node, Op.RESHAPE, (x,), dict(shape=list(target)),
                          output=f"{t}#canon", suffix=".canon").name
        self._canon_cache[t] = (x, tuple(q), len(extra))
        return self._canon_cache[t]

    def _through_last_axis(self, node, handler) -> bool:
        """An op of the last axis only (a linear layer, LayerNorm, a unary op) on one view
        whose batch is merged after another axis ((tokens*batch, features)): run it on S
        with the last group's axes merged last, keep the other groups."""
        t = next(t for t in node.input if t in self.virtual)
        others = [u for u in node.input if u and u != t]
        unary = node.op_type in ("Relu", "Clip", "Gelu", "Cast", "Erf", "Sigmoid", "HardSigmoid",
                                 "HardSwish")
        last_only = node.op_type in ("Gemm", "MatMul", "LayerNormalization") or (
            node.op_type == "Softmax" and _attr(node, "axis", -1) in (-1, self._virtual_rank(t)
                                                                      - 1))
        if not (unary or last_only) or any(u not in self.consts for u in others) \
                or node.op_type == "LayerNormalization" and _attr(node, "axis", -1) not in (
                    -1, self._virtual_rank(t) - 1):
            return False
        src, groups = self.virtual[t]
        if 0 in groups[-1]:
            return False
        rank = len(self.shape(src)) + 1
        front = [a for g in groups[:-1] for a in g]
        order = [0] + [a for a in front if a] + [a for a in range(1, rank)
                                                 if a not in front and a not in groups[-1]]
        order += list(groups[-1])
        x = src
        if order != list(range(rank)):
            x = self.emit(node, Op.TRANSPOSE, (x,), dict(perm=order[1:]),
                          output=f"{t}#last.t", suffix=".last").name
        n_last = len(groups[-1])
        if n_last != 1:
            shape = list(self.shape(x))
            merged = shape[:len(shape) - n_last] + [int(np.prod(shape[len(shape) - n_last:]))]
            x = self.emit(node, Op.RESHAPE, (x,), dict(shape=merged),
                          output=f"{t}#last", suffix=".last").name
        name = f"{t}#last"
        self.tensor_node[name] = x
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type in ("Softmax", "LayerNormalization"):
            attrs["axis"] = -1
        out = f"{node.output[0]}#last"
        sub = onnx.helper.make_node(node.op_type, [name if u == t else u for u in node.input],
                                    [out] + [""] * (len(node.output) - 1), name=node.name,
                                    **attrs)
        handler(sub, canonical=True) if node.op_type == "Gemm" else handler(sub)
        r = self.tensor_node[out]
        position = {a: i for i, a in enumerate(order)}
        new = tuple(tuple(position[a] for a in g) for g in groups[:-1])
        self._settle(node, node.output[0], r, new + ((len(order) - n_last,),))
        return True

    def _relocate_unit_batch(self, node, t: str) -> None:
        """Exported at batch 1, the batch is an axis of size 1 that the exporter's views may
        have merged anywhere (``(L, 1, H, d) -> (L, H*d)`` of nn.MultiheadAttention puts it
        inside the features). Moving a size-1 axis changes no value, and the IR computes
        each sample on its own, so put it where the IR can follow it: into a size-1 axis of
        the view (first one first; the view may then be batch-first again), else at the
        front of the view's first axis (the batch merged before the tokens, ``(B*L, E)``)."""
        src, groups = self.virtual[t]
        j = next((k for k, g in enumerate(groups) if 0 in g), None)
        if j is None or groups[j] == (0,) or self._atom(src, 0) != (0, 1):
            return
        rest = [tuple(a for a in g if a != 0) for g in groups]
        empty = [k for k, g in enumerate(rest) if not g and k != j]
        if empty:
            rest[empty[0]] = (0,)
        elif len(rest) > 1 and j == len(rest) - 1 or groups[j][0] != 0:
            rest[0] = (0,) + rest[0]
        else:
            return
        self._canon_cache.pop(t, None)
        del self.virtual[t]
        self._settle(node, t, src, tuple(rest), suffix=".unit_batch")

    def _through_canonical(self, node, handler):
        """Run ``node`` on batch-first copies of the views it reads, then view its output
        with V's axis order again."""
        if self.fixed_batch == 1:
            for t in [t for t in node.input if t in self.virtual]:
                self._relocate_unit_batch(node, t)
            if not any(t in self.virtual for t in node.input):
                handler(node)
                return
        views = [t for t in node.input if t in self.virtual]
        if len(views) == 1 and any(0 in g and g[0] != 0 for g in self.virtual[views[0]][1]) \
                and self._through_last_axis(node, handler):
            return
        canon = {t: self._canonical(node, t) for t in views}
        layouts = {(c[1], c[2], self.shape(c[0]) if node.op_type in ("Add", "Sub", "Mul",
                    "Div") else len(self.shape(c[0]))) for c in canon.values()}
        if len(layouts) > 1:
            raise self.fail(node, "reads tensors whose axes were moved differently by "
                                  "Transposes/Reshapes; not supported")
        _, q, extra = next(iter(canon.values()))
        rank = len(q)
        if node.op_type not in _CANONICAL_OPS:
            raise self.fail(node, f"reads {views[0]!r}, whose batch axis a Transpose or "
                                  f"Reshape moved to axis {q[0]}; {node.op_type} is "
                                  "supported there only once the batch axis is first again")
        c_axis = {v: (extra + q.index(v) if v != q[0] else None) for v in range(rank)}
        inputs = []
        for t in node.input:
            if t in canon:
                name = f"{t}#canon"
                self.tensor_node[name] = canon[t][0]
                inputs.append(name)
            elif t in self.consts and node.op_type in ("Add", "Sub", "Mul", "Div") \
                    and not self.all_const(node):
                c = np.asarray(self.consts[t])
                c = c.reshape((1,) * (rank - c.ndim) + c.shape).transpose(q)
                if c.shape[0] != 1:
                    raise self.fail(node, "its constant varies along the batch's axis")
                name = f"{t}#canon.{'.'.join(map(str, q))}"
                self.consts[name] = c.reshape((1,) * (extra + 1) + c.shape[1:])
                inputs.append(name)
            elif t and t not in self.consts:
                raise self.fail(node, f"joins {views[0]!r}, whose batch axis a Transpose "
                                      f"moved to axis {q[0]}, with {t!r} whose batch axis "
                                      "is first; not supported")
            else:
                inputs.append(t)
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        last = rank - 1
        if node.op_type == "Softmax":
            axis = attrs.get("axis", -1 if self.opset >= 13 else 1) % rank
            if c_axis[axis] is None:
                raise self.fail(node, "softmax over the batch's axis is not supported")
            attrs["axis"] = c_axis[axis]
        elif node.op_type in ("LayerNormalization", "MatMul", "Gemm") and (
                c_axis[last] is None or node.op_type == "MatMul" and c_axis[last - 1] is None
                and not any(t in self.consts for t in node.input)):
            raise self.fail(node, "its last axes hold the batch (moved by a Transpose); "
                                  "not supported")
        elif node.op_type == "LayerNormalization":
            attrs["axis"] = -1
        outs = [f"{o}#canon" if o else "" for o in node.output]
        sub = onnx.helper.make_node(node.op_type, inputs, outs, name=node.name, **attrs)
        handler(sub, canonical=True) if node.op_type == "Gemm" else handler(sub)
        for o, co in zip(node.output, outs, strict=True):
            if not o or co not in self.tensor_node:
                continue
            r = self.tensor_node[co]
            groups = [()] * rank
            groups[q[0]] = tuple(range(extra + 1))
            for k, v in enumerate(q[1:]):
                groups[v] = (extra + 1 + k,)
            self._settle(node, o, r, tuple(groups))

    def op_LayerNormalization(self, node):
        src = self.act(node, node.input[0])
        rank = len(self.shape(src)) + 1
        axis = _attr(node, "axis", -1)
        if axis % rank != rank - 1:
            raise self.fail(node, f"normalizes from axis {axis}; only the last axis is "
                                  "supported")
        if len([o for o in node.output if o]) > 1 and any(self.consumers.get(o)
                                                          for o in node.output[1:]):
            raise self.fail(node, "its mean/inv-std outputs are used; not supported")
        gamma = self.const(node, node.input[1], "the scale")
        beta = (self.const(node, node.input[2], "the bias") if len(node.input) > 2
                and node.input[2] else np.zeros_like(gamma))
        self.emit(node, Op.LAYERNORM, (src,), dict(eps=float(_attr(node, "epsilon", 1e-5))),
                  dict(gamma=gamma, beta=beta))

    # -- elementwise --------------------------------------------------------------------
    def _const_operand(self, node, c: np.ndarray, src: str) -> np.ndarray:
        full = (1, *self.shape(src))
        try:
            out = np.broadcast_shapes(c.shape, full)
        except ValueError:
            raise self.fail(node, f"constant of shape {c.shape} does not broadcast to the "
                                  f"input {full[1:]} per sample") from None
        if out != full:
            raise self.fail(node, f"constant of shape {c.shape} would change the input shape "
                                  f"{full[1:]} per sample; not supported")
        return np.asarray(c, dtype=np.float64)

    def _bias_fold(self, node, src: str, c: np.ndarray) -> bool:
        """Add of a per-output-channel constant right after a weighted node -> its bias."""
        prev = self.by_name.get(src)
        if prev is None or prev.op not in (Op.CONV2D, Op.LINEAR):
            return False
        if not self.only_consumer(node.input[0] if node.input[0] not in self.consts
                                  else node.input[1]):
            return False
        value = self.values[src]
        channel_axis = 1 if prev.op is Op.CONV2D else value.ndim - 1
        full = np.broadcast_to(c, value.shape)
        index = [0] * value.ndim
        index[channel_axis] = slice(None)
        vector = full[tuple(index)]
        shape = [1] * value.ndim
        shape[channel_axis] = -1
        if not np.array_equal(full, np.broadcast_to(vector.reshape(shape), value.shape)):
            return False
        prev.params["bias"] = prev.params.get("bias", np.zeros(vector.shape)) + vector
        self.probe(node, prev)
        self.tensor_node[node.output[0]] = prev.name
        return True

    def op_Add(self, node):
        if self.all_const(node):
            self.fold(node, self.consts[node.input[0]] + self.consts[node.input[1]])
            return
        a, b = node.input
        if not self.is_const(a) and not self.is_const(b):
            sa, sb = self.act(node, a), self.act(node, b)
            if self.shape(sa) != self.shape(sb):
                raise self.fail(node, f"adds shapes {self.shape(sa)} and {self.shape(sb)} per "
                                      "sample; only same-shape (residual) adds are supported")
            self.emit(node, Op.ADD, (sa, sb))
            return
        x, c = (a, b) if self.is_const(b) else (b, a)
        src = self.act(node, x)
        c = self._const_operand(node, self.consts[c], src)
        if not self._bias_fold(node, src, c):
            self.emit(node, Op.ADD_CONST, (src,), params=dict(constant=c))

    def op_Sub(self, node):
        if self.all_const(node):
            self.fold(node, self.consts[node.input[0]] - self.consts[node.input[1]])
            return
        a, b = node.input
        if self.is_const(a) or not self.is_const(b):
            raise self.fail(node, "only activation - constant is supported")
        src = self.act(node, a)
        c = self._const_operand(node, self.consts[b], src)
        self.emit(node, Op.ADD_CONST, (src,), params=dict(constant=-c))

    def op_Mul(self, node):
        if self.all_const(node):
            self.fold(node, self.consts[node.input[0]] * self.consts[node.input[1]])
            return
        a, b = node.input
        if not self.is_const(a) and not self.is_const(b):
            self._mul_activations(node, self.act(node, a), self.act(node, b))
            return
        x, c = (a, b) if self.is_const(b) else (b, a)
        src = self.act(node, x)
        self.emit(node, Op.MUL_CONST, (src,),
                  params=dict(constant=self._const_operand(node, self.consts[c], src)))

    def _mul_activations(self, node, sa: str, sb: str) -> None:
        """x * sigmoid(x) (SiLU as exporters spell it out) becomes one SILU unit; any other
        product of two activations (squeeze-and-excitation's x * gate(x), gate (C, 1, 1)
        per sample) is a MUL on the digital periphery, broadcast over the non-batch axes."""
        for x, s in ((sa, sb), (sb, sa)):
            gate = self.by_name.get(s)
            if gate is not None and gate.op is Op.SIGMOID and gate.inputs == (x,):
                self.emit(node, Op.SILU, (x,))
                return
        shape_a, shape_b = self.shape(sa), self.shape(sb)
        if len(shape_a) != len(shape_b):
            raise self.fail(node, f"multiplies activations of shapes {shape_a} and {shape_b} "
                                  "per sample; only activations of one rank (broadcast over "
                                  "axes of size 1) are supported")
        try:
            np.broadcast_shapes(shape_a, shape_b)
        except ValueError:
            raise self.fail(node, f"multiplies activations of shapes {shape_a} and {shape_b} "
                                  "per sample, which do not broadcast") from None
        self.emit(node, Op.MUL, (sa, sb))

    def op_Div(self, node):
        if self.all_const(node):
            a, b = self.consts[node.input[0]], self.consts[node.input[1]]
            integer = np.issubdtype(a.dtype, np.integer) and np.issubdtype(b.dtype, np.integer)
            self.fold(node, np.trunc(a / b).astype(a.dtype) if integer else a / b)
            return
        a, b = node.input
        if self.is_const(a) or not self.is_const(b):
            raise self.fail(node, "only activation / constant is supported")
        src = self.act(node, a)
        c = self._const_operand(node, self.consts[b], src)
        self.emit(node, Op.MUL_CONST, (src,), params=dict(constant=1.0 / c))


def _per_axis(v: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    """A scalar, or a vector along ``axis`` broadcastable over an ``ndim``-D tensor."""
    v = np.asarray(v)
    if v.size == 1:
        return v.reshape(())
    shape = [1] * ndim
    shape[axis % ndim] = -1
    return v.reshape(shape)
