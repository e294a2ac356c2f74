"""SupeRBNN's energy advantage over a ReRAM BNN as a sensitivity table, not one number.

SupeRBNN (MICRO'23, abstract) reports ~7.8e4x the energy efficiency of a ReRAM BNN. The
paper's device values are not available (papers.md §4), so chipforge's ratio
(:func:`chipforge.sim.aqfp.energy_comparison`) rests on three choices, each swept here:

- **bitstream length L**: every AQFP junction switches once per clock cycle for L cycles
  per inference (AC power), so the AQFP energy grows ~linearly with L (the counters grow by
  log2 L bits) and the ratio falls as ~1/L;
- **path-balancing overhead**: AQFP's 4-phase clocking needs buffers on every path so
  that signals arrive in their phase; they "can exceed 90 % of all JJs" (papers.md A.5),
  i.e. an overhead of up to ~9x the logic's junctions; the ratio falls as 1/(1 + overhead);
- **the baseline's sensing circuit**: chipforge's ReRAM BNN converts each binary partial sum
  with ISAAC's 8-bit ADC (1.667 pJ); a BNN crossbar may sense with fewer bits. The energy of a
  B-bit sense is :func:`chipforge.sim.cycle.components.sar_adc_energy_pj` (FORMS' SAR
  scaling, 1 bit = a comparator-like 0.046 pJ).

:func:`sensitivity_table` returns one row per combination; :func:`format_table` prints it.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

__all__ = ["BASELINE_SENSING_BITS", "BITSTREAM_LENGTHS", "PATH_BALANCE_OVERHEADS",
           "format_table", "sensitivity_table"]

BITSTREAM_LENGTHS = (16, 32, 64, 128, 256)
PATH_BALANCE_OVERHEADS = (0.0, 1.0, 9.0)
"""0: none; 1: as many balancing buffers as logic JJs; 9: buffers are 90 % of all JJs."""
BASELINE_SENSING_BITS = (8, 4, 1)
"""Bits per ReRAM-BNN partial-sum conversion: ISAAC's 8-bit ADC (chipforge's default), a
4-bit ADC, a 1-bit sense amplifier."""
PAPER_RATIO = 7.8e4
"""SupeRBNN abstract: energy efficiency ~7.8e4x a ReRAM-based BNN framework."""


def sensitivity_table(layers, cfg, *, lengths: Sequence[int] = BITSTREAM_LENGTHS,
                      overheads: Sequence[float] = PATH_BALANCE_OVERHEADS,
                      sensing_bits: Sequence[int] = BASELINE_SENSING_BITS
                      ) -> list[dict[str, Any]]:
    """AQFP chip energy, ReRAM-BNN energy and their ratio for every (L, overhead, sensing).

    ``layers``: :func:`chipforge.sim.aqfp.binary_layers` of a BNN; ``cfg``: the AQFP array
    (its L and overhead are replaced). The cryocooler is left out (the paper's ratio is
    the chip's); divide by ``1 + cfg.cryocooler_overhead`` for wall-plug."""
    from chipforge.sim.aqfp import cost_model, reram_bnn_energy, with_changes
    from chipforge.sim.cycle.components import ISAAC_ADC8_PJ, sar_adc_energy_pj

    base = reram_bnn_energy(layers)
    adc_j = base.breakdown_j["adcs"]
    rows = []
    for length, overhead in itertools.product(lengths, overheads):
        hw = with_changes(cfg, bitstream_length=int(length),
                          path_balance_overhead=float(overhead))
        aqfp_j = cost_model(layers, hw)[3].chip_j
        for bits in sensing_bits:
            reram_j = base.energy_j - adc_j + adc_j * sar_adc_energy_pj(bits) / ISAAC_ADC8_PJ
            rows.append({"bitstream_length": int(length), "path_balance_overhead": overhead,
                         "baseline_sensing_bits": int(bits), "aqfp_chip_j": aqfp_j,
                         "reram_bnn_j": reram_j, "ratio": reram_j / aqfp_j})
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """The table as text: one line per (L, overhead), one ratio column per sensing."""
    bits = sorted({r["baseline_sensing_bits"] for r in rows}, reverse=True)
    head = (f"{'L':>5} {'balance':>8} {'AQFP J':>10} "
            + " ".join(f"{f'ratio ({b}-bit)':>15}" for b in bits))
    lines = [head]
    keys = sorted({(r["bitstream_length"], r["path_balance_overhead"]) for r in rows})
    for length, over in keys:
        sel = {r["baseline_sensing_bits"]: r for r in rows
               if (r["bitstream_length"], r["path_balance_overhead"]) == (length, over)}
        lines.append(f"{length:>5} {over:>8g} {sel[bits[0]]['aqfp_chip_j']:>10.3g} "
                     + " ".join(f"{sel[b]['ratio']:>15.3g}" for b in bits))
    lines.append(f"paper (SupeRBNN abstract): {PAPER_RATIO:.1e}x; ratios are chip only "
                 "(no cryocooler)")
    return "\n".join(lines)
