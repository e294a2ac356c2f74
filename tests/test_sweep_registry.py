"""Every registered sweep loads, and the issue sweeps run on the engine."""

from concurrent.futures import ThreadPoolExecutor

import pytest

from chipforge.sim.sweep import SweepDef, run_sweep
from chipforge.sweeps import SWEEPS, get_sweep


@pytest.mark.parametrize("name", sorted(SWEEPS))
def test_registered_sweeps_load(name):
    sweep = get_sweep(name)
    assert isinstance(sweep, SweepDef) and sweep.name == name
    assert sweep.x_axis in sweep.grid


def test_aqfp_sweep_runs_on_the_engine_and_shows_the_sigma_trade_off(tmp_path):
    with ThreadPoolExecutor(1) as pool:
        result = run_sweep(get_sweep("aqfp"), tmp_path, executor=pool, trials=2, plot=False,
                           grid={"sigma_ua": [0.5, 16.0], "crossbar_size": [32],
                                 "bitstream_length": [64]}, progress=False, echo=None)
    summary = {row["sigma_ua"]: row for row in result.summary}
    assert summary[0.5]["accuracy_mean"] > summary[16.0]["accuracy_mean"] + 0.05
