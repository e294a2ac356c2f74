"""8-bit symmetric fixed-point quantization: weights (QAT with a straight-through estimator)
and activations (calibration), following :mod:`chipforge.sim.executor`'s conventions.

Weights: ``w_q = clip(round(w / s), -(2**(b-1) - 1), 2**(b-1) - 1)`` with
``s = max|w| / (2**(b-1) - 1)`` per tensor or per output channel (symmetric, so zero and
the sign of every weight survive: pruning masks and FORMS polarization are preserved).
Activations: the input of every weighted layer is quantized to ``act_bits`` with one scale
per layer, ``act_scale = max|x| / (2**act_bits - 1)`` (unsigned, when the calibration
inputs are never negative, e.g. after ReLU) or ``/ (2**(act_bits-1) - 1)`` (signed).

The quantized model is :func:`chipforge.sim.executor.run_graph` with the default exact
integer matmul on the graph that :func:`chipforge.mappings.torch_export.to_graph` exports;
the torch fake-quantized forward computes the same values in float32 (agreement is
tested).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from chipforge.config import ConfigBase, check_float, check_int
from chipforge.mappings.train import weighted_layers
from chipforge.sim.executor import run_graph
from chipforge.sim.graph import Graph

__all__ = ["QuantizeConfig", "calibrate_activations", "prepare_qat", "quantize_graph",
           "quantize_weight_tensor"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class QuantizeConfig(ConfigBase):
    weight_bits: int = 8
    """Signed symmetric weight bits (8: FORMS's 8-bit weights = four 2-bit cells)."""
    per_channel: bool = True
    """One weight scale per output channel (else one per tensor)."""
    act_bits: int = 8
    """Bits of each weighted layer's input activations."""
    calib_percentile: float = 100.0
    """Percentile of |x| over the calibration set that maps to the largest code (100: max)."""
    qat_epochs: int = 6
    """Quantization-aware fine-tuning epochs (0: post-training quantization only)."""
    qat_lr: float = 3e-4
    """Adam learning rate of the fine-tuning."""

    def __post_init__(self) -> None:
        check_int("weight_bits", self.weight_bits, 2, 16)
        check_int("act_bits", self.act_bits, 2, 16)
        check_float("calib_percentile", self.calib_percentile, 50.0, 100.0)
        check_int("qat_epochs", self.qat_epochs, 0)
        check_float("qat_lr", self.qat_lr, 0.0, lo_open=True)
        if not isinstance(self.per_channel, bool):
            raise ValueError(f"per_channel must be a bool, not {self.per_channel!r}")


def quantize_weight_tensor(w: torch.Tensor, bits: int,
                           per_channel: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(integer weights, scale): scale has shape (out,) per channel, else (1,).
    An all-zero channel gets scale 1 (its integers are all 0)."""
    qmax = (1 << (bits - 1)) - 1
    flat = w.detach().reshape(w.shape[0], -1).abs()
    amax = flat.amax(dim=1) if per_channel else flat.amax().reshape(1)
    scale = torch.where(amax > 0, amax / qmax, torch.ones_like(amax))
    shape = (-1,) + (1,) * (w.ndim - 1)
    q = torch.clamp(torch.round(w / scale.reshape(shape)), -qmax, qmax)
    return q, scale


class FakeQuantWeight(nn.Module):
    """Weight parametrization: forward quantized, gradient straight through."""

    def __init__(self, bits: int, per_channel: bool) -> None:
        super().__init__()
        self.bits, self.per_channel = bits, per_channel

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        q, scale = quantize_weight_tensor(w, self.bits, self.per_channel)
        wq = q * scale.reshape((-1,) + (1,) * (w.ndim - 1))
        return w + (wq - w).detach()


def _act_fake_quant(layer: nn.Module, args: tuple) -> tuple:
    x = args[0]
    if getattr(layer, "act_scale", None) is None:
        return args
    bits, s = layer.act_bits, layer.act_scale
    lo, hi = ((-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if layer.act_signed
              else (0, (1 << bits) - 1))
    xq = torch.clamp(torch.round(x / s), lo, hi) * s
    return (x + (xq - x).detach(),) + tuple(args[1:])


@torch.no_grad()
def calibrate_activations(model: nn.Module, x_calib: torch.Tensor,
                          cfg: QuantizeConfig) -> dict[str, tuple[float, bool]]:
    """Set ``act_bits``, ``act_scale``, ``act_signed`` on every weighted layer from the
    float inputs it sees on ``x_calib``; returns {layer: (scale, signed)}."""
    seen: dict[str, torch.Tensor] = {}
    hooks = [layer.register_forward_pre_hook(
        lambda mod, args, name=name: seen.__setitem__(name, args[0].detach()))
        for name, layer in weighted_layers(model).items()]
    saved = {n: getattr(m, "act_scale", None) for n, m in weighted_layers(model).items()}
    for m in weighted_layers(model).values():
        m.act_scale = None                        # calibrate on the float activations
    model.eval()
    try:
        model(x_calib)
    finally:
        for h in hooks:
            h.remove()
    out = {}
    for name, layer in weighted_layers(model).items():
        if name not in seen:
            layer.act_scale = saved[name]
            continue
        x = seen[name].double()
        signed = bool((x < 0).any())
        amax = float(np.percentile(x.abs().numpy(), cfg.calib_percentile))
        levels = (1 << (cfg.act_bits - 1)) - 1 if signed else (1 << cfg.act_bits) - 1
        layer.act_bits = cfg.act_bits
        layer.act_scale = (amax / levels) if amax > 0 else 1.0
        layer.act_signed = signed
        out[name] = (layer.act_scale, signed)
    return out


def prepare_qat(model: nn.Module, x_calib: torch.Tensor, cfg: QuantizeConfig) -> nn.Module:
    """Install weight fake quantization (parametrization) and activation fake quantization
    (pre-hook) on every weighted layer, after calibrating the activation scales."""
    calibrate_activations(model, x_calib, cfg)
    for layer in weighted_layers(model).values():
        layer.weight_bits = cfg.weight_bits
        layer.weight_per_channel = cfg.per_channel
        if not parametrize.is_parametrized(layer, "weight"):
            parametrize.register_parametrization(
                layer, "weight", FakeQuantWeight(cfg.weight_bits, cfg.per_channel))
        if not getattr(layer, "_chipforge_act_hook", False):
            layer.register_forward_pre_hook(_act_fake_quant)
            layer._chipforge_act_hook = True
    return model


def quantize_graph(graph: Graph, x_calib: np.ndarray, cfg: QuantizeConfig = QuantizeConfig()
                   ) -> Graph:
    """Post-training quantization of a float graph (no fine-tuning): weights to
    ``weight_bits`` and activation scales calibrated on ``x_calib`` with the float executor.

    Batch-norm nodes must be folded first. Returns a new graph.
    """
    out = graph.copy()
    values = run_graph(graph, x_calib, quantized=False, return_all=True)
    for node in out.weighted_nodes():
        x = values[node.inputs[0]]
        signed = bool((x < 0).any())
        amax = float(np.percentile(np.abs(x), cfg.calib_percentile))
        levels = (1 << (cfg.act_bits - 1)) - 1 if signed else (1 << cfg.act_bits) - 1
        w = torch.from_numpy(node.params["weight"].astype(np.float64))
        q, scale = quantize_weight_tensor(w, cfg.weight_bits, cfg.per_channel)
        scale_np = scale.numpy()
        node.params["weight"] = q.numpy() * scale_np.reshape((-1,) + (1,) * (w.ndim - 1))
        node.attrs.update(weight_bits=cfg.weight_bits,
                          weight_scale=([float(s) for s in scale_np] if cfg.per_channel
                                        else float(scale_np[0])),
                          act_bits=cfg.act_bits,
                          act_scale=(amax / levels) if amax > 0 else 1.0,
                          act_signed=signed)
    return out
