"""PIM-aware quantization training (torch): a small ResNet whose convolutions and linear
layer can run through the PIM macro model of :mod:`chipforge.sim.pim`.

What PIM-QAT (Jin et al., 2022) publishes and what is ours: the abstract names a
straight-through estimator through the PIM quantizer, rescaling in the forward and
backward passes, BN calibration and adjusted-precision training; its formulas are not
available (``/shared/reference/aqfp-and-pim-adc.md`` B). Our choices, each documented where
it is implemented:

- **STE through the PIM quantizer**: the forward pass returns the PIM result, the backward
  pass the gradient of the exact integer product (``y = xw + (y_pim - xw).detach()``).
- **PIM range calibration** (:func:`calibrate_ranges`, used by ``chipforge compress
  pim-qat``): the ADC's LSB is fixed by the array, so each layer's activation and weight
  clips are searched for the smallest PIM output error (noisy ADC included) before training.
- **Forward/backward rescaling**: coarse ADCs round small partial sums to zero and shrink
  the layer output; a gain ``alpha`` per layer (the bundled models) or per output channel
  (``compress pim-qat``) (least-squares fit of the PIM output to the
  exact product, tracked as a running average during training, frozen in evaluation)
  multiplies the PIM output in the forward pass and, through the STE, the gradient in the
  backward pass. It keeps the activation and gradient magnitudes of the digital model, so
  batch-norm statistics and the learning rate stay valid. In hardware it is one digital
  multiply per layer or channel, folded into the requantization scale.
- **Noise-aware training**: the forward pass draws the ADC's thermal noise at every
  conversion, with the same per-ADC gain/offset draws, calibration and S-curve as the
  simulator (the twin below; tested against it exactly without noise, in distribution
  with it).
- **BN calibration**: re-estimate batch-norm running statistics with the PIM forward
  pass on training data (no gradient), as "BN adaptation" does (Bhattacharjee et al.).
- **Adjusted-precision training**: train with an ADC of ``train_bits`` and deploy at
  another resolution (typically one bit less, so that noise-induced LSB loss is seen in
  training).

The PIM forward pass here equals :func:`chipforge.sim.pim.pim_matmul` (tested), which is
the reference.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from chipforge.sim.adc import AdcConfig, AdcQuantizer, FullScale, Inl
from chipforge.sim.pim import Decomposition, PimConfig

__all__ = ["PIM_SWEEP_CFG", "PIM_TRAIN_BITS", "RANGE_ACT_CLIPS", "RANGE_WEIGHT_CLIPS", "PimMode",
           "QuantPimConv2d", "QuantPimLinear", "ResNetDigits", "TorchPimAdc", "adc_variant",
           "bn_calibrate", "calibrate_ranges", "evaluate", "load_pim_model", "set_pim",
           "torch_pim_matmul", "train", "train_pim_models"]


class TorchPimAdc:
    """Torch twin of :class:`chipforge.sim.adc.PimAdc` (same formulas, same seeds)."""

    def __init__(self, cfg: AdcConfig, *, hardware_range: float, bipolar: bool, seed: int):
        from chipforge.sim.adc import PimAdc

        ref = PimAdc(cfg, hardware_range=hardware_range, bipolar=bipolar, seed=seed)
        self.cfg, self.ref = cfg, ref
        self.gain = torch.tensor(ref.gain, dtype=torch.float32)
        self.offset = torch.tensor(ref.offset, dtype=torch.float32)
        self.generator = torch.Generator().manual_seed(seed)

    def convert(self, s: torch.Tensor, adc_index: torch.Tensor) -> torch.Tensor:
        """The ADC's output values of the analog sums ``s`` (no gradient). One working copy
        of ``s`` updated in place (``s`` itself is not changed): the same operations in the
        same order as the formulas, without a fresh tensor of the size of ``s`` per step
        (measured: a third less time per PIM-aware epoch, whose sums are C x T x S times the
        layer's output)."""
        cfg, ref = self.cfg, self.ref
        k = adc_index % cfg.num_adcs
        gain, offset = self.gain[k], self.offset[k] * ref.lsb
        s = s.clone()
        if cfg.gain_error_std or cfg.offset_error_lsb:
            s.mul_(gain).add_(offset)
        if cfg.thermal_noise_lsb:
            noise = torch.randn(s.shape, generator=self.generator)
            s.add_(noise.mul_(cfg.thermal_noise_lsb * ref.lsb))
        if cfg.inl is Inl.S_CURVE and cfg.inl_nonlinearity:
            n, fs = cfg.inl_nonlinearity, ref.full_scale
            if ref.bipolar:
                c = s.div_(fs)                                 # fs c (1 + n) / (1 + n |c|)
                denominator = c.abs().mul_(n).add_(1)
                s = c.mul_(fs).mul_(1 + n).div_(denominator)
            else:
                c = s.mul_(2).div_(fs).sub_(1)         # fs (c (1 + n) / (1 + n |c|) + 1) / 2
                denominator = c.abs().mul_(n).add_(1)
                s = c.mul_(1 + n).div_(denominator).add_(1).mul_(fs).div_(2)
        if cfg.quantizer is AdcQuantizer.MID_TREAD:
            code = s.div_(ref.lsb).round_().clamp_(ref.code_min, ref.code_max)
            value = code * ref.lsb
        else:
            code = s.div_(ref.lsb).floor_().clamp_(ref.code_min, ref.code_max)
            value = (code + 0.5).mul_(ref.lsb)
        if cfg.inl is Inl.TABLE:
            table = torch.tensor(cfg.inl_table, dtype=torch.float32)
            value.add_(table[(code - ref.code_min).to(torch.int64)] * ref.lsb)
        if cfg.calibrate and (cfg.gain_error_std or cfg.offset_error_lsb):
            value.sub_(offset).div_(gain)
        return value


def _bit_slices(x_q: torch.Tensor, act_bits: int, dac_bits: int, *,
                padded_k: int | None = None) -> tuple[torch.Tensor, list]:
    """Unsigned DAC slices, MSB first (C, *x.shape), and each slice's shift; with
    ``padded_k`` the last axis is zero-padded to that length. Written straight into one
    float buffer (no stack, no separate pad copy: a PIM-aware step slices every layer's
    im2col matrix); int32 holds any activation code (``act_bits`` <= 16)."""
    full, rest = divmod(act_bits, dac_bits)
    widths = ([rest] if rest else []) + [dac_bits] * full
    k = x_q.shape[-1]
    x_int = x_q.to(torch.int32)
    out = torch.zeros((len(widths), *x_q.shape[:-1], padded_k or k), dtype=torch.float32)
    shifts, top = [], act_bits
    for i, width in enumerate(widths):
        top -= width
        out[i, ..., :k] = ((x_int >> top) if top else x_int) & ((1 << width) - 1)
        shifts.append(top)
    return out, shifts


def _weight_digits(w_q: torch.Tensor, weight_bits: int, decomposition: Decomposition):
    w_int = w_q.to(torch.int64)
    bits = torch.arange(weight_bits)
    if decomposition is Decomposition.DIFFERENTIAL:
        digits = torch.sign(w_int)[None] * ((w_int.abs()[None] >> bits[:, None, None]) & 1)
        return digits.to(torch.float32), (2.0 ** bits).to(torch.float32)
    pattern = w_int & ((1 << weight_bits) - 1)
    digits = (pattern[None] >> bits[:, None, None]) & 1
    scale = (2.0 ** bits).to(torch.float32)
    scale[-1] = -scale[-1]
    return digits.to(torch.float32), scale


def torch_pim_matmul(x_q: torch.Tensor, w_q: torch.Tensor, *, act_bits: int, weight_bits: int,
                     cfg: PimConfig, adc: TorchPimAdc) -> torch.Tensor:
    """Forward value of :func:`chipforge.sim.pim.pim_matmul` in torch (no gradient)."""
    with torch.no_grad():
        m, k = x_q.shape
        n = w_q.shape[1]
        tiles = -(-k // cfg.rows)
        pad = tiles * cfg.rows - k
        xs, shifts = _bit_slices(x_q, act_bits, cfg.input_dac_bits,
                                 padded_k=tiles * cfg.rows)                   # C, M, T*rows
        digits, slice_scale = _weight_digits(w_q, weight_bits, cfg.decomposition)  # S, K, N
        if pad:
            digits = F.pad(digits, (0, 0, 0, pad))
        c, s = xs.shape[0], digits.shape[0]
        xs = xs.reshape(c, m, tiles, cfg.rows).permute(0, 2, 1, 3)
        ws = digits.reshape(s, tiles, cfg.rows, n).permute(1, 2, 0, 3).reshape(
            tiles, cfg.rows, s * n)
        sums = torch.matmul(xs, ws[None])                                   # C, T, M, S*N
        columns = (torch.arange(tiles)[:, None] * (s * n) + torch.arange(s * n)[None])
        values = adc.convert(sums, columns[None, :, None, :])
        values = values.reshape(c, tiles, m, s, n).sum(dim=1)
        per_cycle = torch.einsum("cmsn,s->cmn", values, slice_scale)
        return torch.einsum("cmn,c->mn", per_cycle, 2.0 ** torch.tensor(shifts,
                                                                         dtype=torch.float32))


@dataclasses.dataclass
class PimMode:
    """Whether and how the quantized layers run through the PIM model."""

    cfg: PimConfig | None = None
    """None: digital (exact integer product)."""
    seed: int = 0
    track_gain: bool = False
    """Update the running rescaling gain (training); otherwise use the stored one."""
    rescale: bool = True


class _QuantPimMixin(nn.Module):
    """Weight/activation fake quantization and the PIM product for conv and linear."""

    def _setup_quant(self, weight_bits: int, act_bits: int, act_clip: float, *,
                     channels: int | None = None) -> None:
        """``channels``: one rescaling gain per output channel and a stored weight clip
        (``chipforge compress pim-qat``); None: one gain per layer and no weight clipping
        (the bundled ``resnet-digits-pim`` models, whose state dicts predate both)."""
        self.weight_bits, self.act_bits = weight_bits, act_bits
        self.act_clip = nn.Parameter(torch.tensor(float(act_clip)))  # PACT clipping level
        self.register_buffer("pim_gain", torch.tensor(1.0) if channels is None
                             else torch.ones(channels))
        self.register_buffer("weight_clip", torch.tensor(1.0), persistent=channels is not None)
        self.mode = PimMode()
        self._adc: TorchPimAdc | None = None
        self._adc_key = None

    def quantize_input(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Unsigned act_bits quantization with a learned clip (PACT), STE. -> (x_q, scale)."""
        levels = (1 << self.act_bits) - 1
        clip = self.act_clip.abs() + 1e-3
        x = torch.minimum(F.relu(x), clip)
        scale = clip / levels
        x_q = x / scale
        return x_q + (torch.round(x_q) - x_q).detach(), scale

    def quantize_weight(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Symmetric per-output-channel weight_bits quantization, STE. -> (w_q, scale).

        The range is ``weight_clip`` x the channel's largest magnitude (1: no clipping;
        below 1 the integer weights fill more of the range, which raises the analog partial
        sums above the ADC's fixed LSB, see :func:`calibrate_ranges`)."""
        w = self.weight
        qmax = (1 << (self.weight_bits - 1)) - 1
        scale = (w.detach().abs().reshape(w.shape[0], -1).amax(dim=1).clamp_min(1e-8)
                 * self.weight_clip / qmax)
        scale = scale.reshape((-1,) + (1,) * (w.dim() - 1))
        # symmetric: a sign flip (a folded negative BN gamma) stays in range
        w_q = torch.clamp(w / scale, -qmax, qmax)
        return w_q + (torch.round(w_q) - w_q).detach(), scale.reshape(-1)

    def product_float(self, x: torch.Tensor) -> torch.Tensor:
        """The layer's output without bias as (positions, channels): the quantized product
        (through the PIM macro in ``self.mode``) times the activation and weight scales."""
        x_q, a_scale = self.quantize_input(x)
        w_q, w_scale = self.quantize_weight()
        if w_q.dim() == 4:
            cols = F.unfold(x_q, self.kernel, padding=self.padding, stride=self.stride)
            x_q = cols.transpose(1, 2).reshape(-1, cols.shape[1])
        return self.product(x_q, w_q.reshape(w_q.shape[0], -1).t()) * a_scale * w_scale[None, :]

    def _adc_for(self, cfg: PimConfig, seed: int) -> TorchPimAdc:
        key = (cfg, seed)
        if self._adc_key != key:
            layer_seed = int(np.random.SeedSequence([seed, self.layer_index]).generate_state(1)[0])
            self._adc = TorchPimAdc(cfg.adc, hardware_range=cfg.hardware_range(),
                                    bipolar=cfg.bipolar, seed=layer_seed)
            self._adc_key = key
        return self._adc

    def product(self, x_cols: torch.Tensor, w_mat: torch.Tensor) -> torch.Tensor:
        """x_cols (M, K) integer-valued, w_mat (K, N) integer-valued -> (M, N)."""
        exact = x_cols @ w_mat
        cfg = self.mode.cfg
        if cfg is None:
            return exact
        y_pim = torch_pim_matmul(x_cols.detach(), w_mat.detach(), act_bits=self.act_bits,
                                 weight_bits=self.weight_bits, cfg=cfg,
                                 adc=self._adc_for(cfg, self.mode.seed))
        if self.mode.rescale:
            if self.mode.track_gain:
                with torch.no_grad():
                    # least squares fit of the exact product from the PIM one, per layer or
                    # per output channel (a channel whose PIM output is all zero keeps 1)
                    dims = tuple(range(y_pim.dim() - self.pim_gain.dim()))
                    power = (y_pim * y_pim).sum(dims)
                    fit = (y_pim * exact.detach()).sum(dims) / power.clamp_min(1e-12)
                    fit = torch.where(power > 0, fit, torch.ones_like(fit))
                    self.pim_gain.mul_(0.9).add_(0.1 * fit)
            gain = self.pim_gain
            return gain * (exact + (y_pim - exact).detach())
        return exact + (y_pim - exact).detach()


class QuantPimConv2d(_QuantPimMixin):
    def __init__(self, cin: int, cout: int, kernel: int, *, stride: int = 1, padding: int = 0,
                 weight_bits: int = 4, act_bits: int = 4, act_clip: float = 4.0,
                 layer_index: int = 0, per_channel_gain: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(cout, cin, kernel, kernel))
        nn.init.kaiming_normal_(self.weight, nonlinearity="relu")
        self.stride, self.padding, self.kernel, self.layer_index = stride, padding, kernel, \
            layer_index
        self._setup_quant(weight_bits, act_bits, act_clip,
                          channels=cout if per_channel_gain else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_q, a_scale = self.quantize_input(x)
        w_q, w_scale = self.quantize_weight()
        n, _, h, w = x.shape
        cols = F.unfold(x_q, self.kernel, padding=self.padding, stride=self.stride)
        oh = (h + 2 * self.padding - self.kernel) // self.stride + 1
        ow = (w + 2 * self.padding - self.kernel) // self.stride + 1
        x_cols = cols.transpose(1, 2).reshape(-1, cols.shape[1])
        y = self.product(x_cols, w_q.reshape(w_q.shape[0], -1).t())
        y = y * a_scale * w_scale[None, :]
        return y.reshape(n, oh * ow, -1).transpose(1, 2).reshape(n, -1, oh, ow)


class QuantPimLinear(_QuantPimMixin):
    def __init__(self, cin: int, cout: int, *, weight_bits: int = 4, act_bits: int = 4,
                 act_clip: float = 4.0, layer_index: int = 0, per_channel_gain: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(cout, cin))
        nn.init.kaiming_normal_(self.weight)
        self.bias = nn.Parameter(torch.zeros(cout))
        self.layer_index = layer_index
        self._setup_quant(weight_bits, act_bits, act_clip,
                          channels=cout if per_channel_gain else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_q, a_scale = self.quantize_input(x)
        w_q, w_scale = self.quantize_weight()
        return self.product(x_q, w_q.t()) * a_scale * w_scale[None, :] + self.bias


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, index: int, bits: int):
        super().__init__()
        q = dict(weight_bits=bits, act_bits=bits)
        self.conv1 = QuantPimConv2d(cin, cout, 3, stride=stride, padding=1, layer_index=index, **q)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = QuantPimConv2d(cout, cout, 3, padding=1, layer_index=index + 1, **q)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                QuantPimConv2d(cin, cout, 1, stride=stride, layer_index=index + 2, **q),
                nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.shortcut is None else self.shortcut(x)))


class ResNetDigits(nn.Module):
    """A ResNet-8-style CNN for 8x8 digits: stem, three basic blocks (16, 16, 32 channels),
    global average pooling, linear classifier. Every conv/linear is a quantized PIM layer
    (``bits``-bit weights and unsigned activations)."""

    def __init__(self, bits: int = 4, width: int = 16):
        super().__init__()
        self.stem = QuantPimConv2d(1, width, 3, padding=1, layer_index=0, weight_bits=bits,
                                   act_bits=bits, act_clip=1.0)
        self.bn = nn.BatchNorm2d(width)
        self.layer1 = _Block(width, width, 1, 10, bits)
        self.layer2 = _Block(width, width, 1, 20, bits)
        self.layer3 = _Block(width, 2 * width, 2, 30, bits)
        self.fc = QuantPimLinear(2 * width, 10, layer_index=40, weight_bits=bits, act_bits=bits)

    def forward(self, x):
        x = F.relu(self.bn(self.stem(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(x.mean(dim=(2, 3)))


def set_pim(model: nn.Module, mode: PimMode) -> None:
    for module in model.modules():
        if isinstance(module, _QuantPimMixin):
            module.mode = mode


def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray, mode: PimMode | None = None,
             batch: int = 256) -> float:
    """Accuracy (%) with the layers in ``mode`` (default: digital)."""
    set_pim(model, mode or PimMode())
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            logits = model(torch.from_numpy(np.array(x[i:i + batch])))
            correct += int((logits.argmax(1).numpy() == y[i:i + batch]).sum())
    set_pim(model, PimMode())
    return 100.0 * correct / len(x)


def bn_calibrate(model: nn.Module, x: np.ndarray, mode: PimMode, *, batches: int = 8,
                 batch: int = 128, seed: int = 0) -> None:
    """Re-estimate every batch norm's running statistics with the PIM forward pass (BN
    calibration: no gradient, the cumulative average over ``batches`` random batches)."""
    rng = np.random.default_rng(seed)
    set_pim(model, dataclasses.replace(mode, track_gain=False))
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batches
    model.train()
    x = np.ascontiguousarray(x, dtype=np.float32)
    with torch.no_grad():
        for _ in range(batches):
            idx = rng.choice(len(x), size=min(batch, len(x)), replace=False)
            model(torch.from_numpy(x[idx]))
    model.eval()
    set_pim(model, PimMode())


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, *, epochs: int, lr: float,
          mode: PimMode | None = None, batch: int = 64, seed: int = 0,
          on_epoch: Callable[[nn.Module, int, float], None] | None = None) -> None:
    """SGD with momentum and cosine decay; the layers run in ``mode`` (PIM-aware if set,
    tracking the rescaling gains). ``on_epoch(model, epoch, mean_loss)`` is called after
    every epoch with the model in evaluation mode on the same macro (gains frozen)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    steps = epochs * math.ceil(len(x) / batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1))
    pim = mode is not None and mode.cfg is not None
    train_mode = dataclasses.replace(mode, track_gain=True) if pim else PimMode()
    eval_mode = dataclasses.replace(mode, track_gain=False) if pim else PimMode()
    xt = torch.from_numpy(np.array(x, dtype=np.float32))   # a copy: x may be read-only
    yt = torch.from_numpy(np.array(y, dtype=np.int64))
    from chipforge.mappings.train import minibatches

    for epoch in range(epochs):
        set_pim(model, train_mode)
        model.train()
        order = rng.permutation(len(x))
        total = 0.0
        for lo, hi in minibatches(len(x), batch):
            idx = torch.from_numpy(order[lo:hi])
            loss = F.cross_entropy(model(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        if on_epoch is not None:
            set_pim(model, eval_mode)
            model.eval()
            on_epoch(model, epoch, total / len(x))
    set_pim(model, PimMode())
    model.eval()


RANGE_ACT_CLIPS = (1.0, 0.7, 0.5, 0.35, 0.25, 0.18)
"""Activation clips tried by :func:`calibrate_ranges`, as fractions of the trained clip."""
RANGE_WEIGHT_CLIPS = (1.0, 0.8, 0.6, 0.5, 0.4, 0.3)
"""Weight clips tried, as fractions of each output channel's largest magnitude."""


def calibrate_ranges(layers: list[nn.Module], model: nn.Module, x: np.ndarray,
                     mode: PimMode, *, samples: int = 128) -> list[dict[str, float]]:
    """PIM range calibration: per layer, the activation clip and weight clip whose PIM
    output (noisy ADC included) is closest to the layer's unquantized product.

    Why: the macro's ADC has a full scale fixed by the array (rows x largest input slice),
    so its LSB is a fixed number of MAC units; a layer whose integer inputs and weights are
    small (a clip at the 99.9th percentile, a max-scaled weight) produces partial sums of a
    few LSB that the ADC rounds and its noise buries. Clipping both harder raises the
    partial sums (more signal per LSB) at the cost of clipping error. The search minimizes
    the sum of both on ``samples`` training inputs, over the grids
    :data:`RANGE_ACT_CLIPS` x :data:`RANGE_WEIGHT_CLIPS`, each layer with the gains a
    least-squares fit per output channel (as training tracks them). An exhaustive search of
    the quantization range on data, as Kim et al. (JETC 2022) search the partial-sum
    range. Returns each layer's choice and relative error (before -> after)."""
    captured: dict[nn.Module, torch.Tensor] = {}
    hooks = [m.register_forward_hook(
        lambda mod, args, out: captured.__setitem__(mod, args[0].detach())) for m in layers]
    set_pim(model, PimMode())
    model.eval()
    try:
        with torch.no_grad():
            model(torch.from_numpy(np.ascontiguousarray(x[:samples], dtype=np.float32)))
    finally:
        for h in hooks:
            h.remove()
    chosen = []
    for layer in layers:
        chosen.append(_calibrate_layer(layer, captured[layer], mode))
    set_pim(model, PimMode())
    return chosen


def _calibrate_layer(layer: nn.Module, x: torch.Tensor, mode: PimMode) -> dict[str, float]:
    with torch.no_grad():
        if layer.weight.dim() == 4:
            cols = F.unfold(F.relu(x), layer.kernel, padding=layer.padding,
                            stride=layer.stride)
            x_cols = cols.transpose(1, 2).reshape(-1, cols.shape[1])
        else:
            x_cols = F.relu(x)
        reference = x_cols @ layer.weight.reshape(layer.weight.shape[0], -1).t()
        clip0 = float(layer.act_clip.abs())
        layer.mode = dataclasses.replace(mode, track_gain=False, rescale=False)
        errors = {}
        for a in RANGE_ACT_CLIPS:
            for w in RANGE_WEIGHT_CLIPS:
                layer.act_clip.fill_(clip0 * a)
                layer.weight_clip.fill_(w)
                y = layer.product_float(x)
                power = (y * y).sum(0)
                gain = torch.where(power > 0, (y * reference).sum(0) / power.clamp_min(1e-12),
                                   torch.ones_like(power))
                errors[a, w] = float(((gain * y - reference) ** 2).mean()
                                     / (reference ** 2).mean().clamp_min(1e-12))
        (a, w), best = min(errors.items(), key=lambda kv: kv[1])
        layer.act_clip.fill_(clip0 * a)
        layer.weight_clip.fill_(w)
        layer.mode = PimMode()
    return {"act_clip": clip0 * a, "act_clip_fraction": a, "weight_clip": w,
            "relative_error_before": errors[1.0, 1.0], "relative_error": best}


def adc_variant(bits: int, *, noisy: bool) -> AdcConfig:
    """The sweep's ADCs: ideal b-bit, or with CAP-RAM-like noise and nonlinearity."""
    if not noisy:
        return AdcConfig(bits=bits, full_scale=FullScale.HARDWARE)
    # CAP-RAM: 0.35 LSB rms thermal noise; its per-ADC linear calibration removes gain and
    # offset errors (modelled as exact here), leaving noise and the S-shaped INL.
    return AdcConfig(bits=bits, thermal_noise_lsb=0.35, gain_error_std=0.02,
                     offset_error_lsb=0.5, inl=Inl.S_CURVE, inl_nonlinearity=0.05,
                     calibrate=True)


# --- The bundled models (chipforge/zoo/resnet-digits-pim.npz) -----------------------------

PIM_SWEEP_CFG = PimConfig(decomposition=Decomposition.MULTIBIT_DAC, rows=32, dac_bits=4)
"""The macro of the ADC sweep: 4-bit DAC inputs (CAP-RAM), 1-bit cells, 32-row arrays.

CAP-RAM sums 128 rows; the bundled CNN's layers are only 9 to 288 inputs deep, so on
128-row arrays the hardware-fixed full scale would leave most partial sums below one LSB
at every resolution of interest. 32 rows keep the same physics (full scale fixed by the
array: 32 x 15 = 480, an 9-bit exact width) at the bundled model's size."""

PIM_TRAIN_BITS = (4, 5, 6, 7)
"""ADC resolutions with a PIM-aware trained model."""

PIM_EPOCHS = {4: 10, 5: 10, 6: 24, 7: 24}
"""Fine-tuning epochs per b_PIM. At 6 and 7 bits 10 epochs left the model 2-3 points short
of the digital one (96.1 % and 95.6 % with noise), 24 close the gap; at 4 and 5 bits more
epochs do not change the picture (the partial sums are too coarse), so they get 10."""


def state_to_arrays(model: nn.Module, prefix: str) -> dict[str, np.ndarray]:
    return {f"{prefix}/{k}": v.detach().cpu().numpy() for k, v in model.state_dict().items()}


def arrays_to_state(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, torch.Tensor]:
    start = f"{prefix}/"
    return {k[len(start):]: torch.from_numpy(np.array(v)) for k, v in arrays.items()
            if k.startswith(start)}


def model_key(bits: int | None, noisy: bool) -> str:
    return "digital" if bits is None else f"pim{bits}{'-noisy' if noisy else ''}"


def train_pim_models(*, digital_epochs: int = 15, pim_epochs: dict[int, int] | None = None,
                     seed: int = 0,
                     bits: tuple[int, ...] = PIM_TRAIN_BITS, log=print) -> dict[str, np.ndarray]:
    """The recipe of ``resnet-digits-pim``: a 4-bit QAT ResNet (the digital quantized
    model), then one PIM-aware fine-tuned copy per ADC resolution, with and without ADC
    noise and nonlinearity. Returns every state dict as named arrays (for ``np.savez``)."""
    import copy

    from chipforge.zoo.data import digits

    torch.set_num_threads(1)
    data = digits()
    torch.manual_seed(seed)
    digital = ResNetDigits(bits=4)
    train(digital, data.x_train, data.y_train, epochs=digital_epochs, lr=0.05, seed=seed)
    arrays = state_to_arrays(digital, model_key(None, False))
    log(f"digital: {evaluate(digital, data.x_test, data.y_test):.2f} %")
    for b in bits:
        for noisy in (False, True):
            mode = PimMode(cfg=PIM_SWEEP_CFG.replace(adc=adc_variant(b, noisy=noisy)),
                           seed=seed)
            model = copy.deepcopy(digital)
            epochs = (pim_epochs or PIM_EPOCHS)[b]
            train(model, data.x_train, data.y_train, epochs=epochs, lr=0.02, mode=mode,
                  seed=seed)
            bn_calibrate(model, data.x_train, mode, seed=seed)
            arrays |= state_to_arrays(model, model_key(b, noisy))
            log(f"{model_key(b, noisy)}: {evaluate(model, data.x_test, data.y_test, mode):.2f} %")
    return arrays


def load_pim_model(arrays: dict[str, np.ndarray], bits: int | None, noisy: bool) -> ResNetDigits:
    model = ResNetDigits(bits=4)
    model.load_state_dict(arrays_to_state(arrays, model_key(bits, noisy)))
    model.eval()
    return model
