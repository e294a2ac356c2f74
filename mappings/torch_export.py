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
torch and exported again).

Node names are the module names (``"conv1"``, ``"fc2"``; nested: ``"features.0"``).
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
from torch import nn

from chipforge.mappings.quantize import quantize_weight_tensor
from chipforge.sim.graph import Graph, Node, Op

__all__ = ["fold_batchnorm", "to_graph", "to_module"]


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
            case Op.CONV2D:
                w = n.params["weight"]
                layer = nn.Conv2d(w.shape[1] * int(a.get("groups", 1)), w.shape[0],
                                  w.shape[2:], stride=int(a.get("stride", 1)),
                                  padding=int(a.get("padding", 0)),
                                  groups=int(a.get("groups", 1)), bias="bias" in n.params)
            case Op.LINEAR:
                w = n.params["weight"]
                layer = nn.Linear(w.shape[1], w.shape[0], bias="bias" in n.params)
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
        if n.weighted:
            with torch.no_grad():
                layer.weight.copy_(torch.from_numpy(n.params["weight"]).float())
                if "bias" in n.params:
                    layer.bias.copy_(torch.from_numpy(n.params["bias"]).float())
            if "weight_bits" in a:
                layer.weight_bits = int(a["weight_bits"])
                layer.weight_per_channel = isinstance(a["weight_scale"], list)
            if "act_scale" in a:
                layer.act_bits = int(a["act_bits"])
                layer.act_scale = float(a["act_scale"])
                layer.act_signed = bool(a["act_signed"])
            if keep_zeros and not n.params["weight"].all():
                layer.register_buffer("prune_mask",
                                      torch.from_numpy((n.params["weight"] != 0)
                                                       .astype(np.float32)))
            if "fragment_signs" in n.params:
                layer.register_buffer("fragment_signs",
                                      torch.from_numpy(n.params["fragment_signs"].copy()))
                layer.fragment_size = int(a["fragment_size"])
                layer.fragment_order = str(a["fragment_order"])
        layers[n.name.replace(".", "_")] = layer
        prev = n.name
    return nn.Sequential(layers)
