"""ISQED'21 hierarchical progressive pruning (Algorithm 1; papers.md §2.3).

1. Group the weighted layers into blocks by size (number of weights), smallest first.
2. Walk the candidate pruning ratios in ascending order.
3. At each ratio, ADMM-prune the layers of the still-active blocks (frozen blocks keep the
   ratio they last accepted), starting from the last accepted model, and evaluate it.
4. If ``reference - accuracy < threshold`` the model is accepted (and recorded as the best
   when its accuracy improves on the best so far at a higher or equal sparsity);
   otherwise the front (smallest) block is popped - frozen at its last accepted ratio -
   and the same ratio is tried again on the remaining blocks.
5. Stop when no block is active or the ratios are exhausted; return the best model.

The paper does not give the threshold, the candidate list or the grouping; they are
parameters here (defaults: threshold 1.0 accuracy point, ratios 0.3 .. 0.9, one block per
layer). The paper's ``evaluate`` is the fault-injected accuracy averaged over many runs;
:func:`progressive_prune` takes any ``evaluate(model) -> accuracy`` callback and defaults to
the clean test accuracy of the torch model.

Interpretation choices (the pseudo-code is ambiguous): the drop is measured against the
unpruned input model's ``evaluate``; "best" is the accepted model with the highest
sparsity (ties: higher accuracy), since every accepted model meets the accuracy bound.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable

from torch import nn

from chipforge.config import ConfigBase, check_float
from chipforge.mappings.admm import AdmmConfig, admm_prune, sparsity
from chipforge.mappings.train import TrainData, latent_weight, torch_accuracy, weighted_layers

__all__ = ["ProgressiveConfig", "ProgressiveResult", "progressive_prune", "size_blocks"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProgressiveConfig(ConfigBase):
    threshold: float = 0.01
    """Largest accepted accuracy drop against the unpruned model (fraction: 0.01 = 1 point)."""
    ratios: tuple[float, ...] = (0.3, 0.5, 0.6, 0.7, 0.8, 0.9)
    """Candidate pruning ratios, ascending."""
    admm: AdmmConfig = AdmmConfig(epochs=6, finetune_epochs=6)
    """ADMM schedule of each pruning step."""

    def __post_init__(self) -> None:
        check_float("threshold", self.threshold, 0.0, 1.0)
        if not self.ratios or list(self.ratios) != sorted(self.ratios):
            raise ValueError(f"ratios must be a non-empty ascending list, not {self.ratios!r}")
        for r in self.ratios:
            check_float("each candidate ratio", r, 0.0, 1.0)
            if r >= 1.0:
                raise ValueError(f"candidate ratios must be < 1, not {r}")


@dataclasses.dataclass
class ProgressiveResult:
    model: nn.Module
    accuracy: float
    reference_accuracy: float
    ratios: dict[str, float]
    """Per-layer pruning ratio of the returned model."""
    history: list[dict]
    """One entry per tried step: ratio, active blocks, accuracy, accepted."""


def size_blocks(model: nn.Module) -> list[list[str]]:
    """Weighted layers grouped by weight count, smallest first (equal sizes share a block)."""
    sizes: dict[int, list[str]] = {}
    for name, layer in weighted_layers(model).items():
        sizes.setdefault(latent_weight(layer).numel(), []).append(name)
    return [sizes[k] for k in sorted(sizes)]


def progressive_prune(model: nn.Module, data: TrainData,
                      cfg: ProgressiveConfig = ProgressiveConfig(), *,
                      evaluate: Callable[[nn.Module], float] | None = None,
                      blocks: list[list[str]] | None = None, seed: int = 0
                      ) -> ProgressiveResult:
    """Run Algorithm 1 on a copy of ``model``; ``evaluate`` defaults to clean accuracy."""
    if evaluate is None:
        def evaluate(m: nn.Module) -> float:
            return torch_accuracy(m, data.x_test, data.y_test)
    blocks = [list(b) for b in (blocks or size_blocks(model))]
    reference = evaluate(model)
    current = copy.deepcopy(model)
    ratios = dict.fromkeys(weighted_layers(model), 0.0)
    best = (copy.deepcopy(current), reference, dict(ratios))
    history = []
    i = 0
    while blocks and i < len(cfg.ratios):
        ratio = cfg.ratios[i]
        trial_ratios = dict(ratios)
        for block in blocks:
            for name in block:
                trial_ratios[name] = ratio
        trial = admm_prune(copy.deepcopy(current), data, trial_ratios, cfg.admm,
                           seed=seed + i)
        acc = evaluate(trial)
        accepted = reference - acc < cfg.threshold
        history.append({"ratio": ratio, "blocks": [list(b) for b in blocks],
                        "accuracy": acc, "sparsity": sparsity(trial), "accepted": accepted})
        if accepted:
            current, ratios = trial, trial_ratios
            best = (copy.deepcopy(trial), acc, dict(trial_ratios))
            i += 1
        else:
            blocks.pop(0)
    return ProgressiveResult(best[0], best[1], reference, best[2], history)
