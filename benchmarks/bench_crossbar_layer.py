"""One crossbar-mapped layer with read noise and stuck-at faults vs its GEMM floor.

The layer: ``rows x cols`` 8-bit weights (offset mapping, four 2-bit cells each, tiled on
128x128 crossbars with digital partial sums), a batch of 1000 8-bit inputs fed bit-serially
(1-bit DAC, 8 cycles), a 6-bit ADC per column read, proportional read noise (2 %) drawn
for every read, and 0.1 % stuck-at faults (1 : 5.2).

The floor: one float32 GEMM of the stacked shape ``(batch * input_bits, rows) @
(rows, cols * slices)``, the bit-plane products the method cannot avoid. Proportional read
noise needs exactly one more GEMM (the per-read variance ``a @ (sigma G)**2``), so 2x is
the floor with noise; independent noise needs none (its variance is the input popcount).

Run: ``python benchmarks/bench_crossbar_layer.py`` (or ``make bench``).
"""

from __future__ import annotations

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


def bench(size: int, noise_model: ReadNoiseModel, rows: int = 128
          ) -> tuple[float, float, float]:
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
    noise_rng = np.random.Generator(np.random.SFC64(2))  # as CrossbarMatmul uses

    def crossbar():
        crossbar_layer_matmul(x, programmed, input_bits=INPUT_BITS, signed_inputs=True,
                              rng=noise_rng)

    slices = accel.slices
    a = (rng.random((BATCH * INPUT_BITS, size)) < 0.5).astype(np.float32)
    b = rng.integers(0, 4, (size, size * slices)).astype(np.float32)
    floor = best_time(lambda: a @ b)
    # The Gaussians alone: one per ADC read (batch x cycles x row tiles x columns).
    reads = BATCH * INPUT_BITS * layer.levels.shape[0] * layer.levels.shape[2]
    gauss = best_time(lambda: noise_rng.standard_normal(reads, dtype=np.float32), 1)
    return best_time(crossbar), floor, gauss


def main() -> None:
    print(f"crossbar layer: batch {BATCH}, {INPUT_BITS}-bit inputs bit-serial, 8-bit weights "
          "in 2-bit cells (offset), 6-bit ADC, read noise 2 %, stuck-at 0.1 %")
    print("  128-row crossbars: row tiles multiply the ADC reads (and noise draws) by "
          "rows / 128 over the floor's outputs; 'tall' = one crossbar as tall as the layer, "
          "one ADC read per column per cycle as the floor counts (its 6-bit ADC saturates)")
    for size in (256, 1024):
        for rows in (128, size):
            for model in (ReadNoiseModel.PROPORTIONAL, ReadNoiseModel.INDEPENDENT):
                t, floor, gauss = bench(size, model, rows)
                kind = "128-row" if rows == 128 else "tall"
                print(f"  {size:>4}x{size:<4} {kind:<7} {model.value:<12} read noise: "
                      f"{t * 1e3:8.1f} ms; floor GEMM ({BATCH * INPUT_BITS}x{size}) @ "
                      f"({size}x{size * 4}) {floor * 1e3:7.1f} ms; ratio {t / floor:5.2f}x "
                      f"(the Gaussian draws alone: {gauss / floor:4.2f}x)", flush=True)


if __name__ == "__main__":
    main()
