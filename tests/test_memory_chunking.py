"""Memory chunking observed in a fast test (issue 27): under a small budget the crossbar
kernels stream the batch in several chunks, no chunk is larger than the plan allows, the
peak of the memory Python and numpy allocate (tracemalloc) stays within the budget, and the
result equals an unchunked run."""

import math
import tracemalloc

import numpy as np

from chipforge.accelerators import ISAAC
from chipforge.mappings.placement import place
from chipforge.sim import reram_kernels
from chipforge.sim.graph import Graph, Node, Op
from chipforge.sim.memory import parse_size, plan_memory
from chipforge.sim.reram import layer_chunk_bytes_per_row


def _gemm_graph(n):
    rng = np.random.default_rng(0)
    w = rng.integers(-127, 128, (n, n))
    node = Node(Op.LINEAR, "gemm", ("input",), dict(weight_bits=8, weight_scale=0.01,
                                                    act_bits=8, act_scale=1 / 255,
                                                    act_signed=False), {"weight": w * 0.01})
    return Graph("gemm", (n,), [node])


def test_a_small_budget_streams_in_chunks_within_the_traced_budget(monkeypatch):
    from chipforge.families.reram import run_reram

    opts = dict(seed=3, read_noise=0.02, float_accuracy=False)
    # numba's compiled kernels load once per process (their Python objects are traced too)
    run_reram(_gemm_graph(64), "isaac", np.random.default_rng(0).random((4, 64)),
              np.zeros(4, dtype=int), **opts)
    graph, samples, budget = _gemm_graph(512), 100, "32M"
    x = np.random.default_rng(1).random((samples, 512))
    y = np.zeros(samples, dtype=int)
    mapped = place(graph, ISAAC)
    plan = plan_memory(graph, mapped, ISAAC.device.replace(read_noise=0.02), samples,
                       parse_size(budget))
    # 8-bit unsigned inputs through 1-bit DACs: 8 input cycles per row (the plan allows 9)
    rows_per_chunk = plan.chunk_bytes // layer_chunk_bytes_per_row(mapped.layers["gemm"], 8,
                                                                     True)
    assert 1 <= rows_per_chunk < samples

    chunks = []
    real = reram_kernels.bit_planes

    def counting(xu, *args):
        chunks.append(len(xu))
        return real(xu, *args)

    monkeypatch.setattr(reram_kernels, "bit_planes", counting)
    tracemalloc.start()
    try:
        small = run_reram(graph, "isaac", x, y, max_memory=budget, **opts)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(chunks) == math.ceil(samples / rows_per_chunk) > 1
    assert max(chunks) == rows_per_chunk and sum(chunks) == samples
    assert small.metrics["memory_estimate_bytes"] <= parse_size(budget)
    print(f"traced peak {peak / 2**20:.1f} MiB, budget {budget}")
    assert peak <= parse_size(budget), f"traced peak {peak / 2**20:.1f} MiB over {budget}"
    chunks.clear()
    large = run_reram(graph, "isaac", x, y, max_memory="4G", **opts)
    assert len(chunks) == 1
    assert small.accuracy_hardware == large.accuracy_hardware


def test_the_executor_batch_is_cut_to_the_budget():
    """More samples than the budget holds: the plan cuts the batch so that chip + batch +
    kernel chunk stay within the budget (one sample of this graph: 24 KiB)."""
    graph = _gemm_graph(512)
    mapped = place(graph, ISAAC)
    plan = plan_memory(graph, mapped, ISAAC.device.replace(read_noise=0.02), 100_000,
                       parse_size("32M"))
    assert 1 < plan.batch < 100_000
    assert plan.estimate <= parse_size("32M") < plan.estimate + plan.per_sample


def test_one_kernel_chunk_is_alive_at_a_time():
    """The GEMM path's temporaries of a chunk are freed before the next chunk allocates its
    own: streaming 200 rows in chunks of 8 MiB peaks at one chunk plus the call's inputs and
    outputs (two int64/float64 copies of (rows, K + 1) and (rows, N)), not at two chunks."""
    from chipforge.sim.reram import crossbar_layer_matmul, program_layer

    mapped = place(_gemm_graph(512), ISAAC)
    programmed = program_layer(mapped.layers["gemm"], ISAAC.device.replace(read_noise=0.02))
    x = np.random.default_rng(2).integers(0, 256, (200, 512))
    kw = dict(input_bits=8, signed_inputs=False, noise_key=1, chunk_bytes=8 << 20)
    crossbar_layer_matmul(x[:1], programmed, **kw)        # kernels loaded, layout cached
    tracemalloc.start()
    try:
        crossbar_layer_matmul(x, programmed, **kw)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    in_and_out = 2 * 8 * len(x) * (513 + 512)
    assert peak <= (8 << 20) + in_and_out, f"{peak / 2**20:.1f} MiB"
