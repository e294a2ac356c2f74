"""cocotb testbench of the generated polynomial exp unit (rtl/poly-exp).

Reference: ``chipforge.sim.ref.poly_exp.poly_exp``; config and widths from the manifest.
Stimulus: every input code <= 0 (the unit's contract; extremes included), then 2000
random ones; random idle cycles on the input and back-pressure on the output.
"""

import os
from pathlib import Path

import cocotb
import numpy as np
import pytest

from chipforge.config import PolyExpConfig
from chipforge.verify.manifest import load_manifest

HERE = Path(__file__).resolve().parent
RTL = HERE.parents[1] / "rtl" / "poly-exp"


@cocotb.test()
async def poly_exp_random_idle_backpressure(dut):
    from chipforge.sim.ref.poly_exp import poly_exp
    from chipforge.verify.cocotb_stream import (
        Scoreboard,
        StreamDriver,
        StreamMonitor,
        reset_dut,
        start,
    )

    manifest = load_manifest(os.environ["CHIPFORGE_MANIFEST"])
    cfg = PolyExpConfig.from_dict(manifest.config)
    width = manifest.port_width("i_stream__payload")
    codes = np.arange(-(1 << (width - 1)), 1)
    x = np.concatenate([codes, np.random.default_rng(3).choice(codes, 2000)])
    expected = poly_exp(x, cfg).tolist()
    words = [int(v) & ((1 << width) - 1) for v in x]

    await reset_dut(dut)
    driver = StreamDriver(dut, "i_stream", idle_prob=0.25, seed=11)
    monitor = StreamMonitor(dut, "o_stream", ready_prob=0.6, seed=12, signed=False)
    start(driver.send(words))
    received = await monitor.collect(len(expected), timeout_cycles=10 * len(words) + 100)
    Scoreboard("poly_exp").check(expected, received, context=lambda k: f"x = {x[k]}")


# Verilator builds take a minute on the shared CI machine: run them with `make test-slow`.
@pytest.mark.parametrize("simulator", ["icarus",
                                       pytest.param("verilator", marks=pytest.mark.slow)])
def test_poly_exp_rtl(simulator, tmp_path):
    from chipforge.verify.runner import run_cocotb

    run_cocotb(RTL, __file__, simulator=simulator, build_root=tmp_path)
