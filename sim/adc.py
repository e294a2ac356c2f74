"""Low-resolution ADCs that digitize analog partial sums in processing-in-memory arrays.

:class:`AdcConfig` describes the converter; :class:`PimAdc` converts arrays of analog
partial sums (in MAC units: the sum an ideal array would produce) into the digital values
the recombination logic sees (again in MAC units, so a perfect, wide ADC is the identity).

The conversion, per partial sum ``s`` and ADC ``k`` (columns are spread over the ADCs):

1. the converter's own gain and offset errors: ``s' = s * (1 + g_k) + o_k * lsb``;
2. thermal noise, ``N(0, thermal_noise_lsb * lsb)`` drawn anew at every conversion;
3. integral nonlinearity, on the normalized input ``u = s' / full_scale``: an S-shaped
   compression of the centred input (aihwkit's ``y / (1 + n |y|)`` form, re-normalized so
   both ends of the range stay fixed) or a per-code table in LSB;
4. quantization to ``bits`` bits: mid-tread (a level at zero, ``round``) or mid-rise
   (``floor`` and the cell centre), saturating at both ends;
5. optionally the per-ADC linear calibration CAP-RAM applies, ``(y - b_k) / k_k`` with
   the gain and offset measured on the converter (here: known exactly).

The full scale is fixed by the array (``HARDWARE``: rows x largest input slice x largest
cell level, as on the CAP-RAM chip, rounded up to a power of two so that the converter
keeps the ``bits`` most significant bits of the exact sum) or set by a calibrated range
(``CALIBRATED``). With the power-of-two hardware scale, any ``bits`` at or above the exact
sum's width makes the conversion the identity.

What is known of the PIM-QAT paper and what stays a parameter:
``/shared/reference/aqfp-and-pim-adc.md`` part B; CAP-RAM figures (JSSC 2021) are cited
at :data:`CAP_RAM_ADC`.
"""

from __future__ import annotations

import dataclasses
import enum
import math

import numpy as np

from chipforge.config import ConfigBase, check_float, check_int

__all__ = ["CAP_RAM_ADC", "IDEAL_ADC", "AdcConfig", "AdcQuantizer", "FullScale", "Inl",
           "PimAdc"]


class AdcQuantizer(enum.Enum):
    MID_TREAD = "mid_tread"
    """Levels at ``q * lsb``; zero is a level; rounds to nearest."""
    MID_RISE = "mid_rise"
    """Levels at ``(q + 1/2) * lsb``; no level at zero; floors."""


class FullScale(enum.Enum):
    HARDWARE = "hardware"
    """Fixed by the array: rows x largest input slice x largest cell level (CAP-RAM)."""
    CALIBRATED = "calibrated"
    """``calibrated_range`` MAC units, e.g. set from the observed partial sums."""


class Inl(enum.Enum):
    NONE = "none"
    S_CURVE = "s_curve"
    """``c * (1 + n) / (1 + n |c|)`` on the centred input ``c = 2u - 1`` (unipolar) or
    ``u`` (bipolar), ``n = inl_nonlinearity``: ends fixed, compressed towards them."""
    TABLE = "table"
    """``inl_table[code]`` LSB added to each ideal code's reconstruction level."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class AdcConfig(ConfigBase):
    """A PIM array's column ADC (all ADCs of a layer share this description)."""

    bits: int = 8
    """Resolution b_PIM."""
    quantizer: AdcQuantizer = AdcQuantizer.MID_TREAD
    full_scale: FullScale = FullScale.HARDWARE
    calibrated_range: float = 0.0
    """Full scale in MAC units when ``full_scale`` is CALIBRATED (must be > 0 then)."""
    num_adcs: int = 32
    """Distinct converters per layer; column ``n`` uses ADC ``n % num_adcs``. Their gain
    and offset errors are drawn independently."""
    gain_error_std: float = 0.0
    """Relative gain error, standard deviation over ADCs."""
    offset_error_lsb: float = 0.0
    """Offset error in LSB, standard deviation over ADCs."""
    inl: Inl = Inl.NONE
    inl_nonlinearity: float = 0.0
    """``n`` of the S-curve (0: linear). Peak INL in LSB: :meth:`PimAdc.peak_inl_lsb`."""
    inl_table: tuple[float, ...] = ()
    """Per-code INL in LSB, ``2**bits`` entries (unipolar) or ``2**bits - 1`` (bipolar
    mid-tread), for ``inl=TABLE``."""
    thermal_noise_lsb: float = 0.0
    """Input-referred thermal noise, LSB rms, drawn at every conversion."""
    calibrate: bool = False
    """Apply the per-ADC linear calibration (undoes gain and offset errors)."""

    def __post_init__(self) -> None:
        check_int("bits", self.bits, 1, 16)
        check_int("num_adcs", self.num_adcs, 1)
        for name in ("gain_error_std", "offset_error_lsb", "inl_nonlinearity",
                     "thermal_noise_lsb", "calibrated_range"):
            check_float(name, getattr(self, name), 0.0)
        for name, kind in (("quantizer", AdcQuantizer), ("full_scale", FullScale),
                           ("inl", Inl)):
            if not isinstance(getattr(self, name), kind):
                choices = ", ".join(e.name for e in kind)
                raise ValueError(f"{name} must be an {kind.__name__} ({choices}), "
                                 f"not {getattr(self, name)!r}")
        if self.full_scale is FullScale.CALIBRATED and self.calibrated_range <= 0:
            raise ValueError("calibrated_range must be > 0 with full_scale=CALIBRATED, "
                             f"not {self.calibrated_range!r}")
        if self.gain_error_std >= 0.5:
            raise ValueError(f"gain_error_std must be < 0.5, not {self.gain_error_std!r}")
        if self.inl is Inl.TABLE and not self.inl_table:
            raise ValueError("inl_table must list the INL of every code with inl=TABLE")
        object.__setattr__(self, "inl_table", tuple(float(v) for v in self.inl_table))

    @property
    def ideal(self) -> bool:
        return (self.gain_error_std == 0 and self.offset_error_lsb == 0
                and self.thermal_noise_lsb == 0
                and (self.inl is Inl.NONE or (self.inl is Inl.S_CURVE
                                              and self.inl_nonlinearity == 0)))


IDEAL_ADC = AdcConfig(bits=16)
"""Wide and ideal: the PIM path equals the digital quantized model."""

# CAP-RAM (Chen et al., JSSC 2021; /shared/reference/aqfp-and-pim-adc.md B.1, B.5): 6-bit
# single-ended ciSAR ADC, thermal noise 0.35 LSB rms on average, INL < 2 LSB after its
# per-ADC linear calibration. The gain/offset spreads and the S-curve strength are ours
# (the chip reports them only as "dominated by comparator offset"): documented defaults.
CAP_RAM_ADC = AdcConfig(bits=6, thermal_noise_lsb=0.35, gain_error_std=0.02,
                        offset_error_lsb=0.5, inl=Inl.S_CURVE, inl_nonlinearity=0.05,
                        calibrate=True, num_adcs=32)


class PimAdc:
    """Converts analog partial sums; holds the per-ADC errors drawn from ``seed``.

    ``bipolar`` selects a differential converter (signed input, range
    ``[-full_scale, full_scale]``), as for differential (ternary) weight encoding.
    """

    def __init__(self, cfg: AdcConfig, *, hardware_range: float, bipolar: bool = False,
                 seed: int | np.random.SeedSequence = 0):
        check_float("hardware_range", hardware_range, 0.0, lo_open=True)
        self.cfg, self.bipolar = cfg, bipolar
        if cfg.full_scale is FullScale.HARDWARE:
            # Round up to a power of two: the ADC keeps the top `bits` of the exact sum.
            self.full_scale = float(2 ** math.ceil(math.log2(hardware_range + 1)))
        else:
            self.full_scale = float(cfg.calibrated_range)
        levels = 2 ** cfg.bits
        if cfg.quantizer is AdcQuantizer.MID_TREAD:
            if bipolar:
                self.code_min, self.code_max = -(levels // 2 - 1), levels // 2 - 1
            else:
                self.code_min, self.code_max = 0, levels - 1
        else:
            self.code_min, self.code_max = (-(levels // 2), levels // 2 - 1) if bipolar \
                else (0, levels - 1)
        if cfg.full_scale is FullScale.HARDWARE:
            self.lsb = self.full_scale / (2 ** (cfg.bits - 1) if bipolar else levels)
        else:
            span = self.code_max - self.code_min + (1 if cfg.quantizer is
                                                    AdcQuantizer.MID_RISE else 0)
            self.lsb = (2 * self.full_scale if bipolar else self.full_scale) / span
        rng = np.random.default_rng(seed)
        self.gain = 1.0 + cfg.gain_error_std * rng.standard_normal(cfg.num_adcs)
        self.offset = cfg.offset_error_lsb * rng.standard_normal(cfg.num_adcs)
        self.noise_rng = rng
        if cfg.inl is Inl.TABLE and len(cfg.inl_table) != self.code_max - self.code_min + 1:
            raise ValueError(f"inl_table has {len(cfg.inl_table)} entries; a {cfg.bits}-bit "
                             f"{'bipolar' if bipolar else 'unipolar'} ADC has "
                             f"{self.code_max - self.code_min + 1} codes")

    def _s_curve(self, s: np.ndarray) -> np.ndarray:
        n = self.cfg.inl_nonlinearity
        if self.bipolar:
            c = s / self.full_scale
            return self.full_scale * c * (1 + n) / (1 + n * np.abs(c))
        c = 2 * s / self.full_scale - 1
        return self.full_scale * (c * (1 + n) / (1 + n * np.abs(c)) + 1) / 2

    def peak_inl_lsb(self) -> float:
        """Largest deviation of the S-curve from the straight line, in LSB."""
        lo = -self.full_scale if self.bipolar else 0.0
        s = np.linspace(lo, self.full_scale, 4097)
        return float(np.abs(self._s_curve(s) - s).max() / self.lsb)

    def convert(self, sums: np.ndarray, adc_index: np.ndarray | int = 0, *,
                normals: np.ndarray | None = None) -> np.ndarray:
        """Digitize ``sums`` (MAC units). ``adc_index`` broadcasts against ``sums`` and says
        which converter reads each sum. ``normals``: the standard normals of the thermal
        noise, one per sum (default: drawn from this converter's stream in call order).
        Returns values in MAC units (``code * lsb`` plus the mid-rise half step),
        float64."""
        cfg = self.cfg
        s = np.asarray(sums, dtype=np.float64)
        k = np.asarray(adc_index) % cfg.num_adcs
        gain, offset = self.gain[k], self.offset[k] * self.lsb
        if cfg.gain_error_std or cfg.offset_error_lsb:
            s = s * gain + offset
        if cfg.thermal_noise_lsb:
            if normals is None:
                normals = self.noise_rng.standard_normal(s.shape)
            s = s + (cfg.thermal_noise_lsb * self.lsb) * normals
        if cfg.inl is Inl.S_CURVE and cfg.inl_nonlinearity:
            s = self._s_curve(s)
        if cfg.quantizer is AdcQuantizer.MID_TREAD:
            code = np.clip(np.rint(s / self.lsb), self.code_min, self.code_max)
            value = code * self.lsb
        else:
            code = np.clip(np.floor(s / self.lsb), self.code_min, self.code_max)
            value = (code + 0.5) * self.lsb
        if cfg.inl is Inl.TABLE:
            table = np.asarray(cfg.inl_table)
            value = value + table[(code - self.code_min).astype(np.int64)] * self.lsb
        if cfg.calibrate and (cfg.gain_error_std or cfg.offset_error_lsb):
            value = (value - offset) / gain
        return value
