"""cocotb testbench of the generated token packager (rtl/token-packager).

Reference: ``chipforge.sim.ref.token_packager.packager_beats``; config and widths from the
manifest. Stimulus: 150 images of 1..16 random tokens (full-scale negative channels and
full-scale scores mixed in, about 20 % forced keeps), back to back; random idle cycles on
the input and back-pressure on the output.
"""

import os
from pathlib import Path

import cocotb
import numpy as np
import pytest

from chipforge.config import TokenPackagerConfig
from chipforge.verify.manifest import load_manifest

HERE = Path(__file__).resolve().parent
RTL = HERE.parents[1] / "rtl" / "token-packager"


def _stimulus(cfg, seed, n_images=150):
    from chipforge.sim.ref.token_packager import packager_beats

    rng = np.random.default_rng(seed)
    beats, expected = [], []
    lim = 1 << (cfg.data_bits - 1)
    for _ in range(n_images):
        t = int(rng.integers(1, 17))
        tokens = rng.integers(-lim, lim, (t, cfg.channels))
        tokens[rng.random(t) < 0.1] = -lim
        scores = rng.integers(0, 1 << cfg.score_bits, t)
        scores[rng.random(t) < 0.1] = (1 << cfg.score_bits) - 1
        force = rng.random(t) < 0.2
        for k in range(t):
            beats.append({"data": tokens[k].tolist(), "score": int(scores[k]),
                          "force": int(force[k]), "last": int(k == t - 1)})
        expected += packager_beats(tokens, scores, force, cfg)
    return beats, expected


@cocotb.test()
async def token_packager_random_idle_backpressure(dut):
    from chipforge.verify.cocotb_stream import (
        Scoreboard,
        StreamDriver,
        StreamMonitor,
        check_reset_clears_pending,
        reset_dut,
        start,
    )

    manifest = load_manifest(os.environ["CHIPFORGE_MANIFEST"])
    cfg = TokenPackagerConfig.from_dict(manifest.config)
    beats, expected = _stimulus(cfg, seed=5)
    i_codec, o_codec = manifest.codec("i_stream__payload"), manifest.codec("o_stream__payload")
    words = [i_codec.pack(b) for b in beats]

    await reset_dut(dut)
    driver = StreamDriver(dut, "i_stream", idle_prob=0.25, seed=15)
    monitor = StreamMonitor(dut, "o_stream", ready_prob=0.6, seed=16)
    start(driver.send(words))
    received = await monitor.collect(len(expected), timeout_cycles=10 * len(words) + 100)
    # A reset while a result waits on a stalled output must clear it.
    await check_reset_clears_pending(dut, words)
    Scoreboard("token_packager").check(
        [o_codec.pack(e) for e in expected], received,
        context=lambda k: f"beat {k}: expected {expected[k]}")


# Verilator builds take a minute on the shared CI machine: run them with `make test-slow`.
@pytest.mark.parametrize("simulator", ["icarus",
                                       pytest.param("verilator", marks=pytest.mark.slow)])
def test_token_packager_rtl(simulator, tmp_path):
    from chipforge.verify.runner import run_cocotb

    run_cocotb(RTL, __file__, simulator=simulator, build_root=tmp_path)
