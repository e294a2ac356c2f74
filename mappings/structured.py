"""FORMS' crossbar-aware structured pruning: whole filters and filter shapes, by ADMM.

FORMS (ISCA'21 §III, papers.md §1.1) prunes *structurally*: the constraint set ``S_i`` of a
layer keeps at most a fraction alpha_i of its filters (outputs = crossbar columns) and beta_i
of its filter shapes (one (channel, kh, kw) position across all filters = one crossbar row),
with per-layer ratios chosen "crossbar-aware", so that the removed rows and columns free
whole crossbars. Unstructured zeros (chipforge's :func:`chipforge.mappings.admm.admm_prune`)
free no crossbar: a row or column with one non-zero weight still needs its cells.

Here a layer's plan is ``(filters kept, shape blocks kept)``; a *shape block* is ``block``
consecutive rows of the weight matrix in PyTorch's flatten order (W-major), 16 by default:
one FORMS-16 fragment, two FORMS-8 or four FORMS-4 fragments, so that a removed block frees
whole fragments at every fragment size and the polarized placement drops them
(:func:`chipforge.mappings.placement.kept_rows_and_outputs`). :func:`crossbar_aware_plan`
picks the largest plan that fits a given number of crossbars per layer. A removed filter
also makes the next layer's rows that read it dead (its output is a constant that no one
reads), and those rows are pruned too (``chain``).

The projection onto ``S_i`` (the Z-step) keeps the filters of largest L2 norm, then the
blocks of largest L2 norm among the live rows; it is Euclidean for each of the two
constraints alone (applied in sequence, as FORMS's combined constraint is not written out).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from chipforge.config import ConfigBase, check_int
from chipforge.mappings.admm import AdmmConfig, admm
from chipforge.mappings.train import (
    TrainData,
    apply_constraints,
    latent_weight,
    train,
    weighted_layers,
)

__all__ = ["LayerPlan", "StructuredConfig", "crossbar_aware_plan", "structured_mask",
           "structured_prune"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class LayerPlan(ConfigBase):
    filters: int
    """Filters (outputs) kept."""
    blocks: int
    """Shape blocks (``block`` consecutive weight-matrix rows) kept."""

    def __post_init__(self) -> None:
        check_int("filters", self.filters, 1)
        check_int("blocks", self.blocks, 1)


@dataclasses.dataclass(frozen=True, kw_only=True)
class StructuredConfig(ConfigBase):
    block: int = 16
    """Rows per shape block (16: whole fragments of 4, 8 and 16)."""
    admm: AdmmConfig = AdmmConfig(rho=1e-2, rho_growth=1.5, epochs=6, finetune_epochs=6,
                                  finetune_lr=1e-3)
    """ADMM schedule (FORMS gives neither rho nor epochs)."""

    def __post_init__(self) -> None:
        check_int("block", self.block, 1)


def crossbar_aware_plan(model: nn.Module, *, rows: int = 128, outputs_per_crossbar: int = 32,
                        crossbars: Mapping[str, int] | int = 1, block: int = 16,
                        max_filters: Mapping[str, int] | None = None
                        ) -> dict[str, LayerPlan]:
    """The largest plan per layer that fits ``crossbars`` crossbars of ``rows`` rows and
    ``outputs_per_crossbar`` outputs (FORMS-8: 128 rows, 128 / 4 cells = 32 outputs).

    A layer of ``c`` crossbars keeps at most ``rows`` rows (one row tile) and ``c *
    outputs_per_crossbar`` filters; ``max_filters`` caps the filters further (the last
    layer keeps all its classes: give it ``N``).
    """
    plan = {}
    for name, layer in weighted_layers(model).items():
        w = latent_weight(layer)
        n, k = w.shape[0], w[0].numel()
        c = crossbars if isinstance(crossbars, int) else crossbars.get(name, 1)
        filters = min(n, c * outputs_per_crossbar)
        if max_filters and name in max_filters:
            filters = min(filters, max_filters[name])
        blocks = min(-(-k // block), rows // block)
        plan[name] = LayerPlan(filters=filters, blocks=blocks)
    return plan


def _chain(model: nn.Module) -> list[tuple[str, str, int]]:
    """(layer, next layer, rows of the next layer per output of this one) for a plain
    feed-forward Sequential. PyTorch's flatten order is channel-major, so an output channel
    of a conv feeds ``kh * kw`` consecutive rows of the next conv, or ``H * W`` of a Linear
    behind Flatten."""
    layers = list(weighted_layers(model).items())
    out = []
    for (a, la), (b, lb) in zip(layers, layers[1:], strict=False):
        n_out, k_next = latent_weight(la).shape[0], latent_weight(lb)[0].numel()
        if k_next % n_out:
            raise ValueError(f"layers {a!r} -> {b!r}: the {k_next} inputs of {b!r} are not "
                             f"a multiple of the {n_out} outputs of {a!r}")
        out.append((a, b, k_next // n_out))
    return out


def _block_keep(w2: torch.Tensor, live: torch.Tensor, blocks: int, block: int) -> torch.Tensor:
    """Row mask (K,) keeping the ``blocks`` blocks of largest L2 norm over ``live`` rows."""
    k = w2.shape[1]
    nb = -(-k // block)
    pad = nb * block - k
    energy = ((w2 ** 2).sum(0) * live).to(torch.float64)
    if pad:
        energy = torch.cat([energy, energy.new_zeros(pad)])
    per_block = energy.reshape(nb, block).sum(1)
    keep_b = torch.zeros(nb, dtype=torch.bool)
    keep_b[torch.topk(per_block, min(blocks, nb)).indices] = True
    return keep_b.repeat_interleave(block)[:k] & live.bool()


def _filter_keep(w2: torch.Tensor, filters: int) -> torch.Tensor:
    keep = torch.zeros(w2.shape[0], dtype=torch.bool)
    keep[torch.topk((w2 ** 2).sum(1), min(filters, w2.shape[0])).indices] = True
    return keep


def structured_mask(model: nn.Module, plan: Mapping[str, LayerPlan], block: int = 16
                    ) -> dict[str, torch.Tensor]:
    """Weight masks of the plan for the model's current weights (filters by L2 norm, then
    shape blocks among the rows whose input is still live; upstream removed filters
    kill rows)."""
    layers = weighted_layers(model)
    chain = {a: (b, r) for a, b, r in _chain(model)}
    live_in: dict[str, torch.Tensor] = {}
    masks = {}
    for name, layer in layers.items():
        w = latent_weight(layer).detach()
        w2 = w.reshape(w.shape[0], -1)
        live = live_in.get(name, torch.ones(w2.shape[1], dtype=torch.bool))
        p = plan.get(name)
        if p is None:
            keep_rows, keep_f = live, torch.ones(w2.shape[0], dtype=torch.bool)
        else:
            keep_f = _filter_keep(w2 * live, p.filters)
            keep_rows = _block_keep(w2[keep_f], live, p.blocks, block)
        masks[name] = (keep_f[:, None] & keep_rows[None, :]).to(w.dtype).reshape(w.shape)
        if name in chain:
            nxt, per = chain[name]
            live_in[nxt] = keep_f.repeat_interleave(per)
    return masks


def _projection(plan: LayerPlan, block: int, live: torch.Tensor):
    def project(v: torch.Tensor) -> torch.Tensor:
        v2 = v.reshape(v.shape[0], -1)
        keep_f = _filter_keep(v2 * live, plan.filters)
        keep_rows = _block_keep(v2[keep_f], live, plan.blocks, block)
        return (v2 * (keep_f[:, None] & keep_rows[None, :])).reshape(v.shape)
    return project


def structured_prune(model: nn.Module, data: TrainData, plan: Mapping[str, LayerPlan],
                     cfg: StructuredConfig = StructuredConfig(), *, seed: int = 0,
                     layers: Sequence[str] | None = None) -> nn.Module:
    """ADMM onto the plan's filter/shape constraint, hard masks (``prune_mask``, chained
    to the next layer's dead rows), masked fine-tuning. Modifies and returns ``model``."""
    unknown = sorted(set(plan) - set(weighted_layers(model)))
    if unknown:
        raise ValueError(f"structured pruning plan names unknown layers {unknown}")
    names = [n for n in weighted_layers(model) if n in plan] if layers is None else layers
    ones = {n: torch.ones(latent_weight(weighted_layers(model)[n])[0].numel(),
                          dtype=torch.bool) for n in names}
    admm(model, data, {n: _projection(plan[n], cfg.block, ones[n]) for n in names},
         cfg.admm, seed=seed)
    with torch.no_grad():
        for name, mask in structured_mask(model, plan, cfg.block).items():
            layer = weighted_layers(model)[name]
            if "prune_mask" in layer._buffers:
                layer.prune_mask = layer.prune_mask * mask
            else:
                layer.register_buffer("prune_mask", mask)
    apply_constraints(model)
    train(model, data, epochs=cfg.admm.finetune_epochs, lr=cfg.admm.finetune_lr,
          seed=seed + 1, batch_size=cfg.admm.batch_size, constrained=True)
    return model
