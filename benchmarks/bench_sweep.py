"""Sweep engine throughput: trials per second on 1 and 2 local workers, and the engine's
overhead per trial against the trial's own compute.

Baseline (same process): the trial function called in a plain loop, with one BLAS thread
as in the engine's workers. Then the engine runs
the same trials on a process pool of 1 and 2 workers (start-up reported apart), and on one
worker with ``batch=8`` trials per task. Two trials: the ``crossbar-adc`` trial at the ISAAC
size (128x128, 16-bit, batch 16: milliseconds of numpy) and a tiny one (8x8 crossbar, one
input vector), where the per-trial overhead dominates.

    python benchmarks/bench_sweep.py [--trials N]
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from pathlib import Path

from threadpoolctl import threadpool_limits

from chipforge.sim.sweep import expand_grid, run_sweep, trial_seed
from chipforge.sweeps import get_sweep

SWEEP = get_sweep("crossbar-adc")
CASES = {
    "ISAAC 128x128": {"adc_bits": [8], "flip_encoding": [True], "rows": [128], "cols": [128],
                      "batch": [16], "data": ["uniform", "gaussian"]},
    "tiny 8x8": {"adc_bits": [8], "flip_encoding": [True], "rows": [8], "cols": [8],
                 "batch": [1], "data": ["uniform", "gaussian"]},
}


def direct(grid: dict, trials: int, repeats: int) -> float:
    """Seconds per trial, calling the trial function in a loop (no engine), with one BLAS
    thread like the engine's workers; best of ``repeats`` (the machine may be shared)."""
    jobs = [(p, trial_seed(0, p, t)) for p in expand_grid(grid) for t in range(trials)]
    SWEEP.trial(*jobs[0])  # warm-up (imports, caches)
    best = math.inf
    with threadpool_limits(limits=1):
        for _ in range(repeats):
            start = time.perf_counter()
            for point, seed in jobs:
                SWEEP.trial(point, seed)
            best = min(best, (time.perf_counter() - start) / len(jobs))
    return best


def engine(grid: dict, trials: int, workers: int, batch: int, repeats: int):
    """The fastest of ``repeats`` runs of the engine (trial phase, start-up excluded)."""
    runs = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            runs.append(run_sweep(SWEEP, Path(tmp), grid=grid, trials=trials,
                                  workers=workers, batch=batch, progress=False, plot=False,
                                  echo=None))
    return min(runs, key=lambda r: r.elapsed_s - r.startup_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=32,
                        help="trials per point (2 points per case; default 32)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs per measurement, the fastest is kept (default 3)")
    args = parser.parse_args()
    print(f"sweep engine benchmark: {os.cpu_count()} cores (load average "
          f"{os.getloadavg()[0]:.1f}), {args.trials} trials x 2 points per case, process "
          f"pool (forkserver), best of {args.repeats} runs, results fsync'd as they finish")
    for name, grid in CASES.items():
        n = 2 * args.trials
        base = direct(grid, args.trials, args.repeats)
        print(f"\n{name}: trial alone {base * 1e3:.2f} ms ({1 / base:.0f} trials/s in a loop)")
        rates = {}
        for workers, batch in ((1, 1), (2, 1), (1, 8)):
            r = engine(grid, args.trials, workers, batch, args.repeats)
            run_s = r.elapsed_s - r.startup_s
            rate = n / run_s
            rates[(workers, batch)] = rate
            in_worker = r.compute_s / n
            # Engine overhead per trial: wall time per trial times workers, minus the
            # trial's own compute measured inside the worker.
            overhead = run_s * workers / n - in_worker
            print(f"  {workers} worker(s), batch {batch}: {rate:7.1f} trials/s "
                  f"= {rate * base:.2f} x the loop; start-up {r.startup_s:.2f} s; "
                  f"trial in worker {in_worker * 1e3:.2f} ms; engine overhead "
                  f"{overhead * 1e3:.2f} ms/trial = {overhead / in_worker:.2f} x the trial")
        print(f"  2 workers / 1 worker throughput: {rates[(2, 1)] / rates[(1, 1)]:.2f}x; "
              f"batch 8 / batch 1 on 1 worker: {rates[(1, 8)] / rates[(1, 1)]:.2f}x")


if __name__ == "__main__":
    main()
