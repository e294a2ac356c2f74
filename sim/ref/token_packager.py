"""Bit-exact reference of HeatViT's keep decision and token packaging (Eq. 10).

One image's tokens arrive in order, each with a keep score (unsigned Q.score_frac_bits)
and a ``force`` flag (the class token and earlier package tokens are always kept). A token
is kept iff ``force or score >= threshold``. Kept tokens leave in their order; each pruned
token ``t`` is accumulated into the package: ``num += s_t * x_t`` (per channel) and
``den += s_t``. After the last token, if anything was pruned, one package beat leaves
carrying (num, den). The division of Eq. 10, ``package = num / den``, is done by
:func:`package_token` (downstream of the packager: one reciprocal per image, as in the
integer softmax), so the packager itself needs no divider.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from chipforge.config import TokenPackagerConfig

__all__ = ["PackagerOutput", "package_token", "packager_beats", "token_packager"]


@dataclass
class PackagerOutput:
    kept: np.ndarray
    """(K, channels) kept tokens, in input order."""
    kept_index: np.ndarray
    """(K,) their positions in the input."""
    numerator: np.ndarray | None
    """(channels,) sum of score * token over the pruned tokens; None if none was pruned."""
    denominator: int
    """Sum of the pruned tokens' scores (0 if none)."""


def token_packager(tokens: np.ndarray, scores: np.ndarray, force: np.ndarray,
                   cfg: TokenPackagerConfig) -> PackagerOutput:
    """Keep decision and packaging of one image's ``(T, channels)`` integer tokens."""
    tokens = np.asarray(tokens, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.int64)
    force = np.asarray(force, dtype=bool)
    if tokens.ndim != 2 or tokens.shape[1] != cfg.channels:
        raise ValueError(f"tokens must be (T, {cfg.channels}), not {tokens.shape}")
    if tokens.shape[0] > cfg.max_tokens:
        raise ValueError(f"at most max_tokens={cfg.max_tokens} tokens, not {tokens.shape[0]}")
    keep = force | (scores >= cfg.threshold)
    pruned = ~keep
    if not pruned.any():
        return PackagerOutput(tokens[keep], np.flatnonzero(keep), None, 0)
    numerator = (scores[pruned, None] * tokens[pruned]).sum(0)
    return PackagerOutput(tokens[keep], np.flatnonzero(keep), numerator,
                          int(scores[pruned].sum()))


def package_token(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Eq. 10's division, rounded half away from zero; a zero denominator gives 0
    (every pruned score was 0: the package is then the plain sum, which is 0)."""
    numerator = np.asarray(numerator, dtype=np.int64)
    den = np.maximum(np.asarray(denominator, dtype=np.int64), 1)
    q = (np.abs(numerator) + den // 2) // den
    return np.sign(numerator) * q


def packager_beats(tokens: np.ndarray, scores: np.ndarray, force: np.ndarray,
                   cfg: TokenPackagerConfig) -> list[dict]:
    """The packager's output beats for one image, as the RTL emits them: each kept token
    ``{data, weight: score, package: 0, last}``, then the package ``{data: numerator,
    weight: denominator, package: 1, last: 1}`` if anything was pruned."""
    result = token_packager(tokens, scores, force, cfg)
    scores = np.asarray(scores, dtype=np.int64)
    beats = [{"data": result.kept[k].tolist(), "weight": int(scores[i]), "package": 0,
              "last": 0} for k, i in enumerate(result.kept_index)]
    if result.numerator is not None:
        beats.append({"data": result.numerator.tolist(), "weight": result.denominator,
                      "package": 1, "last": 0})
    beats[-1]["last"] = 1
    return beats
