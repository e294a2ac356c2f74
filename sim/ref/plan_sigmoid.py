"""Bit-exact reference of the PLAN sigmoid unit (Amin, Curtis and Hayes-Gill, 1997).

For y = sigmoid(|x|): 1 for |x| >= 5; |x|/32 + 27/32 for 2.375 <= |x| < 5;
|x|/8 + 5/8 for 1 <= |x| < 2.375; |x|/4 + 1/2 below 1; for x < 0, 1 - y. (papers.md §5.3
quotes this correctly.) Integer datapath with ``fi = frac_bits``, ``fo = out_frac_bits``::

    X = |x|
    y = 2**fo                                     if X >= 5 * 2**fi
        ((X << fo) >> (fi + 5)) + 27 * 2**(fo-5)  if X >= 2.375 * 2**fi
        ((X << fo) >> (fi + 3)) +  5 * 2**(fo-3)  if X >= 2**fi
        ((X << fo) >> (fi + 2)) +      2**(fo-1)  otherwise
    out = y if x >= 0 else 2**fo - y
"""

from __future__ import annotations

import numpy as np

from chipforge.config import PlanSigmoidConfig

__all__ = ["plan_sigmoid", "plan_sigmoid_float", "sigmoid_float"]


def plan_sigmoid(x: np.ndarray, cfg: PlanSigmoidConfig) -> np.ndarray:
    """PLAN sigmoid of signed in_bits codes; unsigned Q.out_frac_bits codes."""
    x = np.asarray(x, dtype=np.int64)
    lo, hi = -(1 << (cfg.in_bits - 1)), (1 << (cfg.in_bits - 1)) - 1
    if x.size and (x.min() < lo or x.max() > hi):
        raise ValueError(f"x must be {cfg.in_bits}-bit codes in {lo}..{hi}")
    fi, fo = cfg.frac_bits, cfg.out_frac_bits
    big = np.abs(x) << fo
    one = 1 << fi
    y = np.select(
        [big >= (5 * one) << fo, 8 * np.abs(x) >= 19 * one, np.abs(x) >= one],
        [np.full_like(x, 1 << fo), (big >> (fi + 5)) + (27 << (fo - 5)),
         (big >> (fi + 3)) + (5 << (fo - 3))],
        (big >> (fi + 2)) + (1 << (fo - 1)))
    return np.where(x >= 0, y, (1 << fo) - y)


def plan_sigmoid_float(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    a = np.abs(x)
    y = np.select([a >= 5, a >= 2.375, a >= 1], [np.ones_like(a), a / 32 + 27 / 32, a / 8 + 5 / 8],
                  a / 4 + 0.5)
    return np.where(x >= 0, y, 1 - y)


def sigmoid_float(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-np.asarray(x, dtype=np.float64)))
