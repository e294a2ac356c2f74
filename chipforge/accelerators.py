"""ReRAM crossbar accelerators: one frozen config per design, named presets, TOML files.

A :class:`ReramAcceleratorConfig` says what the chip is (crossbar size, cells, DACs, ADCs,
how signed weights are placed, the cells' non-idealities); the placement passes
(:func:`chipforge.mappings.placement.place`) map a quantized model onto it and
:mod:`chipforge.sim.reram` runs the result. Presets cite their tables; where a paper leaves
a detail open, the field's docstring says which default we chose.

Accelerator configs load from TOML as well::

    # my_chip.toml
    name = "my-chip"
    rows = 64
    adc_bits = 7
    scheme = "differential"
    [device]
    programming_sigma = 0.05

``get_accelerator("forms8")`` or ``get_accelerator("my_chip.toml")``.
"""

from __future__ import annotations

import dataclasses
import enum
from pathlib import Path

from chipforge.config import (
    ConfigBase,
    CrossbarConfig,
    WeightEncoding,
    check_float,
    check_int,
    load_toml,
)
from chipforge.sim.devices import IDEAL_DEVICE, ReramDeviceConfig

__all__ = [
    "ACCELERATORS",
    "FORMS4",
    "FORMS8",
    "FORMS16",
    "ISAAC",
    "ISQED_DIFFERENTIAL",
    "ISQED_TWO_COLUMN",
    "AdcRange",
    "PlacementScheme",
    "ReramAcceleratorConfig",
    "get_accelerator",
]


class PlacementScheme(enum.Enum):
    """How a signed weight is placed on non-negative cell conductances."""

    OFFSET = "offset"
    """``w + 2**(weight_bits - 1)`` stored unsigned; ISAAC's unit column counts the input
    ones so the digital side subtracts the bias (ISAAC §4.3)."""
    TWO_COLUMN = "two_column"
    """``w = w+ - w-`` on two columns; zero weights leave both cells low (ISQED §2.2)."""
    DIFFERENTIAL = "differential"
    """ISQED'21's fault-tolerant differential pair: ``w_a = max`` if ``w >= 0`` else
    ``max - |w|``, ``w_b = max - w`` if ``w > 0`` else ``max``; zero weights put both cells
    high, where stuck-on faults are harmless."""
    POLARIZED = "polarized"
    """FORMS: ``|w|`` on one column and one sign per fragment of ``fragment_size`` rows in a
    digital sign indicator; each fragment is read by its own ADC conversion."""

    @property
    def weight_encoding(self) -> WeightEncoding:
        """The reference crossbar's encoding for one analog row group."""
        return {PlacementScheme.OFFSET: WeightEncoding.OFFSET,
                PlacementScheme.TWO_COLUMN: WeightEncoding.TWO_COLUMN,
                PlacementScheme.DIFFERENTIAL: WeightEncoding.DIFFERENTIAL,
                PlacementScheme.POLARIZED: WeightEncoding.MAGNITUDE}[self]


class AdcRange(enum.Enum):
    """What to do about column sums that can exceed the ADC's full scale.

    FORMS (papers.md §1.2) reads a fragment of m rows of 2-bit cells with 1-bit inputs,
    whose sum reaches ``3 m`` (24 at m = 8, 5 bits), yet it uses an ADC one bit smaller
    (3 / 4 / 5 bits for m = 4 / 8 / 16) and never says why. The bit is exactly what ISAAC's
    flip encoding saves, so the FORMS presets use ``FLIP``; ``CLIP`` is the alternative
    reading (the ADC saturates; ideal devices are then no longer exact).
    """

    FLIP = "flip"
    """ISAAC §4.4: a column whose levels sum past half the maximum is stored complemented
    and corrected with the unit column: the worst sum halves, one ADC bit is saved."""
    CLIP = "clip"
    """Store columns as they are; a sum above ``2**adc_bits - 1`` saturates."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReramAcceleratorConfig(ConfigBase):
    """A ReRAM crossbar accelerator for the functional simulator."""

    name: str = "custom"
    """Name shown in reports."""
    rows: int = 128
    """Word lines per crossbar."""
    cols: int = 128
    """Cell columns (bit lines) per crossbar, not counting the unit column."""
    cell_bits: int = 2
    """Bits per cell (``2**cell_bits`` conductance levels)."""
    weight_bits: int = 8
    """Bits of a signed weight: ``ceil(weight_bits / cell_bits)`` cells per polarity."""
    input_bits: int = 16
    """Widest activation the DACs feed (bit-serial); a model's narrower activations take
    fewer cycles (the leading cycles would read zero)."""
    dac_bits: int = 1
    """Bits applied per input cycle."""
    adc_bits: int = 8
    """ADC resolution; codes saturate at ``2**adc_bits - 1``."""
    adcs_per_crossbar: int = 1
    """ADCs shared by the columns of one crossbar (for the cycle and energy models)."""
    adc_rate: float = 1.2e9
    """Conversions per second per ADC."""
    scheme: PlacementScheme = PlacementScheme.OFFSET
    """How signed weights are placed."""
    adc_range: AdcRange = AdcRange.CLIP
    """Flip encoding or clipping (see :class:`AdcRange`)."""
    fragment_size: int = 8
    """Rows per fragment (``POLARIZED`` only): rows summed per ADC read and per sign bit."""
    device: ReramDeviceConfig = IDEAL_DEVICE
    """The cells and their non-idealities."""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name must be a non-empty string, not {self.name!r}")
        check_int("rows", self.rows, 1, 4096)
        check_int("cols", self.cols, 1, 4096)
        check_int("cell_bits", self.cell_bits, 1, 8)
        check_int("weight_bits", self.weight_bits, 2, 32)
        check_int("input_bits", self.input_bits, 2, 32)
        check_int("dac_bits", self.dac_bits, 1, 8)
        check_int("adc_bits", self.adc_bits, 1, 16)
        check_int("adcs_per_crossbar", self.adcs_per_crossbar, 1, self.cols + 1)
        check_float("adc_rate", self.adc_rate, 0.0, lo_open=True)
        for fname, kind in (("scheme", PlacementScheme), ("adc_range", AdcRange)):
            if not isinstance(getattr(self, fname), kind):
                choices = ", ".join(repr(m.value) for m in kind)
                raise ValueError(f"{fname} must be one of {choices}, not "
                                 f"{getattr(self, fname)!r}")
        if not isinstance(self.device, ReramDeviceConfig):
            raise ValueError(f"device must be a ReramDeviceConfig, not {self.device!r}")
        if self.adc_range is AdcRange.FLIP and self.scheme in (PlacementScheme.TWO_COLUMN,
                                                               PlacementScheme.DIFFERENTIAL):
            raise ValueError(f"adc_range FLIP needs a unit column: scheme offset or polarized, "
                             f"not {self.scheme.value}")
        check_int("fragment_size", self.fragment_size, 1, self.rows)
        if self.scheme is PlacementScheme.POLARIZED and self.rows % self.fragment_size:
            raise ValueError(f"fragment_size must divide rows ({self.rows}) so fragments do "
                             f"not straddle crossbars, not {self.fragment_size}")
        per_weight = self.cells_per_weight
        if per_weight > self.cols:
            raise ValueError(f"a weight needs {per_weight} cell columns but a crossbar has "
                             f"only cols={self.cols}")

    @property
    def slices(self) -> int:
        """Cells per weight and polarity."""
        return -(-self.weight_bits // self.cell_bits)

    @property
    def cells_per_weight(self) -> int:
        """Physical columns one weight column occupies."""
        two = self.scheme in (PlacementScheme.TWO_COLUMN, PlacementScheme.DIFFERENTIAL)
        return 2 * self.slices if two else self.slices

    @property
    def group_rows(self) -> int:
        """Rows summed on a bit line per ADC read: a fragment, or the whole crossbar."""
        return self.fragment_size if self.scheme is PlacementScheme.POLARIZED else self.rows

    @property
    def unit_column(self) -> bool:
        return self.scheme is PlacementScheme.OFFSET or self.adc_range is AdcRange.FLIP

    def crossbar_config(self, *, input_bits: int | None = None,
                        signed_inputs: bool = True) -> CrossbarConfig:
        """The reference crossbar (:mod:`chipforge.sim.ref.crossbar`) of one row group."""
        return CrossbarConfig(
            rows=self.group_rows, cols=self.cols, cell_bits=self.cell_bits,
            weight_bits=self.weight_bits, input_bits=input_bits or self.input_bits,
            dac_bits=self.dac_bits, adc_bits=self.adc_bits,
            adcs_per_crossbar=self.adcs_per_crossbar, adc_rate=self.adc_rate,
            weight_encoding=self.scheme.weight_encoding,
            flip_encoding=self.adc_range is AdcRange.FLIP, signed_inputs=signed_inputs)

    def with_device(self, **changes) -> ReramAcceleratorConfig:
        """A copy whose device has some fields changed."""
        return self.replace(device=self.device.replace(**changes))


# ISAAC-CE (Shafiee et al., ISCA'16), Table I and §4 (papers.md §6): 128x128 arrays of
# 2-bit cells, 16-bit weights in 8 cells with a 2**15 bias and a unit column, 16-bit inputs
# through 1-bit DACs, 8-bit ADCs at 1.2 GSps (one per array), flip encoding.
ISAAC = ReramAcceleratorConfig(
    name="isaac", rows=128, cols=128, cell_bits=2, weight_bits=16, input_bits=16, dac_bits=1,
    adc_bits=8, adcs_per_crossbar=1, adc_rate=1.2e9, scheme=PlacementScheme.OFFSET,
    adc_range=AdcRange.FLIP)


def _forms(fragment: int, adc_bits: int) -> ReramAcceleratorConfig:
    return ReramAcceleratorConfig(
        name=f"forms{fragment}", rows=128, cols=128, cell_bits=2, weight_bits=8, input_bits=16,
        dac_bits=1, adc_bits=adc_bits, adcs_per_crossbar=4, adc_rate=2.1e9,
        scheme=PlacementScheme.POLARIZED, adc_range=AdcRange.FLIP, fragment_size=fragment)


# FORMS (Yuan et al., ISCA'21) §IV and Table III (papers.md §1.2): 128x128 crossbars of
# 2-bit cells, 8-bit weights in four cells, 16-bit inputs through 1-bit DACs, 4 ADCs per
# crossbar at 2.1 GSps with 3 / 4 / 5 bits for fragments 4 / 8 / 16. The paper does not say
# how a fragment's sum (up to 3 m) fits the ADC; we use ISAAC's flip encoding (AdcRange).
FORMS4 = _forms(4, 3)
FORMS8 = _forms(8, 4)
FORMS16 = _forms(16, 5)

# ISQED'21 (Yuan et al., papers.md §2.2) models continuous conductances without bit slicing
# or ADCs. We keep FORMS-like hardware (128x128, 8-bit weights in four 2-bit cells per
# polarity) with a 9-bit ADC that never saturates (128 rows x 3 = 384), so the two presets
# differ in the placement only.
ISQED_TWO_COLUMN = ReramAcceleratorConfig(
    name="isqed-two-column", rows=128, cols=128, cell_bits=2, weight_bits=8, input_bits=16,
    dac_bits=1, adc_bits=9, adcs_per_crossbar=1, adc_rate=1.2e9,
    scheme=PlacementScheme.TWO_COLUMN, adc_range=AdcRange.CLIP)
ISQED_DIFFERENTIAL = ISQED_TWO_COLUMN.replace(name="isqed-differential",
                                              scheme=PlacementScheme.DIFFERENTIAL)

ACCELERATORS: dict[str, ReramAcceleratorConfig] = {
    a.name: a for a in (ISAAC, FORMS4, FORMS8, FORMS16, ISQED_TWO_COLUMN, ISQED_DIFFERENTIAL)
}
"""The ReRAM presets by name."""


def get_accelerator(name_or_path: str | Path | ReramAcceleratorConfig) -> ReramAcceleratorConfig:
    """A preset by name, a config from a ``.toml`` file, or a config passed through."""
    if isinstance(name_or_path, ReramAcceleratorConfig):
        return name_or_path
    text = str(name_or_path)
    if text in ACCELERATORS:
        return ACCELERATORS[text]
    if text.endswith(".toml"):
        cfg = load_toml(ReramAcceleratorConfig, text, required=("name",))
        assert isinstance(cfg, ReramAcceleratorConfig)
        return cfg
    raise ValueError(f"unknown ReRAM accelerator {text!r}; presets: {', '.join(ACCELERATORS)}, "
                     "or a .toml file")
