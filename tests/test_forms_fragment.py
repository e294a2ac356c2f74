"""FORMS fragment datapath: reference (sim/ref) against x @ W, and the Amaranth RTL against
the reference bit for bit and against the cycle model cycle for cycle."""

import numpy as np
import pytest

from chipforge.config import FORMS_FRAGMENT8, FormsFragmentConfig
from chipforge.hw.forms_fragment import FormsFragment
from chipforge.hw.testing import run_stream
from chipforge.sim.cycle.arch import FORMS8
from chipforge.sim.cycle.model import group_eic
from chipforge.sim.ref.forms_fragment import (
    FragmentJobs,
    effective_bits,
    forms_dot,
    fragment_cycles,
    fragment_eic,
    fragment_jobs,
    run_fragments,
)

CONFIGS = {
    "forms8": FORMS_FRAGMENT8,
    "frag4-1col-adc3-clips": FormsFragmentConfig(fragment_size=4, columns=1, input_bits=8,
                                                 adc_bits=3, max_fragments=8),
    "frag16-3col-4bit-cells": FormsFragmentConfig(fragment_size=16, columns=3, input_bits=6,
                                                  cell_bits=4, magnitude_bits=7, adc_bits=8,
                                                  max_fragments=4),
}


def random_jobs(cfg, rng, n):
    """Random jobs with every effective width 0..input_bits, plus the extremes."""
    m = cfg.fragment_size
    top = (1 << cfg.input_bits) - 1
    inputs = rng.integers(0, top + 1, (n, m)) >> rng.integers(0, cfg.input_bits + 1, (n, 1))
    inputs[0] = top            # every register full: input_bits shift cycles
    inputs[1] = 0              # nothing to shift: EIC 0
    inputs[2] = 0
    inputs[2, -1] = 1 << (cfg.input_bits - 1)   # one MSB alone decides the EIC
    levels = rng.integers(0, 1 << cfg.cell_bits, (n, m, cfg.columns, cfg.slices))
    levels[0] = (1 << cfg.cell_bits) - 1       # full-scale sums (clip where the ADC is short)
    negative = rng.random((n, cfg.columns)) < 0.5
    last = rng.random(n) < 1 / cfg.max_fragments
    # Never more than max_fragments per dot product; the stream ends a dot product.
    run = 0
    for f in range(n):
        run += 1
        if run == cfg.max_fragments:
            last[f] = True
        if last[f]:
            run = 0
    last[-1] = True
    return FragmentJobs(inputs, levels, negative, last)


def beats(cfg, jobs):
    return [{"inputs": jobs.inputs[f].tolist(), "levels": jobs.levels[f].tolist(),
             "negative": int(sum(int(b) << c for c, b in enumerate(jobs.negative[f]))),
             "last": int(jobs.last[f])} for f in range(len(jobs.last))]


def test_effective_bits_and_the_papers_example():
    # FORMS Fig. 7: inputs with 6 and 7 effective bits need EIC = 7.
    x = np.array([[0b101011, 0b1001011, 0b110, 0]])
    assert effective_bits(x, 16).tolist() == [[6, 7, 3, 0]]
    assert fragment_eic(x, FORMS_FRAGMENT8.replace(fragment_size=4)).tolist() == [7]
    assert effective_bits(np.array([-1, 65535]), 16).tolist() == [16, 16]
    rng = np.random.default_rng(0)
    v = rng.integers(0, 1 << 16, 1000)
    brute = np.array([int(i).bit_length() for i in v])
    assert np.array_equal(effective_bits(v, 16), brute)
    with pytest.raises(ValueError, match="fit 16 bits"):
        effective_bits(np.array([1 << 16]), 16)


@pytest.mark.parametrize("name", CONFIGS)
def test_reference_equals_matmul_on_polarized_weights(name):
    cfg = CONFIGS[name]
    rng = np.random.default_rng(1)
    k = cfg.fragment_size * cfg.max_fragments - 3
    x = rng.integers(0, 1 << cfg.input_bits, (7, k)) >> rng.integers(0, cfg.input_bits, (7, 1))
    # Polarized: each fragment's column is all >= 0 or all <= 0.
    mag = rng.integers(0, 1 << cfg.magnitude_bits, (k, cfg.columns))
    sign = np.repeat(np.where(rng.random((cfg.max_fragments, cfg.columns)) < 0.5, -1, 1),
                     cfg.fragment_size, axis=0)[:k]
    w = mag * sign
    result = forms_dot(x, w, cfg)
    if cfg.adc_bits >= cfg.exact_adc_bits:
        assert np.array_equal(result, x @ w)
    else:   # a short ADC clips: each polarity's sum can only lose magnitude
        assert not np.array_equal(result, x @ w)
        pos, neg = np.maximum(w, 0), np.minimum(w, 0)
        assert np.all(forms_dot(x, pos, cfg) <= x @ pos)
        assert np.all(forms_dot(x, neg, cfg) >= x @ neg)


def test_reference_rejects_unpolarized_weights_and_wide_inputs():
    cfg = FORMS_FRAGMENT8
    w = np.ones((8, 2), dtype=np.int64)
    w[3, 1] = -1
    with pytest.raises(ValueError, match="not polarized"):
        fragment_jobs(np.zeros((1, 8), dtype=np.int64), w, cfg)
    with pytest.raises(ValueError, match="unsigned 16-bit"):
        fragment_jobs(np.full((1, 8), 1 << 16), np.ones((8, 2), dtype=np.int64), cfg)
    with pytest.raises(ValueError, match="max_fragments"):
        fragment_jobs(np.zeros((1, 8 * 17), dtype=np.int64), np.ones((8 * 17, 2), np.int64), cfg)


@pytest.mark.parametrize("name", CONFIGS)
def test_rtl_matches_reference_with_idle_and_backpressure(name):
    cfg = CONFIGS[name]
    jobs = random_jobs(cfg, np.random.default_rng(2), 60)
    expected = run_fragments(jobs, cfg).tolist()
    run = run_stream(FormsFragment(cfg), beats(cfg, jobs), len(expected), idle_prob=0.3,
                     ready_prob=0.4, seed=4)
    assert [list(o) for o in run.outputs] == expected


@pytest.mark.parametrize("name", CONFIGS)
def test_rtl_cycles_per_fragment_equal_the_cycle_model(name):
    """Back to back, job f+1 is accepted exactly EIC_f + 1 cycles after job f: the RTL's
    cycles equal the reference's fragment_cycles and the cycle model's group cycles."""
    cfg = CONFIGS[name]
    jobs = random_jobs(cfg, np.random.default_rng(3), 80)
    expected = run_fragments(jobs, cfg).tolist()
    run = run_stream(FormsFragment(cfg), beats(cfg, jobs), len(expected))
    assert [list(o) for o in run.outputs] == expected
    measured = np.diff(run.input_cycles)
    reference = fragment_cycles(jobs.inputs, cfg)[:-1]
    model = (group_eic(jobs.inputs, cfg.input_bits, cfg.fragment_size)[:, 0]
             + FORMS8.group_overhead_cycles)[:-1]
    assert np.array_equal(measured, reference)
    assert np.array_equal(measured, model)
    assert set(fragment_eic(jobs.inputs, cfg)) >= {0, cfg.input_bits}


def test_rtl_zero_skip_detector_feeds_exactly_the_effective_cycles():
    """dac_valid is high exactly EIC cycles per job, and the DAC bits are the inputs' bits."""
    from amaranth.sim import Simulator

    cfg = FormsFragmentConfig(fragment_size=4, columns=1, input_bits=8, adc_bits=4)
    jobs = random_jobs(cfg, np.random.default_rng(5), 12)
    dut = FormsFragment(cfg)
    fed: list[int] = []
    triggers = []

    async def bench(ctx):
        for beat in beats(cfg, jobs):
            ctx.set(dut.i_stream.payload, beat)
            ctx.set(dut.i_stream.valid, 1)
            ctx.set(dut.o_stream.ready, 1)
            while True:
                _, _, ready = await ctx.tick().sample(dut.i_stream.ready)
                if ready:
                    break
            ctx.set(dut.i_stream.valid, 0)
            count = 0
            while True:
                dac, bits = ctx.get(dut.dac_valid), ctx.get(dut.dac_bits)
                trig = ctx.get(dut.trigger)
                if trig:
                    triggers.append(count)
                    break
                if dac:
                    fed.append(bits)
                    count += 1
                await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert triggers == fragment_eic(jobs.inputs, cfg).tolist()
    expect = [sum(((int(v) >> t) & 1) << i for i, v in enumerate(row))
              for row, e in zip(jobs.inputs, triggers, strict=True) for t in range(e)]
    assert fed == expect
