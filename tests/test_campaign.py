"""Sharded campaigns (chipforge.campaign): N chips x samples as (chip, sample chunk) shards on
a process pool; results independent of the sharding, programming once per chip per worker,
resume after an interruption, one-line refusals."""

from __future__ import annotations

import concurrent.futures as cf
import json
import subprocess
import sys

import numpy as np
import pytest

import chipforge
from chipforge import campaign
from chipforge.families import get_accelerator_spec
from chipforge.sim.executor import run_graph
from chipforge.sim.reram import CrossbarMatmul
from chipforge.zoo import load

# variation, read noise per read and stuck-at faults; the read noise is strong enough that
# a read keyed by the wrong sample changes predictions (checked below)
NOISY = dict(variation=0.1, read_noise=0.3, fault_rate=0.01)
SAMPLES, CHIPS = 40, 3
CASES = [("lenet-digits", "isaac"), ("lenet-digits-forms8", "forms8")]


def _inputs(model: str, accelerator: str):
    spec = get_accelerator_spec(accelerator, options=NOISY)
    graph = load(model)
    x, y = spec.family.load_data("digits", graph, SAMPLES)
    return spec, graph, x[:SAMPLES], y[:SAMPLES]


def _predictions(out_dir) -> dict[int, np.ndarray]:
    """Each chip's hardware predictions over all samples, from the campaign's file."""
    rows = [json.loads(line) for line in (out_dir / campaign.RESULTS_FILE).read_text()
            .splitlines()]
    chips: dict[int, list] = {}
    for r in sorted((r for r in rows if r["kind"] == "hw"), key=lambda r: r["start"]):
        chips.setdefault(r["chip"], []).extend(r["pred"])
    return {c: np.array(p) for c, p in chips.items()}


def test_window_keys_read_noise_by_the_global_sample_index():
    spec, graph, x, _ = _inputs("lenet-digits", "isaac")
    placed = spec.family.map(graph, spec.config).detail
    whole = run_graph(graph, x, matmul=CrossbarMatmul(placed, spec.config.device, seed=5))
    chip = CrossbarMatmul(placed, spec.config.device, seed=5)
    parts = {}
    for start in (30, 12, 0):             # chunks out of order, one programmed chip
        stop = {30: 40, 12: 30, 0: 12}[start]
        chip.window(start, stop - start)
        parts[start] = run_graph(graph, x[start:stop], matmul=chip)
    assert np.array_equal(np.concatenate([parts[0], parts[12], parts[30]]), whole)
    chip.window(0, 10)                    # samples 30..39 read as if they were 0..9
    assert not np.array_equal(run_graph(graph, x[30:40], matmul=chip), whole[30:40])


@pytest.mark.parametrize(("model", "accelerator"), CASES)
def test_sharded_results_do_not_depend_on_workers_or_chunks(tmp_path, model, accelerator):
    spec, graph, x, y = _inputs(model, accelerator)
    kw = dict(accelerator=accelerator, data=(x, y), seed=7, chips=CHIPS, progress=False,
              **NOISY)
    plain = chipforge.simulate(model, **kw)
    one = chipforge.simulate(model, workers=1, chunk_size=16, out=tmp_path / "one", **kw)
    two = chipforge.simulate(model, workers=2, chunk_size=7, out=tmp_path / "two", **kw)
    assert one.chips == plain.chips and two.chips == plain.chips
    assert (one.accuracy_ideal, one.accuracy_float) == (plain.accuracy_ideal,
                                                        plain.accuracy_float)
    assert one.accuracy_hardware_spread == plain.accuracy_hardware_spread
    # prediction by prediction: each chip's shards equal one unsharded run of that chip
    mapped = spec.family.map(graph, spec.config)
    first, second = _predictions(tmp_path / "one"), _predictions(tmp_path / "two")
    for row in plain.chips:
        whole = spec.family.run(graph, mapped, spec.config, x, seed=row["seed"],
                                float_logits=False).logits.argmax(axis=1)
        assert np.array_equal(first[row["chip"]], whole)
        assert np.array_equal(second[row["chip"]], whole)
    # the chips differ from each other (the seeds and the noise matter)
    assert not np.array_equal(first[0], first[1]) or not np.array_equal(first[1], first[2])
    assert two.campaign["shards"] == 6 + CHIPS * 6 and two.campaign["worker_processes"] >= 1
    assert two.campaign["chip_images_per_s"] > 0


def _records(out_dir) -> list[dict]:
    return [json.loads(line) for line in (out_dir / campaign.RESULTS_FILE).read_text()
            .splitlines()]


def _programmed_only_on_a_new_chip(records: list[dict]) -> None:
    """Each lane (one worker thread) programs a chip exactly when its shard before was of
    another chip (or it had none): a chip's shards in a row reuse one programming."""
    previous: dict[int, int | None] = {}
    for r in records:   # one shard in flight per lane: a lane's lines are in its run order
        if r["kind"] != "hw":
            continue
        assert r["programmed"] == (previous.get(r["lane"]) != r["chip"]), r
        previous[r["lane"]] = r["chip"]


def test_each_chip_is_programmed_once(tmp_path):
    _, _, x, y = _inputs("lenet-digits", "isaac")
    result = chipforge.simulate("lenet-digits", "isaac", (x, y), seed=1, chips=CHIPS,
                                workers=1, chunk_size=8, progress=False, **NOISY)
    assert result.campaign["shards"] == 5 + CHIPS * 5
    assert result.campaign["programmings"] == CHIPS         # not once per shard (15)
    four = 4
    two = chipforge.simulate("lenet-digits", "isaac", (x, y), seed=1, chips=four,
                             workers=2, chunk_size=8, progress=False, out=tmp_path, **NOISY)
    records = _records(tmp_path)
    _programmed_only_on_a_new_chip(records)
    # the chips go to the two workers whole; only a chip split at the very end (a worker
    # idle while the other still has two or more shards queued) is programmed twice
    assert four <= two.campaign["programmings"] <= four + 2
    lanes = {r["lane"] for r in records}
    assert lanes == {0, 1} and two.campaign["lanes"] == 2
    assert two.campaign["threads_per_lane"] == 1
    workers_of = {lane: {r["worker"] for r in records if r["lane"] == lane} for lane in lanes}
    assert all(len(w) == 1 for w in workers_of.values()) and \
        workers_of[0] != workers_of[1]                      # a lane is one worker process
    programs = [r for r in two.stages if r["stage"] == "program"]
    assert programs and programs[0]["within"] == "run"
    assert programs[0]["count"] == two.campaign["programmings"]   # shown in the stage times
    assert f"program chips (variation, faults) x{programs[0]['count']}" in two.summary()


def _schedule(lanes_n: int, todo: list[tuple], *, program_s: float | None = None,
              shard_s: float = 1.0) -> list[list[tuple]]:
    """Run the scheduler with shards of equal length on ``lanes_n`` lanes in lockstep;
    each lane's shards in the order it ran them."""
    lanes = [campaign._Lane(campaign._LaneTag("run", i, None), submit=None)
             for i in range(lanes_n)]
    scheduler = campaign._Scheduler(lanes, todo)
    if program_s is not None:   # as measured on an earlier shard (none: it steals)
        scheduler.finished({"kind": "hw", "programmed": True, "wall_s": shard_s + program_s,
                            "stages": [{"stage": "program", "wall_s": program_s}]})
    ran: list[list[tuple]] = [[] for _ in lanes]
    while True:
        step = [(lane, scheduler.next_for(lane)) for lane in lanes]
        step = [(lane, shard) for lane, shard in step if shard is not None]
        if not step:
            return ran
        for lane, shard in step:
            first = not ran[lane.tag.index] or ran[lane.tag.index][-1][:2] != shard[:2]
            ran[lane.tag.index].append(shard)
            if shard[0] == "hw" and program_s is not None:
                stages = [{"stage": "program", "wall_s": program_s}] if first else []
                scheduler.finished({"kind": "hw", "programmed": first, "stages": stages,
                                    "wall_s": shard_s + (program_s if first else 0.0)})


def _shards(chips: int, chunks: int) -> list[tuple]:
    refs = [("ref", a, a + 1) for a in range(chunks)]
    return refs + [("hw", c, 100 + c, a, a + 1) for c in range(chips) for a in range(chunks)]


def test_the_scheduler_keeps_a_chip_on_one_worker_and_splits_the_tail():
    # 4 chips on 2 lanes: each chip whole on one lane, in sample order; the reference
    # shards spread over both
    ran = _schedule(2, _shards(4, 3))
    hw = [[s for s in lane if s[0] == "hw"] for lane in ran]
    chips_on = [{s[1] for s in lane} for lane in hw]
    assert len(chips_on[0]) == len(chips_on[1]) == 2 and not chips_on[0] & chips_on[1]
    assert all([s[3] for s in lane if s[1] == c] == [0, 1, 2]
               for lane, chips in zip(hw, chips_on, strict=True) for c in chips)
    assert [len([s for s in lane if s[0] == "ref"]) for lane in ran] == [2, 1]
    assert sorted(s for lane in ran for s in lane) == sorted(_shards(4, 3))
    # one chip on 2 lanes: the idle lane takes the back half of the other's queue
    ran = _schedule(2, [("hw", 0, 100, a, a + 1) for a in range(6)])
    assert [[s[3] for s in lane] for lane in ran] == [[0, 1, 2], [3, 4, 5]]
    # ... unless programming the chip again costs more than running that half
    ran = _schedule(2, [("hw", 0, 100, a, a + 1) for a in range(6)], program_s=10.0)
    assert [[s[3] for s in lane] for lane in ran] == [[0, 1, 2, 3, 4, 5], []]
    # 3 chips of 8 shards on 2 lanes (program 1 s, shard 1 s): the third chip is split and
    # both lanes end at the same time (each programmed 2 chips and ran 12 shards)
    ran = _schedule(2, _shards(3, 8)[8:], program_s=1.0)
    chips_of = [[s[1] for s in lane] for lane in ran]
    assert 2 in chips_of[0] and 2 in chips_of[1]
    assert [len(lane) for lane in ran] == [12, 12]


def _campaign(spec, graph, x, y, out, executor):
    mapped = spec.family.map(graph, spec.config)
    from chipforge.chips import chip_seeds

    return campaign.run_campaign(spec, graph, mapped, x, y, chip_seeds(2, CHIPS), out=out,
                                 chunk_size=8, executor=executor, progress=False).result


def test_an_interrupted_campaign_resumes_to_the_same_report(tmp_path, monkeypatch):
    spec, graph, x, y = _inputs("lenet-digits", "isaac")
    with cf.ThreadPoolExecutor(1) as pool:
        whole = _campaign(spec, graph, x, y, tmp_path / "whole", pool)
    real, calls = campaign._run_shard, []

    def dies_after_seven(shard, shared, lane):
        calls.append(shard)
        if len(calls) > 7:
            raise RuntimeError("worker lost")
        return real(shard, shared, lane)

    monkeypatch.setattr(campaign, "_run_shard", dies_after_seven)
    with cf.ThreadPoolExecutor(1) as pool, \
            pytest.raises(campaign.CampaignError, match="rerun the same command to resume"):
        _campaign(spec, graph, x, y, tmp_path / "cut", pool)
    kept = (tmp_path / "cut" / campaign.RESULTS_FILE).read_text().splitlines()
    assert len(kept) == 7
    with open(tmp_path / "cut" / campaign.RESULTS_FILE, "a") as f:
        f.write('{"kind": "hw", "chip": 0, "se')          # killed while appending
    monkeypatch.setattr(campaign, "_run_shard", real)
    with cf.ThreadPoolExecutor(1) as pool:
        resumed = _campaign(spec, graph, x, y, tmp_path / "cut", pool)
    assert resumed.campaign["shards_reused"] == 7
    assert resumed.campaign["shards_computed"] == resumed.campaign["shards"] - 7
    assert resumed.chips == whole.chips
    assert resumed.accuracy_hardware_spread == whole.accuracy_hardware_spread
    assert (resumed.accuracy_ideal, resumed.agreement) == (whole.accuracy_ideal,
                                                          whole.agreement)
    cut, uncut = _predictions(tmp_path / "cut"), _predictions(tmp_path / "whole")
    assert sorted(cut) == sorted(uncut) == list(range(CHIPS))
    assert all(np.array_equal(cut[c], uncut[c]) for c in cut)
    # a third run computes nothing
    with cf.ThreadPoolExecutor(1) as pool:
        again = _campaign(spec, graph, x, y, tmp_path / "cut", pool)
    assert again.campaign["shards_computed"] == 0 and again.chips == whole.chips


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "chipforge", "simulate", *args],
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(("args", "says"), [
    (["--workers", "0"], "--workers must be >= 1"),
    (["--chunk-size", "0"], "--chunk-size must be >= 1"),
    (["--scheduler", "tcp://127.0.0.1:1", "--workers", "2"], "--workers does not apply"),
    (["--accelerator", "superbnn", "--workers", "1"], "does not shard a campaign"),
    (["--workers", "1", "--layer-errors", "4"], "--layer-errors"),
    (["--scheduler", "tcp://127.0.0.1:1"], "cannot reach the Dask scheduler"),
])
def test_bad_campaign_options_are_one_line(tmp_path, args, says):
    model = "bnn-digits" if "superbnn" in args else "lenet-digits"
    accelerator = [] if "superbnn" in args else ["--accelerator", "isaac"]
    done = _cli(model, "--samples", "8", "--chips", "2", "--out", str(tmp_path / "o"),
                *accelerator, *args)
    assert done.returncode == 2, done.stderr
    assert says in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr


def test_a_different_campaign_in_the_same_folder_is_refused(tmp_path):
    common = ["lenet-digits", "--accelerator", "isaac", "--samples", "16", "--chips", "2",
              "--workers", "1", "--out", str(tmp_path), "--no-progress"]
    assert _cli(*common, "--seed", "1").returncode == 0
    lines = (tmp_path / campaign.RESULTS_FILE).read_bytes()
    done = _cli(*common, "--seed", "2")
    assert done.returncode == 2
    assert "cannot resume" in done.stderr and "seed: file has 1, requested 2" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert (tmp_path / campaign.RESULTS_FILE).read_bytes() == lines   # nothing touched


def test_a_dask_local_cluster_gives_the_same_chips_and_counts_progress(tmp_path):
    _, _, x, y = _inputs("lenet-digits-forms8", "forms8")
    kw = dict(data=(x, y), seed=4, chips=2, **NOISY)
    plain = chipforge.simulate("lenet-digits-forms8", "forms8", progress=False, **kw)
    told: list[int] = []
    on_dask = chipforge.simulate("lenet-digits-forms8", "forms8", dask=True, workers=2,
                                 chunk_size=10, out=tmp_path, progress=told.append, **kw)
    assert on_dask.chips == plain.chips
    assert sum(told) == 2 * SAMPLES            # chip-images done, all of them
    assert "Dask LocalCluster" in on_dask.campaign["backend"]
    # each lane's shards ran on its own Dask worker, reusing the chip it programmed
    records = _records(tmp_path)
    _programmed_only_on_a_new_chip(records)
    workers_of = {lane: {r["worker"] for r in records if r["lane"] == lane}
                  for lane in (0, 1)}
    assert [len(w) for w in workers_of.values()] == [1, 1]
    assert workers_of[0] != workers_of[1]
    assert on_dask.campaign["programmings"] <= 3      # 2 chips, at most one split
    report = json.loads((tmp_path / "report.json").read_text())["simulation"]
    assert report["chips"] == plain.chips
    assert report["campaign"]["chip_images_computed"] == 2 * SAMPLES
    assert report["campaign"]["chip_images_per_s"] > 0


def test_a_killed_campaign_leaves_no_workers_and_resumes_to_the_same_report(tmp_path):
    import os
    import signal
    import time

    out = tmp_path / "killed"
    args = ["lenet-digits", "--accelerator", "isaac", "--samples", "200", "--chips", "6",
            "--seed", "3", "--variation", "0.1", "--read-noise", "0.3", "--fault-rate",
            "0.01", "--workers", "2", "--chunk-size", "8", "--no-progress", "--out", str(out)]
    driver = subprocess.Popen([sys.executable, "-m", "chipforge", "simulate", *args],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = out / campaign.RESULTS_FILE
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and driver.poll() is None:
        if results.exists() and results.read_bytes().count(b"\n") >= 12:
            break
        time.sleep(0.02)
    assert driver.poll() is None, "the campaign ended before it could be killed"
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    kept = [json.loads(line) for line in results.read_text().splitlines()[:-1]]
    assert 12 <= len(kept) + 1 < 25 + 6 * 25
    workers = {int(r["worker"].rsplit(":", 1)[1]) for r in kept}

    def alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    deadline = time.monotonic() + 20
    while any(alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(p) for p in workers), "workers outlived their driver"

    done = _cli(*args)
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "report.json").read_text())["simulation"]
    assert report["campaign"]["shards_reused"] >= 12
    spec = get_accelerator_spec("isaac", options=NOISY)
    graph = load("lenet-digits")
    x, y = spec.family.load_data("digits", graph, 200)
    whole = chipforge.simulate("lenet-digits", "isaac", (x[:200], y[:200]), seed=3, chips=6,
                               progress=False, **NOISY)
    assert report["chips"] == whole.chips
    assert report["accuracy_hardware_spread"] == whole.accuracy_hardware_spread
