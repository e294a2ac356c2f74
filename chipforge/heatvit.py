"""HeatViT on the FPGA engine model: ``run_heatvit`` simulates a ``vit-digits`` model with
its token selectors in 8-bit fixed point and counts the engine's cycles for the tokens
each image actually keeps (the runner behind ``chipforge simulate --model vit-digits
--accelerator heatvit``, and ``chipforge heatvit``)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["run_heatvit", "vit_shape"]

SELECTOR_VARIANTS = ("keep80", "keep60", "keep50")


def vit_shape(config):
    """The cycle model's :class:`~chipforge.sim.cycle.heatvit.VitShape` of a VitConfig."""
    from chipforge.sim.cycle.heatvit import SelectorShape, VitShape

    c = config
    selector = SelectorShape(((c.heads, c.head_dim, c.selector_hidden),
                              (c.heads, c.selector_hidden, 1)))
    return VitShape("vit-digits", c.dim, c.heads, c.depth, c.mlp_hidden, c.num_patches,
                    c.patch_dim, c.num_classes, selector)


def run_heatvit(model: str = "vit-digits", *, selectors: str | None = "keep50",
                engine=None, fixed: bool = True, n_images: int | None = None
                ) -> dict[str, Any]:
    """Simulate ``model`` (``vit-digits``) with the ``selectors`` variant (``keep80``,
    ``keep60``, ``keep50``; None = no selectors) on the digits test split.

    Returns accuracies (fixed point with selectors, float backbone), the mean tokens per
    block and kept per selector, MACs and engine cycles per image (mean, min, max), and the
    speedup over the same engine running the backbone without selectors.
    """
    from chipforge.sim.cycle.heatvit import (
        HEATVIT_ZCU102,
        block_cycles,
        model_cycles,
        selector_cycles,
    )
    from chipforge.sim.vit import run_vit
    from chipforge.zoo.data import digits
    from chipforge.zoo.vit import load_vit

    if model != "vit-digits":
        raise ValueError(f"model must be 'vit-digits' (the HeatViT zoo model), not {model!r}")
    if selectors is not None and selectors not in SELECTOR_VARIANTS:
        raise ValueError(f"selectors must be one of {', '.join(SELECTOR_VARIANTS)} or None, "
                         f"not {selectors!r}")
    if n_images is not None and n_images < 1:
        raise ValueError(f"n_images must be >= 1, not {n_images}")
    engine = engine or HEATVIT_ZCU102
    data = digits(8)
    x, y = data.x_test[:n_images], data.y_test[:n_images]
    backbone = load_vit("vit-digits")
    net = load_vit(f"vit-digits-{selectors}") if selectors else backbone
    result = run_vit(net, x, fixed=fixed)
    dense = run_vit(backbone, x, fixed=fixed)
    shape = vit_shape(net.config)
    cycles = model_cycles(shape, result.tokens_per_block, engine, result.candidates)
    dense_cycles = model_cycles(shape, dense.tokens_per_block, engine)
    return {
        "model": net.name, "images": int(len(y)), "fixed_point": fixed,
        "accuracy": result.accuracy(y), "accuracy_no_selectors": dense.accuracy(y),
        "tokens_per_block": result.tokens_per_block.mean(0).tolist(),
        "kept_per_selector": result.kept.mean(0).tolist(),
        "macs_per_image": float(result.macs.mean()),
        "mac_reduction": float(1 - result.macs.mean() / dense.macs.mean()),
        "cycles_per_image": {"mean": float(cycles.mean()), "min": float(cycles.min()),
                             "max": float(cycles.max())},
        "cycles_per_block": block_cycles(result.tokens_per_block, shape, engine).mean(0).tolist(),
        "cycles_per_selector": (selector_cycles(result.candidates, shape, engine).mean(0).tolist()
                                if result.candidates.size else []),
        "latency_us": float(cycles.mean() / engine.clock_hz * 1e6),
        "speedup": float(dense_cycles.mean() / cycles.mean()),
        "engine": engine.to_dict(),
        "per_image_cycles": np.asarray(cycles),
    }
