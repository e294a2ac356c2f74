"""The ``keep`` sweep (HeatViT): the bundled ViT's selectors at each keep ratio, on FPGA
engines of several PE-array sizes: accuracy, MACs saved and the modelled speedup over the
same engine without selectors. Everything is deterministic (one trial per point); the seed
is recorded but unused. It runs the bundled vit-digits on the digits data set it was
trained on (documented default; ``--data`` does not apply)."""

from __future__ import annotations

from typing import Any

from chipforge.sim.sweep import SweepDef

METRICS = ("accuracy", "mac_reduction", "speedup", "latency_us")


def check_point(point: dict[str, Any]) -> None:
    from chipforge.heatvit import SELECTOR_VARIANTS

    if point["selectors"] not in (*SELECTOR_VARIANTS, "none"):
        raise ValueError(f"selectors must be one of {', '.join(SELECTOR_VARIANTS)} or none, "
                         f"not {point['selectors']!r}")


def trial(point: dict[str, Any], seed: int) -> dict[str, float]:
    from chipforge.heatvit import run_heatvit
    from chipforge.sim.cycle.heatvit import HEATVIT_ZCU102

    engine = HEATVIT_ZCU102.replace(pe_in=int(point["pe"]), pe_out=int(point["pe"]))
    selectors = None if point["selectors"] == "none" else point["selectors"]
    result = run_heatvit(selectors=selectors, engine=engine)
    return {m: float(result[m]) for m in METRICS}


SWEEP = SweepDef(
    name="keep",
    trial=trial,
    grid={"selectors": ["none", "keep80", "keep60", "keep50"], "pe": [16, 64]},
    metrics=METRICS,
    x_axis="selectors",
    trials=1,
    check_point=check_point,
    description="HeatViT: fixed-point ViT accuracy, MACs and FPGA speedup per keep ratio",
)
