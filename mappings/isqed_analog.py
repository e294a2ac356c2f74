"""ISQED'21 in the paper's own setting: one analog device per polarity, continuous conductance.

chipforge's ReRAM placement (``mappings.placement``) slices 8-bit weights into 2-bit cells;
there the differential mapping's gain is bounded by the stuck-off : stuck-on split (1 : 5.2),
because it is the two-column mapping with the two fault kinds exchanged. ISQED'21 (papers.md
§2.2) models neither slicing nor ADCs: each weight w in [-1, 1] is two continuous
conductances in [0, 1] (1 = high),

- two-column: ``g+ = max(w, 0)``, ``g- = max(-w, 0)`` (a zero weight: (0, 0));
- differential: ``g_a = 1`` (w >= 0) or ``1 - |w|``; ``g_b = 1 - w`` (w > 0) or ``1``
  (a zero weight: (1, 1), so a stuck-on fault on it does nothing);

and each cell is independently stuck-off (g = 0) or stuck-on (g = 1) with the total
failure rate split 1 : 5.2. The weight read back is ``g+ - g-`` (``g_a - g_b``).

The model here is a ResNet-style CNN (chipforge's ResNet-8 for digits, the bundled 4-bit
digital model of :mod:`chipforge.zoo.pim`), its weights normalized per output channel to
[-1, 1], unstructured magnitude pruning (ISQED pairs pruning with the mapping; 0.6 is its
best ratio on CIFAR-10) with a short masked fine-tuning, and the accuracy drop per failure
rate averaged over chips. :func:`tolerance_ratio_analog` reads off how many times the
failure rate the differential mapping tolerates for the same mean drop.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["STUCK_ON_PER_OFF", "analog_fault_sweep", "faulty_weights", "pruned_resnet",
           "tolerance_ratio_analog"]

STUCK_ON_PER_OFF = 5.2
"""ISQED'21 (from Chen et al., IEEE TC 2015): stuck-off : stuck-on = 1 : 5.2."""


@contextlib.contextmanager
def _one_thread():
    """Small CPU models: one torch thread (faster than oversubscribed threads on 2 cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def faulty_weights(w: np.ndarray, mapping: str, rate: float, rng: np.random.Generator
                   ) -> np.ndarray:
    """Weights in [-1, 1] read back from one faulty chip (continuous conductances)."""
    if mapping == "two_column":
        gp, gn = np.maximum(w, 0.0), np.maximum(-w, 0.0)
    elif mapping == "differential":
        gp = np.where(w >= 0, 1.0, 1.0 - np.abs(w))
        gn = np.where(w > 0, 1.0 - w, 1.0)
    else:
        raise ValueError(f"mapping must be two_column or differential, not {mapping!r}")
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"failure rate must be in [0, 1], not {rate!r}")
    p_off = rate / (1.0 + STUCK_ON_PER_OFF)
    out = []
    for g in (gp, gn):
        u = rng.random(g.shape)
        out.append(np.where(u < p_off, 0.0, np.where(u < rate, 1.0, g)))
    return out[0] - out[1]


def _layers(model) -> list:
    from chipforge.mappings.pim_qat import _QuantPimMixin
    return [m for m in model.modules() if isinstance(m, _QuantPimMixin)]


def _normalized(layer) -> tuple[np.ndarray, torch.Tensor]:
    """(w in [-1, 1] per output channel, per-channel scale) of a layer's quantized weight."""
    with torch.no_grad():
        w_q, scale = layer.quantize_weight()
        qmax = float((1 << (layer.weight_bits - 1)) - 1)
        return np.clip(w_q.numpy() / qmax, -1.0, 1.0), scale * qmax


def pruned_resnet(ratio: float = 0.6, *, epochs: int = 2, seed: int = 0, train_images: int = 0):
    """The bundled digital ResNet-8 (digits), magnitude-pruned to ``ratio`` zeros per layer
    and fine-tuned ``epochs`` epochs with the mask held (SGD, lr 0.01)."""
    from chipforge.mappings.pim_qat import load_pim_model
    from chipforge.zoo.pim import load_arrays

    with _one_thread():
        return _pruned_resnet(load_pim_model(load_arrays(), None, False), ratio, epochs, seed,
                              train_images)


def _pruned_resnet(model, ratio, epochs, seed, train_images):
    import torch.nn.functional as F

    from chipforge.zoo.data import digits

    masks = {}
    with torch.no_grad():
        for layer in _layers(model):
            w = layer.weight
            k = int(round(ratio * w.numel()))
            if k:
                thresh = w.abs().reshape(-1).kthvalue(k).values
                masks[layer] = (w.abs() > thresh).to(w.dtype)
                w.mul_(masks[layer])
    d = digits()
    x, y = torch.from_numpy(np.array(d.x_train)), torch.from_numpy(np.array(d.y_train))
    if train_images:
        x, y = x[:train_images], y[:train_images]
    torch.manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), 64):
            idx = perm[i:i + 64]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                for layer, mask in masks.items():
                    layer.weight.mul_(mask)
    model.eval()
    return model


def _accuracy(model, x, y) -> float:
    with torch.no_grad():
        return float((model(torch.from_numpy(np.array(x))).argmax(1).numpy() == y).mean())


def analog_fault_sweep(model, rates: dict[str, Sequence[float]], *, trials: int = 8,
                       images: int | None = None, seed: int = 0) -> list[dict]:
    """Mean accuracy drop per (mapping, failure rate) over ``trials`` chips.

    Rows have the keys of :func:`chipforge.mappings.sweeps.faults.summarize` that
    :func:`tolerance_ratio_analog` needs (model, mapping, fault_rate, drop_mean)."""
    with _one_thread():
        return _sweep(model, rates, trials, images, seed)


def _sweep(model, rates, trials, images, seed) -> list[dict]:
    from chipforge.zoo.data import digits

    d = digits()
    x, y = d.x_test[:images], d.y_test[:images]
    layers = _layers(model)
    clean = {layer: _normalized(layer) for layer in layers}
    base = _accuracy(model, x, y)
    rows = []
    for mapping, rs in rates.items():
        for rate in rs:
            drops = []
            for trial in range(trials):
                rng = np.random.default_rng([seed, trial, int(rate * 1e9)])
                chip = copy.deepcopy(model)
                for orig, layer in zip(layers, _layers(chip), strict=True):
                    w, scale = clean[orig]
                    w_f = torch.from_numpy(faulty_weights(w, mapping, rate, rng)).float()
                    fixed = (w_f * float((1 << (orig.weight_bits - 1)) - 1),
                             scale / float((1 << (orig.weight_bits - 1)) - 1))
                    layer.quantize_weight = (lambda f=fixed: f)
                drops.append(base - _accuracy(chip, x, y))
            rows.append({"model": "resnet8-analog", "mapping": mapping,
                         "fault_rate": float(rate), "drop_mean": float(np.mean(drops)),
                         "drop_std": float(np.std(drops)), "trials": trials,
                         "clean_accuracy": base})
    return rows


def tolerance_ratio_analog(rows: list[dict], target_drop: float = 0.05) -> float:
    """Failure rate tolerated by differential / by two-column at ``target_drop``."""
    from chipforge.mappings.sweeps.faults import tolerance_ratio
    return tolerance_ratio(rows, "resnet8-analog", target_drop)
