"""Stage times, the streamed hardware run's progress, the per-layer error table in the
report (issue 16: observability)."""

import json
import time
import types

import numpy as np
import pytest

from chipforge.cli import main
from chipforge.families import get_accelerator_spec
from chipforge.families.base import AcceleratorFamily, Mapping, RunOutput
from chipforge.mainjob import run_main_job
from chipforge.simulate import simulate_graph
from chipforge.stages import StageTimer, format_stages
from chipforge.zoo import load


def _burn(seconds):
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


class _SlowFamily(AcceleratorFamily):
    """A family (not registered) whose map burns CPU and whose run sleeps: the stage
    times must tell the two apart. Its run takes no ``progress``."""

    name = "slow-test"
    integer_model = False

    def map(self, graph, config):
        _burn(0.3)
        return Mapping(self.name)

    def run(self, graph, mapped, config, x, *, seed=0):
        time.sleep(0.4)
        logits = np.eye(10)[np.arange(len(x)) % 10]
        return RunOutput(logits, logits, "itself")


def _slow_spec():
    config = types.SimpleNamespace(to_dict=lambda: {})
    return types.SimpleNamespace(family=_SlowFamily(), config=config, name="slow")


def test_stage_timer_measures_wall_and_cpu_of_each_interface_step():
    x, y = np.zeros((7, 1, 8, 8)), np.arange(7) % 10
    told = []
    sim = simulate_graph(_slow_spec(), load("lenet-digits"), x, y, progress=told.append)
    stages = {r["stage"]: r for r in sim.result.stages}
    assert list(stages) == ["map", "run"]
    assert stages["map"]["cpu_s"] >= 0.28 and stages["map"]["wall_s"] >= 0.28
    assert stages["run"]["wall_s"] >= 0.38 and stages["run"]["cpu_s"] < 0.2   # asleep
    assert told == [7]          # a run without ``progress`` is reported done at its end
    text = format_stages(sim.result.stages)
    assert "map (placement)" in text and "total" in text.splitlines()[-1]


def test_stage_timer_adds_repeats_and_keeps_parts_out_of_the_total():
    timer = StageTimer()
    for _ in range(2):
        with timer("run"):
            time.sleep(0.05)
    timer.add("hardware", 0.08, 0.01, within="run")
    (run, part) = timer.rows()
    assert run["wall_s"] >= 0.1 and part["within"] == "run"
    total = format_stages(timer.rows()).splitlines()[-1].split()
    assert float(total[1]) == pytest.approx(run["wall_s"], abs=1e-3)


def test_main_job_reports_stage_times_for_every_family(tmp_path):
    for model, accelerator, parts in (("lenet-digits-forms8", "forms8",
                                       {"program", "hardware", "ideal", "float"}),
                                      ("lenet-digits", "cap-ram", set()),
                                      ("bnn-digits", "superbnn", set())):
        job = run_main_job(model, accelerator, out=tmp_path / accelerator, samples=20,
                           cycle_samples=3, progress=False)
        report = json.loads(job.paths["json"].read_text())
        stages = {r["stage"]: r for r in report["run"]["stages"]}
        assert {"import", "data", "map", "run", "cost"} <= set(stages), accelerator
        assert {s for s, r in stages.items() if r.get("within") == "run"} == parts
        for r in stages.values():
            assert r["wall_s"] >= 0 and r["cpu_s"] >= 0
        inner = sum(r["wall_s"] for r in stages.values() if r.get("within") == "run")
        assert inner <= stages["run"]["wall_s"]
        text = job.summary()
        assert "stage times" in text and "run (hardware, ideal and float runs)" in text
        assert text.index("stage times") > text.index("accuracy hardware")
        assert "stages" not in report["simulation"]      # one place in the file
        assert report["schema"] == 3 and "cost" in report and "family" in report


def test_streamed_hardware_run_with_progress_equals_one_unchunked_run():
    """Read noise, variation and faults on: chunks for the progress bar read the same
    chip the same way as one batch."""
    spec = get_accelerator_spec("isaac", options={"variation": 0.1, "read_noise": 0.05,
                                                  "fault_rate": 0.01})
    graph = load("lenet-digits")
    from chipforge.families import test_data

    x, y = test_data(graph, "digits", 40)
    told = []
    whole = simulate_graph(spec, graph, x, y, seed=3,
                           run_options={"float_logits": False}).output
    chunked = simulate_graph(spec, graph, x, y, seed=3, progress=told.append,
                             run_options={"float_logits": False,
                                          "ideal_logits": whole.ideal_logits}).output
    assert told == [16, 16, 8]
    np.testing.assert_array_equal(chunked.logits, whole.logits)
    assert not np.array_equal(whole.logits, whole.ideal_logits)    # the devices do matter


def test_pim_macro_streams_with_progress_and_the_same_noisy_result():
    """CAP-RAM (thermal noise, gain and offset spread): the progress chunks convert with
    the same noise as one batch."""
    spec = get_accelerator_spec("cap-ram")
    graph = load("lenet-digits")
    from chipforge.families import test_data

    x, y = test_data(graph, "digits", 40)
    told = []
    whole = simulate_graph(spec, graph, x, y, seed=3).output
    chunked = simulate_graph(spec, graph, x, y, seed=3, progress=told.append).output
    assert told == [16, 16, 8]
    np.testing.assert_array_equal(chunked.logits, whole.logits)
    assert not np.array_equal(whole.logits, whole.ideal_logits)


def test_simulate_progress_flag_shows_samples_rate_and_eta(tmp_path, capsys):
    args = ["simulate", "lenet-digits-forms8", "--accelerator", "forms8", "--samples", "48",
            "--cycle-samples", "2"]
    assert main([*args, "--out", str(tmp_path / "a"), "--progress"]) == 0
    err = capsys.readouterr().err.replace("\r", "\n")
    bar = [line for line in err.splitlines() if "hardware run" in line]
    assert any("48/48" in line for line in bar) and any("16/48" in line for line in bar)
    assert any("img/s" in line and "<" in line for line in bar)       # rate and ETA
    assert main([*args, "--out", str(tmp_path / "b"), "--no-progress"]) == 0
    assert capsys.readouterr().err == ""
    assert main([*args, "--out", str(tmp_path / "c")]) == 0   # stderr is no terminal here
    assert capsys.readouterr().err == ""
    # the PIM macro streams too; a family whose run does not stream (AQFP) is reported
    # done when it returns
    assert main(["simulate", "lenet-digits", "--accelerator", "cap-ram", "--samples", "40",
                 "--cycle-samples", "2", "--out", str(tmp_path / "d"), "--progress"]) == 0
    err = capsys.readouterr().err.replace("\r", "\n")
    bar = [line for line in err.splitlines() if "hardware run" in line]
    assert any("16/40" in line for line in bar) and any("40/40" in line for line in bar)
    assert main(["simulate", "bnn-digits", "--accelerator", "superbnn", "--samples", "20",
                 "--out", str(tmp_path / "e"), "--progress"]) == 0
    err = capsys.readouterr().err.replace("\r", "\n")
    assert any("20/20" in line for line in err.splitlines() if "hardware run" in line)


def test_layer_errors_in_the_text_report_and_strict_json(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["simulate", "lenet-digits", "--accelerator", "isaac", "--samples", "20",
                 "--read-noise", "0.05", "--layer-errors", "10", "--cycle-samples", "2",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "per-layer error vs the ideal run (10 samples" in text
    raw = (out / "report.json").read_text()
    assert "Infinity" not in raw and "NaN" not in raw
    errors = json.loads(raw)["layer_errors"]
    assert errors["samples"] == 10
    assert [r["node"] for r in errors["layers"]] == ["conv1", "conv2", "fc1", "fc2", "fc3"]
    noisy = [r for r in errors["layers"] if not r["exact"]]
    assert noisy and all(r["relative_error"] > 0 and r["snr_db"] is not None for r in noisy)
    assert all(f"{r['node']}" in text for r in noisy)
