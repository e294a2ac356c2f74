"""The model IR: a small graph of layers with numpy parameters and compression metadata.

A :class:`Graph` is a topologically ordered list of :class:`Node` s. Each node has an
:class:`Op`, a unique name, the names of its inputs (the graph input is ``"input"``),
JSON-able ``attrs`` (strides, bit widths, scales, fragment size, ...) and numpy ``params``
(weights, biases, masks, fragment signs, ...). Frontends build it (the zoo, ONNX, PyTorch);
mappings transform it; executors run it.

Conventions:

- Tensors are NCHW for images and (N, features) for vectors; ``LINEAR`` weights are
  (out, in) and ``CONV2D`` weights (out, in/groups, kh, kw), as in PyTorch and ONNX.
- A weighted node (``CONV2D``, ``LINEAR``) is *quantized* when its attrs hold
  ``weight_bits``, ``weight_scale`` (a float, or a per-output-channel list), ``act_bits``,
  ``act_scale`` and ``act_signed``: then its weights are exact multiples of the weight
  scale and the executor quantizes its input to ``act_bits`` (see
  :mod:`chipforge.sim.executor`).

Files are ``.npz`` written without pickle: every array under ``"<node>/<param>"`` and the
structure as JSON under ``"__graph__"``. :func:`load_graph` checks the file completely and
raises ``ValueError`` naming the problem.
"""

from __future__ import annotations

import enum
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from chipforge.files import atomic_open

__all__ = ["ELEMENTWISE_OPS", "GRAPH_FORMAT_VERSION", "TOKEN_SELECT_PARAMS", "Graph", "Node",
           "Op", "check_values", "load_graph", "save_graph", "token_selectors"]

GRAPH_FORMAT_VERSION = 1


class Op(enum.Enum):
    """Operations of the IR. Attributes in brackets, parameters in braces."""

    CONV2D = "conv2d"            # [stride, padding, groups] {weight, bias?}
    LINEAR = "linear"            # {weight (out, in), bias?}
    BATCHNORM = "batchnorm"      # [eps] {gamma, beta, mean, var}; folded by a mapping pass
    RELU = "relu"
    CLIP = "clip"                # [min, max] (either may be None): ReLU6, narrow code ranges
    MAXPOOL2D = "maxpool2d"      # [kernel, stride, padding, ceil_mode?]
    AVGPOOL2D = "avgpool2d"      # [kernel, stride, padding]
    GLOBAL_AVGPOOL = "global_avgpool"
    FLATTEN = "flatten"          # keeps the batch axis
    ADD = "add"                  # two inputs, same shape (residual)
    SOFTMAX = "softmax"          # [axis]
    SIGN = "sign"                # binarization to +-1 (BNNs)
    QUANTIZE = "quantize"        # [scale, zero_point, bits, signed] fake quantization
    ADD_CONST = "add_const"      # {constant}: x + constant (numpy broadcasting)
    MUL_CONST = "mul_const"      # {constant}: x * constant (numpy broadcasting)
    # Element-wise units of the digital periphery (mobile CNNs: MobileNetV3, EfficientNet).
    SIGMOID = "sigmoid"          # 1 / (1 + exp(-x))
    HARDSIGMOID = "hardsigmoid"  # [alpha, beta]: clip(alpha * x + beta, 0, 1)
    HARDSWISH = "hardswish"      # x * clip(x / 6 + 1 / 2, 0, 1)
    SILU = "silu"                # x * sigmoid(x) (swish)
    MUL = "mul"                  # two activations, numpy broadcasting over the non-batch
                                 # axes (squeeze-and-excitation: x * gate, gate (C, 1, 1))
    # Transformer ops (ViT); shapes and axes are per sample, the batch axis is never moved.
    LAYERNORM = "layernorm"      # [eps] {gamma, beta}: normalizes the last axis
    GELU = "gelu"                # [approximate: "none" (erf) or "tanh"]
    TRANSPOSE = "transpose"      # [perm]: permutation of the non-batch axes (1-based)
    RESHAPE = "reshape"          # [shape]: new per-sample shape (one -1 allowed)
    MATMUL = "matmul"            # two activations: a @ b over the last two axes
    SLICE = "slice"              # [axis, start, stop]: x[..., start:stop, ...] (axis >= 1)
    MEAN = "mean"                # [axes, keepdims]: mean over axes (all >= 1)
    CONCAT = "concat"            # [axis, constant_index?] {constant?}: inputs joined along
                                 # axis; the constant (batch axis of 1, e.g. a ViT class
                                 # token) is repeated over the batch and goes at its index
    # HeatViT token selector (Dong et al., HPCA'23): scores the tokens of (N, T, D) and
    # prunes them per image; see TOKEN_SELECT_PARAMS and chipforge.sim.executor.
    TOKEN_SELECT = "token_select"  # [heads, threshold, keep_ratio, protected, eps,
                                   # mask_from?] {norm_gamma, norm_beta, fc1_weight,
                                   # fc1_bias, fc2_weight, fc2_bias, head_logits}
                                   # (+ engine_threshold_code?: the 8-bit engine's)


WEIGHTED_OPS = frozenset({Op.CONV2D, Op.LINEAR})
ELEMENTWISE_OPS = frozenset({Op.SIGMOID, Op.HARDSIGMOID, Op.HARDSWISH, Op.SILU, Op.MUL})
"""Ops the digital periphery computes value by value (not the crossbars); the cycle and
energy models count one element-wise operation per output value."""
TOKEN_SELECT_PARAMS = ("norm_gamma", "norm_beta", "fc1_weight", "fc1_bias", "fc2_weight",
                       "fc2_bias", "head_logits")
"""Parameters of a ``TOKEN_SELECT`` node. The selector normalizes the tokens with its own
LayerNorm (``norm_*``: a copy of the next block's first LayerNorm, which the engine computes
once for both), splits each token into ``heads`` heads of D / heads channels and scores
head ``i`` as ``sigmoid(fc2(GELU(fc1(x_i))))`` (MLP weights shared by the heads); a token's
score is ``sum_i softmax(head_logits)_i * score_i``. Tokens ``0 .. protected-1`` (the class
token) and earlier package tokens are always kept; a candidate token is kept iff its score
is >= ``threshold``; the pruned tokens of an image are fused into one *package token*
(their score-weighted mean, HeatViT Eq. 10). ``keep_ratio`` records the training target
(the fraction of the candidates kept); ``mask_from`` names the previous selector. With
``center`` (optional, default False) the selector reads each head of a token relative to
the image's mean live token, ``x_i - mean_live(x)_i``, after its LayerNorm: the global
feature of HeatViT's selector, tied to fc1.

Pruning is a mask, not a gather, so every image keeps the graph's static shapes: a pruned
token stays in its slot, masked out of the attention keys (exactly the same as removing
it); the package token takes the slot of the image's first pruned token. The nodes that
mix tokens after a selector name it in their ``mask_from`` attr: the attention
``SOFTMAX`` (over the key axis, the last), ``MEAN`` over the token axis, and the next
``TOKEN_SELECT``."""
TOKEN_SELECT_ATTRS = ("heads", "threshold", "protected")
MASKABLE_OPS = frozenset({Op.SOFTMAX, Op.MEAN, Op.TOKEN_SELECT})
_NEEDED_PARAMS = {Op.BATCHNORM: {"gamma", "beta", "mean", "var"},
                  Op.LAYERNORM: {"gamma", "beta"}, Op.ADD_CONST: {"constant"},
                  Op.MUL_CONST: {"constant"}, Op.TOKEN_SELECT: set(TOKEN_SELECT_PARAMS)}
_QUANT_ATTRS = ("weight_bits", "weight_scale", "act_bits", "act_scale", "act_signed")


@dataclass
class Node:
    op: Op
    name: str
    inputs: tuple[str, ...]
    attrs: dict[str, Any] = field(default_factory=dict)
    params: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def weighted(self) -> bool:
        return self.op in WEIGHTED_OPS

    @property
    def quantized(self) -> bool:
        return self.weighted and all(k in self.attrs for k in _QUANT_ATTRS)

    def copy(self) -> Node:
        return Node(self.op, self.name, tuple(self.inputs), json.loads(json.dumps(self.attrs)),
                    {k: v.copy() for k, v in self.params.items()})


@dataclass
class Graph:
    """A model: nodes in topological order, the input shape (without batch), metadata."""

    name: str
    input_shape: tuple[int, ...]
    nodes: list[Node]
    output: str | None = None
    """Name of the output node (default: the last node)."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Free-form JSON-able facts: dataset, recipe, accuracy, class names, ..."""

    def __post_init__(self) -> None:
        self.input_shape = tuple(int(d) for d in self.input_shape)
        self.validate()

    @property
    def output_name(self) -> str:
        return self.output or self.nodes[-1].name

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(f"graph {self.name!r} has no node {name!r}; "
                       f"nodes: {', '.join(n.name for n in self.nodes)}")

    def weighted_nodes(self) -> list[Node]:
        return [n for n in self.nodes if n.weighted]

    def copy(self) -> Graph:
        return Graph(self.name, self.input_shape, [n.copy() for n in self.nodes], self.output,
                     json.loads(json.dumps(self.meta)))

    def validate(self) -> None:
        """Check names, ops, wiring and the parameters each op needs."""
        if not self.nodes:
            raise ValueError(f"graph {self.name!r} has no nodes")
        seen = {"input"}
        selectors: set[str] = set()
        for n in self.nodes:
            if not isinstance(n.op, Op):
                raise ValueError(f"node {n.name!r} has op {n.op!r}, which is not an Op; "
                                 f"supported: {', '.join(o.value for o in Op)}")
            if n.name in seen:
                raise ValueError(f"node name {n.name!r} is used twice (or is 'input')")
            for i in n.inputs:
                if i not in seen:
                    raise ValueError(f"node {n.name!r} reads {i!r}, which is not defined "
                                     "before it")
            want = 2 if n.op in (Op.ADD, Op.MATMUL, Op.MUL) else 1
            if n.op is Op.CONCAT:
                want = max(len(n.inputs), 1)
            if len(n.inputs) != want:
                raise ValueError(f"node {n.name!r} ({n.op.value}) needs {want} input(s), "
                                 f"has {len(n.inputs)}")
            if n.weighted:
                w = n.params.get("weight")
                ndim = 4 if n.op is Op.CONV2D else 2
                if w is None or w.ndim != ndim:
                    raise ValueError(f"node {n.name!r} ({n.op.value}) needs a {ndim}-D weight")
            needed = _NEEDED_PARAMS.get(n.op, set()) - set(n.params)
            if needed:
                raise ValueError(f"{n.op.value} {n.name!r} lacks {', '.join(sorted(needed))}")
            if n.op is Op.QUANTIZE:
                missing = {"scale", "zero_point", "bits", "signed"} - set(n.attrs)
                if missing:
                    raise ValueError(f"quantize {n.name!r} lacks {', '.join(sorted(missing))}")
            if n.op is Op.TOKEN_SELECT:
                _check_token_select(n)
            source = n.attrs.get("mask_from")
            if source is not None:
                if n.op not in MASKABLE_OPS:
                    raise ValueError(f"node {n.name!r} ({n.op.value}) has mask_from, which "
                                     "only softmax, mean and token_select take")
                if source not in selectors:
                    raise ValueError(f"node {n.name!r} has mask_from={source!r}, which is "
                                     "not a token_select node before it")
            if n.op is Op.TOKEN_SELECT:
                selectors.add(n.name)
            seen.add(n.name)
        if self.output is not None and self.output not in seen:
            raise ValueError(f"graph output {self.output!r} is not a node")


def token_selectors(graph: Graph) -> list[Node]:
    """The ``TOKEN_SELECT`` nodes of ``graph``, in order."""
    return [n for n in graph.nodes if n.op is Op.TOKEN_SELECT]


def _check_token_select(n: Node) -> None:
    missing = [k for k in TOKEN_SELECT_ATTRS if k not in n.attrs]
    if missing:
        raise ValueError(f"token_select {n.name!r} lacks {', '.join(missing)}")
    heads, thr, prot = n.attrs["heads"], n.attrs["threshold"], n.attrs["protected"]
    if not isinstance(heads, int) or heads < 1:
        raise ValueError(f"token_select {n.name!r}: heads must be an integer >= 1, not {heads!r}")
    if not isinstance(prot, int) or prot < 0:
        raise ValueError(f"token_select {n.name!r}: protected must be an integer >= 0, "
                         f"not {prot!r}")
    if not isinstance(thr, int | float) or not 0 <= thr <= 1:
        raise ValueError(f"token_select {n.name!r}: threshold must be in [0, 1], not {thr!r}")
    code = n.attrs.get("engine_threshold_code")
    if code is not None and (isinstance(code, bool) or not isinstance(code, int)
                             or not 0 <= code <= 128):
        raise ValueError(f"token_select {n.name!r}: engine_threshold_code must be an integer "
                         f"in 0..128 (a Q0.7 score code), not {code!r}")
    keep = n.attrs.get("keep_ratio")
    if keep is not None and not (isinstance(keep, int | float) and 0 < keep <= 1):
        raise ValueError(f"token_select {n.name!r}: keep_ratio must be in (0, 1], "
                         f"not {keep!r}")
    p = n.params
    d = p["norm_gamma"].shape[0]
    hidden = p["fc1_weight"].shape[0]
    shapes = {"norm_gamma": (d,), "norm_beta": (d,), "fc1_weight": (hidden, d // heads),
              "fc1_bias": (hidden,), "fc2_weight": (1, hidden), "fc2_bias": (1,),
              "head_logits": (heads,)}
    if d % heads:
        raise ValueError(f"token_select {n.name!r}: heads={heads} must divide the token "
                         f"width {d}")
    for k, shape in shapes.items():
        if tuple(p[k].shape) != shape:
            raise ValueError(f"token_select {n.name!r}: {k} has shape {tuple(p[k].shape)}, "
                             f"expected {shape}")


def save_graph(graph: Graph, path: str | Path) -> Path:
    """Write ``graph`` to an ``.npz`` (compressed, no pickle)."""
    graph.validate()
    structure = {
        "format": GRAPH_FORMAT_VERSION,
        "name": graph.name,
        "input_shape": list(graph.input_shape),
        "output": graph.output,
        "meta": graph.meta,
        "nodes": [{"op": n.op.value, "name": n.name, "inputs": list(n.inputs),
                   "attrs": n.attrs, "params": sorted(n.params)} for n in graph.nodes],
    }
    arrays = {f"{n.name}/{k}": np.asarray(v) for n in graph.nodes for k, v in n.params.items()}
    path = Path(path)
    with atomic_open(path, "wb") as f:
        np.savez_compressed(f, __graph__=np.array(json.dumps(structure, sort_keys=True)),
                            **arrays)
    return path


def load_graph(path: str | Path) -> Graph:
    """Read a graph written by :func:`save_graph`, without pickle, checking everything.

    The archive's directory and array headers are checked before anything is inflated
    (:func:`chipforge.guard.inspect_npz`): no pickled objects, sizes as declared, a total
    within the memory budget.
    """
    from chipforge.guard import inspect_npz, npz_budget

    path = Path(path)
    label = f"model file {path}"
    members = inspect_npz(path, what="model file", budget=npz_budget())
    if "__graph__" not in members:
        raise ValueError(f"{label} is not a chipforge graph (no __graph__ entry)")
    try:
        with np.load(path, allow_pickle=False) as data:
            structure = json.loads(str(data["__graph__"]))
            arrays = {k: data[k] for k in data.files if k != "__graph__"}
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise ValueError(f"{label} is corrupt or truncated: {e}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{label} has a corrupt structure entry: {e}") from None
    if not isinstance(structure, dict):
        raise ValueError(f"{label}: the __graph__ entry must be a JSON object, not "
                         f"{type(structure).__name__}")
    if structure.get("format") != GRAPH_FORMAT_VERSION:
        raise ValueError(f"{label} has format {structure.get('format')!r}; "
                         f"this chipforge reads format {GRAPH_FORMAT_VERSION}")
    try:
        return _graph_from_structure(structure, arrays, label)
    except (KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{label}: the __graph__ entry is malformed ({type(e).__name__}: "
                         f"{e}); write the file with chipforge's save_graph") from None
    except ValueError as e:
        if str(e).startswith(label):
            raise
        raise ValueError(f"{label}: {e}") from None


def _graph_from_structure(structure: dict, arrays: dict[str, np.ndarray], label: str) -> Graph:
    nodes = []
    for entry in structure["nodes"]:
        try:
            op = Op(entry["op"])
        except ValueError:
            raise ValueError(f"{label}: node {entry['name']!r} has unknown op "
                             f"{entry['op']!r}") from None
        params = {}
        for k in entry["params"]:
            key = f"{entry['name']}/{k}"
            if key not in arrays:
                raise ValueError(f"{label}: array {key!r} is missing")
            params[k] = arrays[key]
        if not isinstance(entry["attrs"], dict):
            raise ValueError(f"{label}: node {entry['name']!r}: attrs must be an object")
        nodes.append(Node(op, entry["name"], tuple(entry["inputs"]), entry["attrs"], params))
    shape = structure["input_shape"]
    if not (isinstance(shape, list) and shape and all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in shape)):
        raise ValueError(f"{label}: input_shape must be a list of positive integers, not "
                         f"{shape!r}")
    graph = Graph(structure["name"], tuple(shape), nodes, structure.get("output"),
                  structure.get("meta", {}))
    check_values(graph, label)
    return graph


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _positive_finite(value: Any) -> bool:
    return isinstance(value, int | float | np.number) and not isinstance(value, bool) \
        and bool(np.isfinite(value)) and value > 0


def check_values(graph: Graph, label: str) -> None:
    """The numbers of a graph read from a file, as the ONNX importer checks them: every
    parameter a finite real-number array, the quantization attributes of the right type and
    range. ValueError naming ``label`` (the file), the node and the field otherwise."""
    for n in graph.nodes:
        where = f"{label}: node {n.name!r} ({n.op.value})"
        for key, value in n.params.items():
            if value.dtype.kind not in "biuf":
                raise ValueError(f"{where}: parameter {key!r} must be an array of real "
                                 f"numbers, not {value.dtype} {value.shape}")
            if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
                raise ValueError(f"{where}: parameter {key!r} must be finite; it holds "
                                 f"{int(np.isnan(value).sum())} NaN and "
                                 f"{int(np.isinf(value).sum())} infinite of {value.size}")
        attrs = n.attrs
        for key in ("weight_bits", "act_bits", "bits"):
            if key in attrs and not (_is_int(attrs[key]) and 1 <= attrs[key] <= 32):
                raise ValueError(f"{where}: {key} must be an integer in 1..32, not "
                                 f"{attrs[key]!r}")
        if "act_scale" in attrs and not _positive_finite(attrs["act_scale"]):
            raise ValueError(f"{where}: act_scale must be a finite number > 0 (the step of "
                             "the input quantizer, x_q = round(x / act_scale)), not "
                             f"{attrs['act_scale']!r}")
        if n.op is Op.QUANTIZE and not _positive_finite(attrs.get("scale")):
            raise ValueError(f"{where}: scale must be a finite number > 0, not "
                             f"{attrs.get('scale')!r}")
        if "weight_scale" in attrs:
            scale = attrs["weight_scale"]
            scales = scale if isinstance(scale, list) else [scale]
            channels = n.params["weight"].shape[0] if "weight" in n.params else None
            if not scales or not all(_positive_finite(s) for s in scales) or (
                    isinstance(scale, list) and channels is not None
                    and len(scale) != channels):
                raise ValueError(f"{where}: weight_scale must be a finite number > 0 or a "
                                 f"list of one per output channel ({channels}), not "
                                 f"{scale!r}"[:300])
        for key in ("act_signed", "signed"):
            if key in attrs and not isinstance(attrs[key], bool):
                raise ValueError(f"{where}: {key} must be true or false, not {attrs[key]!r}")
        if "zero_point" in attrs and not _is_int(attrs["zero_point"]):
            raise ValueError(f"{where}: zero_point must be an integer, not "
                             f"{attrs['zero_point']!r}")
