"""Amaranth simulation of the HeatViT blocks against their references, bit for bit, with
random stimulus, idle cycles and back-pressure; latency/throughput as the docstrings say."""

import numpy as np
import pytest

from chipforge.config import (
    HEATVIT_GELU,
    HEATVIT_PACKAGER,
    HEATVIT_SIGMOID,
    PlanSigmoidConfig,
    PolyGeluConfig,
    TokenPackagerConfig,
)
from chipforge.hw.heatvit import PlanSigmoid, PolyGelu, TokenPackager
from chipforge.hw.testing import run_stream
from chipforge.sim.ref.plan_sigmoid import plan_sigmoid
from chipforge.sim.ref.poly_gelu import poly_gelu
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


def test_units_stream_one_value_per_cycle_with_documented_latency():
    for dut, latency, x in [(PolyGelu(HEATVIT_GELU), 3, list(range(-50, 50))),
                            (PlanSigmoid(HEATVIT_SIGMOID), 1, list(range(-50, 50)))]:
        run = run_stream(dut, x, len(x))
        assert np.all(np.diff(run.input_cycles) == 1)
        assert np.all(np.diff(run.output_cycles) == 1)
        assert run.output_cycles[0] - run.input_cycles[0] == latency


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
    stalls = sum(1 for tokens, scores, force in images[:-1]
                 if (force[-1] or scores[-1] >= cfg.threshold)
                 and np.any(~force & (scores < cfg.threshold)))
    assert run.input_cycles[-1] - run.input_cycles[0] == len(beats) - 1 + stalls


@pytest.mark.slow
def test_xilinx_synthesis_counts(tmp_path):
    # The GELU unit maps its three multipliers to DSP48E1s; PLAN needs none (shifts only).
    from chipforge.hw.generate import BLOCKS, generate
    from chipforge.toolchain import synthesize

    counts = {}
    for block in ("poly-gelu", "plan-sigmoid"):
        path = generate(block, tmp_path)[0]
        counts[block] = synthesize(path, BLOCKS[block].module, "xilinx")
    assert counts["poly-gelu"].get("DSP48E1", 0) == 3
    assert counts["plan-sigmoid"].get("DSP48E1", 0) == 0
    assert sum(v for k, v in counts["plan-sigmoid"].items() if k.startswith("LUT")) < 100
