"""Component tables of ISAAC and FORMS, kept as data with their citations, and the chip sums.

Every entry is a :class:`Component`: its spec, power, area, the breakdown category it counts
under (ADC, DAC, crossbar, eDRAM, digital, interconnect) and where the numbers come from.
:class:`ChipModel` multiplies components up the hierarchy (per crossbar unit -> per tile ->
chip) and sums them, so the chip totals are *computed*, never copied:

==========================  ===========================  ==============================
chip                        computed here                paper
==========================  ===========================  ==============================
ISAAC-CE (ISAAC Table I)    65.808 W, 85.43 mm²          65.8 W, 85.4 mm²
FORMS fragment 8 (Tab. IV)  66.361 W, 89.94 mm²          66.36 W, 89.15 mm²
==========================  ===========================  ==============================

Where the tables round or disagree (stated again on the entries):

- ISAAC Table I lists the router at 42 mW / 0.151 mm² per 4 tiles; the tile total
  (40.9 mW, 0.215 mm²) counts a quarter of it per tile, as we do.
- FORMS Table III has no IR/OR rows, but its 12-MCU power (280.05 mW) is reproduced exactly
  only with ISAAC's IR (1.24 mW) and OR (0.23 mW) per MCU, so we include them.
- FORMS Table IV's rows are not self-consistent in area: digital unit 0.25 + 12 MCUs 0.152
  = 0.402 mm², yet the tile is 0.39 and 168 tiles 66.27 (0.3945 each). Summing Table III
  (0.149 mm² per 12 MCUs; Table III's S+A area 0.000024 is ten times smaller than ISAAC
  Table I's 0.00024) with Table IV's 0.25 digital unit gives 89.94 mm², 0.9 % above the
  paper's 89.15; power agrees to 0.01 %.
- FORMS gives only the digital unit's total (53.05 mW, 0.25 mm²); the paper says its eDRAM
  doubled to 128 KB and its bus to 512 b. We keep ISAAC's digital components and book the
  difference to ISAAC's (+12.2 mW, +0.035 mm²) under eDRAM (our assumption, stated on the
  entry), so the per-tile total is the paper's.

Per-action energies (:data:`ISAAC_ENERGY`, :data:`FORMS_ENERGY`) are Accelergy's
derivations (``hwcomponents-library`` ``isaac.py``/``forms.py``, papers.md §6.2) where it
gives one, else ``power / peak action rate`` derived here from the same tables (said so).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping

__all__ = [
    "FORMS8_CHIP",
    "FORMS_ENERGY",
    "forms_energy",
    "sar_adc_energy_pj",
    "walden_adc_energy_pj",
    "ISAAC_CHIP",
    "ISAAC_ENERGY",
    "ActionEnergy",
    "Category",
    "ChipModel",
    "Component",
    "ChipTotals",
]


class Category(enum.Enum):
    """The breakdown columns of the reports."""

    ADC = "ADC"
    DAC = "DAC"
    CROSSBAR = "crossbar"
    """The arrays and their sample-and-hold circuits."""
    EDRAM = "eDRAM"
    """The tile buffer and its bus to the crossbar units."""
    DIGITAL = "digital"
    """Shift-and-add, registers, activation, pooling, FORMS skip logic and sign indicator."""
    INTERCONNECT = "interconnect"
    """Routers and the off-chip HyperTransport links."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Component:
    """One row of a component table."""

    name: str
    spec: str
    """The table's spec column (size, count, rate)."""
    power_mw: float
    """Power of all instances the row covers, in mW."""
    area_mm2: float
    """Area of all instances the row covers, in mm²."""
    category: Category
    source: str
    """Paper, table and anything derived or assumed."""
    share: float = 1.0
    """Fraction counted per parent (the router serves 4 tiles: 0.25)."""

    @property
    def counted_power_mw(self) -> float:
        return self.power_mw * self.share

    @property
    def counted_area_mm2(self) -> float:
        return self.area_mm2 * self.share


@dataclasses.dataclass(frozen=True)
class ChipTotals:
    """Sums per level (mW, mm²) and per category for the whole chip."""

    unit_power_mw: float
    unit_area_mm2: float
    tile_power_mw: float
    tile_area_mm2: float
    chip_power_w: float
    chip_area_mm2: float
    power_by_category_w: Mapping[Category, float]
    area_by_category_mm2: Mapping[Category, float]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ChipModel:
    """A chip: tiles of crossbar units (ISAAC IMAs / FORMS MCUs) plus chip-level parts."""

    name: str
    unit_components: tuple[Component, ...]
    """Per crossbar unit (one IMA / MCU)."""
    tile_components: tuple[Component, ...]
    """Per tile, outside the units."""
    chip_components: tuple[Component, ...]
    """Once per chip."""
    units_per_tile: int
    tiles: int
    crossbars_per_unit: int
    paper_power_w: float
    paper_area_mm2: float
    paper_source: str

    def totals(self) -> ChipTotals:
        unit_p = sum(c.counted_power_mw for c in self.unit_components)
        unit_a = sum(c.counted_area_mm2 for c in self.unit_components)
        tile_p = unit_p * self.units_per_tile + sum(c.counted_power_mw
                                                     for c in self.tile_components)
        tile_a = unit_a * self.units_per_tile + sum(c.counted_area_mm2
                                                     for c in self.tile_components)
        chip_p = tile_p * self.tiles + sum(c.counted_power_mw for c in self.chip_components)
        chip_a = tile_a * self.tiles + sum(c.counted_area_mm2 for c in self.chip_components)
        power = dict.fromkeys(Category, 0.0)
        area = dict.fromkeys(Category, 0.0)
        for comps, mult in ((self.unit_components, self.units_per_tile * self.tiles),
                            (self.tile_components, self.tiles), (self.chip_components, 1)):
            for c in comps:
                power[c.category] += c.counted_power_mw * mult / 1e3
                area[c.category] += c.counted_area_mm2 * mult
        return ChipTotals(unit_p, unit_a, tile_p, tile_a, chip_p / 1e3, chip_a, power, area)

    @property
    def crossbars(self) -> int:
        return self.crossbars_per_unit * self.units_per_tile * self.tiles

    @property
    def crossbars_per_tile(self) -> int:
        return self.crossbars_per_unit * self.units_per_tile

    def table(self) -> str:
        """The component table as text (what the reports print)."""
        lines = [f"{self.name}: {self.paper_source}",
                 f"  {'level':<6} {'component':<18} {'spec':<34} {'mW':>10} {'mm2':>10}"]
        for level, comps in (("unit", self.unit_components), ("tile", self.tile_components),
                             ("chip", self.chip_components)):
            for c in comps:
                share = f" (x{c.share:g})" if c.share != 1 else ""
                lines.append(f"  {level:<6} {c.name:<18} {(c.spec + share)[:34]:<34} "
                             f"{c.power_mw:>10.4g} {c.area_mm2:>10.4g}")
        t = self.totals()
        lines.append(f"  total: unit {t.unit_power_mw:.2f} mW / {t.unit_area_mm2:.5f} mm2, "
                     f"tile {t.tile_power_mw:.2f} mW / {t.tile_area_mm2:.4f} mm2, "
                     f"chip {t.chip_power_w:.3f} W / {t.chip_area_mm2:.2f} mm2 "
                     f"(paper {self.paper_power_w} W / {self.paper_area_mm2} mm2)")
        return "\n".join(lines)


_ISAAC_T1 = "ISAAC (Shafiee et al., ISCA'16) Table I"
_FORMS_T3 = "FORMS (Yuan et al., ISCA'21) Table III, fragment 8"
_FORMS_T4 = "FORMS (Yuan et al., ISCA'21) Table IV, fragment 8"
C = Category

_ISAAC_IMA = (
    Component(name="ADC", spec="8 b, 1.2 GSps, x8", power_mw=16, area_mm2=0.0096,
              category=C.ADC, source=_ISAAC_T1),
    Component(name="DAC", spec="1 b, x8x128", power_mw=4, area_mm2=0.00017,
              category=C.DAC, source=_ISAAC_T1),
    Component(name="S+H", spec="x8x128", power_mw=0.01, area_mm2=0.00004,
              category=C.CROSSBAR, source=_ISAAC_T1),
    Component(name="memristor arrays", spec="x8, 128x128, 2 b/cell", power_mw=2.4,
              area_mm2=0.0002, category=C.CROSSBAR, source=_ISAAC_T1),
    Component(name="S+A", spec="x4", power_mw=0.2, area_mm2=0.00024,
              category=C.DIGITAL, source=_ISAAC_T1),
    Component(name="IR", spec="2 KB", power_mw=1.24, area_mm2=0.0021,
              category=C.DIGITAL, source=_ISAAC_T1),
    Component(name="OR", spec="256 B", power_mw=0.23, area_mm2=0.00077,
              category=C.DIGITAL, source=_ISAAC_T1),
)

_ISAAC_TILE = (
    Component(name="eDRAM buffer", spec="64 KB, 2 banks, 256-b bus", power_mw=20.7,
              area_mm2=0.083, category=C.EDRAM, source=_ISAAC_T1),
    Component(name="eDRAM-IMA bus", spec="384 wires", power_mw=7, area_mm2=0.090,
              category=C.EDRAM, source=_ISAAC_T1),
    Component(name="router", spec="32-b flit, 8 ports, per 4 tiles", power_mw=42,
              area_mm2=0.151, category=C.INTERCONNECT, share=0.25,
              source=_ISAAC_T1 + " (shared by 4 tiles: a quarter per tile, as the tile "
                                 "total 40.9 mW / 0.215 mm² does)"),
    Component(name="sigmoid", spec="x2", power_mw=0.52, area_mm2=0.0006,
              category=C.DIGITAL, source=_ISAAC_T1),
    Component(name="S+A", spec="x1", power_mw=0.05, area_mm2=0.00006,
              category=C.DIGITAL, source=_ISAAC_T1),
    Component(name="MaxPool", spec="x1", power_mw=0.4, area_mm2=0.00024,
              category=C.DIGITAL, source=_ISAAC_T1),
    Component(name="OR", spec="3 KB", power_mw=1.68, area_mm2=0.0032,
              category=C.DIGITAL, source=_ISAAC_T1),
)

_HYPERTRANSPORT = Component(
    name="HyperTransport", spec="4 links, 1.6 GHz, 6.4 GB/s", power_mw=10_400,
    area_mm2=22.88, category=C.INTERCONNECT,
    source="ISAAC Table I; FORMS Table IV (same for both)")

ISAAC_CHIP = ChipModel(
    name="ISAAC-CE",
    unit_components=_ISAAC_IMA,
    tile_components=_ISAAC_TILE,
    chip_components=(_HYPERTRANSPORT,),
    units_per_tile=12, tiles=168, crossbars_per_unit=8,
    paper_power_w=65.8, paper_area_mm2=85.4,
    paper_source=_ISAAC_T1 + ": 12 IMAs per tile, 168 tiles (14x12), 32 nm",
)
"""ISAAC-CE: 12 IMAs of 8 crossbars per tile, 168 tiles (ISAAC Table I)."""

# FORMS Table IV's digital unit (53.05 mW, 0.25 mm²) minus ISAAC's tile components as summed
# here (40.85 mW, 0.21485 mm²), so the FORMS digital unit totals exactly Table IV's.
_FORMS_EXTRA_DIGITAL_MW = 53.05 - sum(c.counted_power_mw for c in _ISAAC_TILE)
_FORMS_EXTRA_DIGITAL_MM2 = 0.25 - sum(c.counted_area_mm2 for c in _ISAAC_TILE)

_FORMS_MCU = (
    Component(name="ADC", spec="4 b, 2.1 GSps, x32", power_mw=15.2, area_mm2=0.0091,
              category=C.ADC, source=_FORMS_T3),
    Component(name="DAC", spec="1 b, x8x128", power_mw=4, area_mm2=0.00017,
              category=C.DAC, source=_FORMS_T3),
    Component(name="S+H", spec="x8x128", power_mw=0.0055, area_mm2=0.000023,
              category=C.CROSSBAR, source=_FORMS_T3),
    Component(name="crossbar", spec="8 x 128x128, 2 b/cell", power_mw=2.44,
              area_mm2=0.00024, category=C.CROSSBAR, source=_FORMS_T3),
    Component(name="S+A", spec="x4", power_mw=0.2, area_mm2=0.000024,
              category=C.DIGITAL,
              source=_FORMS_T3 + " (area printed 10x below ISAAC Table I's 0.00024)"),
    Component(name="skipping logic", spec="zero-skip NOR/AND", power_mw=0.01, area_mm2=1e-7,
              category=C.DIGITAL, source=_FORMS_T3),
    Component(name="sign indicator", spec="1R array, 1 b per fragment", power_mw=0.012,
              area_mm2=3.1e-6, category=C.DIGITAL, source=_FORMS_T3),
    Component(name="IR", spec="2 KB", power_mw=1.24, area_mm2=0.0021, category=C.DIGITAL,
              source="ISAAC Table I; not in FORMS Table III, but Table IV's 12-MCU power "
                     "280.05 mW needs it"),
    Component(name="OR", spec="256 B", power_mw=0.23, area_mm2=0.00077, category=C.DIGITAL,
              source="ISAAC Table I; not in FORMS Table III, but Table IV's 12-MCU power "
                     "280.05 mW needs it"),
)

_FORMS_TILE = (
    *_ISAAC_TILE,
    Component(name="eDRAM 128 KB extra", spec="64 KB -> 128 KB, 256-b -> 512-b bus",
              power_mw=_FORMS_EXTRA_DIGITAL_MW, area_mm2=_FORMS_EXTRA_DIGITAL_MM2,
              category=C.EDRAM,
              source=_FORMS_T4 + ": digital unit 53.05 mW / 0.25 mm² minus ISAAC's "
                                 "tile components (40.85 / 0.215); booked under eDRAM (our "
                                 "assumption: the paper names the larger eDRAM and bus, no "
                                 "split)"),
)

FORMS8_CHIP = ChipModel(
    name="FORMS-8",
    unit_components=_FORMS_MCU,
    tile_components=_FORMS_TILE,
    chip_components=(_HYPERTRANSPORT,),
    units_per_tile=12, tiles=168, crossbars_per_unit=8,
    paper_power_w=66.36, paper_area_mm2=89.15,
    paper_source=_FORMS_T3 + " and Table IV: 12 MCUs per tile, 168 tiles, iso-area with ISAAC",
)
"""FORMS with fragment 8: 12 MCUs of 8 crossbars (4 ADCs each) per tile, 168 tiles."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class ActionEnergy:
    """Energy per action in pJ, each with its source."""

    adc_conversion_pj: float
    dac_conversion_pj: float
    """One 1-bit DAC driving one row for one input cycle."""
    crossbar_row_cycle_pj: float
    """One active row of one crossbar for one input cycle (array plus S+H)."""
    shift_add_pj: float
    """One shift-and-add of one ADC code."""
    edram_access_pj: float
    """One eDRAM access of ``edram_bus_bits`` bits."""
    edram_bus_bits: int
    edram_bus_pj_per_bit: float
    router_pj: float
    """One 256-b router traversal."""
    sources: Mapping[str, str]


# Accelergy hwcomponents-library isaac.py (papers.md §6.2): ADC 16 mW / 9.6 GS/s, DAC, eDRAM,
# router, S+A, bus. The crossbar row energy is ours: 2.41 mW per IMA (arrays + S+H) over
# 8 arrays x 128 rows x 1/(100 ns) row-cycles.
ISAAC_ENERGY = ActionEnergy(
    adc_conversion_pj=1.667, dac_conversion_pj=0.417,
    crossbar_row_cycle_pj=(2.4 + 0.01) * 1e-3 / (8 * 128 / 100e-9) * 1e12,
    shift_add_pj=0.021, edram_access_pj=20.45, edram_bus_bits=256,
    edram_bus_pj_per_bit=0.054, router_pj=20.74,
    sources={
        "adc_conversion_pj": "Accelergy isaac.py: 16 mW / (8 ADCs x 1.2 GSps)",
        "dac_conversion_pj": "Accelergy isaac.py",
        "crossbar_row_cycle_pj": "derived: ISAAC Table I (2.4 + 0.01) mW / (1024 rows / 100 ns)",
        "shift_add_pj": "Accelergy isaac.py",
        "edram_access_pj": "Accelergy isaac.py (256-b access)",
        "edram_bus_pj_per_bit": "Accelergy isaac.py",
        "router_pj": "Accelergy isaac.py (256-b)",
    },
)

# --- Physics: scaling laws for what the tables do not give --------------------------------
#
# ADC energy per conversion vs resolution. FORMS §V scales its 4-bit ADC from an SAR ADC
# with the reference buffer, memory and clock *linear* in the bits and the capacitive DAC
# *exponential* (papers.md §1.2): E(B) = a * B + c * 2**B. Two published points fix a and c:
# ISAAC's 8-bit ADC (16 mW / 9.6 GSps = 1.667 pJ, Accelergy isaac.py) and FORMS' 4-bit one
# (15.2 mW / 67.2 GSps = 0.226 pJ, Accelergy forms.py). The 3- and 5-bit ADCs of FORMS-4 /
# FORMS-16 (which the paper never prices) follow from it. Cross-check against the ADC
# surveys' figure of merit (Walden, IEEE JSAC 17(4) 1999: FoM_W = E / 2**ENOB; Murmann, "ADC
# Performance Survey 1997-2024": GS/s SAR designs sit near 10 fJ/step at 3-8 bits): the two
# calibration points have 14 and 6.5 fJ/step, and :func:`walden_adc_energy_pj` gives the
# pure-Walden alternative (E doubles per bit) for sensitivity studies.

ISAAC_ADC8_PJ = 16e-3 / 9.6e9 * 1e12
"""ISAAC's 8-bit ADC, energy per conversion (Accelergy isaac.py: 16 mW / 9.6 GSps)."""
FORMS_ADC4_PJ = 15.2e-3 / (2.1e9 * 32) * 1e12
"""FORMS' 4-bit ADC, energy per conversion (Accelergy forms.py: 15.2 mW / (2.1 GSps x 32))."""
_SAR_C = (ISAAC_ADC8_PJ - 2 * FORMS_ADC4_PJ) / (2**8 - 2 * 2**4)
_SAR_A = (FORMS_ADC4_PJ - _SAR_C * 2**4) / 4
SAR_LINEAR_PJ_PER_BIT = _SAR_A
"""a of E(B) = a B + c 2^B: reference buffer, memory, clock (0.0348 pJ per bit)."""
SAR_DAC_PJ_PER_LEVEL = _SAR_C
"""c of E(B) = a B + c 2^B: the capacitive DAC (5.42 fJ per level)."""


def sar_adc_energy_pj(bits: int) -> float:
    """Energy per conversion of a B-bit SAR ADC by FORMS' own scaling (linear + exponential),
    through ISAAC's 8-bit and FORMS' 4-bit points: 3 / 4 / 5 / 8 bits = 0.148 / 0.226 /
    0.348 / 1.667 pJ."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 16:
        raise ValueError(f"ADC bits must be an integer in 1..16, not {bits!r}")
    return SAR_LINEAR_PJ_PER_BIT * bits + SAR_DAC_PJ_PER_LEVEL * 2**bits


def walden_adc_energy_pj(bits: int, fom_fj_per_step: float = FORMS_ADC4_PJ / 16 * 1e3
                         ) -> float:
    """Walden's figure of merit: E = FoM * 2**bits (default FoM: FORMS' 4-bit ADC's,
    14.1 fJ/step). The alternative scaling for sensitivity studies."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 16:
        raise ValueError(f"ADC bits must be an integer in 1..16, not {bits!r}")
    return fom_fj_per_step * 1e-3 * 2**bits


# Crossbar energy per row read. A driven row dissipates E = V_read**2 * sum_j G_j * t_read
# (Joule heating through its cells; Ohm's law), so with the same cells, voltage and columns
# the energy of one row read scales with how long the row is driven. ISAAC Table I fixes
# V**2 * sum G: (2.4 + 0.01) mW over 8 arrays x 128 rows all driven for the 100-ns cycle =
# 0.235 pJ per row read. FORMS drives a row for one fragment input cycle, 128 columns /
# (4 ADCs x 2.1 GSps) = 15.24 ns, hence 0.235 * 15.24 / 100 = 0.0359 pJ. (FORMS Table III's
# 2.44 mW spread over the 64 rows active at a time would give 0.58 pJ per 15-ns read, 2.5x
# ISAAC's 100-ns read of the same kind of row: the table repeats ISAAC's all-rows-on array
# power, so it is kept for the chip totals above but not used per action.)
ISAAC_ROW_READ_NS = 100.0
ISAAC_ROW_READ_PJ = (2.4 + 0.01) * 1e-3 / (8 * 128 / (ISAAC_ROW_READ_NS * 1e-9)) * 1e12
FORMS_ROW_READ_NS = 128 / (4 * 2.1e9) * 1e9
FORMS_ROW_READ_PJ = ISAAC_ROW_READ_PJ * FORMS_ROW_READ_NS / ISAAC_ROW_READ_NS
FORMS_TABLE3_ROW_READ_PJ = (2.44 + 0.0055) * 1e-3 / (8 * 8 / (FORMS_ROW_READ_NS * 1e-9)) * 1e12
"""What Table III's array power implies per row read (0.58 pJ): not used (see above)."""

FORMS_ADC_BITS = {4: 3, 8: 4, 16: 5}
"""FORMS §IV: fragment size -> ADC bits."""


def forms_energy(fragment_size: int = 8) -> ActionEnergy:
    """Per-action energies of FORMS with fragment 4, 8 or 16: the ADC of that fragment
    (3 / 4 / 5 bits, :func:`sar_adc_energy_pj`) and the row read of FORMS' 15.24-ns cycle;
    the rest as ISAAC's (FORMS keeps ISAAC's DACs and digital parts)."""
    bits = FORMS_ADC_BITS.get(fragment_size)
    if bits is None:
        raise ValueError(f"fragment_size must be 4, 8 or 16 (FORMS' ADCs), not "
                         f"{fragment_size!r}")
    return dataclasses.replace(
        ISAAC_ENERGY,
        adc_conversion_pj=sar_adc_energy_pj(bits),
        crossbar_row_cycle_pj=FORMS_ROW_READ_PJ,
        sources={**ISAAC_ENERGY.sources,
                 "adc_conversion_pj": f"{bits}-bit SAR ADC, E(B) = a B + c 2^B (FORMS §V's "
                                      "scaling) through ISAAC's 8-bit 1.667 pJ and FORMS' "
                                      "4-bit 0.226 pJ (Accelergy)",
                 "crossbar_row_cycle_pj": "derived: ISAAC's 0.235 pJ per 100-ns row read "
                                          "x 15.24 / 100 (E = V^2 G t: same cells, shorter "
                                          "read)"})


FORMS_ENERGY = forms_energy(8)
"""FORMS fragment 8 (4-bit ADC, 0.226 pJ per conversion = Accelergy forms.py)."""
