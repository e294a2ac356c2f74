"""Size and synthesis time of a ReRAM tile, estimated before synthesis.

A tile's logic is dominated by what it builds per (row group, column): the FORMS value
logic of each fragment and column, the ISAAC shift-and-add of each crossbar and column. So
the iCE40 LUT4 count is modelled as ``base + per_unit * row_groups * columns``, fitted (least
squares on relative error) to the yosys ``synth_ice40`` counts in docs/rtl.md:

==================================  =======  ========  =======  ==========
tile (K inputs, N columns)          groups   LUT4      model    error
==================================  =======  ========  =======  ==========
forms8 conv1 (K=25, N=6)            4 x 6    8,426     8,729    +3.6 %
forms8 small (K=16, N=2)            2 x 2    4,172     3,973    -4.8 %
forms8 LeNet conv2 (K=150, N=16)    19 x 16  81,961    75,305   -8.1 %
forms8 28x28 CNN conv2 (K=36, N=6)  5 x 6    9,430     10,155   +7.7 %
isaac conv1 (K=25, N=6)             2 x 6    10,937    10,937   0 (2 points,
isaac small (K=16, N=2)             1 x 2    5,155     5,155    2 parameters)
==================================  =======  ========  =======  ==========

(The 28x28 CNN row: the tests' ONNX CNN, ``chipforge rtl tile --accelerator forms8 --layer
m.onnx:2.Conv --synth ice40``, measured while writing this model.)
Presets that polarize (FORMS) use the FORMS fit, the others the ISAAC fit (only forms8 and
isaac were measured: other presets are approximations). The synthesis time is scaled from
two measured runs of ``chipforge rtl tile --synth ice40`` on the 2-core development machine
(8,426 LUT4 in 29 s, 81,961 LUT4 in 21 min): ``29 s x (LUT4 / 8426) ** 1.66``; a rough
guide, not a promise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["DEVICES", "TileEstimate", "estimate_tile"]

DEVICES: dict[str, tuple[str, int]] = {
    "ice40": ("iCE40 HX8K", 7680),
}
"""``--synth`` target -> (device, LUTs) the fit is judged against (only iCE40 is modelled)."""

# (base, per row group x column) LUT4, fitted as the module doc says.
_FORMS_FIT = (3022.0, 237.77)
_ISAAC_FIT = (3998.6, 578.2)
_TIME_REF = (8426, 29.0)   # LUT4, seconds (measured, see the module doc)
_TIME_EXPONENT = math.log(1260 / 29.0) / math.log(81961 / 8426)


@dataclass(frozen=True)
class TileEstimate:
    """Estimated size of one tile on a device."""

    luts: int
    device: str
    device_luts: int
    seconds: float

    @property
    def fits(self) -> bool:
        return self.luts <= self.device_luts

    @property
    def far_too_large(self) -> bool:
        """More than twice the device: synthesis of something that cannot be used."""
        return self.luts > 2 * self.device_luts

    def summary(self) -> str:
        minutes = self.seconds / 60
        when = f"{self.seconds:.0f} s" if minutes < 2 else f"{minutes:.0f} min"
        verdict = ("fits" if self.fits else
                   f"does NOT fit ({self.luts / self.device_luts:.1f}x its LUTs)")
        return (f"estimated {self.luts:,} LUT4 (model fitted to docs/rtl.md, within 9 %): "
                f"{verdict} the {self.device} ({self.device_luts:,} LUT4); synthesis about "
                f"{when} (scaled from measured runs)")


def estimate_tile(cfg, target: str = "ice40") -> TileEstimate:
    """The estimate for a :class:`chipforge.hw.reram_tile.TileConfig` on ``target``."""
    device, device_luts = DEVICES.get(target, DEVICES["ice40"])
    base, per_unit = _FORMS_FIT if cfg.forms else _ISAAC_FIT
    luts = int(round(base + per_unit * cfg.row_groups * cfg.cols))
    ref_luts, ref_s = _TIME_REF
    seconds = ref_s * (luts / ref_luts) ** _TIME_EXPONENT
    return TileEstimate(luts=luts, device=device, device_luts=device_luts, seconds=seconds)
