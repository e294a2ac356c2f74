"""The sweep engine: seeds independent of scheduling, resume after SIGKILL without
recomputation, shared inputs shipped once per worker, clear errors."""

import concurrent.futures as cf
import importlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from chipforge.cli import main
from chipforge.sim.sweep import (
    SweepDef,
    SweepError,
    expand_grid,
    load_results,
    parse_grid_args,
    run_sweep,
    t_quantile_975,
    trial_seed,
)

# Worker processes import the trial functions by module name: put tests/ on sys.path
# (spawned and forkserver workers inherit it).
TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))
helpers = importlib.import_module("sweep_helpers")


def _metric_rows(out: Path) -> list[list[str]]:
    """Results rows without the timing column, sorted (completion order varies)."""
    header, rows = load_results(out)
    assert header[-1] == "trial_s"
    return sorted(r[:-1] for r in rows)


def _quiet(**kwargs):
    return {"progress": False, "echo": None, "plot": False, **kwargs}


# --- seeds --------------------------------------------------------------------------------

def test_trial_seeds_depend_only_on_base_seed_point_and_trial():
    point = {"mu": 0.5, "sigma": 2.0}
    seed = trial_seed(7, point, 3)
    assert seed == trial_seed(7, {"sigma": 2.0, "mu": 0.5}, 3)  # key order is irrelevant
    others = {trial_seed(8, point, 3), trial_seed(7, point, 4),
              trial_seed(7, {"mu": 0.5, "sigma": 2.5}, 3), trial_seed(7, point, 2)}
    assert seed not in others and len(others) == 4
    assert 0 <= seed < 2**64
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        trial_seed(-1, point, 0)


def test_grid_parsing_types_values_like_the_defaults():
    defaults = {"bits": [4, 8], "rate": [0.1], "flip": [True], "mode": ["a", "b"]}
    grid = parse_grid_args(["bits=5,6", "rate=1e-3,0.5", "flip=false,on", "mode=x"], defaults)
    assert grid == {"bits": [5, 6], "rate": [0.001, 0.5], "flip": [False, True],
                    "mode": ["x"]}
    assert len(expand_grid(grid)) == 8
    with pytest.raises(ValueError, match="not an axis of this sweep; axes: bits, rate"):
        parse_grid_args(["bitz=3"], defaults)
    with pytest.raises(ValueError, match="--grid bits: values must be integers, not '4.5'"):
        parse_grid_args(["bits=4.5"], defaults)
    with pytest.raises(ValueError, match="repeats a value"):
        parse_grid_args(["bits=4,4"], defaults)
    with pytest.raises(ValueError, match="AXIS=v1,v2"):
        parse_grid_args(["bits"], defaults)


def test_student_t_quantile_matches_scipy():
    from scipy.stats import t as student_t

    for dof in [*range(1, 60), 99, 100, 101, 500, 999, 1000, 1001, 5000, 10**6]:
        assert t_quantile_975(dof) == pytest.approx(student_t.ppf(0.975, dof), rel=1e-9), dof
    assert t_quantile_975(5) == pytest.approx(2.5706, abs=1e-4)  # the textbook table


# --- same results on any executor ---------------------------------------------------------

@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """The toy sweep in the driver's own threads: the reference for every other executor."""
    out = tmp_path_factory.mktemp("sweep") / "threads"
    with cf.ThreadPoolExecutor(1) as pool:
        result = run_sweep(helpers.TOY, out, seed=11, executor=pool, shared={},
                           **_quiet(plot=True))
    return out, result


def test_thread_executor_run_writes_results_summary_and_plot(reference_run):
    out, result = reference_run
    assert result.computed == 36 and result.reused == 0
    assert len(load_results(out)[1]) == 36
    assert (out / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Summary statistics are those of the trials in the file.
    header, rows = load_results(out)
    means = [float(r[header.index("mean")]) for r in rows
             if r[0] == "1.0" and r[1] == "4.0"]
    row = next(s for s in result.summary if s["mu"] == 1.0 and s["sigma"] == 4.0)
    assert row["n"] == 6
    assert row["mean_mean"] == pytest.approx(np.mean(means), rel=1e-12)
    assert row["mean_std"] == pytest.approx(np.std(means, ddof=1), rel=1e-12)
    # 95% Student-t interval with 5 degrees of freedom: t = 2.5706
    assert row["mean_ci95"] == pytest.approx(2.5706 * row["mean_std"] / np.sqrt(6), rel=1e-4)
    # The sample mean of 64 normals with sigma 4 is near mu: a sanity check on the trial.
    assert abs(row["mean_mean"] - 1.0) < 4 * 4 / 8


@pytest.mark.parametrize("workers", [1, 2])
def test_process_pool_matches_the_reference(reference_run, tmp_path, workers):
    ref_out, _ = reference_run
    run_sweep(helpers.TOY, tmp_path, seed=11, workers=workers, shared={}, **_quiet())
    assert _metric_rows(tmp_path) == _metric_rows(ref_out)
    assert (tmp_path / "summary.csv").read_bytes() == (ref_out / "summary.csv").read_bytes()


def test_dask_local_cluster_matches_and_ships_shared_inputs_once(reference_run, tmp_path):
    from distributed import Client, LocalCluster

    ref_out, _ = reference_run
    log = tmp_path / "unpickled.log"
    payload = helpers.Payload(np.zeros(100_000), str(log))  # mean 0: results unchanged
    with (LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                       dashboard_address=":0") as cluster,
          Client(cluster) as client):
        result = run_sweep(helpers.TOY, tmp_path / "dask", seed=11,
                           executor=client.get_executor(), shared={"payload": payload},
                           **_quiet())
        assert "Dask" in result.backend
    assert _metric_rows(tmp_path / "dask") == _metric_rows(ref_out)
    assert ((tmp_path / "dask" / "summary.csv").read_bytes()
            == (ref_out / "summary.csv").read_bytes())
    # 36 trials, 2 workers: the payload is deserialized once per worker.
    unpickled = log.read_text().split()
    assert len(unpickled) == 2 and len(set(unpickled)) == 2, unpickled


def test_dask_scheduler_address_matches_the_reference(reference_run, tmp_path):
    """``--scheduler ADDR``: the engine connects its own client to a running cluster."""
    from distributed import LocalCluster

    ref_out, _ = reference_run
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=":0") as cluster:
        result = run_sweep(helpers.TOY, tmp_path, seed=11, scheduler=cluster.scheduler_address,
                           shared={}, **_quiet())
    assert result.backend.startswith(f"Dask scheduler {cluster.scheduler_address}")
    assert _metric_rows(tmp_path) == _metric_rows(ref_out)


def test_cli_dask_local_cluster_matches_the_process_pool(tmp_path):
    common = ["sweep", "crossbar-adc", "--grid", "adc_bits=6,7", "--grid", "rows=32",
              "--grid", "cols=16", "--grid", "batch=2", "--trials", "2", "--no-plot",
              "--seed", "3"]
    assert main([*common, "--dask", "--workers", "1", "--out", str(tmp_path / "dask")]) == 0
    assert main([*common, "--workers", "1", "--out", str(tmp_path / "pool")]) == 0
    assert _metric_rows(tmp_path / "dask") == _metric_rows(tmp_path / "pool")
    assert len(_metric_rows(tmp_path / "dask")) == 2 * 2 * 2 * 2


def test_process_pool_ships_shared_inputs_once_per_worker(tmp_path):
    log = tmp_path / "unpickled.log"
    payload = helpers.Payload(np.full(50_000, 0.25), str(log))
    shipped = run_sweep(helpers.TOY, tmp_path / "out", seed=1, workers=2,
                        shared={"payload": payload}, **_quiet())
    pids = log.read_text().split()
    assert 1 <= len(pids) <= 2 and len(set(pids)) == len(pids), pids  # not once per trial
    # ... and every trial saw it: the payload shifts each sample by its mean, 0.25.
    with cf.ThreadPoolExecutor(1) as pool:
        bare = run_sweep(helpers.TOY, tmp_path / "bare", seed=1, executor=pool, shared={},
                         **_quiet())
    shifts = [a["mean_mean"] - b["mean_mean"]
              for a, b in zip(shipped.summary, bare.summary, strict=True)]
    assert np.allclose(shifts, 0.25, atol=1e-12)


# --- resume ---------------------------------------------------------------------------------

def test_sigkill_midway_then_resume_equals_an_uninterrupted_run(tmp_path, monkeypatch, capsys):
    """The CLI sweep runs as a subprocess (2 local workers) and is killed with SIGKILL
    (driver and workers, like a preempted job) after some trials; a resumed run recomputes
    none of the recorded trials and ends with the same table as an uninterrupted run."""
    out, markers = tmp_path / "killed", tmp_path / "markers"
    markers.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS),
                                                          os.environ.get("PYTHONPATH", "")]),
           "SWEEP_TEST_MARKERS": str(markers), "SWEEP_TEST_DELAY": "0.08"}
    cmd = [sys.executable, "-m", "chipforge", "sweep", "sweep_helpers:TOY", "--out", str(out),
           "--trials", "10", "--seed", "5", "--workers", "2", "--no-plot", "--no-progress"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    results = out / "results.csv"
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            if results.exists() and results.read_bytes().count(b"\n") >= 1 + 12:
                break
            assert proc.poll() is None, proc.stdout.read().decode()
            time.sleep(0.01)
        else:
            pytest.fail("the sweep wrote no results in 60 s")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    recorded = {int(r[4]) for r in load_results(out)[1]}  # column 4 is the seed
    assert 12 <= len(recorded) < 60, "killed too late to test anything"
    executed_before = {int(p.name) for p in markers.iterdir()}
    assert recorded <= executed_before
    # A kill in the middle of a write leaves a half line: simulate one.
    with results.open("a") as f:
        f.write("1.0,4.0,a,3,123")

    # Resume with the same command plus --resume (in-process this time).
    monkeypatch.setenv("SWEEP_TEST_MARKERS", str(markers))
    monkeypatch.setenv("SWEEP_TEST_DELAY", "0")
    assert main([*cmd[3:], "--resume"]) == 0
    printed = capsys.readouterr().out
    assert "discarded a half-written last line" in printed
    assert f"resuming: {len(recorded)} of 60 trials already in" in printed
    assert f"{60 - len(recorded)} trials to run" in printed
    counts = {int(p.name): len(p.read_text()) for p in markers.iterdir()}
    assert len(counts) == 60  # every trial ran
    assert all(counts[s] == 1 for s in recorded)  # no recorded trial ran again
    # Only trials in flight at the kill (started, never recorded) may have run twice.
    assert sum(counts.values()) - 60 <= len(executed_before - recorded)

    run_sweep(helpers.TOY, tmp_path / "straight", trials=10, seed=5, workers=1, shared={},
              **_quiet())
    assert _metric_rows(out) == _metric_rows(tmp_path / "straight")
    assert ((out / "summary.csv").read_bytes()
            == (tmp_path / "straight" / "summary.csv").read_bytes())


def test_half_written_line_is_discarded_and_recomputed(tmp_path):
    pool = cf.ThreadPoolExecutor(1)
    run_sweep(helpers.TOY, tmp_path, seed=3, executor=pool, shared={}, **_quiet())
    full = (tmp_path / "results.csv").read_bytes()
    cut = full[:len(full) - 9]  # mid-way through the last row
    (tmp_path / "results.csv").write_bytes(cut)
    result = run_sweep(helpers.TOY, tmp_path, seed=3, resume=True, executor=pool, shared={},
                       **_quiet())
    assert result.computed == 1 and result.reused == 35
    assert _metric_rows(tmp_path) == sorted(
        r[:-1] for r in load_results(tmp_path)[1]) and len(load_results(tmp_path)[1]) == 36
    pool.shutdown()


def test_resume_refuses_a_different_sweep(tmp_path):
    pool = cf.ThreadPoolExecutor(1)
    run_sweep(helpers.TOY, tmp_path, seed=3, executor=pool, shared={}, **_quiet())
    with pytest.raises(SweepError, match="already holds sweep results; pass --resume"):
        run_sweep(helpers.TOY, tmp_path, seed=3, executor=pool, shared={}, **_quiet())
    with pytest.raises(SweepError, match=r"cannot resume: .* \(seed: file has 3, requested 4\)"):
        run_sweep(helpers.TOY, tmp_path, seed=4, resume=True, executor=pool, **_quiet())
    with pytest.raises(SweepError, match="trials: file has 6, requested 5"):
        run_sweep(helpers.TOY, tmp_path, seed=3, trials=5, resume=True, executor=pool,
                  **_quiet())
    grid = {**helpers.GRID, "sigma": [0.5, 3.0]}
    with pytest.raises(SweepError, match="grid: file has"):
        run_sweep(helpers.TOY, tmp_path, grid=grid, seed=3, resume=True, executor=pool,
                  **_quiet())
    # Without the manifest, the rows themselves reveal the mismatch.
    (tmp_path / "sweep.json").unlink()
    with pytest.raises(SweepError, match="not in the requested grid"):
        run_sweep(helpers.TOY, tmp_path, grid=grid, seed=3, resume=True, executor=pool,
                  **_quiet())
    (tmp_path / "sweep.json").unlink(missing_ok=True)
    with pytest.raises(SweepError, match="not the seed of trial"):
        run_sweep(helpers.TOY, tmp_path, seed=9, resume=True, executor=pool, **_quiet())
    pool.shutdown()


def test_resume_with_more_trials_extends_the_sweep(reference_run, tmp_path):
    ref_out, _ = reference_run
    with cf.ThreadPoolExecutor(1) as pool:
        run_sweep(helpers.TOY, tmp_path, seed=11, trials=2, executor=pool, shared={},
                  **_quiet())
        result = run_sweep(helpers.TOY, tmp_path, seed=11, trials=6, resume=True,
                           executor=pool, shared={}, **_quiet())
    assert result.reused == 12 and result.computed == 24
    assert _metric_rows(tmp_path) == _metric_rows(ref_out)


def test_one_sweep_per_output_directory(tmp_path):
    import fcntl

    with (tmp_path / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running sweep holds it
        with pytest.raises(SweepError, match="another sweep is running in"):
            run_sweep(helpers.TOY, tmp_path, executor=cf.ThreadPoolExecutor(1), **_quiet())
    assert not (tmp_path / "results.csv").exists()


# --- errors -------------------------------------------------------------------------------

def test_failing_and_malformed_trials_are_reported_with_their_point(tmp_path):
    pool = cf.ThreadPoolExecutor(1)
    failing = SweepDef(name="fails", trial=helpers.failing_trial, grid=helpers.GRID,
                       metrics=("mean", "peak"), x_axis="mu", trials=2)
    with pytest.raises(SweepError, match=r"point \{'mu': 1.0.*failed: RuntimeError: device"):
        run_sweep(failing, tmp_path / "a", executor=pool, **_quiet())
    # The trials finished before the failure are kept.
    assert len(load_results(tmp_path / "a")[1]) >= 1
    wrong = SweepDef(name="wrong", trial=helpers.wrong_metrics_trial, grid=helpers.GRID,
                     metrics=("mean", "peak"), x_axis="mu")
    with pytest.raises(SweepError, match=r"returned metrics \['mean'\], not the declared"):
        run_sweep(wrong, tmp_path / "b", executor=pool, **_quiet())
    with pytest.raises(ValueError, match="trials must be an integer >= 1, not 0"):
        run_sweep(helpers.TOY, tmp_path / "c", trials=0, executor=pool, **_quiet())
    with pytest.raises(ValueError, match="x_axis must be a grid axis"):
        SweepDef(name="x", trial=helpers.noisy_trial, grid=helpers.GRID, metrics=("m",),
                 x_axis="nope")
    pool.shutdown()


# --- the crossbar-adc sweep and the CLI -----------------------------------------------------

def test_crossbar_adc_sweep_on_the_cli(tmp_path, capsys):
    out = tmp_path / "adc"
    assert main(["sweep", "crossbar-adc", "--grid", "adc_bits=5,8,9", "--grid", "rows=128",
                 "--grid", "data=uniform", "--trials", "3", "--workers", "1",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "saturated_fraction" in printed and "95%" in printed
    from chipforge.sweeps import get_sweep

    sweep = get_sweep("crossbar-adc")
    result = run_sweep(sweep, out, grid=parse_grid_args(
        ["adc_bits=5,8,9", "rows=128", "data=uniform"], sweep.grid), trials=3, resume=True,
        **_quiet())
    assert result.computed == 0 and result.reused == 18
    by = {(r["adc_bits"], r["flip_encoding"]): r for r in result.summary}
    # ISAAC §4.4: 128 rows of 2-bit cells need 9 ADC bits, 8 with the flip encoding.
    assert by[(9, False)]["saturated_fraction_mean"] == 0.0
    assert by[(9, False)]["relative_error_mean"] == 0.0
    assert by[(8, True)]["saturated_fraction_mean"] == 0.0
    assert by[(8, True)]["relative_error_mean"] == 0.0
    # Random uniform weights put column sums near 96: a 5-bit ADC (31) saturates.
    assert by[(5, False)]["saturated_fraction_mean"] > 0.5
    assert by[(5, False)]["relative_error_mean"] > 0.01
    # The flip encoding never saturates more than the plain encoding.
    for bits in (5, 8, 9):
        assert (by[(bits, True)]["saturated_fraction_mean"]
                <= by[(bits, False)]["saturated_fraction_mean"])
    assert (out / "plot.png").exists() and (out / "summary.txt").exists()


def test_cli_lists_sweeps_and_rejects_bad_input(tmp_path, capsys):
    assert main(["sweep", "--list"]) == 0
    assert "crossbar-adc" in capsys.readouterr().out
    assert main(["sweep", "no-such-sweep"]) == 2
    assert "unknown sweep 'no-such-sweep'; known sweeps: crossbar-adc" in capsys.readouterr().err
    assert main(["sweep", "crossbar-adc", "--grid", "adc_bits=0", "--out", str(tmp_path)]) == 2
    assert "adc_bits must be an integer in 1..16, not 0" in capsys.readouterr().err
    assert main(["sweep", "crossbar-adc", "--trials", "0"]) == 2
    assert "--trials must be >= 1, not 0" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing was started


def test_chips_run_the_same_chip_seeds_at_every_point_with_their_spread(tmp_path):
    """--chips N: trial t of every point is chip t (chipforge.chips.chip_seeds), and the
    summary's mean, std and interval are chipforge.chips.spread of the chips' values."""
    import csv

    from chipforge.chips import chip_seeds, spread

    with cf.ThreadPoolExecutor(1) as pool:
        result = run_sweep(helpers.TOY, tmp_path / "chips", seed=5, executor=pool, chips=3,
                           **_quiet())
    with open(tmp_path / "chips" / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(helpers.TOY.grid["sigma"]) * 2 * 3
    seeds = chip_seeds(5, 3)
    assert all(int(r["seed"]) == seeds[int(r["trial"])] for r in rows)
    first = result.summary[0]
    values = [float(r["peak"]) for r in rows
              if (float(r["mu"]), float(r["sigma"])) == (first["mu"], first["sigma"])]
    expected = spread(values, lower=None, upper=None)
    assert first["peak_mean"] == pytest.approx(expected["mean"], rel=1e-12)
    assert first["peak_std"] == pytest.approx(expected["std"], rel=1e-12)
    assert first["peak_ci95_low"] == pytest.approx(expected["ci95_low"], rel=1e-12)
    assert first["peak_ci95_high"] == pytest.approx(expected["ci95_high"], rel=1e-12)
    with pytest.raises(ValueError, match="chips"):
        run_sweep(helpers.TOY, tmp_path / "both", chips=3, trials=2, **_quiet())
