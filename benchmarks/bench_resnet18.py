"""ResNet-18 (CIFAR shapes) on ISAAC and FORMS8 with variation, read noise and faults,
against the method's floor measured in the same run.

The model: :func:`chipforge.sim.cycle.workloads.resnet18_shaped` (ResNet-18 CIFAR layer
shapes, 11.2 M weights, random He weights polarized per 8-row fragment so FORMS can place
them, 8-bit weights) with **8-bit unsigned activations** calibrated on the images. The
images: synthetic uniform noise of CIFAR shape (3x32x32; the timing depends on the
activations' bit statistics, which real CIFAR images would change somewhat).

The device: programming variation sigma 0.1 (log-normal), proportional read noise 0.02
drawn for every ADC read, stuck-at faults 0.1 % (1 : 5.2).

The floor of an ADC-level simulation, per layer (issue 27; the same definition as
``bench_crossbar_layer.py``): the reads actually done (a read whose DAC inputs are all
zero is skipped: FORMS' zero-skipping, and ISAAC's all-zero reads), counted from each
layer's real inputs during the timed run (the counting's time and CPU are left out of the
simulation's figures); over them, the value GEMM ``a @ G`` and the variance GEMM
``a**2 @ (sigma G)**2`` in float32 through numpy's BLAS, and one Gaussian per physical
column read from the simulator's own generator (counter-based SIMD Box-Muller on every
core). It is timed on an evenly spaced sample of each layer's input rows (at most
``FLOOR_READS`` Gaussians) and scaled by the reads done. Printed: seconds per image, the
nominal and the done ADC reads, the ratio to that floor, user+sys CPU seconds and their
ratio, the peak resident memory of the process (each configuration in its own process)
and the load average.

Also: ideal devices with an ADC that cannot saturate (one exact integer GEMM per layer)
against float torch inference of the same network.

Run: ``python benchmarks/bench_resnet18.py [--batch 32] [--arch isaac forms8]``
(``--batch 2 --arch forms8``: a smoke run of about a minute).
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
from bench_crossbar_layer import (  # same folder: the floor's definition
    count_reads_done,
    floor_of_reads,
    input_slices,
    reads_done_per_group,
    warm_up_generator,
)

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


def counting_matmul(mapped, device, backend: str):
    """A :class:`CrossbarMatmul` that also counts, per layer, the reads done (all-zero
    reads skipped) and keeps an evenly spaced sample of the input rows for the floor. The
    counting's wall time, CPU time and per-thread CPU are kept in ``excluded_*`` so that
    the caller subtracts them from the simulation's figures."""
    from chipforge.sim.reram import CrossbarMatmul

    class CountingMatmul(CrossbarMatmul):
        def __init__(self) -> None:
            super().__init__(mapped, device, seed=1, backend=backend)
            self.layer_reads: dict[str, dict] = {}
            self.excluded_wall = 0.0
            self.excluded_cpu = 0.0
            self.excluded_threads: dict[int, float] = {}

        def __call__(self, node, x_q, w_q):
            layer = self.programmed[node.name].layer if node.name in self.programmed else None
            if layer is not None:
                t0, c0, th0 = time.perf_counter(), time.process_time(), thread_cpu_seconds()
                self._count(node, layer, x_q)
                th1, c1 = thread_cpu_seconds(), time.process_time()
                self.excluded_wall += time.perf_counter() - t0
                self.excluded_cpu += c1 - c0
                for tid, seconds in th1.items():
                    self.excluded_threads[tid] = (self.excluded_threads.get(tid, 0.0)
                                                  + seconds - th0.get(tid, 0.0))
            return super().__call__(node, x_q, w_q)

        def _count(self, node, layer, x_q):
            bits, signed = int(node.attrs["act_bits"]), bool(node.attrs["act_signed"])
            g, _, c = layer.levels.shape
            cycles = len(input_slices(bits, layer.dac_bits, signed))
            entry = self.layer_reads.setdefault(node.name, {
                "done": 0, "nominal": 0, "bits": bits, "signed": signed, "sample": None,
                # ADC conversions per (row group, cycle) read: its columns and unit columns
                "per_read": layer.stats.adc_reads_per_vector // (g * cycles)})
            entry["done"] += count_reads_done(x_q, layer, input_bits=bits, signed=signed)
            entry["nominal"] += len(x_q) * layer.stats.adc_reads_per_vector
            if entry["sample"] is None:
                rows = max(1, min(len(x_q), FLOOR_READS // (g * cycles * c)))
                pick = np.linspace(0, len(x_q) - 1, rows).round().astype(np.int64)
                entry["sample"] = np.asarray(x_q[pick]).astype(np.int64)

    return CountingMatmul()


def floor_seconds(hook) -> tuple[float, float]:
    """The method's floor (wall, CPU seconds) for the reads ``hook`` counted: each layer's
    floor timed on its sample of input rows, scaled by the reads done (see the module doc)."""
    warm_up_generator()
    wall = cpu = 0.0
    for name, entry in hook.layer_reads.items():
        programmed = hook.programmed[name]
        layer = programmed.layer
        groups = reads_done_per_group(entry["sample"], layer, input_bits=entry["bits"],
                                      signed=entry["signed"])
        sample_done = sum(len(a) for a in groups)
        if sample_done == 0 or entry["done"] == 0:
            continue                     # no read done in the sample (or at all): no cost
        draws = sample_done * layer.levels.shape[2] if hook.device.read_noise > 0 else 0
        floor = floor_of_reads(groups, programmed.conductance, programmed.noise_var, draws,
                               repeats=1)
        scale = entry["done"] / sample_done
        wall += floor["floor"] * scale
        cpu += floor["cpu"] * scale
    return wall, cpu


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
    hook = (CrossbarMatmul(mapped, device, seed=1, backend=backend) if ideal
            else counting_matmul(mapped, device, backend))
    t0, c0, th0 = time.perf_counter(), os.times(), thread_cpu_seconds()
    run_graph(graph, x, matmul=hook, batch_size=batch)
    wall = time.perf_counter() - t0
    c1, th1 = os.times(), thread_cpu_seconds()
    cpu = (c1.user - c0.user) + (c1.system - c0.system)
    if not ideal:                       # the read counting is not the simulation's work
        wall -= hook.excluded_wall
        cpu -= hook.excluded_cpu
        th1 = {t: s - hook.excluded_threads.get(t, 0.0) for t, s in th1.items()}
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
        nominal = sum(e["nominal"] for e in hook.layer_reads.values())
        if nominal != hook.report["adc_reads"]:
            raise AssertionError(f"nominal reads {nominal} != the simulator's "
                                 f"{hook.report['adc_reads']}")
        out["reads_done_per_image"] = sum(e["done"] * e["per_read"]
                                          for e in hook.layer_reads.values()) / batch
        fl, fl_cpu = floor_seconds(hook)
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
    p.add_argument("--noisy", action="store_true",
                   help="only the rows with variation, read noise and faults (and their floor)")
    p.add_argument("--one", nargs=2, metavar=("ARCH", "IDEAL"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one[0], args.batch, args.one[1] == "1", args.backend)))
        return
    print(f"ResNet-18 CIFAR shapes, batch {args.batch}, 8-bit weights and activations; load "
          f"average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    for ideal in ([True] if args.ideal else [False] if args.noisy else [False, True]):
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
                      f"ADC reads {r['reads_per_image'] / 1e6:.0f} M nominal, "
                      f"{r['reads_done_per_image'] / 1e6:.0f} M done); floor "
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
