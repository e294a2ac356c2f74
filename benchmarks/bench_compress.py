"""``chipforge compress`` per epoch against plain torch training of the same model.

For each method, the model it targets, written in plain torch as a user writes it, on real
MNIST (``chipforge.zoo.data.mnist()``, 28x28, the first ``--images`` training images; compress
splits off 20 % for validation, the plain loop trains on the same 80 %):

- ``forms``, ``isqed``, ``pim-qat``: a LeNet-sized CNN (conv 5x5 1->8, 8->16 with batch norm,
  fc 784->64->10), the model of docs/compress.md's run-time table;
- ``superbnn``: an MLP 784-128-128-10;
- ``heatvit``: a timm-style ViT (6 blocks, 32 wide, 2 heads, 4x4 patches: 49 tokens).

The **baseline**, timed in the same process just before the method: plain torch training
of the user's module on the same training images, with the batch size, the optimizer type
(Adam; SGD with momentum for pim-qat, AdamW for heatvit) and the thread count (1, as
compress trains: :func:`chipforge.mappings.train.deterministic`) of the method, plus one
validation forward per epoch, as every compress epoch reports the validation accuracy.
Those baseline epochs also train the model that compress then starts from.

Each compress stage is timed per epoch from the progress bars' epoch ticks (the time from
the stage's start, or the previous tick, to the tick), so a stage's figure includes what it
does between epochs (ADMM Z-updates, sign updates, validation); work outside any epoch
(exports, calibrations, fault-injected evaluations) shows in the whole run's figure, which
divides the compress call's time by its planned epochs. Printed per method: seconds
per epoch per 1,000 training images of the baseline, of each stage (median over its epochs)
and of the whole run, and their ratio to the baseline (target: 1.5 or less); the cost of
each kind of epoch (ADMM, fine-tuning, QAT, ...; a stage's first epoch, which carries its
set-up, left out where the kind has others), which is what
:data:`chipforge.compress.EPOCH_COST` holds for the run-time estimate; the seconds spent
outside epochs; and the ratio projected for the method's default options (the kinds'
costs times the default epochs plus the same one-off work).

Times are CPU seconds of this process by default (``--wall``: wall seconds). Run:
``python benchmarks/bench_compress.py [--images 1000] [--methods forms isqed ...]
[--json out.json]`` (about 2 CPU-minutes); ``--quick`` (300 images, 1 epoch per stage) is
a smoke run whose per-epoch figures are set-up dominated. Quote ``uptime``'s load average
beside the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

CLOCK = time.process_time
"""The clock of every figure: this process's CPU seconds (all its threads), steadier than
wall time on a shared machine; ``--wall`` switches to wall seconds (the same figures on a
quiet machine, training being single-threaded)."""

METHODS = ("forms", "isqed", "pim-qat", "superbnn", "heatvit")

# epochs per stage of the timed run (few: the per-epoch cost is the point), per method
EPOCH_OPTIONS = {
    "forms": dict(prune_epochs=2, finetune_epochs=2, polarize_epochs=2, qat_epochs=2),
    "isqed": dict(ratios=(0.5,), prune_epochs=2, finetune_epochs=2, qat_epochs=2,
                  fault_trials=1),
    "pim-qat": dict(qat_epochs=2, epochs=2),
    "superbnn": dict(epochs=3),
    "heatvit": dict(warmup_epochs=2, epochs=2),
}
QUICK_OPTIONS = {
    "forms": dict(prune_epochs=1, finetune_epochs=1, polarize_epochs=1, qat_epochs=1),
    "isqed": dict(ratios=(0.5,), prune_epochs=1, finetune_epochs=1, qat_epochs=1,
                  fault_trials=1),
    "pim-qat": dict(qat_epochs=1, epochs=1),
    "superbnn": dict(epochs=1),
    "heatvit": dict(warmup_epochs=1, epochs=1),
}
PHASES = {
    "forms": {"admm prune": (("admm", "prune_epochs"), ("finetune", "finetune_epochs")),
              "admm polarize": (("admm", "polarize_epochs"), ("finetune", "finetune_epochs")),
              "quantize": (("qat", "qat_epochs"),)},
    "isqed": {"progressive prune": (("admm", "prune_epochs"), ("finetune", "finetune_epochs")),
              "quantize": (("qat", "qat_epochs"),)},
    "pim-qat": {"digital QAT": (("pim-qat digital", "qat_epochs"),),
                "PIM-aware training": (("pim-aware", "epochs"),)},
    "superbnn": {"randomized-BNN training": (("superbnn", "epochs"),)},
    "heatvit": {"selectors": (("heatvit warm-up", "warmup_epochs"),
                              ("heatvit fine-tune", "epochs"))},
}
"""Each stage's epochs in order, as runs of ``(kind, option giving their count)`` repeated
until the stage's epochs are used up (isqed: one run per progressive step); the kinds are
those of :data:`chipforge.compress.EPOCH_COST`."""

BATCH = {"forms": 64, "isqed": 64, "pim-qat": 64, "superbnn": 128, "heatvit": 64}
"""The methods' default batch sizes (AdamConfig / pim_qat.train / SuperbnnOptions /
HeatvitOptions), used by the baseline too."""
OPTIMIZER = {"pim-qat": "sgd", "heatvit": "adamw"}
"""Optimizer type of each method's training (default Adam)."""


def build_model(method: str, seed: int = 0):
    import torch
    from torch import nn

    torch.manual_seed(seed)
    if method in ("forms", "isqed", "pim-qat"):
        return nn.Sequential(
            nn.Conv2d(1, 8, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 5, padding=2), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(16 * 7 * 7, 64), nn.ReLU(), nn.Linear(64, 10))
    if method == "superbnn":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(),
                             nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10))
    if method == "heatvit":
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                        "tests"))
        from heatvit_user_models import TimmStyleVit

        return TimmStyleVit(dim=32, heads=2, depth=6, patch=4, size=28)
    raise ValueError(f"unknown method {method!r}; methods: {', '.join(METHODS)}")


def plain_training(module, x_train, y_train, x_val, *, batch: int, optimizer: str,
                   epochs: int) -> list[float]:
    """Seconds of each epoch of a plain torch loop (shuffled minibatches, cross-entropy,
    one validation forward per epoch), single-threaded as compress trains."""
    import torch
    import torch.nn.functional as F

    from chipforge.mappings.train import deterministic, minibatches

    x = torch.from_numpy(np.ascontiguousarray(x_train, dtype=np.float32))
    y = torch.from_numpy(np.ascontiguousarray(y_train, dtype=np.int64))
    xv = torch.from_numpy(np.ascontiguousarray(x_val, dtype=np.float32))
    opt = {"sgd": lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9),
           "adamw": lambda p: torch.optim.AdamW(p, lr=1e-3),
           "adam": lambda p: torch.optim.Adam(p, lr=1e-3)}[optimizer](module.parameters())
    gen = torch.Generator().manual_seed(0)
    times = []
    with deterministic():
        for _ in range(epochs):
            start = CLOCK()
            module.train()
            order = torch.randperm(len(x), generator=gen)
            for lo, hi in minibatches(len(x), batch):
                idx = order[lo:hi]
                loss = F.cross_entropy(module(x[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
            module.eval()
            with torch.no_grad():
                float((module(xv).argmax(1) == 0).float().mean())
            times.append(CLOCK() - start)
    return times


class StageClock:
    """Replaces :class:`chipforge.compress.Progress` (silent) and records, per stage, the
    seconds of each epoch (start or previous tick to tick)."""

    def __init__(self):
        import chipforge.compress as cc

        clock = self

        class Timed(cc.Progress):
            def __init__(self, method, enabled=None):
                super().__init__(method, False)
                clock.stages = []

            def stage(self, name, epochs=None):
                import contextlib

                parent = super().stage(name, epochs)

                @contextlib.contextmanager
                def timed():
                    with parent as p:
                        clock.stages.append({"stage": name, "epochs": []})
                        clock._last = CLOCK()
                        yield p
                return timed()

            def epoch(self, **kw):
                super().epoch(**kw)
                now = CLOCK()
                if clock.stages:
                    clock.stages[-1]["epochs"].append(now - clock._last)
                clock._last = now

        self.cls = Timed
        self.stages: list[dict] = []
        self._last = 0.0


def bench_method(method: str, x, y, *, quick: bool, baseline_epochs: int) -> dict:
    import chipforge.compress as cc
    from chipforge.compress import (
        compress,
        epoch_costs,
        parse_options,
        planned_epochs,
        split_data,
    )

    module = build_model(method)
    split = split_data(x.astype(np.float64), y, 10, val_fraction=0.2, seed=0, label="bench")
    n_train = len(split.y_train)
    base = plain_training(module, split.x_train, split.y_train, split.x_val,
                          batch=BATCH[method], optimizer=OPTIMIZER.get(method, "adam"),
                          epochs=baseline_epochs)
    base_epoch = float(np.median(base[1:] if len(base) > 1 else base))
    module.eval()
    options = (QUICK_OPTIONS if quick else EPOCH_OPTIONS)[method]
    clock = StageClock()
    saved, cc.Progress = cc.Progress, clock.cls
    try:
        start = CLOCK()
        compress(method, module, (x, y), progress=None, **options)
        total = CLOCK() - start
    finally:
        cc.Progress = saved
    opts = parse_options(method, options)
    epochs, _ = planned_epochs(method, opts)
    per_k = 1000.0 / n_train
    kinds: dict[str, list[tuple[bool, float]]] = {}
    for s in clock.stages:
        runs = PHASES[method].get(s["stage"], ())
        labels = [kind for kind, field in runs for _ in range(getattr(opts, field))]
        for i, sec in enumerate(s["epochs"]):
            label = labels[i % len(labels)] if labels else s["stage"]
            kinds.setdefault(label, []).append((i == 0, sec))
    # a stage's first epoch carries the stage's set-up (isqed: the reference fault-injected
    # evaluation): left out of its kind's cost where the kind has other epochs
    kinds = {k: [sec for first, sec in v if not first] or [sec for _, sec in v]
             for k, v in kinds.items()}
    stages = []
    for s in clock.stages:
        if not s["epochs"]:
            continue
        # the first epoch of a stage carries its one-off set-up; the median is the steady cost
        sec = float(np.median(s["epochs"]))
        stages.append({"stage": s["stage"], "epochs": len(s["epochs"]),
                       "s_per_epoch_per_1000": sec * per_k, "ratio": sec / base_epoch,
                       "first_epoch_ratio": s["epochs"][0] / base_epoch})
    epoch_cost = {k: float(np.median(v)) / base_epoch for k, v in kinds.items()}
    in_epochs = sum(sum(s["epochs"]) for s in clock.stages)
    one_off = total - in_epochs
    # the method's default options: its measured epoch costs times the default epochs, plus
    # this run's one-off work (conversions, exports, evaluations, calibrations)
    defaults = parse_options(method, {})
    default_epochs, _ = planned_epochs(method, defaults)
    default_plain = sum(n * epoch_cost.get(kind, np.nan)
                        for kind, n, _ in epoch_costs(method, defaults))
    return {"method": method, "train_images": n_train,
            "one_off_s": one_off, "default_epochs": default_epochs,
            "default_run_ratio": (default_plain * base_epoch + one_off)
            / (default_epochs * base_epoch),
            "plain_s_per_epoch_per_1000": base_epoch * per_k, "stages": stages,
            "epoch_cost": epoch_cost,
            "whole_run_s": total, "planned_epochs": epochs,
            "whole_run_s_per_epoch_per_1000": total / max(epochs, 1) * per_k,
            "whole_run_ratio": total / max(epochs, 1) / base_epoch}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=1000,
                   help="MNIST training images used (compress keeps 80 %% for training)")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--baseline-epochs", type=int, default=3)
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 300 images, 1 epoch per stage, 2 baseline epochs")
    p.add_argument("--wall", action="store_true",
                   help="time wall seconds instead of this process's CPU seconds")
    p.add_argument("--json", help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    if args.wall:
        global CLOCK
        CLOCK = time.perf_counter
    if args.quick:
        args.images, args.baseline_epochs = min(args.images, 300), 2

    from chipforge.zoo.data import mnist

    d = mnist()
    x, y = d.x_train[:args.images], d.y_train[:args.images]
    print(f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}; "
          f"{args.images} MNIST images 28x28, 1 thread; "
          f"{'wall' if args.wall else 'CPU'} seconds")
    results = []
    for method in args.methods:
        r = bench_method(method, x, y, quick=args.quick, baseline_epochs=args.baseline_epochs)
        results.append(r)
        print(f"\n{method}: plain torch {r['plain_s_per_epoch_per_1000']:.3f} s per epoch "
              f"per 1,000 training images ({r['train_images']} trained on)")
        for s in r["stages"]:
            print(f"  {s['stage']:<26} {s['s_per_epoch_per_1000']:8.3f} s  "
                  f"{s['ratio']:6.2f}x  ({s['epochs']} epochs, first "
                  f"{s['first_epoch_ratio']:.2f}x)")
        print("  epoch cost by kind (chipforge.compress.EPOCH_COST): " + ", ".join(
            f"{k} {v:.2f}" for k, v in r["epoch_cost"].items()))
        print(f"  {'whole run / planned epochs':<26} {r['whole_run_s_per_epoch_per_1000']:8.3f} s"
              f"  {r['whole_run_ratio']:6.2f}x  ({r['whole_run_s']:.1f} s, "
              f"{r['planned_epochs']} epochs, {r['one_off_s']:.1f} s of it outside epochs)")
        print(f"  {'default options':<26} {r['default_run_ratio']:17.2f}x  "
              f"({r['default_epochs']} epochs at the costs above + the same one-off work)")
    print(f"\nload average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    if args.json:
        from chipforge.files import atomic_write

        atomic_write(args.json, json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
