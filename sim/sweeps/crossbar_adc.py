"""``crossbar-adc``: how ADC resolution, ISAAC's flip encoding and crossbar height trade off.

Each trial draws a random weight matrix and a batch of random input vectors, runs them
through the bit-exact crossbar reference (:mod:`chipforge.sim.ref.crossbar`) at the point's
ADC resolution, and compares with ``x @ W``. Metrics:

- ``saturated_fraction``: fraction of ADC conversions (weight columns and the unit column,
  every input cycle) whose analog sum exceeds the ADC's full scale ``2**adc_bits - 1``;
- ``relative_error``: ``||y - x @ W|| / ||x @ W||`` (Frobenius norms) of the crossbar's
  result ``y``; zero exactly when no conversion saturates.

ISAAC (Shafiee et al., ISCA'16, §4.4) sizes its 8-bit ADC for 128 rows of 2-bit cells with
the flip encoding; without it a column sum needs 9 bits. ``data`` picks the distribution of
weights and inputs: ``uniform`` over the full integer range, or ``gaussian`` (zero mean,
standard deviation 1/8 of the range's half width, clipped), closer to trained DNN weights.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from chipforge.config import ISAAC_CROSSBAR, CrossbarConfig
from chipforge.sim.ref.crossbar import adc_codes, encode_weights, shift_add
from chipforge.sim.sweep import SweepDef

__all__ = ["SWEEP", "crossbar_config", "trial"]

DISTRIBUTIONS = ("uniform", "gaussian")


def crossbar_config(point: dict[str, Any]) -> CrossbarConfig:
    """The ISAAC crossbar with the point's ADC bits, flip encoding, rows and cols."""
    return ISAAC_CROSSBAR.replace(adc_bits=point["adc_bits"], rows=point["rows"],
                                  cols=point["cols"], flip_encoding=point["flip_encoding"])


def _check_point(point: dict[str, Any]) -> None:
    crossbar_config(point)
    if point["data"] not in DISTRIBUTIONS:
        raise ValueError(f"data must be one of {', '.join(DISTRIBUTIONS)}, not {point['data']!r}")
    if isinstance(point["batch"], bool) or not isinstance(point["batch"], int) \
            or point["batch"] < 1:
        raise ValueError(f"batch must be an integer >= 1, not {point['batch']!r}")


def _draw(rng: np.random.Generator, kind: str, lo: int, hi: int, shape: tuple[int, ...]
          ) -> np.ndarray:
    if kind == "uniform":
        return rng.integers(lo, hi, endpoint=True, size=shape)
    values = np.rint(rng.normal(0.0, (hi + 1) / 8, size=shape))
    return np.clip(values, lo, hi).astype(np.int64)


def trial(point: dict[str, Any], seed: int) -> dict[str, float]:
    cfg = crossbar_config(point)
    rng = np.random.default_rng(seed)
    weights = _draw(rng, point["data"], *cfg.weight_range, (cfg.rows, cfg.cols))
    x = _draw(rng, point["data"], *cfg.input_range, (point["batch"], cfg.rows))
    cells = encode_weights(weights, cfg)
    # The same cells read by a 16-bit ADC give the exact analog sums (they stay far below
    # 2**16), so counting those above full scale counts the saturated conversions.
    exact_sums = adc_codes(x, cells, cfg.replace(adc_bits=16))
    full = cfg.adc_max_code
    saturated = int((exact_sums.codes > full).sum())
    if cfg.has_unit_column:
        saturated += int((exact_sums.unit > full).sum())
    conversions = exact_sums.codes.size + (exact_sums.unit.size if cfg.has_unit_column else 0)
    readout = adc_codes(x, cells, cfg)
    y = shift_add(readout.codes, readout.unit, readout.flipped, cfg)
    exact = (x @ weights).astype(np.float64)
    error = np.linalg.norm(y - exact) / max(float(np.linalg.norm(exact)), 1.0)
    return {"saturated_fraction": saturated / conversions, "relative_error": float(error)}


SWEEP = SweepDef(
    name="crossbar-adc",
    trial=trial,
    grid={"adc_bits": [5, 6, 7, 8, 9], "flip_encoding": [False, True], "rows": [64, 128],
          "cols": [128], "batch": [16], "data": ["uniform", "gaussian"]},
    metrics=("saturated_fraction", "relative_error"),
    x_axis="adc_bits",
    trials=8,
    check_point=_check_point,
    description="ISAAC crossbar: ADC bits x flip encoding x rows; saturation and MVM error",
    log_y=("saturated_fraction", "relative_error"),
)
