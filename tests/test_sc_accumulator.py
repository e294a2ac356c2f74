"""SC accumulator: the LFSR reference's properties, and the Amaranth block against it."""

import numpy as np
import pytest

from chipforge.hw.sc_accumulator import ScAccumulator
from chipforge.hw.testing import run_stream
from chipforge.sc_config import LFSR_TAPS, SC_DIGITS, ScAccumulation, ScAccumulatorConfig
from chipforge.sim.ref.sc_accumulator import lfsr_table, sc_accumulate, sng_bits

CONFIGS = {
    "digits-count": SC_DIGITS,
    "majority-odd": ScAccumulatorConfig(streams=3, code_bits=5, length=9,
                                        accumulation=ScAccumulation.MAJORITY, seed=5),
    "majority-even": ScAccumulatorConfig(streams=4, code_bits=4, length=6,
                                         accumulation=ScAccumulation.MAJORITY, seed=2),
    "count-single": ScAccumulatorConfig(streams=1, code_bits=3, length=1, seed=0),
    "count-wide": ScAccumulatorConfig(streams=7, code_bits=12, length=17, seed=99),
}


@pytest.mark.parametrize("width", sorted(LFSR_TAPS))
def test_every_lfsr_polynomial_is_maximal_length(width):
    states, index = lfsr_table(width)
    assert len(states) == (1 << width) - 1
    assert sorted(states.tolist()) == list(range(1, 1 << width))
    assert index[states[5]] == 5


def test_sng_over_one_period_gives_code_ones():
    cfg = ScAccumulatorConfig(streams=3, code_bits=6, length=63, seed=4)
    codes = np.array([[0, 17, 63]])
    bits = sng_bits(codes, cfg)
    # One full period of the LFSR visits every state once: exactly `code` ones.
    assert bits.sum(axis=1).tolist() == [[0, 17, 63]]


def test_count_and_majority_by_hand():
    cfg = ScAccumulatorConfig(streams=3, code_bits=4, length=5,
                              accumulation=ScAccumulation.MAJORITY, seed=3)
    codes = np.array([[15, 0, 7], [3, 12, 9]])
    bits = sng_bits(codes, cfg)
    votes = (2 * bits.sum(axis=2) >= 3).sum(axis=1)
    result = sc_accumulate(codes, cfg)
    assert result.count.tolist() == votes.tolist()
    assert result.sign.tolist() == [1 if 2 * v >= 5 else -1 for v in votes]
    counting = cfg.replace(accumulation=ScAccumulation.COUNT)
    assert sc_accumulate(codes, counting).count.tolist() == bits.sum(axis=(1, 2)).tolist()


def test_lfsrs_run_free_across_vectors():
    cfg = SC_DIGITS
    codes = np.random.default_rng(0).integers(0, cfg.code_max + 1, (6, cfg.streams))
    whole = sc_accumulate(codes, cfg)
    tail = sc_accumulate(codes[2:], cfg, first_vector=2)
    assert whole.count[2:].tolist() == tail.count.tolist()
    # A restarted generator repeats itself: the same codes at vector 0 and 1 differ.
    same = np.repeat(codes[:1], 2, axis=0)
    assert not np.array_equal(sng_bits(same, cfg)[0], sng_bits(same, cfg)[1])


def test_counting_estimates_the_probability():
    cfg = ScAccumulatorConfig(streams=2, code_bits=10, length=4000, seed=8)
    codes = np.array([[256, 768]])
    count = int(sc_accumulate(codes, cfg).count[0])
    assert abs(count / 8000 - (256 + 768) / 2 / 1023) < 0.02


def test_config_errors_name_field_and_rule():
    with pytest.raises(ValueError, match="code_bits must be an integer in 3..16, not 2"):
        ScAccumulatorConfig(code_bits=2)
    with pytest.raises(ValueError, match="streams must be <= 2\\*\\*code_bits - 1 = 7"):
        ScAccumulatorConfig(streams=8, code_bits=3)
    with pytest.raises(ValueError, match="accumulation must be a ScAccumulation"):
        ScAccumulatorConfig(accumulation="count")
    with pytest.raises(ValueError, match="codes must be in 0..255"):
        sc_accumulate(np.full((1, 4), 256), SC_DIGITS)
    assert ScAccumulatorConfig.from_dict(SC_DIGITS.to_dict()) == SC_DIGITS


def _stimulus(cfg, rng, n):
    codes = rng.integers(0, cfg.code_max + 1, (n, cfg.streams))
    codes[0] = 0                      # extremes: never, always, exactly half
    codes[1] = cfg.code_max
    codes[2] = cfg.code_max // 2
    return codes


def _unpack(outputs):
    return [int(o["count"]) for o in outputs], [1 if o["sign"] else -1 for o in outputs]


@pytest.mark.parametrize("name", CONFIGS)
def test_rtl_matches_reference_with_idle_and_backpressure(name):
    cfg = CONFIGS[name]
    codes = _stimulus(cfg, np.random.default_rng(1), 12)
    ref = sc_accumulate(codes, cfg)
    run = run_stream(ScAccumulator(cfg), [c.tolist() for c in codes], len(codes),
                     idle_prob=0.4, ready_prob=0.4, seed=3,
                     max_cycles=len(codes) * (cfg.length + 30) + 100)
    counts, signs = _unpack(run.outputs)
    assert counts == ref.count.tolist()
    assert signs == ref.sign.tolist()


@pytest.mark.parametrize("name", ["digits-count", "majority-odd"])
def test_rtl_cycles_equal_the_cycle_model(name):
    cfg = CONFIGS[name]
    codes = _stimulus(cfg, np.random.default_rng(2), 5)
    run = run_stream(ScAccumulator(cfg), [c.tolist() for c in codes], len(codes),
                     max_cycles=len(codes) * (cfg.length + 5) + 20)
    # Back to back: one vector every cycles_per_vector cycles; each result
    # cycles_per_vector cycles after its input beat.
    assert np.diff(run.input_cycles).tolist() == [cfg.cycles_per_vector] * (len(codes) - 1)
    assert [o - i for i, o in zip(run.input_cycles, run.output_cycles, strict=True)] == \
        [cfg.length + 1] * len(codes)
    assert sc_accumulate(codes, cfg).count.tolist() == _unpack(run.outputs)[0]
