"""ADC model and PIM decomposition: exact when ideal and wide, degraded as documented."""

import numpy as np
import pytest

from chipforge.sim.adc import (
    CAP_RAM_ADC,
    AdcConfig,
    AdcQuantizer,
    FullScale,
    Inl,
    PimAdc,
)
from chipforge.sim.executor import run_graph
from chipforge.sim.graph import Graph, Node, Op
from chipforge.sim.pim import Decomposition, PimConfig, PimMatmul, pim_matmul

SCHEMES = list(Decomposition)


def _adc(cfg: PimConfig, seed=0):
    return PimAdc(cfg.adc, hardware_range=cfg.hardware_range(), bipolar=cfg.bipolar, seed=seed)


@pytest.mark.parametrize("scheme", SCHEMES, ids=lambda s: s.value)
@pytest.mark.parametrize("rows", [16, 128])
def test_wide_ideal_adc_is_exact(scheme, rows):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 16, (40, 300))
    w = rng.integers(-8, 8, (300, 9))
    # The smallest exact resolution: the width of the largest partial sum (+1 bipolar).
    cfg = PimConfig(decomposition=scheme, rows=rows, dac_bits=2)
    need = int(np.ceil(np.log2(cfg.hardware_range() + 1))) + (1 if cfg.bipolar else 0)
    cfg = cfg.replace(adc=AdcConfig(bits=need))
    y = pim_matmul(x, w, act_bits=4, weight_bits=4, cfg=cfg, adc=_adc(cfg))
    assert np.array_equal(y, x @ w)
    # One bit less is no longer exact.
    cfg = cfg.replace(adc=AdcConfig(bits=need - 1))
    assert not np.array_equal(pim_matmul(x, w, act_bits=4, weight_bits=4, cfg=cfg,
                                         adc=_adc(cfg)), x @ w)


def test_error_grows_as_resolution_drops():
    rng = np.random.default_rng(1)
    x, w = rng.integers(0, 16, (64, 256)), rng.integers(-8, 8, (256, 8))
    errors = []
    for bits in (8, 6, 4, 3):
        cfg = PimConfig(adc=AdcConfig(bits=bits))
        y = pim_matmul(x, w, act_bits=4, weight_bits=4, cfg=cfg, adc=_adc(cfg))
        errors.append(np.abs(y - x @ w).mean())
    assert errors[0] == 0 and all(a < b for a, b in zip(errors, errors[1:], strict=False))


def test_quantizers_and_saturation():
    cfg = AdcConfig(bits=3, full_scale=FullScale.CALIBRATED, calibrated_range=7.0)
    adc = PimAdc(cfg, hardware_range=100)
    assert adc.lsb == 1.0
    assert adc.convert(np.array([0.0, 0.4, 0.6, 6.6, 50.0])).tolist() == [0, 0, 1, 7, 7]
    rise = PimAdc(cfg.replace(quantizer=AdcQuantizer.MID_RISE), hardware_range=100)
    assert rise.convert(np.array([0.0, 0.8, 1.0])).tolist() == [rise.lsb / 2, rise.lsb / 2,
                                                              1.5 * rise.lsb]
    bipolar = PimAdc(AdcConfig(bits=4), hardware_range=7, bipolar=True)
    assert bipolar.convert(np.array([-100.0, -3.0, 3.0, 100.0])).tolist() == [-7, -3, 3, 7]


def test_thermal_noise_has_the_configured_rms_and_depends_on_the_seed():
    cfg = AdcConfig(bits=10, thermal_noise_lsb=2.0)
    sums = np.full(200_000, 300.0)
    a = PimAdc(cfg, hardware_range=1023, seed=5)
    out = a.convert(sums)
    rms = (out - 300.0).std() / a.lsb
    assert abs(rms - np.sqrt(2.0**2 + 1 / 12)) < 0.05  # noise plus rounding
    assert np.array_equal(out, PimAdc(cfg, hardware_range=1023, seed=5).convert(sums))
    assert not np.array_equal(out, PimAdc(cfg, hardware_range=1023, seed=6).convert(sums))


def test_s_curve_inl_keeps_the_ends_and_bends_the_middle():
    adc = PimAdc(AdcConfig(bits=8, inl=Inl.S_CURVE, inl_nonlinearity=0.1), hardware_range=255)
    assert adc.convert(np.array([0.0, 255.0])).tolist() == [0.0, 255.0]
    assert 2.0 < adc.peak_inl_lsb() < 10.0
    assert adc.convert(np.array([64.0]))[0] < 64 - 1  # compressed towards the low end


def test_calibration_undoes_gain_and_offset():
    raw = AdcConfig(bits=10, gain_error_std=0.1, offset_error_lsb=3.0, num_adcs=4)
    sums = np.tile(np.linspace(50, 900, 64), (4, 1))
    index = np.arange(4)[:, None]
    err_raw = np.abs(PimAdc(raw, hardware_range=1023).convert(sums, index) - sums).max()
    cal = PimAdc(raw.replace(calibrate=True), hardware_range=1023)
    err_cal = np.abs(cal.convert(sums, index) - sums).max()
    assert err_raw > 5 * cal.lsb and err_cal <= cal.lsb


def test_inl_table_length_is_checked():
    with pytest.raises(ValueError, match="inl_table has 3 entries"):
        PimAdc(AdcConfig(bits=3, inl=Inl.TABLE, inl_table=(0, 1, 2)), hardware_range=7)


@pytest.mark.parametrize("field,value", [("bits", 0), ("thermal_noise_lsb", -1.0),
                                         ("gain_error_std", 0.7)])
def test_bad_adc_configs_are_named(field, value):
    with pytest.raises(ValueError, match=field):
        AdcConfig(**{field: value})


def test_pim_hook_reproduces_the_quantized_model_exactly():
    rng = np.random.default_rng(3)
    q = dict(weight_bits=4, act_bits=4, act_signed=False)
    g = Graph("g", (1, 6, 6), [
        Node(Op.CONV2D, "c", ("input",), q | dict(padding=1, weight_scale=0.1, act_scale=1 / 15),
             {"weight": rng.integers(-8, 8, (4, 1, 3, 3)) * 0.1}),
        Node(Op.RELU, "r", ("c",)),
        Node(Op.FLATTEN, "f", ("r",)),
        Node(Op.LINEAR, "fc", ("f",), q | dict(weight_scale=0.05, act_scale=0.1),
             {"weight": rng.integers(-8, 8, (3, 144)) * 0.05}),
    ])
    x = rng.random((8, 1, 6, 6))
    for scheme in SCHEMES:
        hook = PimMatmul(PimConfig(decomposition=scheme, adc=AdcConfig(bits=16)))
        assert np.array_equal(run_graph(g, x, matmul=hook), run_graph(g, x))
    coarse = PimMatmul(PimConfig(adc=AdcConfig(bits=3)))
    assert not np.array_equal(run_graph(g, x, matmul=coarse), run_graph(g, x))


def test_hook_noise_is_indexed_by_input_row_so_chunking_does_not_change_results():
    """CAP-RAM's converters (thermal noise 0.35 LSB, gain and offset spread): one call on
    24 rows, or 24 calls on one row each, or run_graph in chunks of 5, convert with the
    same noise; the noise has its configured size and changes with the seed."""
    rng = np.random.default_rng(4)
    cfg = PimConfig(rows=64, adc=CAP_RAM_ADC.replace(bits=10))
    node = Node(Op.LINEAR, "fc", ("input",), dict(weight_bits=4, act_bits=4, act_signed=False),
                {"weight": np.zeros((5, 200))})
    x = rng.integers(0, 16, (24, 200))
    w = rng.integers(-8, 8, (200, 5))
    whole = PimMatmul(cfg, seed=1)(node, x, w)
    one_by_one = PimMatmul(cfg, seed=1)
    rows = np.concatenate([one_by_one(node, x[i:i + 1], w) for i in range(len(x))])
    assert np.array_equal(whole, rows)
    assert not np.array_equal(whole, PimMatmul(cfg, seed=2)(node, x, w))
    # Equal in distribution to the converter's own stream (numpy's normals, in call
    # order): thermal noise only, 40 seeds each, the spread of the outputs around the
    # noiseless result agrees within 5 %.
    thermal = cfg.replace(adc=AdcConfig(bits=10, thermal_noise_lsb=0.5))
    quiet = PimMatmul(thermal.replace(adc=AdcConfig(bits=10)))(node, x, w)
    counter = np.stack([PimMatmul(thermal, seed=s)(node, x, w) for s in range(40)]) - quiet
    stream = np.stack([pim_matmul(x, w, act_bits=4, weight_bits=4, cfg=thermal,
                                  adc=_adc(thermal, seed=s)) for s in range(40)]) - quiet
    assert stream.std() > 0 and abs(counter.std() / stream.std() - 1) < 0.05
    assert abs(counter.mean()) < 0.05 * counter.std()
    g = Graph("g", (200,), [node])
    xs = rng.random((23, 200))
    node.attrs |= dict(weight_scale=0.1, act_scale=1 / 15)
    node.params["weight"] = w.T * 0.1
    full = run_graph(g, xs, matmul=PimMatmul(cfg, seed=3))
    chunked = run_graph(g, xs, matmul=PimMatmul(cfg, seed=3), batch_size=5)
    assert np.array_equal(full, chunked)


def test_torch_twin_matches_the_reference():
    import torch

    from chipforge.mappings.pim_qat import TorchPimAdc, torch_pim_matmul

    rng = np.random.default_rng(4)
    x, w = rng.integers(0, 16, (30, 200)), rng.integers(-8, 8, (200, 5))
    for scheme in SCHEMES:
        cfg = PimConfig(decomposition=scheme, adc=CAP_RAM_ADC.replace(thermal_noise_lsb=0.0))
        ref = pim_matmul(x, w, act_bits=4, weight_bits=4, cfg=cfg, adc=_adc(cfg, seed=9))
        twin = TorchPimAdc(cfg.adc, hardware_range=cfg.hardware_range(), bipolar=cfg.bipolar,
                           seed=9)
        out = torch_pim_matmul(torch.tensor(x, dtype=torch.float32),
                               torch.tensor(w, dtype=torch.float32), act_bits=4,
                               weight_bits=4, cfg=cfg, adc=twin).numpy()
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-3)
