"""ADMM-regularized training (ADMM-NN, as used by FORMS and ISQED'21) and unstructured pruning.

ADMM splits ``min f(W) + g(Z) s.t. W = Z`` (``g`` the indicator of a constraint set) into

- W-step: SGD epochs on ``f(W) + sum_i rho_i / 2 * ||W_i - Z_i + U_i||_F^2``;
- Z-step: ``Z_i = Proj(W_i + U_i)`` (Euclidean projection onto the constraint set);
- dual update: ``U_i = U_i + W_i - Z_i``.

The Z- and U-updates run once per epoch (ADMM-NN's schedule); ``rho`` grows by
``rho_growth`` per epoch so that W is pulled ever closer to the set. Afterwards the model
is *hard*-projected and fine-tuned with the constraint held (masked / projected SGD).
FORMS and ISQED do not give rho or the epoch counts: they are parameters here, with
defaults tuned for the digits models.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import torch
from torch import nn

from chipforge.config import ConfigBase, check_float, check_int
from chipforge.mappings.train import (
    TrainData,
    apply_constraints,
    latent_weight,
    train,
    weighted_layers,
)

__all__ = ["AdmmConfig", "admm", "admm_prune", "hard_prune", "prune_projection", "sparsity"]

Projection = Callable[[torch.Tensor], torch.Tensor]


@dataclasses.dataclass(frozen=True, kw_only=True)
class AdmmConfig(ConfigBase):
    rho: float = 1e-2
    """Initial ADMM penalty rho (not given by FORMS/ISQED)."""
    rho_growth: float = 1.5
    """Factor applied to rho after every epoch (1: constant)."""
    epochs: int = 10
    """ADMM epochs (W-step epochs, each followed by one Z-step and dual update)."""
    lr: float = 1e-3
    """Adam learning rate of the W-step."""
    finetune_epochs: int = 10
    """Epochs of masked fine-tuning after the hard projection."""
    finetune_lr: float = 5e-4
    """Adam learning rate of the fine-tuning."""
    batch_size: int = 64
    """Minibatch size of both phases."""

    def __post_init__(self) -> None:
        check_float("rho", self.rho, 0.0, lo_open=True)
        check_float("rho_growth", self.rho_growth, 1.0)
        check_int("epochs", self.epochs, 0)
        check_float("lr", self.lr, 0.0, lo_open=True)
        check_int("finetune_epochs", self.finetune_epochs, 0)
        check_float("finetune_lr", self.finetune_lr, 0.0, lo_open=True)
        check_int("batch_size", self.batch_size, 1)


def admm(model: nn.Module, data: TrainData, projections: Mapping[str, Projection],
         cfg: AdmmConfig, *, seed: int,
         on_epoch_end: Callable[[int], None] | None = None) -> dict[str, torch.Tensor]:
    """Run ADMM on the named weighted layers; returns the final Z (projected) per layer.

    ``projections`` maps layer names (of :func:`weighted_layers`) to Euclidean projections;
    a projection may read state that ``on_epoch_end`` changes (FORMS's sign updates).
    """
    layers = weighted_layers(model)
    unknown = sorted(set(projections) - set(layers))
    if unknown:
        raise ValueError(f"ADMM projections name unknown layers {unknown}; "
                         f"weighted layers: {sorted(layers)}")
    weights = {n: latent_weight(layers[n]) for n in projections}
    with torch.no_grad():
        z = {n: projections[n](w.detach().clone()) for n, w in weights.items()}
        u = {n: torch.zeros_like(w) for n, w in weights.items()}
    rho = [cfg.rho]

    @torch.no_grad()
    def penalty_grad() -> float:
        # d/dW of rho / 2 * ||W - Z + U||^2 added by hand: the same float32 values autograd
        # gives (rho * (W - Z + U)), without taping the penalty over every weight per step
        value = 0.0
        for n, w in weights.items():
            d = w - z[n] + u[n]
            if w.grad is None:
                w.grad = d * rho[0]
            else:
                w.grad.add_(d * rho[0])
            value += rho[0] / 2 * float((d * d).sum())
        return value

    def epoch_end(epoch: int) -> None:
        if on_epoch_end is not None:
            on_epoch_end(epoch)
        with torch.no_grad():
            for n, w in weights.items():
                z[n] = projections[n](w.detach() + u[n])
                u[n] = u[n] + w.detach() - z[n]
        rho[0] *= cfg.rho_growth

    train(model, data, epochs=cfg.epochs, lr=cfg.lr, seed=seed, batch_size=cfg.batch_size,
          extra_grad=penalty_grad, on_epoch_end=epoch_end, constrained=True)
    return z


def prune_projection(ratio: float) -> Projection:
    """Keep the ``1 - ratio`` fraction of largest magnitudes (ties by position), zero the rest."""
    check_float("pruning ratio", ratio, 0.0, 1.0)

    def project(v: torch.Tensor) -> torch.Tensor:
        keep = v.numel() - int(round(ratio * v.numel()))
        if keep >= v.numel():
            return v.clone()
        mask = torch.zeros(v.numel(), dtype=v.dtype)
        if keep > 0:
            mask[torch.topk(v.abs().reshape(-1), keep, sorted=False).indices] = 1
        return v * mask.reshape(v.shape)
    return project


@torch.no_grad()
def hard_prune(model: nn.Module, ratios: Mapping[str, float]) -> None:
    """Zero the smallest magnitudes of each named layer and register ``prune_mask``
    (combined with an existing mask), so constrained training keeps the zeros."""
    layers = weighted_layers(model)
    for name, ratio in ratios.items():
        w = latent_weight(layers[name])
        mask = (prune_projection(ratio)(torch.ones_like(w) + w.abs()) != 0)
        mask = mask & (w != 0) if ratio > 0 else mask
        old = getattr(layers[name], "prune_mask", None)
        if old is not None:
            mask = mask & (old != 0)
        if "prune_mask" in layers[name]._buffers:
            layers[name].prune_mask = mask.to(w.dtype)
        else:
            layers[name].register_buffer("prune_mask", mask.to(w.dtype))
    apply_constraints(model)


def _ratios(model: nn.Module, ratios: float | Mapping[str, float]) -> dict[str, float]:
    layers = weighted_layers(model)
    if isinstance(ratios, int | float):
        ratios = dict.fromkeys(layers, float(ratios))
    unknown = sorted(set(ratios) - set(layers))
    if unknown:
        raise ValueError(f"pruning ratios name unknown layers {unknown}; "
                         f"weighted layers: {sorted(layers)}")
    for name, r in ratios.items():
        check_float(f"pruning ratio of {name}", r, 0.0, 1.0)
        if r >= 1.0:
            raise ValueError(f"pruning ratio of {name} must be < 1 (a layer keeps a weight), "
                             f"not {r}")
    return dict(ratios)


def admm_prune(model: nn.Module, data: TrainData, ratios: float | Mapping[str, float],
               cfg: AdmmConfig = AdmmConfig(), *, seed: int = 0) -> nn.Module:
    """ADMM unstructured pruning to ``ratios`` (fraction of zeros, per layer or for all),
    then hard pruning and masked fine-tuning. Modifies and returns ``model``."""
    ratios = _ratios(model, ratios)
    admm(model, data, {n: prune_projection(r) for n, r in ratios.items()}, cfg, seed=seed)
    hard_prune(model, ratios)
    train(model, data, epochs=cfg.finetune_epochs, lr=cfg.finetune_lr, seed=seed + 1,
          batch_size=cfg.batch_size, constrained=True)
    return model


def sparsity(model: nn.Module) -> float:
    """Fraction of zero weights over all weighted layers."""
    ws = [latent_weight(m).detach() for m in weighted_layers(model).values()]
    return float(sum(int((w == 0).sum()) for w in ws) / sum(w.numel() for w in ws))
