"""cocotb testbench of the generated SC accumulator (rtl/sc-accumulator).

The reference model is ``chipforge.sim.ref.sc_accumulator.sc_accumulate`` with the same
LFSR seeds (from the config in the manifest; every width comes from the manifest too).
Stimulus: 150 vectors of random probability codes plus the extremes (all codes 0, all at
full scale, all at half scale, one stream high and the rest low), with random idle cycles
on the input and random back-pressure on the output, ``i_stream.ready`` and
``o_stream.valid`` checked in every cycle against the docstring's handshake
(``AccumulatorTiming``); then a stall-free run whose cycles
are checked against the cycle model (``cfg.cycles_per_vector`` between vectors, result
``cfg.length + 1`` cycles after its input).
"""

import os
from pathlib import Path

import cocotb
import numpy as np
import pytest

from chipforge.sc_config import ScAccumulatorConfig
from chipforge.verify.manifest import load_manifest

HERE = Path(__file__).resolve().parent
RTL = HERE.parents[1] / "rtl" / "sc-accumulator"


def _stimulus(cfg, seed, n):
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, cfg.code_max + 1, (n, cfg.streams))
    codes[0], codes[1], codes[2] = 0, cfg.code_max, cfg.code_max // 2
    codes[3] = 0
    codes[3, 0] = cfg.code_max
    # Near-threshold probabilities, where a wrong bit most likely flips the sign.
    codes[4:20] = rng.integers(cfg.code_max // 2 - 2, cfg.code_max // 2 + 3,
                               (16, cfg.streams))
    return codes


class AccumulatorTiming:
    """The accumulator's handshake, cycle by cycle, from its docstring (hw/
    sc_accumulator.py): the input is taken when idle and the output register is free
    (empty, or its result taken in this cycle); the vector then runs ``length`` cycles and
    its result is valid in the next, until taken."""

    def __init__(self, length):
        self.length, self.busy, self.cycle, self.valid = length, False, 0, False

    def ports(self, o_ready):
        return {"i_stream__ready": not self.busy and (not self.valid or o_ready),
                "o_stream__valid": self.valid}

    def step(self, i_valid, o_ready):
        take = i_valid and not self.busy and (not self.valid or o_ready)
        self.valid = self.valid and not o_ready
        if self.busy:
            if self.cycle == self.length - 1:
                self.busy, self.valid = False, True
            self.cycle += 1
        if take:
            self.busy, self.cycle = True, 0


async def _run(dut, codes, idle_prob, ready_prob, seed):
    from chipforge.verify.cocotb_stream import (
        HandshakeChecker,
        StreamDriver,
        StreamMonitor,
        check_reset_clears_pending,
        reset_dut,
        start,
    )

    manifest = load_manifest(os.environ["CHIPFORGE_MANIFEST"])
    cfg = ScAccumulatorConfig.from_dict(manifest.config)
    i_codec = manifest.codec("i_stream__payload")
    o_codec = manifest.codec("o_stream__payload")
    words = [i_codec.pack([int(c) for c in row]) for row in codes]
    await reset_dut(dut)
    driver = StreamDriver(dut, "i_stream", idle_prob=idle_prob, seed=seed)
    monitor = StreamMonitor(dut, "o_stream", ready_prob=ready_prob, seed=seed + 1)
    timing = HandshakeChecker(dut, AccumulatorTiming(cfg.length))
    timing.start()
    start(driver.send(words))
    received = await monitor.collect(len(words),
                                     timeout_cycles=len(words) * (cfg.length + 40) + 100)
    assert await timing.stop() > len(words), "the handshake checker did not run"
    # A reset while a result waits on a stalled output must clear it.
    await check_reset_clears_pending(dut, words)
    beats = [o_codec.unpack(w) for w in received]
    return cfg, beats, driver.sent_cycles, monitor.received_cycles


@cocotb.test()
async def sc_accumulator_random_idle_backpressure(dut):
    from chipforge.sim.ref.sc_accumulator import sc_accumulate
    from chipforge.verify.cocotb_stream import Scoreboard

    cfg = ScAccumulatorConfig.from_dict(load_manifest(os.environ["CHIPFORGE_MANIFEST"]).config)
    codes = _stimulus(cfg, seed=7, n=150)
    ref = sc_accumulate(codes, cfg)
    _, beats, _, _ = await _run(dut, codes, idle_prob=0.3, ready_prob=0.5, seed=11)
    Scoreboard("sc_accumulator count").check(ref.count.tolist(), [b["count"] for b in beats],
                                             context=lambda k: f"vector {k}: {codes[k]}")
    Scoreboard("sc_accumulator sign").check(ref.sign.tolist(),
                                            [1 if b["sign"] else -1 for b in beats])
    # The extremes: probability 0 counts nothing, probability 1 counts every vote.
    assert beats[0]["count"] == 0 and beats[1]["count"] == cfg.votes_per_vector


@cocotb.test()
async def sc_accumulator_cycles_match_the_model(dut):
    from chipforge.sim.ref.sc_accumulator import sc_accumulate

    cfg = ScAccumulatorConfig.from_dict(load_manifest(os.environ["CHIPFORGE_MANIFEST"]).config)
    codes = _stimulus(cfg, seed=3, n=24)
    _, beats, sent, got = await _run(dut, codes, idle_prob=0.0, ready_prob=1.0, seed=5)
    assert [b["count"] for b in beats] == sc_accumulate(codes, cfg).count.tolist()
    assert np.diff(sent).tolist() == [cfg.cycles_per_vector] * (len(codes) - 1)
    assert [g - s for s, g in zip(sent, got, strict=True)] == [cfg.length + 1] * len(codes)


@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
def test_sc_accumulator_rtl(simulator, tmp_path):
    from chipforge.verify.runner import run_cocotb

    run_cocotb(RTL, __file__, simulator=simulator, build_root=tmp_path)
