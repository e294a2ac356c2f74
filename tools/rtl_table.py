"""Write the synthesis table of docs/rtl.md from build/synth/results*.json
(tools/synth_table.py). Usage: python tools/rtl_table.py > table.md"""

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Cycles per result: the blocks' docstrings (verified on the Verilog by their testbenches);
# the tiles' from the cycle model for lenet-digits conv1 of one image (256 patches x 6
# outputs), which the tile testbench measures equal on the Verilog.
CYCLES = {
    "shift-add": "16 per dot product (16-bit signed inputs, 1 beat per cycle; latency 2)",
    "forms-fragment": "EIC + 1 per fragment job (EIC: the job's effective input cycles, <= 16)",
    "token-linear": "1 per output (8 per token), first after 2",
    "poly-gelu": "1 per value (latency 3)",
    "poly-exp": "1 per value (latency 3)",
    "plan-sigmoid": "1 per value (latency 1)",
    "token-packager": "1 per token (+1 per image when its last token is kept)",
    "sc-accumulator": "65 per vector (64-bit streams + 1)",
    "tile-isaac": "9.68 per result (58.1 per 6-output vector; conv1, 1 image: 14,873 cycles)",
    "tile-forms8": "9.24 per result (55.4 per vector, mean 6.4 planes; conv1, 1 image: "
                   "14,191 cycles)",
    "tile-forms8-small": "(K=16, N=2: 2 fragments x 2 columns; synthesis only, no testbench)",
    "tile-isaac-small": "(K=16, N=2: 1 crossbar x 2 columns; synthesis only, no testbench)",
}


def _partial(block: str) -> dict | None:
    """The counts of a block whose run has not finished, from the stat files written so far
    (no Fmax yet)."""
    import re
    folder = ROOT / "build" / "synth" / block
    if not (folder / "ice40.stat").exists():
        return None

    def cells(path):
        out = {}
        if path.exists():
            for name, n in re.findall(r"^\s+(\$?[A-Za-z_][\w$]*)\s+(\d+)\s*$",
                                      path.read_text(), re.M):
                out[name] = out.get(name, 0) + int(n)
        return out

    ice, xc = cells(folder / "ice40.stat"), cells(folder / "xc7.stat")
    row = {"ice40_luts": ice.get("SB_LUT4", 0),
           "ice40_ffs": sum(v for k, v in ice.items() if k.startswith("SB_DFF")),
           "ice40_brams": ice.get("SB_RAM40_4K", 0)}
    if xc:
        row.update(xc7_luts=sum(v for k, v in xc.items() if re.fullmatch(r"LUT\d", k)),
                   xc7_ffs=sum(v for k, v in xc.items() if re.fullmatch(r"FD[A-Z]*", k)),
                   xc7_dsps=xc.get("DSP48E1", 0),
                   xc7_brams=sum(v for k, v in xc.items() if k.startswith("RAMB")))
    row["fits_hx8k"] = row["ice40_luts"] <= 7680
    row["fmax_mhz"] = None
    row["pending"] = True
    return row


def fmax_cell(row: dict) -> str:
    """The Fmax column: the median over the placer seeds and their range, e.g.
    ``66.4 MHz (64.9-68.0, 3 seeds)``; a row of one seed (an older results file) says so."""
    seeds = row.get("fmax_seeds") or {}
    if len(seeds) < 2 or row.get("fmax_min_mhz") is None:
        return f"{row['fmax_mhz']:.1f} MHz (1 seed)"
    return (f"{row['fmax_mhz']:.1f} MHz ({row['fmax_min_mhz']:.1f}-{row['fmax_max_mhz']:.1f}, "
            f"{len(seeds)} seeds)")


def main() -> None:
    results = {}
    # results-small.json (a second, parallel run) wins over results.json
    for path in sorted((ROOT / "build" / "synth").glob("results*.json"), reverse=True):
        for block, row in json.loads(path.read_text()).items():
            if "error" not in row and ("fmax_mhz" in row or block not in results):
                results[block] = row
    print("| block / tile | iCE40 LUT4 | iCE40 FF | iCE40 BRAM (SB_RAM40_4K) | iCE40 DSP "
          "(SB_MAC16) | 7-series LUT | 7-series FF | DSP48E1 | 7-series BRAM | "
          "Fmax iCE40 HX8K | cycles per result |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for block in CYCLES:
        r = results.get(block) or _partial(block)
        if r is None:
            print(f"| {block} | not finished | | | | | | | | | {CYCLES[block]} |")
            continue
        if "ice40_luts" not in r:
            print(f"| {block} | failed: {r.get('error', '')[:60]} | | | | | | | | | "
                  f"{CYCLES[block]} |")
            continue
        if not r["fits_hx8k"]:
            fmax = f"does not fit ({r['ice40_luts']} > 7680 LUTs)"
        elif r.get("fmax_mhz"):
            fmax = fmax_cell(r)
        elif r.get("pending"):
            fmax = "fits; place-and-route not finished"
        else:
            fmax = "place-and-route failed"
        print(f"| {block} | {r['ice40_luts']} | {r['ice40_ffs']} | {r['ice40_brams']} | "
              f"{r.get('ice40_dsps', 0)} | {r.get('xc7_luts', '')} | {r.get('xc7_ffs', '')} | "
              f"{r.get('xc7_dsps', '')} | "
              f"{r.get('xc7_brams', '')} | {fmax} | {CYCLES[block]} |")


if __name__ == "__main__":
    main()
