"""``chipforge.simulate``: run a compressed model on a virtual accelerator.

::

    from chipforge.simulate import simulate
    result = simulate("lenet-digits-forms8", accelerator="forms8", variation=0.1, seed=1)
    print(result.summary())
    result.accuracy_ideal, result.accuracy_hardware, result.metrics["crossbars"]

``model`` is a zoo name, an ``.onnx`` file (:func:`chipforge.importers.onnx.load_onnx`),
a ``.npz`` graph file or a :class:`~chipforge.sim.graph.Graph`; ``data`` is a
:class:`chipforge.zoo.data.Dataset` (its test split is used), an ``(x, y)`` pair,
``"digits"`` or None for the shared digits test split, or the path of an ``.npz`` of inputs
and labels (read without pickle and checked: :func:`chipforge.importers.model.load_data`).
``accelerator`` is a preset of any registered family (``forms8``, ``cap-ram``,
``superbnn``, ``heatvit``, ...), ``FAMILY:PRESET``, an accelerator ``.toml`` file or a
family's config object (:mod:`chipforge.families`). The family maps the graph, runs it
with the seed and reports the *ideal* accuracy (what ideal hardware computes; the family
says what that is) next to the *hardware* accuracy, from the same samples.
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
           "simulate_graph"]


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

    @property
    def accuracy_drop(self) -> float:
        """Ideal minus hardware accuracy, in points of accuracy (0..1 scale)."""
        return self.accuracy_ideal - self.accuracy_hardware

    def summary(self, *, stages: bool = True) -> str:
        """The text report; ``stages=False`` leaves out the stage times (the main job
        prints them last)."""
        lines = [f"{self.model} on {self.accelerator} ({self.samples} samples, seed {self.seed})"]
        if self.accuracy_float is not None:
            lines.append(f"  accuracy float           {100 * self.accuracy_float:6.2f} %")
        lines += [f"  accuracy ideal           {100 * self.accuracy_ideal:6.2f} %   "
                  f"({self.ideal_label})",
                  f"  accuracy hardware        {100 * self.accuracy_hardware:6.2f} %   "
                  f"(drop {100 * self.accuracy_drop:+.2f} points; "
                  + (f"{100 * self.agreement:.1f} % same predictions)"
                     if self.agreement == self.agreement else "same predictions: n/a)")]
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
        if stages and self.stages:
            from chipforge.stages import format_stages

            lines.append(format_stages(self.stages))
        return "\n".join(lines)


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


def simulate(model: Any, accelerator: Any = "forms8", data: Any = None, *,
             samples: int | None = None, seed: int = 0,
             overrides: dict[str, Any] | None = None, cost: bool = True,
             cost_samples: int = 100, progress: Callable[[int], None] | None = None,
             **options: Any) -> SimulationResult:
    """Simulate ``model`` on ``accelerator``; see the module doc.

    ``overrides`` set config fields by dotted key (``{"adc.bits": 6}``); ``options`` are the
    family's convenience options (ReRAM: ``variation``, ``read_noise``, ``fault_rate``,
    ``p_stuck_off``, ``p_stuck_on``; AQFP: ``sigma_ua``, ``crossbar_size``,
    ``bitstream_length``; ...). Either one that the family lacks is a ``ValueError`` naming
    it, the family and what the family accepts. ``progress(n)`` is told each chunk of
    ``n`` samples the hardware run finished (e.g. ``tqdm(total=...).update``); the result's
    ``stages`` hold the measured seconds of each step (:mod:`chipforge.stages`)."""
    from chipforge.families import get_accelerator_spec
    from chipforge.stages import StageTimer

    if samples is not None and samples < 1:
        raise ValueError(f"samples must be >= 1, not {samples}")
    spec = get_accelerator_spec(accelerator, overrides=overrides, options=options)
    timer = StageTimer()
    with timer("import"):
        graph = spec.family.load_model(model)
    with timer("data"):
        x, y = spec.family.load_data(data, graph, samples)
    if samples is not None:
        x, y = x[:samples], y[:samples]
    sim = simulate_graph(spec, graph, x, y, seed=seed, timer=timer, progress=progress)
    if cost:
        with timer("cost"):
            report = spec.family.cost(graph, sim.mapped, spec.config, x[:cost_samples])
        sim.result.cost = None if report is None else report.to_dict()
    sim.result.stages = timer.rows()
    return sim.result


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
