"""A user's own 28x28 CNN (plain torch, exported to ONNX at batch 1) and MNIST data through
every command that runs a model: ``simulate --rtl`` (shift-and-add RTL in the loop), ``rtl
tile --layer MODEL:LAYER``, ``cycles --data`` and the sweeps' ``--data`` / ``--chips``.
Nothing here may reach for the digits data set; layer names are the importer's (``2.Conv``).

The CNN is trained for a few seconds on 2,000 MNIST images so that accuracies mean
something (a random network scores ~10 % whatever the hardware does)."""

import csv
import json

import numpy as np
import pytest

from chipforge.cli import main

CONV = "2.Conv"   # the importer's name of the second conv of the nn.Sequential


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    import torch
    from torch import nn

    from chipforge.zoo.data import mnist

    root = tmp_path_factory.mktemp("user")
    data = mnist()
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2), nn.ReLU(),
                        nn.Conv2d(4, 6, 3, stride=2), nn.ReLU(), nn.Flatten(),
                        nn.Linear(6 * 6 * 6, 10))
    x = torch.tensor(data.x_train[:2000])
    y = torch.tensor(data.y_train[:2000])
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(3):
        for i in range(0, len(x), 100):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x[i:i + 100]), y[i:i + 100]).backward()
            opt.step()
    net.eval()
    onnx = root / "cnn.onnx"
    torch.onnx.export(net, torch.zeros(1, 1, 28, 28), str(onnx), dynamo=False)
    small = root / "mnist8.npz"
    np.savez(small, x=data.x_test[:8], y=data.y_test[:8])
    sweep = root / "mnist60.npz"
    np.savez(sweep, x=data.x_test[:60], y=data.y_test[:60])
    return {"onnx": onnx, "small": small, "sweep": sweep, "root": root}


def test_simulate_rtl_of_a_conv_layer_on_the_users_data(user, tmp_path, capsys):
    """The importer's layer name, the user's MNIST images (no digits: 28x28 has no digits
    size), PTQ as simulate does it: bit-exact, cycles equal to the model, report in --out."""
    from chipforge.mainjob import run_main_job
    from chipforge.rtl_loop import load_layer_model, simulate_rtl
    from chipforge.sim.executor import run_graph

    out = tmp_path / "rtl-out"
    rc = main(["simulate", str(user["onnx"]), "--rtl", CONV, "--data", str(user["small"]),
               "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    report = json.loads((out / "rtl-report.json").read_text())
    assert report["bit_exact"] and report["mismatches"] == 0
    assert report["cycles"] == report["model_cycles"] > 0
    # 8 images x 6x6 output positions x 6 channels, one dot product each
    assert report["inputs"] == 8 and report["dot_products"] == 8 * 36 * 6
    assert sorted(p.name for p in out.iterdir()) == ["rtl-report.json"]

    graph, x, y = load_layer_model(str(user["onnx"]), str(user["small"]))
    run = simulate_rtl(graph, CONV, data=(x, y))
    np.testing.assert_array_equal(run.outputs, run_graph(graph, x))
    job = run_main_job(str(user["onnx"]), accelerator="isaac", data=str(user["small"]),
                       progress=False)
    # the quantized model the RTL loop runs is the one simulate runs
    assert run.reference_accuracy == job.simulation.accuracy_ideal == report["accuracy"]
    assert report["accuracy"] >= 0.75


def test_rtl_tile_of_an_onnx_layer_writes_derived_names_under_out(user, tmp_path, capsys):
    from chipforge.verify.manifest import load_manifest

    out = tmp_path / "tiles"
    rc = main(["rtl", "tile", "--accelerator", "isaac", "--layer",
               f"{user['onnx']}:{CONV}", "--data", str(user["small"]), "--out", str(out),
               "--lint"])
    text = capsys.readouterr().out
    assert rc == 0, text
    (folder,) = list(out.iterdir())
    assert folder.name.startswith("tile-isaac-l-2-Conv-") and "." not in folder.name
    manifest = load_manifest(folder)          # refuses a module that is not an identifier
    assert manifest.module == folder.name.replace("-", "_")
    layer = manifest.data["layer"]
    assert (layer["name"], layer["k"], layer["n"]) == (CONV, 4 * 3 * 3, 6)
    assert "verilator --lint-only -Wall: clean" in text


def _quantized_graph(names):
    from chipforge.sim.graph import Graph, Node, Op

    rng = np.random.default_rng(0)
    q = dict(weight_bits=8, weight_scale=0.01, act_bits=8, act_scale=1 / 64,
             act_signed=False)
    nodes, prev = [], "input"
    for name in names:
        nodes.append(Node(Op.LINEAR, name, (prev,), dict(q),
                          {"weight": rng.integers(-127, 128, (4, 4)) * 0.01}))
        prev = name
    return Graph("hostile", (4,), nodes)


@pytest.mark.parametrize("layer", ["../../x", "a; exec -- b", "a/b", "a.b"])
def test_hostile_layer_names_stay_names(layer, tmp_path, capsys):
    """A layer name with path or shell syntax becomes a derived identifier: one folder in
    --out, a module name the manifest loader accepts, nothing written anywhere else."""
    from chipforge.sim.graph import save_graph
    from chipforge.verify.manifest import load_manifest

    work = tmp_path / "work"
    work.mkdir()
    model = work / "m.npz"
    save_graph(_quantized_graph(["../../x", "a; exec -- b", "a/b", "a.b"]), model)
    out = work / "out"
    rc = main(["rtl", "tile", "--layer", f"{model}:{layer}", "--out", str(out)])
    assert rc == 0, capsys.readouterr()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]
    assert sorted(p.name for p in work.iterdir()) == ["m.npz", "out"]
    (folder,) = list(out.iterdir())
    assert set(folder.name) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                   "0123456789-")
    assert load_manifest(folder).data["layer"]["name"] == layer


def test_names_that_sanitize_alike_stay_apart():
    from chipforge.hw.generate import layer_identifier

    assert layer_identifier("conv1") == "conv1"
    assert layer_identifier("a.b") != layer_identifier("a/b")
    assert layer_identifier("a.b").isidentifier() and layer_identifier("0.x").isidentifier()


def test_a_tile_far_too_large_asks_for_force_before_synthesis(tmp_path, capsys):
    """LeNet conv2 on forms8 (K=150, N=16) came out at 81,961 LUT4 after 21 minutes: the
    estimate says so and the command stops before yosys unless --force."""
    out = tmp_path / "t"
    rc = main(["rtl", "tile", "--accelerator", "forms8", "--layer", "lenet-digits:conv2",
               "--out", str(out), "--synth", "ice40"])
    captured = capsys.readouterr()
    assert rc == 2
    assert "does NOT fit" in captured.out and "iCE40 HX8K" in captured.out
    assert "--force" in captured.err and len(captured.err.strip().splitlines()) == 1
    assert (out / "tile-forms8-conv2" / "manifest.json").exists()


def test_lut_estimate_reproduces_the_measured_tiles():
    """The fit of chipforge.hw.estimate against the measured yosys counts it documents."""
    from chipforge.hw.estimate import estimate_tile
    from chipforge.hw.reram_tile import tile_config

    measured = [("forms8", 25, 6, 8426), ("forms8", 16, 2, 4172), ("forms8", 150, 16, 81961),
                ("forms8", 36, 6, 9430), ("isaac", 25, 6, 10937), ("isaac", 16, 2, 5155)]
    for accel, k, n, luts in measured:
        got = estimate_tile(tile_config(accel, k, n)).luts
        assert abs(got / luts - 1) < 0.09, (accel, k, n, got, luts)
    assert estimate_tile(tile_config("forms8", 16, 2)).fits
    assert estimate_tile(tile_config("forms8", 150, 16)).far_too_large


def test_rtl_tile_flag_without_rtl_is_one_line(capsys):
    assert main(["simulate", "lenet-digits", "--rtl-tile", "forms8"]) == 2
    err = capsys.readouterr().err
    assert "--rtl-tile applies to --rtl" in err and len(err.strip().splitlines()) == 1


def test_cycles_with_data_on_a_28x28_model(user, capsys):
    rc = main(["cycles", str(user["onnx"]), "--data", str(user["small"]), "--arch", "isaac8"])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "the first 8 inputs of" in text and "(1, 28, 28)" in text
    assert "8-bit weights, 8-bit activations" in text


def test_cycles_of_a_28x28_model_without_data_asks_for_it(user, capsys):
    """The digits default has no 28-pixel size: one line pointing at --data."""
    assert main(["cycles", str(user["onnx"])]) == 2
    err = capsys.readouterr().err
    assert "--data" in err and "(1, 28, 28)" in err and len(err.strip().splitlines()) == 1


def test_sweep_faults_on_the_users_cnn_and_data_over_chips(user, tmp_path, capsys):
    """The ISQED study on the user's CNN and MNIST: 3 fault rates x 2 mappings, 4 chips per
    point with the seeds of chipforge.chips, spread over chips in the summary."""
    from chipforge.chips import chip_seeds
    from chipforge.mainjob import run_main_job

    out = tmp_path / "faults"
    rc = main(["sweep", "faults", "--grid", f"model={user['onnx']}", "--data",
               str(user["sweep"]), "--grid", "fault_rate=0.001,0.02,0.2", "--chips", "4",
               "--out", str(out), "--workers", "1", "--no-plot"])
    assert rc == 0, capsys.readouterr()
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 * 2 * 4
    seeds = [str(s) for s in chip_seeds(0, 4)]
    for row in rows:
        assert row["data"] == str(user["sweep"])
        assert row["seed"] == seeds[int(row["trial"])]
    with open(out / "summary.csv") as f:
        summary = list(csv.DictReader(f))
    ideal = run_main_job(str(user["onnx"]), accelerator="isqed-two-column",
                         data=str(user["sweep"]), progress=False).simulation.accuracy_ideal
    assert ideal >= 0.75
    for row in summary:
        assert int(row["n"]) == 4
        assert float(row["ideal_accuracy_mean"]) == pytest.approx(ideal, abs=1e-12)
        low, mean, high = (float(row[f"accuracy_{k}"]) for k in ("ci95_low", "mean",
                                                                  "ci95_high"))
        assert 0 <= low <= mean <= high <= 1
    worst = {r["mapping"]: float(r["accuracy_mean"]) for r in summary
             if float(r["fault_rate"]) == 0.2}
    assert max(worst.values()) < ideal   # a fifth of the cells stuck costs accuracy


def test_sweep_accelerator_with_data_and_sweeps_without_a_model_refuse_it(user, tmp_path,
                                                                         capsys):
    from chipforge.mainjob import run_main_job

    out = tmp_path / "acc"
    rc = main(["sweep", "accelerator", "--grid", f"model={user['onnx']}", "--grid",
               "accelerator=isaac", "--grid", "key=adc_bits", "--grid", "value=8",
               "--grid", "samples=8", "--data", str(user["small"]), "--trials", "1",
               "--out", str(out), "--workers", "1", "--no-plot"])
    assert rc == 0, capsys.readouterr()
    with open(out / "results.csv") as f:
        (row,) = list(csv.DictReader(f))
    job = run_main_job(str(user["onnx"]), accelerator="isaac", data=str(user["small"]),
                       progress=False)
    assert float(row["accuracy_ideal"]) == job.simulation.accuracy_ideal
    capsys.readouterr()
    assert main(["sweep", "adc", "--data", str(user["small"]), "--out",
                 str(tmp_path / "adc")]) == 2
    assert "--data" in capsys.readouterr().err
    assert not (tmp_path / "adc").exists()


def test_rtl_selector_takes_the_stored_calibration_else_the_data(tmp_path, capsys):
    """``compress heatvit`` stores its calibration in the graph: ``rtl selector`` uses it;
    without it, the formats come from ``--data``. Images 3x brighter than digits give other
    formats than the digits default, so the three outcomes are told apart."""
    from chipforge import zoo
    from chipforge.heatvit import calibrate_graph
    from chipforge.sim.graph import save_graph
    from chipforge.sim.vit_graph import graph_to_vit
    from chipforge.zoo.data import digits

    graph = zoo.load("vit-digits-keep60")
    bright = digits(8).x_train[:256] * 3.0
    stored = graph.copy()
    stored.meta["heatvit_calibration"] = {
        "fracs": list(calibrate_graph(graph_to_vit(graph), bright)), "label": "bright"}
    save_graph(stored, tmp_path / "stored.npz")
    save_graph(graph, tmp_path / "plain.npz")
    np.savez(tmp_path / "bright.npz", x=bright, y=digits(8).y_train[:256])

    def config(model, *extra):
        out = tmp_path / f"out-{len(list(tmp_path.iterdir()))}"
        assert main(["rtl", "selector", str(tmp_path / model), "--out", str(out),
                     *extra]) == 0
        (folder,) = list(out.iterdir())
        return json.loads((folder / "manifest.json").read_text())["config"]

    from_model = config("stored.npz")
    assert "formats from the model file" in capsys.readouterr().out
    from_data = config("plain.npz", "--data", str(tmp_path / "bright.npz"))
    assert "first 256 inputs of" in capsys.readouterr().out
    default = config("plain.npz")
    assert "digits training images" in capsys.readouterr().out
    assert from_model == from_data != default


@pytest.mark.slow
def test_simulate_rtl_tile_of_the_users_conv_layer(user, tmp_path, capsys):
    """The whole ISAAC tile generated for the ONNX CNN's 2.Conv, one MNIST image, in
    Icarus: bit-exact and every cycle as the model; everything under --out (about 1 min)."""
    out = tmp_path / "tile"
    rc = main(["simulate", str(user["onnx"]), "--rtl", CONV, "--rtl-tile", "isaac",
               "--data", str(user["small"]), "--samples", "1", "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "bit-exact with the ideal simulated run" in text and "36 vectors x 6 outputs" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tile"]
    assert any(p.name.startswith("tile-isaac-l-2-Conv-") for p in out.iterdir())
    report = json.loads((out / "rtl-report.json").read_text())
    assert report["bit_exact"] and report["tile"] == "isaac" and report["inputs"] == 1
    assert report["cycles"] == report["model_cycles"] > 0
    assert report["dot_products"] == 36 * 6
