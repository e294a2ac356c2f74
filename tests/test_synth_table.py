"""tools/synth_table.py: Fmax is the median of at least three placer seeds, with the spread,
and tools/rtl_table.py prints both."""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


synth_table = _tool("synth_table")
rtl_table = _tool("rtl_table")


def _seed_of(command: list[str]) -> int:
    return int(command[command.index("--seed") + 1])


def test_fmax_is_the_median_of_the_seeds_each_run_with_its_own_seed(tmp_path, monkeypatch):
    estimates = {1: 50.0, 2: 70.0, 3: 40.0}        # median 50, spread 40-70
    commands = []

    def fake_nextpnr(command, **kwargs):
        commands.append(command)
        seed = _seed_of(command)
        log = (f"Info: Max frequency for clock 'clk': {estimates[seed] + 9:.2f} MHz "
               f"(PASS at 12.00 MHz)\nInfo: Max frequency for clock 'clk': "
               f"{estimates[seed]:.2f} MHz (PASS at 12.00 MHz)\n")   # the last report counts
        return subprocess.CompletedProcess(command, 0, "", log)

    monkeypatch.setattr(synth_table.subprocess, "run", fake_nextpnr)
    row = synth_table.fmax_over_seeds(tmp_path / "wrap.json", tmp_path, (1, 2, 3))
    assert [_seed_of(c) for c in commands] == [1, 2, 3]
    assert row["fmax_mhz"] == 50.0
    assert (row["fmax_min_mhz"], row["fmax_max_mhz"]) == (40.0, 70.0)
    assert row["fmax_seeds"] == {"1": 50.0, "2": 70.0, "3": 40.0}
    assert [_seed_of(c.split()) for c in row["pnr_commands"]] == [1, 2, 3]
    for seed in (1, 2, 3):
        assert f"{estimates[seed]:.2f} MHz" in (tmp_path / f"nextpnr-seed{seed}.log").read_text()
    assert rtl_table.fmax_cell(row) == "50.0 MHz (40.0-70.0, 3 seeds)"


def test_a_seed_without_an_estimate_gives_no_median(tmp_path, monkeypatch):
    def fake_nextpnr(command, **kwargs):
        if _seed_of(command) == 2:
            return subprocess.CompletedProcess(command, 1, "", "ERROR: failed to place\n")
        return subprocess.CompletedProcess(
            command, 0, "", "Info: Max frequency for clock 'clk': 60.00 MHz (PASS)\n")

    monkeypatch.setattr(synth_table.subprocess, "run", fake_nextpnr)
    row = synth_table.fmax_over_seeds(tmp_path / "wrap.json", tmp_path, (1, 2, 3))
    assert row["fmax_mhz"] is None
    assert row["pnr_error"] == "seed 2: ERROR: failed to place"


@pytest.mark.parametrize("text", ["1,2", "1,1,2", "1,x,3", "-1,2,3"])
def test_fewer_than_three_distinct_seeds_are_refused(text):
    with pytest.raises(argparse.ArgumentTypeError, match="--seeds"):
        synth_table.parse_seeds(text)
    assert synth_table.parse_seeds("4,2,9,1") == (4, 2, 9, 1)


def test_an_older_single_seed_row_is_labelled_as_one_seed():
    assert rtl_table.fmax_cell({"fmax_mhz": 67.21}) == "67.2 MHz (1 seed)"


def test_a_tiny_design_through_yosys_and_three_real_nextpnr_seeds(tmp_path, monkeypatch):
    """The real tools on an 8-bit accumulator: three placements, each seed's estimate from
    its own log, the reported Fmax their median."""
    block = tmp_path / "acc8"
    block.mkdir()
    (block / "acc8.v").write_text(
        "module acc8(input clk, input rst, input [7:0] d, output reg [15:0] q);\n"
        "  always @(posedge clk) q <= rst ? 16'd0 : q + d * q[7:0];\nendmodule\n")
    (block / "manifest.json").write_text(json.dumps({
        "module": "acc8", "verilog": "acc8.v",
        "ports": {"d": {"direction": "input", "width": 8},
                  "q": {"direction": "output", "width": 16}}}))
    monkeypatch.setattr(synth_table, "OUT", tmp_path / "synth")
    row = synth_table.run(str(block), (1, 2, 3))
    assert row["fits_hx8k"] and "pnr_error" not in row
    values = [row["fmax_seeds"][s] for s in ("1", "2", "3")]
    assert all(v > 0 for v in values)
    assert row["fmax_mhz"] == sorted(values)[1]
    assert (row["fmax_min_mhz"], row["fmax_max_mhz"]) == (min(values), max(values))
    for seed, value in zip((1, 2, 3), values, strict=True):
        log = (tmp_path / "synth" / "acc8" / f"nextpnr-seed{seed}.log").read_text()
        assert f"{value:.2f} MHz" in log
