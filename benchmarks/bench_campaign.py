"""A fault-tolerance campaign of the CIFAR-shaped ResNet-18: N chips x M images on ISAAC and
FORMS8 with variation, read noise and faults, sharded on 1 and 2 workers.

The model, images and device are those of ``bench_resnet18.py``: ResNet-18 CIFAR layer
shapes (11.2 M weights, random He weights polarized per 8-row fragment, 8-bit weights and
activations), synthetic CIFAR-shaped images (labels random: the accuracy is not the point),
programming variation sigma 0.1, read noise 0.02 per read, stuck-at faults 0.1 %.

For each architecture, runs of the same work (the same chips, images and results):

1. **one process**: :func:`chipforge.simulate.simulate_chips` in this process (each chip
   programmed and run on all images, the crossbar kernels on every core; the mapping's time
   left out, as the campaigns get the mapping made beforehand);
2. **campaign, W workers** for each ``--workers`` W: :func:`chipforge.campaign.
   run_campaign` on a process pool (``--dask``: a Dask LocalCluster), shards of the first
   ``--chunk-size`` images, worker start-up included in the wall time. A worker is one
   core (its kernels run on one thread, as in Dask's process workers), and each chip's
   shards go to one worker in a row, so each chip is programmed once;
3. for each further ``--chunk-size``: the campaign again on the largest W (the per-chip
   results must not change).

Printed: chip-images per second of each and the load average before it, the speed-up from
1 to 2 workers (the scaling: one core to two; also *estimated* for idle cores from the
start-up plus the busiest worker's CPU seconds, which the load inflates far less), the
ratio of each campaign to one process (all cores; so the scaling is not mistaken for a
gain over one multi-threaded process),
the programmings (stage "program", per chip apart), the mean wall time of one hardware
shard, where the machine's core-seconds went during each campaign (the shards' CPU seconds,
everything else that ran, idle, and the time a hypervisor took from the virtual machine's
cores, from /proc/stat), and whether the per-chip results agree (they must; exit status 1
otherwise). Run:
``python benchmarks/bench_campaign.py [--chips 8] [--samples 8] [--chunk-size 4 8]
[--arch isaac forms8] [--dask]``; the defaults (2 chips x 16 images) take a few minutes on
2 cores. ``--write-inputs DIR`` writes the model and images instead, for the same campaign
through ``chipforge simulate DIR/resnet18-cifar.npz --data DIR/images.npz ...``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

NOISY = dict(variation=0.1, read_noise=0.02, fault_rate=0.001)


def build(samples: int):
    from bench_resnet18 import build as build_resnet18

    graph, x = build_resnet18(samples)
    y = np.random.default_rng(2).integers(0, 10, len(x))
    return graph, x, y


def one_process(spec, graph, x, y, seeds) -> dict:
    from chipforge.simulate import simulate_chips
    from chipforge.stages import StageTimer

    timer = StageTimer()
    start = time.perf_counter()
    sim = simulate_chips(spec, graph, x, y, seeds, timer=timer)
    wall = time.perf_counter() - start
    stages = {r["stage"]: r["wall_s"] for r in timer.rows()}
    # the campaigns get the mapping made beforehand: leave the map out here too
    return {"wall_s": wall - stages.get("map", 0.0), "chips": sim.result.chips,
            "program_s_per_chip": stages.get("program", 0.0) / len(seeds),
            "map_s": stages.get("map", 0.0)}


def machine_cpu() -> dict[str, float] | None:
    """The machine's CPU seconds so far, from /proc/stat (Linux; None elsewhere): busy (user,
    nice, system, interrupts: every process), idle and steal (taken by the hypervisor from
    a virtual machine whose vCPUs wanted to run)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    tick = os.sysconf("SC_CLK_TCK")
    user, nice, system, idle, iowait, irq, softirq, steal = (v / tick for v in fields)
    return {"busy": user + nice + system + irq + softirq, "idle": idle + iowait,
            "steal": steal}


def campaign(spec, graph, mapped, x, y, seeds, *, workers: int, dask: bool,
             chunk_size: int) -> dict:
    from chipforge.campaign import run_campaign

    before = machine_cpu()
    start = time.perf_counter()
    sim = run_campaign(spec, graph, mapped, x, y, seeds, workers=workers, dask=dask,
                       chunk_size=chunk_size, progress=False)
    wall = time.perf_counter() - start
    after = machine_cpu()
    c = sim.result.campaign
    # where the cores went: the shards' own CPU seconds, everything else that ran (driver,
    # scheduler, nannies, worker threads between shards, the OS), the hypervisor's steal
    cores = ({k: after[k] - before[k] for k in after} if before and after else None)
    # wall: the call, closing the workers included; campaign_wall_s: start-up and shards
    return {"wall_s": wall, "chips": sim.result.chips, "startup_s": c["startup_s"],
            "campaign_wall_s": c["wall_s"], "busiest_lane_cpu_s": c["busiest_lane_cpu_s"],
            # on an idle machine with a core per worker: start-up + the busiest worker's
            # CPU seconds (one thread each); an estimate, labelled so where printed
            "idle_estimate_s": c["startup_s"] + c["busiest_lane_cpu_s"],
            "program_s_per_chip": c["program_s_per_chip"], "programmings": c["programmings"],
            "shard_wall_s_mean": c["shard_wall_s_mean"], "backend": c["backend"],
            "shards_cpu_s": c["shards_cpu_s"], "machine_cpu_s": cores}


def main(argv: list[str] | None = None) -> int:
    import numba

    from chipforge.chips import chip_seeds
    from chipforge.families import get_accelerator_spec

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--chips", type=int, default=2)
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--chunk-size", type=int, nargs="+", default=[8],
                   help="the first for the worker runs; each further one runs again on "
                   "the most workers (results must agree)")
    p.add_argument("--arch", nargs="+", default=["isaac", "forms8"])
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--dask", action="store_true", help="a Dask LocalCluster, not a pool")
    p.add_argument("--json", metavar="FILE", help="also write the figures here")
    p.add_argument("--write-inputs", metavar="DIR",
                   help="only write the model (resnet18-cifar.npz) and the images "
                   "(images.npz) to DIR, for `chipforge simulate` (docs/scale.md)")
    args = p.parse_args(argv)
    graph, x, y = build(args.samples)
    if args.write_inputs:
        from chipforge.files import atomic_open, make_folder
        from chipforge.sim.graph import save_graph

        folder = make_folder(args.write_inputs)
        save_graph(graph, folder / "resnet18-cifar.npz")
        with atomic_open(folder / "images.npz", "wb") as f:
            np.savez(f, x=x, y=y)
        print(f"wrote {folder / 'resnet18-cifar.npz'} and {folder / 'images.npz'} "
              f"({len(x)} images)")
        return 0
    seeds = chip_seeds(0, args.chips)
    work = args.chips * args.samples
    print(f"ResNet-18 (CIFAR shapes) campaign: {args.chips} chips x {args.samples} images "
          f"= {work} chip-images, shards of {args.chunk_size[0]}"
          + (f" (then {', '.join(map(str, args.chunk_size[1:]))})"
             if args.chunk_size[1:] else "")
          + f"; {'Dask LocalCluster' if args.dask else 'process pool'}; "
          f"{os.cpu_count()} cores")
    figures = {}
    for arch in args.arch:
        spec = get_accelerator_spec(arch, options=NOISY)
        mapped = spec.family.map(graph, spec.config)
        load = os.getloadavg()[0]
        alone = one_process(spec, graph, x, y, seeds)
        alone["load"] = load
        print(f"  {arch}: one process ({numba.get_num_threads()} kernel threads): "
              f"{work / alone['wall_s']:.3g} chip-images/s ({alone['wall_s']:.1f} s; "
              f"programming {alone['program_s_per_chip']:.2f} s per chip; load {load:.2f})")
        runs = {}
        plan = [(w, args.chunk_size[0]) for w in args.workers]
        plan += [(max(args.workers), c) for c in args.chunk_size[1:]]
        for w, chunk in plan:
            load = os.getloadavg()[0]
            r = campaign(spec, graph, mapped, x, y, seeds, workers=w, dask=args.dask,
                         chunk_size=chunk)
            r["load"], r["workers"], r["chunk_size"] = load, w, chunk
            runs[f"{w} workers, chunks of {chunk}"] = r
            print(f"  {arch}: campaign, {w} worker(s), chunks of {chunk}: "
                  f"{work / r['wall_s']:.3g} chip-images/s ({r['wall_s']:.1f} s: "
                  f"{r['startup_s']:.1f} s start-up, "
                  f"{r['wall_s'] - r['campaign_wall_s']:.1f} s closing; mean shard "
                  f"{r['shard_wall_s_mean']:.2f} s; {args.chips} chips programmed "
                  f"{r['programmings']} times, "
                  f"{r['program_s_per_chip']:.2f} s each); {alone['wall_s'] / r['wall_s']:.2f}x "
                  f"one process; load {load:.2f}; estimate on idle cores "
                  f"{r['idle_estimate_s']:.1f} s")
            if r["machine_cpu_s"]:
                m = r["machine_cpu_s"]
                total = m["busy"] + m["idle"] + m["steal"]
                print(f"    cores: {total:.1f} core-s in all; shards {r['shards_cpu_s']:.1f}, "
                      f"everything else {m['busy'] - r['shards_cpu_s']:.1f}, idle "
                      f"{m['idle']:.1f}, stolen by the hypervisor {m['steal']:.1f}")
        same = all(r["chips"] == alone["chips"] for r in runs.values())
        by_workers = {r["workers"]: r for r in runs.values()
                      if r["chunk_size"] == args.chunk_size[0]}
        if 1 in by_workers and 2 in by_workers:
            one, two = by_workers[1], by_workers[2]
            print(f"  {arch}: speed-up 1 -> 2 workers {one['wall_s'] / two['wall_s']:.2f}x "
                  f"(one core -> two); 2 workers vs one process on all cores: "
                  f"{alone['wall_s'] / two['wall_s']:.2f}x; estimated on idle cores (start-up"
                  " + the busiest worker's CPU seconds): "
                  f"{one['idle_estimate_s'] / two['idle_estimate_s']:.2f}x")
        print(f"  {arch}: per-chip results identical in all runs: {'yes' if same else 'NO'}")
        figures[arch] = {"one_process": alone, "campaign": runs, "identical": same}
    if args.json:
        from chipforge.files import atomic_write

        atomic_write(args.json, json.dumps(figures, indent=2, default=str) + "\n")
    return 0 if all(f["identical"] for f in figures.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
