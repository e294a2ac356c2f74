"""Cost of the cycle model against a plain quantized run of the same network.

Prints the time of the cycle model (per architecture) as a ratio of the executor's
quantized run on the same images, for the ResNet-18-shaped network, both in this process.
"""

import time

import numpy as np

from chipforge.sim.cycle.arch import FORMS8, ISAAC8
from chipforge.sim.cycle.model import capture_workloads, simulate_cycles
from chipforge.sim.cycle.workloads import resnet18_shaped
from chipforge.sim.executor import run_graph
from chipforge.zoo.data import digits


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main():
    images = np.repeat(digits(32).x_test[:8], 3, axis=1).astype(np.float64)
    graph = resnet18_shaped(images)
    _, base = timed(lambda: run_graph(graph, images))
    work, capture = timed(lambda: capture_workloads(graph, images))
    print(f"resnet18-shaped, 8 images: quantized run {base:.2f} s (baseline 1.00x)")
    print(f"  capture_workloads       {capture / base:6.2f}x")
    for arch in (ISAAC8, FORMS8):
        _, t = timed(lambda a=arch: simulate_cycles(work, a))
        print(f"  simulate_cycles {arch.name:<24} {t / base:6.2f}x")


if __name__ == "__main__":
    main()
