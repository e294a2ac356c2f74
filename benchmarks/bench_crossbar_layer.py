"""One crossbar-mapped layer with read noise and stuck-at faults vs its method's floor.

The layer: ``rows x cols`` 8-bit weights (offset mapping, four 2-bit cells each, tiled on
128x128 crossbars with digital partial sums, or one crossbar as tall as the layer), a batch
of 1000 8-bit inputs fed bit-serially (1-bit DAC, 8 cycles), a 6-bit ADC per column read,
read noise (2 %, proportional or independent) drawn for every read, 0.1 % stuck-at faults.

The floor of the ADC-level method (issue 27), in the same run, from the same inputs:

- the reads actually done: a read (input row, row group, cycle) whose DAC inputs are all
  zero is skipped by the simulation (no sum, no conversion, no noise), so the floor skips
  it too. They are counted here independently of the simulator (the OR of each row
  group's two's-complement inputs, one bit test per cycle) and checked against the skip
  test of the simulator's own bit-plane kernel; the nominal count (every read, skipped
  or not: what ``report["adc_reads"]`` counts) is printed beside them;
- every GEMM the method needs, over those reads only, in float32 through numpy's BLAS:
  the column sums ``a @ G`` and, for proportional noise, the variances
  ``a**2 @ (sigma G)**2`` (independent noise needs no GEMM for its variance);
- one Gaussian per physical column of each read done, drawn by the simulator's own
  generator (:func:`chipforge.sim.reram_kernels.gaussians`: counter-based float32
  Box-Muller on every core), so a read costs the floor what it costs the simulation.

Printed: wall time (best of the repeats) and ratio to the floor, user+sys CPU seconds and
the CPU-time ratio (the build machine is shared: CPU time is the steadier measure).

Run: ``python benchmarks/bench_crossbar_layer.py [--quick]`` (or ``make bench``);
``--quick``: the 256x256 layer only, batch 100, one repeat (a smoke run).
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from threadpoolctl import threadpool_limits

from chipforge.accelerators import AdcRange, PlacementScheme, ReramAcceleratorConfig
from chipforge.mappings.placement import place_layer
from chipforge.sim import reram_kernels
from chipforge.sim.devices import ReadNoiseModel, ReramDeviceConfig
from chipforge.sim.graph import Node, Op
from chipforge.sim.reram import crossbar_layer_matmul, program_layer

BATCH, INPUT_BITS, REPEATS = 1000, 8, 3
FLOOR_KEY = 7             # any stream: every read's Gaussian costs the same


def best_time(fn, repeats=REPEATS) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def input_slices(input_bits: int, dac_bits: int, signed: bool) -> list[tuple[int, int]]:
    """(shift, mask) of each input cycle's DAC slice, most significant first, by the rule
    ``CrossbarConfig.input_slice_widths`` documents: signed inputs start with a 1-bit sign
    cycle, the other bits go in ``dac_bits``-wide slices with any narrower one on top."""
    magnitude = input_bits - 1 if signed else input_bits
    full, rest = divmod(magnitude, dac_bits)
    widths = ([1] if signed else []) + ([rest] if rest else []) + [dac_bits] * full
    out, top = [], input_bits
    for width in widths:
        top -= width
        out.append((top, (1 << width) - 1))
    return out


def _unsigned_inputs(x_q: np.ndarray, layer, input_bits: int) -> np.ndarray:
    """(M, K+1) int64 two's-complement bit patterns of the layer's inputs and one zero
    column, which the unused crossbar rows (row_index -1) read."""
    xu = np.zeros((len(x_q), layer.rows + 1), dtype=np.int64)
    xu[:, :layer.rows] = np.asarray(x_q)[:, :layer.rows].astype(np.int64) & (
        (1 << input_bits) - 1)
    return xu


def _row_index(layer) -> np.ndarray:
    return np.where(layer.row_index < 0, layer.rows, layer.row_index)


def count_reads_done(x_q: np.ndarray, layer, *, input_bits: int, signed: bool,
                     chunk_bytes: int = 1 << 26) -> int:
    """How many (input row, row group, cycle) reads have a non-zero DAC input: the reads
    an all-zero-skipping simulation does. Independent of the simulator's kernels: a read
    is skipped iff its slice of the OR of the row group's inputs is zero."""
    slices = input_slices(input_bits, layer.dac_bits, signed)
    rowidx = _row_index(layer)
    step = max(1, chunk_bytes // (8 * rowidx.size))
    done = 0
    for start in range(0, len(x_q), step):
        xu = _unsigned_inputs(x_q[start:start + step], layer, input_bits)
        group_or = np.bitwise_or.reduce(xu[:, rowidx], axis=2)          # (M, G)
        for shift, mask in slices:
            done += int(np.count_nonzero((group_or >> shift) & mask))
    return done


def reads_done_per_group(x_q: np.ndarray, layer, *, input_bits: int, signed: bool
                         ) -> list[np.ndarray]:
    """The DAC inputs of the reads done, per row group: G arrays (reads, R) float32 (rows
    ``m * T + t`` whose slice is all zero left out). Cross-checked against the skip test
    of the simulator's bit-plane kernel (a read's input sum is zero)."""
    slices = input_slices(input_bits, layer.dac_bits, signed)
    rowidx = _row_index(layer)
    xu = _unsigned_inputs(x_q, layer, input_bits)
    gathered = xu[:, rowidx]                                            # (M, G, R)
    planes = np.stack([((gathered >> shift) & mask).astype(np.uint8)  # DAC codes <= 255
                       for shift, mask in slices], axis=1)
    g_total, r_total = rowidx.shape
    planes = planes.transpose(2, 0, 1, 3).reshape(g_total, -1, r_total)  # (G, M*T, R)
    keep = planes.any(axis=2)
    shifts = np.array([s for s, _ in slices], dtype=np.int64)
    masks = np.array([m for _, m in slices], dtype=np.int64)
    _, ones, _ = reram_kernels.bit_planes(xu, rowidx, shifts, masks, np.float32)
    if not np.array_equal(keep, ones != 0):
        raise AssertionError(f"layer {layer.node!r}: the reads done counted here "
                             f"({int(keep.sum())}) differ from the simulator's skip test "
                             f"({int(np.count_nonzero(ones))})")
    return [np.ascontiguousarray(planes[g][keep[g]], dtype=np.float32)
            for g in range(g_total)]


def _gemms(groups: list[np.ndarray], matrices: np.ndarray, pool: ThreadPoolExecutor) -> None:
    """``groups[g] @ matrices[g]`` for every row group, the cheapest way we know: with at
    least as many groups as cores, one BLAS thread per product and the products on every
    core at once (a multi-threaded OpenBLAS call on a 650x8 @ 8x256 product took 5.3 ns
    of CPU per output on the loaded build machine, a one-thread call 0.18 ns); with fewer,
    BLAS's own threads."""
    if len(groups) >= (os.cpu_count() or 1):
        with threadpool_limits(1):
            list(pool.map(np.matmul, groups, matrices))
    elif len({len(a) for a in groups}) == 1:  # same reads in every group: one stacked GEMM
        np.matmul(np.stack(groups), matrices)
    else:
        for a, m in zip(groups, matrices, strict=True):
            np.matmul(a, m)


def warm_up_generator() -> None:
    reram_kernels.gaussians(FLOOR_KEY, 0, 4096)


def floor_of_reads(groups: list[np.ndarray], cells: np.ndarray, variances: np.ndarray | None,
                   draws: int, repeats: int = REPEATS) -> dict[str, float]:
    """The floor for these reads: the value GEMM (float32), the variance GEMM
    ``a**2 @ variances`` when ``variances`` is given, and ``draws`` Gaussians from the
    simulator's generator. Each part's best wall time of ``repeats``; ``cpu``: user+sys
    seconds of one repeat of all parts (mean)."""
    cells = np.ascontiguousarray(cells, dtype=np.float32)
    squares = [a * a for a in groups] if variances is not None else None
    var32 = None if variances is None else np.ascontiguousarray(variances, dtype=np.float32)
    best = {"gemm": np.inf, "var_gemm": 0.0 if variances is None else np.inf, "draws": np.inf}
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        cpu0 = time.process_time()          # all threads, nanosecond resolution
        for _ in range(repeats):
            t0 = time.perf_counter()
            _gemms(groups, cells, pool)
            t1 = time.perf_counter()
            if var32 is not None:
                _gemms(squares, var32, pool)
            t2 = time.perf_counter()
            if draws:
                reram_kernels.gaussians(FLOOR_KEY, 0, draws)
            t3 = time.perf_counter()
            best["gemm"] = min(best["gemm"], t1 - t0)
            if var32 is not None:
                best["var_gemm"] = min(best["var_gemm"], t2 - t1)
            best["draws"] = min(best["draws"], t3 - t2)
        cpu = time.process_time() - cpu0
    best["floor"] = best["gemm"] + best["var_gemm"] + best["draws"]
    best["cpu"] = cpu / repeats
    return best


def bench(size: int, noise_model: ReadNoiseModel, rows: int = 128, batch: int = BATCH,
          repeats: int = REPEATS) -> dict[str, float]:
    rng = np.random.default_rng(0)
    device = ReramDeviceConfig(read_noise=0.02, read_noise_model=noise_model
                               ).with_stuck_at_rate(0.001)
    accel = ReramAcceleratorConfig(rows=rows, cols=128, cell_bits=2, weight_bits=8,
                                   input_bits=INPUT_BITS, dac_bits=1, adc_bits=6,
                                   scheme=PlacementScheme.OFFSET, adc_range=AdcRange.CLIP,
                                   device=device)
    w = rng.integers(-128, 128, (size, size))
    node = Node(Op.LINEAR, "layer", ("input",),
                dict(weight_bits=8, weight_scale=1.0, act_bits=INPUT_BITS, act_scale=1.0,
                     act_signed=True), {"weight": w.T * 1.0})
    layer = place_layer(node, accel)
    programmed = program_layer(layer, device, seed=1)
    x = rng.integers(-128, 128, (batch, size))
    report: dict[str, int] = {}

    def crossbar():
        crossbar_layer_matmul(x, programmed, input_bits=INPUT_BITS, signed_inputs=True,
                              noise_key=2)

    crossbar_layer_matmul(x[:2], programmed, input_bits=INPUT_BITS, signed_inputs=True,
                          noise_key=2)                                   # compile
    crossbar_layer_matmul(x, programmed, input_bits=INPUT_BITS, signed_inputs=True,
                          noise_key=2, report=report)
    g_total, _, c_total = layer.levels.shape
    cycles = len(input_slices(INPUT_BITS, layer.dac_bits, True))
    groups = reads_done_per_group(x, layer, input_bits=INPUT_BITS, signed=True)
    done = count_reads_done(x, layer, input_bits=INPUT_BITS, signed=True)
    assert done == sum(len(a) for a in groups), (done, sum(len(a) for a in groups))
    # ADC conversions per (row group, cycle) read: its physical columns and unit columns.
    per_read = layer.stats.adc_reads_per_vector // (g_total * cycles)
    nominal = batch * g_total * cycles * per_read
    assert nominal == report["adc_reads"], (nominal, report["adc_reads"])
    variances = (programmed.noise_var if noise_model is ReadNoiseModel.PROPORTIONAL
                 else None)
    warm_up_generator()
    floor = floor_of_reads(groups, programmed.conductance, variances, done * c_total,
                           repeats)
    c0 = time.process_time()
    t = best_time(crossbar, repeats)
    cpu = (time.process_time() - c0) / repeats
    return {"time": t, "cpu": cpu, "nominal_reads": nominal, "reads": done * per_read,
            "draws": done * c_total, **{f"floor_{k}": v for k, v in floor.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="the 256x256 layer only, batch 100, one repeat (a smoke run)")
    parser.add_argument("--repeats", type=int, default=None,
                        help=f"timed repeats, best taken (default {REPEATS}; 1 with --quick)")
    args = parser.parse_args()
    sizes, batch, repeats = ((256,), 100, 1) if args.quick else ((256, 1024), BATCH, REPEATS)
    if args.repeats is not None:
        if args.repeats < 1:
            parser.error(f"--repeats must be at least 1, not {args.repeats}")
        repeats = args.repeats
    print(f"crossbar layer: batch {batch}, {INPUT_BITS}-bit inputs bit-serial, 8-bit weights "
          "in 2-bit cells (offset), 6-bit ADC, read noise 2 %, stuck-at 0.1 %; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; best of {repeats}")
    print("  floor = the reads done (all-zero reads skipped): value GEMM + variance GEMM "
          "(proportional noise) in float32 + one Gaussian per column read from the "
          "simulator's own generator; 'tall' = one crossbar as tall as the layer")
    for size in sizes:
        for rows in (128, size):
            for model in (ReadNoiseModel.PROPORTIONAL, ReadNoiseModel.INDEPENDENT):
                r = bench(size, model, rows, batch, repeats)
                kind = "128-row" if rows == 128 else "tall"
                print(f"  {size:>4}x{size:<4} {kind:<7} {model.value:<12} "
                      f"{r['time'] * 1e3:8.1f} ms ({r['cpu'] * 1e3:7.1f} ms CPU); reads "
                      f"{r['nominal_reads'] / 1e6:.2f} M nominal, {r['reads'] / 1e6:.2f} M "
                      f"done; floor {r['floor_floor'] * 1e3:8.1f} ms (GEMM "
                      f"{r['floor_gemm'] * 1e3:.1f} + variance GEMM "
                      f"{r['floor_var_gemm'] * 1e3:.1f} + draws {r['floor_draws'] * 1e3:.1f}, "
                      f"{r['floor_cpu'] * 1e3:.1f} ms CPU); ratio "
                      f"{r['time'] / r['floor_floor']:5.2f}x; CPU-time ratio "
                      f"{r['cpu'] / r['floor_cpu']:5.2f}x", flush=True)
    print(f"  load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
