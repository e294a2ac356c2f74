"""Deterministic small-model training on CPU, shared by the compression passes and the zoo.

Every run starts from :func:`seed_everything` (fixed seeds) and trains under
:func:`deterministic` (deterministic algorithms, a fixed thread count; the caller's settings
are restored afterwards), so the same recipe gives the same weights on the same machine and
torch version. Under :func:`portable_numerics` (with :data:`PORTABLE_ENV` set before torch
first computes) the weights do not depend on the x86 CPU either. Constraints (pruning
masks, fragment signs) are re-applied after every optimizer step by
:func:`apply_constraints` (projected gradient descent).
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from chipforge.sim.fragments import expand_signs

__all__ = ["PORTABLE_ENV", "TrainData", "apply_constraints", "deterministic", "latent_weight",
           "portable_numerics", "portable_numerics_ready", "seed_everything", "torch_accuracy",
           "train", "training_monitor", "weighted_layers"]

TRAIN_THREADS = 1
"""Thread count for training: results are bit-reproducible only at a fixed count."""


PORTABLE_ENV = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE"}
"""Environment for training whose floats do not depend on the x86 CPU: torch's baseline
kernels (its AVX2 and AVX-512 kernels sum in other orders: on one machine, the FORMS
LeNet-5 pipeline ends 0.3-1.7 points apart between them) and MKL's conditional numerical
reproducibility (the same GEMM results on any x86-64 CPU). torch and MKL read these when
they first compute, so they must be set before (a fresh process: ``env=...``)."""


def portable_numerics_ready() -> bool:
    """Whether this process computes with :data:`PORTABLE_ENV` (torch's baseline kernels
    chosen; MKL_CBWR set in the environment)."""
    return (torch.backends.cpu.get_cpu_capability() == "DEFAULT"
            and os.environ.get("MKL_CBWR") == PORTABLE_ENV["MKL_CBWR"])


@contextlib.contextmanager
def portable_numerics():
    """Inside: training that gives the same weights on any x86-64 CPU (same torch version,
    :func:`deterministic`): oneDNN and NNPACK convolutions off (they pick kernels by CPU),
    so convolutions go through MKL's GEMM. Refuses a process not started with
    :data:`PORTABLE_ENV`. About 2x slower than the default kernels."""
    if not portable_numerics_ready():
        raise RuntimeError("portable numerics need a process started with "
                           + " ".join(f"{k}={v}" for k, v in PORTABLE_ENV.items())
                           + f" (this one: CPU capability "
                           f"{torch.backends.cpu.get_cpu_capability()}, MKL_CBWR="
                           f"{os.environ.get('MKL_CBWR')!r})")
    with torch.backends.mkldnn.flags(enabled=False), torch.backends.nnpack.flags(enabled=False):
        yield


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch's global generator (model initialization); return a seeded generator."""
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


@contextlib.contextmanager
def deterministic():
    """Deterministic algorithms and ``TRAIN_THREADS`` threads inside; restored on exit."""
    algorithms, threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(TRAIN_THREADS)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(algorithms)
        torch.set_num_threads(threads)


_MONITOR: contextvars.ContextVar = contextvars.ContextVar("chipforge_train_monitor",
                                                        default=None)


@contextlib.contextmanager
def training_monitor(callback: Callable[[nn.Module, int, float], None]):
    """Inside, every :func:`train` epoch calls ``callback(model, epoch, mean_loss)`` (the
    progress bars of ``chipforge compress``); the callback must not change the model."""
    token = _MONITOR.set(callback)
    try:
        yield
    finally:
        _MONITOR.reset(token)


class TrainData:
    """Train/test tensors of a :class:`chipforge.zoo.data.Dataset` (float32, int64)."""

    def __init__(self, dataset) -> None:
        self.x_train = torch.from_numpy(np.array(dataset.x_train))
        self.y_train = torch.from_numpy(np.array(dataset.y_train))
        self.x_test = torch.from_numpy(np.array(dataset.x_test))
        self.y_test = torch.from_numpy(np.array(dataset.y_test))
        self.dataset = dataset


def weighted_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Conv2d and Linear layers by module name (the graph node names of to_graph)."""
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)}


def latent_weight(layer: nn.Module) -> nn.Parameter:
    """The trained float weight (under a fake-quantization parametrization if there is one)."""
    if hasattr(layer, "parametrizations") and "weight" in layer.parametrizations:
        return layer.parametrizations.weight.original
    return layer.weight


@torch.no_grad()
def apply_constraints(model: nn.Module) -> None:
    """Project every weighted layer onto its constraints: ``prune_mask`` zeros, and the
    FORMS fragment signs (weights of the opposite sign become 0)."""
    for layer in weighted_layers(model).values():
        w = latent_weight(layer)
        mask = getattr(layer, "prune_mask", None)
        if mask is not None:
            w.mul_(mask)
        signs = getattr(layer, "fragment_signs", None)
        if signs is not None:
            w.mul_((w * _per_weight_signs(layer, w) >= 0).to(w.dtype))


def _per_weight_signs(layer: nn.Module, w: torch.Tensor) -> torch.Tensor:
    """Each weight's fragment sign of ``layer`` (``w``'s shape and dtype), expanded once per
    sign set: constrained training projects after every step, and the signs change only
    between phases (a new buffer or an in-place write, which bumps its version)."""
    signs = layer.fragment_signs
    key = (signs, signs._version, tuple(w.shape), w.dtype, int(layer.fragment_size),
           str(layer.fragment_order), int(getattr(layer, "groups", 1)))
    cached = layer.__dict__.get("_per_weight_signs")
    if cached is not None and cached[0][0] is signs and cached[0][1:] == key[1:]:
        return cached[1]
    per_weight = torch.from_numpy(expand_signs(tuple(w.shape), signs.numpy(), key[4], key[5],
                                               key[6])).to(w.dtype)
    layer.__dict__["_per_weight_signs"] = (key, per_weight)
    return per_weight


@torch.no_grad()
def torch_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    return float((model(x).argmax(1) == y).double().mean())


def train(model: nn.Module, data: TrainData, *, epochs: int, lr: float, seed: int,
          batch_size: int = 64, weight_decay: float = 0.0,
          extra_loss: Callable[[], torch.Tensor] | None = None,
          extra_grad: Callable[[], float] | None = None,
          on_epoch_end: Callable[[int], None] | None = None,
          constrained: bool = False) -> nn.Module:
    """Adam on cross-entropy (+ ``extra_loss()``), shuffled minibatches from ``seed``.

    ``extra_grad()``, called after each backward pass, adds the gradient of a penalty the
    caller differentiates itself (cheaper than autograd for a quadratic penalty: ADMM)
    straight to the parameters' ``.grad`` and returns the penalty's value (for the
    reported loss). With ``constrained`` the layer constraints are re-applied after every
    step.
    """
    with deterministic():
        _train(model, data, epochs, lr, seed, batch_size, weight_decay, extra_loss,
               extra_grad, on_epoch_end, constrained)
    model.eval()
    return model



def minibatches(n: int, batch: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of each minibatch over ``n`` samples; a last batch of a single
    sample joins the one before it, because batch norm cannot train on one sample (torch
    raises "Expected more than 1 value per channel")."""
    bounds = [*range(0, n, batch), n]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] == 1:
        del bounds[-2]
    return list(zip(bounds[:-1], bounds[1:], strict=True))

def _train(model, data, epochs, lr, seed, batch_size, weight_decay, extra_loss, extra_grad,
           on_epoch_end, constrained) -> None:
    gen = seed_everything(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    n = len(data.x_train)
    monitor = _MONITOR.get()
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(n, generator=gen)
        total = 0.0
        for lo, hi in minibatches(n, batch_size):
            idx = perm[lo:hi]
            loss = loss_fn(model(data.x_train[idx]), data.y_train[idx])
            if extra_loss is not None:
                loss = loss + extra_loss()
            opt.zero_grad()
            loss.backward()
            penalty = 0.0 if extra_grad is None else extra_grad()
            opt.step()
            if constrained:
                apply_constraints(model)
            total += (float(loss.detach()) + penalty) * len(idx)
        if on_epoch_end is not None:
            on_epoch_end(epoch)
        if monitor is not None:
            monitor(model, epoch, total / n)
