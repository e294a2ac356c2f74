"""Synthesize every block in rtl/ for iCE40 HX8K and Xilinx 7-series; place-and-route the
iCE40 netlist with nextpnr-ice40 for Fmax. Prints one JSON row per block and writes
build/synth/results.json. Usage: python tools/synth_table.py [--seeds 1,2,3] [BLOCK ...]

Fmax is the median over the placer seeds (at least three: one seed's placement moves the
estimate by a few MHz), with the lowest and highest beside it and every seed's value in
``fmax_seeds``."""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "build" / "synth"
DEFAULT_SEEDS = (1, 2, 3)
MIN_SEEDS = 3


def _yosys(script: str) -> str:
    res = subprocess.run(["yosys", "-q", "-p", script], capture_output=True, text=True,
                         check=False)
    if res.returncode:
        raise RuntimeError(res.stderr[-2000:])
    return res.stdout


def _cells(stat: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for name, count in re.findall(r"^\s+(\$?[A-Za-z_][\w$]*)\s+(\d+)\s*$", stat, re.M):
        out[name] = out.get(name, 0) + int(count)
    return out


def wrapper(manifest: dict, top: str) -> str:
    """A 3-pin harness for place-and-route: every input of the block comes from one long
    shift register fed by pin ``sdi``, every output is registered and XOR-reduced onto pin
    ``sdo``. The block's own ports would need more pins than the HX8K has; the harness
    keeps all of its logic alive and times its register-to-register paths."""
    ins = [(n, p["width"]) for n, p in sorted(manifest["ports"].items())
           if p["direction"] == "input"] + [("rst", 1)]
    outs = [(n, p["width"]) for n, p in sorted(manifest["ports"].items())
            if p["direction"] == "output"]
    w_in, w_out = sum(w for _, w in ins), sum(w for _, w in outs)
    conn, lo = [], 0
    for name, width in ins:
        conn.append(f".{name}(sr[{lo + width - 1}:{lo}])")
        lo += width
    lo = 0
    for name, width in outs:
        conn.append(f".{name}(outs[{lo + width - 1}:{lo}])")
        lo += width
    return (f"module pnr_wrap(input clk, input sdi, output sdo);\n"
            f"  reg [{w_in - 1}:0] sr;\n"
            f"  always @(posedge clk) sr <= {{sr[{max(w_in - 2, 0)}:0], sdi}};\n"
            f"  wire [{w_out - 1}:0] outs; reg [{w_out - 1}:0] oreg;\n"
            f"  always @(posedge clk) oreg <= outs;\n  assign sdo = ^oreg;\n"
            f"  {top} dut(.clk(clk), {', '.join(conn)});\nendmodule\n")


def place_and_route(netlist: Path, work: Path, seed: int) -> dict:
    """One nextpnr-ice40 run (HX8K, ct256) of ``netlist`` with placer seed ``seed``: its
    Fmax estimate in MHz (None if it printed none), the command, and the last error line.
    The log (critical path report) goes to ``work/nextpnr-seedN.log``."""
    command = ["nextpnr-ice40", "--hx8k", "--package", "ct256", "--json", str(netlist),
               "--freq", "12", "--seed", str(int(seed)), "--timing-allow-fail"]
    res = subprocess.run(command, capture_output=True, text=True, check=False)
    (work / f"nextpnr-seed{int(seed)}.log").write_text(res.stderr)
    found = re.findall(r"Max frequency for clock\s+'[^']*':\s+([\d.]+) MHz", res.stderr)
    out = {"seed": int(seed), "fmax_mhz": float(found[-1]) if found else None,
           "command": command}
    if res.returncode:
        out["error"] = (res.stderr.strip().splitlines() or ["(no output)"])[-1]
    return out


def fmax_over_seeds(netlist: Path, work: Path, seeds: tuple[int, ...]) -> dict:
    """Place and route once per seed; ``fmax_mhz`` is the median of the seeds' estimates
    (None unless every seed gave one), ``fmax_min_mhz`` / ``fmax_max_mhz`` the spread."""
    runs = [place_and_route(netlist, work, seed) for seed in seeds]
    values = [r["fmax_mhz"] for r in runs]
    row: dict = {"fmax_seeds": {str(r["seed"]): r["fmax_mhz"] for r in runs},
                 "pnr_commands": [" ".join(r["command"]) for r in runs]}
    if all(v is not None for v in values):
        row.update(fmax_mhz=statistics.median(values), fmax_min_mhz=min(values),
                   fmax_max_mhz=max(values))
    else:
        row["fmax_mhz"] = None
    errors = [f"seed {r['seed']}: {r['error']}" for r in runs if "error" in r]
    if errors:
        row["pnr_error"] = "; ".join(errors)
    return row


def parse_seeds(text: str) -> tuple[int, ...]:
    """``"1,2,3"`` -> (1, 2, 3): at least MIN_SEEDS distinct non-negative integers."""
    try:
        seeds = tuple(int(s) for s in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds must be comma-separated integers, not "
                                         f"{text!r}") from None
    if len(set(seeds)) != len(seeds) or len(seeds) < MIN_SEEDS or min(seeds) < 0:
        raise argparse.ArgumentTypeError(f"--seeds needs at least {MIN_SEEDS} distinct "
                                         f"non-negative seeds (Fmax is their median), not "
                                         f"{text!r}")
    return seeds


def run(block: str, seeds: tuple[int, ...] = DEFAULT_SEEDS) -> dict:
    folder = Path(block) if Path(block).is_dir() else ROOT / "rtl" / block
    block = folder.name
    manifest = json.loads((folder / "manifest.json").read_text())
    top, verilog = manifest["module"], folder / manifest["verilog"]
    work = OUT / block
    work.mkdir(parents=True, exist_ok=True)
    row: dict = {"block": block}
    t = time.time()
    _yosys(f"read_verilog {verilog}; synth_ice40 -top {top} -json {work}/ice40.json; "
           f"tee -q -o {work}/ice40.stat stat")
    ice = _cells((work / "ice40.stat").read_text())
    row["ice40_luts"] = ice.get("SB_LUT4", 0)
    row["ice40_ffs"] = sum(v for k, v in ice.items() if k.startswith("SB_DFF"))
    row["ice40_brams"] = ice.get("SB_RAM40_4K", 0)
    row["ice40_dsps"] = ice.get("SB_MAC16", 0)     # the HX8K has none: always 0 there
    _yosys(f"read_verilog {verilog}; synth_xilinx -family xc7 -top {top}; "
           f"tee -q -o {work}/xc7.stat stat")
    xc = _cells((work / "xc7.stat").read_text())
    row["xc7_luts"] = sum(v for k, v in xc.items() if re.fullmatch(r"LUT\d", k))
    row["xc7_ffs"] = sum(v for k, v in xc.items() if re.fullmatch(r"FD[A-Z]*", k))
    row["xc7_dsps"] = xc.get("DSP48E1", 0)
    row["xc7_brams"] = sum(v for k, v in xc.items() if k.startswith("RAMB"))
    row["fits_hx8k"] = row["ice40_luts"] <= 7680 and row["ice40_brams"] <= 32
    if row["fits_hx8k"]:
        (work / "wrap.v").write_text(wrapper(manifest, top))
        _yosys(f"read_verilog {verilog} {work}/wrap.v; synth_ice40 -top pnr_wrap "
               f"-json {work}/wrap.json")
        row.update(fmax_over_seeds(work / "wrap.json", work, seeds))
    row["seconds"] = round(time.time() - t, 1)
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=parse_seeds, default=DEFAULT_SEEDS,
                        help="placer seeds, comma-separated (at least 3; default 1,2,3)")
    parser.add_argument("blocks", nargs="*", help="rtl/ block names or block folders")
    args = parser.parse_args(argv)
    blocks, seeds = args.blocks, args.seeds
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / os.environ.get("SYNTH_RESULTS", "results.json")
    results = json.loads(path.read_text()) if path.exists() else {}
    for block in blocks or sorted(p.name for p in (ROOT / "rtl").iterdir()):
        name = Path(block).name
        try:
            results[name] = run(block, seeds)
        except Exception as err:  # report and go on with the other blocks
            results[name] = {"block": name, "error": str(err)[-300:]}
        path.write_text(json.dumps(results, indent=2))
        print(json.dumps(results[name]), flush=True)


if __name__ == "__main__":
    main()
