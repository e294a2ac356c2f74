"""cocotb testbench of the generated FORMS fragment datapath (rtl/forms-fragment).

Structure as testbenches/shift_add: a driver (random idle cycles), a monitor (random
back-pressure), the reference model (``chipforge.sim.ref.forms_fragment``), a scoreboard.
The config and every width come from the manifest. Stimulus: random fragment jobs with
every effective input width from 0 to the full width, the extremes (all inputs at full
scale with full-scale cells, all zero, a lone MSB), and jobs of a real polarized
``x @ W`` (whose results must equal the product); under idle input and back-pressure
``i_stream.ready``, ``o_stream.valid``, ``dac_valid``, ``dac_bits`` and ``trigger`` are
checked in every cycle against the docstring's timing (``FragmentTiming``). A second test
runs the jobs back to back and checks each job's cycles (accept to accept) and its DAC
cycles against the reference and the cycle model: EIC + 1 and EIC.
"""

import os
from pathlib import Path

import cocotb
import numpy as np
import pytest
from cocotb.triggers import FallingEdge, ReadOnly

from chipforge.config import FormsFragmentConfig
from chipforge.verify.manifest import load_manifest

HERE = Path(__file__).resolve().parent
RTL = HERE.parents[1] / "rtl" / "forms-fragment"


def _jobs(cfg, seed, n=400):
    """Random jobs plus extremes plus a real polarized dot product's jobs."""
    from chipforge.sim.ref.forms_fragment import FragmentJobs, fragment_jobs

    rng = np.random.default_rng(seed)
    m, top = cfg.fragment_size, (1 << cfg.input_bits) - 1
    inputs = rng.integers(0, top + 1, (n, m)) >> rng.integers(0, cfg.input_bits + 1, (n, 1))
    levels = rng.integers(0, 1 << cfg.cell_bits, (n, m, cfg.columns, cfg.slices))
    negative = rng.random((n, cfg.columns)) < 0.5
    inputs[0], levels[0] = top, (1 << cfg.cell_bits) - 1
    inputs[1] = 0
    inputs[2] = 0
    inputs[2, 0] = 1 << (cfg.input_bits - 1)
    last = np.zeros(n, dtype=bool)
    last[cfg.max_fragments - 1::cfg.max_fragments] = True
    last |= rng.random(n) < 0.2
    last[-1] = True
    # A real polarized product: 5 vectors of K inputs against K x columns weights.
    k = m * min(cfg.max_fragments, 4) - 2
    x = rng.integers(0, top + 1, (5, k)) >> rng.integers(0, cfg.input_bits, (5, 1))
    mag = rng.integers(0, 1 << cfg.magnitude_bits, (k, cfg.columns))
    frags = -(-k // m)
    sign = np.repeat(np.where(rng.random((frags, cfg.columns)) < 0.5, -1, 1), m, axis=0)[:k]
    w = mag * sign
    real = fragment_jobs(x, w, cfg)
    jobs = FragmentJobs(np.concatenate([inputs, real.inputs]),
                        np.concatenate([levels, real.levels]),
                        np.concatenate([negative, real.negative]),
                        np.concatenate([last, real.last]))
    return jobs, (x, w)


def _words(codec, cfg, jobs):
    words = []
    for f in range(len(jobs.last)):
        words.append(codec.pack({
            "inputs": jobs.inputs[f].tolist(), "levels": jobs.levels[f].tolist(),
            "negative": int(sum(int(b) << c for c, b in enumerate(jobs.negative[f]))),
            "last": int(jobs.last[f])}))
    return words


def _setup():
    manifest = load_manifest(os.environ["CHIPFORGE_MANIFEST"])
    cfg = FormsFragmentConfig.from_dict(manifest.config)
    return manifest, cfg


def _unpack_results(manifest, words, columns):
    """Split output words into per-column signed results by the manifest's field table."""
    fields = {f["name"]: f for f in manifest.data["ports"]["o_stream__payload"]["fields"]}
    out = []
    for word in words:
        row = []
        for c in range(columns):
            f = fields[f"[{c}]"]
            raw = (word >> f["offset"]) & ((1 << f["width"]) - 1)
            row.append(raw - (1 << f["width"]) if raw >> (f["width"] - 1) else raw)
        out.append(row)
    return out


class FragmentTiming:
    """The fragment's control outputs, cycle by cycle, from its docstring (hw/
    forms_fragment.py): an accepted job shifts for EIC cycles (``dac_valid`` high), then
    triggers (``trigger`` high) in the next cycle, unless it is a ``last`` job and the
    previous result still waits on a stalled output; ``i_stream.ready`` is high when idle
    or in the trigger cycle (the next job is accepted there); a ``last`` job's result is
    valid the cycle after its trigger and stays until taken. ``dac_bits`` (bit r = row r)
    carries bit s of each input in shift cycle s (LSB first), 0 outside shift cycles."""

    def __init__(self, eic, last, inputs):
        self.eic, self.last, self.inputs = list(eic), list(last), inputs
        self.taken, self.busy, self.left, self.is_last, self.valid = 0, False, 0, False, False
        self.held = None

    def _trigger(self, o_ready):
        finishing = self.busy and self.left == 0
        return finishing and (not self.is_last or not (self.valid and not o_ready))

    def ports(self, o_ready):
        trigger = self._trigger(o_ready)
        shifting = self.busy and self.left > 0
        bits = 0
        if shifting:
            step = int(self.eic[self.taken - 1]) - self.left
            bits = sum(((int(v) >> step) & 1) << r for r, v in enumerate(self.held))
        return {"i_stream__ready": not self.busy or trigger, "o_stream__valid": self.valid,
                "dac_valid": shifting, "trigger": trigger, "dac_bits": bits}

    def step(self, i_valid, o_ready):
        trigger = self._trigger(o_ready)
        take = i_valid and (not self.busy or trigger) and self.taken < len(self.eic)
        self.valid = self.valid and not o_ready
        if self.busy and self.left > 0:
            self.left -= 1
        if trigger:
            self.busy = False
            self.valid = self.valid or self.is_last
        if take:
            self.busy, self.left = True, int(self.eic[self.taken])
            self.is_last = bool(self.last[self.taken])
            self.held = self.inputs[self.taken]
            self.taken += 1


@cocotb.test()
async def forms_fragment_random_idle_backpressure(dut):
    from chipforge.sim.cycle.model import group_eic
    from chipforge.sim.ref.forms_fragment import run_fragments
    from chipforge.verify.cocotb_stream import (
        HandshakeChecker,
        Scoreboard,
        StreamDriver,
        StreamMonitor,
        check_reset_clears_pending,
        reset_dut,
        start,
    )

    manifest, cfg = _setup()
    jobs, (x, w) = _jobs(cfg, seed=21)
    expected = run_fragments(jobs, cfg).tolist()
    words = _words(manifest.codec("i_stream__payload"), cfg, jobs)

    await reset_dut(dut)
    driver = StreamDriver(dut, "i_stream", idle_prob=0.25, seed=22)
    monitor = StreamMonitor(dut, "o_stream", ready_prob=0.5, seed=23)
    eic = group_eic(jobs.inputs, cfg.input_bits, cfg.fragment_size)[:, 0]
    timing = HandshakeChecker(dut, FragmentTiming(eic, jobs.last, jobs.inputs))
    timing.start()
    start(driver.send(words))
    raw = await monitor.collect(len(expected), timeout_cycles=40 * len(words) + 100)
    assert await timing.stop() > len(words), "the handshake checker did not run"
    # A reset while a result waits on a stalled output must clear it.
    await check_reset_clears_pending(dut, words)
    received = _unpack_results(manifest, raw, cfg.columns)
    Scoreboard("forms_fragment").check(expected, received,
                                       context=lambda k: f"dot product {k}")
    if cfg.adc_bits >= cfg.exact_adc_bits:   # the real product's results are exactly x @ W
        assert received[-x.shape[0]:] == (x @ w).tolist()


@cocotb.test()
async def forms_fragment_cycles_match_cycle_model(dut):
    """Back to back: accept-to-accept cycles = EIC + 1 and DAC cycles = EIC, per job."""
    from chipforge.sim.cycle.arch import FORMS8
    from chipforge.sim.cycle.model import group_eic
    from chipforge.sim.ref.forms_fragment import fragment_cycles, run_fragments
    from chipforge.verify.cocotb_stream import StreamDriver, StreamMonitor, reset_dut, start

    manifest, cfg = _setup()
    jobs, _ = _jobs(cfg, seed=31, n=200)
    expected = run_fragments(jobs, cfg).tolist()
    words = _words(manifest.codec("i_stream__payload"), cfg, jobs)
    await reset_dut(dut)
    dac_cycles = []

    async def count_dac():
        count = 0
        while True:
            await FallingEdge(dut.clk)
            await ReadOnly()
            if dut.dac_valid.value:
                count += 1
            if dut.trigger.value:
                dac_cycles.append(count)
                count = 0

    start(count_dac())
    driver = StreamDriver(dut, "i_stream", idle_prob=0.0, seed=32)
    monitor = StreamMonitor(dut, "o_stream", ready_prob=1.0, seed=33)
    start(driver.send(words))
    raw = await monitor.collect(len(expected), timeout_cycles=40 * len(words) + 100)
    assert _unpack_results(manifest, raw, cfg.columns) == expected
    measured = np.diff(driver.sent_cycles)
    reference = fragment_cycles(jobs.inputs, cfg)[:-1]
    model = (group_eic(jobs.inputs, cfg.input_bits, cfg.fragment_size)[:, 0]
             + FORMS8.group_overhead_cycles)[:-1]
    assert measured.tolist() == reference.tolist(), "RTL cycles differ from the reference"
    assert measured.tolist() == model.tolist(), "RTL cycles differ from the cycle model"
    eic = (reference - 1).tolist()
    assert dac_cycles[:len(eic)] == eic, "DAC cycles differ from the effective input cycles"


# Verilator's build of this block takes ~1-2 minutes on a loaded 2-core machine: it runs in
# `make test-slow`; Icarus runs in `make test`.
@pytest.mark.parametrize("simulator", ["icarus",
                                       pytest.param("verilator", marks=pytest.mark.slow)])
def test_forms_fragment_rtl(simulator, tmp_path):
    from chipforge.verify.runner import run_cocotb

    run_cocotb(RTL, __file__, simulator=simulator, build_root=tmp_path)
