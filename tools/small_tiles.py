"""Write the small ReRAM tiles of the docs/rtl.md table (synthesis only): K=16 inputs,
N=2 columns, ISAAC (1 crossbar of 16 rows) and FORMS-8 (2 fragments of 8 rows), the
smallest tiles with every part of the datapath. They fit an iCE40 HX8K, so nextpnr gives
the tile's Fmax. Usage: python tools/small_tiles.py [OUT]  (default build/small), then
python tools/synth_table.py build/small/tile-forms8-small build/small/tile-isaac-small"""

import sys

from chipforge.hw.generate import Block, _write
from chipforge.hw.reram_tile import ReramTile, tile_config


def main(out: str = "build/small") -> None:
    for accelerator in ("forms8", "isaac"):
        cfg = tile_config(accelerator, 16, 2)
        _write(f"tile-{accelerator}-small",
               Block(module=f"reram_tile_{accelerator}_small", build=ReramTile, config=cfg,
                     summary=f"{accelerator} ReRAM tile, K=16, N=2 (synthesis only)"), out)


if __name__ == "__main__":
    main(*sys.argv[1:])
