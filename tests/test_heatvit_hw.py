"""Amaranth simulation of the HeatViT blocks against their references, bit for bit, with
random stimulus, idle cycles and back-pressure; latency/throughput as the docstrings say."""

import numpy as np
import pytest

from chipforge.config import (
    HEATVIT_EXP,
    HEATVIT_GELU,
    HEATVIT_PACKAGER,
    HEATVIT_SELECTOR_LINEAR,
    HEATVIT_SIGMOID,
    PlanSigmoidConfig,
    PolyExpConfig,
    PolyGeluConfig,
    TokenLinearConfig,
    TokenPackagerConfig,
)
from chipforge.hw.heatvit import PlanSigmoid, PolyExp, PolyGelu, TokenLinear, TokenPackager
from chipforge.hw.testing import run_stream
from chipforge.sim.ref.plan_sigmoid import plan_sigmoid
from chipforge.sim.ref.poly_exp import poly_exp
from chipforge.sim.ref.poly_gelu import poly_gelu
from chipforge.sim.ref.token_linear import token_linear
from chipforge.sim.ref.token_packager import packager_beats


def _every_code(bits, repeats, seed):
    codes = np.arange(-(1 << (bits - 1)), 1 << (bits - 1))
    rng = np.random.default_rng(seed)
    return np.concatenate([codes, rng.choice(codes, repeats * codes.size)])


@pytest.mark.parametrize("cfg", [HEATVIT_GELU, PolyGeluConfig(frac_bits=2),
                                 PolyGeluConfig(data_bits=10, frac_bits=6)])
def test_poly_gelu_rtl_matches_reference(cfg):
    x = _every_code(cfg.data_bits, 1, seed=cfg.frac_bits)
    run = run_stream(PolyGelu(cfg), x.tolist(), len(x), idle_prob=0.2, ready_prob=0.7, seed=3)
    assert run.outputs == poly_gelu(x, cfg).tolist()


@pytest.mark.parametrize("cfg", [HEATVIT_SIGMOID, PlanSigmoidConfig(in_bits=10, frac_bits=6,
                                                                    out_frac_bits=9)])
def test_plan_sigmoid_rtl_matches_reference(cfg):
    x = _every_code(cfg.in_bits, 1, seed=1)
    run = run_stream(PlanSigmoid(cfg), x.tolist(), len(x), idle_prob=0.2, ready_prob=0.7,
                     seed=5)
    assert run.outputs == plan_sigmoid(x, cfg).tolist()


@pytest.mark.parametrize("cfg", [HEATVIT_EXP, PolyExpConfig(in_bits=12, frac_bits=7,
                                                             out_frac_bits=12)])
def test_poly_exp_rtl_matches_reference(cfg):
    codes = np.arange(-(1 << (cfg.in_bits - 1)), 1)
    x = np.concatenate([codes, np.random.default_rng(2).choice(codes, codes.size)])
    run = run_stream(PolyExp(cfg), x.tolist(), len(x), idle_prob=0.2, ready_prob=0.7, seed=7)
    assert run.outputs == poly_exp(x, cfg).tolist()


def test_units_stream_one_value_per_cycle_with_documented_latency():
    from chipforge.sim.cycle.heatvit import pipelined_unit_cycles

    for dut, latency, x in [(PolyGelu(HEATVIT_GELU), 3, list(range(-50, 50))),
                            (PolyExp(HEATVIT_EXP), 3, list(range(-100, 0))),
                            (PlanSigmoid(HEATVIT_SIGMOID), 1, list(range(-50, 50)))]:
        run = run_stream(dut, x, len(x))
        assert np.all(np.diff(run.input_cycles) == 1)
        assert np.all(np.diff(run.output_cycles) == 1)
        assert run.output_cycles[0] - run.input_cycles[0] == latency
        assert (run.output_cycles[-1] - run.input_cycles[0]
                == pipelined_unit_cycles(len(x), latency))


def _images(cfg, n_images, rng):
    images = []
    for _ in range(n_images):
        t = int(rng.integers(1, 12))
        lim = 1 << (cfg.data_bits - 1)
        tokens = rng.integers(-lim, lim, (t, cfg.channels))
        tokens[rng.random(t) < 0.1] = -lim                 # extremes
        scores = rng.integers(0, 1 << cfg.score_bits, t)
        scores[rng.random(t) < 0.1] = (1 << cfg.score_bits) - 1
        force = rng.random(t) < 0.2
        images.append((tokens, scores, force))
    return images


def _packager_io(cfg, images):
    beats, expected = [], []
    for tokens, scores, force in images:
        for k in range(len(tokens)):
            beats.append({"data": tokens[k].tolist(), "score": int(scores[k]),
                          "force": int(force[k]), "last": int(k == len(tokens) - 1)})
        expected += packager_beats(tokens, scores, force, cfg)
    return beats, expected


def _view(payload, cfg):
    return {"data": [int(payload.data[k]) for k in range(cfg.channels)],
            "weight": int(payload.weight), "package": int(payload.package),
            "last": int(payload.last)}


@pytest.mark.parametrize("cfg", [HEATVIT_PACKAGER,
                                 TokenPackagerConfig(channels=3, data_bits=8, threshold=100,
                                                     max_tokens=16)])
def test_token_packager_rtl_matches_reference(cfg):
    rng = np.random.default_rng(0)
    beats, expected = _packager_io(cfg, _images(cfg, 60, rng))
    run = run_stream(TokenPackager(cfg), beats, len(expected), idle_prob=0.25,
                     ready_prob=0.6, seed=9)
    assert [_view(p, cfg) for p in run.outputs] == expected


def test_token_packager_throughput():
    cfg = HEATVIT_PACKAGER
    rng = np.random.default_rng(1)
    images = _images(cfg, 20, rng)
    beats, expected = _packager_io(cfg, images)
    run = run_stream(TokenPackager(cfg), beats, len(expected))
    # One token per cycle, plus one stall cycle per image whose last token is kept and
    # followed by a package beat.
    from chipforge.sim.cycle.heatvit import token_packager_cycles

    stalls = sum(1 for tokens, scores, force in images[:-1]
                 if (force[-1] or scores[-1] >= cfg.threshold)
                 and np.any(~force & (scores < cfg.threshold)))
    assert run.input_cycles[-1] - run.input_cycles[0] == len(beats) - 1 + stalls
    kept_last = [bool((force[-1] or scores[-1] >= cfg.threshold)
                      and np.any(~force & (scores < cfg.threshold)))
                 for tokens, scores, force in images]
    assert run.input_cycles[-1] - run.input_cycles[0] == token_packager_cycles(
        kept_last, [len(t) for t, _, _ in images])


@pytest.mark.slow
def test_xilinx_synthesis_counts(tmp_path):
    # The GELU unit maps its three multipliers to DSP48E1s, the MAC row its 16; PLAN needs
    # none (shifts only).
    from chipforge.hw.generate import BLOCKS, generate
    from chipforge.toolchain import synthesize

    counts = {}
    for block in ("poly-gelu", "plan-sigmoid", "token-linear"):
        path = generate(block, tmp_path)[0]
        counts[block] = synthesize(path, BLOCKS[block].module, "xilinx")
    assert counts["poly-gelu"].get("DSP48E1", 0) == 3
    assert counts["token-linear"].get("DSP48E1", 0) == 16
    assert counts["plan-sigmoid"].get("DSP48E1", 0) == 0
    assert sum(v for k, v in counts["plan-sigmoid"].items() if k.startswith("LUT")) < 100


@pytest.mark.parametrize("cfg", [HEATVIT_SELECTOR_LINEAR,
                                 TokenLinearConfig(in_features=3, out_features=1, out_shift=0,
                                                   out_bits=12),
                                 TokenLinearConfig(in_features=5, out_features=4, out_shift=9,
                                                   bias_bits=12, out_bits=6)])
def test_token_linear_rtl_matches_reference(cfg):

    rng = np.random.default_rng(cfg.in_features)
    lim = 1 << (cfg.data_bits - 1)
    w = rng.integers(-lim, lim, (cfg.out_features, cfg.in_features))
    b = rng.integers(-(1 << (cfg.bias_bits - 1)), 1 << (cfg.bias_bits - 1), cfg.out_features)
    x = rng.integers(-lim, lim, (40, cfg.in_features))
    x[0], w[0] = -lim, -lim                       # the largest product sum
    expected = token_linear(x, w, b, cfg).ravel().tolist()

    outputs = _run_linear(cfg, w, b, x, len(expected))
    assert outputs == expected


def _run_linear(cfg, w, b, x, n_outputs, idle_prob=0.25, ready_prob=0.6, seed=2):
    import random

    from amaranth.sim import Simulator

    dut = TokenLinear(cfg)
    rng_in, rng_out = random.Random(seed), random.Random(seed + 1)
    outputs = []
    state = {"cycles": [], "first_in": None}

    async def producer(ctx):
        for o in range(cfg.out_features):
            ctx.set(dut.w_stream.payload, {"row": w[o].tolist(), "bias": int(b[o])})
            ctx.set(dut.w_stream.valid, 1)
            await ctx.tick()
        ctx.set(dut.w_stream.valid, 0)
        cycle = cfg.out_features
        for token in x:
            while rng_in.random() < idle_prob:
                await ctx.tick()
                cycle += 1
            ctx.set(dut.i_stream.payload, token.tolist())
            ctx.set(dut.i_stream.valid, 1)
            while True:
                _, _, ready = await ctx.tick().sample(dut.i_stream.ready)
                cycle += 1
                if ready:
                    if state["first_in"] is None:
                        state["first_in"] = cycle
                    break
            ctx.set(dut.i_stream.valid, 0)

    async def consumer(ctx):
        cycle = 0
        while len(outputs) < n_outputs:
            ctx.set(dut.o_stream.ready, int(rng_out.random() < ready_prob))
            _, _, valid, ready, payload = await ctx.tick().sample(
                dut.o_stream.valid, dut.o_stream.ready, dut.o_stream.payload)
            cycle += 1
            if valid and ready:
                outputs.append(payload)
                state["cycles"].append(cycle)
            assert cycle < 50 * n_outputs + 100

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    _run_linear.last_cycles = state["cycles"]
    _run_linear.first_in = state["first_in"]
    return outputs


def test_token_linear_one_output_per_cycle():
    cfg = HEATVIT_SELECTOR_LINEAR
    rng = np.random.default_rng(0)
    w = rng.integers(-128, 128, (cfg.out_features, cfg.in_features))
    b = rng.integers(-1000, 1000, cfg.out_features)
    x = rng.integers(-128, 128, (10, cfg.in_features))
    out = _run_linear(cfg, w, b, x, 10 * cfg.out_features, idle_prob=0, ready_prob=1)
    assert out == token_linear(x, w, b, cfg).ravel().tolist()
    # Back to back: 80 outputs in 80 consecutive cycles, as the cycle model counts.
    from chipforge.sim.cycle.heatvit import token_linear_cycles

    assert np.all(np.diff(_run_linear.last_cycles) == 1)
    assert _run_linear.last_cycles[-1] == token_linear_cycles(10, cfg) + _run_linear.first_in
