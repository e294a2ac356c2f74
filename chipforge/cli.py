"""The ``chipforge`` command line.

Three flows, as in the README: ``simulate`` (a compressed model on a virtual accelerator),
``rtl`` (Verilog of the digital blocks, verified against the Python models) and ``sweep``
(fault-injection and design-space sweeps). ``ref`` runs a block's reference model alone.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from chipforge.guard import check_output_dir, check_output_file

__all__ = ["main"]

# Subcommands register here: name -> (help, add_arguments, run). Later flows add entries.
Command = tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]
COMMANDS: dict[str, Command] = {}


def command(name: str, help: str):
    def register(add_arguments):
        def wrap(run):
            COMMANDS[name] = (help, add_arguments, run)
            return run
        return wrap
    return register


class UsageError(Exception):
    """Bad command-line input: printed as one line, exit status 2."""


def _not_built(flow: str, issue: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        print(f"chipforge {flow}: not built yet ({issue}). "
              f"Available today: `chipforge rtl` and `chipforge ref crossbar`.", file=sys.stderr)
        return 2
    return run


def _add_simulate(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", metavar="MODEL",
                   help="zoo model name (e.g. lenet-digits-forms8), an .onnx file (float or "
                        "QDQ-quantized) or an .npz graph file")
    p.add_argument("--model", dest="model_option", metavar="MODEL",
                   help="the same as MODEL (kept for scripts)")
    p.add_argument("--accelerator", default="forms8", metavar="PRESET|FILE.toml",
                   help="accelerator preset (`chipforge accelerators` lists the families and "
                        "their presets), FAMILY:PRESET, or a .toml file (family = ..., "
                        "preset = ..., fields); default forms8")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="KEY=VALUE",
                   help="change a field of the accelerator's config (repeatable; nested keys "
                        "like adc.bits=6; values in TOML syntax)")
    p.add_argument("--data", default="digits",
                   help="'digits' (the shared test split, default) or an .npz with inputs "
                        "(x, inputs or images) and labels (y, labels or targets)")
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="report directory (default build/report/MODEL-ACCELERATOR)")
    p.add_argument("--quantize", choices=["auto", "off"], default="auto",
                   help="float layers: quantize after training to 8 bits (auto, default) or "
                        "refuse (off)")
    p.add_argument("--seed", type=int, default=0, help="chip instance (faults, variation, "
                   "noise); default 0")
    p.add_argument("--samples", type=int, help="test samples to use (default: all)")
    p.add_argument("--chips", type=int, default=1, metavar="N",
                   help="simulate N independently programmed chips (seeds derived from "
                        "--seed; chip 0 is --seed itself); hardware accuracy as mean, std "
                        "and 95 %% interval, one row per chip in report.json (default 1)")
    campaign = p.add_argument_group(
        "campaigns: --chips N x the samples sharded into (chip, sample chunk) tasks, "
        "resumable from --out/campaign.jsonl (reram family; docs/scale.md)")
    where = campaign.add_mutually_exclusive_group()
    where.add_argument("--dask", action="store_true",
                       help="run the shards on a local Dask LocalCluster of --workers processes")
    where.add_argument("--scheduler", metavar="ADDR",
                       help="run the shards on an existing Dask cluster (tcp://host:8786)")
    campaign.add_argument("--workers", type=int, metavar="W",
                          help="worker processes, one core each (default: the cores this "
                          "process may use)")
    campaign.add_argument("--chunk-size", type=int, metavar="C",
                          help="samples per shard (default 64); results do not depend on it")
    _add_family_options(p)
    run = p.add_argument_group("run options (families that simulate in batches: reram)")
    run.add_argument("--max-memory", dest="run_max_memory", metavar="SIZE",
                     help="memory budget such as 2G (default: half the available memory); "
                          "the batch is streamed in chunks that fit")
    run.add_argument("--device", dest="run_device_kind", choices=["cpu", "cuda"],
                     help="where the crossbars run (cuda: torch tensors on the GPU)")
    run.add_argument("--layer-errors", dest="run_layer_errors", type=int, metavar="N",
                     help="add each layer's relative error and SNR vs the ideal run (on N "
                          "samples) to the per-layer table")
    run.add_argument("--adc-range", dest="run_adc_range", metavar="MODE",
                     help="ADC full scale: max (one level per code, default), fraction:F "
                          "(F x the array maximum) or calibrated (largest column sum of each "
                          "layer on 64 inputs that are not scored, see --adc-calibration)")
    run.add_argument("--adc-calibration", dest="run_adc_calibration", metavar="DATA",
                     help="with --adc-range calibrated: calibrate on digits (the training "
                          "split), FILE.npz, or scored (the scored inputs themselves); "
                          "default: the digits training split for --data digits, else the "
                          "64 inputs of --data after the --samples scored")
    p.add_argument("--cycle-samples", type=int, default=100,
                   help="inputs the cost model runs on (default 100)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bars on stderr: steps, then samples done, rate and ETA of "
                        "the hardware run (default: when stderr is a terminal)")
    from chipforge.rtl_loop import add_rtl_arguments

    add_rtl_arguments(p)


_OPTION_DEST = "family_option_"


def _add_family_options(p: argparse.ArgumentParser) -> None:
    """One convenience flag per option of any registered family (``--variation``,
    ``--sigma-ua``, ...). Every flag goes through the chosen family's config, which refuses
    the ones it lacks (chipforge.families)."""
    from chipforge.families import families
    from chipforge.families.base import parse_value

    owners: dict[str, list[str]] = {}
    for family in families().values():
        for option, action in family.options.items():
            what = action if isinstance(action, str) else \
                (action.__doc__ or option).strip().splitlines()[0].rstrip(".")
            owners.setdefault(option, []).append(f"{family.name}: {what}")
    taken = {o for a in p._actions for o in a.option_strings}
    for option, names in owners.items():
        flag = f"--{option.replace('_', '-')}"
        if flag in taken:       # a family option may not shadow a command-line option
            continue
        p.add_argument(flag, dest=_OPTION_DEST + option, type=parse_value, metavar="VALUE",
                       help="; ".join(names))


def _simulate_options(args: argparse.Namespace) -> dict:
    return {k[len(_OPTION_DEST):]: v for k, v in vars(args).items()
            if k.startswith(_OPTION_DEST) and v is not None}


def _parse_overrides(items: list[str]) -> dict:
    from chipforge.families.base import parse_value

    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set takes KEY=VALUE (e.g. adc.bits=6), not {item!r}")
        overrides[key.strip()] = parse_value(value.strip())
    return overrides


def _check_run_counts(args: argparse.Namespace, counts: tuple[str, ...]) -> None:
    """The run options simulate, compare and the sweeps share: each of ``counts`` (when
    given) >= 1, ``--seed`` >= 0, ``--workers`` only without ``--scheduler``."""
    for flag in counts:
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise UsageError(f"--{flag.replace('_', '-')} must be >= 1, not {value}")
    if args.seed < 0:
        raise UsageError(f"--seed must be >= 0, not {args.seed}")
    if args.scheduler and args.workers:
        raise UsageError("--workers does not apply to --scheduler (the cluster has its own)")


@command("simulate", "simulate a compressed model on a virtual accelerator")(_add_simulate)
def _run_simulate(args: argparse.Namespace) -> int:
    from chipforge.families import get_accelerator_spec
    from chipforge.simulate import simulate

    if args.model and args.model_option and args.model != args.model_option:
        raise UsageError(f"two models given: {args.model!r} and --model {args.model_option!r}")
    model = args.model or args.model_option
    if model is None:
        raise UsageError("give a MODEL: a zoo name, an .onnx file or an .npz graph")
    _check_run_counts(args, ("samples", "cycle_samples", "chips", "workers", "chunk_size"))
    sharded = bool(args.workers or args.dask or args.scheduler or args.chunk_size)
    options, overrides = _simulate_options(args), _parse_overrides(args.overrides)
    if (args.rtl_tile or args.rtl_dir or args.rtl_stalls) and not args.rtl:
        flag = "--rtl-tile" if args.rtl_tile else "--rtl-dir" if args.rtl_dir else "--rtl-stalls"
        raise UsageError(f"{flag} applies to --rtl LAYER (the layer it runs); give --rtl")
    spec = get_accelerator_spec(args.accelerator, overrides=overrides, options=options)
    if args.rtl:  # one layer through the generated Verilog; chipforge.rtl_loop
        from chipforge.rtl_loop import run_rtl_command

        if not spec.family.rtl_loop:
            raise UsageError(f"--rtl runs a layer through the ReRAM shift-and-add Verilog; "
                             f"accelerator {spec.name} (family {spec.family.name}) has no "
                             f"such loop")
        given = [f"--{k.replace('_', '-')}" for k in options] + (["--set"] if overrides
                                                                   else []) \
            + (["--chips"] if args.chips > 1 else []) + (["--workers"] if sharded else [])
        if given:
            raise UsageError(f"--rtl runs the rest of the model exact (ideal devices); it does "
                             f"not combine with {', '.join(given)}")
        args.model = model
        if args.out is not None:
            check_output_dir(args.out, option="--out")
        return run_rtl_command(args)
    run_options = {k[len("run_"):]: v for k, v in vars(args).items()
                   if k.startswith("run_") and v is not None}
    foreign = [k for k in run_options if k not in spec.family.run_options]
    if foreign:
        flags = ", ".join("--" + {"device_kind": "device"}.get(k, k).replace("_", "-")
                          for k in foreign)
        raise UsageError(f"{flags} do(es) not apply to accelerator {spec.name!r} (family "
                         f"{spec.family.name}; its run options: "
                         f"{', '.join(spec.family.run_options) or 'none'})")
    out = args.out or Path("build/report") / (
        f"{Path(str(model)).stem}-{Path(str(args.accelerator)).stem}")
    check_output_dir(out, option="--out")  # before the simulation, not after it
    try:
        result = simulate(model, accelerator=spec, data=args.data, out=out,
                          samples=args.samples, seed=args.seed, chips=args.chips,
                          quantize=args.quantize, cycle_samples=args.cycle_samples,
                          progress=args.progress, run_options=run_options,
                          workers=args.workers, dask=args.dask, scheduler=args.scheduler,
                          chunk_size=args.chunk_size)
    except KeyboardInterrupt:
        if not sharded:
            raise
        print(f"\nchipforge simulate: interrupted; the finished shards are saved in {out}; "
              "run the same command to continue", file=sys.stderr)
        return 130
    print(result.summary())
    return 0


def _add_compare(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL",
                   help="the model every preset runs unless named per preset: a zoo name, "
                        "an .onnx file (float or QDQ) or an .npz graph")
    p.add_argument("--accelerators", required=True, metavar="A,B=MODEL,...",
                   help="presets to compare, comma-separated; PRESET=MODEL runs that "
                        "preset on its own model (e.g. forms8=cnn-forms8.npz,superbnn=bnn.onnx)"
                        "; an accelerator .toml file may stand for a preset (non-ideal "
                        "devices per preset)")
    p.add_argument("--data", default="digits",
                   help="'digits' (default) or an .npz with inputs and labels, as simulate")
    p.add_argument("--chips", type=int, default=1, metavar="N",
                   help="programmed chips per preset (hardware accuracy: mean and 95 %% "
                        "interval); default 1")
    p.add_argument("--samples", type=int, help="test samples to use (default: all)")
    p.add_argument("--seed", type=int, default=0, help="run seed (chip 0's); default 0")
    p.add_argument("--cycle-samples", type=int, default=100,
                   help="inputs the cost models run on (default 100)")
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="results folder: compare.csv/.md/.tex, pareto.png, presets/*.json "
                        "(default build/compare/MODEL); a rerun resumes there")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--dask", action="store_true",
                       help="run the presets on a local Dask LocalCluster of --workers "
                            "processes")
    where.add_argument("--scheduler", metavar="ADDR",
                       help="run the presets on an existing Dask cluster (tcp://host:8786)")
    p.add_argument("--workers", type=int,
                   help="run the presets on a local process pool of N workers")
    _add_family_options(p)   # non-idealities, each applied to the presets whose family has it


@command("compare", "one model across accelerator presets: accuracy, latency, energy, area "
                    "(CSV, Markdown, LaTeX, Pareto plot)")(_add_compare)
def _run_compare(args: argparse.Namespace) -> int:
    from chipforge.compare import compare

    _check_run_counts(args, ("chips", "samples", "cycle_samples", "workers"))
    out = args.out or Path("build/compare") / Path(str(args.model)).stem
    check_output_dir(out, option="--out")
    try:
        result = compare(args.model, args.accelerators, args.data, chips=args.chips,
                         samples=args.samples, seed=args.seed, out=out,
                         cycle_samples=args.cycle_samples, workers=args.workers,
                         dask=args.dask, scheduler=args.scheduler,
                         log=lambda line: print(line, flush=True),
                         **_simulate_options(args))
    except KeyboardInterrupt:
        print(f"\nchipforge compare: interrupted; the finished presets are saved in {out}; "
              "run the same command to continue", file=sys.stderr)
        return 130
    print(result.summary())
    return 0


@command("accelerators", "list the accelerator families, presets, options and config keys")(
    lambda p: p.add_argument("name", nargs="?", help="a family or preset: show its config"))
def _run_accelerators(args: argparse.Namespace) -> int:
    from chipforge.families import describe

    print(describe(args.name))
    return 0


def _add_sweep(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", metavar="NAME",
                   help="registered sweep (see --list) or package.module:ATTRIBUTE")
    p.add_argument("--list", action="store_true", help="list the registered sweeps and exit")
    p.add_argument("--grid", action="append", default=[], metavar="AXIS=V1,V2,...",
                   help="replace an axis' values (repeatable; typed like its defaults)")
    p.add_argument("--trials", type=int, help="Monte-Carlo trials per point "
                   "(default: the sweep's)")
    p.add_argument("--data", metavar="FILE.npz|digits",
                   help="sweeps that run a model (faults, accelerator): its test inputs and "
                        "labels, as simulate --data (float models are calibrated on them); "
                        "default: the digits test split. --grid data=A.npz,B.npz sweeps "
                        "several")
    p.add_argument("--chips", type=int, metavar="N",
                   help="N programmed chips per point instead of --trials: the same N chip "
                        "seeds (derived from --seed) at every point; summary with mean, std "
                        "and the 95 %% interval over chips")
    p.add_argument("--out", type=Path, help="output directory (default: sweeps/NAME)")
    p.add_argument("--resume", action="store_true",
                   help="continue the sweep in --out, skipping the trials already there")
    p.add_argument("--force", action="store_true",
                   help="start over in a non-empty --out: replace the sweep's own files "
                        "(results.csv, sweep.json, summary.*, plot.png), keep the others")
    p.add_argument("--seed", type=int, default=0, help="base seed (default 0)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--scheduler", metavar="ADDR",
                       help="run on an existing Dask cluster (e.g. tcp://host:8786)")
    where.add_argument("--dask", action="store_true",
                       help="run on a local Dask LocalCluster of --workers processes")
    p.add_argument("--workers", type=int,
                   help="local worker processes (default: all cores)")
    p.add_argument("--batch", type=int, default=1,
                   help="trials per task; more amortizes the overhead of tiny trials")
    p.add_argument("--x", dest="x_axis", metavar="AXIS", help="axis on the plot's x axis")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG plot")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="tqdm progress bar (default: when stderr is a terminal)")


@command("sweep", "fault-injection and design-space sweeps, resumable, local or on Dask")(
    _add_sweep)
def _run_sweep(args: argparse.Namespace) -> int:
    from chipforge.sim.sweep import SweepError, parse_grid_args, run_sweep
    from chipforge.sweeps import SWEEPS, get_sweep

    if args.list or args.name is None:
        print("registered sweeps (chipforge sweep NAME):")
        for name in SWEEPS:
            sweep = get_sweep(name)
            axes = ", ".join(f"{a}={','.join(map(str, v))}" for a, v in sweep.grid.items())
            print(f"  {name}: {sweep.description}\n      metrics: {', '.join(sweep.metrics)}"
                  f"\n      default grid: {axes}; {sweep.trials} trials per point")
        return 0 if args.list else 2
    _check_run_counts(args, ("trials", "workers", "batch", "chips"))
    sweep = get_sweep(args.name)
    if args.chips is not None and args.trials is not None:
        raise UsageError("--chips N runs N chips per point: they are the trials; give --chips "
                         "or --trials")
    from chipforge.sim.sweep import DATA_AXIS

    defaults = dict(sweep.grid)
    data_given = args.data is not None or (sweep.takes_data and any(
        g.partition("=")[0].strip() == DATA_AXIS for g in args.grid))
    if args.data is not None and not sweep.takes_data:
        raise UsageError(f"--data: sweep {sweep.name!r} runs its bundled model on its own "
                         "data set; --data applies to the sweeps that run a model you give "
                         "(faults, accelerator)")
    if sweep.takes_data:
        defaults[DATA_AXIS] = ["digits"]
    if args.data is not None:
        if any(g.partition("=")[0].strip() == DATA_AXIS for g in args.grid):
            raise UsageError("--data and --grid data=... both give the data: give one")
    grid = parse_grid_args(args.grid, defaults)
    if args.data is not None:
        grid[DATA_AXIS] = [args.data]   # one value, commas and all
    if sweep.takes_data and not data_given:
        del grid[DATA_AXIS]   # the documented default, and the seeds of earlier runs
    for value in grid.get(DATA_AXIS, []) if sweep.takes_data else []:
        if value != "digits" and (Path(value).suffix.lower() != ".npz"
                                  or not Path(value).is_file()):
            raise UsageError(f"--data {value!r} must be 'digits' or an existing .npz file of "
                             "inputs and labels")
    out = args.out or Path("sweeps") / sweep.name
    if args.resume and args.force:
        raise UsageError("--resume continues the sweep in --out, --force starts it over: "
                         "give one")
    try:
        run_sweep(sweep, out, grid=grid, trials=args.trials, seed=args.seed,
                  resume=args.resume, force=args.force, workers=args.workers,
                  scheduler=args.scheduler,
                  dask_local=args.dask, batch=args.batch, progress=args.progress,
                  plot=not args.no_plot, x_axis=args.x_axis, chips=args.chips)
    except SweepError as e:
        raise UsageError(str(e)) from None
    except KeyboardInterrupt:
        print(f"\nchipforge sweep: interrupted; the finished trials are saved in {out}; "
              f"run the same command with --resume to continue", file=sys.stderr)
        return 130
    return 0


def _add_rtl(p: argparse.ArgumentParser) -> None:
    from chipforge.hw.generate import BLOCKS

    p.add_argument("block", choices=[*BLOCKS, "all", "tile", "selector"],
                   help="block to generate, all, tile (with --accelerator and --layer), or "
                        "selector MODEL [--selector NAME] (a ViT's token selector)")
    p.add_argument("model", nargs="?", help="selector: the ViT (e.g. vit-digits-keep60)")
    p.add_argument("--selector", default="0", help="selector: node name or index (default 0)")
    p.add_argument("--center", choices=["model", "on", "off"], default="model",
                   help="selector: score tokens relative to the image's mean token (on), "
                        "each alone (off), or as the model's selectors do (default)")
    p.add_argument("--accelerator", default="isaac", help="tile: ReRAM preset (isaac, forms8...)")
    p.add_argument("--layer", help="tile: MODEL:LAYER it is sized for (lenet-digits:conv1, "
                                   "model.onnx:c2.Conv; a zoo name, .onnx or .npz model)")
    p.add_argument("--data", default="digits", metavar="FILE.npz|digits",
                   help="tile: calibration data of a float model (quantized as simulate "
                        "quantizes it); selector: formats calibrated on these images when "
                        "the model stores no calibration (default digits)")
    p.add_argument("--samples", type=int, help="--data: read only the first N inputs")
    p.add_argument("--force", action="store_true",
                   help="synthesize a tile estimated far larger than the device (or longer "
                        "than 5 minutes) anyway")
    p.add_argument("--out", type=Path, default=Path("rtl"),
                   help="output directory (default: rtl/); files go to OUT/BLOCK/")
    p.add_argument("--lint", action="store_true", help="run verilator --lint-only -Wall")
    p.add_argument("--synth", choices=["generic", "ice40", "xilinx"],
                   help="synthesize with yosys and print the cell counts")


@command("rtl", "write the Verilog of a hardware block plus manifest.json")(_add_rtl)
def _run_rtl(args: argparse.Namespace) -> int:
    from chipforge.hw.generate import BLOCKS, generate
    from chipforge.toolchain import lint_verilog, synthesize

    names = list(BLOCKS) if args.block == "all" else [args.block]
    check_output_dir(args.out, option="--out")
    for name in names:
        if name == "tile":  # chipforge.hw.generate.generate_tile
            from chipforge.hw.generate import generate_tile
            if not args.layer:
                raise UsageError("rtl tile needs --layer MODEL:LAYER (e.g. lenet-digits:conv1)")
            if args.samples is not None and args.samples < 1:
                raise UsageError(f"--samples must be >= 1, not {args.samples}")
            notes: list[str] = []
            try:
                paths = generate_tile(args.accelerator, args.layer, args.out, data=args.data,
                                      samples=args.samples, notes=notes)
            except ValueError as err:
                raise UsageError(str(err)) from None
            for note in notes:
                print(f"tile: note: {note}")
            module = paths[0].stem
        elif name == "selector":  # chipforge.hw.generate.generate_selector
            from chipforge.hw.generate import generate_selector
            if not args.model:
                raise UsageError("rtl selector needs a MODEL (e.g. vit-digits-keep60)")
            try:
                center = {"model": None, "on": True, "off": False}[args.center]
                notes = []
                paths = generate_selector(args.model, args.out, selector=args.selector,
                                          center=center, data=args.data,
                                          samples=args.samples, notes=notes)
            except ValueError as err:
                raise UsageError(str(err)) from None
            for note in notes:
                print(f"selector: note: {note}")
            module = paths[0].stem
        else:
            paths = generate(name, args.out)
            module = BLOCKS[name].module
        print(f"{name}: wrote {', '.join(str(p) for p in paths)}")
        verilog_path = paths[0]
        if args.lint:
            lint_verilog(verilog_path, module)
            print(f"{name}: verilator --lint-only -Wall: clean")
        if args.synth:
            if name == "tile":    # an estimate first: a large tile takes many minutes
                _check_tile_size(paths[1], args.synth, force=args.force)
            counts = synthesize(verilog_path, module, args.synth)
            print(f"{name}: yosys synth ({args.synth}, technology mapping only):")
            for cell, count in sorted(counts.items()):
                print(f"    {cell:<12} {count:>7}")
    return 0


def _check_tile_size(manifest_path: Path, target: str, *, force: bool) -> None:
    """Print the tile's estimated size and synthesis time; refuse one far too large for the
    device (or slow to synthesize) unless ``force``."""
    import json

    from chipforge.hw.estimate import estimate_tile
    from chipforge.hw.reram_tile import TileConfig

    cfg = TileConfig.from_dict(json.loads(manifest_path.read_text())["config"])
    estimate = estimate_tile(cfg, target)
    print(f"tile: {estimate.summary()}")
    if (estimate.far_too_large or estimate.seconds > 300) and not force:
        raise UsageError(f"the tile is estimated at {estimate.luts:,} LUT4, "
                         f"{estimate.luts / estimate.device_luts:.1f}x the {estimate.device}, "
                         f"about {estimate.seconds / 60:.0f} min of synthesis: add --force to "
                         "synthesize it anyway (the Verilog is written)")


def _add_ref(p: argparse.ArgumentParser) -> None:
    p.add_argument("block", choices=["crossbar"], help="reference model to run")
    p.add_argument("--batch", type=int, default=256, help="input vectors (default 256)")
    p.add_argument("--seed", type=int, default=0)


@command("ref", "run a block's bit-exact reference model against numpy")(_add_ref)
def _run_ref(args: argparse.Namespace) -> int:
    import numpy as np

    from chipforge.config import ISAAC_CROSSBAR
    from chipforge.sim.ref.crossbar import adc_codes, encode_weights, shift_add

    if args.batch < 1:
        raise UsageError(f"--batch must be >= 1, not {args.batch}")
    if args.seed < 0:
        raise UsageError(f"--seed must be >= 0, not {args.seed}")
    cfg = ISAAC_CROSSBAR
    from chipforge.guard import available_memory

    need = args.batch * cfg.rows * 8 * 6   # inputs, bit planes, codes: int64 each, roughly
    if need > available_memory():
        raise UsageError(f"--batch {args.batch} needs about {need / 2**30:.1f} GiB, more "
                         f"than the {available_memory() / 2**30:.1f} GiB available; use a "
                         "smaller --batch")
    rng = np.random.default_rng(args.seed)
    weights = rng.integers(*cfg.weight_range, endpoint=True, size=(cfg.rows, cfg.cols))
    x = rng.integers(*cfg.input_range, endpoint=True, size=(args.batch, cfg.rows))
    start = time.perf_counter()
    cells = encode_weights(weights, cfg)
    readout = adc_codes(x, cells, cfg)
    result = shift_add(readout.codes, readout.unit, readout.flipped, cfg)
    elapsed = time.perf_counter() - start
    exact = x @ weights
    mismatches = int((result != exact).sum())
    print(f"ISAAC crossbar reference ({cfg.rows}x{cfg.cols}, {cfg.weight_bits}-bit weights in "
          f"{cfg.slices} x {cfg.cell_bits}-bit cells, {cfg.input_bits}-bit inputs over "
          f"{cfg.input_cycles} cycles, {cfg.adc_bits}-bit ADC, flip encoding "
          f"{'on' if cfg.flip_encoding else 'off'})")
    print(f"  batch {args.batch}, seed {args.seed}: {readout.codes.size + readout.unit.size} "
          f"ADC conversions in {elapsed * 1e3:.1f} ms")
    print(f"  flipped columns: {int(cells.flipped.sum())} of {cells.flipped.size}; "
          f"largest ADC code {int(readout.codes.max())} of {cfg.adc_max_code}; "
          f"saturated: {'yes' if readout.saturated else 'no'}")
    print(f"  result vs numpy x @ W: {mismatches} mismatches of {exact.size}")
    return 0 if mismatches == 0 or readout.saturated else 1


def _add_import(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="an .onnx file (float or QDQ-quantized), an .npz graph, or a "
                                 "zoo model name")
    p.add_argument("--out", type=Path, help="write the imported graph to this .npz")
    p.add_argument("--to-onnx", type=Path, metavar="PATH",
                   help="write the graph as ONNX (QDQ for quantized layers), e.g. to run a "
                        "zoo model in onnxruntime")


@command("import", "import an ONNX model into chipforge's IR and list its layers")(_add_import)
def _run_import(args: argparse.Namespace) -> int:
    from chipforge.importers.model import layer_table, load_model
    from chipforge.sim.graph import save_graph

    for option, path, suffix in (("--out", args.out, ".npz"),
                                 ("--to-onnx", args.to_onnx, ".onnx")):
        if path is not None:
            check_output_file(path, option=option)
            if path.suffix.lower() != suffix:   # the file's type, not a name's guess
                raise UsageError(f"{option} {path}: must end in {suffix} (it is written as "
                                 f"{'an' if suffix == '.onnx' else 'a'} {suffix} file)")
    graph = load_model(args.model)
    print(f"{graph.name}: input {graph.input_shape}, {len(graph.nodes)} nodes, "
          f"{len(graph.weighted_nodes())} weighted")
    print(layer_table(graph))
    if args.out:
        save_graph(graph, args.out)
        print(f"wrote {args.out}")
    if args.to_onnx:
        from chipforge.importers.onnx_export import save_onnx

        save_onnx(graph, args.to_onnx)
        print(f"wrote {args.to_onnx}")
    return 0


def _add_heatvit(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="vit-digits", help="zoo model (default vit-digits)")
    p.add_argument("--selectors", default="keep50", choices=["keep80", "keep60", "keep50",
                                                             "none"],
                   help="token-selector variant (default keep50)")
    p.add_argument("--float", action="store_true", help="float instead of 8-bit fixed point")
    p.add_argument("--images", type=int, default=None, help="test images (default all 360)")


@command("heatvit", "HeatViT: a ViT with token selectors on the FPGA engine model")(
    _add_heatvit)
def _run_heatvit(args: argparse.Namespace) -> int:
    from chipforge.heatvit import run_heatvit

    if args.images is not None and args.images < 1:
        raise UsageError(f"--images must be >= 1, not {args.images}")
    r = run_heatvit(args.model, selectors=None if args.selectors == "none" else args.selectors,
                    fixed=not args.float, n_images=args.images)
    cyc = r["cycles_per_image"]
    print(f"{r['model']} on {r['images']} digits test images "
          f"({'8-bit fixed point' if r['fixed_point'] else 'float'}):")
    print(f"  accuracy {r['accuracy']:.4f} (no selectors: {r['accuracy_no_selectors']:.4f})")
    print(f"  live tokens per block {', '.join(f'{t:.2f}' for t in r['tokens_per_block'])}")
    print(f"  MACs per image {r['macs_per_image']:.0f} ({r['mac_reduction']:.1%} fewer)")
    print(f"  engine cycles per image {cyc['mean']:.0f} (min {cyc['min']:.0f}, max "
          f"{cyc['max']:.0f}), {r['latency_us']:.2f} us; speedup {r['speedup']:.2f}x over "
          f"the same engine without selectors")
    print(f"  cycles per block {', '.join(f'{c:.0f}' for c in r['cycles_per_block'])}; "
          f"per selector {', '.join(f'{c:.0f}' for c in r['cycles_per_selector']) or '-'}")
    return 0


def _add_zoo(p: argparse.ArgumentParser) -> None:
    from chipforge.zoo.cli import add_arguments

    add_arguments(p)


@command("zoo", "list the bundled models, or retrain one from its recipe")(_add_zoo)
def _run_zoo(args: argparse.Namespace) -> int:
    from chipforge.zoo.cli import run

    if getattr(args, "out", None) is not None:
        check_output_file(args.out, option="--out")  # before training, not after
    return run(args)


def _add_compress(p: argparse.ArgumentParser) -> None:
    from chipforge.compress import add_arguments

    add_arguments(p)


@command("compress", "compress your model for an accelerator (forms, isqed, pim-qat, superbnn, "
                     "heatvit)")(
    _add_compress)
def _run_compress(args: argparse.Namespace) -> int:
    from chipforge.compress import run_cli

    return run_cli(args)


def build_parser() -> argparse.ArgumentParser:
    from chipforge import __version__

    parser = argparse.ArgumentParser(
        prog="chipforge",
        description="Simulate compressed neural networks on virtual accelerators (simulate), "
                    "generate verified Verilog of their digital blocks (rtl), and sweep "
                    "faults and design parameters (sweep).")
    parser.add_argument("--version", action="version", version=f"chipforge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (help_text, add_arguments, _) in COMMANDS.items():
        add_arguments(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def _add_cycles(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a model .npz, a zoo model name, or 'resnet18-shaped'")
    p.add_argument("--arch", nargs="+", default=["isaac8", "forms8"],
                   help="architectures: isaac, isaac8, forms4, forms8, forms16 "
                        "(default: isaac8 forms8)")
    p.add_argument("--images", type=int,
                   help="inputs the cycle model runs on (default 64 digits test images; with "
                        "--data 100, as simulate's --cycle-samples)")
    p.add_argument("--data", metavar="FILE.npz|digits",
                   help="run the model simulate runs (8-bit quantized when float) on these "
                        "inputs, as `chipforge simulate --data` (default: digits upsampled, "
                        "float model at 16-bit activations)")
    p.add_argument("--samples", type=int,
                   help="with --data: load the first N inputs, as simulate --samples")
    p.add_argument("--plot", type=Path, help="write the energy breakdown as a PNG here")
    p.add_argument("--components", action="store_true",
                   help="also print the ISAAC / FORMS component tables and chip totals")


@command("cycles", "cycle-level ISAAC / FORMS simulation: cycles, latency, fps, energy, "
                   "area")(_add_cycles)
def _run_cycles(args: argparse.Namespace) -> int:
    import numpy as np

    from chipforge.cycles import cycles_on_data, describe_model
    from chipforge.sim.cycle.components import FORMS8_CHIP, ISAAC_CHIP
    from chipforge.sim.cycle.report import (
        cycle_reports,
        format_breakdown,
        format_comparison,
        format_report,
        plot_breakdown,
    )
    from chipforge.zoo.data import digits

    for flag in ("images", "samples"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise UsageError(f"--{flag} must be >= 1, not {getattr(args, flag)}")
    if args.samples is not None and args.data is None:
        raise UsageError("--samples applies to --data (the digits default takes --images)")
    if args.data is not None and args.model == "resnet18-shaped":
        raise UsageError("--data does not apply to resnet18-shaped (a synthetic workload "
                         "calibrated on digits); give a model file or zoo name")
    if args.plot is not None:
        check_output_file(args.plot, option="--plot")
    args.images = args.images or (None if args.data else 64)
    if args.data is not None:
        run = cycles_on_data(args.model, args.data, args.arch, samples=args.samples,
                             images=args.images)
        print(run.describe())
        graph, reports = None, run.reports
    elif args.model == "resnet18-shaped":
        from chipforge.sim.cycle.workloads import resnet18_shaped

        x = np.repeat(digits(32).x_test[:args.images], 3, axis=1).astype(np.float64)
        graph = resnet18_shaped(x)
    else:
        from chipforge.importers.model import load_model

        graph = load_model(args.model)    # an .npz graph, an .onnx file or a zoo name
        size = graph.input_shape[-1]
        if size % 8 or len(graph.input_shape) != 3 or graph.input_shape[1] != size:
            raise UsageError(f"model {args.model} takes inputs of shape {graph.input_shape}; "
                             "the default data, digits, comes as square images of 8, 16, 24 "
                             "or 32 pixels: give your inputs with --data FILE.npz")
        x = digits(size).x_test[:args.images]
        if graph.input_shape[0] != x.shape[1]:
            x = np.repeat(x, graph.input_shape[0], axis=1)
    if graph is not None:
        print(f"data: {len(x)} digits test images upsampled to {tuple(x.shape[1:])} (the "
              "default; --data FILE.npz or --data digits runs the model simulate runs)")
        bits = describe_model(graph)
        print(f"model: {bits}" + (" (activations taken at 16 bits by the cycle model, "
                                  "not the 8-bit model simulate runs: use --data)"
                                  if bits.endswith("float") else ""))
    if args.components:
        print(ISAAC_CHIP.table())
        print(FORMS8_CHIP.table())
    if graph is not None:
        reports = cycle_reports(graph, x, args.arch)
    for r in reports:
        print(format_report(r))
    print("energy per frame by component (nJ):")
    print(format_breakdown(reports))
    print(f"relative to {reports[0].arch.name}:")
    print(format_comparison(reports))
    if args.plot:
        print(f"wrote {plot_breakdown(reports, args.plot)}")
    if args.data is not None:
        from chipforge.stages import format_stages

        print(format_stages(run.stages))
    return 0


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _os_error(e: OSError) -> str:
    """A file-system error as 'PATH: reason' (what the user can act on), else its text."""
    if e.filename is not None and e.strerror:
        return f"{e.filename}: {e.strerror}"
    return str(e) or type(e).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. Bad input (a ``UsageError`` or ``ValueError``, a file that cannot be
    read or written) is one line on stderr and exit status 2; a missing HDL tool is 3;
    Ctrl-C is 130; anything else is a bug, reported in one line with status 1 (set
    ``CHIPFORGE_DEBUG=1`` for the traceback)."""
    import os

    args = build_parser().parse_args(argv)
    name = f"chipforge {args.command}"
    try:
        return COMMANDS[args.command][2](args)
    except (UsageError, ValueError) as e:
        print(f"{name}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"{name}: error: {_one_line(_os_error(e))}", file=sys.stderr)
        return 2
    except MemoryError:
        if os.environ.get("CHIPFORGE_DEBUG"):
            raise
        print(f"{name}: error: out of memory (use fewer samples, a smaller model or fewer "
              "workers; CHIPFORGE_DEBUG=1 shows where)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\n{name}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        from chipforge.toolchain import ToolMissingError

        if isinstance(e, ToolMissingError):
            print(f"{name}: error: {e}", file=sys.stderr)
            return 3
        if os.environ.get("CHIPFORGE_DEBUG"):
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        print(f"{name}: internal error: {type(e).__name__}: {first} (a bug in chipforge; "
              "set CHIPFORGE_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
