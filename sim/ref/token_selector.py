"""Bit-exact reference of the HeatViT token selector top level (``chipforge.hw.token_selector``),
the 8-bit engine's fixed-point selector (:func:`chipforge.sim.vit.run_vit` computes the same
thing, vectorized over images; ``tests/test_token_selector.py`` checks they agree on real
images), and its cycle model.

One image's live tokens arrive in order, each as its LayerNorm output ``h`` (``dim`` signed
``token_bits`` codes, the MLP input) and its residual-stream value ``x`` (``dim`` signed
``data_bits`` codes, what is kept or packaged), with ``force`` set on the class token and
earlier package tokens (always kept, not scored). Per token, from the block references:

0. centering (``cfg.center``, the selector's global feature): ``h_t <- h_t - m`` with
   ``m = live_mean(h)``, the image's mean live token in integer arithmetic
   (``m_c = (sum_t h_tc * round(2**16 / T) + 2**15) >> 16``), so fc1 reads
   ``token_bits + 1``-bit codes;
1. score MLP on the token-linear engine's arithmetic, per head i (channels ``i*hd ..``):
   ``hid = token_linear(h_i, W1, b1)`` (rounding shift ``fc1_shift``, 8-bit saturation),
   ``g = poly_gelu(hid)``, ``logit = token_linear(g, w2, b2)`` (shift ``fc2_shift``, Q3.4),
   ``sig_i = plan_sigmoid(logit)`` (Q0.7; the 2-class keep/prune softmax is a sigmoid);
2. head fusion: ``score = (sum_i a_i * sig_i) >> 7`` with the head weights
   ``a = softmax(head_logits)`` in the integer softmax (:func:`head_weights`: row maximum,
   poly-exp, sum, reciprocal ``2**31 // sum``, Q0.7 codes);
3. keep decision ``force or score >= threshold`` and the packager: kept tokens in order,
   the pruned ones summed ``num = sum s_t x_t``, ``den = sum s_t`` and divided
   (:func:`~chipforge.sim.ref.token_packager.package_token`, rounded half away from zero)
   into the package token, which follows the kept tokens (HeatViT Eq. 10).

:func:`selector_timeline` is the cycle model of the top level (see its docstring).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from chipforge.config import TokenSelectorConfig
from chipforge.sim.ref.plan_sigmoid import plan_sigmoid
from chipforge.sim.ref.poly_exp import int_softmax
from chipforge.sim.ref.poly_gelu import poly_gelu
from chipforge.sim.ref.token_linear import token_linear
from chipforge.sim.ref.token_packager import package_token, token_packager

__all__ = ["MEAN_RECIP_BITS", "SelectorOutput", "SelectorTimeline", "SelectorWeights",
           "head_weights", "live_mean", "mean_reciprocal", "output_beats",
           "quantize_head_logits", "select_tokens", "selector_program", "selector_timeline",
           "token_scores"]


@dataclass(frozen=True)
class SelectorWeights:
    """The integer weights a selector loads (register map of the top level)."""

    fc1_weight: np.ndarray
    """(hidden, head_dim) signed 8-bit codes."""
    fc1_bias: np.ndarray
    """(hidden,) in fc1 accumulator units."""
    fc2_weight: np.ndarray
    """(1, hidden) signed 8-bit codes."""
    fc2_bias: np.ndarray
    """(1,) in fc2 accumulator units."""
    head_logits: np.ndarray
    """(heads,) signed codes in the exp unit's input format (Q4.5)."""


def quantize_head_logits(logits: np.ndarray, cfg: TokenSelectorConfig) -> np.ndarray:
    """Float head logits -> signed codes of the exp unit's input format (saturating)."""
    lim = 1 << (cfg.exp.in_bits - 1)
    return np.clip(np.round(np.asarray(logits, np.float64) * 2.0 ** cfg.exp.frac_bits),
                   -lim, lim - 1).astype(np.int64)


def head_weights(logit_codes: np.ndarray, cfg: TokenSelectorConfig) -> np.ndarray:
    """The head weights ``softmax(head_logits)`` as Q0.7 codes, in the integer softmax:
    row maximum subtracted, poly-exp, sum, one reciprocal ``2**31 // sum``, then
    ``min((e * factor) >> 24, 127)``. Their sum is at most 128, so scores stay <= 128."""
    return int_softmax(np.asarray(logit_codes, np.int64), cfg.exp, cfg.score_frac_bits)


MEAN_RECIP_BITS = 16
"""Fraction bits of the token count's reciprocal in :func:`live_mean`."""


def mean_reciprocal(count):
    """``round(2**16 / count)`` (half up), the constant the mean multiplies by."""
    count = np.asarray(count, dtype=np.int64)
    return ((1 << MEAN_RECIP_BITS) + count // 2) // count


def live_mean(h: np.ndarray, live: np.ndarray | None = None) -> np.ndarray:
    """The mean live token of ``(..., T, dim)`` codes, as integer codes of the same format:
    ``(sum_t h_t * mean_reciprocal(T) + 2**15) >> 16`` per channel (an arithmetic shift),
    over the tokens ``live`` (``(..., T)`` bool; None: all). Within one code of the exact
    mean, and inside the codes' own range. Shape ``(..., dim)``."""
    h = np.asarray(h, dtype=np.int64)
    live = np.ones(h.shape[:-1], dtype=bool) if live is None else np.asarray(live, bool)
    total = (h * live[..., None]).sum(-2)
    count = np.maximum(live.sum(-1), 1)[..., None]
    return (total * mean_reciprocal(count) + (1 << (MEAN_RECIP_BITS - 1))) >> MEAN_RECIP_BITS


def token_scores(h: np.ndarray, weights: SelectorWeights, cfg: TokenSelectorConfig
                 ) -> np.ndarray:
    """Q0.7 keep scores of ``(T, dim)`` LayerNorm codes, all of them the image's live
    tokens (see the module docstring)."""
    h = np.asarray(h, dtype=np.int64)
    if h.ndim != 2 or h.shape[1] != cfg.dim:
        raise ValueError(f"h must be (T, {cfg.dim}), not {h.shape}")
    if cfg.center:
        h = h - live_mean(h)
    per_head = h.reshape(-1, cfg.head_dim)                      # (T * heads, head_dim)
    hid = token_linear(per_head, weights.fc1_weight, weights.fc1_bias, cfg.fc1)
    g = poly_gelu(hid, cfg.gelu)
    logit = token_linear(g, weights.fc2_weight, weights.fc2_bias, cfg.fc2)[:, 0]
    sig = plan_sigmoid(logit, cfg.sigmoid).reshape(-1, cfg.heads)
    a = head_weights(weights.head_logits, cfg)
    return (sig * a).sum(1) >> cfg.score_frac_bits


@dataclass
class SelectorOutput:
    scores: np.ndarray
    """(T,) Q0.7 score codes (also of forced tokens, which are not used)."""
    mask: np.ndarray
    """(T,) bool: kept."""
    kept: np.ndarray
    """(K, dim) the kept tokens' residual codes, in order."""
    package: np.ndarray | None
    """(dim,) the package token (None when nothing was pruned)."""

    @property
    def mask_bits(self) -> int:
        """The keep mask as an integer, bit t = token t kept."""
        return sum(1 << t for t in np.flatnonzero(self.mask))


def select_tokens(h: np.ndarray, x: np.ndarray, force: np.ndarray, weights: SelectorWeights,
                  cfg: TokenSelectorConfig) -> SelectorOutput:
    """One image through the selector: scores, keep mask, kept tokens, package token."""
    x = np.asarray(x, dtype=np.int64)
    force = np.asarray(force, dtype=bool)
    if x.shape != np.shape(h) or force.shape != (len(x),):
        raise ValueError(f"h {np.shape(h)}, x {x.shape} and force {force.shape} must be "
                         "(T, dim), (T, dim) and (T,)")
    if not 1 <= len(x) <= cfg.max_tokens:
        raise ValueError(f"an image has 1..max_tokens={cfg.max_tokens} tokens, not {len(x)}")
    lo, hi = -(1 << (cfg.data_bits - 1)), (1 << (cfg.data_bits - 1)) - 1
    if x.min() < lo or x.max() > hi:
        raise ValueError(f"x must be {cfg.data_bits}-bit codes in {lo}..{hi}")
    scores = token_scores(h, weights, cfg)
    packed = token_packager(x, scores, force, cfg.packager)
    mask = np.zeros(len(x), dtype=bool)
    mask[packed.kept_index] = True
    package = (None if packed.numerator is None
               else package_token(packed.numerator, np.array(packed.denominator)))
    return SelectorOutput(scores, mask, packed.kept, package)


def output_beats(out: SelectorOutput) -> list[dict]:
    """The top level's output beats: ``{data, package, mask, last}`` per kept token, then
    the package token; ``mask`` is the keep mask on the last beat, 0 on the others."""
    beats = [{"data": row.tolist(), "package": 0, "mask": 0, "last": 0} for row in out.kept]
    if out.package is not None:
        beats.append({"data": out.package.tolist(), "package": 1, "mask": 0, "last": 0})
    beats[-1].update(mask=out.mask_bits, last=1)
    return beats


def selector_program(net, fracs: dict[str, int], selector: int
                     ) -> tuple[TokenSelectorConfig, SelectorWeights]:
    """The config and integer weights of selector number ``selector`` of a lowered ViT
    ``net`` (:class:`~chipforge.zoo.vit.VitModel`) with calibrated activation formats
    ``fracs`` (:func:`chipforge.sim.vit.calibrate`), quantized exactly as the 8-bit engine
    quantizes them."""
    from chipforge.sim.vit import SCORE_FRAC, SIGMOID_IN, _frac_for

    c, p = net.config, net.params
    if not 0 <= selector < len(c.selector_blocks):
        raise ValueError(f"selector must be in 0..{len(c.selector_blocks) - 1}, not {selector}")
    block = c.selector_blocks[selector]
    pre = f"selectors.{selector}."
    h_frac, hid_frac = fracs[f"blocks.{block}.norm1"], fracs[pre + "fc1"]

    def quantize(name: str, x_frac: int):
        w = p[pre + name + ".weight"]
        w_frac = _frac_for(float(np.abs(w).max()))
        w_q = np.clip(np.round(w * 2.0 ** w_frac), -128, 127).astype(np.int64)
        b_q = np.round(p[pre + name + ".bias"] * 2.0 ** (x_frac + w_frac)).astype(np.int64)
        return w_q, b_q, x_frac + w_frac

    w1, b1, acc1 = quantize("fc1", h_frac)
    w2, b2, acc2 = quantize("fc2", hid_frac)
    if acc1 < hid_frac or acc2 < SIGMOID_IN.frac_bits:
        raise ValueError(f"selector {selector}: an accumulator has fewer fraction bits than "
                         "its output format (the MAC row only shifts right)")
    cfg = TokenSelectorConfig(dim=c.dim, heads=c.heads, hidden=c.selector_hidden,
                              center=c.selector_center,
                              fc1_shift=acc1 - hid_frac, gelu_frac_bits=hid_frac,
                              fc2_shift=acc2 - SIGMOID_IN.frac_bits,
                              threshold=c.engine_code(selector, SCORE_FRAC),
                              max_tokens=32)
    head = quantize_head_logits(p[pre + "head_logits"], cfg)
    return cfg, SelectorWeights(w1, b1, w2, b2, head)


@dataclass
class SelectorTimeline:
    """Cycle of every handshake the cycle model predicts."""

    accepted: list[list[int]]
    """Per image, the cycle in which each input token is taken."""
    busy: list[tuple[int, int]]
    """Per image, the inclusive cycle range in which ``busy`` is high (``s_axis_tready`` is
    low exactly there, outside loads)."""
    output_start: list[int]
    """Per image, the first cycle in which ``m_axis_tvalid`` is high."""
    outputs: list[list[int]]
    """Per image, the cycle in which each output beat is taken."""

    @property
    def cycles(self) -> int:
        """Cycles through the last output beat (inclusive)."""
        return self.outputs[-1][-1] + 1 if self.outputs else 0


def selector_timeline(images: Sequence[SelectorOutput], cfg: TokenSelectorConfig, *,
                      start: int = 0, valid: Callable[[int], bool] = lambda c: True,
                      ready: Callable[[int], bool] = lambda c: True,
                      horizon: int = 10**8) -> SelectorTimeline:
    """The top level's cycle model: every handshake of a run of images, the selector idle
    (weights loaded) from cycle ``start`` on; ``valid(c)``/``ready(c)``: whether the
    producer offers a token / the consumer takes a beat in cycle c.

    Per image (see ``TokenSelector``'s docstring): tokens are taken in idle cycles where
    ``valid``; after the last one (cycle a), when ``cfg.center``, ``M = dim`` cycles for
    the mean token (one channel per cycle; M = 0 uncentered), 1 priming cycle, and fc1
    takes head n of the image at ``a + M + 2 + hidden * n``; token t's score enters the
    packager at ``a + M + 2 + hidden * heads * (t + 1) + 9`` (fc1 latency 2 + hidden
    outputs, GELU 3, collector 1, fc2 2, sigmoid 1, fusion 1), its output beat 1 cycle
    later; a package
    follows the last token's beat by 1 cycle when that token was pruned, 2 when it was
    kept (the packager's pending beat). If there is a package: ``data_bits * dim`` division
    cycles and 1 write cycle. Then 1 priming cycle and the output beats as the consumer
    takes them; the next cycle is idle.
    """
    def first(c: int, ok: Callable[[int], bool]) -> int:
        while not ok(c):
            c += 1
            if c > horizon:
                raise TimeoutError(f"no handshake within {horizon} cycles")
        return c

    tl = SelectorTimeline([], [], [], [])
    idle_from = start
    per_token = cfg.hidden * cfg.heads
    mean_cycles = cfg.dim if cfg.center else 0
    for out in images:
        count = min(len(out.mask), cfg.max_tokens)
        c, accepted = idle_from - 1, []
        for _ in range(count):
            c = first(c + 1, valid)
            accepted.append(c)
        a = accepted[-1]
        last_in = a + mean_cycles + 2 + per_token * count + 9  # the last token's score
        final = last_in + 1
        if out.package is not None:
            final += 1 if out.mask[count - 1] else 0    # the package beat
            final += cfg.data_bits * cfg.dim + 1        # division, write
        prime = final + 1
        beats, c = [], prime
        for _ in range(int(out.mask.sum()) + (out.package is not None)):
            c = first(c + 1, ready)
            beats.append(c)
        tl.accepted.append(accepted)
        tl.output_start.append(prime + 1)
        tl.outputs.append(beats)
        tl.busy.append((a + 1, beats[-1]))
        idle_from = beats[-1] + 1
    return tl
