"""``chipforge simulate --model M --rtl LAYER``: one layer of a model computed by the RTL.

The command-line face of :func:`chipforge.sim.rtl_layer.run_layer_rtl`: load a zoo model
(or a ``.npz``/``.onnx`` graph), take the shared digits test split at the model's input size, and
run the whole split with ``LAYER``'s integer product computed by the generated
shift-and-add Verilog (Verilator via pyverilator-mm); everything else runs as the
quantized model. Prints the comparison with the reference (first mismatch, if any), the
RTL's cycles against the cycle model, and both accuracies. Exit status 1 on a mismatch.

::

    from chipforge.rtl_loop import simulate_rtl
    run = simulate_rtl("lenet-digits", "fc3")
    run.check()
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["TileLayerRun", "add_rtl_arguments", "run_rtl_command", "run_layer_on_tile",
           "simulate_rtl"]


def simulate_rtl(model: Any, layer: str, *, samples: int | None = None,
                 block_dir: str | Path | None = None, cache_dir: str | Path | None = None,
                 idle_prob: float = 0.0, ready_prob: float = 1.0, seed: int = 0):
    """Run ``model`` (zoo name, ``.npz``/``.onnx`` file or Graph) on the digits test split
    with ``layer`` in RTL; returns a :class:`chipforge.sim.rtl_layer.RtlLayerRun`."""
    from chipforge.sim.rtl_layer import run_layer_rtl
    from chipforge.simulate import load_model
    from chipforge.zoo.data import digits

    graph = load_model(model)
    shape = graph.input_shape
    if len(shape) != 3 or shape[0] != 1 or shape[1] != shape[2]:
        raise ValueError(f"model {graph.name!r} takes inputs of shape {shape}; --rtl runs "
                         "models of the digits data set, (1, S, S)")
    data = digits(shape[-1])
    x, y = data.x_test, data.y_test
    if samples is not None:
        if samples < 1:
            raise ValueError(f"samples must be >= 1, not {samples}")
        x, y = x[:samples], y[:samples]
    return run_layer_rtl(graph, x, layer, labels=y, block_dir=block_dir, cache_dir=cache_dir,
                         idle_prob=idle_prob, ready_prob=ready_prob, seed=seed)


@dataclass
class TileLayerRun:
    """Outcome of :func:`run_layer_on_tile`."""

    layer: str
    accelerator: str
    vectors: int
    """Input vectors (patches or rows) streamed through the tile, per column pass."""
    outputs: int
    column_passes: int
    tile_dir: Path
    seconds: float
    cycles: int = 0
    """Cycles measured on the Verilog, all column passes back to back (= the cycle model)."""

    def summary(self) -> str:
        return (f"layer {self.layer!r} through the {self.accelerator} ReRAM tile "
                f"({self.tile_dir}, Icarus + cocotb, crossbar model from "
                f"chipforge.sim.ref.crossbar): {self.vectors} vectors x {self.outputs} outputs "
                f"in {self.column_passes} column pass(es): bit-exact with the ideal simulated "
                f"run (requantized), every port and cycle as the cycle model; "
                f"{self.cycles} cycles measured back to back ({self.seconds:.0f} s)")


def run_layer_on_tile(model: Any, layer: str, accelerator: str, *, samples: int = 1,
                      out_dir: str | Path = "build/rtl-tile") -> TileLayerRun:
    """Run ``layer`` of ``model`` for ``samples`` digits test images through a ReRAM tile
    generated for it (``chipforge rtl tile``), in Icarus with the cocotb testbench of
    ``testbenches/reram_tile``: the tile's outputs are compared with the ideal simulated run
    bit for bit and its cycles with the cycle model. Raises ``AssertionError`` on any
    difference."""
    import json
    import time

    from chipforge.hw.generate import generate_tile
    from chipforge.hw.reram_tile import TileConfig
    from chipforge.simulate import load_model
    from chipforge.verify.manifest import load_manifest
    from chipforge.verify.runner import run_cocotb
    from chipforge.verify.tile_case import layer_case, save_case
    from chipforge.zoo.data import digits

    testbench = (Path(__file__).resolve().parents[1] / "testbenches" / "reram_tile"
                 / "test_reram_tile_cocotb.py")
    if not testbench.exists():
        raise ValueError(f"the tile testbench {testbench} is missing (a source checkout is "
                         "needed for RTL in the loop)")
    graph = load_model(model)
    if samples < 1:
        raise ValueError(f"samples must be >= 1, not {samples}")
    x = digits(graph.input_shape[-1]).x_test[:samples]
    start = time.perf_counter()
    case = layer_case(graph, x, layer, accelerator)
    out = Path(out_dir)
    verilog, _ = generate_tile(accelerator, f"{model}:{layer}", out)
    cols = TileConfig.from_dict(load_manifest(verilog.parent).config).cols
    n = case.weights.shape[1]
    # One build; the testbench programs every column pass in turn.
    path = save_case(case, out / f"{verilog.parent.name}-case.npz")
    report = out / f"{verilog.parent.name}-report.json"
    run_cocotb(verilog.parent, testbench, simulator="icarus", build_root=out / "build",
               test_filter="tile_whole_layer",
               extra_env={"CHIPFORGE_TILE_CASE": str(path.resolve()),
                          "CHIPFORGE_TILE_REPORT": str(report.resolve())})
    passes = json.loads(report.read_text())
    return TileLayerRun(layer=layer, accelerator=accelerator, vectors=len(case.x),
                        outputs=n, column_passes=-(-n // cols), tile_dir=verilog.parent,
                        seconds=time.perf_counter() - start,
                        cycles=sum(p["measured_cycles"] for p in passes if not p["idle"]))


def add_rtl_arguments(p: argparse.ArgumentParser, *, with_model: bool = False) -> None:
    """The ``--rtl`` options (and ``--model``/``--samples`` for a stand-alone parser)."""
    if with_model:
        p.add_argument("--model", required=True,
                       help="zoo model name (e.g. lenet-digits) or a .npz graph file")
        p.add_argument("--samples", type=int, help="test samples to use (default: all)")
    p.add_argument("--rtl", metavar="LAYER",
                   help="compute LAYER's integer product with the generated shift-and-add "
                        "Verilog (rtl/shift-add, Verilator via pyverilator-mm; the rest of "
                        "the model runs quantized and exact) and compare it with the "
                        "reference, bit for bit and in cycles")
    p.add_argument("--rtl-dir", type=Path, metavar="DIR",
                   help="block directory written by `chipforge rtl shift-add` "
                        "(default: the checkout's rtl/shift-add)")
    p.add_argument("--rtl-tile", metavar="ACCELERATOR",
                   help="run LAYER through a whole ReRAM tile of this preset (isaac, forms8, "
                        "...) generated for it, in Icarus via cocotb, instead of the "
                        "shift-and-add unit (uses --samples images, default 1)")
    p.add_argument("--rtl-stalls", type=float, nargs=2, metavar=("IDLE", "READY"),
                   help="random input idle probability and output ready probability of the "
                        "RTL stream (default 0 1: back to back)")


def run_rtl_command(args: argparse.Namespace) -> int:
    """Run ``--rtl`` from parsed arguments; print the report; 1 on a mismatch."""
    if getattr(args, "rtl_tile", None):
        try:
            tile_run = run_layer_on_tile(args.model, args.rtl, args.rtl_tile,
                                         samples=getattr(args, "samples", None) or 1)
        except AssertionError as err:
            print(f"chipforge simulate --rtl-tile: the tile differs: {err}")
            return 1
        print(tile_run.summary())
        return 0
    idle, ready = args.rtl_stalls if args.rtl_stalls else (0.0, 1.0)
    run = simulate_rtl(args.model, args.rtl, samples=getattr(args, "samples", None),
                       block_dir=args.rtl_dir, idle_prob=idle, ready_prob=ready,
                       seed=getattr(args, "seed", 0) or 0)
    print(f"{args.model}: {len(run.outputs)} test images")
    print(run.summary())
    return 0 if run.bit_exact else 1
