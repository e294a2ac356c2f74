"""cocotb testbench of the generated selector linear layer (rtl/token-linear).

Reference: ``chipforge.sim.ref.token_linear.token_linear``; config and widths from the
manifest. Stimulus: random weights and biases (the first row at full negative scale),
loaded through ``w_stream``, then 300 random tokens (the first at full negative scale, so
the largest product sum occurs); random idle cycles on both inputs and back-pressure on
the output (stalls of up to 100 cycles), ``i_stream.ready`` and ``o_stream.valid`` checked
in every cycle against the docstring's handshake (``LinearTiming``), a reset while a result
waits; then back to back,
the cycles on the Verilog against the docstring (first output 2 cycles after its token,
one output per cycle).
"""

import os
from pathlib import Path

import cocotb
import numpy as np
import pytest

from chipforge.config import TokenLinearConfig
from chipforge.verify.manifest import load_manifest

HERE = Path(__file__).resolve().parent
RTL = HERE.parents[1] / "rtl" / "token-linear"


class LinearTiming:
    """The token linear's handshake, cycle by cycle, from its docstring (hw/heatvit.py):
    with a token held, one output is formed in each cycle the output register is free
    (empty, or its value taken in this cycle); the input is ready when no token is held
    or in the cycle the held token's last output is formed."""

    def __init__(self, out_features):
        self.n, self.have, self.index, self.valid = out_features, False, 0, False

    def _emit(self, o_ready):
        can_emit = self.have and (not self.valid or o_ready)
        return can_emit, can_emit and self.index == self.n - 1

    def ports(self, o_ready):
        _, finishing = self._emit(o_ready)
        return {"i_stream__ready": not self.have or finishing, "o_stream__valid": self.valid}

    def step(self, i_valid, o_ready):
        can_emit, finishing = self._emit(o_ready)
        take = i_valid and (not self.have or finishing)
        self.valid = self.valid and not o_ready
        if can_emit:
            self.valid, self.index = True, 0 if finishing else self.index + 1
            self.have = not finishing
        if take:
            self.have = True


@cocotb.test()
async def token_linear_random_idle_backpressure(dut):
    from chipforge.sim.ref.token_linear import token_linear
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
    cfg = TokenLinearConfig.from_dict(manifest.config)
    rng = np.random.default_rng(21)
    lim = 1 << (cfg.data_bits - 1)
    w = rng.integers(-lim, lim, (cfg.out_features, cfg.in_features))
    b = rng.integers(-(1 << (cfg.bias_bits - 1)), 1 << (cfg.bias_bits - 1), cfg.out_features)
    x = rng.integers(-lim, lim, (300, cfg.in_features))
    w[0], x[0] = -lim, -lim
    expected = token_linear(x, w, b, cfg).ravel().tolist()
    w_codec, i_codec = manifest.codec("w_stream__payload"), manifest.codec("i_stream__payload")
    w_words = [w_codec.pack({"row": w[o].tolist(), "bias": int(b[o])})
               for o in range(cfg.out_features)]
    # A bare array payload: the manifest names its fields "[0]", "[1]", ...
    i_words = [i_codec.pack(t.tolist()) for t in x]

    await reset_dut(dut)
    dut.i_stream__valid.value = 0
    await StreamDriver(dut, "w_stream", idle_prob=0.3, seed=22).send(w_words)
    driver = StreamDriver(dut, "i_stream", idle_prob=0.25, seed=23)
    monitor = StreamMonitor(dut, "o_stream", ready_prob=0.6, seed=24, signed=True)
    timing = HandshakeChecker(dut, LinearTiming(cfg.out_features))
    timing.start()
    start(driver.send(i_words))
    received = await monitor.collect(len(expected), timeout_cycles=20 * len(expected) + 100)
    assert await timing.stop() > len(i_words), "the handshake checker did not run"
    # A reset while a result waits on a stalled output must clear it.
    await check_reset_clears_pending(dut, i_words)
    Scoreboard("token_linear").check(
        expected, received,
        context=lambda k: f"token {k // cfg.out_features}, output {k % cfg.out_features}")

    # Back to back on the Verilog (docstring): a token's first output 2 cycles after its
    # transfer, then one output per cycle, one token every out_features cycles.
    await reset_dut(dut)
    dut.i_stream__valid.value = 0
    await StreamDriver(dut, "w_stream", idle_prob=0.0, seed=22).send(w_words)
    tokens = 40
    driver = StreamDriver(dut, "i_stream", idle_prob=0.0, seed=23)
    monitor = StreamMonitor(dut, "o_stream", ready_prob=1.0, seed=24, signed=True)
    start(driver.send(i_words[:tokens]))
    n = tokens * cfg.out_features
    received = await monitor.collect(n, timeout_cycles=4 * n + 100)
    Scoreboard("token_linear").check(expected[:n], received)
    assert np.diff(driver.sent_cycles).tolist() == [cfg.out_features] * (tokens - 1), (
        f"tokens not taken every {cfg.out_features} cycles: {driver.sent_cycles[:5]}")
    for k, offered in enumerate(monitor.valid_cycles):
        token, output = divmod(k, cfg.out_features)
        want = driver.sent_cycles[token] + 2 + output
        assert offered == want, (f"token {token} output {output}: offered in cycle "
                                 f"{offered}, the docstring says {want}")



@cocotb.test()
async def token_linear_unsaturated(dut):
    """Data whose results stay inside the output range (weights and tokens of 5 bits): no
    result clips, so every product term and the bias show in every output (full-range
    random data saturates most outputs, which hides a wrong term)."""
    from chipforge.sim.ref.token_linear import token_linear
    from chipforge.verify.cocotb_stream import (
        Scoreboard,
        StreamDriver,
        StreamMonitor,
        reset_dut,
        start,
    )

    manifest = load_manifest(os.environ["CHIPFORGE_MANIFEST"])
    cfg = TokenLinearConfig.from_dict(manifest.config)
    rng = np.random.default_rng(31)
    w = rng.integers(-16, 16, (cfg.out_features, cfg.in_features))
    x = rng.integers(-16, 16, (60, cfg.in_features))
    b = rng.integers(-(1 << cfg.out_shift), 1 << cfg.out_shift, cfg.out_features)
    expected = token_linear(x, w, b, cfg)
    lim = 1 << (cfg.out_bits - 1)
    assert np.abs(expected).max() < lim - 1 and np.abs(expected).max() > 4   # no clipping
    w_codec, i_codec = manifest.codec("w_stream__payload"), manifest.codec("i_stream__payload")
    w_words = [w_codec.pack({"row": w[o].tolist(), "bias": int(b[o])})
               for o in range(cfg.out_features)]
    i_words = [i_codec.pack(t.tolist()) for t in x]
    await reset_dut(dut)
    dut.i_stream__valid.value = 0
    await StreamDriver(dut, "w_stream", idle_prob=0.2, seed=32).send(w_words)
    start(StreamDriver(dut, "i_stream", idle_prob=0.2, seed=33).send(i_words))
    monitor = StreamMonitor(dut, "o_stream", ready_prob=0.7, seed=34, signed=True)
    received = await monitor.collect(expected.size, timeout_cycles=20 * expected.size + 100)
    Scoreboard("token_linear").check(expected.ravel().tolist(), received)

# Verilator builds take a minute on the shared CI machine: run them with `make test-slow`.
@pytest.mark.parametrize("simulator", ["icarus",
                                       pytest.param("verilator", marks=pytest.mark.slow)])
def test_token_linear_rtl(simulator, tmp_path):
    from chipforge.verify.runner import run_cocotb

    run_cocotb(RTL, __file__, simulator=simulator, build_root=tmp_path)
