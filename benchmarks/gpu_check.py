"""GPU check of the torch backend (run on a machine with CUDA; the integrator's script).

1. Integer results: torch on CUDA gives the numpy backend's integers exactly for layers
   with integer cells (stuck-at faults, no variation) and saturating ADCs, on ISAAC (GEMM
   path), FORMS8 (fragments) and a two-column layout; exits 1 on any difference.
2. Noise: the CUDA run's read-noise output has the numpy run's mean and spread
   (equal in distribution, not in value: the backends turn the same read index into a
   Gaussian differently).
3. Time: a ResNet-18 (CIFAR shapes) batch on ISAAC and FORMS8 with variation, read noise
   and faults, on CUDA and on the numpy CPU kernels, seconds per image.

Run: ``python benchmarks/gpu_check.py [--batch 32] [--skip-cpu]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np


def check_integers() -> bool:
    from chipforge.accelerators import FORMS8, ISAAC, ISQED_TWO_COLUMN
    from chipforge.mappings.placement import place_layer
    from chipforge.sim.graph import Node, Op
    from chipforge.sim.reram import crossbar_layer_matmul, program_layer

    ok = True
    rng = np.random.default_rng(0)
    for accel in (ISAAC, FORMS8, ISQED_TWO_COLUMN.replace(adc_bits=6)):
        accel = accel.with_device(p_stuck_off=0.02, p_stuck_on=0.05)
        k, n = 1152, 256
        w = np.minimum(np.abs(rng.integers(-127, 128, (n, k))), 127)
        w = w * np.repeat(rng.choice([-1, 1], (n, k // 8)), 8, axis=1)
        node = Node(Op.LINEAR, "fc", ("input",),
                    dict(weight_bits=8, weight_scale=1.0, act_bits=8, act_scale=1.0,
                         act_signed=False, fragment_size=8, fragment_order="w-major"),
                    {"weight": w * 1.0})
        layer = place_layer(node, accel)
        programmed = program_layer(layer, accel.device, seed=1)
        x = rng.integers(0, 256, (512, k))
        x[rng.random(x.shape) < 0.5] = 0
        kw = dict(input_bits=8, signed_inputs=False)
        a = crossbar_layer_matmul(x, programmed, **kw)
        b = crossbar_layer_matmul(x, programmed, backend="torch", device="cuda", **kw)
        same = np.array_equal(a, b)
        ok &= same
        print(f"  {accel.name:<18} integers torch-cuda == numpy: {same} "
              f"({int((a != b).sum())} of {a.size} differ)")
        noisy = accel.with_device(read_noise=0.05)
        p2 = program_layer(place_layer(node, noisy), noisy.device, seed=1)
        xn = np.tile(x[:1], (2000, 1))
        a = crossbar_layer_matmul(xn, p2, noise_key=3, **kw).astype(float)
        b = crossbar_layer_matmul(xn, p2, noise_key=3, backend="torch", device="cuda",
                                  **kw).astype(float)
        spread = float(np.median(b.std(axis=0) / np.maximum(a.std(axis=0), 1e-9)))
        shift = float(np.abs(a.mean(axis=0) - b.mean(axis=0)).max()
                      / max(a.std(axis=0).max(), 1e-9))
        print(f"  {accel.name:<18} read noise: std ratio cuda/numpy {spread:.3f} (1 expected),"
              f" largest mean shift {shift:.3f} std")
    return ok


def time_resnet(batch: int, skip_cpu: bool) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_resnet18 import build

    from chipforge.accelerators import get_accelerator
    from chipforge.mappings.placement import place
    from chipforge.sim.executor import run_graph
    from chipforge.sim.reram import CrossbarMatmul

    graph, x = build(batch)
    for arch in ("isaac", "forms8"):
        accel = get_accelerator(arch)
        device = accel.device.replace(programming_sigma=0.1, read_noise=0.02
                                      ).with_stuck_at_rate(0.001)
        mapped = place(graph, accel.replace(device=device))
        runs = [("cuda", "torch")] + ([] if skip_cpu else [("cpu", "numpy")])
        for where, backend in runs:
            hook = CrossbarMatmul(mapped, device, seed=1, backend=backend, array_device=where)
            run_graph(graph, x[:1], matmul=hook)                      # warm up / compile
            hook = CrossbarMatmul(mapped, device, seed=1, backend=backend, array_device=where)
            t0 = time.perf_counter()
            run_graph(graph, x, matmul=hook, batch_size=batch)
            dt = time.perf_counter() - t0
            print(f"  ResNet-18 {arch:<7} {backend}-{where}: {dt / batch:.3f} s/image "
                  f"(batch {batch})", flush=True)


def main() -> int:
    import torch

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--skip-cpu", action="store_true", help="time only the CUDA runs")
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("gpu_check: torch sees no CUDA device (this torch is "
              f"{torch.__version__}); run it on a GPU machine with a CUDA build of torch")
        return 2
    print(f"GPU: {torch.cuda.get_device_name(0)}")
    ok = check_integers()
    time_resnet(args.batch, args.skip_cpu)
    print("gpu_check:", "PASS" if ok else "FAIL (integer results differ)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
