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
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

__all__ = ["MainJob", "run_main_job"]


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

    @property
    def cycles(self) -> Any | None:
        """The family's own cost object (a cycle-model ``ModelReport`` for ReRAM)."""
        return None if self.cost is None else self.cost.native

    def summary(self) -> str:
        from chipforge.report import format_cost

        lines = [self.simulation.summary()]
        if self.cost is not None:
            lines.append(format_cost(self.cost))
        lines += [f"note: {n}" for n in self.notes]
        if self.paths:
            lines.append("report: " + ", ".join(str(p) for p in self.paths.values()))
        return "\n".join(lines)


def run_main_job(model: Any, accelerator: Any = "forms8", data: Any = "digits", *,
                 out: str | Path | None = None, samples: int | None = None, seed: int = 0,
                 quantize: str = "auto", cycle_samples: int = 100, progress: bool = True,
                 overrides: dict[str, Any] | None = None,
                 run_options: dict[str, Any] | None = None, **options: Any) -> MainJob:
    """Run the main job; see the module doc. ``accelerator`` is anything
    :func:`chipforge.families.get_accelerator_spec` takes; ``overrides`` (dotted keys) and
    ``options`` (the family's convenience options: ReRAM ``variation``, ``fault_rate``, ...)
    are validated by the family before any work starts."""
    from tqdm import tqdm

    from chipforge.families import CALIBRATION_SAMPLES, get_accelerator_spec
    from chipforge.simulate import simulate_graph

    if quantize not in ("auto", "off"):
        raise ValueError(f"quantize must be 'auto' or 'off', not {quantize!r}")
    if samples is not None and samples < 1:
        raise ValueError(f"samples must be >= 1, not {samples}")
    spec = get_accelerator_spec(accelerator, overrides=overrides, options=options)
    family = spec.family
    steps = ["model", "data", "quantize", "functional simulation", "cost model", "report"]
    bar = tqdm(total=len(steps), disable=None if progress else True, file=sys.stderr,
               unit="step",  # None: only on a terminal
               bar_format="{desc:<32} {bar} {n_fmt}/{total_fmt} [{elapsed}]")
    notes: list[str] = []

    def step(name: str) -> None:
        bar.set_description(f"chipforge simulate: {name}")

    try:
        step("model")
        graph = family.load_model(model)
        from chipforge.compress import format_provenance  # how `chipforge compress` made it

        if (provenance := format_provenance(getattr(graph, "meta", {}))) is not None:
            notes.append(provenance)
        bar.update()
        step("data")
        x, y = family.load_data(data, graph, samples)
        if samples is not None:
            x, y = x[:samples], y[:samples]
        bar.update()
        step("quantize")
        if family.integer_model:
            if str(data) == "digits":
                from chipforge.importers.model import digits_train_inputs

                calib = digits_train_inputs(graph)[:CALIBRATION_SAMPLES]
                calib_label = f"{CALIBRATION_SAMPLES} digits training images"
            else:
                calib = x[:CALIBRATION_SAMPLES]
                calib_label = f"the first {len(calib)} given inputs"
            graph = family.prepare(graph, calib, mode=quantize, calib_label=calib_label,
                                   notes=notes)
        bar.update()
        step("functional simulation")
        sim = simulate_graph(spec, graph, x, y, seed=seed, run_options=run_options)
        result = sim.result
        bar.update()
        step("cost model")
        cost = family.cost(graph, sim.mapped, spec.config, x[:cycle_samples])
        if cost is None:
            notes.append(f"accelerator {spec.name} (family {family.name}) has no cost model "
                         "for this configuration: no latency or energy")
        else:
            result.cost = cost.to_dict()
        bar.update()
        step("report")
        paths: dict[str, Path] = {}
        if out is not None:
            from chipforge.report import write_report

            section = family.report_section(spec.config, sim.mapped, sim.output, cost)
            paths = write_report(result, out, cost=cost, section=section,
                                 extra={"notes": notes,
                                        "provenance": getattr(graph, "meta", {}).get("provenance")})
        bar.update()
    finally:
        bar.close()
    return MainJob(result, cost, paths, notes)
