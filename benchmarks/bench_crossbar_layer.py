"""One crossbar-mapped layer with read noise and stuck-at faults vs its method's floor.

The layer: ``rows x cols`` 8-bit weights (offset mapping, four 2-bit cells each, tiled on
128x128 crossbars with digital partial sums, or one crossbar as tall as the layer), a batch
of 1000 8-bit inputs fed bit-serially (1-bit DAC, 8 cycles), a 6-bit ADC per column read,
read noise (2 %, proportional or independent) drawn for every read, 0.1 % stuck-at faults.

The floor of the ADC-level method (issue 16): the stacked GEMM of its ADC reads,
``(G, batch * cycles, R) @ (G, R, C)`` in float32 for G row groups of R rows and C
physical columns, plus one Gaussian per read (numpy's SFC64 ``standard_normal`` in
float32, two seeded streams filled on the two cores at once). Exact proportional noise
also needs the variance GEMM ``a @ (sigma G)**2``; those rows print the ratio with it in
the floor as well. Also printed: the ratio to the GEMM alone, user+sys CPU seconds and the
CPU-time ratio (the build machine is shared: CPU time is the steadier measure).

Run: ``python benchmarks/bench_crossbar_layer.py`` (or ``make bench``).
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np

from chipforge.accelerators import AdcRange, PlacementScheme, ReramAcceleratorConfig
from chipforge.mappings.placement import place_layer
from chipforge.sim.devices import ReadNoiseModel, ReramDeviceConfig
from chipforge.sim.graph import Node, Op
from chipforge.sim.reram import crossbar_layer_matmul, program_layer

BATCH, INPUT_BITS, REPEATS = 1000, 8, 3


def best_time(fn, repeats=REPEATS) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def draws_two_cores(count: int, seed: int = 7) -> None:
    """``count`` float32 Gaussians from two SFC64 streams filled by two threads at once."""
    half = count // 2
    gens = [np.random.Generator(np.random.SFC64(s)) for s in (seed, seed + 1)]
    bufs = [np.empty(half, dtype=np.float32), np.empty(count - half, dtype=np.float32)]
    threads = [threading.Thread(target=g.standard_normal, kwargs={"out": b, "dtype": np.float32})
               for g, b in zip(gens, bufs, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def bench(size: int, noise_model: ReadNoiseModel, rows: int = 128) -> dict[str, float]:
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
    x = rng.integers(-128, 128, (BATCH, size))

    def crossbar():
        crossbar_layer_matmul(x, programmed, input_bits=INPUT_BITS, signed_inputs=True,
                              noise_key=2)

    crossbar_layer_matmul(x[:2], programmed, input_bits=INPUT_BITS, signed_inputs=True,
                          noise_key=2)                                   # compile
    g, r, c = layer.levels.shape
    a = (rng.random((g, BATCH * INPUT_BITS, r)) < 0.5).astype(np.float32)
    cells = layer.levels.astype(np.float32)
    f0 = os.times()
    gemm = best_time(lambda: np.matmul(a, cells))
    reads = BATCH * INPUT_BITS * g * c
    draws = best_time(lambda: draws_two_cores(reads))
    f1 = os.times()
    floor_cpu = (f1.user - f0.user + f1.system - f0.system) / REPEATS
    c0 = os.times()
    t = best_time(crossbar)
    c1 = os.times()
    cpu = (c1.user - c0.user + c1.system - c0.system) / REPEATS
    return {"time": t, "gemm": gemm, "draws": draws, "floor": gemm + draws, "cpu": cpu,
            "floor_cpu": floor_cpu, "reads": reads}


def main() -> None:
    print(f"crossbar layer: batch {BATCH}, {INPUT_BITS}-bit inputs bit-serial, 8-bit weights "
          "in 2-bit cells (offset), 6-bit ADC, read noise 2 %, stuck-at 0.1 %; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print("  floor = stacked GEMM of the ADC reads + one Gaussian per read (numpy SFC64 on "
          "both cores); 'tall' = one crossbar as tall as the layer")
    for size in (256, 1024):
        for rows in (128, size):
            for model in (ReadNoiseModel.PROPORTIONAL, ReadNoiseModel.INDEPENDENT):
                r = bench(size, model, rows)
                kind = "128-row" if rows == 128 else "tall"
                print(f"  {size:>4}x{size:<4} {kind:<7} {model.value:<12} "
                      f"{r['time'] * 1e3:8.1f} ms ({r['cpu'] * 1e3:7.1f} ms CPU, "
                      f"{r['reads'] / 1e6:5.1f} M reads); floor {r['floor'] * 1e3:8.1f} ms "
                      f"(GEMM {r['gemm'] * 1e3:7.1f} + draws {r['draws'] * 1e3:7.1f}); ratio "
                      f"{r['time'] / r['floor']:5.2f}x (to the GEMM alone "
                      f"{r['time'] / r['gemm']:5.2f}x); CPU-time ratio "
                      f"{r['cpu'] / r['floor_cpu']:5.2f}x", flush=True)
                if model is ReadNoiseModel.PROPORTIONAL:
                    # Exact proportional noise needs its variance GEMM (a @ (sigma G)**2).
                    print(f"  {'':<9} {'':<7} {'':<12} with the variance GEMM in the floor "
                          f"({r['floor'] + r['gemm']:.3f} s): ratio "
                          f"{r['time'] / (r['floor'] + r['gemm']):5.2f}x", flush=True)
    print(f"  load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
