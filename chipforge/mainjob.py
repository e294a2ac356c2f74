"""``chipforge simulate``'s main job: one call from a model to a report a person reads.

::

    from chipforge.mainjob import run_main_job
    job = run_main_job("model.onnx", accelerator="forms8", data="digits", out="build/report")
    job.simulation.accuracy_hardware, job.cost.throughput_per_s, job.paths["json"]

The accelerator is resolved first (:mod:`chipforge.families`: preset, TOML file, options
and ``--set`` overrides validated by the family's config), so a wrong option fails before
any work. Every step goes through the family's interface; no family is named here.
Steps (a progress bar on stderr names each):

1. **model** — a zoo name, an ``.onnx`` file (float or QDQ-quantized) or an ``.npz`` of the
   IR (the family's ``load_model``; by default :func:`chipforge.importers.model.load_model`);
2. **data** — ``"digits"`` (the shared test split) or an ``.npz`` of inputs and labels,
   read without pickle and validated (:func:`chipforge.importers.model.load_data`);
3. **quantize** — for families that need integer models, layers without quantization (a
   float ONNX model) get post-training 8-bit quantization
   (:func:`chipforge.mappings.quantize.quantize_graph`), calibrated on the digits
   *training* split for ``--data digits``, else on the first 256 given inputs;
   ``quantize="off"`` makes a float layer an error instead;
4. **functional simulation** — the family's ``map`` and ``run``
   (:func:`chipforge.simulate.simulate_graph`: accuracy of the float model where there is
   one, of ideal hardware and of the simulated hardware);
5. **cost model** — the family's ``cost`` where it has one: cycles, latency, throughput,
   energy, area per layer and in total, on the first ``cycle_samples`` inputs;
6. **report** — terminal table, ``report.json``, ``accuracy.png``, ``layers.png``
   (:func:`chipforge.report.write_report`), the family's own numbers in its section.

Each step's wall and CPU seconds are measured (:mod:`chipforge.stages`) and reported
(``stages`` in ``report.json``, a table at the end of the text report). While the hardware
runs, a second bar counts the samples done, their rate and the time left (ETA); both bars
go to stderr and show only on a terminal unless ``progress`` is True (False: never).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["ADC_CALIBRATION_SAMPLES", "MainJob", "adc_calibration_inputs", "load_inputs",
           "run_main_job"]


@dataclasses.dataclass
class MainJob:
    """Everything the main job measured and wrote."""

    simulation: Any
    """The :class:`~chipforge.simulate.SimulationResult`."""
    cost: Any | None
    """The family's :class:`~chipforge.families.base.CostReport` (None: no cost model)."""
    paths: dict[str, Path]
    """Report files: json, accuracy, layers (PNG)."""
    notes: list[str]
    """What the job did beyond the plain run (post-training quantization, ...)."""
    stages: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    """Measured wall and CPU seconds per step (:mod:`chipforge.stages`)."""

    @property
    def cycles(self) -> Any | None:
        """The family's own cost object (a cycle-model ``ModelReport`` for ReRAM)."""
        return None if self.cost is None else self.cost.native

    def summary(self) -> str:
        from chipforge.report import format_cost
        from chipforge.stages import format_stages

        lines = [self.simulation.summary(stages=False)]
        if self.cost is not None:
            lines.append(format_cost(self.cost))
        if self.stages:
            lines.append(format_stages(self.stages))
        lines += [f"note: {n}" for n in self.notes]
        if self.paths:
            lines.append("report: " + ", ".join(str(p) for p in self.paths.values()))
        return "\n".join(lines)


def load_inputs(family, model: Any, data: Any, *, samples: int | None = None,
                quantize: str = "auto", notes: list[str] | None = None, timer=None,
                step: Callable[[str], None] | None = None) -> tuple[Any, Any, Any]:
    """Steps 1-3 of the main job (model, data, quantize) as ``(graph, x, y)``: the model
    and data a family simulates, so that ``chipforge cycles --data`` runs the same ones.
    ``notes`` collects what was done (quantization, provenance); ``timer`` (a
    :class:`chipforge.stages.StageTimer`) the stage times; ``step(name)`` is told each
    step as it starts (and ``step("")`` at its end)."""
    from chipforge.compress import format_provenance  # how `chipforge compress` made it
    from chipforge.families import CALIBRATION_SAMPLES
    from chipforge.stages import StageTimer

    if quantize not in ("auto", "off"):
        raise ValueError(f"quantize must be 'auto' or 'off', not {quantize!r}")
    notes = [] if notes is None else notes
    timer = StageTimer() if timer is None else timer
    step = step or (lambda name: None)
    step("model")
    with timer("import"):
        graph = family.load_model(model)
    if (provenance := format_provenance(getattr(graph, "meta", {}))) is not None:
        notes.append(provenance)
    step("")
    step("data")
    with timer("data"):
        x, y = family.load_data(data, graph, samples)
    if samples is not None:
        x, y = x[:samples], y[:samples]
    step("")
    step("quantize")
    if family.integer_model:
        with timer("quantize"):
            if str(data) == "digits":
                from chipforge.importers.model import digits_train_inputs

                calib = digits_train_inputs(graph)[:CALIBRATION_SAMPLES]
                calib_label = f"{CALIBRATION_SAMPLES} digits training images"
            else:
                calib = x[:CALIBRATION_SAMPLES]
                calib_label = f"the first {len(calib)} given inputs"
            graph = family.prepare(graph, calib, mode=quantize, calib_label=calib_label,
                                   notes=notes)
    step("")
    return graph, x, y


ADC_CALIBRATION_SAMPLES = 64


def adc_calibration_inputs(family, graph, data: Any, choice: Any, x, samples: int | None
                           ) -> tuple[str, Any]:
    """The inputs ``--adc-range calibrated`` calibrates on, and what they are, for the
    report: never the scored inputs unless ``choice`` is ``"scored"``. ``choice`` None (or
    the data itself): the digits training split for ``data="digits"``, else the
    ``ADC_CALIBRATION_SAMPLES`` inputs of the data file after the ``samples`` scored;
    ``"digits"``: the digits training split; another ``.npz``: its first inputs."""
    from chipforge.importers.model import digits_train_inputs

    n = ADC_CALIBRATION_SAMPLES
    if choice == "scored":
        return (f"the first {min(n, len(x))} scored inputs themselves (--adc-calibration "
                "scored)"), x[:n]
    if choice is None or str(choice) == str(data):
        if str(data) == "digits":
            return f"{n} digits training images (not the scored test images)", \
                digits_train_inputs(graph)[:n]
        if isinstance(data, str | Path) and str(data).lower().endswith(".npz"):
            from chipforge.guard import inspect_npz
            from chipforge.importers.model import input_rows

            rows = input_rows(inspect_npz(data, what="data file"), data)
            if samples is not None and rows > samples:
                x_all, _ = family.load_data(data, graph, min(rows, samples + n))
                spare = x_all[samples:]
                return (f"inputs {samples + 1}..{samples + len(spare)} of {data} (after the "
                        f"{samples} scored)"), spare
        raise ValueError(
            f"--adc-range calibrated: the data {data} has no inputs beyond the "
            f"{len(x)} scored, and calibrating on them would tune the ADC to the test set: "
            "give --adc-calibration FILE.npz (or digits), use --samples below the file's "
            "size, or --adc-calibration scored to calibrate on the scored inputs anyway")
    if str(choice) == "digits":
        return f"{n} digits training images", digits_train_inputs(graph)[:n]
    x_calib, _ = family.load_data(choice, graph, n)
    return f"the first {len(x_calib)} inputs of {choice}", x_calib


def _bar_disable(progress: bool | None) -> bool | None:
    """tqdm's ``disable``: None shows a bar only on a terminal."""
    return None if progress is None else not progress


def run_main_job(model: Any, accelerator: Any = "forms8", data: Any = "digits", *,
                 out: str | Path | None = None, samples: int | None = None, seed: int = 0,
                 quantize: str = "auto", cycle_samples: int = 100,
                 progress: bool | None = None,
                 overrides: dict[str, Any] | None = None,
                 run_options: dict[str, Any] | None = None, **options: Any) -> MainJob:
    """Run the main job; see the module doc. ``accelerator`` is anything
    :func:`chipforge.families.get_accelerator_spec` takes; ``overrides`` (dotted keys) and
    ``options`` (the family's convenience options: ReRAM ``variation``, ``fault_rate``, ...)
    are validated by the family before any work starts. ``progress``: None (default) shows
    the progress bars on stderr when it is a terminal, True always, False never."""
    from tqdm import tqdm

    from chipforge.families import get_accelerator_spec
    from chipforge.simulate import simulate_graph
    from chipforge.stages import StageTimer

    if quantize not in ("auto", "off"):
        raise ValueError(f"quantize must be 'auto' or 'off', not {quantize!r}")
    if samples is not None and samples < 1:
        raise ValueError(f"samples must be >= 1, not {samples}")
    spec = get_accelerator_spec(accelerator, overrides=overrides, options=options)
    family = spec.family
    run_options = dict(run_options or {})
    family.check_run_options(run_options)      # before the model loads, not after
    steps = ["model", "data", "quantize", "functional simulation", "cost model", "report"]
    disable = _bar_disable(progress)
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
            with timer("data"):
                label, x_calib = adc_calibration_inputs(
                    family, graph, data, run_options.get("adc_calibration"), x, samples)
            run_options["adc_calibration"] = (label, x_calib)
            notes.append(f"ADC full scale calibrated on {label}")
        step("functional simulation")
        # mininterval=0, miniters=1: a family reports at most ~20 chunks, so draw every one
        images = tqdm(total=len(x), disable=disable, file=sys.stderr, unit="img",
                      desc="  hardware run", position=1, leave=False, dynamic_ncols=True,
                      mininterval=0, miniters=1)
        try:
            sim = simulate_graph(spec, graph, x, y, seed=seed, run_options=run_options,
                                 progress=images.update, timer=timer)
        finally:
            images.close()
        result = sim.result
        step("")
        step("cost model")
        with timer("cost"):
            cost = family.cost(graph, sim.mapped, spec.config, x[:cycle_samples])
        if cost is None:
            notes.append(f"accelerator {spec.name} (family {family.name}) has no cost model "
                         "for this configuration: no latency or energy")
        else:
            result.cost = cost.to_dict()
        step("")
        step("report")
        paths: dict[str, Path] = {}
        if out is not None:
            from chipforge.report import write_report

            with timer("report"):
                section = family.report_section(spec.config, sim.mapped, sim.output, cost)
                result.stages = timer.rows()
                paths = write_report(result, out, cost=cost, section=section,
                                     extra={"notes": notes, "provenance": getattr(
                                         graph, "meta", {}).get("provenance")})
        step("")
    finally:
        bar.close()
    result.stages = timer.rows()
    return MainJob(result, cost, paths, notes, stages=result.stages)
