"""ResNet-18 (CIFAR shapes) on ISAAC and FORMS8 with variation, read noise and faults,
against the method's floor measured in the same run.

The model: :func:`chipforge.sim.cycle.workloads.resnet18_shaped` (ResNet-18 CIFAR layer
shapes, 11.2 M weights, random He weights polarized per 8-row fragment so FORMS can place
them, 8-bit weights) with **8-bit unsigned activations** calibrated on the images. The
images: synthetic uniform noise of CIFAR shape (3x32x32; the timing depends on the
activations' bit statistics, which real CIFAR images would change somewhat).

The device: programming variation sigma 0.1 (log-normal), proportional read noise 0.02
drawn for every ADC read, stuck-at faults 0.1 % (1 : 5.2).

The floor of an ADC-level simulation, per layer: the stacked GEMM of its ADC reads
(``(G, M*T, R) @ (G, R, C)`` in float32: row groups G, input rows M, input cycles T,
rows per group R, physical columns C) plus one Gaussian per read (numpy's SFC64
``standard_normal`` float32, two seeded streams filled on the two cores at once). It is
timed on a slice of each layer's rows (at most ``FLOOR_READS`` reads) and scaled linearly
to the layer's rows. Printed: seconds per image, the ratio to that floor, user+sys CPU
seconds, the peak resident memory of the process (each configuration in its own process)
and the load average.

Also: ideal devices with an ADC that cannot saturate (one exact integer GEMM per layer)
against float torch inference of the same network.

Run: ``python benchmarks/bench_resnet18.py [--batch 32] [--arch isaac forms8]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np
from bench_crossbar_layer import draws_two_cores  # same folder: the floor's draws

FLOOR_READS = 24_000_000


def build(batch: int, seed: int = 0):
    from chipforge.sim.cycle.workloads import resnet18_shaped

    rng = np.random.default_rng(seed)
    x = rng.random((batch, 3, 32, 32))
    graph = resnet18_shaped(x, prune=0.0)
    for node in graph.weighted_nodes():          # 16-bit calibration -> 8-bit activations
        node.attrs["act_scale"] = node.attrs["act_scale"] * ((1 << 16) - 1) / 255
        node.attrs["act_bits"] = 8
    return graph, x


def thread_cpu_seconds() -> dict[int, float]:
    """User+system CPU seconds of each thread of this process (Linux /proc): the busiest
    thread's share shows whether the kernels and BLAS really spread over both cores."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / tick
    return out


def busiest_thread_seconds(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds of the busiest thread between two :func:`thread_cpu_seconds` calls: on
    an idle machine with as many cores as threads, the run's wall time is at least this
    and about this when the threads overlap (the estimate printed as 'idle wall')."""
    return max((after[t] - before.get(t, 0.0) for t in after), default=0.0)


def floor_seconds(mapped, shapes: dict[str, tuple[int, int]], cycles: dict[str, int],
                  noise: bool) -> float:
    """The method's floor for these layers and input rows (see the module doc)."""
    rng = np.random.default_rng(1)
    total = 0.0
    c0 = os.times()
    cpu = 0.0
    for name, layer in mapped.layers.items():
        g, r, c = layer.levels.shape
        m = shapes[name][0] * cycles[name]
        per_row_reads = g * c
        rows = max(1, min(m, FLOOR_READS // per_row_reads))
        a = (rng.random((g, rows, r)) < 0.3).astype(np.float32)
        w = layer.levels.astype(np.float32)
        start = time.perf_counter()
        c1 = os.times()
        np.matmul(a, w)
        if noise:
            draws_two_cores(rows * per_row_reads, 7)
        c2 = os.times()
        total += (time.perf_counter() - start) * m / rows
        cpu += (c2.user - c1.user + c2.system - c1.system) * m / rows
    del c0
    return total, cpu


def _torch_float(graph):
    """The same network as float32 torch functional calls (the float-inference baseline)."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    from chipforge.sim.graph import Op

    params = {n.name: {k: torch.from_numpy(np.asarray(v, dtype=np.float32))
                       for k, v in n.params.items()} for n in graph.nodes}

    def forward(x):
        values = {"input": x}
        for n in graph.nodes:
            a = values[n.inputs[0]]
            p = params[n.name]
            if n.op is Op.CONV2D:
                y = F.conv2d(a, p["weight"], p.get("bias"), stride=int(n.attrs["stride"]),
                             padding=int(n.attrs["padding"]))
            elif n.op is Op.LINEAR:
                y = F.linear(a, p["weight"], p.get("bias"))
            elif n.op is Op.RELU:
                y = F.relu(a)
            elif n.op is Op.ADD:
                y = a + values[n.inputs[1]]
            elif n.op is Op.GLOBAL_AVGPOOL:
                y = a.mean(dim=(2, 3), keepdim=True)
            elif n.op is Op.FLATTEN:
                y = a.flatten(1)
            else:
                raise ValueError(f"no torch baseline for {n.op}")
            values[n.name] = y
        return values[graph.output_name]

    return forward


def run_one(arch: str, batch: int, ideal: bool, backend: str) -> dict:
    from chipforge.accelerators import get_accelerator
    from chipforge.mappings.placement import place
    from chipforge.sim.executor import run_graph
    from chipforge.sim.reram import CrossbarMatmul

    graph, x = build(batch)
    accel = get_accelerator(arch)
    if ideal:
        # An ADC that cannot saturate: enough bits for the largest column sum.
        rows = accel.group_rows
        worst = rows * ((1 << accel.dac_bits) - 1) * ((1 << accel.cell_bits) - 1)
        accel = accel.replace(adc_bits=int(worst).bit_length())
        device = accel.device
    else:
        device = accel.device.replace(programming_sigma=0.1, read_noise=0.02
                                      ).with_stuck_at_rate(0.001)
    accel = accel.replace(device=device)
    mapped = place(graph, accel)
    shapes, cycles = {}, {}

    def record(node, x_q, w_q):
        shapes[node.name] = x_q.shape
        cycles[node.name] = int(node.attrs["act_bits"])
        return np.zeros((len(x_q), w_q.shape[1]), dtype=np.int64)

    run_graph(graph, x[:1], matmul=record)
    shapes = {k: (v[0] * batch, v[1]) for k, v in shapes.items()}
    hook = CrossbarMatmul(mapped, device, seed=1, backend=backend)
    hook(next(iter(n for n in graph.nodes if n.name in mapped.layers)),
         np.zeros((1, shapes[next(iter(mapped.layers))][1]), dtype=np.int64),
         np.zeros((mapped.layers[next(iter(mapped.layers))].rows,
                   mapped.layers[next(iter(mapped.layers))].outputs), dtype=np.int64))  # compile
    if ideal:   # warm up like the torch baseline below: oneDNN builds a kernel per shape
        run_graph(graph, x, matmul=CrossbarMatmul(mapped, device, seed=1, backend=backend),
                  batch_size=batch)
    hook = CrossbarMatmul(mapped, device, seed=1, backend=backend)
    t0, c0, th0 = time.perf_counter(), os.times(), thread_cpu_seconds()
    run_graph(graph, x, matmul=hook, batch_size=batch)
    wall = time.perf_counter() - t0
    c1, th1 = os.times(), thread_cpu_seconds()
    cpu = (c1.user - c0.user) + (c1.system - c0.system)
    out = {"arch": arch, "ideal": ideal, "batch": batch, "backend": backend,
           "seconds_per_image": wall / batch, "cpu_seconds_per_image": cpu / batch,
           "reads_per_image": hook.report.get("adc_reads", 0) / batch,
           "idle_wall_seconds_per_image": busiest_thread_seconds(th0, th1) / batch,
           "threads_busy": sum(1 for t in th1 if th1[t] - th0.get(t, 0.0) > 0.1 * cpu),
           "saturated": hook.report.get("saturated", 0)}
    if ideal:
        import torch

        model = _torch_float(graph)
        xt = torch.from_numpy(x.astype(np.float32))
        with torch.no_grad():
            model(xt)
            t0, c0 = time.perf_counter(), os.times()
            model(xt)
            c1 = os.times()
            out["torch_float_seconds_per_image"] = (time.perf_counter() - t0) / batch
            out["torch_float_cpu_seconds_per_image"] = (c1.user - c0.user + c1.system
                                                        - c0.system) / batch
        out["cpu_ratio_to_torch_float"] = out["cpu_seconds_per_image"] / max(
            out["torch_float_cpu_seconds_per_image"], 1e-9)
        out["ratio_to_torch_float"] = out["seconds_per_image"] / out[
            "torch_float_seconds_per_image"]
    else:
        fl, fl_cpu = floor_seconds(mapped, shapes, cycles, device.read_noise > 0)
        out["floor_seconds_per_image"] = fl / batch
        out["floor_cpu_seconds_per_image"] = fl_cpu / batch
        out["ratio_to_floor"] = wall / fl
        out["cpu_ratio_to_floor"] = cpu / fl_cpu
    out["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--arch", nargs="+", default=["isaac", "forms8"])
    p.add_argument("--backend", default="numpy")
    p.add_argument("--ideal", action="store_true", help="only the ideal-device rows")
    p.add_argument("--one", nargs=2, metavar=("ARCH", "IDEAL"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one[0], args.batch, args.one[1] == "1", args.backend)))
        return
    print(f"ResNet-18 CIFAR shapes, batch {args.batch}, 8-bit weights and activations; load "
          f"average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    for ideal in ([True] if args.ideal else [False, True]):
        for arch in args.arch:
            proc = subprocess.run([sys.executable, __file__, "--batch", str(args.batch),
                                   "--backend", args.backend, "--one", arch, str(int(ideal))],
                                  capture_output=True, text=True, check=False)
            if proc.returncode:
                print(f"  {arch}: failed\n{proc.stderr[-2000:]}")
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            if ideal:
                print(f"  {arch:<7} ideal, non-saturating ADC: {r['seconds_per_image']:.3f} s/image"
                      f" ({r['cpu_seconds_per_image']:.3f} CPU s); float torch "
                      f"{r['torch_float_seconds_per_image']:.3f} s/image; ratio "
                      f"{r['ratio_to_torch_float']:.2f}x (CPU time: torch "
                      f"{r['torch_float_cpu_seconds_per_image']:.3f} s, ratio "
                      f"{r['cpu_ratio_to_torch_float']:.2f}x); peak {r['peak_rss_gb']:.2f} GB; "
                      f"busiest thread {r['idle_wall_seconds_per_image']:.3f} s/image",
                      flush=True)
            else:
                print(f"  {arch:<7} variation+read noise+faults: {r['seconds_per_image']:.3f} "
                      f"s/image ({r['cpu_seconds_per_image']:.3f} CPU s, "
                      f"{r['reads_per_image'] / 1e6:.0f} M ADC reads); floor "
                      f"{r['floor_seconds_per_image']:.3f} s/image; ratio "
                      f"{r['ratio_to_floor']:.2f}x (CPU time {r['cpu_ratio_to_floor']:.2f}x of "
                      f"{r['floor_cpu_seconds_per_image']:.3f} s); peak "
                      f"{r['peak_rss_gb']:.2f} GB; "
                      f"{r['saturated']} saturated reads", flush=True)
                print(f"  {'':<7} busiest thread {r['idle_wall_seconds_per_image']:.3f} CPU "
                      f"s/image ({r['threads_busy']} threads busy): the wall time per image on "
                      f"{os.cpu_count()} idle cores; CPU s / 2 = "
                      f"{r['cpu_seconds_per_image'] / 2:.3f} s if both cores stay busy",
                      flush=True)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
