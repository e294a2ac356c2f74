"""``chipforge.simulate``: run a model on a virtual accelerator, the one entry point of
``chipforge simulate`` (the CLI calls :func:`simulate`; so does
:func:`chipforge.mainjob.run_main_job`, kept for compatibility).

::

    import chipforge
    result = chipforge.simulate("lenet-digits-forms8", accelerator="forms8", variation=0.1,
                                seed=1, chips=4, out="build/report")
    print(result.summary())
    result.accuracy_ideal, result.accuracy_hardware, result.metrics["crossbars"]
    result.accuracy_hardware_spread, result.chips, result.cost, result.paths["json"]

``model`` is a zoo name, an ``.onnx`` file (:func:`chipforge.importers.onnx.load_onnx`),
a ``.npz`` graph file or a :class:`~chipforge.sim.graph.Graph` (e.g. from
:func:`chipforge.from_torch`), float or quantized; ``data`` is ``"digits"`` (the shared
digits test split; None means the same), the path of an ``.npz`` of inputs and labels (read
without pickle and checked: :func:`chipforge.importers.model.load_data`), an ``(x, y)``
pair or a :class:`chipforge.zoo.data.Dataset` (its test split). ``accelerator`` is a preset
of any registered family (``forms8``, ``cap-ram``, ``superbnn``, ``heatvit``, ...),
``FAMILY:PRESET``, an accelerator ``.toml`` file or a family's config object
(:mod:`chipforge.families`). The family maps the graph, runs it with the seed and reports
the *ideal* accuracy (what ideal hardware computes; the family says what that is) next to
the *hardware* accuracy, from the same samples.
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from chipforge.stages import StageTimer

__all__ = ["Simulation", "SimulationResult", "layer_errors", "load_model", "simulate",
           "simulate_chips", "simulate_graph"]


@dataclasses.dataclass
class SimulationResult:
    """What a simulation measured."""

    model: str
    accelerator: str
    samples: int
    accuracy_float: float | None
    """Accuracy of the float model (None when the graph has no float view)."""
    accuracy_ideal: float
    """Accuracy of the quantized model with exact arithmetic (ideal hardware)."""
    accuracy_hardware: float
    """Accuracy on the simulated hardware (non-idealities included)."""
    agreement: float
    """Fraction of samples whose hardware prediction equals the ideal prediction."""
    seed: int
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Accelerator-specific numbers (crossbars, cells, utilization, ADC reads, ...)."""
    layers: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    """Per-layer statistics."""
    config: dict[str, Any] = dataclasses.field(default_factory=dict)
    """The accelerator config as a plain dict."""
    seconds: float = 0.0
    ideal_label: str = "quantized model, exact integer arithmetic"
    """What "ideal" means for this accelerator family."""
    family: str = ""
    """The accelerator family (:mod:`chipforge.families`)."""
    cost: dict[str, Any] | None = None
    """The family's cost report as plain data (cycles, latency_s, throughput_per_s,
    energy_j, area_mm2, per layer and in total; None: not computed or no cost model)."""
    stages: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    """Measured wall and CPU seconds per stage (:mod:`chipforge.stages`): the interface
    steps (import, data, quantize, map, run, cost) and the family's parts of ``run``."""
    chips: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    """One row per simulated chip (``chip``, ``seed``, ``accuracy_hardware``,
    ``agreement``); ``accuracy_hardware`` and ``agreement`` above are their means."""
    accuracy_hardware_spread: dict[str, Any] | None = None
    """Over several chips: :func:`chipforge.chips.spread` of their hardware accuracies
    (``chips``, ``mean``, ``std``, ``ci95_low``, ``ci95_high``); None for one chip."""
    campaign: dict[str, Any] | None = None
    """A sharded campaign's facts (:mod:`chipforge.campaign`): ``chips``, ``samples``,
    ``chunk_size``, ``shards`` (computed / reused), ``backend``, ``workers``, ``wall_s``,
    ``chip_images_per_s`` (the shards computed by this call over its wall time, worker
    start-up included), ``programmings`` and ``program_s_per_chip``; None unsharded."""
    notes: list[str] = dataclasses.field(default_factory=list)
    """What the run did beyond the plain simulation (post-training quantization,
    provenance, no cost model)."""
    paths: dict[str, Path] = dataclasses.field(default_factory=dict)
    """Report files written with ``out=``: json, accuracy, layers (PNG)."""
    cost_report: Any = dataclasses.field(default=None, repr=False, compare=False)
    """The family's :class:`~chipforge.families.base.CostReport` object behind ``cost``
    (None: no cost model); report.json holds ``cost`` instead."""

    @property
    def accuracy_drop(self) -> float:
        """Ideal minus hardware accuracy, in points of accuracy (0..1 scale)."""
        return self.accuracy_ideal - self.accuracy_hardware

    def summary(self, *, stages: bool = True) -> str:
        """The text report; ``stages=False`` leaves out the stage times (the main job
        prints them last)."""
        over = f", {len(self.chips)} chips" if len(self.chips) > 1 else ""
        lines = [f"{self.model} on {self.accelerator} ({self.samples} samples, seed "
                 f"{self.seed}{over})"]
        if self.accuracy_float is not None:
            lines.append(f"  accuracy float           {100 * self.accuracy_float:6.2f} %")
        lines += [f"  accuracy ideal           {100 * self.accuracy_ideal:6.2f} %   "
                  f"({self.ideal_label})",
                  f"  accuracy hardware{' mean' if over else '     '}   "
                  f"{100 * self.accuracy_hardware:6.2f} %   "
                  f"(drop {100 * self.accuracy_drop:+.2f} points; "
                  + (f"{100 * self.agreement:.1f} % same predictions)"
                     if self.agreement == self.agreement else "same predictions: n/a)")]
        if len(self.chips) > 1:
            # hardware accuracy and agreement above are the means over the chips
            s = self.accuracy_hardware_spread or {}
            lines.append(f"  {'over ' + str(len(self.chips)) + ' chips':<24} std "
                         f"{100 * s.get('std', 0.0):.2f} points, 95 % interval of the mean "
                         f"[{100 * s['ci95_low']:.2f}, {100 * s['ci95_high']:.2f}] %")
            lines.append("    chip  seed                 accuracy hardware  same predictions")
            lines += [f"    {r['chip']:<4}  {r['seed']:<19}  {100 * r['accuracy_hardware']:15.2f} %"
                      f"  {100 * r['agreement']:14.1f} %" for r in self.chips]
        if self.campaign:
            lines += _campaign_lines(self.campaign)
        if self.cost:
            c = self.cost
            from chipforge.report import format_extra, si

            for key, label, unit in (("latency_s", "latency", "s"),
                                     ("throughput_per_s", "throughput", "inferences/s"),
                                     ("energy_j", "energy per inference", "J")):
                if c.get(key) is not None:
                    lines.append(f"  {label:<24} {si(c[key], unit)}")
            if c.get("area_mm2") is not None:
                lines.append(f"  {'area':<24} {c['area_mm2']:.4g} mm^2")
            for key, value in (c.get("extra") or {}).items():
                lines.append(f"  {format_extra(key, value)}")
            for key, text in (c.get("includes") or {}).items():
                lines.append(f"  ({key}: {text})")
        for key, value in self.metrics.items():
            text = f"{value:.4g}" if isinstance(value, float) else str(value)
            lines.append(f"  {key:<24} {text}")
        if self.layers:
            # (the per-layer errors get their own table below)
            keys = [k for k, v in self.layers[0].items()
                    if isinstance(v, int | float | str | list | tuple)
                    and k not in ("relative_error", "snr_db")][:10]
            rows = [[_cell(layer.get(k, '')) for k in keys] for layer in self.layers]
            widths = [max(len(k), *(len(r[i]) for r in rows)) for i, k in enumerate(keys)]
            lines.append("  per layer:")
            lines.append("    " + "  ".join(k.ljust(w) for k, w in zip(keys, widths, strict=True)))
            for r in rows:
                lines.append("    " + "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))
        errors = layer_errors(self)
        if errors is not None:
            from chipforge.sim.layer_error import format_layer_errors

            lines.append(f"  per-layer error vs the ideal run ({errors['samples']} samples; "
                         "errors compound through the layers):")
            lines.append(format_layer_errors(errors["layers"]))
        if self.cost_report is not None:
            from chipforge.report import format_cost

            lines.append(format_cost(self.cost_report))
        if stages and self.stages:
            from chipforge.stages import format_stages

            lines.append(format_stages(self.stages))
        lines += [f"note: {n}" for n in self.notes]
        if self.paths:
            lines.append("report: " + ", ".join(str(p) for p in self.paths.values()))
        return "\n".join(lines)


def _campaign_lines(c: dict[str, Any]) -> list[str]:
    rate = c.get("chip_images_per_s")
    lines = [f"  {'campaign':<24} {c['chips']} chips x {c['samples']} samples in "
             f"{c['shards']} shards of <= {c['chunk_size']} samples on {c['backend']}",
             f"  {'':<24} {c['shards_computed']} shards computed, {c['shards_reused']} "
             f"reused from an earlier run; {c['wall_s']:.2f} s wall"
             + (f" ({c['startup_s']:.2f} s starting workers)" if c.get("startup_s") else "")
             + (f", {rate:.3g} chip-images/s" if rate else "")]
    if c.get("programmings"):
        lines.append(f"  {'':<24} {c['chips']} chips programmed {c['programmings']} times "
                     f"({c['program_s_per_chip']:.3g} s each, stage 'program'; a chip split "
                     "between workers near the end is programmed on each)")
    return lines


def layer_errors(result: SimulationResult) -> dict[str, Any] | None:
    """The per-layer error table of a run (rows with ``relative_error`` and ``snr_db``,
    :mod:`chipforge.sim.layer_error`) as ``{"samples": N, "layers": [...]}``; None when
    the run did not measure it (``--layer-errors N``)."""
    rows = [{"node": r.get("node", ""), "relative_error": r["relative_error"],
             "snr_db": r["snr_db"]} for r in result.layers
            if "relative_error" in r and "snr_db" in r]
    if not rows:
        return None
    return {"samples": result.metrics.get("layer_error_samples"), "layers": rows}


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, list | tuple):
        return "x".join(str(v) for v in value)
    return str(value)


def load_model(model: Any):
    """A Graph from a Graph, an ``.onnx`` file, a ``.npz`` path or a zoo name."""
    from chipforge.sim.graph import Graph, load_graph

    if isinstance(model, Graph):
        return model
    text = str(model)
    if text.lower().endswith(".onnx"):
        from chipforge.importers.onnx import load_onnx

        return load_onnx(text)
    if text.endswith(".npz") or Path(text).is_file():
        return load_graph(text)
    try:
        from chipforge.zoo import load
    except ImportError:
        raise ValueError(f"model {text!r} is not a file and this chipforge has no model zoo "
                         "loader") from None
    return load(text)


def _test_data(graph, data) -> tuple[np.ndarray, np.ndarray]:
    from chipforge.families import test_data

    return test_data(graph, data)


def simulate(model: Any, accelerator: Any = "forms8", data: Any = "digits", *,
             out: str | Path | None = None, samples: int | None = None, seed: int = 0,
             chips: int = 1, quantize: str = "auto",
             progress: bool | Callable[[int], None] | None = None,
             overrides: dict[str, Any] | None = None, cycle_samples: int = 100,
             run_options: dict[str, Any] | None = None, workers: int | None = None,
             dask: bool = False, scheduler: str | None = None,
             chunk_size: int | None = None, cost: bool = True,
             **options: Any) -> SimulationResult:
    """Simulate ``model`` on ``accelerator``: what ``chipforge simulate`` does, step by step
    (the CLI calls this function; see the module doc).

    1. **model**: the family's ``load_model`` (a Graph, ``.onnx``, ``.npz`` or zoo name);
    2. **data**: ``"digits"`` (None means the same), an ``.npz`` path, an ``(x, y)`` pair or
       a Dataset; the first ``samples`` of it;
    3. **quantize**: a float model on a family that needs integers gets post-training 8-bit
       quantization calibrated on the digits *training* split for ``data="digits"``, else
       on the first 256 given inputs (``quantize="off"``: a float layer is an error);
    4. **map** once, then **run** ``chips`` independently programmed chips with the seeds
       :func:`chipforge.chips.chip_seeds` derives from ``seed`` (chip 0 is ``seed``
       itself, so ``chips=1`` is the plain run). ``accuracy_hardware`` and ``agreement``
       are the means over chips; ``chips`` holds each chip's row and
       ``accuracy_hardware_spread`` the mean, std and 95 % interval
       (:func:`chipforge.chips.spread`);
       the float and ideal accuracies do not depend on the chip and are computed once where
       the family lets a run reuse them;
    5. **cost**: the family's cost model on the first ``cycle_samples`` inputs (``cost``
       None and a note when the family has none; ``cost=False`` skips it, for quick
       accuracy-only runs);
    6. **report**: with ``out``, ``report.json``, ``accuracy.png`` and ``layers.png``
       there (``paths``).

    ``overrides`` set config fields by dotted key (``{"adc.bits": 6}``); ``options`` are
    the family's convenience options (ReRAM ``variation``, ``fault_rate``, ...; AQFP
    ``sigma_ua``, ...); ``run_options`` the family's run options (ReRAM ``max_memory``,
    ``device_kind``, ``layer_errors``, ``adc_range``). Each is validated by the family
    before any work starts. ``progress``: None shows progress bars on stderr when it is a
    terminal, True always, False never; a callable is told each chunk of ``n`` samples the
    hardware runs finished instead. ``notes`` of the result say what was done beyond the
    plain run (quantization, provenance, no cost model); ``stages`` the measured seconds
    of each step (:mod:`chipforge.stages`).

    **Campaigns** (:mod:`chipforge.campaign`): any of ``workers`` (a local process pool of
    that many), ``dask`` (a Dask LocalCluster), ``scheduler`` (a Dask scheduler address) or
    ``chunk_size`` (samples per shard, default 64) shards the ``chips`` x samples into
    (chip, sample chunk) tasks run in parallel; the per-chip results are identical to the
    unsharded run. With ``out`` each finished shard is kept in ``out/campaign.jsonl``, and
    the same call again resumes from it. ``result.campaign`` holds the throughput in
    chip-images per second and the programming count."""
    from tqdm import tqdm

    from chipforge.chips import chip_seeds
    from chipforge.families import get_accelerator_spec
    from chipforge.mainjob import load_inputs
    from chipforge.stages import StageTimer

    if quantize not in ("auto", "off"):
        raise ValueError(f"quantize must be 'auto' or 'off', not {quantize!r}")
    if samples is not None and (isinstance(samples, bool) or samples < 1):
        raise ValueError(f"samples must be >= 1, not {samples}")
    if isinstance(cycle_samples, bool) or not isinstance(cycle_samples, int) \
            or cycle_samples < 1:
        raise ValueError(f"cycle_samples must be an integer >= 1, not {cycle_samples!r}")
    seeds = chip_seeds(seed, chips)       # checks seed and chips
    sharded = workers is not None or dask or scheduler is not None or chunk_size is not None
    if out is not None:                   # before the simulation, not after it
        from chipforge.guard import check_output_dir

        check_output_dir(out, option="out")
    spec = get_accelerator_spec(accelerator, overrides=overrides, options=options)
    family = spec.family
    run_options = dict(run_options or {})
    foreign = [k for k in run_options if k not in family.run_options]
    if foreign:
        raise ValueError(f"run option(s) {', '.join(foreign)} do not apply to accelerator "
                         f"{spec.name!r} (family {family.name}; its run options: "
                         f"{', '.join(family.run_options) or 'none'})")
    family.check_run_options(run_options)      # before the model loads, not after
    if sharded:
        from chipforge.campaign import CampaignError

        if not callable(getattr(family, "program", None)):
            raise CampaignError(f"accelerator {spec.name} (family {family.name}) does not "
                                "shard a campaign (no separate programming step): run "
                                "chips=N without workers, dask, scheduler or chunk_size")
        if run_options.get("layer_errors"):
            raise CampaignError("--layer-errors measures one chip on a few samples: run it "
                                "without --workers, --dask, --scheduler or --chunk-size")
    data = "digits" if data is None else data
    told = progress if callable(progress) else None
    disable = True if told is not None else (None if progress is None else not progress)
    steps = ["model", "data", "quantize", "functional simulation", "cost model", "report"]
    bar = tqdm(total=len(steps), disable=disable, file=sys.stderr, unit="step",
               bar_format="{desc:<32} {bar} {n_fmt}/{total_fmt} [{elapsed}]")
    notes: list[str] = []
    timer = StageTimer()

    def step(name: str) -> None:
        if name:
            bar.set_description(f"chipforge simulate: {name}")
        else:
            bar.update()

    try:
        graph, x, y = load_inputs(family, model, data, samples=samples, quantize=quantize,
                                  notes=notes, timer=timer, step=step)
        if run_options.get("adc_range") == "calibrated":
            from chipforge.mainjob import adc_calibration_inputs

            with timer("data"):
                label, x_calib = adc_calibration_inputs(
                    family, graph, data, run_options.get("adc_calibration"), x, samples)
            run_options["adc_calibration"] = (label, x_calib)
            notes.append(f"ADC full scale calibrated on {label}")
        step("functional simulation")
        if sharded:
            from chipforge.campaign import run_campaign

            with timer("map"):
                mapped = family.map(graph, spec.config)
            sim = run_campaign(spec, graph, mapped, x, y, seeds, out=out, workers=workers,
                               dask=dask, scheduler=scheduler, chunk_size=chunk_size,
                               run_options=run_options, progress=progress, timer=timer,
                               echo=None if disable is True else
                               (lambda line: tqdm.write(line, file=sys.stderr)))
        else:
            sim = None
        # mininterval=0, miniters=1: a family reports at most ~20 chunks, so draw every one
        if sim is None:
            images = tqdm(total=len(x) * len(seeds), disable=disable, file=sys.stderr,
                          unit="img", desc="  hardware run", position=1, leave=False,
                          dynamic_ncols=True, mininterval=0, miniters=1)
            try:
                # no bar shown and no callable: no progress, so the family runs the batch
                # in its memory plan's chunks, not in 20ths for a steady ETA (same results)
                shown = None if images.disable else images.update
                sim = simulate_chips(spec, graph, x, y, seeds, run_options=run_options,
                                     progress=told or shown, timer=timer,
                                     capture_samples=cycle_samples if cost else 0)
            finally:
                images.close()
        result = sim.result
        step("")
        step("cost model")
        report = None
        if cost:
            with timer("cost"):
                # the layer inputs the ideal run recorded, where it did (same values)
                captured = getattr(sim.output, "workloads", None)
                if captured is not None and _takes(family.cost, "workloads"):
                    sim.output.workloads = None         # held by the cost model only
                    report = family.cost(graph, sim.mapped, spec.config, x[:cycle_samples],
                                         workloads=captured)
                else:
                    report = family.cost(graph, sim.mapped, spec.config, x[:cycle_samples])
                del captured
            if report is None:
                notes.append(f"accelerator {spec.name} (family {family.name}) has no cost "
                             "model for this configuration: no latency or energy")
        else:
            notes.append("cost model skipped (cost=False): no latency, energy or area")
        if report is not None:
            result.cost = report.to_dict()
        result.cost_report = report
        result.notes = notes
        step("")
        step("report")
        if out is not None:
            from chipforge.report import write_report

            with timer("report"):
                section = family.report_section(spec.config, sim.mapped, sim.output, report)
                result.stages = timer.rows()
                result.paths = write_report(
                    result, out, cost=report, section=section,
                    extra={"notes": notes,
                           "provenance": getattr(graph, "meta", {}).get("provenance")})
        step("")
    finally:
        bar.close()
    result.stages = timer.rows()
    return result


def simulate_chips(spec, graph, x: np.ndarray, y: np.ndarray, seeds: list[int], *,
                   run_options: dict[str, Any] | None = None,
                   progress: Callable[[int], None] | None = None,
                   timer: StageTimer | None = None,
                   capture_samples: int = 0) -> Simulation:
    """Map ``graph`` once and run one chip per seed of ``seeds`` (from
    :func:`chipforge.chips.chip_seeds`). The first chip is :func:`simulate_graph` with its
    seed; the others reuse the mapping and, where the family's ``run`` takes them, the
    first chip's ideal logits (and skip the float run), which do not depend on the chip.
    The result's ``accuracy_hardware`` and ``agreement`` are means over the chips,
    ``chips`` one row per chip (``chip``, ``seed``, ``accuracy_hardware``,
    ``agreement``) and ``accuracy_hardware_spread`` :func:`chipforge.chips.spread` of the chips'
    accuracies (None for one chip); metrics and per-layer rows are the first chip's.
    ``capture_samples``: where the family's ``run`` takes it, the first chip's ideal run
    records the cost model's layer inputs on that many samples (``output.workloads``)."""
    from chipforge.chips import spread

    run = spec.family.run
    options = dict(run_options or {})
    if capture_samples and _takes(run, "capture_samples"):
        options["capture_samples"] = capture_samples
    first = simulate_graph(spec, graph, x, y, seed=seeds[0], run_options=options,
                           progress=progress, timer=timer)
    result = first.result
    rows = [_chip_row(0, seeds[0], result)]
    reuse = dict(run_options or {})
    if _takes(run, "ideal_logits"):
        reuse["ideal_logits"] = first.output.ideal_logits
    if _takes(run, "float_logits"):
        reuse["float_logits"] = False
    for chip, chip_seed in enumerate(seeds[1:], start=1):
        other = simulate_graph(spec, graph, x, y, seed=chip_seed, mapped=first.mapped,
                               run_options=reuse, progress=progress, timer=timer).result
        rows.append(_chip_row(chip, chip_seed, other))
    result.chips = rows
    if len(rows) > 1:
        result.accuracy_hardware_spread = spread([r["accuracy_hardware"] for r in rows])
        result.accuracy_hardware = result.accuracy_hardware_spread["mean"]
        result.agreement = sum(r["agreement"] for r in rows) / len(rows)
    if timer is not None:
        result.stages = timer.rows()
    return first


def _chip_row(chip: int, seed: int, result: SimulationResult) -> dict[str, Any]:
    return {"chip": chip, "seed": seed, "accuracy_hardware": result.accuracy_hardware,
            "agreement": result.agreement}


@dataclasses.dataclass
class Simulation:
    """One functional simulation with what a caller may reuse (the mapping, the outputs)."""

    result: SimulationResult
    mapped: Any
    """The family's :class:`~chipforge.families.base.Mapping`."""
    output: Any
    """The family's :class:`~chipforge.families.base.RunOutput`."""


def _merge_layers(mapped_rows: list[dict], run_rows: list[dict]) -> list[dict]:
    by_node = {r.get("node"): r for r in run_rows}
    rows = [dict(r) | by_node.pop(r.get("node"), {}) for r in mapped_rows]
    return rows + list(by_node.values())


def simulate_graph(spec, graph, x: np.ndarray, y: np.ndarray, *, seed: int = 0,
                   mapped=None, run_options: dict[str, Any] | None = None,
                   progress: Callable[[int], None] | None = None,
                   timer: StageTimer | None = None) -> Simulation:
    """Map (unless ``mapped`` is given) and run ``graph`` on the accelerator ``spec``
    (:class:`chipforge.families.AcceleratorSpec`); accuracies from the same samples.
    ``run_options`` go to the family's ``run`` (e.g. reused ideal logits in sweeps).
    ``progress(n)`` is told each chunk of ``n`` samples the hardware run finished (once,
    with all samples, for a family whose ``run`` takes no ``progress``). ``timer`` (a
    :class:`chipforge.stages.StageTimer`) collects the map and run times with the
    caller's other stages; the result's ``stages`` are its rows."""
    from chipforge.stages import StageTimer

    family, config = spec.family, spec.config
    timer = StageTimer() if timer is None else timer
    start = time.perf_counter()
    if mapped is None:
        with timer("map"):
            mapped = family.map(graph, config)
    options = dict(run_options or {})
    streams = progress is not None and _takes(family.run, "progress")
    if streams:
        options["progress"] = progress
    with timer("run"):
        out = family.run(graph, mapped, config, x, seed=seed, **options)
    if progress is not None and not streams:
        progress(len(x))
    timer.extend([dict(r, within=r.get("within", "run")) for r in out.stages])
    y = np.asarray(y)
    ideal_pred, hw_pred = out.ideal_logits.argmax(axis=1), out.logits.argmax(axis=1)
    metrics = {k: v for k, v in mapped.totals.items() if not k.startswith("_")}
    metrics.update(out.metrics)
    result = SimulationResult(
        model=graph.name, accelerator=spec.name, samples=len(x),
        accuracy_float=None if out.float_logits is None else _accuracy(out.float_logits, y),
        accuracy_ideal=_accuracy(out.ideal_logits, y), accuracy_hardware=_accuracy(out.logits, y),
        agreement=float((ideal_pred == hw_pred).mean()), seed=seed, metrics=metrics,
        layers=_merge_layers(mapped.layers, out.layers), config=config.to_dict(),
        ideal_label=out.ideal_label, family=family.name)
    result.seconds = time.perf_counter() - start
    result.stages = timer.rows()
    return Simulation(result, mapped, out)


def _takes(function: Callable[..., Any], name: str) -> bool:
    """Whether ``function`` has a parameter ``name`` (older families' ``run`` lack
    ``progress``)."""
    try:
        return name in inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False


def _accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    return float((logits.argmax(axis=1) == y).mean())


class _CallableModule(types.ModuleType):
    """Lets ``chipforge.simulate(model, accelerator=..., data=...)`` call :func:`simulate`
    while ``chipforge.simulate`` stays the module that holds it."""

    def __call__(self, *args: Any, **kwargs: Any) -> SimulationResult:
        return simulate(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
