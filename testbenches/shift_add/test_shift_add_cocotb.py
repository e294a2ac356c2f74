"""cocotb testbench of the generated shift-and-add unit (rtl/shift-add).

The reference model is ``chipforge.sim.ref.crossbar.shift_add``; the config and every
width come from the manifest. Stimulus: 1000 dot products of random ADC codes, the
extremes (all codes at full scale, all zero, every column flipped), and codes read from a
real crossbar MVM (whose results must also equal ``x @ W``); random idle cycles on the
input and random back-pressure on the output.
"""

import os
from pathlib import Path

import cocotb
import numpy as np
import pytest

from chipforge.config import CrossbarConfig
from chipforge.verify.manifest import load_manifest

HERE = Path(__file__).resolve().parent
RTL = HERE.parents[1] / "rtl" / "shift-add"


def _stimulus(cfg, seed):
    """(codes, unit, flipped) per dot product, flattened to one weight column each."""
    from chipforge.sim.ref.crossbar import adc_codes, encode_weights

    rng = np.random.default_rng(seed)
    phys, cycles, full = cfg.physical_cols_per_weight, cfg.input_cycles, cfg.adc_max_code
    n = 1000
    codes = rng.integers(0, full + 1, (n, cycles, 1, phys))
    unit = rng.integers(0, full + 1, (n, cycles))
    flipped = np.zeros((n, phys), dtype=bool)
    if cfg.flip_encoding:
        flipped = rng.random((n, phys)) < 0.5
    # Extremes: everything at full scale / zero, with no flips and with every flip.
    extremes = [(full, full, False), (0, 0, False), (full, 0, True), (0, full, True),
                (full, full, True)]
    for k, (c, u, f) in enumerate(extremes):
        codes[k], unit[k], flipped[k] = c, u, f and cfg.flip_encoding
    # Real readouts: 32 input vectors against 4 weight columns of a full crossbar.
    w = rng.integers(*cfg.weight_range, endpoint=True, size=(cfg.rows, 4))
    x = rng.integers(*cfg.input_range, endpoint=True, size=(32, cfg.rows))
    readout = adc_codes(x, encode_weights(w, cfg), cfg)
    real_codes = readout.codes.transpose(0, 2, 1, 3).reshape(-1, cycles, 1, phys)
    real_unit = np.repeat(readout.unit, 4, axis=0)
    real_flip = np.tile(readout.flipped, (32, 1))
    return (np.concatenate([codes, real_codes]), np.concatenate([unit, real_unit]),
            np.concatenate([flipped, real_flip]), (x, w, readout.saturated))


def _words(codec, cfg, codes, unit, flipped):
    words = []
    for k in range(codes.shape[0]):
        flip = sum(1 << p for p in range(flipped.shape[1]) if flipped[k, p])
        for t in range(cfg.input_cycles):
            beat = {"codes": codes[k, t, 0].tolist()}
            if cfg.has_unit_column:
                beat["unit"] = int(unit[k, t])
            if cfg.flip_encoding:
                beat["flip"] = flip
            words.append(codec.pack(beat))
    return words


async def _ready_rule(dut):
    """ShiftAdd's documented input rule, every cycle: ``i_stream.ready`` is high exactly
    when no result waits or the waiting one is taken (no slowdown under stalls)."""
    from cocotb.triggers import FallingEdge, ReadOnly

    cycle = 0
    while True:
        await FallingEdge(dut.clk)
        await ReadOnly()
        cycle += 1
        want = int(not dut.o_stream__valid.value or dut.o_stream__ready.value)
        assert int(dut.i_stream__ready.value) == want, (
            f"cycle {cycle}: i_stream.ready is {int(dut.i_stream__ready.value)}, the ready "
            f"rule says {want}")


@cocotb.test()
async def shift_add_random_idle_backpressure(dut):
    from chipforge.sim.ref.crossbar import shift_add
    from chipforge.verify.cocotb_stream import (
        Scoreboard,
        StreamDriver,
        StreamMonitor,
        reset_dut,
        start,
    )

    manifest = load_manifest(os.environ["CHIPFORGE_MANIFEST"])
    cfg = CrossbarConfig.from_dict(manifest.config)
    codes, unit, flipped, (x, w, saturated) = _stimulus(cfg, seed=7)
    expected = [int(shift_add(codes[k:k + 1], unit[k:k + 1], flipped[k:k + 1], cfg)[0, 0])
                for k in range(codes.shape[0])]
    words = _words(manifest.codec("i_stream__payload"), cfg, codes, unit, flipped)

    await reset_dut(dut)
    driver = StreamDriver(dut, "i_stream", idle_prob=0.25, seed=11)
    monitor = StreamMonitor(dut, "o_stream", ready_prob=0.6, seed=12, signed=True)
    start(driver.send(words))
    start(_ready_rule(dut))
    received = await monitor.collect(len(expected), timeout_cycles=10 * len(words) + 100)
    Scoreboard("shift_add").check(expected, received,
                                  context=lambda k: f"dot product {k}")
    # The real readouts at the end are the crossbar's MVM: exactly x @ W unless saturated.
    if not saturated:
        assert received[-x.shape[0] * 4:] == (x @ w).ravel().tolist()
    # Cycles on the Verilog: each result is offered exactly SHIFT_ADD_LATENCY (2) cycles
    # after its vector's last beat is accepted, stalls or not.
    from chipforge.sim.cycle.shift_add import SHIFT_ADD_LATENCY
    last_beats = [driver.sent_cycles[(j + 1) * cfg.input_cycles - 1]
                  for j in range(len(expected))]
    for j, (beat, offered) in enumerate(zip(last_beats, monitor.valid_cycles, strict=True)):
        assert offered == beat + SHIFT_ADD_LATENCY, (
            f"result {j}: offered in cycle {offered}, its last beat was accepted in {beat}")


@cocotb.test()
async def shift_add_reset_clears_pending(dut):
    from chipforge.verify.cocotb_stream import check_reset_clears_pending, reset_dut

    manifest = load_manifest(os.environ["CHIPFORGE_MANIFEST"])
    cfg = CrossbarConfig.from_dict(manifest.config)
    codes, unit, flipped, _ = _stimulus(cfg, seed=3)
    words = _words(manifest.codec("i_stream__payload"), cfg, codes[:3], unit[:3], flipped[:3])
    await reset_dut(dut)
    await check_reset_clears_pending(dut, words)


@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
def test_shift_add_rtl(simulator, tmp_path):
    from chipforge.verify.runner import run_cocotb

    run_cocotb(RTL, __file__, simulator=simulator, build_root=tmp_path)
