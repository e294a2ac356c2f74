"""RTL in the loop: the generated shift-and-add Verilog, Verilated through pyverilator-mm,
computes a layer inside the numpy simulation bit for bit, in the cycles the model predicts.

The Verilated model is built once into the cache (``$CHIPFORGE_RTL_CACHE`` or
``~/.cache/chipforge/verilated``; 10-40 s on a cold cache) and loaded from there afterwards.
"""

import re
import subprocess
import sys

import numpy as np
import pytest
import pyverilator  # noqa: E402,F401  (a requirement: missing = a failure)

from chipforge.config import ISAAC_CROSSBAR
from chipforge.sim.cycle.shift_add import SHIFT_ADD_LATENCY, shift_add_stream_cycles
from chipforge.sim.executor import run_graph
from chipforge.sim.graph import Graph, Node, Op
from chipforge.sim.ref.crossbar import adc_codes, encode_weights, shift_add
from chipforge.toolchain import ToolMissingError, pyverilator_verilator
from chipforge.verify.manifest import load_manifest


@pytest.fixture(scope="module")
def rtl():
    from chipforge.sim.rtl_layer import ShiftAddRtl

    try:
        return ShiftAddRtl()
    except ToolMissingError as e:
        pytest.fail(f"HDL tool missing (make test needs it): {e}")


def random_readout(cfg, rng, batch, cols):
    """Random ADC codes in the reference's form, with the extremes in the first rows."""
    full, phys = cfg.adc_max_code, cfg.physical_cols_per_weight
    codes = rng.integers(0, full + 1, (batch, cfg.input_cycles, cols, phys))
    unit = rng.integers(0, full + 1, (batch, cfg.input_cycles))
    flipped = rng.random((cols, phys)) < 0.5
    flipped[0], flipped[1] = True, False
    codes[0], unit[0] = full, full
    codes[1], unit[1] = 0, full
    codes[2], unit[2] = full, 0
    return codes, unit, flipped


def test_stream_with_idle_and_backpressure_equals_the_reference(rtl):
    cfg = rtl.cfg
    assert cfg == ISAAC_CROSSBAR  # rtl/shift-add is generated from the ISAAC preset
    codes, unit, flipped = random_readout(cfg, np.random.default_rng(0), 40, 7)
    want = shift_add(codes, unit, flipped, cfg)
    got, run = rtl.shift_add(codes, unit, flipped, idle_prob=0.3, ready_prob=0.5, seed=4)
    assert got.dtype == np.int64 and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    # Stalls cost cycles: more than the back-to-back cycle model.
    assert run.cycles > shift_add_stream_cycles(cfg, 40 * 7)


def test_payload_words_that_repeat_are_written_only_when_they_change(rtl):
    """Codes fixed, only the unit codes (payload word 2) varying: the loop writes just the
    changed words of each beat; the results must not notice."""
    cfg = rtl.cfg
    rng = np.random.default_rng(8)
    codes, unit, flipped = random_readout(cfg, rng, 30, 3)
    codes[:] = codes[5, 3, 0]
    beats = rtl.beats(codes, unit, flipped)
    assert (beats[1:, :2] == beats[:-1, :2]).all() and (beats[1:, 2] != beats[:-1, 2]).any()
    got, _ = rtl.shift_add(codes, unit, flipped, idle_prob=0.2, ready_prob=0.6, seed=9)
    np.testing.assert_array_equal(got, shift_add(codes, unit, flipped, cfg))


def test_back_to_back_cycles_equal_the_cycle_model(rtl):
    cfg = rtl.cfg
    codes, unit, flipped = random_readout(cfg, np.random.default_rng(1), 25, 4)
    got, run = rtl.shift_add(codes, unit, flipped)
    np.testing.assert_array_equal(got, shift_add(codes, unit, flipped, cfg))
    n = 25 * 4
    assert run.cycles == shift_add_stream_cycles(cfg, n) == n * cfg.input_cycles + 2
    # First result 2 cycles after its last beat, then one every input_cycles cycles.
    assert run.result_cycles[0] == cfg.input_cycles + SHIFT_ADD_LATENCY
    assert (np.diff(run.result_cycles) == cfg.input_cycles).all()


def test_real_crossbar_readout_gives_x_times_w(rtl):
    cfg = rtl.cfg
    rng = np.random.default_rng(2)
    w = rng.integers(*cfg.weight_range, endpoint=True, size=(cfg.rows, 3))
    x = rng.integers(*cfg.input_range, endpoint=True, size=(6, cfg.rows))
    readout = adc_codes(x, encode_weights(w, cfg), cfg)
    got, _ = rtl.shift_add(readout.codes, readout.unit, readout.flipped)
    assert not readout.saturated
    np.testing.assert_array_equal(got, x @ w)


def test_second_open_loads_the_cache_without_building(rtl, monkeypatch):

    from chipforge.sim.rtl_layer import ShiftAddRtl

    so = rtl.block.so_path
    stamp = so.stat().st_mtime_ns

    def no_build(*args, **kwargs):
        raise AssertionError("the cached model was rebuilt")

    monkeypatch.setattr(pyverilator.PyVerilator, "build", no_build)
    again = ShiftAddRtl(cache_dir=rtl.block.cache_dir)
    assert again.block.from_cache and again.block.so_path == so
    assert so.stat().st_mtime_ns == stamp
    codes, unit, flipped = random_readout(again.cfg, np.random.default_rng(3), 3, 2)
    np.testing.assert_array_equal(again.shift_add(codes, unit, flipped)[0],
                                  shift_add(codes, unit, flipped, again.cfg))


def test_cache_key_follows_verilog_and_toolchain(rtl):
    from dataclasses import replace

    from chipforge.sim.rtl_backend import VerilatedBlock

    tools = rtl.block.toolchain
    verilog = rtl.block.manifest.verilog.read_bytes()
    key = VerilatedBlock.cache_key(verilog, tools)
    assert key == rtl.block.key
    assert VerilatedBlock.cache_key(verilog + b"\n// edited\n", tools) != key
    assert VerilatedBlock.cache_key(verilog, replace(tools, version_text="Verilator 5.052")) != key
    assert VerilatedBlock.cache_key(verilog, replace(tools, pyverilator="0.7.7")) != key


def test_payload_packing_matches_the_scalar_codec():
    from chipforge.sim.rtl_layer import DEFAULT_SHIFT_ADD_DIR

    codec = load_manifest(DEFAULT_SHIFT_ADD_DIR).codec("i_stream__payload")
    rng = np.random.default_rng(5)
    codes = rng.integers(0, 256, (50, 8))
    unit, flip = rng.integers(0, 256, 50), rng.integers(0, 256, 50)
    words = codec.pack_array({"codes": codes.T, "unit": unit, "flip": flip})
    assert words.shape == (50, 3) and words.dtype == np.uint32
    for k in range(50):
        packed = sum(int(w) << (32 * i) for i, w in enumerate(words[k]))
        assert packed == codec.pack({"codes": codes[k].tolist(), "unit": unit[k],
                                     "flip": flip[k]})
    back = codec.unpack_array(words)
    np.testing.assert_array_equal(np.stack([back[f"codes[{p}]"] for p in range(8)], 1), codes)
    np.testing.assert_array_equal(back["unit"], unit)
    np.testing.assert_array_equal(back["flip"], flip)


@pytest.mark.parametrize("version_line, found", [
    ("", "prints the version ''"),
    ("Verilator 4.200 2021-03-12 rev v4.200", "found 4.200"),
])
def test_old_or_unreadable_verilator_is_named(tmp_path, monkeypatch, version_line, found):
    fake = tmp_path / "verilator"
    fake.write_text(f"#!/bin/sh\necho '{version_line}'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolMissingError, match="needs Verilator >= 5.006") as info:
        pyverilator_verilator()
    assert found in str(info.value)


def test_missing_verilator_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolMissingError, match="found none"):
        pyverilator_verilator()


def test_sim_does_not_import_hw():
    code = ("import sys, chipforge.sim.rtl_layer; "
            "sys.exit(any(m.startswith('chipforge.hw') for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# --- one layer of a model through the RTL -------------------------------------------------

def digits_linear_classifier():
    """A one-layer quantized digits classifier (least squares, 8-bit weights/activations):
    a real model on the shared digits split, trained in milliseconds."""
    from chipforge.zoo.data import digits

    data = digits()
    x = data.x_train.reshape(len(data.x_train), -1).astype(np.float64)
    targets = np.eye(10)[data.y_train]
    w = np.linalg.lstsq(np.c_[x, np.ones(len(x))], targets, rcond=None)[0]
    weight, bias = w[:-1].T, w[-1]
    scale = np.abs(weight).max() / 127
    node = Node(Op.LINEAR, "fc", ("flat",),
                dict(weight_bits=8, weight_scale=scale, act_bits=8, act_scale=1 / 255,
                     act_signed=False),
                {"weight": np.rint(weight / scale) * scale, "bias": bias})
    graph = Graph("digits-linear", (1, 8, 8), [Node(Op.FLATTEN, "flat", ("input",)), node])
    return graph, data


def test_digits_layer_through_rtl_is_bit_exact(rtl):
    from chipforge.sim.rtl_layer import run_layer_rtl

    graph, data = digits_linear_classifier()
    run = run_layer_rtl(graph, data.x_test, "fc", labels=data.y_test, block=rtl)
    run.check()
    assert run.bit_exact and run.rtl.shape == (360, 10)
    np.testing.assert_array_equal(run.rtl, run.reference)
    np.testing.assert_array_equal(run.outputs, run_graph(graph, data.x_test))
    assert run.accuracy == run.reference_accuracy > 0.85
    assert run.dot_products == 360 * 10
    assert run.cycles == run.model_cycles == 360 * 10 * 16 + 2


def test_conv_layer_and_row_tiles_through_rtl(rtl):
    """A conv layer (im2col rows), and a linear layer too tall for one crossbar (row tiles
    summed digitally), with stalls: still bit-exact."""
    from chipforge.sim.rtl_layer import run_layer_rtl

    rng = np.random.default_rng(6)
    q = dict(weight_bits=8, weight_scale=0.01, act_bits=8, act_scale=1 / 64, act_signed=True)
    nodes = [
        Node(Op.CONV2D, "conv", ("input",), dict(padding=1) | q,
             {"weight": rng.integers(-127, 128, (3, 1, 3, 3)) * 0.01}),
        Node(Op.FLATTEN, "flat", ("conv",)),
        Node(Op.LINEAR, "fc", ("flat",), q, {"weight": rng.integers(-127, 128, (4, 300)) * 0.01}),
    ]
    graph = Graph("tall", (1, 10, 10), nodes)
    x = rng.normal(size=(3, 1, 10, 10))
    conv = run_layer_rtl(graph, x, "conv", block=rtl)
    conv.check()
    assert conv.dot_products == 3 * 100 * 3 and conv.cycles == conv.model_cycles
    fc = run_layer_rtl(graph, x, "fc", block=rtl, idle_prob=0.2, ready_prob=0.7)
    fc.check()
    assert fc.tiles == 3 and fc.dot_products == 3 * 4 * 3
    np.testing.assert_array_equal(fc.rtl, fc.exact)
    np.testing.assert_array_equal(fc.outputs, run_graph(graph, x))
    assert fc.cycles > fc.model_cycles  # the stalls


def test_mismatch_names_the_first_differing_input(rtl, monkeypatch):
    """A block that returns one wrong dot product is caught, with where and what."""
    from chipforge.sim.rtl_layer import run_layer_rtl

    graph, data = digits_linear_classifier()
    run_stream = rtl.block.run_stream

    def faulty(*args, **kwargs):
        run = run_stream(*args, **kwargs)
        run.results[123] += 1  # image 12, output 3
        return run

    monkeypatch.setattr(rtl.block, "run_stream", faulty)
    run = run_layer_rtl(graph, data.x_test[:20], "fc", block=rtl)
    assert run.mismatches == 1
    m = run.first_mismatch
    assert (m.image, m.row, m.output) == (12, 12, 3) and m.got == m.expected + 1
    with pytest.raises(AssertionError, match="image 12 .*output 3"):
        run.check()


def test_bad_layer_and_out_of_range_operands_are_rejected(rtl):
    from chipforge.sim.rtl_layer import run_layer_rtl

    graph, data = digits_linear_classifier()
    with pytest.raises(ValueError, match="quantized linear or conv2d node .*not 'flat'"):
        run_layer_rtl(graph, data.x_test[:2], "flat", block=rtl)
    wide = Node(Op.LINEAR, "fc", ("input",),
                dict(weight_bits=20, weight_scale=1.0, act_bits=8, act_scale=1.0,
                     act_signed=False), {"weight": np.full((2, 4), 2.0**17)})
    with pytest.raises(ValueError, match="layer 'fc': integer weights span 131072"):
        run_layer_rtl(Graph("wide", (4,), [wide]), np.ones((1, 4)), "fc", block=rtl)


def test_bundled_cnn_layer_through_rtl_on_the_digits_test_set(rtl):
    """lenet-digits' last layer (fc3: 84 -> 10) on all 360 test images, through the RTL."""
    from chipforge import zoo
    from chipforge.sim.rtl_layer import run_layer_rtl
    from chipforge.zoo.data import digits

    graph = zoo.load("lenet-digits")
    data = digits(graph.input_shape[-1])  # the zoo's LeNet reads 16x16 digits
    assert len(data.x_test) == 360
    run = run_layer_rtl(graph, data.x_test, "fc3", labels=data.y_test, block=rtl)
    run.check()
    assert run.rtl.shape == (360, 10) and run.dot_products == 3600
    np.testing.assert_array_equal(run.rtl, run.exact)
    np.testing.assert_array_equal(run.outputs, run.reference_outputs)
    np.testing.assert_array_equal(run.reference_outputs, run_graph(graph, data.x_test))
    assert run.accuracy == run.reference_accuracy == graph.meta["accuracy_quantized"]
    assert run.cycles == run.model_cycles == 3600 * 16 + 2


@pytest.mark.slow
def test_a_real_rtl_bug_is_reported_at_the_first_affected_input(tmp_path):
    """Verilog whose sign cycle adds instead of subtracts (a plausible bug) is rebuilt from
    its new hash; it agrees on non-negative inputs, and the first image with a negative
    input is the one reported."""
    import shutil

    from chipforge.sim.rtl_layer import DEFAULT_SHIFT_ADD_DIR, ShiftAddRtl, run_layer_rtl

    block_dir = tmp_path / "shift-add"
    shutil.copytree(DEFAULT_SHIFT_ADD_DIR, block_dir)
    verilog = block_dir / "shift_add.v"
    text = verilog.read_text()
    # the sign beat starts the accumulator at -value: located by structure (the negation
    # of the held beat's value, acc_next = -held_value), not by a copied line
    sign_beat = re.compile(
        r"^(\s*assign \\\$\d+\s+= )- (\$signed\(held_value(?:\s*\[[0-9:]+\])?\);)$", re.M)
    assert len(sign_beat.findall(text)) == 1, "no unique negation of held_value in shift_add.v"
    verilog.write_text(sign_beat.sub(r"\1\2", text))
    try:
        buggy = ShiftAddRtl(block_dir, cache_dir=tmp_path / "cache")
    except ToolMissingError as e:
        pytest.fail(f"HDL tool missing (make test needs it): {e}")
    assert not buggy.block.from_cache

    rng = np.random.default_rng(7)
    q = dict(weight_bits=8, weight_scale=1.0, act_bits=8, act_scale=1.0, act_signed=True)
    graph = Graph("signed", (16,), [Node(Op.LINEAR, "fc", ("input",), q,
                                         {"weight": rng.integers(1, 100, (3, 16)) * 1.0})])
    x = rng.integers(0, 100, (8, 16)) * 1.0
    x[5, 4] = -3.0
    run = run_layer_rtl(graph, x, "fc", block=buggy)
    assert run.first_mismatch is not None
    m = run.first_mismatch
    assert (m.image, m.row, m.output) == (5, 5, 0)
    assert m.expected == int(x[5] @ graph.node("fc").params["weight"][0]) != m.got
    assert run.mismatches == 3  # the three outputs of image 5, nothing else


@pytest.mark.slow
@pytest.mark.parametrize("block_name, config_name, reference, inputs", [
    ("poly-gelu", "PolyGeluConfig", "chipforge.sim.ref.poly_gelu:poly_gelu", "all"),
    ("plan-sigmoid", "PlanSigmoidConfig", "chipforge.sim.ref.plan_sigmoid:plan_sigmoid", "all"),
    ("poly-exp", "PolyExpConfig", "chipforge.sim.ref.poly_exp:poly_exp", "non-positive"),
])
def test_heatvit_elementwise_blocks_through_the_backend(block_name, config_name, reference,
                                                         inputs):
    """The backend runs other blocks from their manifests alone: HeatViT's elementwise
    units, every input code then random ones, with idle cycles and back-pressure, equal
    their references; back to back, results leave in consecutive cycles (one element per
    cycle after the block's latency). Slow: one Verilator build per block on a cold cache."""
    import importlib

    import chipforge.config as config
    from chipforge.sim.rtl_backend import VerilatedBlock
    from chipforge.sim.rtl_layer import DEFAULT_SHIFT_ADD_DIR

    try:
        block = VerilatedBlock(DEFAULT_SHIFT_ADD_DIR.parent / block_name)
    except ToolMissingError as e:
        pytest.fail(f"HDL tool missing (make test needs it): {e}")
    cfg = getattr(config, config_name).from_dict(block.manifest.config)
    module, name = reference.split(":")
    ref = getattr(importlib.import_module(module), name)
    width = block.in_width
    codes = np.arange(-(1 << (width - 1)), 1 if inputs == "non-positive" else 1 << (width - 1))
    x = np.concatenate([codes, np.random.default_rng(12).choice(codes, 1000)])
    words = (x & ((1 << width) - 1)).astype(np.uint32)[:, None]
    want = np.asarray(ref(x, cfg), dtype=np.int64)
    stalled = block.run_stream(words, len(x), idle_prob=0.25, ready_prob=0.6, seed=13)
    np.testing.assert_array_equal(stalled.results, want)
    run = block.run_stream(words, len(x))
    np.testing.assert_array_equal(run.results, want)
    latency = int(run.result_cycles[0]) - 1
    np.testing.assert_array_equal(run.result_cycles, np.arange(len(x)) + 1 + latency)


def test_simulate_rtl_command_runs_a_zoo_layer_and_reports(rtl, capsys):
    from chipforge.cli import main

    argv = ["simulate", "--model", "lenet-digits", "--rtl", "fc3", "--samples", "40"]
    assert main([*argv, "--rtl-stalls", "0.2", "0.7"]) == 0
    out = capsys.readouterr().out
    assert "40 test images" in out and "0 mismatches (bit-exact)" in out
    assert "cycle model 6402" in out  # 40 x 10 x 16 + 2; the RTL took more (stalls)
    assert main(["simulate", "--model", "lenet-digits", "--rtl", "nope"]) == 2
    assert main([*argv, "--fault-rate", "0.01"]) == 2
    err = capsys.readouterr().err
    assert "not 'nope'" in err and "does not combine with --fault-rate" in err


@pytest.mark.slow
def test_forms_fragment_block_streams_bit_exact_in_the_reference_cycles():
    """The backend is not shift-add specific: the FORMS fragment datapath (a 259-bit job
    payload, an array-of-signed result payload, extra status outputs) streams bit-exact with
    ``run_fragments``; back to back, result k leaves in cycle
    ``sum(fragment_cycles of jobs up to its last) + 2`` (first accept in cycle 1, result 1
    cycle after the trigger). Slow: a second Verilator build on a cold cache."""
    from chipforge.sim.rtl_backend import VerilatedBlock
    from chipforge.sim.rtl_layer import DEFAULT_SHIFT_ADD_DIR

    block_dir = DEFAULT_SHIFT_ADD_DIR.parent / "forms-fragment"
    assert block_dir.exists(), "rtl/forms-fragment is missing: run 'make rtl'"
    try:
        block = VerilatedBlock(block_dir)
    except ToolMissingError as e:
        pytest.fail(f"HDL tool missing (make test needs it): {e}")
    from chipforge.config import FormsFragmentConfig
    from chipforge.sim.ref.forms_fragment import FragmentJobs, fragment_cycles, run_fragments

    cfg = FormsFragmentConfig.from_dict(block.manifest.config)
    rng = np.random.default_rng(10)
    n, m, cols, slices = 150, cfg.fragment_size, cfg.columns, cfg.slices
    top = (1 << cfg.input_bits) - 1
    inputs = rng.integers(0, top + 1, (n, m)) >> rng.integers(0, cfg.input_bits + 1, (n, 1))
    levels = rng.integers(0, 1 << cfg.cell_bits, (n, m, cols, slices))
    last = rng.random(n) < 0.3
    last[cfg.max_fragments - 1::cfg.max_fragments] = True
    last[-1] = True
    jobs = FragmentJobs(inputs, levels, rng.random((n, cols)) < 0.5, last)
    want = run_fragments(jobs, cfg)

    fields = {f"inputs[{r}]": inputs[:, r] for r in range(m)}
    for r in range(m):
        for c in range(cols):
            for s in range(slices):
                fields[f"levels[{r}][{c}][{s}]"] = levels[:, r, c, s]
    fields["negative"] = (jobs.negative.astype(np.int64) << np.arange(cols)).sum(axis=1)
    fields["last"] = last.astype(np.int64)
    beats = block.manifest.codec("i_stream__payload").pack_array(fields)

    run = block.run_stream(beats, len(want))
    got = np.stack([run.results[f"[{c}]"] for c in range(cols)], axis=1)
    np.testing.assert_array_equal(got, want)
    ends = np.cumsum(fragment_cycles(inputs, cfg))[np.flatnonzero(last)]
    np.testing.assert_array_equal(run.result_cycles, ends + 2)

    stalled = block.run_stream(beats, len(want), idle_prob=0.3, ready_prob=0.5, seed=11)
    got = np.stack([stalled.results[f"[{c}]"] for c in range(cols)], axis=1)
    np.testing.assert_array_equal(got, want)
    assert stalled.cycles > run.cycles
