"""``chipforge simulate``'s main job: one call from a model to a report a person reads.

The job itself is :func:`chipforge.simulate.simulate` (``chipforge.simulate(...)`` in
Python, ``chipforge simulate`` on the command line: one function). This module keeps
:func:`load_inputs` (steps 1-3, shared with ``chipforge cycles --data``) and
:func:`run_main_job`, which wraps the result as a :class:`MainJob` for older scripts::

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
   ``chips=N`` runs N independently programmed chips (seeds from
   :func:`chipforge.chips.chip_seeds`) on one mapping;
6. **report** — terminal table, ``report.json``, ``accuracy.png``, ``layers.png``
   (:func:`chipforge.report.write_report`), the family's own numbers in its section.

Each step's wall and CPU seconds are measured (:mod:`chipforge.stages`) and reported
(``stages`` in ``report.json``, a table at the end of the text report). While the hardware
runs, a second bar counts the samples done, their rate and the time left (ETA); both bars
go to stderr and show only on a terminal unless ``progress`` is True (False: never).
"""

from __future__ import annotations

import dataclasses
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
        return self.simulation.summary()


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


def run_main_job(model: Any, accelerator: Any = "forms8", data: Any = "digits", *,
                 out: str | Path | None = None, samples: int | None = None, seed: int = 0,
                 quantize: str = "auto", cycle_samples: int = 100,
                 progress: bool | None = None,
                 overrides: dict[str, Any] | None = None,
                 run_options: dict[str, Any] | None = None, chips: int = 1,
                 **options: Any) -> MainJob:
    """:func:`chipforge.simulate.simulate` (the one entry point, which the CLI calls) with
    its result wrapped as a :class:`MainJob`; kept for scripts written against it."""
    from chipforge.simulate import simulate

    result = simulate(model, accelerator, data, out=out, samples=samples, seed=seed,
                      chips=chips, quantize=quantize, progress=progress,
                      overrides=overrides, cycle_samples=cycle_samples,
                      run_options=run_options, **options)
    return MainJob(result, result.cost_report, result.paths, result.notes,
                   stages=result.stages)
