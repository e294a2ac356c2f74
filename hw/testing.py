"""Amaranth simulation helpers for stream components (tests only; no effect on the RTL).

:func:`run_stream` drives one input stream and drains one output stream of a component
with random idle cycles on the input and random back-pressure on the output, in Amaranth's
own simulator, and returns what came out with the cycle of each transfer.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from amaranth.sim import Simulator

__all__ = ["StreamRun", "run_stream"]


@dataclass
class StreamRun:
    outputs: list[Any]
    """Payloads accepted on the output stream, in order."""
    input_cycles: list[int]
    """Clock cycle of each input transfer."""
    output_cycles: list[int]
    """Clock cycle of each output transfer."""


def run_stream(dut, beats: Sequence[Any], n_outputs: int, *, idle_prob: float = 0.0,
               ready_prob: float = 1.0, seed: int = 0, i_name: str = "i_stream",
               o_name: str = "o_stream", max_cycles: int | None = None) -> StreamRun:
    """Push ``beats`` into ``dut.<i_name>`` and collect ``n_outputs`` from ``dut.<o_name>``.

    ``idle_prob`` is the chance that the producer holds ``valid`` low on a cycle;
    ``ready_prob`` the chance that the consumer holds ``ready`` high. Payloads are given as
    Amaranth ``ctx.set`` accepts them (ints, or dicts/lists for data layouts).
    """
    i_stream, o_stream = getattr(dut, i_name), getattr(dut, o_name)
    rng_in, rng_out = random.Random(seed), random.Random(seed + 1)
    run = StreamRun(outputs=[], input_cycles=[], output_cycles=[])
    limit = max_cycles or 20 * (len(beats) + n_outputs) + 100

    async def producer(ctx):
        cycle = 0
        for beat in beats:
            while rng_in.random() < idle_prob:
                await ctx.tick()
                cycle += 1
            ctx.set(i_stream.payload, beat)
            ctx.set(i_stream.valid, 1)
            while True:
                _, _, ready = await ctx.tick().sample(i_stream.ready)
                cycle += 1
                if ready:
                    run.input_cycles.append(cycle)
                    break
            ctx.set(i_stream.valid, 0)

    async def consumer(ctx):
        cycle = 0
        while len(run.outputs) < n_outputs:
            ctx.set(o_stream.ready, int(rng_out.random() < ready_prob))
            _, _, valid, ready, payload = await ctx.tick().sample(
                o_stream.valid, o_stream.ready, o_stream.payload)
            cycle += 1
            if valid and ready:
                run.outputs.append(payload)
                run.output_cycles.append(cycle)
            if cycle > limit:
                raise TimeoutError(f"only {len(run.outputs)} of {n_outputs} outputs "
                                   f"after {cycle} cycles")

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    return run
