"""Architecture configs of the cycle model: ISAAC and FORMS presets.

A :class:`ReramArchConfig` says how a chip maps and runs a weight matrix: crossbar size, cell
and weight bits, how many rows are active at once (FORMS' fragment; ISAAC: the whole
array), the ADCs per crossbar and their rate, bit-serial input width, zero-skipping, the
pipeline depth, and the chip's tiles (for the component tables and the replication budget).
"""

from __future__ import annotations

import dataclasses
import enum

from chipforge.config import ConfigBase, check_float, check_int
from chipforge.sim.cycle.components import (
    FORMS8_CHIP,
    FORMS_ENERGY,
    ISAAC_CHIP,
    ISAAC_ENERGY,
    ActionEnergy,
    ChipModel,
    forms_energy,
    sar_adc_energy_pj,
)

__all__ = ["FORMS4", "FORMS8", "FORMS16", "ISAAC", "ISAAC8", "ISQED", "Architecture",
           "ReramArchConfig", "chip_model", "action_energy"]


class Architecture(enum.Enum):
    """Which chip's component tables and per-action energies apply."""

    ISAAC = "isaac"
    FORMS = "forms"


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReramArchConfig(ConfigBase):
    """How a ReRAM accelerator maps and times a layer (see :mod:`chipforge.sim.cycle.model`)."""

    name: str = "isaac"
    """Label in reports."""
    architecture: Architecture = Architecture.ISAAC
    """Component tables (ISAAC Table I or FORMS Tables III/IV) and per-action energies."""
    crossbar_rows: int = 128
    crossbar_cols: int = 128
    """Physical (cell) columns per crossbar."""
    cell_bits: int = 2
    weight_bits: int = 8
    """Bits a weight occupies on the crossbar: ISAAC's offset-encoded signed weight, or
    FORMS' magnitude (the sign sits in the sign indicator). ``ceil(weight_bits/cell_bits)``
    cells per weight."""
    input_bits: int = 16
    """Bit-serial input width (1-bit DACs): cycles per input vector without skipping."""
    fragment_size: int = 128
    """Rows active at once, processed one group after the other (FORMS §IV-C: "each time
    only one fragment (i.e. 8 rows) is activated"); ISAAC activates all 128 rows."""
    parallel_groups: bool = False
    """Convert all row groups of a crossbar at once (each with its own ADCs: not iso-area,
    an upper bound for exploration) instead of one after the other."""
    adcs_per_crossbar: int = 1
    adc_rate: float = 1.2e9
    """Conversions per second of one ADC. One input cycle of a row group takes
    ``(crossbar_cols / adcs_per_crossbar) / adc_rate``: ISAAC 128/1.2 GSps = 106.7 ns,
    FORMS 32/2.1 GSps = 15.2 ns."""
    zero_skipping: bool = False
    """Stop feeding a row group's inputs once all their remaining (upper) bits are zero: a
    group takes its effective input cycles EIC = max effective bits of its inputs."""
    group_overhead_cycles: int = 0
    """Extra cycles per row group (the FORMS fragment datapath's load/trigger cycle:
    ``chipforge.hw.forms_fragment`` takes EIC + 1 cycles per fragment)."""
    unit_column: bool = True
    """ISAAC's unit column (offset encoding): one more ADC conversion per crossbar read."""
    columns_per_weight: int = 1
    """Column sets per weight: 2 for a signed weight on a pair of columns (ISQED'21's
    two-column and differential mappings, ``w = w_a - w_b``), which doubles the cells,
    the ADC conversions and (from the placement) the crossbars."""
    adc_bits: int | None = None
    """ADC resolution when it differs from the architecture's own (ISAAC 8 bits): its
    conversion energy then follows :func:`~chipforge.sim.cycle.components.sar_adc_energy_pj`
    (ISQED presets: 9 bits)."""
    pipeline_stages: int = 22
    """Intra-tile pipeline depth (ISAAC §5, FORMS Fig. 12); ``input_bits`` of them are the
    crossbar cycles, the rest add latency only."""
    crossbars_per_unit: int = 8
    units_per_tile: int = 12
    tiles: int = 168
    """Tiles available for the mapping and its replication (the chip: 168)."""

    def __post_init__(self) -> None:
        if not isinstance(self.architecture, Architecture):
            raise ValueError(f"architecture must be an Architecture, not {self.architecture!r}")
        check_int("crossbar_rows", self.crossbar_rows, 1, 4096)
        check_int("crossbar_cols", self.crossbar_cols, 1, 4096)
        check_int("cell_bits", self.cell_bits, 1, 8)
        check_int("weight_bits", self.weight_bits, 1, 32)
        check_int("input_bits", self.input_bits, 1, 32)
        check_int("fragment_size", self.fragment_size, 1, self.crossbar_rows)
        if self.crossbar_rows % self.fragment_size:
            raise ValueError(f"fragment_size must divide crossbar_rows ({self.crossbar_rows}), "
                             f"not {self.fragment_size}")
        check_int("adcs_per_crossbar", self.adcs_per_crossbar, 1, self.crossbar_cols)
        check_float("adc_rate", self.adc_rate, 0.0, lo_open=True)
        check_int("group_overhead_cycles", self.group_overhead_cycles, 0, 64)
        check_int("columns_per_weight", self.columns_per_weight, 1, 2)
        if self.adc_bits is not None:
            check_int("adc_bits", self.adc_bits, 1, 16)
        check_int("pipeline_stages", self.pipeline_stages, self.input_bits, 1024)
        check_int("crossbars_per_unit", self.crossbars_per_unit, 1, 1024)
        check_int("units_per_tile", self.units_per_tile, 1, 1024)
        check_int("tiles", self.tiles, 1, 1 << 20)
        for name in ("zero_skipping", "unit_column", "parallel_groups"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, not {getattr(self, name)!r}")

    @property
    def cells_per_weight(self) -> int:
        """Cells one weight occupies, both columns of a differential pair included."""
        return -(-self.weight_bits // self.cell_bits) * self.columns_per_weight

    @property
    def cycle_ns(self) -> float:
        """One input cycle of one row group: the ADCs sweep their columns."""
        return (self.crossbar_cols / self.adcs_per_crossbar) / self.adc_rate * 1e9

    @property
    def groups_per_crossbar(self) -> int:
        return self.crossbar_rows // self.fragment_size

    @property
    def crossbars_per_tile(self) -> int:
        return self.crossbars_per_unit * self.units_per_tile

    @property
    def crossbars(self) -> int:
        return self.crossbars_per_tile * self.tiles


def chip_model(cfg: ReramArchConfig) -> ChipModel:
    """The component table that prices this architecture (power, area)."""
    return FORMS8_CHIP if cfg.architecture is Architecture.FORMS else ISAAC_CHIP


def action_energy(cfg: ReramArchConfig) -> ActionEnergy:
    """Per-action energies; FORMS' ADC by its fragment's resolution (3 / 4 / 5 bits)."""
    if cfg.architecture is Architecture.FORMS:
        return forms_energy(cfg.fragment_size) if cfg.fragment_size in (4, 8, 16) \
            else FORMS_ENERGY
    if cfg.adc_bits is not None and cfg.adc_bits != 8:
        return dataclasses.replace(
            ISAAC_ENERGY, adc_conversion_pj=sar_adc_energy_pj(cfg.adc_bits),
            sources={**ISAAC_ENERGY.sources,
                     "adc_conversion_pj": f"{cfg.adc_bits}-bit SAR ADC, E(B) = a B + c 2^B "
                                          "through ISAAC's 8-bit and FORMS' 4-bit points"})
    return ISAAC_ENERGY


# ISAAC-CE (ISCA'16, Table I, §5): 128x128 arrays of 2-bit cells, one 8-bit ADC at 1.2 GSps per
# array (106.7 ns per input cycle), 16-bit inputs over 16 cycles, 16-bit weights in 8 cells
# with the unit column, all 128 rows active, 22-stage pipeline, 168 tiles of 12 IMAs.
ISAAC = ReramArchConfig(name="ISAAC", architecture=Architecture.ISAAC, weight_bits=16)

# "Pruned/quantized ISAAC" (FORMS Table V / Figs. 13-14): ISAAC running the same 8-bit
# weights as FORMS (4 cells per weight), everything else as ISAAC.
ISAAC8 = ISAAC.replace(name="ISAAC (8-bit weights)", weight_bits=8)

# FORMS fragment 8 (ISCA'21, §IV-C, Tables III/IV): 8-bit weight magnitudes in 4 cells, one
# fragment of 8 rows active at a time, 4 ADCs per array at 2.1 GSps (15.2 ns per cycle),
# zero-skipping, no unit column (sign indicator instead). The fragment's load/trigger cycle
# is our RTL's (hw.forms_fragment), not a paper number.
FORMS8 = ReramArchConfig(name="FORMS-8", architecture=Architecture.FORMS, weight_bits=8,
                         fragment_size=8, adcs_per_crossbar=4, adc_rate=2.1e9,
                         zero_skipping=True, group_overhead_cycles=1, unit_column=False)

# FORMS fragments 4 and 16 use 3- and 5-bit ADCs; the paper gives their rates nowhere, so
# these presets keep the 2.1 GSps of fragment 8 (a parameter: set adc_rate to explore).
FORMS4 = FORMS8.replace(name="FORMS-4", fragment_size=4)
FORMS16 = FORMS8.replace(name="FORMS-16", fragment_size=16)

# ISQED'21 (Yuan et al., papers.md §2.2) on ISAAC-style hardware: the paper has no
# architecture ("same hardware as two-column: Ga/Gb columns and an op-amp subtractor"), so
# its presets are costed as ISAAC tiles (Table I) holding each 8-bit weight on a pair of
# 4-cell columns (twice ISAAC-8's cells and conversions; no unit column: no offset) read by
# the presets' 9-bit ADC (SAR scaling, 3.09 pJ per conversion). The subtractor is not
# priced [assumed folded into the S+A]. Both mappings have the same cost: they differ only in which
# conductances a weight programs.
ISQED = ISAAC.replace(name="ISQED'21 pair columns on ISAAC tiles", weight_bits=8,
                      columns_per_weight=2, unit_column=False, adc_bits=9)
