"""Bit-exact reference of the exponential unit of the integer softmax (HeatViT Eqs. 13-14,
from I-BERT's i-exp), and the integer softmax built on it.

For x <= 0 (the row maximum already subtracted): ``z = floor(-x / ln2)``,
``p = x + z*ln2`` in (-ln2, 0], ``exp(x) = 2**-z * exp(p)`` with
``exp(p) ~ 0.3585 * (p + 1.353)**2 + 0.344``. papers.md §5.3's form is correct (checked
against I-BERT, Kim et al. ICML'21 Eq. 10, and its ``IntSoftmax`` code). Its output scale
"delta2 = 0.5" is not applied: a softmax whose rows sum to 0.5 is a different layer.

Integer datapath (``f = frac_bits``, ``E = out_frac_bits``, ``K = coeff_frac_bits``)::

    x     = max(x, min_code)                   min_code: most negative in_bits code
    z     = (-x) // LN2                        LN2 = round(ln2 * 2**f)
    p     = x + z * LN2                        in (-LN2, 0]
    poly  = ((A * (p + B)**2) >> (2f + K - E)) + C
                                               A = round(0.3585 * 2**K),
                                               B = round(1.353 * 2**f), C = round(0.344 * 2**E)
    exp   = poly >> z                          (0 when z > E + 1)
"""

from __future__ import annotations

import math

import numpy as np

from chipforge.config import PolyExpConfig

__all__ = ["exp_constants", "int_softmax", "poly_exp"]

EXP_A, EXP_B, EXP_C = 0.3585, 1.353, 0.344


def exp_constants(cfg: PolyExpConfig) -> tuple[int, int, int, int]:
    """(LN2, A, B, C) as integers (see the module docstring)."""
    return (round(math.log(2) * (1 << cfg.frac_bits)), round(EXP_A * (1 << cfg.coeff_frac_bits)),
            round(EXP_B * (1 << cfg.frac_bits)), round(EXP_C * (1 << cfg.out_frac_bits)))


def poly_exp(x: np.ndarray, cfg: PolyExpConfig) -> np.ndarray:
    """Integer exp of signed codes ``x <= 0``; unsigned Q.out_frac_bits codes."""
    x = np.asarray(x, dtype=np.int64)
    if x.size and x.max() > 0:
        raise ValueError(f"x must be <= 0 (max-subtracted), not {int(x.max())}")
    ln2, a, b, c = exp_constants(cfg)
    x = np.maximum(x, -(1 << (cfg.in_bits - 1)))
    z = (-x) // ln2
    p = x + z * ln2
    poly = ((a * (p + b) ** 2) >> (2 * cfg.frac_bits + cfg.coeff_frac_bits
                                   - cfg.out_frac_bits)) + c
    return np.where(z > cfg.out_frac_bits + 1, 0, poly >> np.minimum(z, cfg.out_frac_bits + 1))


def int_softmax(x: np.ndarray, cfg: PolyExpConfig, out_frac_bits: int = 8,
                mask: np.ndarray | None = None) -> np.ndarray:
    """Integer softmax over the last axis of signed in_bits codes, I-BERT style: subtract
    the row maximum (over the ``mask``-ed entries), saturate, exp, then one integer
    reciprocal per row: ``factor = 2**31 // sum``, ``p = (exp * factor) >> (31 - out)``.
    Masked-out entries get probability 0, exactly as if they were removed."""
    x = np.asarray(x, dtype=np.int64)
    lo = -(1 << (cfg.in_bits - 1))
    if mask is None:
        mask = np.ones(x.shape, dtype=bool)
    row_max = np.where(mask, x, np.iinfo(np.int64).min).max(-1, keepdims=True)
    e = np.where(mask, poly_exp(np.maximum(x - row_max, lo) * mask, cfg), 0)
    factor = (1 << 31) // np.maximum(e.sum(-1, keepdims=True), 1)
    return np.minimum((e * factor) >> (31 - out_frac_bits), (1 << out_frac_bits) - 1)
