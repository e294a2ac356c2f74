"""PIM-aware training pieces (torch) and the bundled PIM-QAT models."""

import dataclasses

import numpy as np
import pytest
import torch

from chipforge.mappings.pim_qat import (  # noqa: E402
    PIM_SWEEP_CFG,
    PimMode,
    QuantPimConv2d,
    ResNetDigits,
    adc_variant,
    bn_calibrate,
    set_pim,
)
from chipforge.sim.adc import AdcConfig  # noqa: E402


def test_wide_ideal_pim_layer_equals_the_digital_layer():
    torch.manual_seed(0)
    conv = QuantPimConv2d(3, 8, 3, padding=1, act_clip=1.0)
    x = torch.rand(4, 3, 6, 6)
    digital = conv(x)
    conv.mode = PimMode(cfg=PIM_SWEEP_CFG.replace(adc=AdcConfig(bits=16)), rescale=False)
    assert torch.equal(conv(x), digital)
    conv.mode = PimMode(cfg=PIM_SWEEP_CFG.replace(adc=AdcConfig(bits=4)), rescale=False)
    assert not torch.allclose(conv(x), digital)


def test_straight_through_gradient_reaches_weights_and_clip():
    torch.manual_seed(1)
    conv = QuantPimConv2d(2, 4, 3, padding=1)
    conv.mode = PimMode(cfg=PIM_SWEEP_CFG.replace(adc=adc_variant(4, noisy=True)),
                        track_gain=True)
    conv(torch.rand(2, 2, 5, 5)).square().sum().backward()
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0
    assert conv.act_clip.grad is not None
    assert float(conv.pim_gain) != 1.0  # the forward rescaling gain is tracked


def test_bn_calibration_re_estimates_statistics_under_the_pim_model():
    torch.manual_seed(2)
    model = ResNetDigits(bits=4)
    x = np.random.default_rng(0).random((64, 1, 8, 8)).astype(np.float32)
    before = model.bn.running_var.clone()
    bn_calibrate(model, x, PimMode(cfg=PIM_SWEEP_CFG.replace(adc=adc_variant(4, noisy=False))),
                 batches=2, batch=32)
    assert not torch.allclose(model.bn.running_var, before)
    set_pim(model, PimMode())  # back to digital
    assert all(dataclasses.asdict(m.mode)["cfg"] is None for m in model.modules()
               if hasattr(m, "mode"))


def _trial(bits, method, noise, seed=0):
    from chipforge.mappings.sweeps.adc import trial

    return trial({"b_pim": bits, "method": method, "noise": noise}, seed)


@pytest.mark.parametrize("noise,bits", [(False, 6), (True, 7)])
def test_naive_deployment_collapses_and_pim_aware_training_recovers(noise, bits):
    """PIM-QAT (arXiv 2209.08617, abstract): naive deployment of a conventionally quantized
    model fails at low b_PIM; PIM-aware training recovers accuracy comparable to the digital
    quantized model. Here: 4-bit ResNet-8 on digits (360 test images), 32-row arrays with
    4-bit DACs; asserted: at the lowest b_PIM where PIM-aware training comes within 2 points
    of the digital model, naive deployment is at least 10 points below it, and one bit
    lower (ideal ADC) PIM-aware training falls clearly short of it."""
    naive = _trial(bits, "naive", noise)
    digital = naive["digital_accuracy"]
    assert naive["accuracy"] < digital - 10
    assert _trial(bits, "pim_aware", noise)["accuracy"] >= digital - 2
    if not noise:
        assert _trial(bits - 1, "pim_aware", noise)["accuracy"] < digital - 5


@pytest.mark.slow
def test_full_adc_sweep_runs(tmp_path):
    from chipforge.sim.sweep import run_sweep
    from chipforge.sweeps import get_sweep

    result = run_sweep(get_sweep("adc"), tmp_path, trials=1, workers=2, progress=False,
                       echo=None)
    assert len(result.summary) == 6 * 4 * 2
