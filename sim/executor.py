"""Run a :class:`~chipforge.sim.graph.Graph` on numpy, with a pluggable integer matmul.

Every weighted node (``CONV2D`` via im2col, ``LINEAR``) reduces to one 2-D product. For a
quantized node the executor quantizes the input activations to integers
``x_q = clip(round(x / act_scale))``, takes the integer weights ``w_q = weight /
weight_scale``, calls ``matmul(node, x_q, w_q)`` for the exact integer product, and
rescales: ``y = (x_q @ w_q) * act_scale * weight_scale + bias``. The default ``matmul`` is
exact integer arithmetic, which defines "the quantized model". Accelerator simulators
(crossbars, ADCs, RTL) replace ``matmul`` and nothing else, so in ideal-device mode they
reproduce the quantized model exactly.

A quantized convolution whose product is exact integers (the default, or a hook that
offers ``exact_weights``, such as ideal crossbars) skips the patch matrix: one direct
float32 convolution on all cores, exact by a bound checked on every call
(:func:`exact_conv`); the same integers as the im2col product.

Unquantized nodes run in float64 (``quantized=False`` runs every node that way: the
float model).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from chipforge.sim.graph import Graph, Node, Op

__all__ = ["MatmulHook", "TokenMask", "activation_range", "block_diagonal_weights",
           "center_on_live_tokens", "exact_conv", "exact_int_matmul", "exact_product",
           "fake_quantize", "im2col", "integer_weights", "pool_output_size",
           "quantize_activations", "run_graph", "run_node", "sigmoid", "token_scores",
           "weight_matrix"]

MatmulHook = Callable[[Node, np.ndarray, np.ndarray], np.ndarray]
"""``matmul(node, x_q, w_q) -> y``: x_q (M, K) int64, w_q (K, N) int64, y (M, N) numbers."""


def exact_int_matmul(node: Node, x_q: np.ndarray, w_q: np.ndarray) -> np.ndarray:
    """Exact integer product (float64 BLAS while every sum stays below 2**53)."""
    y = exact_product(node, x_q, w_q)
    if y is not None:
        return np.rint(y).astype(np.int64)
    return (np.asarray(x_q).astype(np.int64).astype(object)
            @ w_q.astype(object)).astype(np.int64)


def exact_product(node: Node, x_q: np.ndarray, w_q: np.ndarray) -> np.ndarray | None:
    """``x_q @ w_q`` for integer-valued operands (any dtype) as float64 holding the exact
    integers, or None when a sum could leave float64's exact range (2**53).

    float32 GEMMs where every partial sum stays below 2**24: one, or one of twice the
    width on the weights split into two halves of digits (``w = w_lo + 2**s * w_hi``, both
    small) added in float64; else one float64 GEMM. No rounding or integer conversion
    passes. The bound on ``x_q`` is the node's activation range when it has one (the
    executor's quantizer clips to it), else the data's."""
    k = x_q.shape[1]
    if "act_bits" in node.attrs and x_q.dtype.kind == "f":
        lo, hi = activation_range(node)
        x_max = float(max(-lo, hi))
    else:
        x_max = float(np.abs(x_q).max(initial=0))
    w_max = int(np.abs(w_q).max(initial=0))
    if x_max * w_max * k < 2.0**24 or _fits_by_norms(x_q, w_q):
        y = x_q.astype(np.float32, copy=False) @ w_q.astype(np.float32)
        return y.astype(np.float64)
    shift = (w_max.bit_length() + 1) // 2
    half = 1 << max(shift - 1, 0)
    if x_max * max(half, (w_max + half) >> shift) * k < 2.0**24:
        w_lo, w_hi, shift = _digit_halves(w_q)
        n = w_q.shape[1]
        parts = x_q.astype(np.float32, copy=False) @ np.concatenate(
            [w_lo, w_hi], axis=1).astype(np.float32)
        y = parts[:, n:].astype(np.float64)
        y *= float(1 << shift)
        y += parts[:, :n]
        return y
    if x_max * w_max * k < 2.0**53:
        return x_q.astype(np.float64, copy=False) @ w_q.astype(np.float64)
    return None


def _fits_by_norms(x_q: np.ndarray, w_q: np.ndarray) -> bool:
    """Whether every partial sum of ``x_q @ w_q`` stays below 2**24 by Cauchy-Schwarz: a
    partial sum of output (i, j) is at most ``sum_k |x_ik| |w_kj| <= ||x_i||_2 ||w_j||_2``
    (as in :func:`exact_conv`). Far tighter than ``max|x| max|w| K`` for activations that
    are not all at full scale, so one float32 GEMM instead of two on digit halves; the
    norms cost one pass over the operands (an N-th of the GEMM)."""
    x = np.asarray(x_q)
    if x.size == 0 or w_q.size == 0:
        return True
    x = x.astype(np.float64, copy=False)
    w = np.asarray(w_q, dtype=np.float64)
    rows = float(np.einsum("ij,ij->i", x, x).max())
    cols = float(np.einsum("ij,ij->j", w, w).max())
    return math.sqrt(rows) * math.sqrt(cols) * (1 + 1e-9) < 2.0**24


def _digit_halves(w_q: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """``w = w_lo + 2**shift * w_hi`` with both halves about sqrt(max |w|) in size
    (``w_lo`` in -2**(shift-1) .. 2**(shift-1) - 1): the products of each half stay small."""
    w = np.asarray(w_q).astype(np.int64)
    shift = (int(np.abs(w).max(initial=0)).bit_length() + 1) // 2
    half = 1 << max(shift - 1, 0)
    w_lo = ((w + half) & ((1 << shift) - 1)) - half
    return w_lo, (w - w_lo) >> shift, shift


_EXACT_CONV_BACKENDS = frozenset({"Mkldnn", "Slow2d"})
"""torch convolution algorithms that only multiply and add the operands (direct or
im2col + GEMM); NNPACK's Winograd/FFT transforms would round."""


def exact_conv(x_q: np.ndarray, w_q: np.ndarray, *, stride: int = 1, padding: int = 0,
               groups: int = 1, x_max: float | None = None) -> np.ndarray | None:
    """The convolution of integer-valued ``x_q`` (N, C, H, W) with integer weights ``w_q``
    (O, C / groups, kh, kw) as float64 holding the exact integers, or None when that
    cannot be guaranteed (the caller then takes :func:`im2col` and :func:`exact_product`).

    One float32 direct convolution (torch, all cores, no patch matrix), or two on the
    weights split in digit halves. Exact whatever the summation order or thread count:
    every partial sum of an output is a sum over a subset of its products, so its
    magnitude is at most ``sum |x| |w|``; while that bound is below 2**24 every partial
    sum is an integer float32 holds exactly. The bound is the smaller of
    ``max|x| * max_o ||w_o||_1`` and Cauchy-Schwarz ``max_patch ||x_patch||_2 *
    max_o ||w_o||_2`` (the patch norms over all channels, one box sum). Only when torch
    picks a multiply-and-add algorithm in full float32 precision. ``x_max``: a bound on
    ``|x_q|`` known beforehand (the quantizer's range), else taken from the data."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    # "none" inherits from the level above; a user may ask any level for bf16/tf32 products
    levels = (torch.backends, torch.backends.mkldnn,
              getattr(torch.backends.mkldnn, "conv", None))
    if any(getattr(level, "fp32_precision", "none") not in ("none", "ieee")
           for level in levels):
        return None
    x = np.asarray(x_q, dtype=np.float32)
    xt = torch.from_numpy(x if x.flags.c_contiguous else np.ascontiguousarray(x))
    w = np.asarray(w_q)
    o = w.shape[0]
    kh, kw = w.shape[2], w.shape[3]
    conv = {"stride": stride, "padding": padding, "groups": groups}

    def norms(v: np.ndarray) -> tuple[float, float]:
        flat = v.reshape(o, -1).astype(np.float64)
        return float(np.abs(flat).sum(1).max(initial=0)), math.sqrt(float(
            np.square(flat).sum(1).max(initial=0)))

    if x_max is None:
        lo, hi = torch.aminmax(xt) if xt.numel() else (0.0, 0.0)
        x_max = max(-float(lo), float(hi))
    patch_norm: list[float] = []

    def fits(l1: float, l2: float) -> bool:
        if x_max * l1 < 2.0**24:
            return True
        if not patch_norm:               # computed once, only when the L1 bound fails
            sq = torch.square(xt.to(torch.float64)).sum(1, keepdim=True)
            box = F.conv2d(sq, torch.ones((1, 1, kh, kw), dtype=torch.float64),
                           stride=stride, padding=padding)
            patch_norm.append(math.sqrt(float(box.max())) if box.numel() else 0.0)
        return patch_norm[0] * l2 * (1 + 1e-9) < 2.0**24

    def run(v: np.ndarray) -> np.ndarray | None:
        wt = torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32))
        try:
            backend = torch._C._select_conv_backend(xt, wt, None, [stride] * 2,
                                                    [padding] * 2, [1, 1], False, [0, 0],
                                                    groups, None)
        except (AttributeError, RuntimeError, TypeError):
            return None                  # cannot tell which algorithm torch would take
        if backend.name not in _EXACT_CONV_BACKENDS:
            return None
        with torch.no_grad():
            return F.conv2d(xt, wt, **conv).numpy()

    if fits(*norms(w)):
        y = run(w)
        return None if y is None else y.astype(np.float64)
    w_lo, w_hi, shift = _digit_halves(w)
    (lo1, lo2), (hi1, hi2) = norms(w_lo), norms(w_hi)
    if not fits(max(lo1, hi1), max(lo2, hi2)):
        return None
    low, high = run(w_lo), run(w_hi)
    if low is None or high is None:
        return None
    y = high.astype(np.float64)
    y *= float(1 << shift)
    y += low
    return y


def activation_range(node: Node) -> tuple[int, int]:
    bits = int(node.attrs["act_bits"])
    if node.attrs["act_signed"]:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def quantize_activations(x: np.ndarray, node: Node) -> np.ndarray:
    """Round-to-nearest, saturating activation quantizer of a quantized node."""
    return _quantize_float(x, node).astype(np.int64)


def _quantize_float(x: np.ndarray, node: Node, dtype: type = np.float64) -> np.ndarray:
    # quantize_activations' integers as float values, computed in place (one buffer).
    lo, hi = activation_range(node)
    y = np.divide(x, float(node.attrs["act_scale"]), dtype=np.float64)
    np.rint(y, out=y)
    np.clip(y, lo, hi, out=y)
    return y if dtype == np.float64 else y.astype(dtype)


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
    w = node.params["weight"].astype(np.float64, copy=False)   # read only
    scale = _weight_scale(node).reshape((-1,) + (1,) * (w.ndim - 1))
    q = np.divide(w, scale)
    np.rint(q, out=q)
    bits = int(node.attrs["weight_bits"])
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    # |q * scale - w| in one temporary (every run of a quantized graph calls this per layer)
    error = np.multiply(q, scale)
    error -= w
    np.abs(error, out=error)
    if error.max(initial=0) > 1e-6 * max(1.0, float(np.abs(w).max(initial=0))):
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
           quantized: bool, prequantized: bool = False) -> np.ndarray:
    """One 2-D product of a weighted node, quantized or float. w_float: (out, K).
    ``prequantized``: x2d already holds the quantized integers (as float64 values)."""
    if quantized and node.quantized:
        x_q = x2d if prequantized else _quantize_float(x2d, node)
        w_q = integer_weights(node).reshape(w_float.shape[0], -1).T
        if matmul is None:
            y = exact_product(node, x_q, w_q)
            if y is None:
                y = exact_int_matmul(node, x_q, w_q).astype(np.float64)
        else:
            # Hooks receive int64 unless they take integer-valued floats (saves two passes).
            if not getattr(matmul, "takes_float_integers", False):
                x_q = x_q.astype(np.int64)
            y = np.asarray(matmul(node, x_q, w_q), dtype=np.float64)
        return _rescale(node, y, axis=1)
    # copy=False: float64 weights (the importers' dtype) are used in place, not copied on
    # every call (11 M weights of a ResNet-18 cost more to copy than a batch-1 product)
    y = x2d.astype(np.float64, copy=False) @ w_float.reshape(w_float.shape[0], -1).T.astype(
        np.float64, copy=False)
    if "bias" in node.params:
        y = y + node.params["bias"].astype(np.float64)[None, :]
    return y


def _rescale(node: Node, y: np.ndarray, axis: int) -> np.ndarray:
    """The integer product (float64, output channels on ``axis``) back to real values:
    ``y * act_scale * weight_scale + bias`` (a new array)."""
    shape = (-1,) + (1,) * (y.ndim - 1 - axis)
    y = y * float(node.attrs["act_scale"])
    y *= _weight_scale(node).reshape(shape)
    if "bias" in node.params:
        y += node.params["bias"].astype(np.float64).reshape(shape)
    return y


def _exact_conv_weights(node: Node, matmul: MatmulHook | None) -> np.ndarray | None:
    """The integer (O, C / groups, kh, kw) weights a quantized convolution's product is
    exactly with, or None when the hook computes something else (noise, ADC rounding).

    A hook may offer ``exact_weights(node) -> array | None``: the integer weights its
    product equals exactly, in the layout of ``node.params["weight"]``, and
    ``exact_product_done(node, vectors)`` to count the vectors the executor then
    multiplied itself by direct convolution."""
    if matmul is None:
        return integer_weights(node)
    offer = getattr(matmul, "exact_weights", None)
    return offer(node) if offer is not None else None


def pool_output_size(size: int, kernel: int, stride: int, padding: int,
                     ceil_mode: bool = False) -> int:
    """Output length of a pooling window along one axis (PyTorch's and ONNX's rule): with
    ``ceil_mode`` a last, partial window counts when it starts inside the input or the
    left padding."""
    span = size + 2 * padding - kernel
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def _pool(x: np.ndarray, kernel: int, stride: int, padding: int, kind: str,
          ceil_mode: bool = False) -> np.ndarray:
    fill = -np.inf if kind == "max" else 0.0
    extra = [0, 0]
    if ceil_mode:
        for i, size in enumerate(x.shape[2:]):
            out = pool_output_size(size, kernel, stride, padding, True)
            extra[i] = max(0, (out - 1) * stride + kernel - (size + 2 * padding))
    if padding or any(extra):
        x = np.pad(x, ((0, 0), (0, 0), (padding, padding + extra[0]),
                       (padding, padding + extra[1])), constant_values=fill)
    view = np.lib.stride_tricks.sliding_window_view(x, (kernel, kernel), axis=(2, 3))
    view = view[:, :, ::stride, ::stride]
    return view.max(axis=(4, 5)) if kind == "max" else view.mean(axis=(4, 5))


def sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function without overflow warnings for large negative inputs."""
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _erf(x: np.ndarray) -> np.ndarray:
    """The error function (numpy has none): SciPy's when installed (it comes with
    scikit-learn), else math.erf element by element."""
    try:
        from scipy.special import erf
    except ImportError:  # pragma: no cover - scipy is installed with scikit-learn
        return np.frompyfunc(math.erf, 1, 1)(x).astype(np.float64)
    return erf(x)


def run_node(node: Node, args: list[np.ndarray], matmul: MatmulHook | None = None,
             quantized: bool = True, mask: TokenMask | None = None) -> np.ndarray:
    """One node on its input values (``args`` in the order of ``node.inputs``); ``mask``
    is the token mask of the selector that the node's ``mask_from`` names."""
    out = _run_node(node, args, matmul, quantized, mask)
    return out[0] if node.op is Op.TOKEN_SELECT else out


TokenMask = tuple[np.ndarray, np.ndarray]
"""``(live, candidate)``: (N, T) bool masks after a token selector: the tokens still alive in
each image, and among them the prunable ones (not the class token, not a package token)."""


def center_on_live_tokens(h: np.ndarray, live: np.ndarray | None = None) -> np.ndarray:
    """``h`` (N, T, D) minus each image's mean over its ``live`` tokens ((N, T) bool;
    None: all): a centered token selector's input, in float."""
    w = np.ones(h.shape[:2]) if live is None else np.asarray(live, np.float64)
    w = w / np.maximum(w.sum(1, keepdims=True), 1)
    return h - np.einsum("nt,ntd->nd", w, h)[:, None]


def token_scores(node: Node, x: np.ndarray, live: np.ndarray | None = None) -> np.ndarray:
    """Float keep score in (0, 1) of every token of ``x`` (N, T, D) under a ``TOKEN_SELECT``
    node (see :data:`chipforge.sim.graph.TOKEN_SELECT_PARAMS`); ``live`` (N, T): the
    image's live tokens, over which a ``center`` selector takes the mean (None: all)."""
    p, heads = node.params, int(node.attrs["heads"])
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    h = (x - mean) / np.sqrt(var + float(node.attrs.get("eps", 1e-5)))
    h = h * p["norm_gamma"] + p["norm_beta"]
    if node.attrs.get("center", False):
        h = center_on_live_tokens(h, live)
    per_head = h.reshape(*x.shape[:-1], heads, x.shape[-1] // heads)
    hidden = per_head @ p["fc1_weight"].T.astype(np.float64) + p["fc1_bias"]
    hidden = 0.5 * hidden * (1 + _erf(hidden / np.sqrt(2)))
    logit = (hidden @ p["fc2_weight"].T.astype(np.float64) + p["fc2_bias"])[..., 0]
    a = np.exp(p["head_logits"] - p["head_logits"].max())
    a = a / a.sum()
    return (1 / (1 + np.exp(-logit)) * a).sum(-1)


def _token_select(node: Node, x: np.ndarray, mask: TokenMask | None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if x.ndim != 3:
        raise ValueError(f"token_select {node.name!r} needs (N, tokens, width) input, "
                         f"got shape {x.shape}")
    n, t, _ = x.shape
    if mask is None:
        live = np.ones((n, t), dtype=bool)
        candidate = np.ones((n, t), dtype=bool)
        candidate[:, :int(node.attrs["protected"])] = False
    else:
        live, candidate = mask
    score = token_scores(node, x, live)
    alive = live & candidate
    pruned = alive & (score < float(node.attrs["threshold"]))
    weight = np.where(pruned, score, 0.0)
    package = np.einsum("nt,ntd->nd", weight, x) / np.maximum(weight.sum(1), 1e-300)[:, None]
    has_package = pruned.any(1)
    slot = pruned.argmax(1)                  # the first pruned token's slot holds the package
    out = x.copy()
    rows = np.flatnonzero(has_package)
    out[rows, slot[rows]] = package[rows]
    live = live & ~pruned
    live[rows, slot[rows]] = True
    candidate = candidate & ~pruned
    return out, live, candidate


def _masked_softmax(node: Node, x: np.ndarray, mask: TokenMask) -> np.ndarray:
    axis = int(node.attrs.get("axis", -1)) % x.ndim
    live = mask[0]
    if axis != x.ndim - 1 or x.shape[-1] != live.shape[1]:
        raise ValueError(f"softmax {node.name!r} with mask_from must run over its last axis of "
                         f"{live.shape[1]} tokens, got axis {axis} of shape {x.shape}")
    keys = live.reshape((live.shape[0],) + (1,) * (x.ndim - 2) + (live.shape[1],))
    x = np.where(keys, x, -np.inf)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _masked_mean(node: Node, x: np.ndarray, mask: TokenMask) -> np.ndarray:
    axes = tuple(int(i) for i in node.attrs["axes"])
    live = mask[0]
    if axes != (1,) or x.shape[1] != live.shape[1]:
        raise ValueError(f"mean {node.name!r} with mask_from must average the token axis 1 "
                         f"of {live.shape[1]} tokens, got axes {axes} of shape {x.shape}")
    w = live.reshape(live.shape + (1,) * (x.ndim - 2)).astype(np.float64)
    y = (x * w).sum(1, keepdims=True) / w.sum(1, keepdims=True)
    return y if node.attrs.get("keepdims", True) else y[:, 0]


def _run_node(node: Node, args: list[np.ndarray], matmul: MatmulHook | None,
              quantized: bool, mask: TokenMask | None = None):
    a = node.attrs
    x = args[0]
    if mask is not None:
        if node.op is Op.SOFTMAX:
            return _masked_softmax(node, x, mask)
        if node.op is Op.MEAN:
            return _masked_mean(node, x, mask)
    match node.op:
        case Op.TOKEN_SELECT:
            return _token_select(node, x, mask)
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
            # Quantize before im2col: the patches repeat each input kh*kw times.
            pre = quantized and node.quantized
            if pre:   # float32 holds the integers exactly (half the bytes to copy)
                x = _quantize_float(x, node, np.float32 if int(a["act_bits"]) <= 24
                                    else np.float64)
                w_exact = _exact_conv_weights(node, matmul)
                if w_exact is not None and x.dtype == np.float32:
                    lo, hi = activation_range(node)            # the quantizer clips to it
                    y = exact_conv(x, w_exact, stride=stride, padding=padding, groups=groups,
                                   x_max=float(max(-lo, hi)))
                    if y is not None:
                        if matmul is not None:
                            matmul.exact_product_done(node, y.shape[0] * y.shape[2]
                                                      * y.shape[3])
                        return _rescale(node, y, axis=1)
            if groups > 1 and matmul is not None and pre:
                # A hook (crossbars) computes what is placed: the block-diagonal matrix of
                # all groups, one product over the whole input's patches (group-major).
                patches, oh, ow = im2col(x, kh, kw, stride, padding)
                sub = node.copy()
                sub.params["weight"] = block_diagonal_weights(node).T
                y = _dense(sub, patches, sub.params["weight"], matmul, quantized, pre)
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
                y = _dense(sub, patches, sub.params["weight"], matmul, quantized, pre)
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
                         "max" if node.op is Op.MAXPOOL2D else "avg",
                         bool(a.get("ceil_mode", False)))
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
        case Op.SIGMOID:
            return sigmoid(x)
        case Op.HARDSIGMOID:
            return np.clip(float(a.get("alpha", 0.2)) * x + float(a.get("beta", 0.5)), 0.0, 1.0)
        case Op.HARDSWISH:
            return x * np.clip(x / 6.0 + 0.5, 0.0, 1.0)
        case Op.SILU:
            return x * sigmoid(x)
        case Op.MUL:
            if args[1].ndim != x.ndim:
                raise ValueError(f"mul {node.name!r} needs inputs of one rank, got shapes "
                                 f"{x.shape} and {args[1].shape}")
            return x * args[1]
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
    With ``return_all`` the result is every node's output by name (plus ``"input"``, and
    for each token selector ``"<name>:live"`` and ``"<name>:candidate"``, its (N, T) masks).
    """
    x = np.asarray(x, dtype=np.float64)
    if tuple(x.shape[1:]) != graph.input_shape:
        raise ValueError(f"inputs have shape {x.shape[1:]} per sample; graph {graph.name!r} "
                         f"expects {graph.input_shape}")
    chunks = []
    for start in range(0, max(len(x), 1), batch_size):
        values = {"input": x[start:start + batch_size]}
        for node in graph.nodes:
            source = node.attrs.get("mask_from")
            mask = ((values[f"{source}:live"], values[f"{source}:candidate"])
                    if source is not None else None)
            out = _run_node(node, [values[i] for i in node.inputs], matmul, quantized, mask)
            if node.op is Op.TOKEN_SELECT:
                out, values[f"{node.name}:live"], values[f"{node.name}:candidate"] = out
            values[node.name] = out
        chunks.append(values if return_all else values[graph.output_name])
    if return_all:
        return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
    return np.concatenate(chunks)
