"""cocotb pieces shared by the testbenches of whole top levels (ReRAM tile, token
selector): per-cycle handshake patterns with idle input and output stalls, and a driver
for the ``cfg_we`` / ``cfg_addr`` / ``cfg_wdata`` register map.

Both act on the falling clock edge, as :mod:`chipforge.verify.cocotb_stream` does, so the
next rising edge samples what was set.
"""

from __future__ import annotations

import random

from cocotb.triggers import FallingEdge

__all__ = ["MAX_STALL", "RegisterMapDriver", "handshake_patterns"]

MAX_STALL = 100
"""Longest output stall (cycles) the testbenches apply."""


def handshake_patterns(seed: int, idle: float, stall: float, length: int, *,
                       ready_prob: float = 0.8) -> tuple[list[bool], list[bool]]:
    """Per-cycle input ``valid`` (low with probability ``idle``) and output ``ready``
    (``ready_prob`` outside stalls; a stall of 1..MAX_STALL cycles starts with probability
    ``stall`` per cycle), ``length`` cycles of each, from ``seed``."""
    rng = random.Random(seed)
    valid = [rng.random() >= idle for _ in range(length)]
    ready: list[bool] = []
    while len(ready) < length:
        if rng.random() < stall:
            ready += [False] * rng.randint(1, MAX_STALL)
        else:
            ready.append(rng.random() < ready_prob)
    return valid, ready


class RegisterMapDriver:
    """Clock, reset and register writes of a top level with a ``cfg_*`` register map."""

    word_mask: int | None = None
    """Two's-complement mask of ``cfg_wdata`` for negative values (None: written as is)."""

    def __init__(self, dut, inputs: tuple[str, ...]) -> None:
        self.dut = dut
        for port in inputs + ("cfg_we", "cfg_addr", "cfg_wdata"):
            getattr(dut, port).value = 0

    async def tick(self) -> None:
        await FallingEdge(self.dut.clk)

    async def reset(self, cycles: int = 2) -> None:
        self.dut.rst.value = 1
        for _ in range(cycles):
            await self.tick()
        self.dut.rst.value = 0

    async def write(self, addr: int, value: int) -> None:
        """One register write: ``cfg_we`` high for one cycle."""
        self.dut.cfg_we.value = 1
        self.dut.cfg_addr.value = addr
        self.dut.cfg_wdata.value = (int(value) if self.word_mask is None
                                    else int(value) & self.word_mask)
        await self.tick()
        self.dut.cfg_we.value = 0
