"""``chipforge simulate``'s main job: one call from a model to a report a person reads.

::

    from chipforge.mainjob import run_main_job
    job = run_main_job("model.onnx", accelerator="forms8", data="digits", out="build/report")
    job.simulation.accuracy_hardware, job.cycles.fps, job.paths["json"]

Steps (a progress bar on stderr names each):

1. **model** — a zoo name, an ``.onnx`` file (float or QDQ-quantized) or an ``.npz`` of the
   IR (:func:`chipforge.importers.model.load_model`);
2. **data** — ``"digits"`` (the shared test split) or an ``.npz`` of inputs and labels,
   read without pickle and validated (:func:`chipforge.importers.model.load_data`);
3. **quantize** — layers without quantization (a float ONNX model) get post-training
   8-bit quantization (:func:`chipforge.mappings.quantize.quantize_graph`), calibrated on
   the digits *training* split for ``--data digits``, else on the first 256 given inputs;
   ``quantize="off"`` makes a float layer an error instead;
4. **functional simulation** — :func:`chipforge.simulate.simulate` (accuracy of the float
   model, the quantized model on ideal hardware and the simulated hardware);
5. **cycle model** — when the accelerator has one (:mod:`chipforge.sim.cycle.report`):
   latency, throughput, energy per layer and component, on the first ``cycle_samples``
   inputs;
6. **report** — terminal table, ``report.json``, ``accuracy.png``, ``layers.png``
   (:func:`chipforge.report.write_report`).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["MainJob", "run_main_job"]

CALIBRATION_SAMPLES = 256


@dataclasses.dataclass
class MainJob:
    """Everything the main job measured and wrote."""

    simulation: Any
    """The :class:`~chipforge.simulate.SimulationResult`."""
    cycles: Any | None
    """The cycle model's :class:`~chipforge.sim.cycle.model.ModelReport` (None: no model)."""
    paths: dict[str, Path]
    """Report files: json, accuracy, layers (PNG)."""
    notes: list[str]
    """What the job did beyond the plain run (post-training quantization, ...)."""

    def summary(self) -> str:
        lines = [self.simulation.summary()]
        if self.cycles is not None:
            from chipforge.sim.cycle.report import format_report

            lines.append(format_report(self.cycles))
        lines += [f"note: {n}" for n in self.notes]
        if self.paths:
            lines.append("report: " + ", ".join(str(p) for p in self.paths.values()))
        return "\n".join(lines)


def _quantize_if_needed(graph, x_calib: np.ndarray, mode: str, calib_label: str,
                        notes: list[str]):
    float_layers = [n.name for n in graph.weighted_nodes() if not n.quantized]
    if not float_layers:
        return graph
    if mode == "off":
        raise ValueError(f"layers {', '.join(float_layers)} of {graph.name!r} are not "
                         "quantized; the crossbars need integer weights and inputs (quantize "
                         "the model, e.g. onnxruntime quantize_static, or use "
                         "--quantize auto)")
    from chipforge.mappings.quantize import quantize_graph

    if any(n.quantized for n in graph.weighted_nodes()):
        raise ValueError(f"graph {graph.name!r} is partly quantized (float layers: "
                         f"{', '.join(float_layers)}); quantize all weighted layers")
    notes.append(f"{len(float_layers)} float layers quantized after training to 8 bits "
                 f"(per-channel weights; activations calibrated on {calib_label})")
    return quantize_graph(graph, x_calib)


def _placement(graph, accelerator) -> dict | None:
    """The ReRAM placement's row groups and crossbar counts per layer (plain data), so the
    cycle model maps the model exactly as the functional simulation did."""
    from chipforge.accelerators import ACCELERATORS

    if str(accelerator) not in ACCELERATORS:
        return None
    from chipforge.mappings.placement import place

    mapped = place(graph, str(accelerator))
    return {name: (layer.row_index, layer.stats.crossbars)
            for name, layer in mapped.layers.items()}


def run_main_job(model: Any, accelerator: str = "forms8", data: Any = "digits", *,
                 out: str | Path | None = None, samples: int | None = None, seed: int = 0,
                 quantize: str = "auto", cycle_samples: int = 100, progress: bool = True,
                 **options: Any) -> MainJob:
    """Run the main job; see the module doc. ``options`` go to the accelerator's runner
    (ReRAM: ``variation``, ``read_noise``, ``fault_rate``, ...)."""
    from tqdm import tqdm

    from chipforge.importers.model import load_data, load_model

    if quantize not in ("auto", "off"):
        raise ValueError(f"quantize must be 'auto' or 'off', not {quantize!r}")
    if samples is not None and samples < 1:
        raise ValueError(f"samples must be >= 1, not {samples}")
    steps = ["model", "data", "quantize", "functional simulation", "cycle model", "report"]
    bar = tqdm(total=len(steps), disable=None if progress else True, file=sys.stderr,
               unit="step",  # None: only on a terminal
               bar_format="{desc:<32} {bar} {n_fmt}/{total_fmt} [{elapsed}]")
    notes: list[str] = []

    def step(name: str) -> None:
        bar.set_description(f"chipforge simulate: {name}")

    try:
        if str(accelerator) == "heatvit":   # its ViT has its own format and engine model
            from chipforge.simulate import simulate

            step("functional + cycle simulation")
            result = simulate(model, accelerator="heatvit", data=data, samples=samples,
                              seed=seed, **options)
            bar.update(4)
            notes.append("heatvit: latency and speedup come from the FPGA engine model "
                         "(chipforge.sim.cycle.heatvit), per image from the tokens it keeps")
            paths = {}
            if out is not None:
                from chipforge.report import write_report

                paths = write_report(result, out, cycles=None, extra={"notes": notes})
            bar.update(2)
            return MainJob(result, None, paths, notes)
        step("model")
        graph = load_model(model)
        from chipforge.compress import format_provenance  # how `chipforge compress` made it

        if (provenance := format_provenance(graph.meta)) is not None:
            notes.append(provenance)
        bar.update()
        step("data")
        x, y = load_data(data, graph)
        if samples is not None:
            x, y = x[:samples], y[:samples]
        bar.update()
        step("quantize")
        if str(data) == "digits":
            from chipforge.importers.model import digits_train_inputs

            calib, calib_label = digits_train_inputs(graph)[:CALIBRATION_SAMPLES], \
                f"{CALIBRATION_SAMPLES} digits training images"
        else:
            calib = x[:CALIBRATION_SAMPLES]
            calib_label = f"the first {len(calib)} given inputs"
        graph = _quantize_if_needed(graph, calib, quantize, calib_label, notes)
        bar.update()
        step("functional simulation")
        from chipforge.simulate import simulate

        result = simulate(graph, accelerator=accelerator, data=(x, y), seed=seed, **options)
        bar.update()
        step("cycle model")
        cycles = None
        try:
            from chipforge.sim.cycle.report import ARCHITECTURES, cycle_reports
        except ImportError:   # a build without the cycle-level models
            ARCHITECTURES, cycle_reports = {}, None
        if str(accelerator) in ARCHITECTURES:
            cycles = cycle_reports(graph, x[:cycle_samples], [str(accelerator)],
                                   placement=_placement(graph, accelerator))[0]
        elif str(accelerator) == "superbnn":
            notes.append("superbnn: latency and energy from the AQFP cost model "
                         "(chipforge.sim.aqfp; cryocooler overhead reported separately)")
        else:
            notes.append(f"accelerator {accelerator!r} has no cycle model (cycle models: "
                         f"{', '.join(ARCHITECTURES) or 'none'}): no latency or energy")
        bar.update()
        step("report")
        paths: dict[str, Path] = {}
        if out is not None:
            from chipforge.report import write_report

            paths = write_report(result, out, cycles=cycles,
                                 extra={"notes": notes, "cycle_samples": min(cycle_samples,
                                                                             len(x)),
                                        "provenance": graph.meta.get("provenance")})
        bar.update()
    finally:
        bar.close()
    return MainJob(result, cycles, paths, notes)
