"""ShiftAdd in Amaranth's simulator against the reference shift-and-add, bit for bit."""

import numpy as np
import pytest

from chipforge.config import ISAAC_CROSSBAR, CrossbarConfig, WeightEncoding
from chipforge.hw.shift_add import ShiftAdd
from chipforge.hw.testing import run_stream
from chipforge.sim.cycle.shift_add import SHIFT_ADD_LATENCY
from chipforge.sim.ref.crossbar import adc_codes, encode_weights, shift_add

CONFIGS = {
    "isaac": ISAAC_CROSSBAR,
    "two-column-dac2": CrossbarConfig(rows=16, cols=4, cell_bits=2, weight_bits=8,
                                      input_bits=8, dac_bits=2, adc_bits=6,
                                      weight_encoding=WeightEncoding.TWO_COLUMN),
    "offset-unsigned-dac3": CrossbarConfig(rows=8, cols=4, cell_bits=1, weight_bits=5,
                                           input_bits=7, dac_bits=3, adc_bits=4,
                                           signed_inputs=False),
}


def beats_for(codes, unit, flipped, cfg):
    """Stream beats (one per input cycle) for every (vector, column), in that order."""
    batch, cycles, cols, _ = codes.shape
    beats = []
    for b in range(batch):
        for c in range(cols):
            for t in range(cycles):
                beat = {"codes": [int(v) for v in codes[b, t, c]]}
                if cfg.has_unit_column:
                    beat["unit"] = int(unit[b, t])
                if cfg.flip_encoding:
                    beat["flip"] = int(sum(1 << p for p, f in enumerate(flipped[c]) if f))
                beats.append(beat)
    return beats


def random_codes(cfg, rng, batch, cols):
    """Arbitrary ADC codes, extremes included: the unit must be exact for any code."""
    phys = cfg.physical_cols_per_weight
    codes = rng.integers(0, cfg.adc_max_code + 1, (batch, cfg.input_cycles, cols, phys))
    codes[0] = cfg.adc_max_code
    codes[1] = 0
    unit = rng.integers(0, cfg.adc_max_code + 1, (batch, cfg.input_cycles))
    unit[0] = cfg.adc_max_code
    flipped = rng.random((cols, phys)) < 0.5 if cfg.flip_encoding else np.zeros((cols, phys), bool)
    return codes, unit, flipped


@pytest.mark.parametrize("name", CONFIGS)
def test_shift_add_matches_reference_on_random_codes(name):
    cfg = CONFIGS[name]
    rng = np.random.default_rng(1)
    codes, unit, flipped = random_codes(cfg, rng, batch=6, cols=3)
    expected = shift_add(codes, unit, flipped, cfg).ravel().tolist()
    dut = ShiftAdd(cfg)
    run = run_stream(dut, beats_for(codes, unit, flipped, cfg), len(expected),
                     idle_prob=0.3, ready_prob=0.5, seed=3)
    assert run.outputs == expected


@pytest.mark.parametrize("name", CONFIGS)
def test_shift_add_on_crossbar_readout_equals_matmul(name):
    cfg = CONFIGS[name]
    rng = np.random.default_rng(2)
    rows = min(cfg.rows, 12)
    weights = rng.integers(*cfg.weight_range, endpoint=True, size=(rows, 2))
    x = rng.integers(*cfg.input_range, endpoint=True, size=(3, rows))
    readout = adc_codes(x, encode_weights(weights, cfg), cfg)
    run = run_stream(ShiftAdd(cfg), beats_for(readout.codes, readout.unit, readout.flipped, cfg),
                     x.shape[0] * 2)
    result = np.array(run.outputs).reshape(x.shape[0], 2)
    reference = shift_add(readout.codes, readout.unit, readout.flipped, cfg)
    assert np.array_equal(result, reference)
    if not readout.saturated:
        assert np.array_equal(result, x @ weights)


def test_shift_add_streams_back_to_back_at_one_beat_per_cycle():
    cfg = CONFIGS["two-column-dac2"]
    rng = np.random.default_rng(4)
    codes, unit, flipped = random_codes(cfg, rng, batch=4, cols=1)
    run = run_stream(ShiftAdd(cfg), beats_for(codes, unit, flipped, cfg), 4)
    # One beat per cycle, no bubbles, and the result SHIFT_ADD_LATENCY (2: two pipeline
    # stages) cycles after the last beat.
    assert SHIFT_ADD_LATENCY == 2
    assert run.input_cycles == list(range(1, len(run.input_cycles) + 1))
    last_beats = run.input_cycles[cfg.input_cycles - 1::cfg.input_cycles]
    assert run.output_cycles == [c + SHIFT_ADD_LATENCY for c in last_beats]
