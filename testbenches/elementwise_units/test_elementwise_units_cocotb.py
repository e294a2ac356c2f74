"""cocotb testbench of the generated element-wise units of the HeatViT selector:
polynomial GELU (rtl/poly-gelu), polynomial exp (rtl/poly-exp) and PLAN sigmoid
(rtl/plan-sigmoid). One testbench serves the three: each unit is one stream in, one
stream out, one value per beat.

Reference: ``chipforge.sim.ref.<unit>``; config and widths from the manifest. Stimulus:
every input code of the unit's domain (extremes included), then 2000 random codes; random
idle cycles on the input and back-pressure (stalls of up to 100 cycles) on the output,
with ``i_stream.ready`` and ``o_stream.valid`` checked in every cycle against the cycle
model of a pipeline that stalls as a whole (``PipelineModel``), then a reset while a
result waits; then, back to back, the cycles on the Verilog: each result offered exactly
the documented latency after its input (hw/heatvit.py: GELU and exp 3 cycles, sigmoid 1),
one per cycle.
"""

import importlib
import os
from pathlib import Path

import cocotb
import numpy as np
import pytest

from chipforge.verify.manifest import load_manifest

HERE = Path(__file__).resolve().parent
RTL = HERE.parents[1] / "rtl"

# block -> (config class in chipforge.config, reference module.function, inputs <= 0 only
# (poly-exp's contract: it takes x - max), signed output, stimulus/driver/monitor seeds)
LATENCY = {"poly-gelu": 3, "poly-exp": 3, "plan-sigmoid": 1}
"""Cycles from an input's transfer to its result being valid (the blocks' docstrings)."""
UNITS = {
    "poly-gelu": ("PolyGeluConfig", "poly_gelu.poly_gelu", False, True, (3, 11, 12)),
    "poly-exp": ("PolyExpConfig", "poly_exp.poly_exp", True, False, (3, 11, 12)),
    "plan-sigmoid": ("PlanSigmoidConfig", "plan_sigmoid.plan_sigmoid", False, False,
                     (4, 13, 14)),
}


@cocotb.test()
async def elementwise_unit_random_idle_backpressure(dut):
    from chipforge import config
    from chipforge.verify.cocotb_stream import (
        HandshakeChecker,
        PipelineModel,
        Scoreboard,
        StreamDriver,
        StreamMonitor,
        check_reset_clears_pending,
        reset_dut,
        start,
    )

    block = os.environ["CHIPFORGE_UNIT"]
    config_name, reference, nonpositive, signed_out, (s_data, s_drv, s_mon) = UNITS[block]
    module, function = reference.split(".")
    ref = getattr(importlib.import_module(f"chipforge.sim.ref.{module}"), function)
    manifest = load_manifest(os.environ["CHIPFORGE_MANIFEST"])
    cfg = getattr(config, config_name).from_dict(manifest.config)
    width = manifest.port_width("i_stream__payload")
    codes = np.arange(-(1 << (width - 1)), 1 if nonpositive else 1 << (width - 1))
    x = np.concatenate([codes, np.random.default_rng(s_data).choice(codes, 2000)])
    expected = ref(x, cfg).tolist()
    words = [int(v) & ((1 << width) - 1) for v in x]

    await reset_dut(dut)
    driver = StreamDriver(dut, "i_stream", idle_prob=0.25, seed=s_drv)
    monitor = StreamMonitor(dut, "o_stream", ready_prob=0.6, seed=s_mon, signed=signed_out)
    # every cycle: i_stream.ready and o_stream.valid as a LATENCY-stage pipeline that
    # stalls as a whole on back-pressure (hw/heatvit.py's _pipeline)
    timing = HandshakeChecker(dut, PipelineModel(LATENCY[block]))
    timing.start()
    start(driver.send(words))
    received = await monitor.collect(len(expected), timeout_cycles=10 * len(words) + 100)
    checked = await timing.stop()
    assert checked > len(words), "the handshake checker did not run"
    # A reset while a result waits on a stalled output must clear it.
    await check_reset_clears_pending(dut, words)
    Scoreboard(block).check(expected, received, context=lambda k: f"x = {x[k]}")

    # Back to back on the Verilog: every result exactly LATENCY cycles after its input.
    await reset_dut(dut)
    n = 300
    driver = StreamDriver(dut, "i_stream", idle_prob=0.0, seed=s_drv)
    monitor = StreamMonitor(dut, "o_stream", ready_prob=1.0, seed=s_mon, signed=signed_out)
    start(driver.send(words[:n]))
    received = await monitor.collect(n, timeout_cycles=n + 100)
    Scoreboard(block).check(expected[:n], received, context=lambda k: f"x = {x[k]}")
    assert np.diff(driver.sent_cycles).tolist() == [1] * (n - 1), "input not 1 per cycle"
    for k, (sent, offered) in enumerate(zip(driver.sent_cycles, monitor.valid_cycles,
                                            strict=True)):
        assert offered == sent + LATENCY[block], (
            f"value {k}: offered in cycle {offered}, its input was accepted in {sent}")


# Verilator builds take a minute on the shared CI machine: run them with `make test-slow`.
@pytest.mark.parametrize("simulator", ["icarus",
                                       pytest.param("verilator", marks=pytest.mark.slow)])
@pytest.mark.parametrize("block", list(UNITS))
def test_elementwise_unit_rtl(block, simulator, tmp_path):
    from chipforge.verify.runner import run_cocotb

    run_cocotb(RTL / block, __file__, simulator=simulator, build_root=tmp_path,
               extra_env={"CHIPFORGE_UNIT": block})
