"""Run a :class:`~chipforge.sim.graph.Graph` on numpy, with a pluggable integer matmul.

Every weighted node (``CONV2D`` via im2col, ``LINEAR``) reduces to one 2-D product. For a
quantized node the executor quantizes the input activations to integers
``x_q = clip(round(x / act_scale))``, takes the integer weights ``w_q = weight /
weight_scale``, calls ``matmul(node, x_q, w_q)`` for the exact integer product, and
rescales: ``y = (x_q @ w_q) * act_scale * weight_scale + bias``. The default ``matmul`` is
exact integer arithmetic, which defines "the quantized model". Accelerator simulators
(crossbars, ADCs, RTL) replace ``matmul`` and nothing else, so in ideal-device mode they
reproduce the quantized model exactly.

Unquantized nodes run in float64 (``quantized=False`` runs every node that way: the
float model).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from chipforge.sim.graph import Graph, Node, Op

__all__ = ["MatmulHook", "activation_range", "block_diagonal_weights", "exact_int_matmul",
           "fake_quantize", "im2col", "integer_weights", "quantize_activations", "run_graph",
           "run_node", "weight_matrix"]

MatmulHook = Callable[[Node, np.ndarray, np.ndarray], np.ndarray]
"""``matmul(node, x_q, w_q) -> y``: x_q (M, K) int64, w_q (K, N) int64, y (M, N) numbers."""


def exact_int_matmul(node: Node, x_q: np.ndarray, w_q: np.ndarray) -> np.ndarray:
    """Exact integer product (float64 BLAS while every sum stays below 2**53)."""
    bound = float(np.abs(x_q).max(initial=0)) * float(np.abs(w_q).max(initial=0)) * x_q.shape[1]
    if bound < 2.0**53:
        return np.rint(x_q.astype(np.float64) @ w_q.astype(np.float64)).astype(np.int64)
    return (x_q.astype(object) @ w_q.astype(object)).astype(np.int64)


def activation_range(node: Node) -> tuple[int, int]:
    bits = int(node.attrs["act_bits"])
    if node.attrs["act_signed"]:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def quantize_activations(x: np.ndarray, node: Node) -> np.ndarray:
    """Round-to-nearest, saturating activation quantizer of a quantized node."""
    lo, hi = activation_range(node)
    return np.clip(np.rint(x / float(node.attrs["act_scale"])), lo, hi).astype(np.int64)


def fake_quantize(x: np.ndarray, node: Node) -> np.ndarray:
    """A ``QUANTIZE`` node: ONNX QuantizeLinear then DequantizeLinear (round half to even,
    saturate to the integer range, zero point added then removed)."""
    bits, zero = int(node.attrs["bits"]), int(node.attrs["zero_point"])
    lo, hi = ((-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if node.attrs["signed"]
              else (0, (1 << bits) - 1))
    scale = float(node.attrs["scale"])
    return (np.clip(np.rint(x / scale) + zero, lo, hi) - zero) * scale


def _weight_scale(node: Node) -> np.ndarray:
    """Weight scale as an array broadcastable over output channels (axis 0 of weight)."""
    return np.asarray(node.attrs["weight_scale"], dtype=np.float64).reshape(-1)


def integer_weights(node: Node) -> np.ndarray:
    """The integer weights of a quantized node, same shape as ``weight``.

    Raises ``ValueError`` when the weights are not multiples of the scale within the
    weight range: the node's metadata and values disagree.
    """
    w = node.params["weight"].astype(np.float64)
    scale = _weight_scale(node).reshape((-1,) + (1,) * (w.ndim - 1))
    q = np.rint(w / scale)
    bits = int(node.attrs["weight_bits"])
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if np.abs(q * scale - w).max(initial=0) > 1e-6 * max(1.0, float(np.abs(w).max(initial=0))):
        raise ValueError(f"node {node.name!r}: weights are not multiples of weight_scale")
    if q.size and (q.min() < lo or q.max() > hi):
        raise ValueError(f"node {node.name!r}: integer weights span {int(q.min())}..{int(q.max())}"
                         f", outside the {bits}-bit range {lo}..{hi}")
    return q.astype(np.int64)


def weight_matrix(node: Node, weights: np.ndarray | None = None) -> np.ndarray:
    """Weights as the (K, N) right operand of the layer's 2-D product."""
    w = node.params["weight"] if weights is None else weights
    return w.reshape(w.shape[0], -1).T


def block_diagonal_weights(node: Node, weights: np.ndarray | None = None) -> np.ndarray:
    """The (K, N) matrix of a weighted node for crossbars; for a grouped convolution
    (``groups`` = G > 1) the block-diagonal (G * K_g, G * N_g) matrix: group g's weights in
    rows g*K_g.. and columns g*N_g.., zeros elsewhere. Its rows follow :func:`im2col` of the
    whole input (channels are group-major), so one product computes every group."""
    w = node.params["weight"] if weights is None else weights
    groups = int(node.attrs.get("groups", 1)) if node.op is Op.CONV2D else 1
    if groups == 1:
        return weight_matrix(node, w)
    per = w.shape[0] // groups
    k_g = int(np.prod(w.shape[1:]))
    out = np.zeros((groups * k_g, w.shape[0]), dtype=w.dtype)
    for g in range(groups):
        out[g * k_g:(g + 1) * k_g, g * per:(g + 1) * per] = w[g * per:(g + 1) * per].reshape(
            per, -1).T
    return out


def im2col(x: np.ndarray, kh: int, kw: int, stride: int, padding: int) -> tuple[np.ndarray, int,
                                                                                 int]:
    """(N, C, H, W) -> patches (N * OH * OW, C * kh * kw), OH, OW (PyTorch's ordering)."""
    n, c, h, w = x.shape
    if padding:
        x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    oh = (h + 2 * padding - kh) // stride + 1
    ow = (w + 2 * padding - kw) // stride + 1
    if oh < 1 or ow < 1:
        raise ValueError(f"a {kh}x{kw} kernel does not fit a {h}x{w} input "
                         f"with padding {padding}")
    view = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))
    view = view[:, :, ::stride, ::stride][:, :, :oh, :ow]          # N, C, OH, OW, kh, kw
    patches = view.transpose(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, c * kh * kw)
    return patches, oh, ow


def _dense(node: Node, x2d: np.ndarray, w_float: np.ndarray, matmul: MatmulHook | None,
           quantized: bool) -> np.ndarray:
    """One 2-D product of a weighted node, quantized or float. w_float: (out, K)."""
    if quantized and node.quantized:
        x_q = quantize_activations(x2d, node)
        w_q = integer_weights(node).reshape(w_float.shape[0], -1).T
        y = np.asarray((matmul or exact_int_matmul)(node, x_q, w_q), dtype=np.float64)
        y = y * float(node.attrs["act_scale"]) * _weight_scale(node)[None, :]
    else:
        y = x2d.astype(np.float64) @ w_float.reshape(w_float.shape[0], -1).T.astype(np.float64)
    if "bias" in node.params:
        y = y + node.params["bias"].astype(np.float64)[None, :]
    return y


def _pool(x: np.ndarray, kernel: int, stride: int, padding: int, kind: str) -> np.ndarray:
    if padding:
        fill = -np.inf if kind == "max" else 0.0
        x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)),
                   constant_values=fill)
    view = np.lib.stride_tricks.sliding_window_view(x, (kernel, kernel), axis=(2, 3))
    view = view[:, :, ::stride, ::stride]
    return view.max(axis=(4, 5)) if kind == "max" else view.mean(axis=(4, 5))


def _erf(x: np.ndarray) -> np.ndarray:
    """The error function (numpy has none): SciPy's when installed (it comes with
    scikit-learn), else math.erf element by element."""
    try:
        from scipy.special import erf
    except ImportError:  # pragma: no cover - scipy is installed with scikit-learn
        return np.frompyfunc(math.erf, 1, 1)(x).astype(np.float64)
    return erf(x)


def run_node(node: Node, args: list[np.ndarray], matmul: MatmulHook | None = None,
             quantized: bool = True) -> np.ndarray:
    """One node on its input values (``args`` in the order of ``node.inputs``)."""
    return _run_node(node, args, matmul, quantized)


def _run_node(node: Node, args: list[np.ndarray], matmul: MatmulHook | None,
              quantized: bool) -> np.ndarray:
    a = node.attrs
    x = args[0]
    match node.op:
        case Op.LINEAR:
            # (N, features), or (N, ..., features) for token sequences: one product either way.
            w = node.params["weight"]
            if x.ndim < 2 or x.shape[-1] != w.shape[1]:
                raise ValueError(f"linear {node.name!r} needs (N, ..., {w.shape[1]}) input, "
                                 f"got shape {x.shape}")
            y = _dense(node, x.reshape(-1, x.shape[-1]), w, matmul, quantized)
            return y.reshape(x.shape[:-1] + (w.shape[0],))
        case Op.CONV2D:
            w = node.params["weight"]
            out_ch, in_per_group, kh, kw = w.shape
            groups = int(a.get("groups", 1))
            stride, padding = int(a.get("stride", 1)), int(a.get("padding", 0))
            n = x.shape[0]
            if groups > 1 and matmul is not None and quantized and node.quantized:
                # A hook (crossbars) computes what is placed: the block-diagonal matrix of
                # all groups, one product over the whole input's patches (group-major).
                patches, oh, ow = im2col(x, kh, kw, stride, padding)
                sub = node.copy()
                sub.params["weight"] = block_diagonal_weights(node).T
                y = _dense(sub, patches, sub.params["weight"], matmul, quantized)
                return y.reshape(n, oh, ow, -1).transpose(0, 3, 1, 2)
            outs = []
            for g in range(groups):
                xg = x[:, g * in_per_group:(g + 1) * in_per_group]
                patches, oh, ow = im2col(xg, kh, kw, stride, padding)
                sub = node
                if groups > 1:
                    per = out_ch // groups
                    sub = node.copy()
                    sub.params["weight"] = w[g * per:(g + 1) * per]
                    if "bias" in node.params:
                        sub.params["bias"] = node.params["bias"][g * per:(g + 1) * per]
                    if np.ndim(a.get("weight_scale", 0.0)) == 1:
                        sub.attrs["weight_scale"] = list(a["weight_scale"][g * per:(g + 1) * per])
                y = _dense(sub, patches, sub.params["weight"], matmul, quantized)
                outs.append(y.reshape(n, oh, ow, -1).transpose(0, 3, 1, 2))
            return np.concatenate(outs, axis=1) if groups > 1 else outs[0]
        case Op.BATCHNORM:
            p = node.params
            shape = (1, -1) + (1,) * (x.ndim - 2)
            inv = p["gamma"] / np.sqrt(p["var"] + float(a.get("eps", 1e-5)))
            return (x - p["mean"].reshape(shape)) * inv.reshape(shape) + p["beta"].reshape(shape)
        case Op.RELU:
            return np.maximum(x, 0.0)
        case Op.CLIP:
            lo, hi = a.get("min"), a.get("max")
            return np.clip(x, -np.inf if lo is None else float(lo),
                           np.inf if hi is None else float(hi))
        case Op.SIGN:
            return np.where(x >= 0, 1.0, -1.0)
        case Op.MAXPOOL2D | Op.AVGPOOL2D:
            kernel = int(a["kernel"])
            return _pool(x, kernel, int(a.get("stride", kernel)), int(a.get("padding", 0)),
                         "max" if node.op is Op.MAXPOOL2D else "avg")
        case Op.GLOBAL_AVGPOOL:
            return x.mean(axis=(2, 3), keepdims=True)
        case Op.FLATTEN:
            return x.reshape(x.shape[0], -1)
        case Op.ADD:
            return x + args[1]
        case Op.QUANTIZE:
            return fake_quantize(x, node) if quantized else x
        case Op.ADD_CONST:
            return x + node.params["constant"].astype(np.float64)
        case Op.MUL_CONST:
            return x * node.params["constant"].astype(np.float64)
        case Op.LAYERNORM:
            mean = x.mean(axis=-1, keepdims=True)
            var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
            y = (x - mean) / np.sqrt(var + float(a.get("eps", 1e-5)))
            return y * node.params["gamma"] + node.params["beta"]
        case Op.GELU:
            if a.get("approximate", "none") == "tanh":
                return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
            return 0.5 * x * (1 + _erf(x / np.sqrt(2)))
        case Op.TRANSPOSE:
            return x.transpose((0, *(int(p) for p in a["perm"])))
        case Op.RESHAPE:
            return x.reshape((x.shape[0], *(int(d) for d in a["shape"])))
        case Op.MATMUL:
            return np.matmul(x, args[1])
        case Op.SLICE:
            index = [slice(None)] * x.ndim
            index[int(a["axis"])] = slice(int(a["start"]), int(a["stop"]))
            return x[tuple(index)]
        case Op.CONCAT:
            parts = list(args)
            if "constant" in node.params:
                c = node.params["constant"]
                parts.insert(int(a.get("constant_index", 0)),
                             np.broadcast_to(c, (x.shape[0], *c.shape[1:])))
            return np.concatenate(parts, axis=int(a["axis"]))
        case Op.MEAN:
            return x.mean(axis=tuple(int(i) for i in a["axes"]),
                          keepdims=bool(a.get("keepdims", True)))
        case Op.SOFTMAX:
            axis = int(a.get("axis", -1))
            e = np.exp(x - x.max(axis=axis, keepdims=True))
            return e / e.sum(axis=axis, keepdims=True)
    raise ValueError(f"node {node.name!r}: the numpy executor does not run op {node.op.value}")


def run_graph(graph: Graph, x: np.ndarray, *, matmul: MatmulHook | None = None,
              quantized: bool = True, return_all: bool = False,
              batch_size: int = 512) -> np.ndarray | dict[str, np.ndarray]:
    """Run ``graph`` on inputs ``x`` (N, *input_shape).

    ``matmul`` replaces the integer product of quantized weighted nodes (see module doc).
    With ``return_all`` the result is every node's output by name (plus ``"input"``).
    """
    x = np.asarray(x, dtype=np.float64)
    if tuple(x.shape[1:]) != graph.input_shape:
        raise ValueError(f"inputs have shape {x.shape[1:]} per sample; graph {graph.name!r} "
                         f"expects {graph.input_shape}")
    chunks = []
    for start in range(0, max(len(x), 1), batch_size):
        values = {"input": x[start:start + batch_size]}
        for node in graph.nodes:
            values[node.name] = _run_node(node, [values[i] for i in node.inputs], matmul,
                                          quantized)
        chunks.append(values if return_all else values[graph.output_name])
    if return_all:
        return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
    return np.concatenate(chunks)
