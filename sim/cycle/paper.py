"""The FORMS paper's cycle claims, measured with the cycle model (used by the notebook).

- :func:`zero_skip_savings`: average effective input cycles (EIC) of the fragments of every
  layer, per fragment size, from the real activations; FORMS Fig. 8(b) reports for ResNet-50
  (CIFAR-100, 16-bit inputs) 10.7 cycles at fragment 4 (33 % of 16 saved) and 15 at
  fragment 128 (6 %).
- :func:`throughput_ratios`: FORMS over ISAAC running the same weights; the paper's abstract
  claims 1.12-2.4x FPS over optimized ISAAC (Figs. 13-14: FORMS-8 with zero-skipping
  10.7-377.9x vs pruned/quantized ISAAC 7.5-200.8x, both over ISAAC-32).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from chipforge.sim.cycle.arch import ReramArchConfig
from chipforge.sim.cycle.model import LayerWorkload, ModelReport, group_eic, simulate_cycles

__all__ = ["PAPER_EIC", "PAPER_FPS_RATIO", "throughput_ratios", "zero_skip_savings"]

PAPER_EIC = {4: 10.7, 128: 15.0}
"""FORMS §IV-B / Fig. 8(b), ResNet-50 on CIFAR-100, 16-bit inputs: all-layer average EIC."""

PAPER_FPS_RATIO = (1.12, 2.4)
"""FORMS abstract: FPS speedup over optimized (pruned/quantized) ISAAC."""


def zero_skip_savings(workloads: Sequence[LayerWorkload], sizes: Sequence[int] = (4, 8, 16, 32,
                                                                                  64, 128),
                      input_bits: int = 16) -> dict[int, dict[str, float]]:
    """Per fragment size: the all-layer average EIC (mean over layers of each layer's mean
    fragment EIC, as Fig. 8(b)) and the saving ``1 - EIC / input_bits``; also the saving
    relative to the model's own activation width where it has one."""
    out = {}
    for size in sizes:
        per_layer, per_layer_model = [], []
        for w in workloads:
            nonzero = np.any(np.asarray(w.weights) != 0, axis=1)
            x = np.asarray(w.inputs)[:, nonzero]       # pruned rows are not on the crossbar
            eic = float(group_eic(x, input_bits, size).mean())
            per_layer.append(eic)
            bits = w.input_bits_of_model or input_bits
            per_layer_model.append(1.0 - eic / bits)
        mean = float(np.mean(per_layer))
        out[size] = {"eic": mean, "saving": 1.0 - mean / input_bits,
                     "saving_vs_model_bits": float(np.mean(per_layer_model))}
    return out


def throughput_ratios(workloads: Sequence[LayerWorkload], baseline: ReramArchConfig,
                      others: Sequence[ReramArchConfig], model: str = "model"
                      ) -> tuple[ModelReport, list[tuple[ModelReport, float]]]:
    """The baseline's report and, per other architecture, its report and FPS ratio."""
    base = simulate_cycles(workloads, baseline, model=model)
    rows = []
    for arch in others:
        r = simulate_cycles(workloads, arch, model=model)
        rows.append((r, r.fps / base.fps))
    return base, rows
