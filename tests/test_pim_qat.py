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


@pytest.fixture(autouse=True)
def _one_thread():
    """Small tensors: threads only contend with the other tests' processes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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


# --- What chipforge compress pim-qat trains with ------------------------------------------

def _twin_and_reference(adc_cfg, x, w, seed, repeats):
    """``repeats`` conversions of x @ w by the torch twin and by the numpy reference."""
    from chipforge.mappings.pim_qat import TorchPimAdc, torch_pim_matmul
    from chipforge.sim.adc import PimAdc
    from chipforge.sim.pim import pim_matmul

    cfg = PIM_SWEEP_CFG.replace(rows=128, adc=adc_cfg)
    ref_adc = PimAdc(adc_cfg, hardware_range=cfg.hardware_range(), bipolar=cfg.bipolar,
                     seed=seed)
    twin_adc = TorchPimAdc(adc_cfg, hardware_range=cfg.hardware_range(), bipolar=cfg.bipolar,
                           seed=seed)
    xt, wt = torch.tensor(x, dtype=torch.float32), torch.tensor(w, dtype=torch.float32)
    ref = np.stack([pim_matmul(x, w, act_bits=4, weight_bits=4, cfg=cfg, adc=ref_adc)
                    for _ in range(repeats)])
    twin = np.stack([torch_pim_matmul(xt, wt, act_bits=4, weight_bits=4, cfg=cfg,
                                      adc=twin_adc).numpy() for _ in range(repeats)])
    return twin, ref


def test_torch_twin_trains_with_the_presets_adc_errors_in_distribution():
    """cap-ram's ADC (gain and offset spread, calibration, S-curve, 0.35 LSB thermal noise)
    at 7 bits: the twin PIM-aware training runs through draws the same converters (equal
    without noise) and noise of the same statistics as the simulator's reference."""
    from chipforge.families.pim import CAP_RAM

    rng = np.random.default_rng(5)
    x, w = rng.integers(0, 16, (12, 256)), rng.integers(-7, 8, (256, 6))
    adc = CAP_RAM.adc.replace(bits=7)
    twin, ref = _twin_and_reference(adc.replace(thermal_noise_lsb=0.0), x, w, 3, 1)
    np.testing.assert_allclose(twin[0], ref[0], rtol=1e-5, atol=1e-2)
    twin, ref = _twin_and_reference(adc, x, w, 3, 150)
    exact = x @ w
    # the noise moves outputs by several LSB (16 MAC units at 7 bits): compare the spread
    # and the mean error of the two, output by output
    spread_twin, spread_ref = twin.std(axis=0), ref.std(axis=0)
    assert spread_ref.mean() > 20
    assert abs(spread_twin.mean() / spread_ref.mean() - 1) < 0.05
    bias_twin, bias_ref = (twin - exact).mean(axis=0), (ref - exact).mean(axis=0)
    assert np.abs(bias_twin - bias_ref).mean() < 0.25 * spread_ref.mean()


def test_per_channel_gain_is_the_least_squares_fit_of_each_channel():
    """The tracked rescaling gain of each output channel converges to the least-squares
    fit of the exact product from that channel's PIM product (reference simulator)."""
    from chipforge.sim.adc import PimAdc
    from chipforge.sim.pim import pim_matmul

    torch.manual_seed(3)
    conv = QuantPimConv2d(4, 6, 3, padding=1, act_clip=1.0, per_channel_gain=True)
    x = torch.rand(8, 4, 6, 6) * 0.4      # small inputs: the 5-bit ADC shrinks the sums
    cfg = PIM_SWEEP_CFG.replace(rows=128, adc=AdcConfig(bits=5))
    conv.mode = PimMode(cfg=cfg, track_gain=True)
    with torch.no_grad():
        for _ in range(150):       # the running average forgets its start (0.9 ** 150)
            conv(x)
    with torch.no_grad():
        x_q, _ = conv.quantize_input(x)
        w_q, _ = conv.quantize_weight()
    cols = torch.nn.functional.unfold(x_q, 3, padding=1).transpose(1, 2).reshape(-1, 36)
    x_np, w_np = cols.numpy().astype(np.int64), w_q.reshape(6, -1).t().numpy().astype(int)
    exact = (x_np @ w_np).astype(np.float64)
    adc = PimAdc(cfg.adc, hardware_range=cfg.hardware_range())
    pim = pim_matmul(x_np, w_np, act_bits=4, weight_bits=4, cfg=cfg, adc=adc)
    fit = (pim * exact).sum(0) / (pim * pim).sum(0)
    np.testing.assert_allclose(conv.pim_gain.numpy(), fit, rtol=1e-3)
    assert fit.max() > 1.1 * fit.min()         # the channels do need their own gains


def test_range_calibration_lifts_small_partial_sums_above_the_adc_lsb():
    """A layer whose inputs are mostly small with rare large ones (a 99.9th-percentile
    clip): on 128-row arrays at 6 bits its partial sums sit near one LSB. The calibration
    clips activations and weights harder and cuts the PIM output error by more than a quarter;
    on the ideal wide ADC the same layer needs no activation clipping for the ADC."""
    from chipforge.mappings.pim_qat import calibrate_ranges

    torch.manual_seed(4)
    gen = torch.Generator().manual_seed(4)
    conv = QuantPimConv2d(8, 8, 3, padding=1, act_clip=1.0)
    conv.weight.data = torch.randn(8, 8, 3, 3, generator=gen) ** 3   # heavy-tailed weights
    x = torch.rand(64, 8, 6, 6, generator=gen) ** 4
    model = torch.nn.Sequential(conv)
    cfg = PIM_SWEEP_CFG.replace(rows=128, adc=adc_variant(6, noisy=True))
    (r,) = calibrate_ranges([conv], model, x.numpy(), PimMode(cfg=cfg), samples=32)
    assert r["act_clip_fraction"] < 1 and r["weight_clip"] < 1
    assert r["relative_error"] < 0.75 * r["relative_error_before"]
    assert float(conv.act_clip.detach()) == pytest.approx(r["act_clip"])
    conv.act_clip.data.fill_(1.0)
    conv.weight_clip.fill_(1.0)
    (ideal,) = calibrate_ranges([conv], model, x.numpy(),
                                PimMode(cfg=PIM_SWEEP_CFG.replace(adc=AdcConfig(bits=16))),
                                samples=32)
    assert ideal["relative_error"] < 0.2 * r["relative_error"]


def test_compress_pim_qat_recovers_a_user_cnn_on_cap_ram_and_range_calibration_matters(
        tmp_path):
    """A user CNN (8x8 digits, tiny schedules) through ``compress pim-qat`` for cap-ram at
    b_PIM 7 (128 rows, noisy ADC): on the test split, which compress never reads, the
    PIM-aware model beats post-training quantization on the same macro by 20 points, and
    without the range calibration it loses at least 10 of them (measured: naive 37.5 %,
    without calibration 46.7 %, pim-qat 71.7 %, 4-bit digital 86.1 %)."""
    import importlib
    import sys
    from pathlib import Path

    import chipforge
    from chipforge.compress_methods import _pim_config
    from chipforge.compress_options import PimQatOptions
    from chipforge.importers.onnx import load_onnx
    from chipforge.mappings.quantize import QuantizeConfig, quantize_graph
    from chipforge.sim.executor import run_graph
    from chipforge.sim.pim import PimMatmul

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    helpers = importlib.import_module("compress_helpers")
    files = helpers.train_and_export(helpers.user_cnn(size=8, width=4), 8, 3, tmp_path, "cnn")
    with np.load(files["train"]) as f:
        x, y = f["x"][:600], f["y"][:600]
    with np.load(files["test"]) as f:
        x_test, y_test = f["x"].astype(np.float64), f["y"]
    cfg = _pim_config(PimQatOptions(b_pim=7))

    def on_pim(graph) -> float:
        return float((run_graph(graph, x_test, matmul=PimMatmul(cfg)).argmax(1)
                      == y_test).mean())

    naive = quantize_graph(load_onnx(files["model"]), x[:256].astype(np.float64),
                           QuantizeConfig(weight_bits=4, act_bits=4))
    tiny = dict(progress=False, b_pim=7, qat_epochs=1, epochs=3)
    model = chipforge.compress("pim-qat", files["model"], (x, y), **tiny)
    trained = on_pim(model)
    # the headline is the PIM accuracy; most of the gap to the torch twin is the thermal
    # noise's realization (numpy vs torch generators): without it the two paths differ by
    # at most 2 of the 120 validation images here (measured: 79.17 vs 80.83 %), float32
    # torch against float64 numpy (docs/pim-adc.md)
    p = model.meta["provenance"]
    r = p["result"]
    assert p["validation_accuracy"] == r["val_accuracy_pim"] != r["val_accuracy_digital"]
    assert p["validation_samples"] == 120
    assert abs(r["val_accuracy_pim_no_thermal_noise"]
               - r["val_accuracy_pim_torch_no_thermal_noise"]) <= 2 / 120 + 1e-9
    assert r["val_accuracy_pim_4_chips"]["chips"] == 4
    uncalibrated = on_pim(chipforge.compress("pim-qat", files["model"], (x, y),
                                             calibrate_ranges=False, **tiny))
    assert trained >= on_pim(naive) + 0.20
    assert trained >= uncalibrated + 0.10
