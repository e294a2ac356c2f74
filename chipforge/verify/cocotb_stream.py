"""cocotb driver, monitor and scoreboard for Amaranth ``lib.stream`` ports.

Amaranth names a stream port's signals ``<port>__valid``, ``<port>__ready`` and
``<port>__payload``. Both sides act on the falling clock edge and decide handshakes in the
``ReadOnly`` phase after it, which gives the same cycle semantics on Icarus and Verilator:
what is seen there is what the next rising edge samples.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly

__all__ = ["HandshakeChecker", "PipelineModel", "Scoreboard", "StreamDriver", "StreamMonitor",
           "check_reset_clears_pending", "reset_dut"]


async def reset_dut(dut, cycles: int = 2, period_ns: int = 10) -> None:
    """Start the clock and hold the synchronous reset for a few cycles."""
    Clock(dut.clk, period_ns, unit="ns").start()
    dut.rst.value = 1
    await ClockCycles(dut.clk, cycles)
    await FallingEdge(dut.clk)
    dut.rst.value = 0


class StreamDriver:
    """Sends payload words on ``<prefix>__*``, holding ``valid`` low at random
    (``idle_prob`` per cycle) to insert idle cycles."""

    def __init__(self, dut, prefix: str, *, idle_prob: float = 0.0, seed: int = 0):
        self.clk = dut.clk
        self.valid = getattr(dut, f"{prefix}__valid")
        self.ready = getattr(dut, f"{prefix}__ready")
        self.payload = getattr(dut, f"{prefix}__payload")
        self.idle_prob = idle_prob
        self.rng = random.Random(seed)
        self.sent_cycles: list[int] = []
        self.valid.value = 0

    async def send(self, words: Sequence[int]) -> None:
        cycle, index = 0, 0
        while index < len(words):
            await FallingEdge(self.clk)
            cycle += 1
            active = self.rng.random() >= self.idle_prob
            if active:
                self.payload.value = words[index]
            self.valid.value = int(active)
            await ReadOnly()
            if active and self.ready.value:
                self.sent_cycles.append(cycle)
                index += 1
        await FallingEdge(self.clk)
        self.valid.value = 0


@dataclass
class StreamMonitor:
    """Receives words from ``<prefix>__*``, holding ``ready`` low at random
    (``1 - ready_prob`` per cycle) to apply back-pressure, and starting, with probability
    ``stall_prob`` per cycle, a stall of 1..``max_stall`` cycles.

    Every cycle it checks the stream rules on the Verilog: a word that is offered and not
    taken stays offered, unchanged, in the next cycle (a result overwritten or withdrawn
    under back-pressure fails); after the expected count it keeps ``ready`` high for
    ``quiet_cycles`` and fails on any further word (extra outputs). ``valid_cycles`` records
    the cycle in which each word was first offered, for latency checks.
    """

    dut: object
    prefix: str
    ready_prob: float = 1.0
    seed: int = 1
    signed: bool = False
    stall_prob: float | None = None
    """Default: 0.01 when ``ready_prob < 1``, else 0 (an always-ready consumer)."""
    max_stall: int = 100
    quiet_cycles: int = 40
    received: list[int] = field(default_factory=list)
    received_cycles: list[int] = field(default_factory=list)
    valid_cycles: list[int] = field(default_factory=list)

    def __post_init__(self):
        self.valid = getattr(self.dut, f"{self.prefix}__valid")
        self.ready = getattr(self.dut, f"{self.prefix}__ready")
        self.payload = getattr(self.dut, f"{self.prefix}__payload")
        self.rng = random.Random(self.seed)
        self.ready.value = 0
        if self.stall_prob is None:
            self.stall_prob = 0.01 if self.ready_prob < 1 else 0.0

    def _word(self):
        word = self.payload.value
        return word.to_signed() if self.signed else word.to_unsigned()

    async def collect(self, count: int, timeout_cycles: int) -> list[int]:
        cycle, stall, held = 0, 0, None
        while len(self.received) < count:
            await FallingEdge(self.dut.clk)
            cycle += 1
            if cycle > timeout_cycles:
                raise TimeoutError(f"{self.prefix}: {len(self.received)} of {count} words "
                                   f"after {timeout_cycles} cycles")
            if stall == 0 and self.rng.random() < self.stall_prob:
                stall = self.rng.randint(1, self.max_stall)
            ready = stall == 0 and self.rng.random() < self.ready_prob
            stall = max(stall - 1, 0)
            self.ready.value = int(ready)
            await ReadOnly()
            valid = bool(self.valid.value)
            if held is not None:
                if not valid:
                    raise AssertionError(f"{self.prefix}: cycle {cycle}: word {held} was "
                                         "withdrawn while stalled (valid dropped)")
                if self._word() != held:
                    raise AssertionError(f"{self.prefix}: cycle {cycle}: the stalled word "
                                         f"changed from {held} to {self._word()}")
            elif valid:
                self.valid_cycles.append(cycle)
            held = None
            if valid and ready:
                self.received.append(self._word())
                self.received_cycles.append(cycle)
            elif valid:
                held = self._word()
        for _ in range(self.quiet_cycles):
            await FallingEdge(self.dut.clk)
            self.ready.value = 1
            await ReadOnly()
            if self.valid.value:
                raise AssertionError(f"{self.prefix}: an extra word {self._word()} after the "
                                     f"{count} expected")
        return self.received


async def check_reset_clears_pending(dut, words: Sequence[int], *, i_prefix: str = "i_stream",
                                     o_prefix: str = "o_stream") -> None:
    """Send ``words`` with the output stalled until a result is offered, then reset: no
    result may be offered after it (a pending result must be cleared), for 20 cycles."""
    valid_in = getattr(dut, f"{i_prefix}__valid")
    ready_in = getattr(dut, f"{i_prefix}__ready")
    payload_in = getattr(dut, f"{i_prefix}__payload")
    valid_out = getattr(dut, f"{o_prefix}__valid")
    await FallingEdge(dut.clk)
    getattr(dut, f"{o_prefix}__ready").value = 0
    index, cycles = 0, 0
    while True:
        await FallingEdge(dut.clk)
        cycles += 1
        if cycles > 100 * (len(words) + 10):
            raise TimeoutError("no result offered: cannot test reset with a pending result")
        valid_in.value = int(index < len(words))
        if index < len(words):
            payload_in.value = words[index]
        await ReadOnly()
        if valid_out.value:
            break
        if index < len(words) and ready_in.value:
            index += 1
    await FallingEdge(dut.clk)
    valid_in.value = 0
    dut.rst.value = 1
    await FallingEdge(dut.clk)
    dut.rst.value = 0
    for cycle in range(20):
        await ReadOnly()
        if valid_out.value:
            raise AssertionError(f"{o_prefix}: a result is still offered {cycle} cycles "
                                 "after reset")
        await FallingEdge(dut.clk)


def kick_combinational(dut) -> None:
    """Re-evaluate every ``always @*`` block of yosys' Verilog once: yosys adds a dummy
    register to each so that simulators run it at time 0; Icarus does not, and a block
    whose inputs keep their reset values (``trigger`` of an idle fragment) would read X.
    Toggling the register fixes that without touching the design."""
    for handle in dut:
        if "verilog_backend" in handle._name and "dump_module" in handle._name:
            handle.value = 1


class PipelineModel:
    """Cycle model of a stall-on-back-pressure pipeline of ``depth`` registered stages
    (``hw.heatvit._pipeline``): a stage advances when it is empty or the next one
    advances, the last one when the output is ready; the input is ready when stage 0
    advances; the output is valid when the last stage holds a value."""

    def __init__(self, depth: int):
        self.valid = [False] * depth

    def ports(self, o_ready: bool) -> dict[str, bool]:
        """The expected input ready and output valid in this cycle."""
        return {"i_stream__ready": self._advance(o_ready)[0], "o_stream__valid": self.valid[-1]}

    def _advance(self, o_ready: bool) -> list[bool]:
        advance, down = [False] * len(self.valid), o_ready
        for k in reversed(range(len(self.valid))):
            advance[k] = down = not self.valid[k] or down
        return advance

    def step(self, i_valid: bool, o_ready: bool) -> None:
        """The clock edge after a cycle with these input valid and output ready."""
        advance = self._advance(o_ready)
        for k in reversed(range(len(self.valid))):
            if advance[k]:
                self.valid[k] = i_valid if k == 0 else self.valid[k - 1]


class HandshakeChecker:
    """Checks a block's input ``ready``, output ``valid`` (and any other 1-bit control
    output the model names) in *every* cycle against a cycle model while a
    :class:`StreamDriver` (idle cycles) and a :class:`StreamMonitor` (back-pressure,
    stalls) run, so a throughput fault that shows only under idle input and back-pressure
    together fails in the cycle it happens. ``model`` has ``ports(o_ready) -> {port name:
    expected value}`` and ``step(i_valid, o_ready)`` (for example :class:`PipelineModel`);
    it starts as the block is right after reset. Start with :meth:`start` right after the
    reset, :meth:`stop` (awaited) when done."""

    def __init__(self, dut, model, *, i_prefix: str = "i_stream", o_prefix: str = "o_stream"):
        self.dut, self.model = dut, model
        self.i_valid = getattr(dut, f"{i_prefix}__valid")
        self.o_ready = getattr(dut, f"{o_prefix}__ready")
        self.cycles = 0
        self._running = False
        self._task = None

    def start(self) -> None:
        kick_combinational(self.dut)
        self._running = True
        self._task = cocotb.start_soon(self._run())

    async def stop(self) -> int:
        """Stop after the current cycle; re-raise a mismatch; the cycles checked."""
        self._running = False
        await self._task
        return self.cycles

    async def _run(self) -> None:
        while self._running:
            await FallingEdge(self.dut.clk)
            await ReadOnly()
            self.cycles += 1
            i_valid, o_ready = bool(self.i_valid.value), bool(self.o_ready.value)
            for name, want in self.model.ports(o_ready).items():
                value = getattr(self.dut, name).value
                assert value.is_resolvable, f"cycle {self.cycles} after reset: {name}={value}"
                got = value.to_unsigned() if hasattr(value, "to_unsigned") else int(value)
                assert got == int(want), (f"cycle {self.cycles} after reset: {name}={got}, "
                                          f"the cycle model says {int(want)}")
            self.model.step(i_valid, o_ready)


def start(coro):
    """``cocotb.start_soon`` re-exported so testbenches need one import."""
    return cocotb.start_soon(coro)


class Scoreboard:
    """Compares received words with the reference model's, reporting the first mismatch."""

    def __init__(self, name: str):
        self.name = name

    def check(self, expected: Sequence[int], received: Sequence[int], context=None) -> None:
        if len(expected) != len(received):
            raise AssertionError(f"{self.name}: expected {len(expected)} results, "
                                 f"got {len(received)}")
        for index, (want, got) in enumerate(zip(expected, received, strict=True)):
            if want != got:
                where = f" (input {context(index)})" if context else ""
                raise AssertionError(f"{self.name}: result {index} is {got}, the reference "
                                     f"model gives {want}{where}")
