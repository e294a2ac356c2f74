"""The ``aqfp`` sweep: accuracy and energy of the bundled BNN on SupeRBNN arrays over the
gray-zone width sigma, the crossbar size N and the bitstream length L (issue 6's trade-offs
on the sweep engine). Each trial is :func:`chipforge.mappings.superbnn.superbnn_trial`,
on the digits data set the bundled BNN was trained on (documented default; ``--data`` does
not apply)."""

from __future__ import annotations

from typing import Any

from chipforge.sim.sweep import SweepDef

METRICS = ("accuracy", "noise_mac", "energy_chip_j", "latency_s")


def trial(point: dict[str, Any], seed: int) -> dict[str, float]:
    from chipforge.mappings.superbnn import superbnn_trial

    row = superbnn_trial(point, seed)
    return {m: row[m] for m in METRICS}


SWEEP = SweepDef(
    name="aqfp",
    trial=trial,
    grid={"sigma_ua": [0.25, 0.5, 1.0, 2.0, 4.0, 8.0], "crossbar_size": [16, 32, 128],
          "bitstream_length": [64]},
    metrics=METRICS,
    x_axis="sigma_ua",
    trials=3,
    log_x=True,
    description="SupeRBNN array: accuracy vs gray-zone sigma, crossbar size N, bitstream L",
)
