"""The user's path against the kernels: ``chipforge.simulate`` of a torch ResNet-18 (CIFAR
shapes) on ISAAC and FORMS8 with variation, read noise and faults, against the kernels of
the same work, timed at the same batch in the same run.

The model: a plain torch ResNet-18 as a user writes it (BasicBlocks with batch norm, CIFAR
stem, 11.2 M weights) holding the weights of ``bench_resnet18.py``'s network
(:func:`chipforge.sim.cycle.workloads.resnet18_shaped`: random He weights polarized per
8-row fragment so FORMS can place them; batch norm at its initial statistics, which keeps
the polarization when folded). The images: synthetic CIFAR-shaped noise, labels random.
The device: programming variation sigma 0.1, read noise 0.02 per read, stuck-at faults
0.1 % (1 : 5.2), as ``bench_resnet18.py``.

**User path** (its own process, cold, as a user runs it): ``chipforge.from_torch(module,
x[:1])`` as the README shows, then ``chipforge.simulate(graph, accelerator=ARCH,
data=(x, y), variation=0.1, read_noise=0.02, fault_rate=0.001, out=TMP)``: import,
post-training 8-bit quantization (calibrated on the given inputs), placement, chip
programming, the hardware, ideal and float runs, the cost model (on the first 100 images,
``simulate``'s default), the report files. Timed from the call of ``from_torch`` to the
return of ``simulate``.

**Kernels of the same work** (another process, at the same batch): on the very graph the
user path simulates (``from_torch`` + the same quantization, done untimed), the three
passes ``simulate`` runs, each as its bare kernel, warmed up like ``bench_resnet18.py``:

- *hardware*: the executor with the crossbar hook (``CrossbarMatmul``, the chip already
  programmed) on the whole batch: ``bench_resnet18.py``'s timed region;
- *ideal*: the executor's exact integer run (no hook);
- *float*: the user's torch module's forward on the batch (float32, torch's own
  inference, the fastest float pass there is).

"Same work" is the sum of the three. Not counted as kernel work: import, quantization,
placement, programming the chip (variation and faults drawn once per chip), the cost
model, the report; the user path pays them, and its stage times (``report.json``) show
each. Printed per architecture: seconds per image of each, the ratio of the user path to
the kernels (target <= 1.25x) and to the hardware kernel alone, the stage table, peak
resident memory, and the load average (each configuration in its own process).

Run: ``python benchmarks/bench_simulate_resnet18.py [--images 32] [--batch B]
[--arch isaac forms8]`` (``--batch``: the executor batch of both paths, set for
``simulate`` through its ``max_memory`` run option; default: all images in one batch,
as ``bench_resnet18.py --batch 32`` runs 32). About 4-5 minutes at 32 images on two idle
cores (estimated from the per-image times; 5.5 minutes at 8 images under load 10).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

NOISY = dict(variation=0.1, read_noise=0.02, fault_rate=0.001)


def torch_resnet18(graph):
    """A plain torch ResNet-18 (CIFAR stem, BasicBlocks with batch norm) holding the conv
    and fc weights of ``bench_resnet18.build``'s graph (same names, same order)."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.down = None
            if stride != 1 or cin != cout:
                self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

        def forward(self, x):
            y = torch.relu(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            return torch.relu(y + (x if self.down is None else self.down(x)))

    class ResNet18(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            blocks, cin = [], 64
            for stage in range(4):
                cout = 64 * 2 ** stage
                for block in range(2):
                    blocks.append(Block(cin, cout, 2 if stage and not block else 1))
                    cin = cout
            self.blocks = nn.Sequential(*blocks)
            self.fc = nn.Linear(512, 10, bias=False)

        def forward(self, x):
            x = self.blocks(torch.relu(self.bn1(self.conv1(x))))
            return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))

    module = ResNet18().eval()
    weights = [n.params["weight"] for n in graph.weighted_nodes()]
    layers = [m for m in module.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    # the graph lists a block's conv1, conv2, then its down-sampling conv; so does modules()
    assert [tuple(w.shape) for w in weights] == [tuple(m.weight.shape) for m in layers]
    with torch.no_grad():
        for m, w in zip(layers, weights, strict=True):
            m.weight.copy_(torch.from_numpy(np.asarray(w, dtype=np.float32)))
    return module


def build(images: int):
    from bench_resnet18 import build as build_resnet18

    graph, x = build_resnet18(images)
    y = np.random.default_rng(2).integers(0, 10, len(x))
    return torch_resnet18(graph), x, y


def max_memory_for(batch: int | None, images: int, graph, accel, device) -> int | None:
    """A memory budget under which the run's executor batch is ``batch`` (None: the
    default budget)."""
    if batch is None or batch >= images:
        return None
    from chipforge.mappings.placement import place
    from chipforge.sim.memory import plan_memory

    mapped = place(graph, accel)
    lo, hi = 1 << 20, 1 << 40
    while lo < hi:               # the largest budget whose plan keeps batches of <= batch
        mid = (lo + hi + 1) // 2
        try:
            fits = plan_memory(graph, mapped, device, images, mid).batch <= batch
        except ValueError:          # below the chip's own memory: too small a budget
            lo = mid
            continue
        if fits:
            lo = mid
        else:
            hi = mid - 1
    return lo


def user_path(arch: str, images: int, batch: int | None) -> dict:
    import chipforge

    module, x, y = build(images)
    # the budget that gives the asked batch is worked out on the kernels' graph (untimed)
    budget = None
    if batch is not None and batch < images:
        graph, accel, device = _prepared(module, x, arch)
        budget = max_memory_for(batch, images, graph, accel, device)
    with tempfile.TemporaryDirectory() as out:
        t0, c0 = time.perf_counter(), os.times()
        graph = chipforge.from_torch(module, x[:1].astype(np.float32))
        t1, c1 = time.perf_counter(), os.times()
        result = chipforge.simulate(graph, accelerator=arch, data=(x, y), out=out,
                                    progress=False,
                                    run_options={"max_memory": budget} if budget else None,
                                    **NOISY)
        wall = time.perf_counter() - t0
        c2 = os.times()
    stages = [{"stage": "from_torch", "wall_s": t1 - t0,
               "cpu_s": c1.user - c0.user + c1.system - c0.system}] + result.stages
    return {"seconds_per_image": wall / images,
            "cpu_seconds_per_image": (c2.user - c0.user + c2.system - c0.system) / images,
            "stages": stages, "batch": result.metrics.get("batch_chunk"),
            "accuracy_hardware": result.accuracy_hardware,
            "accuracy_ideal": result.accuracy_ideal,
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def _prepared(module, x, arch: str):
    """The graph ``simulate`` runs (``from_torch`` + its quantization), its accelerator
    config and device."""
    import chipforge
    from chipforge.families import CALIBRATION_SAMPLES, get_accelerator_spec

    spec = get_accelerator_spec(arch, options=NOISY)
    graph = chipforge.from_torch(module, x[:1].astype(np.float32))
    graph = spec.family.prepare(graph, x[:CALIBRATION_SAMPLES], mode="auto", calib_label="",
                                notes=[])
    return graph, spec.config, spec.config.device


def kernels(arch: str, images: int, batch: int | None) -> dict:
    import torch

    from chipforge.mappings.placement import place
    from chipforge.sim.executor import run_graph
    from chipforge.sim.reram import CrossbarMatmul

    module, x, _ = build(images)
    graph, accel, device = _prepared(module, x, arch)
    mapped = place(graph, accel)
    batch = images if batch is None else batch
    # warm-ups, untimed, as bench_resnet18.py: numba/oneDNN build their kernels per shape
    run_graph(graph, x[:batch], batch_size=batch)
    xt = torch.from_numpy(x.astype(np.float32))
    with torch.no_grad():
        module(xt[:batch])
    hook = CrossbarMatmul(mapped, device, seed=1)
    run_graph(graph, x[:1], matmul=hook)
    hook = CrossbarMatmul(mapped, device, seed=1)   # programmed here, untimed
    out = {}
    for name, call in (
            ("hardware", lambda: run_graph(graph, x, matmul=hook, batch_size=batch)),
            ("ideal", lambda: run_graph(graph, x, batch_size=batch)),
            ("float", lambda: _torch_forward(module, xt, batch))):
        t0, c0 = time.perf_counter(), os.times()
        call()
        c1 = os.times()
        out[name] = {"wall_s": time.perf_counter() - t0,
                     "cpu_s": c1.user - c0.user + c1.system - c0.system}
    total = sum(v["wall_s"] for v in out.values())
    return {"seconds_per_image": total / images,
            "cpu_seconds_per_image": sum(v["cpu_s"] for v in out.values()) / images,
            "hardware_seconds_per_image": out["hardware"]["wall_s"] / images,
            "passes": out, "batch": batch,
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def _torch_forward(module, xt, batch: int) -> None:
    import torch

    with torch.no_grad():
        for start in range(0, len(xt), batch):
            module(xt[start:start + batch])


def _child(arch: str, which: str, images: int, batch: int | None) -> dict:
    cmd = [sys.executable, __file__, "--images", str(images), "--one", arch, which]
    if batch is not None:
        cmd += ["--batch", str(batch)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise RuntimeError(f"{arch} {which} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=32,
                   help="images simulated (default 32, bench_resnet18.py's batch)")
    p.add_argument("--batch", type=int, default=None,
                   help="executor batch of both paths (default: all images at once)")
    p.add_argument("--arch", nargs="+", default=["isaac", "forms8"])
    p.add_argument("--one", nargs=2, metavar=("ARCH", "WHICH"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.images < 1 or (args.batch is not None and args.batch < 1):
        p.error("--images and --batch must be >= 1")
    if args.one:
        run = user_path if args.one[1] == "user" else kernels
        print(json.dumps(run(args.one[0], args.images, args.batch)))
        return 0
    from chipforge.stages import STAGE_LABELS

    print(f"ResNet-18 CIFAR shapes from torch, {args.images} images, batch "
          f"{args.batch or args.images}; variation 0.1, read noise 0.02, faults 0.1 %; load "
          f"average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores", flush=True)
    worst = 0.0
    for arch in args.arch:
        k = _child(arch, "kernels", args.images, args.batch)
        u = _child(arch, "user", args.images, args.batch)
        ratio = u["seconds_per_image"] / k["seconds_per_image"]
        cpu_ratio = u["cpu_seconds_per_image"] / k["cpu_seconds_per_image"]
        to_hardware = u["seconds_per_image"] / k["hardware_seconds_per_image"]
        worst = max(worst, ratio)
        passes = ", ".join(f"{n} {v['wall_s'] / args.images:.3f}"
                           for n, v in k["passes"].items())
        print(f"  {arch:<7} simulate (user path)     {u['seconds_per_image']:7.3f} s/image "
              f"({u['cpu_seconds_per_image']:.3f} CPU s), executor batch {u['batch']}, peak "
              f"{u['peak_rss_gb']:.2f} GB", flush=True)
        print(f"  {'':<7} kernels of the same work {k['seconds_per_image']:7.3f} s/image "
              f"({k['cpu_seconds_per_image']:.3f} CPU s; {passes}), batch {k['batch']}, "
              f"peak {k['peak_rss_gb']:.2f} GB", flush=True)
        print(f"  {'':<7} ratio {ratio:.2f}x (CPU time {cpu_ratio:.2f}x; to the hardware "
              f"kernel alone {to_hardware:.2f}x)", flush=True)
        print(f"  {'':<7} stage times of simulate (s per image, wall / CPU):")
        for r in u["stages"]:
            label = STAGE_LABELS.get(r["stage"], r["stage"])
            indent = "    " if r.get("within") else ""
            print(f"  {'':<9}{indent}{label:<44} {r['wall_s'] / args.images:7.3f} "
                  f"{r['cpu_s'] / args.images:7.3f}", flush=True)
    print(f"worst ratio {worst:.2f}x (target <= 1.25x); load average at the end "
          f"{os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
