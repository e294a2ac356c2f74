"""Float and 8-bit fixed-point inference of ``vit-digits`` with HeatViT token selectors.

One code path runs both arithmetics, vectorized over the batch. Tokens are never
gathered: each image carries a ``policy`` mask over a fixed token layout
``[class, 16 patches, package_1, package_2, ...]``; pruned tokens are masked out of the
attention keys (exactly the same as removing them, also in integer arithmetic: a masked
key gets probability 0 and is left out of the row maximum and the sum), and every
per-token cost is counted over the live tokens of each image.

Fixed point (``fixed=True``), following HeatViT §5.1 of papers.md:

- weights and activations are 8-bit with power-of-two scales (Q formats), so every
  requantization is a rounding shift; the fraction bits of each activation are calibrated
  once on 256 training images (:func:`calibrate`);
- every GEMM is int8 x int8 with an integer accumulator and an integer bias;
- GELU is the polynomial unit (:mod:`chipforge.sim.ref.poly_gelu`), softmax the integer
  softmax on the polynomial exp (:mod:`chipforge.sim.ref.poly_exp`), the selector's
  sigmoid the PLAN unit (:mod:`chipforge.sim.ref.plan_sigmoid`), the keep decision and
  package token the packager (:mod:`chipforge.sim.ref.token_packager`);
- the residual stream is 16-bit with 8 fraction bits;
- LayerNorm stays in floating point (HeatViT runs it on the ZCU102's ARM core); its output
  is quantized to 8 bits for the next GEMM.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from chipforge.config import PlanSigmoidConfig, PolyExpConfig, PolyGeluConfig, TokenSelectorConfig
from chipforge.sim.ref.plan_sigmoid import plan_sigmoid, sigmoid_float
from chipforge.sim.ref.poly_exp import int_softmax
from chipforge.sim.ref.poly_gelu import poly_gelu
from chipforge.sim.ref.token_packager import package_token
from chipforge.zoo.vit import VitModel

__all__ = ["VitResult", "calibrate", "calibrate_engine_thresholds", "run_vit"]

RESIDUAL_FRAC = 8
RESIDUAL_BITS = 16
SCORE_FRAC = 7          # selector scores are Q0.7 (PLAN output); threshold 0.5 = 64
SIGMOID_IN = PlanSigmoidConfig(in_bits=8, frac_bits=4, out_frac_bits=SCORE_FRAC)
EXP_IN = PolyExpConfig()
ATTN_FRAC = 8           # attention probabilities are unsigned Q0.8
_SELECTOR = TokenSelectorConfig()   # only its exp-unit and score formats are used here


@dataclass
class VitResult:
    logits: np.ndarray
    """(N, classes) float logits (dequantized in fixed point)."""
    kept: np.ndarray
    """(N, selectors) patch tokens kept by each selector (cumulative, i.e. alive after it)."""
    tokens_per_block: np.ndarray
    """(N, depth) live tokens entering each block (class + patches + packages)."""
    macs: np.ndarray
    """(N,) multiply-accumulates of each image (GEMMs, attention, selectors)."""
    candidates: np.ndarray
    """(N, selectors) patch tokens each selector scored (those alive before it)."""

    def accuracy(self, labels: np.ndarray) -> float:
        return float((self.logits.argmax(1) == np.asarray(labels)).mean())


def _frac_for(max_abs: float, bits: int = 8) -> int:
    """Fraction bits so that max_abs fits a signed ``bits``-bit code."""
    if max_abs <= 0:
        return bits - 1
    return min(bits - 1, max(0, int(bits - 1 - math.ceil(math.log2(max_abs * 1.0001)))))


class _Arith:
    """Float or fixed-point primitive operations; fixed point uses calibrated formats."""

    def __init__(self, fixed: bool, fracs: dict[str, int] | None, record: dict | None):
        self.fixed, self.fracs, self.record = fixed, fracs or {}, record

    def observe(self, name: str, x: np.ndarray) -> None:
        if self.record is not None:
            self.record[name] = max(self.record.get(name, 0.0), float(np.abs(x).max()))

    def quant(self, name: str, x: np.ndarray, bits: int = 8) -> tuple[np.ndarray, int]:
        """Float -> (codes, frac) at the calibrated format of ``name``."""
        frac = self.fracs[name]
        lim = 1 << (bits - 1)
        return np.clip(np.round(x * 2.0 ** frac), -lim, lim - 1).astype(np.int64), frac

    @staticmethod
    def requant(acc: np.ndarray, acc_frac: int, frac: int, bits: int = 8) -> np.ndarray:
        """Rounding shift from acc_frac to frac fraction bits, saturating to ``bits``."""
        shift = acc_frac - frac
        if shift > 0:
            acc = (acc + (1 << (shift - 1))) >> shift
        elif shift < 0:
            acc = acc << -shift
        lim = 1 << (bits - 1)
        return np.clip(acc, -lim, lim - 1)

    def linear(self, name: str, x, w: np.ndarray, b: np.ndarray, x_frac: int | None = None,
               out: str | None = None, out_bits: int = 8):
        """x @ w.T + b. Float: plain. Fixed: x is (codes, frac); int8 weights with a
        power-of-two scale, integer bias; result requantized to ``out``'s format (or the
        accumulator returned with its frac when ``out`` is None)."""
        if not self.fixed:
            y = x @ w.T + b
            if out is not None:
                self.observe(out, y)
            return y
        w_frac = _frac_for(float(np.abs(w).max()))
        w_q = np.clip(np.round(w * 2.0 ** w_frac), -128, 127).astype(np.int64)
        acc_frac = x_frac + w_frac
        b_q = np.round(b * 2.0 ** acc_frac).astype(np.int64)
        acc = x @ w_q.T + b_q
        if out is None:
            return acc, acc_frac
        return self.requant(acc, acc_frac, self.fracs[out], out_bits), self.fracs[out]


def _layernorm(x: np.ndarray, g: np.ndarray, b: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b


def _patches(images: np.ndarray, patch: int) -> np.ndarray:
    """(N, C, S, S) -> (N, patches, C * patch**2) in (channel, row, column) order."""
    n, ch, size = images.shape[0], images.shape[1], images.shape[-1]
    g = size // patch
    return images.reshape(n, ch, g, patch, g, patch).transpose(0, 2, 4, 1, 3, 5).reshape(
        n, g * g, ch * patch * patch)


def run_vit(model: VitModel, images: np.ndarray, *, fixed: bool = True,
            use_selectors: bool = True, fracs: dict[str, int] | None = None,
            record: dict | None = None, scores_out: list | None = None,
            selector_io: list | None = None) -> VitResult:
    """Run ``model`` on ``(N, C, S, S)`` images in [0, 1] (``(N, S, S)`` when C = 1).

    ``scores_out`` collects each selector's (scores, live candidates) (N, T) arrays;
    ``selector_io`` (fixed point) each selector's inputs and outputs as a dict: ``h``
    (N, T, D) LayerNorm codes, ``x`` (N, T, D) residual codes, ``live`` and ``candidate``
    (N, T) masks, ``score``, ``keep`` (N, T) and ``package`` (N, D) codes (the token
    selector's RTL test cases, :mod:`chipforge.sim.ref.token_selector`).
    ``fixed`` picks 8-bit fixed point (needs ``fracs`` from :func:`calibrate`, computed on
    the fly when omitted) or float. ``use_selectors=False`` runs the backbone alone.
    """
    c, p = model.config, model.params
    images = np.asarray(images, dtype=np.float64)
    if images.ndim == 3:
        images = images[:, None]
    if images.shape[1:] != (c.channels, c.image_size, c.image_size):
        raise ValueError(f"images must be (N, {c.channels}, {c.image_size}, {c.image_size}), "
                         f"not {images.shape}")
    if fixed and fracs is None:
        fracs = calibrate(model)
    ar = _Arith(fixed, fracs, record)
    n, d, heads, hd = images.shape[0], c.dim, c.heads, c.head_dim
    res_scale = 2.0 ** RESIDUAL_FRAC

    # Patch embedding; the residual stream x is float, or int16 Q7.8 codes in fixed point.
    patches = _patches(images, c.patch_size)
    if fixed:
        # Pixels in [0, 1] are Q0.7 (1.0 saturates to 127/128); other inputs get the
        # format calibrated for them.
        in_frac = fracs.get("input", 7)
        pix = np.clip(np.round(patches * 2.0 ** in_frac), -128, 127).astype(np.int64)
        emb = ar.linear("embed", pix, p["patch_embed.weight"], p["patch_embed.bias"], in_frac,
                        out="residual", out_bits=RESIDUAL_BITS)[0]
        pos = np.round(p["pos_embed"][0] * res_scale).astype(np.int64)
        cls = np.round(p["cls_token"][0, 0] * res_scale).astype(np.int64)
        x = np.concatenate([np.broadcast_to(cls, (n, 1, d)), emb], 1) + pos
    else:
        ar.observe("input", patches)
        emb = patches @ p["patch_embed.weight"].T + p["patch_embed.bias"]
        x = np.concatenate([np.broadcast_to(p["cls_token"][0], (n, 1, d)), emb], 1)
        x = x + p["pos_embed"]
    # The attention scale 1/sqrt(head_dim) = 2**-scale_shift * q_fold: a shift in the
    # engine, with q_fold (1 when head_dim is a power of 4, e.g. 16) folded into the q rows.
    scale_shift = int(round(math.log2(math.sqrt(hd))))
    q_fold = 2.0 ** scale_shift / math.sqrt(hd)
    qkv_weight, qkv_bias = [], []
    for b in range(c.depth):
        w, bias = p[f"blocks.{b}.qkv.weight"], p[f"blocks.{b}.qkv.bias"]
        if q_fold != 1:
            w, bias = w.copy(), bias.copy()
            w[:d] *= q_fold
            bias[:d] *= q_fold
        qkv_weight.append(w)
        qkv_bias.append(bias)
    t0 = x.shape[1]
    policy = np.ones((n, t0), dtype=bool)
    candidate = np.ones((n, t0), dtype=bool)
    candidate[:, 0] = False
    macs = np.full(n, float(c.num_patches * c.patch_dim * d))
    kept_after, tokens_per_block, candidates_at = [], [], []

    def ln(name: str, x: np.ndarray) -> tuple[np.ndarray, int | None]:
        xf = x / res_scale if fixed else x
        y = _layernorm(xf, p[name + ".weight"], p[name + ".bias"], c.norm_eps)
        ar.observe(name, y)
        return ar.quant(name, y) if fixed else (y, None)

    for b in range(c.depth):
        pre = f"blocks.{b}."
        h, h_frac = ln(pre + "norm1", x)
        if use_selectors and b in c.selector_blocks:
            s = c.selector_blocks.index(b)
            score = _selector_score(ar, model, s, h, h_frac, policy)
            alive = policy & candidate
            candidates_at.append(alive.sum(1))
            macs += alive.sum(1) * heads * (hd * c.selector_hidden + c.selector_hidden)
            if scores_out is not None:
                scores_out.append((score, alive))
            keep = score >= (c.engine_code(s, SCORE_FRAC) if fixed else c.threshold(s))
            pruned = alive & ~keep
            weight = np.where(pruned, score, 0)
            num = np.einsum("nt,ntd->nd", weight, x)
            den = weight.sum(1)
            package = (package_token(num, den[:, None]) if fixed
                       else num / np.maximum(den, 1e-12)[:, None])
            if selector_io is not None:
                selector_io.append({"h": h, "x": x, "live": policy.copy(),
                                    "candidate": alive, "score": score,
                                    "keep": policy & ~pruned, "package": package})
            policy = np.concatenate([policy & ~pruned, pruned.any(1, keepdims=True)], 1)
            candidate = np.concatenate([candidate, np.zeros((n, 1), dtype=bool)], 1)
            x = np.concatenate([x, package[:, None]], 1)
            kept_after.append((policy & candidate).sum(1))
            h, h_frac = ln(pre + "norm1", x)
        live = policy.sum(1)
        tokens_per_block.append(live)
        macs += live * (4 * d * d + 2 * d * c.mlp_hidden) + 2 * live * live * d

        # Attention.
        t = x.shape[1]
        qkv = ar.linear(pre + "qkv", h, qkv_weight[b], qkv_bias[b], h_frac, out=pre + "qkv")
        qkv, qkv_frac = (qkv, None) if not fixed else qkv
        q, k, v = qkv.reshape(n, t, 3, heads, hd).transpose(2, 0, 3, 1, 4)
        key_mask = policy[:, None, None, :]
        if fixed:
            # 1/sqrt(head_dim) is a shift (the rest is folded into the q weights).
            logit_frac = 2 * qkv_frac + scale_shift
            logits = _Arith.requant(q @ k.transpose(0, 1, 3, 2), logit_frac, EXP_IN.frac_bits,
                                    EXP_IN.in_bits)
            attn = int_softmax(logits, EXP_IN, ATTN_FRAC, np.broadcast_to(key_mask,
                                                                          logits.shape))
            ctx = _Arith.requant(attn @ v, ATTN_FRAC + qkv_frac, fracs[pre + "ctx"])
            ctx_frac = fracs[pre + "ctx"]
        else:
            logits = q @ k.transpose(0, 1, 3, 2) / 2.0 ** scale_shift
            logits = np.where(key_mask, logits, -np.inf)
            e = np.exp(logits - logits.max(-1, keepdims=True))
            attn = e / e.sum(-1, keepdims=True)
            ctx = attn @ v
            ar.observe(pre + "ctx", ctx)
            ctx_frac = None
        ctx = ctx.transpose(0, 2, 1, 3).reshape(n, t, d)
        out = ar.linear(pre + "proj", ctx, p[pre + "proj.weight"], p[pre + "proj.bias"],
                        ctx_frac, out="residual" if fixed else None, out_bits=RESIDUAL_BITS)
        x = _Arith.requant(x + out[0], 0, 0, RESIDUAL_BITS) if fixed else x + out

        # MLP.
        h, h_frac = ln(pre + "norm2", x)
        hid = ar.linear(pre + "fc1", h, p[pre + "fc1.weight"], p[pre + "fc1.bias"], h_frac,
                        out=pre + "fc1")
        if fixed:
            g = poly_gelu(hid[0], PolyGeluConfig(frac_bits=hid[1])), hid[1]
        else:
            g = _gelu_exact(hid)
        out = ar.linear(pre + "fc2", g[0] if fixed else g, p[pre + "fc2.weight"],
                        p[pre + "fc2.bias"], g[1] if fixed else None,
                        out="residual" if fixed else None, out_bits=RESIDUAL_BITS)
        x = _Arith.requant(x + out[0], 0, 0, RESIDUAL_BITS) if fixed else x + out
        if not fixed:
            ar.observe("residual", x)

    h, h_frac = ln("norm", x[:, 0])
    logits = ar.linear("head", h, p["head.weight"], p["head.bias"], h_frac)
    if fixed:
        logits = logits[0] * 2.0 ** -logits[1]
    macs += d * c.num_classes
    n_sel = len(kept_after)
    return VitResult(np.asarray(logits, dtype=np.float64),
                     np.stack(kept_after, 1) if n_sel else np.zeros((n, 0), dtype=np.int64),
                     np.stack(tokens_per_block, 1), macs,
                     np.stack(candidates_at, 1) if n_sel else np.zeros((n, 0), dtype=np.int64))


def _gelu_exact(x: np.ndarray) -> np.ndarray:
    from scipy.special import erf

    return x / 2 * (1 + erf(x / math.sqrt(2)))


def _selector_score(ar: _Arith, model: VitModel, s: int, h: np.ndarray,
                    h_frac: int | None, live: np.ndarray) -> np.ndarray:
    """Fused keep score of every token: Q0.7 codes (fixed) or floats in (0, 1). A
    centered selector reads ``h`` minus the image's mean ``live`` token (in fixed point
    the selector unit's integer mean, :func:`~chipforge.sim.ref.token_selector.live_mean`)."""
    c, p = model.config, model.params
    pre = f"selectors.{s}."
    n, t, _ = h.shape
    if c.selector_center and ar.fixed:
        from chipforge.sim.ref.token_selector import live_mean

        h = h - live_mean(h, live)[:, None]
    elif c.selector_center:
        from chipforge.sim.executor import center_on_live_tokens

        h = center_on_live_tokens(h, live)
    per_head = h.reshape(n, t, c.heads, c.head_dim)
    if not ar.fixed:
        a = np.exp(p[pre + "head_logits"] - p[pre + "head_logits"].max())
        a = a / a.sum()
        hid = _gelu_exact(ar.linear(pre + "fc1", per_head, p[pre + "fc1.weight"],
                                    p[pre + "fc1.bias"], out=pre + "fc1"))
        logit = (hid @ p[pre + "fc2.weight"].T + p[pre + "fc2.bias"])[..., 0]
        return (sigmoid_float(logit) * a).sum(-1)
    hid, hid_frac = ar.linear(pre + "fc1", per_head, p[pre + "fc1.weight"],
                              p[pre + "fc1.bias"], h_frac, out=pre + "fc1")
    g = poly_gelu(hid, PolyGeluConfig(frac_bits=hid_frac))
    acc, acc_frac = ar.linear(pre + "fc2", g, p[pre + "fc2.weight"], p[pre + "fc2.bias"],
                              hid_frac)
    logit = _Arith.requant(acc[..., 0], acc_frac, SIGMOID_IN.frac_bits, SIGMOID_IN.in_bits)
    sig = plan_sigmoid(logit, SIGMOID_IN)                          # Q0.7 per head
    # Head weights softmax(head_logits) in the integer softmax, Q0.7 (as the RTL does it).
    from chipforge.sim.ref.token_selector import head_weights, quantize_head_logits

    a_q = head_weights(quantize_head_logits(p[pre + "head_logits"], _SELECTOR), _SELECTOR)
    return (sig * a_q).sum(-1) >> SCORE_FRAC


def calibrate(model: VitModel, n_images: int = 256,
              images: np.ndarray | None = None) -> dict[str, int]:
    """Fraction bits of every 8-bit activation from a float run on ``images`` (default:
    the first ``n_images`` digits training images)."""
    if images is None:
        from chipforge.zoo.data import digits

        images = digits(model.config.image_size).x_train
    images = np.asarray(images)[:n_images]
    record: dict[str, float] = {}
    run_vit(model, images, fixed=False, record=record)
    fracs = {k: _frac_for(v) for k, v in record.items()}
    fracs["residual"] = RESIDUAL_FRAC
    fracs["input"] = 7 if record["input"] <= 1 else _frac_for(record["input"])
    return fracs


def calibrate_engine_thresholds(model: VitModel, images: np.ndarray,
                                fracs: dict[str, int] | None = None) -> VitModel:
    """Set each selector's engine threshold code (``engine_threshold_codes``) so that the
    8-bit engine keeps its target fraction (``keep_ratios``) of the live candidate tokens
    of ``images``, stage by stage, on the engine's own score codes (PLAN sigmoid, Q0.7):
    the float thresholds, rounded, would move many near-threshold tokens."""
    import dataclasses

    c = model.config
    images = np.asarray(images)
    fracs = fracs or calibrate(model, images=images)
    codes: list[int] = []
    for s, ratio in enumerate(c.keep_ratios):
        trial = dataclasses.replace(c, engine_threshold_codes=tuple(
            codes + [0] * (len(c.keep_ratios) - s)))
        out: list = []
        run_vit(dataclasses.replace(model, config=trial), images, fixed=True, fracs=fracs,
                scores_out=out)
        score, alive = out[s]
        live = score[alive]
        options = np.unique(live)
        kept = np.array([(live >= t).mean() for t in options])
        codes.append(int(options[np.argmin(np.abs(kept - ratio))]))
    return dataclasses.replace(model, config=dataclasses.replace(
        c, engine_threshold_codes=tuple(codes)))
