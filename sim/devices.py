"""ReRAM cell physics: conductance levels, programming variation, read noise, stuck-at faults.

CrossSim-style separation: this module knows cells only. How weights become cell levels is
the placement passes' business (:mod:`chipforge.mappings.placement`), how column sums become
codes is the ADC's (:func:`chipforge.sim.ref.crossbar.adc_convert`), and
:mod:`chipforge.sim.reram` joins them.

Units. A cell programmed to level ``l`` of ``L = 2**cell_bits`` has the nominal conductance
``G(l) = g_off + l * dG`` with ``dG = (g_on - g_off) / (L - 1)``. The array periphery
subtracts the ``g_off`` baseline (a reference column, as in ISAAC's and CrossSim's
readout), so everything downstream works in *level units*: ``(G - g_off) / dG``. Ideal
cells give the integer levels back exactly.

Non-idealities (each off by default, so :data:`IDEAL_DEVICE` is exact):

- programming variation: ``G = G(l) * exp(sigma * N(0, 1))`` per cell, drawn once when the
  array is programmed (log-normal with mean 0, as FORMS §VI models its 10 % variation);
- read noise: a fresh Gaussian per cell and per read, with standard deviation
  ``read_noise * G`` (:attr:`ReadNoiseModel.PROPORTIONAL`) or ``read_noise * (g_on - g_off)``
  (:attr:`ReadNoiseModel.INDEPENDENT`), as CrossSim's ``NormalProportionalDevice`` and
  ``NormalIndependentDevice``;
- stuck-at faults: each cell independently stuck-off (``g_off``) with probability
  ``p_stuck_off`` or stuck-on (``g_on``) with probability ``p_stuck_on``, whatever it was
  programmed to. The fault map is a pure function of the seed and the array shape.
"""

from __future__ import annotations

import dataclasses
import enum

import numpy as np

from chipforge.config import ConfigBase, check_float

__all__ = [
    "CHEN_TC2015_OFF_TO_ON",
    "FORMS_VARIATION",
    "IDEAL_DEVICE",
    "ReadNoiseModel",
    "ReramDeviceConfig",
    "StuckAt",
    "draw_fault_map",
    "program_cells",
    "split_stuck_at_rate",
]

# Stuck-off : stuck-on = 1 : 5.2, measured by Chen et al., "RRAM defect modeling and failure
# analysis based on march test and a novel squeeze-search scheme", IEEE TC 64(1), 2015; the
# split the ISQED'21 fault-tolerance paper uses (papers.md §2.1).
CHEN_TC2015_OFF_TO_ON = (1.0, 5.2)


class ReadNoiseModel(enum.Enum):
    """How the standard deviation of a cell's read noise depends on its conductance."""

    PROPORTIONAL = "proportional"
    """``read_noise * G``: the cell's own conductance (CrossSim NormalProportionalDevice)."""
    INDEPENDENT = "independent"
    """``read_noise * (g_on - g_off)``: the same for every cell (NormalIndependentDevice)."""


class StuckAt(enum.IntEnum):
    """Entries of a fault map (int8)."""

    NONE = 0
    OFF = 1
    """Stuck at low conductance ``g_off`` (the ISQED paper's SA0)."""
    ON = 2
    """Stuck at high conductance ``g_on`` (SA1)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReramDeviceConfig(ConfigBase):
    """The ReRAM cells of an accelerator: conductance range and non-idealities."""

    g_on: float = 100e-6
    """High (on) conductance in siemens: the top level."""
    g_off: float = 1e-6
    """Low (off) conductance in siemens: level 0 (on/off ratio 100 by default)."""
    programming_sigma: float = 0.0
    """Log-normal programming variation: ``G = G(l) * exp(sigma * N(0, 1))`` (FORMS: 0.1)."""
    read_noise: float = 0.0
    """Relative standard deviation of the Gaussian read noise, drawn anew at every read."""
    read_noise_model: ReadNoiseModel = ReadNoiseModel.PROPORTIONAL
    """What the read noise is relative to (see :class:`ReadNoiseModel`)."""
    p_stuck_off: float = 0.0
    """Probability that a cell is stuck at ``g_off``."""
    p_stuck_on: float = 0.0
    """Probability that a cell is stuck at ``g_on``."""

    def __post_init__(self) -> None:
        check_float("g_on", self.g_on, 0.0, lo_open=True)
        check_float("g_off", self.g_off, 0.0)
        if not self.g_off < self.g_on:
            raise ValueError(f"g_off must be below g_on, not g_off={self.g_off!r} >= "
                             f"g_on={self.g_on!r}")
        check_float("programming_sigma", self.programming_sigma, 0.0, 2.0)
        check_float("read_noise", self.read_noise, 0.0, 1.0)
        if not isinstance(self.read_noise_model, ReadNoiseModel):
            raise ValueError(f"read_noise_model must be a ReadNoiseModel "
                             f"({', '.join(m.name for m in ReadNoiseModel)}), "
                             f"not {self.read_noise_model!r}")
        check_float("p_stuck_off", self.p_stuck_off, 0.0, 1.0)
        check_float("p_stuck_on", self.p_stuck_on, 0.0, 1.0)
        if self.p_stuck_off + self.p_stuck_on > 1.0:
            raise ValueError("p_stuck_off + p_stuck_on must be at most 1, not "
                             f"{self.p_stuck_off + self.p_stuck_on!r}")

    @property
    def ideal(self) -> bool:
        """No variation, no read noise, no faults: the crossbar computes exactly."""
        return (self.programming_sigma == 0 and self.read_noise == 0
                and self.p_stuck_off == 0 and self.p_stuck_on == 0)

    @property
    def stuck_at_rate(self) -> float:
        """Total stuck-at rate ``p_stuck_off + p_stuck_on``."""
        return self.p_stuck_off + self.p_stuck_on

    def with_stuck_at_rate(self, total: float, off_to_on: tuple[float, float]
                           = CHEN_TC2015_OFF_TO_ON) -> ReramDeviceConfig:
        """A copy with the total stuck-at rate ``total`` split ``off_to_on`` (default 1 : 5.2)."""
        p_off, p_on = split_stuck_at_rate(total, off_to_on)
        return self.replace(p_stuck_off=p_off, p_stuck_on=p_on)

    def level_step(self, cell_bits: int) -> float:
        """Conductance between adjacent levels, ``(g_on - g_off) / (2**cell_bits - 1)``."""
        return (self.g_on - self.g_off) / ((1 << cell_bits) - 1)


def split_stuck_at_rate(total: float, off_to_on: tuple[float, float] = CHEN_TC2015_OFF_TO_ON
                        ) -> tuple[float, float]:
    """``(p_stuck_off, p_stuck_on)`` summing to ``total`` in the ratio ``off_to_on``."""
    check_float("stuck-at rate", total, 0.0, 1.0)
    off, on = (float(v) for v in off_to_on)
    if off < 0 or on < 0 or off + on <= 0:
        raise ValueError(f"off_to_on must be two non-negative weights, not {off_to_on!r}")
    return total * off / (off + on), total * on / (off + on)


IDEAL_DEVICE = ReramDeviceConfig()
"""Exact cells: the crossbar reproduces the quantized model bit for bit."""

# FORMS (ISCA'21) §VI / Table VI: log-normal device variation with sigma = 0.1.
FORMS_VARIATION = ReramDeviceConfig(programming_sigma=0.1)


def draw_fault_map(shape: tuple[int, ...], device: ReramDeviceConfig,
                   rng: np.random.Generator) -> np.ndarray:
    """Independent per-cell stuck-at faults: int8 array of :class:`StuckAt` values.

    One uniform number per cell decides its state, so for one seed the cells stuck at a
    lower rate stay stuck at every higher rate (nested maps: a rate sweep with common
    random numbers).
    """
    u = rng.random(shape, dtype=np.float64)
    faults = np.zeros(shape, dtype=np.int8)
    faults[u < device.p_stuck_off] = StuckAt.OFF
    faults[(u >= device.p_stuck_off) & (u < device.p_stuck_off + device.p_stuck_on)] = StuckAt.ON
    return faults


def program_cells(levels: np.ndarray, cell_bits: int, device: ReramDeviceConfig,
                  rng: np.random.Generator, faults: np.ndarray | None = None,
                  dtype: type = np.float32) -> np.ndarray:
    """Programmed conductances in level units ``(G - g_off) / dG``, same shape as ``levels``.

    Applies the programming variation (drawn from ``rng``) and then the stuck-at faults
    (stuck cells take ``g_off`` / ``g_on`` exactly). With an ideal device the result equals
    ``levels``.
    """
    levels = np.asarray(levels)
    top = (1 << cell_bits) - 1
    if levels.size and (levels.min() < 0 or levels.max() > top):
        raise ValueError(f"cell levels must lie in 0..{top} for {cell_bits}-bit cells")
    out = levels.astype(dtype)
    if device.programming_sigma > 0:
        base = device.g_off / device.level_step(cell_bits)  # g_off in level units
        factor = np.exp(device.programming_sigma
                        * rng.standard_normal(levels.shape, dtype=np.float64))
        out = ((out + base) * factor - base).astype(dtype)
    if faults is not None:
        faults = np.asarray(faults)
        if faults.shape != levels.shape:
            raise ValueError(f"fault map of shape {faults.shape} does not match the cells "
                             f"{levels.shape}")
        out[faults == StuckAt.OFF] = 0
        out[faults == StuckAt.ON] = top
    return out


def read_noise_offset(device: ReramDeviceConfig, cell_bits: int) -> float:
    """``g_off`` in level units: what proportional read noise adds to a cell's level value."""
    return device.g_off / device.level_step(cell_bits)
