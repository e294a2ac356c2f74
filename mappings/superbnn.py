"""Randomized-BNN training for AQFP stochastic arrays (SupeRBNN-style), in PyTorch.

SupeRBNN (Li et al., MICRO'23) trains "randomized BNNs" with "batch normalization
matching" and a "weight rectified clamp"; only its abstract is available, so this module
is our reconstruction (``reference/aqfp-and-pim-adc.md`` A.3), built to match
:mod:`chipforge.sim.aqfp` exactly:

- **Randomized neurons.** A layer's fan-in is split over ``K = ceil(fan_in / N)``
  crossbars. Crossbar ``k`` of output ``o`` switches to 1 with probability
  ``p_k = Phi((MAC_k - theta_o * rows_k / fan_in) / noise_mac)`` where ``noise_mac =
  sigma / (alpha(N) I_unit)`` comes from the hardware config. The forward pass samples
  the SC count (``K`` binomials of ``L`` trials) and thresholds it to a sign; the
  backward pass differentiates the expectation ``mean_k (2 p_k - 1) = mean_k erf(z_k /
  sqrt 2)`` (a straight-through estimator whose surrogate is the device's own law).
- **Batch-norm matching** (our interpretation). Hardware can only add an offset current
  per column: it cannot rescale the MAC, whose scale (and hence the noise in MAC units)
  is fixed by ``alpha(N) I_unit``. So the batch norm is reduced to what the array
  implements: a per-output threshold ``theta = mean + t * std`` from the batch statistics
  (running statistics at inference) and a learned normalized offset ``t``; the noise acts
  on the raw MAC, exactly as in the array. It exports as ``BATCHNORM(gamma=1,
  beta=-t)`` + ``SIGN``, which :func:`chipforge.sim.aqfp.binary_layers` folds back into
  the same threshold.
- **Weight clamp** (our interpretation of "weight rectified clamp"). Latent real weights
  are clamped to ``[-1, 1]`` after every step (BinaryConnect), so the straight-through
  gradient of ``sign`` is the identity inside the clamp and a weight never drifts out of
  reach of a sign flip.

The input encoder binarizes pixels at ``input_threshold`` on the host. The output layer is
also on the array: class scores are the normalized counts ``2 count / (K L) - 1`` (with a
learned bias as offset current); training scales them by a learned temperature.
"""

from __future__ import annotations

import dataclasses
import math
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from chipforge.config import ConfigBase, check_float, check_int
from chipforge.sim.aqfp import SUPERBNN, AqfpConfig
from chipforge.sim.graph import Graph, Node, Op, load_graph, save_graph

__all__ = [
    "BNN_DIGITS",
    "RbnnTrainConfig",
    "bnn_digits_path",
    "build_bnn_digits",
    "load_bnn_digits",
    "mean_by",
    "run_trials",
    "superbnn_trial",
    "train_randomized_bnn",
]


@dataclasses.dataclass(frozen=True, kw_only=True)
class RbnnTrainConfig(ConfigBase):
    """Recipe of a randomized BNN (an MLP of binary layers) on the digits split."""

    hidden: tuple[int, ...] = (128, 128)
    """Widths of the hidden binary layers."""
    epochs: int = 40
    """Passes over the training split."""
    batch_size: int = 128
    lr: float = 0.01
    """Adam learning rate (cosine-annealed to 0)."""
    input_threshold: float = 0.5
    """Pixels (in [0, 1]) at or above it encode +1, below it -1."""
    randomized: bool = True
    """Model the buffers' randomness (Bernoulli forward, expectation backward); False
    trains a plain BNN (hard sign forward, same surrogate backward)."""
    train_bitstream_length: int = 0
    """L used in training; 0 means the hardware's ``bitstream_length``."""
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(self.hidden))
        if not self.hidden:
            raise ValueError("hidden must list at least one layer width, not ()")
        for i, width in enumerate(self.hidden):
            check_int(f"hidden[{i}]", width, 1, 1 << 16)
        check_int("epochs", self.epochs, 1, 10_000)
        check_int("batch_size", self.batch_size, 1, 1 << 16)
        check_float("lr", self.lr, 0.0, 10.0, lo_open=True)
        check_float("input_threshold", self.input_threshold, 0.0, 1.0)
        check_int("train_bitstream_length", self.train_bitstream_length, 0, 1 << 16)
        check_int("seed", self.seed, 0, 2**32 - 1)
        if not isinstance(self.randomized, bool):
            raise ValueError(f"randomized must be a bool, not {self.randomized!r}")


# The bundled `bnn-digits` model: 64 -> 128 -> 128 -> 10, trained for the SUPERBNN array.
BNN_DIGITS = RbnnTrainConfig()


def _modules():
    """Build the torch modules lazily (torch is imported only when training)."""
    import torch
    from torch import nn

    def _signs(v, at: float = 0.0):
        """+1 where ``v >= at``, else -1 (as ``torch.where(v >= at, 1.0, -1.0)``, which
        costs 4x more on the CPU: measured 0.36 vs 0.09 ms on a 128x784 weight)."""
        return (v >= at).to(v.dtype) * 2 - 1

    class StochasticBinaryLinear(nn.Module):
        def __init__(self, fan_in: int, fan_out: int, hw: AqfpConfig, *, output: bool,
                     randomized: bool, length: int):
            super().__init__()
            self.fan_in, self.fan_out, self.output = fan_in, fan_out, output
            self.n = hw.crossbar_size
            self.k = -(-fan_in // self.n)
            self.pad = self.k * self.n - fan_in
            rows = torch.full((self.k,), float(self.n))
            rows[-1] = self.n - self.pad
            self.register_buffer("share", rows / fan_in)
            self.noise = hw.noise_mac
            self.randomized, self.length = randomized, length
            self.weight = nn.Parameter(torch.empty(fan_out, fan_in).uniform_(-1, 1))
            if output:
                self.bias = nn.Parameter(torch.zeros(fan_out))
                self.scale = nn.Parameter(torch.tensor(4.0))
            else:
                self.offset = nn.Parameter(torch.zeros(fan_out))   # t: theta = mean + t*std
                self.register_buffer("running_mean", torch.zeros(fan_out))
                self.register_buffer("running_var", torch.ones(fan_out))
                self.momentum, self.eps = 0.1, 1e-5

        def binary_weight(self):
            w = self.weight
            return w + (_signs(w) - w).detach()

        def threshold(self, mac):
            if self.output:
                return -self.bias
            if self.training:
                mean, var = mac.mean(0), mac.var(0, unbiased=False)
                with torch.no_grad():
                    self.running_mean.lerp_(mean, self.momentum)
                    self.running_var.lerp_(mac.var(0, unbiased=True), self.momentum)
            else:
                mean, var = self.running_mean, self.running_var
            return mean + self.offset * torch.sqrt(var + self.eps)

        def forward(self, x):
            wb = self.binary_weight()
            xs = nn.functional.pad(x, (0, self.pad)).reshape(x.shape[0], self.k, self.n)
            ws = nn.functional.pad(wb, (0, self.pad)).reshape(self.fan_out, self.k, self.n)
            partial = torch.einsum("bkn,okn->bok", xs, ws)
            theta = self.threshold(partial.sum(-1))
            z = (partial - theta[None, :, None] * self.share) / self.noise
            erf = torch.erf(z / math.sqrt(2.0))
            expected = erf.mean(-1)                                  # E[2 b - 1]
            with torch.no_grad():
                if self.randomized:
                    p = 0.5 * (1.0 + erf.detach())
                    # The count of K binomials of L trials, drawn from its Gaussian
                    # approximation (torch.binomial is ~20x slower); the simulator draws
                    # exact binomials.
                    mean = self.length * p.sum(-1)
                    std = torch.sqrt(self.length * (p * (1 - p)).sum(-1))
                    counts = (mean + std * torch.randn_like(mean)).round().clamp(
                        0, self.k * self.length)
                    sampled = 2.0 * counts / (self.k * self.length) - 1.0
                elif self.output:
                    sampled = expected
                else:
                    sampled = partial.sum(-1) - theta                  # hard sign below
                if not self.output:
                    sampled = _signs(sampled)
            y = expected + (sampled - expected).detach()
            return y * self.scale if self.output else y

    class RandomizedBnn(nn.Module):
        def __init__(self, sizes, hw, randomized, length, threshold):
            super().__init__()
            self.threshold = threshold
            self.layers = nn.ModuleList(
                StochasticBinaryLinear(a, b, hw, output=i == len(sizes) - 2,
                                       randomized=randomized, length=length)
                for i, (a, b) in enumerate(zip(sizes, sizes[1:], strict=False)))

        def forward(self, x):
            h = _signs(x.flatten(1), self.threshold)
            for layer in self.layers:
                h = layer(h)
            return h

    return RandomizedBnn


def train_randomized_bnn(data, recipe: RbnnTrainConfig = BNN_DIGITS,
                         hw: AqfpConfig = SUPERBNN, *, name: str = "bnn-digits",
                         verbose: bool = False) -> Graph:
    """Train a randomized BNN for the array ``hw`` on ``data`` (a digits ``Dataset``) and
    return it as a graph (deterministic ops: LINEAR, BATCHNORM, SIGN). Same seed, same
    weights (CPU, single thread)."""
    import torch

    if not isinstance(recipe, RbnnTrainConfig):
        raise ValueError(f"recipe must be a RbnnTrainConfig, not {type(recipe).__name__}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)            # tiny layers: threads only add contention
    try:
        return _train(data, recipe, hw, name, verbose)
    finally:
        torch.set_num_threads(threads)


def _train(data, recipe: RbnnTrainConfig, hw: AqfpConfig, name: str, verbose: bool) -> Graph:
    import torch

    torch.manual_seed(recipe.seed)
    length = recipe.train_bitstream_length or hw.bitstream_length
    x = torch.tensor(np.asarray(data.x_train), dtype=torch.float32)
    y = torch.tensor(np.asarray(data.y_train))
    sizes = [int(np.prod(data.input_shape)), *recipe.hidden, data.num_classes]
    model = _modules()(sizes, hw, recipe.randomized, length, recipe.input_threshold)
    opt = torch.optim.Adam(model.parameters(), lr=recipe.lr)
    steps = recipe.epochs * -(-len(x) // recipe.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    gen = torch.Generator().manual_seed(recipe.seed)
    start = time.perf_counter()
    from chipforge.mappings.train import minibatches

    for epoch in range(recipe.epochs):
        model.train()
        order = torch.randperm(len(x), generator=gen)
        total = 0.0
        for lo, hi in minibatches(len(x), recipe.batch_size):
            idx = order[lo:hi]
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():                      # weight clamp
                for layer in model.layers:
                    layer.weight.clamp_(-1.0, 1.0)
            total += float(loss.detach()) * len(idx)
        if verbose:
            print(f"epoch {epoch + 1}: loss {total / len(x):.4f}")
    graph = _export(model, data, recipe, hw, name)
    graph.meta["train_seconds"] = round(time.perf_counter() - start, 2)
    return graph


def _export(model, data, recipe: RbnnTrainConfig, hw: AqfpConfig, name: str) -> Graph:
    """The trained network as deterministic graph ops (see the module docstring)."""
    nodes = [
        Node(Op.FLATTEN, "flatten", ("input",)),
        # x - input_threshold >= 0 -> +1: a batch norm with unit scale does the shift.
        Node(Op.BATCHNORM, "encode", ("flatten",), {"eps": 0.0},
             {"gamma": np.ones(1), "beta": np.zeros(1),
              "mean": np.full(1, recipe.input_threshold), "var": np.ones(1)}),
        Node(Op.SIGN, "encode_sign", ("encode",)),
    ]
    prev = "encode_sign"
    # +-1 weights and inputs: 2-bit signed integers hold them, scale 1, so the integer
    # (accelerator) path of the executor reproduces the float one exactly.
    binary_attrs = {"binary": True, "weight_bits": 2, "weight_scale": 1.0, "act_bits": 2,
                    "act_scale": 1.0, "act_signed": True}
    for i, layer in enumerate(model.layers):
        w = np.where(layer.weight.detach().numpy() >= 0, 1.0, -1.0)
        fc = f"fc{i + 1}"
        if layer.output:
            nodes.append(Node(Op.LINEAR, fc, (prev,), dict(binary_attrs),
                              {"weight": w, "bias": layer.bias.detach().numpy().astype(
                                  np.float64)}))
            break
        nodes += [
            Node(Op.LINEAR, fc, (prev,), dict(binary_attrs), {"weight": w}),
            Node(Op.BATCHNORM, f"bn{i + 1}", (fc,), {"eps": layer.eps},
                 {"gamma": np.ones(layer.fan_out),
                  "beta": -layer.offset.detach().numpy().astype(np.float64),
                  "mean": layer.running_mean.numpy().astype(np.float64),
                  "var": layer.running_var.numpy().astype(np.float64)}),
            Node(Op.SIGN, f"sign{i + 1}", (f"bn{i + 1}",)),
        ]
        prev = f"sign{i + 1}"
    from chipforge.sim.executor import run_graph

    graph = Graph(name, data.input_shape, nodes, meta={
        "dataset": "digits (chipforge.zoo.data.digits, 8x8, seed-0 split)",
        "recipe": recipe.to_dict(),
        "trained_for": hw.to_dict() | {"noise_mac": hw.noise_mac},
        "paper": "SupeRBNN (Li et al., MICRO'23): randomized BNN; our reconstruction",
    })
    pred = run_graph(graph, np.asarray(data.x_test), quantized=False).argmax(axis=1)
    graph.meta["test_accuracy_deterministic"] = float((pred == data.y_test).mean())
    return graph


def bnn_digits_path() -> Path:
    """Where the bundled ``bnn-digits`` model lives (package data of chipforge.zoo)."""
    import chipforge.zoo

    return Path(chipforge.zoo.__file__).parent / "bnn-digits.npz"


def build_bnn_digits(path: str | Path | None = None, **kwargs: Any) -> Path:
    """Retrain the bundled ``bnn-digits`` model from its recipe and save it."""
    from chipforge.zoo.data import digits

    graph = train_randomized_bnn(digits(), BNN_DIGITS, SUPERBNN, **kwargs)
    return save_graph(graph, path or bnn_digits_path())


def load_bnn_digits() -> Graph:
    """The bundled ``bnn-digits`` graph (also ``chipforge.zoo.load("bnn-digits")``)."""
    return load_graph(bnn_digits_path())


@lru_cache(maxsize=1)
def _bundled():
    from chipforge.zoo.data import digits

    return load_bnn_digits(), digits()


def superbnn_trial(point: dict[str, Any], seed: int) -> dict[str, Any]:
    """One sweep trial, a pure function of (point, seed): the bundled ``bnn-digits`` on an
    array ``SUPERBNN`` with the fields in ``point`` changed (e.g. ``{"sigma_ua": 2.0}``,
    ``{"crossbar_size": 64}``, ``{"bitstream_length": 16}``; enums by value)."""
    from chipforge.sim.aqfp import run_superbnn, with_changes

    graph, data = _bundled()
    cfg = with_changes(SUPERBNN, **point)
    result = run_superbnn(graph, data, cfg, seed)
    return {**point, "seed": seed, "accuracy": result.accuracy,
            "accuracy_ideal": result.accuracy_ideal, "noise_mac": cfg.noise_mac,
            "energy_chip_j": result.energy_chip_j, "energy_wall_j": result.energy_wall_j,
            "latency_s": result.latency_s, "jj_total": result.jj_total}


def run_trials(points: list[dict[str, Any]], seeds: range | list[int]) -> list[dict[str, Any]]:
    """Every (point, seed) trial, in order (a plain loop; the sweep engine can run
    :func:`superbnn_trial` on any executor)."""
    return [superbnn_trial(point, seed) for point in points for seed in seeds]


def mean_by(rows: list[dict[str, Any]], key: str, value: str = "accuracy"
            ) -> list[tuple[Any, float, float]]:
    """(key value, mean, standard deviation over seeds) of ``value``, in first-seen order."""
    groups: dict[Any, list[float]] = {}
    for row in rows:
        groups.setdefault(row[key], []).append(row[value])
    return [(k, float(np.mean(v)), float(np.std(v))) for k, v in groups.items()]
