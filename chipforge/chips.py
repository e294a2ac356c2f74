"""Several programmed chips of one accelerator: their seeds and the spread of a metric.

A *chip* is one draw of the programming non-idealities (device variation, stuck-at faults)
and of the read noise. ``simulate --chips N``, ``compare`` and the sweeps run N chips whose
seeds are derived from the user's ``--seed`` by :func:`chip_seeds`, and report a metric
over them with :func:`spread` (mean, sample standard deviation and a Student-t 95 %
interval, clipped to the metric's range)::

    >>> chip_seeds(0, 3)[0]          # chip 0 is the plain run with the same seed
    0
    >>> chip_seeds(0, 3) == chip_seeds(0, 3)
    True
    >>> s = spread([0.90, 0.92, 0.94])
    >>> round(s["mean"], 4), round(s["std"], 4), s["chips"]
    (0.92, 0.02, 3)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["chip_seeds", "spread"]


def chip_seeds(seed: int, chips: int) -> list[int]:
    """The seeds of ``chips`` chips for the run seed ``seed``.

    Chip 0 uses ``seed`` itself, so ``--chips 1`` is exactly the single-chip run; chip
    ``i > 0`` gets a 63-bit seed from ``numpy.random.SeedSequence([seed, i])``, so the
    chips of two run seeds never coincide (``seed + i`` would make seed 0's chip 1 seed 1's
    chip 0), and a chip's seed does not depend on how many chips run."""
    import numpy as np

    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, not {seed!r}")
    if isinstance(chips, bool) or not isinstance(chips, int | np.integer) or chips < 1:
        raise ValueError(f"chips must be an integer >= 1, not {chips!r}")
    seeds = [int(seed)]
    for i in range(1, int(chips)):
        state = np.random.SeedSequence([int(seed), i]).generate_state(2, dtype=np.uint32)
        seeds.append(int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1))
    return seeds


def spread(values: Sequence[float], *, lower: float | None = 0.0,
           upper: float | None = 1.0) -> dict[str, float | int | None]:
    """Mean, sample standard deviation (``ddof=1``; 0 for one chip) and the two-sided
    Student-t 95 % confidence interval of the mean over chips, clipped to
    ``[lower, upper]`` (an accuracy cannot leave [0, 1]; None: no clip). One chip has no
    interval (``ci95_low`` / ``ci95_high`` None)."""
    xs = [float(v) for v in values]
    if not xs:
        raise ValueError("spread needs at least one value")
    n = len(xs)
    mean = sum(xs) / n
    if n == 1:
        return {"chips": 1, "mean": mean, "std": 0.0, "ci95_low": None, "ci95_high": None}
    std = math.sqrt(sum((v - mean) ** 2 for v in xs) / (n - 1))
    from scipy.stats import t

    half = float(t.ppf(0.975, n - 1)) * std / math.sqrt(n)
    low, high = mean - half, mean + half
    if lower is not None:
        low = max(low, lower)
    if upper is not None:
        high = min(high, upper)
    return {"chips": n, "mean": mean, "std": std, "ci95_low": low, "ci95_high": high}
