"""Run chipforge's hostile-input cases through the CLI and tally the outcomes.

Usage (from the repository root; about two minutes on two cores)::

    .venv/bin/python tools/hostile_tally.py [--out docs-table.md]

Each case is a command line given a careless or hostile input. Classified automatically:

- **clear**: exit status 2, one line on stderr naming the input (the expected text is in
  it), no traceback; or, for a case that must succeed safely (a link in an output folder),
  status 0 with every file outside the output folder unchanged;
- **unclear**: refused, but with status 1 (internal error), several lines, or a line that
  does not name the input;
- **silently wrong**: status 0 where the input must be refused, or a file outside the output
  folder changed;
- **blow-up**: longer than 30 s, or the process' peak memory grew by more than 1 GiB.

The builders of the bad files are shared with ``tests/test_hostile.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

MODEL = "lenet-digits-forms8"
SIM = ["--samples", "3", "--cycle-samples", "2", "--no-progress"]


def _tree(root: Path, skip: Path | None = None) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if skip is not None and (p == skip or skip in p.parents):
            continue
        if p.is_file() and not p.is_symlink():
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _run(argv: list[str]) -> tuple[int, str, float]:
    from chipforge.cli import main

    err = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as e:      # argparse
            code = e.code if isinstance(e.code, int) else 2
        except BaseException as e:   # noqa: BLE001 - a traceback is what we count
            code, _ = 1, err.write(f"Traceback: {type(e).__name__}: {e}\n")
    return code, err.getvalue(), time.perf_counter() - start


def build_cases(d: Path) -> list[tuple[str, str, list, str | None, Path | None]]:
    """(group, case, argv, expected text or None for 'must succeed safely', out folder)."""
    import onnx
    import test_hostile as t

    from chipforge.importers.onnx_export import to_onnx
    from chipforge.sim.graph import Graph, Node, Op, save_graph
    from chipforge.zoo import load
    from chipforge.zoo.data import digits

    cases: list = []
    add = cases.append
    bad = d / "bad"
    bad.mkdir()
    for name, (path, text) in t._bad_models(bad).items():
        add(("model files", f"import: {name}", ["import", path], text, None))
    edits = {
        "NaN weight": (t._nan, "parameter 'weight' must be finite"),
        "inf bias": (t._inf_bias, "parameter 'bias' must be finite"),
        "string weight": (lambda n: n.params.update(weight=np.full((2, 1, 3, 3), "w")),
                          "must be an array of real numbers"),
        'weight_bits="eight"': (lambda n: n.attrs.update(weight_bits="eight"),
                                "weight_bits must be an integer"),
        "weight_bits=0": (lambda n: n.attrs.update(weight_bits=0),
                          "weight_bits must be an integer"),
        "act_scale=0": (lambda n: n.attrs.update(act_scale=0), "act_scale must be a finite"),
        "act_scale=-1": (lambda n: n.attrs.update(act_scale=-1.0),
                         "act_scale must be a finite"),
        "weight_scale list too short": (lambda n: n.attrs.update(weight_scale=[1.0]),
                                        "weight_scale must be"),
        'act_signed="yes"': (lambda n: n.attrs.update(act_signed="yes"),
                             "act_signed must be true or false"),
    }
    for name, (edit, text) in edits.items():
        path = t._edited_graph(d / f"{name.replace(' ', '_').replace('=', '_')}.npz", edit)
        add(("IR models", f"import: {name}", ["import", path], text, None))
        add(("IR models", f"simulate: {name}", ["simulate", path, *SIM, "--out", d / "r"],
             text, None))
    add(("IR models", "compress forms: NaN weight",
         ["compress", "forms", d / "NaN_weight.npz", "--out", d / "c.npz"], "must be finite",
         None))
    model = to_onnx(load(MODEL))
    entry = model.metadata_props.add()
    entry.key, entry.value = "chipforge.weight_bits", "[1,2,3]"
    onnx.save(model, str(d / "meta.onnx"))
    add(("IR models", "ONNX metadata weight_bits='[1,2,3]'", ["import", d / "meta.onnx"],
         "metadata 'chipforge.weight_bits' must be a JSON object", None))
    save_graph(Graph("wide", (1, 100_000, 100_000), [Node(Op.FLATTEN, "f", ("input",)),
                                                      Node(Op.RELU, "r", ("f",))]),
               d / "wide.npz")
    add(("sizes", "input shape [1, 100000, 100000]",
         ["simulate", d / "wide.npz", *SIM, "--out", d / "r"], "GiB per sample", None))
    t._deflate_bomb(d / "bomb.npz", ((3 << 30) // (8 * 3072), 3, 32, 32))
    add(("sizes", "3 GB deflate bomb, wrong shape, no --samples",
         ["simulate", MODEL, "--data", d / "bomb.npz", "--no-progress", "--out", d / "r"],
         "read from the file's header", None))
    t._deflate_bomb(d / "bomb2.npz", ((3 << 30) // (8 * 256), 1, 16, 16))
    add(("sizes", "3 GB deflate bomb, right shape, no --samples",
         ["simulate", MODEL, "--data", d / "bomb2.npz", "--no-progress", "--out", d / "r"],
         "a decompression bomb", None))
    big = d / "big.npz"
    np.savez(big, x=np.ones((20_000, 1, 16, 16), dtype=np.uint8), y=np.zeros(20_000, int))
    add(("sizes", "40 MiB float64 of uint8 inputs (5 MiB file) over a 32 MiB budget",
         [{"CHIPFORGE_MAX_FILE_MEMORY": str(32 << 20)}, "simulate", MODEL, "--data", big,
          "--no-progress", "--out", d / "r"], "allowed for a file", None))

    x = np.zeros((4, 1, 16, 16))
    data = {"1e300 input": (x.copy(), np.arange(4), "at most 1e+09 in magnitude"),
            "NaN input": (x.copy(), np.arange(4), "NaN or infinity"),
            "label 10": (x, np.array([0, 10, 3, 1]), "class indices below"),
            "label -1": (x, np.array([0, -1, 3, 1]), "labels must be >= 0"),
            "4 inputs, 3 labels": (x, np.arange(3), "4 inputs and 3 labels"),
            "2-D labels": (x, np.zeros((4, 2)), "labels must be a 1-D array"),
            "wrong shape": (np.zeros((4, 3, 8, 8)), np.arange(4), "each input has shape"),
            "complex inputs": (x.astype(complex), np.arange(4), "real numbers"),
            "string labels": (x, np.array(list("abcd")), "real numbers")}
    data["1e300 input"][0][1, 0, 2, 2] = 1e300
    data["NaN input"][0][1, 0, 2, 2] = np.nan
    for name, (xs, ys, text) in data.items():
        path = d / f"data_{len(cases)}.npz"
        np.savez(path, x=xs, y=ys)
        add(("data files", name, ["simulate", MODEL, "--data", path, *SIM, "--out", d / "r"],
             text, None))
    (d / "a_file").write_text("x")
    for name in ("fifo.npz", "fifo.onnx", "fifo.toml", "fifo-data.npz"):
        os.mkfifo(d / name)
    for argv in (["import", d / "fifo.npz"], ["import", d / "fifo.onnx"],
                 ["simulate", MODEL, *SIM, "--data", d / "fifo-data.npz", "--out", d / "r"],
                 ["simulate", MODEL, *SIM, "--accelerator", d / "fifo.toml", "--out",
                  d / "r"]):
        fifo = next(Path(a).name for a in argv if "fifo" in str(a))
        add(("pipes", f"{argv[0]} given a FIFO ({fifo})", argv, "is not a regular file",
             None))
    options = [
        (["--max-memory", "lots"], "--max-memory must be a size"),
        (["--max-memory", "1k"], "--max-memory must be at least 16M"),
        (["--adc-range", "bogus"], "--adc-range must be"),
        (["--adc-range", "fraction:2"], "--adc-range must be"),
        (["--adc-range", "fraction:nan"], "--adc-range must be"),
        (["--layer-errors", "-3"], "--layer-errors must be"),
        (["--adc-calibration", "digits"], "--adc-calibration applies to"),
        (["--samples", "0"], "--samples must be >= 1"),
        (["--seed", "-1"], "--seed must be >= 0"),
        (["--cycle-samples", "0"], "--cycle-samples must be >= 1"),
        (["--set", "nonsense"], "--set takes KEY=VALUE"),
        (["--set", "adc_bits=99"], "adc_bits"),
        (["--accelerator", "nope"], "nope"),
        (["--out", d / "a_file"], "exists and is not a folder"),
        (["--out", d / "a_file" / "sub"], "is a file"),
        (["--out", "/proc/chipforge"], "cannot write in /proc"),
        (["--variation", "-1"], "programming_sigma"),
        (["--set", "rows=100000000"], "rows must be an integer in 1..4096"),
        (["--set", "adc_bits=64"], "adc_bits must be an integer in 1..16"),
        (["--set", "device.read_noise=nan"], "read_noise must be a finite number"),
        (["--set", "input_bits=64"], "input_bits must be an integer"),
        (["--data", d / "missing.npz"], "does not exist"),
        (["--data", d], "must be 'digits' or an .npz file"),
    ]
    import torch

    if not torch.cuda.is_available():
        options.append((["--device", "cuda"], "--device cuda: no CUDA GPU"))
    for extra, text in options:
        add(("simulate options", " ".join(map(str, extra)),
             ["simulate", MODEL, *SIM, "--out", d / "r", *extra], text, None))
    np.savez(d / "ten.npz", x=digits(16).x_test[:10].reshape(10, 1, 16, 16),
             y=digits(16).y_test[:10])
    add(("calibration", "--adc-range calibrated, all 10 inputs scored",
         ["simulate", MODEL, "--data", d / "ten.npz", "--no-progress", "--cycle-samples", "2",
          "--adc-range", "calibrated", "--out", d / "r"], "no inputs beyond the 10 scored",
         None))
    others = [
        (["import", "lenet-digits", "--out", d / "g.txt"], "must end in .npz"),
        (["import", "lenet-digits", "--to-onnx", d / "g.npz"], "must end in .onnx"),
        (["import", "lenet-digits", "--out", d], "is a folder"),
        (["cycles", "lenet-digits", "--images", "0"], "--images must be >= 1"),
        (["cycles", "lenet-digits", "--samples", "3"], "--samples applies to --data"),
        (["cycles", "lenet-digits", "--plot", d / "a_file" / "p.png"], "is a file"),
        (["cycles", "resnet18-shaped", "--data", "digits"], "--data does not apply"),
        (["rtl", "shift-add", "--out", d / "a_file"], "exists and is not a folder"),
        (["rtl", "tile"], "rtl tile needs --layer"),
        (["rtl", "selector"], "rtl selector needs a MODEL"),
        (["sweep", "sweep_helpers:TOY", "--seed", "-1"], "--seed must be >= 0"),
        (["sweep", "sweep_helpers:TOY", "--trials", "0"], "--trials must be >= 1"),
        (["sweep", "sweep_helpers:TOY", "--batch", "0"], "--batch must be >= 1"),
        (["sweep", "sweep_helpers:TOY", "--grid", "nope=1"], "nope"),
        (["sweep", "sweep_helpers:TOY", "--out", d / "a_file"], "exists and is not a folder"),
        (["sweep", "no_such_module:X"], "no_such_module"),
        (["ref", "crossbar", "--batch", "0"], "--batch must be >= 1"),
        (["ref", "crossbar", "--batch", "1000000000"], "--batch 1000000000 needs about"),
        (["cycles", "lenet-digits", "--arch", "bogus"], "unknown architecture 'bogus'"),
        (["rtl", "tile", "--layer", "lenet-digits:nope"], "not 'nope'"),
        (["rtl", "selector", "vit-digits-keep60", "--selector", "99"], "not '99'"),
        (["import", "/dev/zero"], "'/dev/zero' is not an .onnx file"),
        (["heatvit", "--images", "0"], "--images must be >= 1"),
        (["zoo", "train", "mlp-digits", "--out", "/proc/m.npz"], "cannot write in /proc"),
    ]
    for argv, text in others:
        add(("other commands", " ".join(map(str, argv)).replace(str(d), "DIR"), argv, text,
             None))

    # Links in output folders: the command succeeds, the linked files keep their bytes.
    outside = d / "outside"
    outside.mkdir()

    def linked(name: str, folder: Path, names: list[str]) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        for n in names:
            (outside / f"{name}-{n}").write_text("the user's own file\n")
            (folder / n).symlink_to(outside / f"{name}-{n}")
        return folder

    out = linked("sim", d / "sim", ["report.json", "accuracy.png", "layers.png"])
    add(("links", "simulate --out DIR, DIR/report.json etc. linked",
         ["simulate", MODEL, *SIM, "--out", out], None, out))
    out = linked("rtl", d / "rtl" / "shift-add", ["shift_add.v", "manifest.json"]).parent
    add(("links", "rtl shift-add, DIR/shift-add/shift_add.v linked",
         ["rtl", "shift-add", "--out", out], None, out))
    out = linked("imp", d / "imp", ["m.npz", "m.onnx"])
    add(("links", "import --out/--to-onnx linked",
         ["import", "lenet-digits", "--out", out / "m.npz", "--to-onnx", out / "m.onnx"],
         None, out))
    out = linked("cyc", d / "cyc", ["p.png"])
    add(("links", "cycles --plot linked",
         ["cycles", "lenet-digits", "--images", "2", "--plot", out / "p.png"], None, out))
    (d / "rtl2").mkdir()
    (d / "rtl2" / "shift-add").symlink_to(outside, target_is_directory=True)
    add(("links", "rtl shift-add, DIR/shift-add a linked folder",
         ["rtl", "shift-add", "--out", d / "rtl2"], "symbolic link", None))
    disk = d / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], check=True)
    (disk / "report").mkdir()
    (disk / "report" / "report.json").write_text('{"schema": 3}\n')
    t._fill(disk)
    add(("full disk", "simulate --out on a full 64 KiB tmpfs, a report already there",
         ["simulate", MODEL, *SIM, "--out", disk / "report"], "No space left on device",
         None))
    sweep = d / "sw"
    add(("links", "sweep (fresh), then results.csv linked and --resume",
         ["sweep", "sweep_helpers:TOY", "--trials", "1", "--workers", "1", "--no-progress",
          "--no-plot", "--out", sweep], None, sweep))
    return cases


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="also write the markdown table here")
    args = parser.parse_args()
    rows, totals = [], {"clear": 0, "unclear": 0, "silently wrong": 0, "blow-up": 0}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        d = Path(tmp)
        stack.callback(lambda: subprocess.run(["umount", str(d / "disk")],
                                              capture_output=True))
        cases = build_cases(d)
        cases.append(None)  # the sweep resume through a linked results file, after its setup
        for case in cases:
            if case is None:
                sweep = d / "sw"
                (d / "outside" / "results.csv").write_bytes((sweep / "results.csv")
                                                            .read_bytes())
                (sweep / "results.csv").unlink()
                (sweep / "results.csv").symlink_to(d / "outside" / "results.csv")
                case = ("links", "sweep --resume, results.csv linked",
                        ["sweep", "sweep_helpers:TOY", "--trials", "1", "--workers", "1",
                         "--no-progress", "--no-plot", "--out", sweep, "--resume"],
                        "is a symbolic link", None)
            group, name, argv, text, out = case
            before = _tree(d, skip=out)
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            env = argv[0] if isinstance(argv[0], dict) else {}
            os.environ.update(env)
            try:
                code, err, seconds = _run(argv[1:] if env else argv)
            finally:
                for key in env:
                    os.environ.pop(key)
            grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss) * 1024
            lines = [x for x in err.splitlines() if x.strip()]
            outside_changed = _tree(d, skip=out) != before
            if seconds > 30 or grown > 1 << 30:
                verdict = "blow-up"
            elif text is None:   # must succeed without touching anything outside
                verdict = "silently wrong" if outside_changed else \
                    "clear" if code == 0 else "unclear"
            elif code == 0 or outside_changed:
                verdict = "silently wrong"
            elif code == 2 and len(lines) == 1 and text in lines[0] \
                    and "Traceback" not in err:
                verdict = "clear"
            else:
                verdict = "unclear"
            totals[verdict] += 1
            rows.append((group, name, code, f"{seconds:.1f}", verdict,
                         (lines[0] if lines else "")[:160].replace(str(d), "DIR")))
            print(f"{verdict:>14}  rc={code}  {seconds:5.1f}s  {group}: {name}", flush=True)
            if verdict != "clear":
                print("      " + err.strip().replace("\n", "\n      "))
    print(json.dumps(totals))
    if args.out:
        table = ["| group | case | status | seconds | outcome |", "|---|---|---|---|---|"]
        table += [f"| {g} | {n} | {c} | {s} | {v} |" for g, n, c, s, v, _ in rows]
        table.append("")
        table.append(f"Total {len(rows)}: " + ", ".join(f"{k} {v}" for k, v in totals.items()))
        args.out.write_text("\n".join(table) + "\n")
    return 0 if totals["silently wrong"] == totals["blow-up"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
