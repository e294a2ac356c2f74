"""HeatViT on the FPGA engine model, from the IR.

:func:`run_heatvit_graph` runs ANY ViT graph that :func:`chipforge.sim.vit_graph.graph_to_vit`
recognizes (the bundled ``vit-digits`` family, a timm-style ViT or an
``nn.TransformerEncoderLayer`` ViT imported from ONNX or torch, the output of ``compress
heatvit``) in 8-bit fixed point (:func:`chipforge.sim.vit.run_vit`): without
``TOKEN_SELECT`` nodes it runs dense; with them it prunes tokens image by image, and the
engine's cycles (:mod:`chipforge.sim.cycle.heatvit`) are counted for the tokens each image
actually keeps, with the layer sizes taken from the graph. :func:`run_heatvit` is the
bundled-model shortcut behind ``chipforge heatvit``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["HeatVitRun", "calibrate_graph", "run_heatvit", "run_heatvit_graph", "vit_shape",
           "without_selectors"]

SELECTOR_VARIANTS = ("keep80", "keep60", "keep50")


def vit_shape(config, name: str = "vit"):
    """The cycle model's :class:`~chipforge.sim.cycle.heatvit.VitShape` of a VitConfig."""
    from chipforge.sim.cycle.heatvit import SelectorShape, VitShape

    c = config
    selector = SelectorShape(((c.heads, c.head_dim, c.selector_hidden),
                              (c.heads, c.selector_hidden, 1)))
    return VitShape(name, c.dim, c.heads, c.depth, c.mlp_hidden, c.num_patches,
                    c.patch_dim, c.num_classes, selector)


@dataclass
class HeatVitRun:
    """One ViT graph on the HeatViT engine (per-image arrays over the N images)."""

    model: str
    fixed_point: bool
    logits: np.ndarray
    """(N, classes) with the graph's token selectors."""
    logits_dense: np.ndarray
    """(N, classes) of the same graph with its selectors removed (every token kept)."""
    tokens_per_block: np.ndarray
    """(N, depth) live tokens entering each block (class + patches + packages)."""
    kept: np.ndarray
    """(N, selectors) patch tokens alive after each selector."""
    candidates: np.ndarray
    """(N, selectors) patch tokens each selector scored."""
    macs: np.ndarray
    """(N,) MACs per image with selectors (GEMMs, attention, selectors)."""
    macs_dense: np.ndarray
    cycles: np.ndarray
    """(N,) engine cycles per image for the tokens it kept."""
    cycles_dense: np.ndarray
    cycles_per_block: np.ndarray
    """(N, depth)."""
    cycles_per_selector: np.ndarray
    """(N, selectors)."""
    engine: Any
    selector_blocks: tuple[int, ...]
    keep_ratios: tuple[float, ...]

    def accuracy(self, labels, dense: bool = False) -> float:
        logits = self.logits_dense if dense else self.logits
        return float((logits.argmax(1) == np.asarray(labels)).mean())

    @property
    def mac_reduction(self) -> float:
        return float(1 - self.macs.mean() / self.macs_dense.mean())

    @property
    def speedup(self) -> float:
        return float(self.cycles_dense.mean() / self.cycles.mean())

    @property
    def latency_us(self) -> float:
        return float(self.cycles.mean() / self.engine.clock_hz * 1e6)

    def summary(self, labels=None) -> dict[str, Any]:
        """Plain numbers (means over the images) for reports."""
        out = {
            "model": self.model, "images": int(len(self.logits)),
            "fixed_point": self.fixed_point, "selector_blocks": list(self.selector_blocks),
            "keep_ratios": list(self.keep_ratios),
            "tokens_per_block": self.tokens_per_block.mean(0).tolist(),
            "kept_per_selector": self.kept.mean(0).tolist(),
            "macs_per_image": float(self.macs.mean()),
            "macs_per_image_dense": float(self.macs_dense.mean()),
            "mac_reduction": self.mac_reduction,
            "cycles_per_image": {"mean": float(self.cycles.mean()),
                                 "min": float(self.cycles.min()),
                                 "max": float(self.cycles.max())},
            "cycles_per_image_dense": float(self.cycles_dense.mean()),
            "cycles_per_block": self.cycles_per_block.mean(0).tolist(),
            "cycles_per_selector": self.cycles_per_selector.mean(0).tolist(),
            "latency_us": self.latency_us, "speedup": self.speedup,
            "engine": self.engine.to_dict(),
        }
        if labels is not None:
            out["accuracy"] = self.accuracy(labels)
            out["accuracy_no_selectors"] = self.accuracy(labels, dense=True)
        return out


def without_selectors(net):
    """The lowered ViT ``net`` with its token selectors removed (dense)."""
    return dataclasses.replace(net, config=dataclasses.replace(
        net.config, selector_blocks=(), keep_ratios=(), keep_thresholds=(),
        engine_threshold_codes=()),
        params={k: v for k, v in net.params.items() if not k.startswith("selectors.")})


def calibrate_graph(net, images: np.ndarray, n_images: int = 256) -> tuple[dict, dict]:
    """Fixed-point formats of the lowered ViT ``net`` with and without its selectors, from
    a float run on the first ``n_images`` of ``images``."""
    from chipforge.sim.vit import calibrate

    return (calibrate(net, n_images, images=images),
            calibrate(without_selectors(net), n_images, images=images))


def run_heatvit_graph(graph, x: np.ndarray, *, engine=None, fixed: bool = True,
                      calibration: np.ndarray | None = None, model=None,
                      fracs: tuple[dict, dict] | None = None) -> HeatVitRun:
    """Run the ViT ``graph`` on inputs ``x`` (N, *graph.input_shape) on the HeatViT engine.

    ``fixed`` picks the 8-bit fixed-point engine (activation formats calibrated on the
    first 256 of ``calibration``, default ``x``: pass training images to keep test data out
    of it) or float. ``model`` is the lowered :class:`~chipforge.zoo.vit.VitModel` when the
    caller has it; ``fracs`` the calibrated formats (with and without selectors) from
    :func:`calibrate_graph`. A graph the engine cannot run is a ``ValueError`` naming the
    reason.
    """
    from chipforge.sim.cycle.heatvit import (
        HEATVIT_ZCU102,
        block_cycles,
        model_cycles,
        selector_cycles,
    )
    from chipforge.sim.vit import run_vit
    from chipforge.sim.vit_graph import graph_to_vit

    engine = engine or HEATVIT_ZCU102
    x = np.asarray(x, dtype=np.float64)
    if x.ndim < 1 or tuple(x.shape[1:]) != tuple(graph.input_shape) or len(x) == 0:
        raise ValueError(f"inputs have shape {x.shape[1:]} per sample; graph {graph.name!r} "
                         f"expects {tuple(graph.input_shape)} (and at least one sample)")
    net = model or graph_to_vit(graph)
    c = net.config
    dense_net = without_selectors(net)
    if fixed and fracs is None:
        fracs = calibrate_graph(net, x if calibration is None else calibration)
    fracs, dense_fracs = fracs if fixed else (None, None)
    result = run_vit(net, x, fixed=fixed, fracs=fracs)
    dense = run_vit(dense_net, x, fixed=fixed, fracs=dense_fracs)
    shape = vit_shape(c, graph.name)
    cycles = model_cycles(shape, result.tokens_per_block, engine, result.candidates)
    per_selector = (selector_cycles(result.candidates, shape, engine) if result.candidates.size
                    else np.zeros((len(x), 0)))
    return HeatVitRun(
        model=graph.name, fixed_point=fixed, logits=result.logits, logits_dense=dense.logits,
        tokens_per_block=result.tokens_per_block, kept=result.kept,
        candidates=result.candidates, macs=result.macs, macs_dense=dense.macs,
        cycles=np.asarray(cycles, dtype=np.float64),
        cycles_dense=np.asarray(model_cycles(shape, dense.tokens_per_block, engine),
                                dtype=np.float64),
        cycles_per_block=np.asarray(block_cycles(result.tokens_per_block, shape, engine)),
        cycles_per_selector=np.asarray(per_selector), engine=engine,
        selector_blocks=tuple(c.selector_blocks), keep_ratios=tuple(c.keep_ratios))


def run_heatvit(model: str = "vit-digits", *, selectors: str | None = "keep50",
                engine=None, fixed: bool = True, n_images: int | None = None
                ) -> dict[str, Any]:
    """Simulate the bundled ``model`` (``vit-digits``) with the ``selectors`` variant
    (``keep80``, ``keep60``, ``keep50``; None = no selectors) on the digits test split.

    Returns accuracies (fixed point with selectors, and the backbone ``vit-digits``
    without selectors), the mean tokens per block and kept per selector, MACs and engine
    cycles per image (mean, min, max), and the speedup over the same engine running the
    backbone without selectors.
    """
    from chipforge import zoo
    from chipforge.sim.cycle.heatvit import HEATVIT_ZCU102
    from chipforge.zoo.data import digits

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
    calib = data.x_train[:256]
    graph = zoo.load(f"vit-digits-{selectors}" if selectors else "vit-digits")
    run = run_heatvit_graph(graph, x, engine=engine, fixed=fixed, calibration=calib)
    backbone = (run if selectors is None else
                run_heatvit_graph(zoo.load("vit-digits"), x, engine=engine, fixed=fixed,
                                  calibration=calib))
    out = run.summary(y)
    out.update({
        "accuracy_no_selectors": backbone.accuracy(y, dense=True),
        "mac_reduction": float(1 - run.macs.mean() / backbone.macs_dense.mean()),
        "speedup": float(backbone.cycles_dense.mean() / run.cycles.mean()),
        "per_image_cycles": run.cycles,
    })
    return out
