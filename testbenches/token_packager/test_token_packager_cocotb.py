"""cocotb testbench of the generated token packager (rtl/token-packager).

Reference: ``chipforge.sim.ref.token_packager.packager_beats``; config and widths from the
manifest. Stimulus: 150 images of 1..16 random tokens (full-scale negative channels and
full-scale scores, scores exactly at the keep threshold and one below it mixed in, about
20 % forced keeps), back to back; random idle cycles on the input and back-pressure on the
output, the input ready and output valid checked in every cycle against the docstring's
handshake (``PackagerTiming``), a reset while a result waits; then 30 images back to back
with the output always ready, every beat's cycle on the Verilog against the docstring's
latency and throughput.
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


def _images(cfg, seed, n_images):
    rng = np.random.default_rng(seed)
    lim = 1 << (cfg.data_bits - 1)
    for _ in range(n_images):
        t = int(rng.integers(1, 17))
        tokens = rng.integers(-lim, lim, (t, cfg.channels))
        tokens[rng.random(t) < 0.1] = -lim
        scores = rng.integers(0, 1 << cfg.score_bits, t)
        scores[rng.random(t) < 0.1] = (1 << cfg.score_bits) - 1
        at = rng.random(t)              # exactly at the keep threshold (kept), one below
        scores[at < 0.1] = cfg.threshold
        scores[(at >= 0.1) & (at < 0.15)] = cfg.threshold - 1
        force = rng.random(t) < 0.2
        yield tokens, scores, force


def _stimulus(cfg, seed, n_images=150):
    from chipforge.sim.ref.token_packager import packager_beats

    beats, expected = [], []
    for tokens, scores, force in _images(cfg, seed, n_images):
        t = len(tokens)
        for k in range(t):
            beats.append({"data": tokens[k].tolist(), "score": int(scores[k]),
                          "force": int(force[k]), "last": int(k == t - 1)})
        expected += packager_beats(tokens, scores, force, cfg)
    return beats, expected


@cocotb.test()
async def token_packager_random_idle_backpressure(dut):
    from chipforge.verify.cocotb_stream import (
        HandshakeChecker,
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
    timing = HandshakeChecker(dut, PackagerTiming(beats, cfg.threshold))
    timing.start()
    start(driver.send(words))
    received = await monitor.collect(len(expected), timeout_cycles=10 * len(words) + 100)
    assert await timing.stop() > len(words), "the handshake checker did not run"
    # A reset while a result waits on a stalled output must clear it.
    await check_reset_clears_pending(dut, words)
    Scoreboard("token_packager").check(
        [o_codec.pack(e) for e in expected], received,
        context=lambda k: f"beat {k}: expected {expected[k]}")

    # Back to back on the Verilog (docstring): a kept token's beat 1 cycle after its
    # transfer; the package 1 cycle after the image's last token, 2 when that token is
    # kept itself; 1 token per cycle, one extra cycle per image whose last token is kept
    # and is followed by a package (an image with nothing pruned has no package beat).
    await reset_dut(dut)
    images = _images(cfg, seed=7, n_images=30)
    beats, expected, keeps, packages = [], [], [], []
    from chipforge.sim.ref.token_packager import packager_beats
    for tokens, scores, force in images:
        for k in range(len(tokens)):
            beats.append({"data": tokens[k].tolist(), "score": int(scores[k]),
                          "force": int(force[k]), "last": int(k == len(tokens) - 1)})
        out = packager_beats(tokens, scores, force, cfg)
        expected += out
        keeps.append(force | (scores >= cfg.threshold))
        packages.append(bool(out[-1]["package"]))
    driver = StreamDriver(dut, "i_stream", idle_prob=0.0, seed=17)
    monitor = StreamMonitor(dut, "o_stream", ready_prob=1.0, seed=18)
    start(driver.send([i_codec.pack(b) for b in beats]))
    received = await monitor.collect(len(expected), timeout_cycles=4 * len(beats) + 100)
    Scoreboard("token_packager").check([o_codec.pack(e) for e in expected], received)
    want_sent, want_valid, cycle, token = [], [], driver.sent_cycles[0], 0
    for keep, package in zip(keeps, packages, strict=True):
        for k in range(len(keep)):
            want_sent.append(cycle)
            if keep[k]:
                want_valid.append(cycle + 1)
            cycle += 1
            token += 1
        if package:
            want_valid.append(cycle + (1 if keep[-1] else 0))
        cycle += 1 if keep[-1] and package else 0
    _same_cycles("tokens taken", driver.sent_cycles, want_sent)
    _same_cycles("beats offered", monitor.valid_cycles, want_valid)


class PackagerTiming:
    """The packager's handshake, cycle by cycle, from its docstring (hw/heatvit.py): the
    input is taken when the output register is free (empty, or its beat taken in this
    cycle) and no package beat waits; a taken token's beat is valid the next cycle if it
    is kept, and so is the package of an image whose last token is pruned; when the last
    token is kept and something was pruned, the package follows in the next cycle the
    output register is free (the input is held off until then)."""

    def __init__(self, beats, threshold):
        self.beats, self.threshold = beats, threshold
        self.taken, self.valid, self.pending, self.pruned = 0, False, False, False

    def ports(self, o_ready):
        free = not self.valid or o_ready
        return {"i_stream__ready": free and not self.pending, "o_stream__valid": self.valid}

    def step(self, i_valid, o_ready):
        free = not self.valid or o_ready
        take = i_valid and free and not self.pending and self.taken < len(self.beats)
        self.valid = self.valid and not o_ready
        if self.pending and free:
            self.pending, self.pruned, self.valid = False, False, True
        elif take:
            beat = self.beats[self.taken]
            self.taken += 1
            if beat["force"] or beat["score"] >= self.threshold:
                self.valid = True
                self.pending = bool(beat["last"]) and self.pruned
            elif beat["last"]:
                self.valid, self.pruned = True, False
            else:
                self.pruned = True


def _same_cycles(what, got, want):
    # the first differing cycle, or where the shorter list ends
    first = next((k for k, (a, b) in enumerate(zip(got, want, strict=False)) if a != b),
                 None if len(got) == len(want) else min(len(got), len(want)))
    near = slice(max((first or 0) - 3, 0), (first or 0) + 3)
    assert first is None, (f"{what}: #{first} in cycle {got[first:first + 1]}, the docstring "
                           f"says {want[first:first + 1]} (around: {got[near]} vs {want[near]})")


# Verilator builds take a minute on the shared CI machine: run them with `make test-slow`.
@pytest.mark.parametrize("simulator", ["icarus",
                                       pytest.param("verilator", marks=pytest.mark.slow)])
def test_token_packager_rtl(simulator, tmp_path):
    from chipforge.verify.runner import run_cocotb

    run_cocotb(RTL, __file__, simulator=simulator, build_root=tmp_path)
