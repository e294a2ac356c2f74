"""Synthesize every block in rtl/ for iCE40 HX8K and Xilinx 7-series; place-and-route the
iCE40 netlist with nextpnr-ice40 for Fmax. Prints one markdown row per block and writes
build/synth/results.json. Usage: python tools/synth_table.py [BLOCK ...]"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "build" / "synth"


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


def run(block: str) -> dict:
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
        res = subprocess.run(["nextpnr-ice40", "--hx8k", "--package", "ct256", "--json",
                              str(work / "wrap.json"), "--freq", "12", "--seed", "1",
                              "--timing-allow-fail"], capture_output=True, text=True,
                             check=False)
        (work / "nextpnr.log").write_text(res.stderr)   # the critical path report
        found = re.findall(r"Max frequency for clock\s+'[^']*':\s+([\d.]+) MHz", res.stderr)
        row["fmax_mhz"] = float(found[-1]) if found else None
        if res.returncode:
            row["pnr_error"] = res.stderr.strip().splitlines()[-1]
    row["seconds"] = round(time.time() - t, 1)
    return row


def main(blocks: list[str]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / os.environ.get("SYNTH_RESULTS", "results.json")
    results = json.loads(path.read_text()) if path.exists() else {}
    for block in blocks or sorted(p.name for p in (ROOT / "rtl").iterdir()):
        name = Path(block).name
        try:
            results[name] = run(block)
        except Exception as err:  # report and go on with the other blocks
            results[name] = {"block": name, "error": str(err)[-300:]}
        path.write_text(json.dumps(results, indent=2))
        print(json.dumps(results[name]), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
