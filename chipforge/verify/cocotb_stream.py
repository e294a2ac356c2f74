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

__all__ = ["Scoreboard", "StreamDriver", "StreamMonitor", "reset_dut"]


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
    (``1 - ready_prob`` per cycle) to apply back-pressure."""

    dut: object
    prefix: str
    ready_prob: float = 1.0
    seed: int = 1
    signed: bool = False
    received: list[int] = field(default_factory=list)
    received_cycles: list[int] = field(default_factory=list)

    def __post_init__(self):
        self.valid = getattr(self.dut, f"{self.prefix}__valid")
        self.ready = getattr(self.dut, f"{self.prefix}__ready")
        self.payload = getattr(self.dut, f"{self.prefix}__payload")
        self.rng = random.Random(self.seed)
        self.ready.value = 0

    async def collect(self, count: int, timeout_cycles: int) -> list[int]:
        cycle = 0
        while len(self.received) < count:
            await FallingEdge(self.dut.clk)
            cycle += 1
            if cycle > timeout_cycles:
                raise TimeoutError(f"{self.prefix}: {len(self.received)} of {count} words "
                                   f"after {timeout_cycles} cycles")
            ready = self.rng.random() < self.ready_prob
            self.ready.value = int(ready)
            await ReadOnly()
            if ready and self.valid.value:
                word = self.payload.value
                self.received.append(word.to_signed() if self.signed else word.to_unsigned())
                self.received_cycles.append(cycle)
        return self.received


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
