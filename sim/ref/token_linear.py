"""Bit-exact reference of the selector's fixed-point linear layer over a token stream
(HeatViT's selectors are linear layers that reuse the GEMM engine; this is one row of MACs
of it): ``y = sat((x @ W.T + b + 2**(s-1)) >> s)`` with s = out_shift (s = 0: no rounding
term), saturated to signed out_bits."""

from __future__ import annotations

import numpy as np

from chipforge.config import TokenLinearConfig

__all__ = ["token_linear"]


def token_linear(x: np.ndarray, weight: np.ndarray, bias: np.ndarray,
                 cfg: TokenLinearConfig) -> np.ndarray:
    """(T, in_features) codes, (out, in) weights, (out,) biases -> (T, out) codes."""
    x, w, b = (np.asarray(a, dtype=np.int64) for a in (x, weight, bias))
    if x.ndim != 2 or x.shape[1] != cfg.in_features:
        raise ValueError(f"x must be (T, {cfg.in_features}), not {x.shape}")
    if w.shape != (cfg.out_features, cfg.in_features) or b.shape != (cfg.out_features,):
        raise ValueError(f"weight must be ({cfg.out_features}, {cfg.in_features}) and bias "
                         f"({cfg.out_features},), not {w.shape} and {b.shape}")
    for name, a, bits in (("x", x, cfg.data_bits), ("weight", w, cfg.data_bits),
                          ("bias", b, cfg.bias_bits)):
        lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        if a.size and (a.min() < lo or a.max() > hi):
            raise ValueError(f"{name} must be {bits}-bit codes in {lo}..{hi}")
    acc = x @ w.T + b
    if cfg.out_shift:
        acc = (acc + (1 << (cfg.out_shift - 1))) >> cfg.out_shift
    lim = 1 << (cfg.out_bits - 1)
    return np.clip(acc, -lim, lim - 1)
