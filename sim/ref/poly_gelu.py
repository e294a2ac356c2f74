"""Bit-exact reference of the polynomial GELU unit (HeatViT Eqs. 11-12, from I-BERT).

GELU(x) = x/2 * (1 + erf(x/sqrt2)), with I-BERT's erf polynomial (Kim et al., ICML'21,
Eq. 7 and ``IntGELU`` in its code, checked against both):

    L(u) = sign(u) * (a * (min(|u|, -b) + b)**2 + 1),   a = -0.2888, b = -1.769

In input units (u = x/sqrt2) the clip point is ``c = -b*sqrt2`` and the curvature ``a/2``:
``L = sign(x) * (1 - (-a/2) * (min(|x|, c) - c)**2)``. Integer datapath, with
``f = frac_bits``, ``E = erf_frac_bits``, ``K = coeff_frac_bits``::

    t     = min(|x|, C) - C                     C = round(-b*sqrt2 * 2**f)
    mag   = 2**E - ((A * t*t) >> (2f + K - E))  A = round(-a/2 * 2**K)
    L     = sign(x) * mag                       (Q.E)
    gelu  = (x * (2**E + L) + 2**E) >> (E + 1)  (round half up; same format as x)

papers.md §5.3 quotes ``gelu = x * (1 + delta1 * L) / 2`` with delta1 = 0.5 from a
third-party reimplementation: that tends to 0.75x for large x, so it is not a GELU. The
unit here is I-BERT's published form (delta1 = 1); HeatViT's "regularization" factors are
not modelled.
"""

from __future__ import annotations

import math

import numpy as np

from chipforge.config import PolyGeluConfig

__all__ = ["ERF_A", "ERF_B", "gelu_constants", "gelu_float", "poly_gelu", "poly_gelu_float"]

ERF_A = -0.2888
ERF_B = -1.769


def gelu_constants(cfg: PolyGeluConfig) -> tuple[int, int]:
    """(C, A): the clip point in input codes and the curvature -a/2 in Q.coeff_frac_bits."""
    clip = round(-ERF_B * math.sqrt(2) * (1 << cfg.frac_bits))
    curvature = round(-ERF_A / 2 * (1 << cfg.coeff_frac_bits))
    return clip, curvature


def poly_gelu(x: np.ndarray, cfg: PolyGeluConfig) -> np.ndarray:
    """Integer GELU of signed ``data_bits`` codes; returns codes in the same format."""
    x = np.asarray(x, dtype=np.int64)
    lo, hi = -(1 << (cfg.data_bits - 1)), (1 << (cfg.data_bits - 1)) - 1
    if x.size and (x.min() < lo or x.max() > hi):
        raise ValueError(f"x must be {cfg.data_bits}-bit codes in {lo}..{hi}")
    clip, curvature = gelu_constants(cfg)
    e = cfg.erf_frac_bits
    t = np.minimum(np.abs(x), clip) - clip
    mag = (1 << e) - ((curvature * t * t) >> (2 * cfg.frac_bits + cfg.coeff_frac_bits - e))
    erf = np.sign(x) * mag
    return (x * ((1 << e) + erf) + (1 << e)) >> (e + 1)


def poly_gelu_float(x: np.ndarray) -> np.ndarray:
    """The I-BERT polynomial GELU in floating point (no quantization)."""
    x = np.asarray(x, dtype=np.float64)
    u = np.abs(x) / math.sqrt(2)
    erf = np.sign(x) * (ERF_A * (np.minimum(u, -ERF_B) + ERF_B) ** 2 + 1)
    return x / 2 * (1 + erf)


def gelu_float(x: np.ndarray) -> np.ndarray:
    """The exact GELU."""
    from math import erf

    x = np.asarray(x, dtype=np.float64)
    return x / 2 * (1 + np.vectorize(erf, otypes=[np.float64])(x / math.sqrt(2)))
