"""``chipforge zoo list`` and ``chipforge zoo train NAME [--out PATH]``."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    zsub = p.add_subparsers(dest="zoo_action", metavar="ACTION", required=True)
    zsub.add_parser("list", help="list the bundled models with their accuracy and compression")
    t = zsub.add_parser("train", help="rebuild a model from its recipe (fixed seeds)")
    t.add_argument("name", help="model name (see `chipforge zoo list`)")
    t.add_argument("--out", type=Path, default=None,
                   help="output .npz (default: NAME.npz in the current directory)")


def run(args: argparse.Namespace) -> int:
    from chipforge import zoo

    if args.zoo_action == "list":
        from chipforge.sim.compression import compression_stats

        print(f"{'name':<22} {'float':>6} {'8-bit':>6} {'zeros':>6} {'xbar red.':>9}  description")
        for name in zoo.names():
            g = zoo.load(name)
            s = compression_stats(g)
            if name == "bnn-digits":  # binary weights and activations: no 8-bit variant
                accuracy = f"{'-':>6} {100 * g.meta['test_accuracy_deterministic']:5.1f}%"
                description = "binary MLP 64-128-128-10 for SupeRBNN AQFP arrays (1-bit)"
            else:
                accuracy = (f"{100 * g.meta['accuracy_float']:5.1f}% "
                            f"{100 * g.meta['accuracy_quantized']:5.1f}%")
                description = g.meta["description"]
            print(f"{name:<22} {accuracy} {100 * s.sparsity:5.1f}% "
                  f"{s.idealized_crossbar_reduction:8.1f}x  {description}")
        print(f"{'resnet-digits-pim':<22} {'-':>6} {'-':>6} {'-':>6} {'-':>9}  4-bit ResNet-8 "
              "and its PIM-aware copies (torch state dicts, chipforge.zoo.pim)")
        print("accuracy on the 360-image digits test split; 8-bit = run_graph (exact integer "
              "matmul); idealized crossbar reduction = pruning x 32/bits x polarization (FORMS's "
              "formula, not a count: `chipforge simulate` counts crossbars from the placement)")
        return 0
    from chipforge.sim.graph import save_graph
    from chipforge.zoo.recipes import RECIPES, build

    if args.name == "bnn-digits":
        from chipforge.mappings.superbnn import build_bnn_digits

        out = build_bnn_digits(args.out or Path(f"{args.name}.npz"))
        print(f"bnn-digits: deterministic test accuracy "
              f"{100 * zoo.load_graph_file(out).meta['test_accuracy_deterministic']:.2f}% -> {out}")
        return 0
    if args.name == "resnet-digits-pim":
        import numpy as np

        from chipforge.mappings.pim_qat import train_pim_models

        out = args.out or Path(f"{args.name}.npz")
        from chipforge.files import atomic_open

        with atomic_open(out, "wb") as f:
            np.savez_compressed(f, **train_pim_models())
        print(f"resnet-digits-pim -> {out}")
        return 0
    if args.name not in RECIPES:
        raise ValueError(f"unknown zoo model {args.name!r}; known: {', '.join(RECIPES)}")
    out = args.out or Path(f"{args.name}.npz")
    start = time.perf_counter()
    graph = build(args.name)
    save_graph(graph, out)
    m = graph.meta
    print(f"{args.name}: float {100 * m['accuracy_float']:.2f}%, 8-bit "
          f"{100 * m['accuracy_quantized']:.2f}%, {100 * m['sparsity']:.1f}% zeros, idealized "
          f"crossbar reduction {m['idealized_crossbar_reduction']:.2f}x; trained in "
          f"{time.perf_counter() - start:.1f} s -> {out}")
    try:
        shipped = zoo.load(args.name).meta["accuracy_quantized"]
        print(f"shipped model: 8-bit {100 * shipped:.2f}%")
    except ValueError:
        pass
    return 0
