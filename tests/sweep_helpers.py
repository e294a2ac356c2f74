"""Trial functions for tests/test_sweep.py, in a module of their own so that worker
processes (process pool, Dask) can import them by name.

``noisy_trial`` can leave a marker per execution (a file named by the trial's seed, one
byte per run) so a test can count how often each trial was computed, and reads a shared
``payload`` whose unpickling is logged, so a test can count how often it was shipped.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from chipforge.sim.sweep import SweepDef


class Payload:
    """A large shared input; every unpickling appends a line to ``log``."""

    def __init__(self, data: np.ndarray, log: str | None = None) -> None:
        self.data, self.log = data, log

    def __reduce__(self):
        return _unpickle_payload, (self.data, self.log)


def _unpickle_payload(data: np.ndarray, log: str | None) -> Payload:
    if log is not None:
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
    return Payload(data, log)


def noisy_trial(point, seed, *, payload: Payload | None = None, marker_dir: str | None = None,
                delay: float = 0.0):
    rng = np.random.default_rng(seed)
    values = rng.normal(point["mu"], point["sigma"], size=64)
    if payload is not None:
        values = values + payload.data.mean()
    if delay:
        time.sleep(delay)
    if marker_dir is not None:
        with (Path(marker_dir) / str(seed)).open("a") as f:
            f.write("x")
    return {"mean": float(values.mean()), "peak": float(values.max())}


def failing_trial(point, seed):
    if point["mu"] > 0.5:
        raise RuntimeError("device model diverged")
    return {"mean": 0.0, "peak": 0.0}


def wrong_metrics_trial(point, seed):
    return {"mean": 0.0}


def _shared_from_env():
    """The CLI builds shared inputs with no arguments: the kill test passes them by env."""
    shared = {"delay": float(os.environ.get("SWEEP_TEST_DELAY", "0"))}
    if "SWEEP_TEST_MARKERS" in os.environ:
        shared["marker_dir"] = os.environ["SWEEP_TEST_MARKERS"]
    return shared


GRID = {"mu": [0.0, 1.0], "sigma": [0.5, 2.0, 4.0], "tag": ["a"]}

TOY = SweepDef(name="toy", trial=noisy_trial, grid=GRID, metrics=("mean", "peak"),
               x_axis="sigma", trials=6, shared=_shared_from_env)
