"""``chipforge simulate --model M --rtl LAYER``: one layer of a model computed by the RTL.

The command-line face of :func:`chipforge.sim.rtl_layer.run_layer_rtl`: load a zoo model
(or a ``.npz``/``.onnx`` graph; float models quantized as ``simulate`` quantizes them) and
its ``--data`` (the digits test split by default, or the user's ``.npz``), and run the data
with ``LAYER``'s integer product computed by the generated shift-and-add Verilog
(Verilator via pyverilator-mm); everything else runs as the quantized model. Prints the
comparison with the reference (first mismatch, if any), the RTL's cycles against the cycle
model, and both accuracies. Exit status 1 on a mismatch. ``--out DIR`` also writes
``DIR/rtl-report.json``.

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


def load_layer_model(model: Any, data: Any = "digits", *, samples: int | None = None,
                     accelerator: Any = "isaac", notes: list[str] | None = None,
                     need_data: bool = True) -> tuple[Any, Any, Any]:
    """``(graph, x, y)`` as ``chipforge simulate --data DATA`` prepares them
    (:func:`chipforge.mainjob.load_inputs`: a zoo name, ``.onnx`` or ``.npz`` model; a float
    model quantized after training to 8 bits, calibrated on the digits training split for
    ``data="digits"``, else on the first 256 given inputs). With ``need_data=False`` a model
    that is already quantized is returned without reading any data (``x``, ``y`` None)."""
    from chipforge.families import get_accelerator_spec
    from chipforge.mainjob import load_inputs

    spec = get_accelerator_spec(accelerator)
    family = spec.family
    if not family.rtl_loop:
        raise ValueError(f"accelerator {spec.name} (family {family.name}) has no ReRAM RTL "
                         "(isaac, forms8, isqed-... presets have)")
    if samples is not None and samples < 1:
        raise ValueError(f"samples must be >= 1, not {samples}")
    graph = family.load_model(model)
    if not need_data and all(n.quantized for n in graph.nodes if n.weighted):
        return graph, None, None
    return load_inputs(family, graph, data, samples=samples, quantize="auto", notes=notes)


def simulate_rtl(model: Any, layer: str, *, data: Any = "digits", samples: int | None = None,
                 block_dir: str | Path | None = None, cache_dir: str | Path | None = None,
                 idle_prob: float = 0.0, ready_prob: float = 1.0, seed: int = 0,
                 notes: list[str] | None = None):
    """Run ``model`` (zoo name, ``.npz``/``.onnx`` file or Graph; float models quantized as
    ``simulate`` does) on ``data`` (``"digits"``, the default, or an ``.npz`` of inputs and
    labels) with ``layer`` in RTL; returns a :class:`chipforge.sim.rtl_layer.RtlLayerRun`."""
    from chipforge.sim.rtl_layer import run_layer_rtl

    graph, x, y = load_layer_model(model, data, samples=samples, notes=notes)
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
    model_cycles: int = 0
    """The cycle model's count for the same passes (the testbench checks them equal)."""
    outputs_checked: int = 0
    """Output words compared bit for bit with the ideal simulated run (all passes)."""
    inputs: int = 0
    """Test inputs (images) the layer's vectors come from."""

    def summary(self) -> str:
        return (f"layer {self.layer!r} through the {self.accelerator} ReRAM tile "
                f"({self.tile_dir}, Icarus + cocotb, crossbar model from "
                f"chipforge.sim.ref.crossbar): {self.vectors} vectors x {self.outputs} outputs "
                f"in {self.column_passes} column pass(es): bit-exact with the ideal simulated "
                f"run (requantized), every port and cycle as the cycle model; "
                f"{self.cycles} cycles measured back to back ({self.seconds:.0f} s)")


def run_layer_on_tile(model: Any, layer: str, accelerator: str, *, samples: int = 1,
                      data: Any = "digits", out_dir: str | Path = "build/rtl-tile",
                      notes: list[str] | None = None) -> TileLayerRun:
    """Run ``layer`` of ``model`` for the first ``samples`` inputs of ``data`` (``"digits"``,
    the default, or an ``.npz``; float models quantized as ``simulate`` does, calibrated on
    ``data``) through a ReRAM tile
    generated for it (``chipforge rtl tile``), in Icarus with the cocotb testbench of
    ``testbenches/reram_tile``: the tile's outputs are compared with the ideal simulated run
    bit for bit and its cycles with the cycle model. Raises ``AssertionError`` on any
    difference."""
    import json
    import time

    from chipforge.hw.generate import generate_layer_tile
    from chipforge.hw.reram_tile import TileConfig
    from chipforge.verify.manifest import load_manifest
    from chipforge.verify.runner import run_cocotb
    from chipforge.verify.tile_case import layer_case, save_case

    testbench = (Path(__file__).resolve().parents[1] / "testbenches" / "reram_tile"
                 / "test_reram_tile_cocotb.py")
    if not testbench.exists():
        raise ValueError(f"the tile testbench {testbench} is missing (a source checkout is "
                         "needed for RTL in the loop)")
    if samples < 1:
        raise ValueError(f"samples must be >= 1, not {samples}")
    graph, x, _ = load_layer_model(model, data, samples=samples, accelerator=accelerator,
                                   notes=notes)
    start = time.perf_counter()
    case = layer_case(graph, x, layer, accelerator)
    out = Path(out_dir)
    verilog, _ = generate_layer_tile(accelerator, graph, layer, out, model_label=str(model))
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
                        cycles=sum(p["measured_cycles"] for p in passes if not p["idle"]),
                        model_cycles=sum(p["model_cycles"] for p in passes if not p["idle"]),
                        outputs_checked=sum(p["outputs_checked"] for p in passes
                                            if not p["idle"]),
                        inputs=len(x))


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


def _write_json(path: Path, data: dict) -> None:
    """Write ``data`` as JSON atomically (a temporary file in the same folder, then
    ``os.replace``)."""
    import json
    import os
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".rtl-report-", suffix=".json", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def run_rtl_command(args: argparse.Namespace) -> int:
    """Run ``--rtl`` from parsed arguments; print the report (and write ``rtl-report.json``
    in ``--out`` when given); 1 on a mismatch."""
    data = getattr(args, "data", None) or "digits"
    out = getattr(args, "out", None)
    notes: list[str] = []
    if getattr(args, "rtl_tile", None):
        try:
            tile_run = run_layer_on_tile(args.model, args.rtl, args.rtl_tile,
                                         samples=getattr(args, "samples", None) or 1,
                                         data=data, notes=notes,
                                         out_dir=out if out is not None else "build/rtl-tile")
        except AssertionError as err:
            print(f"chipforge simulate --rtl-tile: the tile differs: {err}")
            return 1
        for note in notes:
            print(f"note: {note}")
        print(tile_run.summary())
        if out is not None:   # the same report as the shift-and-add loop writes
            report = {"model": str(args.model), "layer": args.rtl, "data": str(data),
                      "tile": args.rtl_tile, "inputs": tile_run.inputs,
                      "bit_exact": True, "mismatches": 0,     # else the testbench raised
                      "dot_products": tile_run.outputs_checked,
                      "cycles": tile_run.cycles, "model_cycles": tile_run.model_cycles,
                      "tile_dir": str(tile_run.tile_dir), "notes": notes}
            _write_json(Path(out) / "rtl-report.json", report)
            print(f"report: {Path(out) / 'rtl-report.json'}")
        return 0
    idle, ready = args.rtl_stalls if args.rtl_stalls else (0.0, 1.0)
    run = simulate_rtl(args.model, args.rtl, data=data, samples=getattr(args, "samples", None),
                       block_dir=args.rtl_dir, idle_prob=idle, ready_prob=ready,
                       seed=getattr(args, "seed", 0) or 0, notes=notes)
    for note in notes:
        print(f"note: {note}")
    print(f"{args.model}: {len(run.outputs)} test images ({data})")
    print(run.summary())
    if out is not None:
        report = {"model": str(args.model), "layer": args.rtl, "data": str(data),
                  "inputs": len(run.outputs), "bit_exact": bool(run.bit_exact),
                  "mismatches": int(run.mismatches), "dot_products": int(run.dot_products),
                  "cycles": int(run.cycles), "model_cycles": int(run.model_cycles),
                  "accuracy": run.accuracy, "reference_accuracy": run.reference_accuracy,
                  "notes": notes}
        _write_json(Path(out) / "rtl-report.json", report)
        print(f"report: {Path(out) / 'rtl-report.json'}")
    return 0 if run.bit_exact else 1
