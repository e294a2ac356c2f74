"""Test cases for the token selector top level: the tokens that arrive at the selectors of a
bundled ViT on real digits images, from the 8-bit engine (:func:`chipforge.sim.vit.run_vit`),
with what the engine kept and packaged."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from chipforge.config import TokenSelectorConfig
from chipforge.sim.ref.token_selector import SelectorWeights, selector_program

__all__ = ["SelectorCase", "load_case", "save_case", "selector_cases"]


@dataclass
class SelectorCase:
    """One selector of a model on a batch of images (lists over the images)."""

    model: str
    selector: int
    cfg: TokenSelectorConfig
    weights: SelectorWeights
    h: list[np.ndarray]
    """Per image, (T, dim) LayerNorm codes of its live tokens, in order."""
    x: list[np.ndarray]
    """Per image, (T, dim) residual codes."""
    force: list[np.ndarray]
    """Per image, (T,) class token and package tokens (not scored, always kept)."""
    engine_mask: list[np.ndarray]
    """Per image, (T,) what the engine kept."""
    engine_package: list[np.ndarray | None]
    """Per image, the engine's package token (None when it pruned nothing)."""
    engine_scores: list[np.ndarray]
    """Per image, (T,) the engine's scores (meaningful where not forced)."""


def selector_cases(model: str, images: np.ndarray, calibration: np.ndarray, *,
                   center: bool | None = None) -> list[SelectorCase]:
    """Run the bundled ViT ``model`` (``vit-digits-keep60``...) in 8-bit fixed point on
    ``images`` (formats calibrated on ``calibration``, as ``chipforge heatvit`` does) and
    return one case per selector. ``center``: None runs the model's selectors as they are;
    True/False switches them all to centered / uncentered (each token scored relative to
    the image's mean live token, ``TokenSelectorConfig.center``) before calibrating, the
    same trained weights otherwise."""

    from chipforge import zoo
    from chipforge.heatvit import calibrate_graph
    from chipforge.sim.vit import run_vit
    from chipforge.sim.vit_graph import graph_to_vit

    net = graph_to_vit(zoo.load(model))
    net = net.with_selector_center(center)
    fracs, _ = calibrate_graph(net, calibration)
    io: list[dict] = []
    run_vit(net, images, fixed=True, fracs=fracs, selector_io=io)
    cases = []
    for s, rec in enumerate(io):
        cfg, weights = selector_program(net, fracs, s)
        case = SelectorCase(model, s, cfg, weights, [], [], [], [], [], [])
        for i in range(len(images)):
            live = rec["live"][i]
            case.h.append(np.asarray(rec["h"][i][live], np.int64))
            case.x.append(np.asarray(rec["x"][i][live], np.int64))
            case.force.append(~rec["candidate"][i][live])
            case.engine_mask.append(rec["keep"][i][live])
            pruned = rec["candidate"][i] & ~rec["keep"][i]
            case.engine_package.append(np.asarray(rec["package"][i], np.int64)
                                       if pruned.any() else None)
            case.engine_scores.append(np.asarray(rec["score"][i][live], np.int64))
        cases.append(case)
    return cases


def save_case(case: SelectorCase, path, images: int | None = None):
    """Write ``case`` (its first ``images`` images) as an ``.npz`` for the testbench."""
    from pathlib import Path

    from chipforge.files import atomic_open

    n = len(case.h) if images is None else images
    w = case.weights
    with atomic_open(path, "wb") as f:
        np.savez(f, model=case.model, selector=case.selector,
                 config=repr(case.cfg.to_dict()), lengths=[len(h) for h in case.h[:n]],
                 h=np.concatenate(case.h[:n]), x=np.concatenate(case.x[:n]),
                 force=np.concatenate(case.force[:n]), fc1_weight=w.fc1_weight,
                 fc1_bias=w.fc1_bias, fc2_weight=w.fc2_weight, fc2_bias=w.fc2_bias,
                 head_logits=w.head_logits)
    return Path(path)


def load_case(path) -> tuple[TokenSelectorConfig, SelectorWeights, list[tuple]]:
    """(config, weights, [(h, x, force) per image]) of a case written by :func:`save_case`."""
    import ast

    z = np.load(path, allow_pickle=False)
    cfg = TokenSelectorConfig.from_dict(ast.literal_eval(str(z["config"])))
    weights = SelectorWeights(z["fc1_weight"], z["fc1_bias"], z["fc2_weight"], z["fc2_bias"],
                              z["head_logits"])
    images, start = [], 0
    for length in z["lengths"]:
        images.append((z["h"][start:start + length], z["x"][start:start + length],
                       z["force"][start:start + length].astype(bool)))
        start += length
    return cfg, weights, images
