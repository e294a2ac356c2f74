"""The crossbar reference equals x @ W whenever no ADC code saturates."""

import numpy as np
import pytest

from chipforge.config import ISAAC_CROSSBAR, CrossbarConfig, WeightEncoding
from chipforge.sim.ref.crossbar import adc_codes, crossbar_mvm, encode_weights, input_slices

CONFIGS = [
    ISAAC_CROSSBAR,
    ISAAC_CROSSBAR.replace(flip_encoding=False, adc_bits=9),
    CrossbarConfig(rows=32, cols=16, cell_bits=2, weight_bits=8, input_bits=8, adc_bits=8,
                   weight_encoding=WeightEncoding.TWO_COLUMN),
    CrossbarConfig(rows=32, cols=16, cell_bits=1, weight_bits=4, input_bits=6, dac_bits=2,
                   adc_bits=8),
    CrossbarConfig(rows=32, cols=16, cell_bits=3, weight_bits=7, input_bits=5, dac_bits=4,
                   adc_bits=12, signed_inputs=False),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c.weight_encoding.value}-"
                         f"c{c.cell_bits}-d{c.dac_bits}-flip{int(c.flip_encoding)}")
def test_exact_without_saturation(cfg):
    rng = np.random.default_rng(0)
    w = rng.integers(*cfg.weight_range, endpoint=True, size=(cfg.rows, cfg.cols))
    x = rng.integers(*cfg.input_range, endpoint=True, size=(64, cfg.rows))
    # Include the extreme weights and inputs.
    w[0, :2] = cfg.weight_range
    x[:2, :] = np.array(cfg.input_range)[:, None]
    readout = adc_codes(x, encode_weights(w, cfg), cfg)
    assert not readout.saturated
    assert np.array_equal(crossbar_mvm(x, w, cfg), x @ w)


def test_saturation_is_reported_and_clips():
    cfg = ISAAC_CROSSBAR.replace(flip_encoding=False)  # 9-bit sums into an 8-bit ADC
    w = np.full((128, 4), cfg.weight_range[1])
    x = np.full((2, 128), -1)  # all ones: every column sums to 128 * 3 = 384
    readout = adc_codes(x, encode_weights(w, cfg), cfg)
    assert readout.saturated and readout.codes.max() == cfg.adc_max_code
    assert not np.array_equal(crossbar_mvm(x, w, cfg), x @ w)


def test_flip_encoding_halves_the_worst_column_sum():
    cfg = ISAAC_CROSSBAR
    w = np.full((128, 2), cfg.weight_range[1])
    cells = encode_weights(w, cfg)
    assert cells.flipped.any()
    assert 2 * cells.levels.sum(axis=0).max() <= 128 * 3


def test_input_slices_rebuild_the_input():
    cfg = CrossbarConfig(input_bits=9, dac_bits=3)
    x = np.arange(-256, 256).reshape(4, 128)
    slices = input_slices(x, cfg)
    value = -slices[0]
    for s, width in zip(slices[1:], cfg.input_slice_widths[1:], strict=True):
        value = (value << width) + s
    assert np.array_equal(value, x)


@pytest.mark.parametrize("bad,match", [
    (dict(weights=np.full((4, 4), 2**15)), "weights values must lie in"),
    (dict(weights=np.zeros((200, 4), int)), "do not fit a 128x128 crossbar"),
    (dict(weights=np.full((4, 4), 0.5)), "must hold integers"),
    (dict(x=np.full((2, 4), -2**15 - 1)), "inputs values must lie in"),
    (dict(x=np.zeros((2, 5), int)), "inputs have 5 rows but the weights have 4"),
])
def test_bad_inputs_are_named(bad, match):
    args = dict(x=np.zeros((2, 4), int), weights=np.zeros((4, 4), int)) | bad
    with pytest.raises(ValueError, match=match):
        crossbar_mvm(args["x"], args["weights"], ISAAC_CROSSBAR)
