"""FORMS fragment polarization by ADMM (Yuan et al., ISCA'21; papers.md §1.1).

Constraint ``P``: the non-zero weights of every fragment (``fragment_size`` consecutive
crossbar rows of one column, in the row order of :mod:`chipforge.sim.fragments`) share one
sign. The Z-step projection computes nothing new: with the current signs fixed it zeroes
every weight of the opposite sign (the Euclidean projection onto ``P`` for given signs; the
paper states the effect, "eliminated ... to become zero", not the formula). Signs follow
FORMS Eq. 2 (``+`` when the fragment sums to >= 0): initially from the (pruned) input model,
then recomputed from the current weights every ``sign_update_every`` ADMM epochs (the
paper's M; it gives neither M nor the epoch count N, so both are parameters).

Afterwards the model is hard-projected with the final signs and fine-tuned with pruning
mask and signs held (projected SGD). The signs are stored on each weighted layer as the
buffer ``fragment_signs`` (int8, (out, n_fragments)) with ``fragment_size`` and
``fragment_order``, and exported by :func:`chipforge.mappings.torch_export.to_graph` as the
node's params ``"fragment_signs"`` and attrs ``"fragment_size"``, ``"fragment_order"``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import nn

from chipforge.config import ConfigBase, check_int
from chipforge.mappings.admm import AdmmConfig, admm, hard_prune, prune_projection
from chipforge.mappings.train import (
    TrainData,
    apply_constraints,
    latent_weight,
    train,
    weighted_layers,
)
from chipforge.sim.fragments import FragmentOrder, expand_signs, fragment_sign_rule
from chipforge.sim.fragments import polarize as polarize_numpy
from chipforge.sim.graph import Graph

__all__ = ["PolarizeConfig", "admm_polarize", "polarize_graph", "set_fragment_signs"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class PolarizeConfig(ConfigBase):
    fragment_size: int = 8
    """Weights per fragment m (FORMS: 4, 8 or 16; 8 is its default)."""
    order: FragmentOrder = FragmentOrder.W_MAJOR
    """Row order of conv weights (see :mod:`chipforge.sim.fragments`)."""
    sign_update_every: int = 3
    """Recompute the signs every M ADMM epochs (FORMS does not give M)."""
    joint_pruning: bool = False
    """Re-select each pruned layer's zeros jointly with the signs: the projection is onto
    "polarized and at most the layer's current number of non-zeros" (polarize, then keep
    the largest magnitudes), so weights may regrow with their fragment's sign. The
    sparsity is kept. False (default, better on the digits LeNet) keeps the input
    pruning mask fixed."""
    admm: AdmmConfig = AdmmConfig(rho=1e-2, rho_growth=1.5, epochs=18, finetune_epochs=40,
                                  finetune_lr=1e-3)
    """ADMM schedule (rho, epochs N, fine-tuning)."""

    def __post_init__(self) -> None:
        check_int("fragment_size", self.fragment_size, 1)
        check_int("sign_update_every", self.sign_update_every, 1)
        if not isinstance(self.order, FragmentOrder):
            raise ValueError(f"order must be a FragmentOrder, not {self.order!r}")


def set_fragment_signs(layer: nn.Module, signs: np.ndarray, size: int,
                       order: FragmentOrder) -> None:
    t = torch.from_numpy(np.asarray(signs, dtype=np.int8).copy())
    if "fragment_signs" in layer._buffers:
        layer.fragment_signs = t
    else:
        layer.register_buffer("fragment_signs", t)
    layer.fragment_size = int(size)
    layer.fragment_order = FragmentOrder(order).value


def _groups(layer: nn.Module) -> int:
    """Groups of a conv layer (grouped / depthwise fragments follow the block-diagonal
    placement, :mod:`chipforge.sim.fragments`), 1 otherwise."""
    return int(getattr(layer, "groups", 1)) if isinstance(layer, nn.Conv2d) else 1


def _signs_of(w: torch.Tensor, cfg: PolarizeConfig, groups: int = 1) -> np.ndarray:
    return fragment_sign_rule(w.detach().double().numpy(), cfg.fragment_size, cfg.order,
                              groups)


def admm_polarize(model: nn.Module, data: TrainData, cfg: PolarizeConfig = PolarizeConfig(),
                  *, seed: int = 0) -> nn.Module:
    """Polarize every weighted layer of ``model`` (keeping its pruning mask), in place."""
    layers = weighted_layers(model)
    # signs from the input
    signs = {n: _signs_of(latent_weight(m), cfg, _groups(m)) for n, m in layers.items()}
    zero_ratio = {}
    if cfg.joint_pruning:
        for n, m in layers.items():
            mask = getattr(m, "prune_mask", None)
            if mask is not None:
                zero_ratio[n] = float((mask == 0).sum()) / mask.numel()
                del m._buffers["prune_mask"]         # re-selected jointly below

    def projection(name: str):
        layer = layers[name]

        def project(v: torch.Tensor) -> torch.Tensor:
            mask = getattr(layer, "prune_mask", None)
            if mask is not None:
                v = v * mask
            per_weight = torch.from_numpy(expand_signs(tuple(v.shape), signs[name],
                                                       cfg.fragment_size, cfg.order,
                                                       _groups(layer)))
            v = torch.where(v * per_weight.to(v.dtype) >= 0, v, torch.zeros_like(v))
            if name in zero_ratio:
                v = prune_projection(zero_ratio[name])(v)
            return v
        return project

    def update_signs(epoch: int) -> None:
        if (epoch + 1) % cfg.sign_update_every == 0:
            for n, m in layers.items():
                signs[n] = _signs_of(latent_weight(m), cfg, _groups(m))

    admm(model, data, {n: projection(n) for n in layers}, cfg.admm, seed=seed,
         on_epoch_end=update_signs)
    for m in layers.values():                        # final signs, hard projection
        set_fragment_signs(m, _signs_of(latent_weight(m), cfg, _groups(m)), cfg.fragment_size,
                           cfg.order)
    apply_constraints(model)
    if zero_ratio:                                   # then the joint mask
        hard_prune(model, zero_ratio)
    train(model, data, epochs=cfg.admm.finetune_epochs, lr=cfg.admm.finetune_lr, seed=seed + 1,
          batch_size=cfg.admm.batch_size, constrained=True)
    return model


def polarize_graph(graph: Graph, fragment_size: int = 8,
                   order: FragmentOrder | str = FragmentOrder.W_MAJOR) -> Graph:
    """One-shot polarization of a graph (no training): signs by FORMS Eq. 2, projection,
    signs stored on each weighted node. Quantized weights stay multiples of their scale.
    An already polarized model (same size and order) comes back unchanged."""
    order = FragmentOrder(order)
    out = graph.copy()
    for node in out.weighted_nodes():
        w = node.params["weight"]
        groups = int(node.attrs.get("groups", 1))
        signs = fragment_sign_rule(w, fragment_size, order, groups)
        node.params["weight"] = polarize_numpy(w, signs, fragment_size, order, groups)
        node.params["fragment_signs"] = signs
        node.attrs["fragment_size"] = int(fragment_size)
        node.attrs["fragment_order"] = order.value
    return out
