"""A fault-tolerance campaign of the CIFAR-shaped ResNet-18: N chips x M images on ISAAC and
FORMS8 with variation, read noise and faults, sharded on 1 and 2 workers.

The model, images and device are those of ``bench_resnet18.py``: ResNet-18 CIFAR layer
shapes (11.2 M weights, random He weights polarized per 8-row fragment, 8-bit weights and
activations), synthetic CIFAR-shaped images (labels random: the accuracy is not the point),
programming variation sigma 0.1, read noise 0.02 per read, stuck-at faults 0.1 %.

For each architecture, three runs of the same work (the same chips, images and results):

1. **one process**: :func:`chipforge.simulate.simulate_chips` in this process (each chip
   programmed and run on all images; the mapping's time left out, as the campaigns get
   the mapping made beforehand);
2. **campaign, 1 worker** and 3. **campaign, 2 workers**: :func:`chipforge.campaign.
   run_campaign` on a process pool (``--dask``: a Dask LocalCluster), shards of
   ``--chunk-size`` images, worker start-up included in the wall time.

Printed: chip-images per second of each, the speed-up from 1 to 2 workers, the ratio of the
campaign on 1 worker to one process (the sharding's overhead), the programming time per
chip (apart: the "program" stage), the mean wall time of one hardware shard, and whether
the per-chip results agree (they must). Run:
``python benchmarks/bench_campaign.py [--chips 8] [--samples 256] [--arch isaac forms8]``;
the defaults (2 chips x 16 images) take a few minutes on 2 cores.
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


def campaign(spec, graph, mapped, x, y, seeds, *, workers: int, dask: bool,
             chunk_size: int) -> dict:
    from chipforge.campaign import run_campaign

    start = time.perf_counter()
    sim = run_campaign(spec, graph, mapped, x, y, seeds, workers=workers, dask=dask,
                       chunk_size=chunk_size, progress=False)
    wall = time.perf_counter() - start
    c = sim.result.campaign
    return {"wall_s": wall, "chips": sim.result.chips, "startup_s": c["startup_s"],
            "program_s_per_chip": c["program_s_per_chip"], "programmings": c["programmings"],
            "shard_wall_s_mean": c["shard_wall_s_mean"], "backend": c["backend"]}


def main(argv: list[str] | None = None) -> int:
    from chipforge.chips import chip_seeds
    from chipforge.families import get_accelerator_spec

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--chips", type=int, default=2)
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--chunk-size", type=int, default=8)
    p.add_argument("--arch", nargs="+", default=["isaac", "forms8"])
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--dask", action="store_true", help="a Dask LocalCluster, not a pool")
    p.add_argument("--json", metavar="FILE", help="also write the figures here")
    args = p.parse_args(argv)
    graph, x, y = build(args.samples)
    seeds = chip_seeds(0, args.chips)
    work = args.chips * args.samples
    print(f"ResNet-18 (CIFAR shapes) campaign: {args.chips} chips x {args.samples} images "
          f"= {work} chip-images, shards of {args.chunk_size}; load average "
          f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    figures = {}
    for arch in args.arch:
        spec = get_accelerator_spec(arch, options=NOISY)
        mapped = spec.family.map(graph, spec.config)
        alone = one_process(spec, graph, x, y, seeds)
        runs = {w: campaign(spec, graph, mapped, x, y, seeds, workers=w, dask=args.dask,
                            chunk_size=args.chunk_size) for w in args.workers}
        same = all(r["chips"] == alone["chips"] for r in runs.values())
        print(f"  {arch}: one process {work / alone['wall_s']:.3g} chip-images/s "
              f"({alone['wall_s']:.1f} s; programming {alone['program_s_per_chip']:.2f} s "
              "per chip)")
        for w, r in runs.items():
            print(f"  {arch}: campaign, {w} worker(s): {work / r['wall_s']:.3g} "
                  f"chip-images/s ({r['wall_s']:.1f} s, {r['startup_s']:.1f} s start-up; "
                  f"mean shard {r['shard_wall_s_mean']:.2f} s; programmed "
                  f"{r['programmings']} times, {r['program_s_per_chip']:.2f} s per chip); "
                  f"{alone['wall_s'] / r['wall_s']:.2f}x one process")
        if 1 in runs and 2 in runs:
            print(f"  {arch}: speed-up 1 -> 2 workers "
                  f"{runs[1]['wall_s'] / runs[2]['wall_s']:.2f}x; campaign on 1 worker / "
                  f"one process {runs[1]['wall_s'] / alone['wall_s']:.2f}")
        print(f"  {arch}: per-chip results identical in all runs: {'yes' if same else 'NO'}")
        figures[arch] = {"one_process": alone, "campaign": runs, "identical": same}
    if args.json:
        from chipforge.files import atomic_write

        atomic_write(args.json, json.dumps(figures, indent=2, default=str) + "\n")
    return 0 if all(f["identical"] for f in figures.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
