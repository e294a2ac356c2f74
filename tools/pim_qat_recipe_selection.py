"""Choose the ``compress pim-qat`` recipe on the validation split, then test it once.

The user CNN of the slow claim test (``tests/compress_helpers.py``:
``train_and_export(user_cnn(size=16, width=8), 16, 15, ...)``, trained once, 15 epochs on
the digits 16x16 training split) goes through ``chipforge.compress("pim-qat", ...,
b_pim=7)`` (cap-ram) with each candidate recipe of :data:`RECIPES` at each compress seed.
Each run is scored on the **validation split that compress carves out** of the training
file (``chipforge.compress.split_data`` with the run's seed: 20 % of the training split,
stratified), measured as the slow test measures the test split: the PIM-QAT model through
``run_graph(..., matmul=PimMatmul(cfg, seed=s))`` averaged over ADC seeds 0, 1, 2, against
the naive 4-bit digital model (``quantize_graph``, ``QuantizeConfig(weight_bits=4,
act_bits=4)``, calibrated on the first 512 training images as the test does). The score is
the validation images lost (digital minus PIM-QAT, in images, mean over the ADC seeds) and
the wall time of the compress run. The digits test split is not read in this phase.

The rule, fixed before any run (:func:`choose`): the recipe with the most seeds within the
claim's allowance on validation (images lost <= 2 % of the validation images, the claim's
2 points), then the fewest images lost on average, then the cheapest (mean compress
seconds); a tie goes to the recipe listed first (the default). Seconds are compared at
10 % resolution so that load noise does not decide between equal-cost recipes.

Then ``--test`` evaluates the chosen recipe's compressed models (the grid's graphs at
``--test-seeds``, compressing those not in the grid first), once, on the digits test split
as the slow test does; it refuses to run a second time.

  .venv/bin/python tools/pim_qat_recipe_selection.py --out pim-qat-selection --workers 1
  .venv/bin/python tools/pim_qat_recipe_selection.py --out pim-qat-selection --test

Each run writes ``runs/<recipe>-s<seed>.json`` and its graph as it finishes, so an
interrupted grid resumes where it stopped. About 25 s per run (load average 2-4 on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
B_PIM = 7
ADC_SEEDS = (0, 1, 2)
VAL_FRACTION = 0.2          # compress's default
CLAIM_POINTS = 2.0
COST_RESOLUTION = 0.10
SELECTION_BASE = {"lr": 0.02}
"""The defaults when the selection ran (2026-12-07: qat_epochs 6, epochs 20, lr 0.02,
bn_batches 8, calibrate_ranges True) that differ from today's: lr was 0.02; ``lr-0.01`` won
and is the default now (docs/compress.md)."""
RECIPES: dict[str, dict] = {
    # name: the options that differ from the defaults of the selection; "default" first
    "default": SELECTION_BASE,
    "lr-0.01": {"lr": 0.01},
    "lr-0.05": SELECTION_BASE | {"lr": 0.05},
    "qat-12": SELECTION_BASE | {"qat_epochs": 12},
    "bn-16": SELECTION_BASE | {"bn_batches": 16},
    "epochs-40": SELECTION_BASE | {"epochs": 40},
}


def _write_json(path: Path, data) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def user_cnn(out: Path) -> dict[str, Path]:
    """The slow test's user CNN, trained and exported once into ``out/cnn``."""
    folder = out / "cnn"
    paths = {"model": folder / "cnn.onnx", "train": folder / "train16.npz",
             "test": folder / "test16.npz"}
    if all(p.exists() for p in paths.values()):
        return paths
    sys.path.insert(0, str(ROOT / "tests"))
    import compress_helpers as helpers

    return helpers.train_and_export(helpers.user_cnn(size=16, width=8), 16, 15, folder, "cnn")


def _digital_model(cnn: dict[str, Path]):
    """The naive 4-bit digital model, calibrated on 512 training images as the test does."""
    import numpy as np

    from chipforge.importers.onnx import load_onnx
    from chipforge.mappings.quantize import QuantizeConfig, quantize_graph

    with np.load(cnn["train"]) as f:
        calib = f["x"][:512].astype(np.float64)
    return quantize_graph(load_onnx(cnn["model"]), calib,
                          QuantizeConfig(weight_bits=4, act_bits=4))


def _correct(graph, x, y, pim: bool) -> float:
    """Images right: digitally, or on cap-ram at B_PIM as the mean over ADC_SEEDS."""
    import numpy as np

    from chipforge.compress_methods import _pim_config
    from chipforge.compress_options import PimQatOptions
    from chipforge.sim.executor import run_graph
    from chipforge.sim.pim import PimMatmul

    if not pim:
        return float((run_graph(graph, x).argmax(1) == y).sum())
    cfg = _pim_config(PimQatOptions(b_pim=B_PIM))
    return float(np.mean([(run_graph(graph, x, matmul=PimMatmul(cfg, seed=s)).argmax(1)
                           == y).sum() for s in ADC_SEEDS]))


def validation_split(cnn: dict[str, Path], seed: int):
    import numpy as np

    from chipforge.compress import split_data

    with np.load(cnn["train"]) as f:
        return split_data(f["x"], f["y"], 10, val_fraction=VAL_FRACTION, seed=seed)


def one_run(out: Path, recipe: str, seed: int) -> dict:
    """Compress the user CNN with one recipe at one seed; score it on the validation split."""
    import time

    import numpy as np
    import torch

    import chipforge
    from chipforge.sim.graph import save_graph

    torch.set_num_threads(1)
    record = out / "runs" / f"{recipe}-s{seed}.json"
    if record.exists():
        return json.loads(record.read_text())
    cnn = user_cnn(out)
    start = time.perf_counter()
    graph = chipforge.compress("pim-qat", cnn["model"], cnn["train"], progress=False,
                               seed=seed, val_fraction=VAL_FRACTION, b_pim=B_PIM,
                               **RECIPES[recipe])
    seconds = time.perf_counter() - start
    save_graph(graph, out / "graphs" / f"{recipe}-s{seed}.npz")
    split = validation_split(cnn, seed)
    x, y = split.x_val.astype(np.float64), split.y_val
    n = len(y)
    row = {"recipe": recipe, "seed": seed, "val_images": n,
           "val_digital": _correct(_digital_model(cnn), x, y, pim=False),
           "val_pim_qat": _correct(graph, x, y, pim=True), "compress_seconds": seconds,
           "load_average": os.getloadavg()[0]}
    row["val_lost"] = row["val_digital"] - row["val_pim_qat"]
    row["within_claim"] = bool(row["val_lost"] <= CLAIM_POINTS / 100 * n)
    _write_json(record, row)
    return row


def choose(rows: list[dict], seeds: list[int],
           recipes: dict[str, dict] = RECIPES) -> tuple[str, list[dict]]:
    """The rule fixed in advance: most seeds within the allowance, then fewest images lost
    on average, then cheapest (mean compress seconds, compared at COST_RESOLUTION); ties to
    the recipe listed first in ``recipes``. Only the runs at the selection ``seeds`` count,
    and every recipe in the table must have all of them."""
    import math

    rows = [r for r in rows if r["seed"] in seeds]
    table = []
    for order, recipe in enumerate(recipes):
        mine = [r for r in rows if r["recipe"] == recipe]
        if not mine:
            continue
        if len(mine) != len(seeds):
            raise SystemExit(f"recipe {recipe!r} has {len(mine)} of the {len(seeds)} runs at "
                             f"seeds {seeds}: finish the grid first")
        seconds = sum(r["compress_seconds"] for r in mine) / len(mine)
        table.append({"recipe": recipe, "runs": len(mine),
                      "within": sum(r["within_claim"] for r in mine),
                      "mean_lost": sum(r["val_lost"] for r in mine) / len(mine),
                      "mean_seconds": seconds,
                      "cost_rank": math.floor(math.log(max(seconds, 1e-9))
                                              / math.log(1 + COST_RESOLUTION)),
                      "order": order})
    if not table:
        raise SystemExit(f"no runs at seeds {seeds}: run the grid first")
    best = min(table, key=lambda t: (-t["within"], round(t["mean_lost"], 6),
                                     t["cost_rank"], t["order"]))
    return best["recipe"], table


def validation_table(rows: list[dict], seeds: list[int]) -> str:
    chosen, table = choose(rows, seeds)
    cells = {(r["recipe"], r["seed"]): r for r in rows}
    n = rows[0]["val_images"]
    head = ["recipe", "options"] + [f"lost s{s}" for s in seeds] + [
        f"within {CLAIM_POINTS:g} % ({CLAIM_POINTS / 100 * n:.1f} images)", "mean lost",
        "PIM-QAT val %", "compress s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t in table:
        mine = [cells[(t["recipe"], s)] for s in seeds]
        vals = [f"{r['val_lost']:+.1f}" for r in mine]
        acc = sum(r["val_pim_qat"] / r["val_images"] for r in mine) / len(mine)
        name = f"**{t['recipe']}** (chosen)" if t["recipe"] == chosen else t["recipe"]
        opts = ", ".join(f"{k}={v}" for k, v in RECIPES[t["recipe"]].items()) or "-"
        lines.append("| " + " | ".join([name, opts, *vals, f"{t['within']} of {t['runs']}",
                                        f"{t['mean_lost']:.2f}", f"{100 * acc:.2f}",
                                        f"{t['mean_seconds']:.0f}"]) + " |")
    return "\n".join(lines)


def run_grid(out: Path, seeds: list[int], workers: int, recipes: list[str]) -> None:
    user_cnn(out)                            # train the CNN once, before the pool
    jobs = [(r, s) for s in seeds for r in recipes]
    # spawn, not fork: the parent has run torch (OpenMP) to train the CNN, and a forked
    # worker's first torch call can then hang
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(one_run, out, *job) for job in jobs]
        for f in futures:
            r = f.result()
            print(f"{r['recipe']:10s} seed {r['seed']}: lost {r['val_lost']:+.1f} of "
                  f"{r['val_images']} validation images (digital {r['val_digital']:.0f}, "
                  f"PIM-QAT {r['val_pim_qat']:.1f}), {r['compress_seconds']:.0f} s, load "
                  f"{r['load_average']:.2f}", flush=True)


def load_rows(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*.json"))]


def test_once(out: Path, seeds: list[int], test_seeds: list[int]) -> None:
    """The chosen recipe's compressed models on the digits test split, once."""
    import numpy as np

    from chipforge.sim.graph import load_graph

    target = out / "test.json"
    if target.exists():
        raise SystemExit(f"{target} exists: the test split was already read once for this "
                         "choice; delete it only to start a new, documented selection")
    chosen, _ = choose(load_rows(out), seeds)
    for s in test_seeds:
        if not (out / "graphs" / f"{chosen}-s{s}.npz").exists():
            one_run(out, chosen, s)
    cnn = user_cnn(out)
    with np.load(cnn["test"]) as f:
        x, y = f["x"].astype(np.float64), f["y"]
    n = len(y)
    digital = _correct(_digital_model(cnn), x, y, pim=False) / n
    results = []
    for s in test_seeds:
        pim_qat = _correct(load_graph(out / "graphs" / f"{chosen}-s{s}.npz"), x, y,
                           pim=True) / n
        r = {"recipe": chosen, "seed": s, "test_images": n, "test_digital": digital,
             "test_pim_qat": pim_qat, "points_behind": 100 * (digital - pim_qat)}
        r["meets_claim"] = bool(pim_qat >= digital - CLAIM_POINTS / 100)
        results.append(r)
        print(f"TEST {chosen} seed {s}: digital {100 * digital:.2f} %, PIM-QAT b_PIM {B_PIM} "
              f"{100 * pim_qat:.2f} % ({r['points_behind']:+.2f} points behind), claim "
              f"{'met' if r['meets_claim'] else 'MISSED'}", flush=True)
    _write_json(target, {"chosen": chosen, "results": results})


def write_choice(out: Path, seeds: list[int], chosen: str, table: str) -> None:
    """Record and print the choice: ``choice.json`` and ``validation.md``, atomically."""
    _write_json(out / "choice.json", {"seeds": seeds, "chosen": chosen})
    tmp = out / "validation.md.tmp"
    tmp.write_text(table + f"\n\nchosen: {chosen}\n")
    os.replace(tmp, out / "validation.md")
    print(table)
    print(f"chosen: {chosen}")


def parse_args(argv, *, description: str, recipes: dict[str, dict], out: str, seeds: str,
               test_seeds: str | None):
    """The command line every recipe-selection tool shares: (args, seeds, recipe names,
    test seeds), the output folders made; a bad ``--recipes``/``--workers`` exits in a line."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--out", type=Path, default=Path(out))
    p.add_argument("--seeds", default=seeds, help="compress seeds of the selection grid")
    p.add_argument("--test-seeds", default=test_seeds,
                   help="compress seeds of the single test evaluation (default: "
                        f"{test_seeds or '--seeds'})")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--recipes", default=",".join(recipes))
    p.add_argument("--test", action="store_true",
                   help="evaluate the chosen recipe on the test split, once")
    a = p.parse_args(argv)
    grid = [int(s) for s in a.seeds.split(",")]
    names = a.recipes.split(",")
    unknown = set(names) - set(recipes)
    if unknown:
        p.error(f"--recipes: unknown {sorted(unknown)}; known: {', '.join(recipes)}")
    if a.workers < 1:
        p.error(f"--workers must be >= 1, not {a.workers}")
    (a.out / "runs").mkdir(parents=True, exist_ok=True)
    (a.out / "graphs").mkdir(exist_ok=True)
    tested = grid if a.test_seeds is None else [int(s) for s in a.test_seeds.split(",")]
    return a, grid, names, tested


def main(argv=None) -> int:
    a, seeds, recipes, test_seeds = parse_args(
        argv, description=__doc__.splitlines()[0], recipes=RECIPES, out="pim-qat-selection",
        seeds="0,1,2", test_seeds=None)
    if a.test:
        test_once(a.out, seeds, test_seeds)
        return 0
    run_grid(a.out, seeds, a.workers, recipes)
    rows = load_rows(a.out)
    chosen, _ = choose(rows, seeds)
    table = validation_table(rows, seeds)
    write_choice(a.out, seeds, chosen, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
