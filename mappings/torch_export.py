"""PyTorch module <-> chipforge :class:`~chipforge.sim.graph.Graph`.

:func:`to_graph` exports a feed-forward module (an ``nn.Sequential``, nested Sequentials
allowed) made of ``Conv2d``, ``Linear``, ``ReLU``, ``MaxPool2d``, ``AvgPool2d``,
``AdaptiveAvgPool2d(1)`` (global average pooling), ``Flatten``, ``BatchNorm1d/2d``
(folded into the preceding conv/linear; a standalone one becomes a batchnorm node),
``Dropout`` and ``Identity`` (both dropped). Compression state that the passes of
:mod:`chipforge.mappings` attach to a weighted layer is exported with it:

- quantization (:mod:`chipforge.mappings.quantize`): attrs ``weight_bits``,
  ``weight_scale``, ``act_bits``, ``act_scale``, ``act_signed``; the weights are written as
  exact multiples of the scale (what :func:`chipforge.sim.executor.integer_weights` wants);
- FORMS polarization (:mod:`chipforge.mappings.polarize`): params ``fragment_signs`` and
  attrs ``fragment_size``, ``fragment_order``.

:func:`to_module` goes the other way for chain graphs (float weights; quantization and
polarization state are re-attached as plain attributes, so a graph can be fine-tuned in
torch and exported again); :class:`GraphModule` (:func:`graph_module`) does the same for
any graph the float executor runs (residual adds, concatenations, grouped convolutions,
reshapes, transformer ops), and :func:`graph_from_module` writes its weights back into
the graph.

Node names are the module names (``"conv1"``, ``"fc2"``; nested: ``"features.0"``).
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
from torch import nn

from chipforge.mappings.quantize import quantize_weight_tensor
from chipforge.sim.graph import Graph, Node, Op

__all__ = ["GRAPH_MODULE_OPS", "GraphModule", "fold_batchnorm", "graph_from_module", "graph_module",
           "module_name", "to_graph", "to_module"]


def _pair(value, what: str, name: str) -> int:
    if isinstance(value, tuple | list):
        if len(set(value)) != 1:
            raise ValueError(f"layer {name!r}: {what} {value} differs per axis; chipforge "
                             "graphs support square kernels, strides and paddings only")
        value = value[0]
    if not isinstance(value, int):
        raise ValueError(f"layer {name!r}: {what} {value!r} is not an integer")
    return int(value)


def _leaves(module: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """The leaf layers of nested Sequentials, named by their dotted module path."""
    if isinstance(module, nn.Sequential):
        out = []
        for child_name, child in module.named_children():
            out += _leaves(child, f"{prefix}.{child_name}" if prefix else child_name)
        return out
    return [(prefix or type(module).__name__.lower(), module)]


def _bn_affine(bn: nn.Module) -> tuple[np.ndarray, np.ndarray]:
    """BatchNorm in eval mode as y = x * a + b per channel."""
    var = bn.running_var.detach().double().numpy()
    mean = bn.running_mean.detach().double().numpy()
    a = 1.0 / np.sqrt(var + bn.eps)
    b = -mean * a
    if bn.affine:
        gamma = bn.weight.detach().double().numpy()
        beta = bn.bias.detach().double().numpy()
        a, b = a * gamma, b * gamma + beta
    return a, b


def fold_batchnorm(weight: np.ndarray, bias: np.ndarray | None, scale: np.ndarray,
                   shift: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fold y = (W x + b) * scale + shift (per output channel) into W', b'."""
    shape = (-1,) + (1,) * (weight.ndim - 1)
    b = np.zeros(weight.shape[0]) if bias is None else bias
    return weight * scale.reshape(shape), b * scale + shift


def _export_weighted(name: str, layer: nn.Module, bn: nn.Module | None,
                     quant_weights: bool) -> tuple[dict, dict]:
    weight = layer.weight.detach().double().numpy()      # a parametrized weight reads quantized
    if hasattr(layer, "parametrizations") and "weight" in layer.parametrizations:
        weight = layer.parametrizations.weight.original.detach().double().numpy()
    bias = None if layer.bias is None else layer.bias.detach().double().numpy()
    attrs: dict = {}
    params: dict = {}
    bits = getattr(layer, "weight_bits", None)
    if bn is not None:
        if bits is not None:
            raise ValueError(f"layer {name!r} is quantized but followed by batch-norm; fold the "
                             "batch-norm before quantizing (mappings.quantize works on folded "
                             "models)")
        weight, bias = fold_batchnorm(weight, bias, *_bn_affine(bn))
    if bits is not None and quant_weights:
        q, scale = quantize_weight_tensor(torch.from_numpy(weight), int(bits),
                                          bool(layer.weight_per_channel))
        scale = scale.reshape(-1).double().numpy()
        weight = q.double().numpy() * scale.reshape((-1,) + (1,) * (weight.ndim - 1))
        attrs["weight_bits"] = int(bits)
        attrs["weight_scale"] = ([float(s) for s in scale] if layer.weight_per_channel
                                 else float(scale[0]))
    if getattr(layer, "act_scale", None) is not None:
        attrs["act_bits"] = int(layer.act_bits)
        attrs["act_scale"] = float(layer.act_scale)
        attrs["act_signed"] = bool(layer.act_signed)
    signs = getattr(layer, "fragment_signs", None)
    if signs is not None:
        params["fragment_signs"] = signs.detach().numpy().astype(np.int8)
        attrs["fragment_size"] = int(layer.fragment_size)
        attrs["fragment_order"] = str(layer.fragment_order)
    params["weight"] = weight
    if bias is not None:
        params["bias"] = bias
    return attrs, params


def to_graph(module: nn.Module, input_shape: tuple[int, ...], *, name: str = "model",
             meta: dict | None = None, quantize: bool = True) -> Graph:
    """Export ``module`` (evaluated as in ``eval()`` mode) to a :class:`Graph`.

    ``input_shape`` excludes the batch axis. With ``quantize=False`` quantized layers are
    exported with float weights and no quantization attrs (the float model).
    """
    leaves = [(n, m) for n, m in _leaves(module)
              if not isinstance(m, nn.Dropout | nn.Identity)]
    nodes: list[Node] = []
    prev = "input"
    i = 0
    while i < len(leaves):
        lname, layer = leaves[i]
        nxt = leaves[i + 1][1] if i + 1 < len(leaves) else None
        if isinstance(layer, nn.Conv2d | nn.Linear):
            bn = nxt if isinstance(nxt, nn.BatchNorm1d | nn.BatchNorm2d) else None
            attrs, params = _export_weighted(lname, layer, bn, quantize)
            if not quantize:
                for k in ("weight_bits", "weight_scale", "act_bits", "act_scale", "act_signed"):
                    attrs.pop(k, None)
            if isinstance(layer, nn.Conv2d):
                if layer.padding_mode != "zeros":
                    raise ValueError(f"conv {lname!r}: padding_mode {layer.padding_mode!r} "
                                     "is not supported (zeros only)")
                if _pair(layer.dilation, "dilation", lname) != 1:
                    raise ValueError(f"conv {lname!r}: dilation must be 1")
                attrs.update(stride=_pair(layer.stride, "stride", lname),
                             padding=_pair(layer.padding, "padding", lname),
                             groups=int(layer.groups))
                op = Op.CONV2D
            else:
                op = Op.LINEAR
            nodes.append(Node(op, lname, (prev,), attrs, params))
            i += 2 if bn is not None else 1
        else:
            if isinstance(layer, nn.ReLU):
                node = Node(Op.RELU, lname, (prev,))
            elif isinstance(layer, nn.MaxPool2d | nn.AvgPool2d):
                if isinstance(layer, nn.MaxPool2d) and _pair(layer.dilation, "dilation",
                                                            lname) != 1:
                    raise ValueError(f"maxpool {lname!r}: dilation must be 1")
                if layer.ceil_mode:
                    raise ValueError(f"pool {lname!r}: ceil_mode is not supported")
                if isinstance(layer, nn.AvgPool2d) and layer.padding and \
                        not layer.count_include_pad:
                    raise ValueError(f"avgpool {lname!r}: count_include_pad=False with "
                                     "padding is not supported")
                kernel = _pair(layer.kernel_size, "kernel_size", lname)
                stride = _pair(layer.stride if layer.stride is not None else kernel,
                               "stride", lname)
                op = Op.MAXPOOL2D if isinstance(layer, nn.MaxPool2d) else Op.AVGPOOL2D
                node = Node(op, lname, (prev,), {"kernel": kernel, "stride": stride,
                                                 "padding": _pair(layer.padding, "padding",
                                                                  lname)})
            elif isinstance(layer, nn.AdaptiveAvgPool2d):
                if layer.output_size not in (1, (1, 1)):
                    raise ValueError(f"adaptive avgpool {lname!r}: only output_size 1 "
                                     f"(global average pooling) is supported, not "
                                     f"{layer.output_size}")
                node = Node(Op.GLOBAL_AVGPOOL, lname, (prev,))
            elif isinstance(layer, nn.Flatten):
                if layer.start_dim != 1 or layer.end_dim != -1:
                    raise ValueError(f"flatten {lname!r} must flatten dims 1..-1")
                node = Node(Op.FLATTEN, lname, (prev,))
            elif isinstance(layer, nn.BatchNorm1d | nn.BatchNorm2d):
                a, b = _bn_affine(layer)
                node = Node(Op.BATCHNORM, lname, (prev,), {"eps": 0.0},
                            {"gamma": a, "beta": b, "mean": np.zeros_like(a),
                             "var": np.ones_like(a)})
            else:
                raise ValueError(f"layer {lname!r} is a {type(layer).__name__}, which to_graph "
                                 "does not export; supported: Conv2d, Linear, ReLU, MaxPool2d, "
                                 "AvgPool2d, AdaptiveAvgPool2d(1), Flatten, BatchNorm1d/2d, "
                                 "Dropout, Identity")
            nodes.append(node)
            i += 1
        prev = nodes[-1].name
    return Graph(name, tuple(input_shape), nodes, meta=dict(meta or {}))


def to_module(graph: Graph, *, keep_zeros: bool = True) -> nn.Sequential:
    """A float ``nn.Sequential`` computing ``graph`` (chain graphs only).

    Quantization attrs and fragment signs are re-attached as attributes of the weighted
    layers (``weight_bits``, ``act_scale``, ``fragment_signs``, ...), but no fake
    quantization is installed: call :func:`chipforge.mappings.quantize.prepare_qat` for that.
    With ``keep_zeros`` a layer whose weights contain zeros gets a ``prune_mask`` buffer,
    so constrained fine-tuning (:func:`chipforge.mappings.train.train`) keeps it pruned.
    """
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    prev = "input"
    for n in graph.nodes:
        if n.inputs != (prev,):
            raise ValueError(f"to_module handles chain graphs only; node {n.name!r} reads "
                             f"{n.inputs}, not the previous node {prev!r}")
        a = n.attrs
        match n.op:
            case Op.CONV2D | Op.LINEAR:   # weights and compression state attached
                layer = _weighted_layer(n, keep_zeros=keep_zeros)
            case Op.RELU:
                layer = nn.ReLU()
            case Op.MAXPOOL2D:
                layer = nn.MaxPool2d(int(a["kernel"]), int(a.get("stride", a["kernel"])),
                                     int(a.get("padding", 0)))
            case Op.AVGPOOL2D:
                layer = nn.AvgPool2d(int(a["kernel"]), int(a.get("stride", a["kernel"])),
                                     int(a.get("padding", 0)))
            case Op.GLOBAL_AVGPOOL:
                layer = nn.AdaptiveAvgPool2d(1)
            case Op.FLATTEN:
                layer = nn.Flatten()
            case _:
                raise ValueError(f"to_module does not convert op {n.op.value} (node "
                                 f"{n.name!r}); fold batch-norm first")
        layers[module_name(n.name)] = layer
        prev = n.name
    return nn.Sequential(layers)


# -- any graph: a small interpreter module --------------------------------------------------

def module_name(node_name: str) -> str:
    """The torch child name of a graph node (torch forbids dots in child names)."""
    return node_name.replace(".", "_")


def _weighted_layer(n: Node, *, keep_zeros: bool) -> nn.Module:
    """A float Conv2d / Linear with the node's weights and compression state attached."""
    a = n.attrs
    w = n.params["weight"]
    if n.op is Op.CONV2D:
        groups = int(a.get("groups", 1))
        layer: nn.Module = nn.Conv2d(w.shape[1] * groups, w.shape[0], w.shape[2:],
                                     stride=int(a.get("stride", 1)),
                                     padding=int(a.get("padding", 0)), groups=groups,
                                     bias="bias" in n.params)
    else:
        layer = nn.Linear(w.shape[1], w.shape[0], bias="bias" in n.params)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(np.asarray(w)).float())
        if "bias" in n.params:
            layer.bias.copy_(torch.from_numpy(np.asarray(n.params["bias"])).float())
    if "weight_bits" in a:
        layer.weight_bits = int(a["weight_bits"])
        layer.weight_per_channel = isinstance(a["weight_scale"], list)
    if "act_scale" in a:
        layer.act_bits = int(a["act_bits"])
        layer.act_scale = float(a["act_scale"])
        layer.act_signed = bool(a["act_signed"])
    if keep_zeros and not np.asarray(w).all():
        layer.register_buffer("prune_mask", torch.from_numpy((np.asarray(w) != 0)
                                                             .astype(np.float32)))
    if "fragment_signs" in n.params:
        layer.register_buffer("fragment_signs",
                              torch.from_numpy(np.asarray(n.params["fragment_signs"]).copy()))
        layer.fragment_size = int(a["fragment_size"])
        layer.fragment_order = str(a["fragment_order"])
    return layer


class _Affine(nn.Module):
    """An inference batch norm (fixed per-channel scale and shift, not trained)."""

    def __init__(self, n: Node) -> None:
        super().__init__()
        p = n.params
        inv = np.asarray(p["gamma"]) / np.sqrt(np.asarray(p["var"])
                                               + float(n.attrs.get("eps", 1e-5)))
        self.register_buffer("scale", torch.from_numpy(inv).float())
        self.register_buffer("shift", torch.from_numpy(
            np.asarray(p["beta"]) - np.asarray(p["mean"]) * inv).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return x * self.scale.reshape(shape) + self.shift.reshape(shape)


GRAPH_MODULE_OPS = frozenset({
    Op.CONV2D, Op.LINEAR, Op.BATCHNORM, Op.RELU, Op.CLIP, Op.SIGN, Op.MAXPOOL2D,
    Op.AVGPOOL2D, Op.GLOBAL_AVGPOOL, Op.FLATTEN, Op.ADD, Op.QUANTIZE, Op.ADD_CONST,
    Op.MUL_CONST, Op.LAYERNORM, Op.GELU, Op.TRANSPOSE, Op.RESHAPE, Op.MATMUL, Op.SLICE,
    Op.CONCAT, Op.MEAN, Op.SOFTMAX, Op.SIGMOID, Op.HARDSIGMOID, Op.HARDSWISH, Op.SILU,
    Op.MUL})
"""Ops :class:`GraphModule` runs (every op of the float executor but the token selector)."""


class GraphModule(nn.Module):
    """A float torch module that runs a :class:`Graph` node by node, in the graph's
    (topological) order, as :func:`chipforge.sim.executor.run_graph` does with
    ``quantized=False``: residual adds, concatenations, grouped / depthwise convolutions,
    pooling, reshapes and the transformer ops.

    Every conv / linear node is a child module named :func:`module_name` of the node (so
    :func:`chipforge.mappings.train.weighted_layers` finds them under the names
    ``to_module`` gives a chain), with the compression state of :func:`to_module`
    attached; a child may be replaced (e.g. by a PIM layer) and the graph still runs.
    Batch norms are fixed affine maps (buffers); ``QUANTIZE`` nodes are the identity
    (float run). :func:`graph_from_module` writes the trained weights back.
    """

    def __init__(self, graph: Graph, *, keep_zeros: bool = True) -> None:
        super().__init__()
        self.graph = graph.copy()
        self._order: list[tuple[Node, str | None, tuple[str, ...]]] = []
        constants: dict[str, torch.Tensor] = {}
        for i, n in enumerate(self.graph.nodes):
            if n.op not in GRAPH_MODULE_OPS:
                raise ValueError(f"node {n.name!r}: op {n.op.value} has no torch equivalent "
                                 "here (GraphModule runs "
                                 f"{', '.join(sorted(o.value for o in GRAPH_MODULE_OPS))})")
            child = None
            if n.weighted:
                child = module_name(n.name)
                if hasattr(self, child):
                    raise ValueError(f"nodes {n.name!r} and another map to the same torch "
                                     f"name {child!r}")
                w = n.params["weight"]
                if n.op is Op.CONV2D and w.shape[2] != w.shape[3]:
                    raise ValueError(f"conv {n.name!r}: kernel {w.shape[2:]} is not square")
                self.add_module(child, _weighted_layer(n, keep_zeros=keep_zeros))
            elif n.op is Op.BATCHNORM:
                child = f"_bn{i}"
                self.add_module(child, _Affine(n))
            elif "constant" in n.params:
                key = f"_const{i}"
                self.register_buffer(key, torch.from_numpy(
                    np.asarray(n.params["constant"], dtype=np.float64)).float())
                constants[n.name] = key
            self._order.append((n, child, tuple(n.inputs)))
        self._constants = constants

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        values: dict[str, torch.Tensor] = {"input": x}
        for n, child, inputs in self._order:
            args = [values[i] for i in inputs]
            v = args[0]
            a = n.attrs
            match n.op:
                case Op.CONV2D | Op.LINEAR | Op.BATCHNORM:
                    y = getattr(self, child)(v)
                case Op.RELU:
                    y = torch.relu(v)
                case Op.CLIP:
                    lo, hi = a.get("min"), a.get("max")
                    y = v if lo is None and hi is None else torch.clamp(v, lo, hi)
                case Op.SIGN:
                    y = torch.where(v >= 0, 1.0, -1.0).to(v.dtype)
                case Op.MAXPOOL2D:
                    k = int(a["kernel"])
                    y = F.max_pool2d(v, k, int(a.get("stride", k)), int(a.get("padding", 0)),
                                     ceil_mode=bool(a.get("ceil_mode", False)))
                case Op.AVGPOOL2D:
                    k = int(a["kernel"])
                    y = F.avg_pool2d(v, k, int(a.get("stride", k)), int(a.get("padding", 0)),
                                     count_include_pad=True)
                case Op.SIGMOID:
                    y = torch.sigmoid(v)
                case Op.HARDSIGMOID:   # ONNX's alpha, beta (torch's is 1/6, 1/2)
                    y = torch.clamp(float(a.get("alpha", 0.2)) * v
                                    + float(a.get("beta", 0.5)), 0.0, 1.0)
                case Op.HARDSWISH:
                    y = F.hardswish(v)
                case Op.SILU:
                    y = F.silu(v)
                case Op.MUL:           # two activations, broadcast (squeeze-and-excitation)
                    y = v * args[1]
                case Op.GLOBAL_AVGPOOL:
                    y = v.mean(dim=(2, 3), keepdim=True)
                case Op.FLATTEN:
                    y = v.reshape(v.shape[0], -1)
                case Op.ADD:
                    y = v + args[1]
                case Op.QUANTIZE:
                    y = v
                case Op.ADD_CONST:
                    y = v + getattr(self, self._constants[n.name])
                case Op.MUL_CONST:
                    y = v * getattr(self, self._constants[n.name])
                case Op.LAYERNORM:
                    y = F.layer_norm(v, v.shape[-1:], eps=float(a.get("eps", 1e-5))) \
                        * torch.from_numpy(np.asarray(n.params["gamma"])).to(v.dtype) \
                        + torch.from_numpy(np.asarray(n.params["beta"])).to(v.dtype)
                case Op.GELU:
                    y = F.gelu(v, approximate=a.get("approximate", "none"))
                case Op.TRANSPOSE:
                    y = v.permute(0, *(int(p) for p in a["perm"]))
                case Op.RESHAPE:
                    y = v.reshape(v.shape[0], *(int(d) for d in a["shape"]))
                case Op.MATMUL:
                    y = torch.matmul(v, args[1])
                case Op.SLICE:
                    y = v.narrow(int(a["axis"]), int(a["start"]),
                                 int(a["stop"]) - int(a["start"]))
                case Op.CONCAT:
                    parts = list(args)
                    if n.name in self._constants:
                        c = getattr(self, self._constants[n.name])
                        parts.insert(int(a.get("constant_index", 0)),
                                     c.expand(v.shape[0], *c.shape[1:]).to(v.dtype))
                    y = torch.cat(parts, dim=int(a["axis"]))
                case Op.MEAN:
                    y = v.mean(dim=tuple(int(i) for i in a["axes"]),
                               keepdim=bool(a.get("keepdims", True)))
                case Op.SOFTMAX:
                    y = torch.softmax(v, dim=int(a.get("axis", -1)))
            values[n.name] = y
        return values[self.graph.output_name]

    def weighted_children(self) -> dict[str, str]:
        """Graph node name -> torch child name of every conv / linear node."""
        return {n.name: child for n, child, _ in self._order if n.weighted}


def graph_module(graph: Graph, *, keep_zeros: bool = True) -> GraphModule:
    """:class:`GraphModule` of ``graph`` (any graph of :data:`GRAPH_MODULE_OPS`)."""
    return GraphModule(graph, keep_zeros=keep_zeros)


def graph_from_module(module: nn.Module, template: Graph, *, quantize: bool) -> Graph:
    """``template`` with the weights (and quantization / polarization state, as
    :func:`to_graph` exports them) of ``module``'s conv / linear children, found by
    :func:`module_name` (a :class:`GraphModule` or the ``to_module`` Sequential of the
    template). With ``quantize=False`` the weights are float and quantization attrs are
    dropped."""
    out = template.copy()
    children = dict(module.named_modules())
    for n in out.weighted_nodes():
        child = module_name(n.name)
        if child not in children:
            raise ValueError(f"the trained module has no layer {child!r} for node {n.name!r}")
        attrs, params = _export_weighted(n.name, children[child], None, quantize)
        for k in ("weight_bits", "weight_scale", "act_bits", "act_scale", "act_signed",
                  "fragment_size", "fragment_order"):
            n.attrs.pop(k, None)
        if not quantize:
            for k in ("weight_bits", "weight_scale", "act_bits", "act_scale", "act_signed"):
                attrs.pop(k, None)
        n.attrs.update(attrs)
        n.params.pop("fragment_signs", None)
        n.params.pop("bias", None)
        n.params.update(params)
    return out
