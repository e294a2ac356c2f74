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
``accelerator`` names an entry of
:data:`RUNNERS` (the ReRAM presets of :mod:`chipforge.accelerators`; other accelerator
families register their own runner with :func:`register_accelerator`), a ReRAM ``.toml``
file or a :class:`~chipforge.accelerators.ReramAcceleratorConfig`.

A runner is ``runner(graph, accelerator, x, y, **options) -> SimulationResult``. It reports
the *ideal* accuracy (the quantized model, exact integer arithmetic) next to the
*hardware* accuracy, so the two are always from the same samples.
"""

from __future__ import annotations

import dataclasses
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["RUNNERS", "SimulationResult", "load_model", "register_accelerator", "simulate"]


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

    @property
    def accuracy_drop(self) -> float:
        """Ideal minus hardware accuracy, in points of accuracy (0..1 scale)."""
        return self.accuracy_ideal - self.accuracy_hardware

    def summary(self) -> str:
        lines = [f"{self.model} on {self.accelerator} ({self.samples} samples, seed {self.seed})"]
        if self.accuracy_float is not None:
            lines.append(f"  accuracy float           {100 * self.accuracy_float:6.2f} %")
        lines += [f"  accuracy ideal           {100 * self.accuracy_ideal:6.2f} %   "
                  f"({self.ideal_label})",
                  f"  accuracy hardware        {100 * self.accuracy_hardware:6.2f} %   "
                  f"(drop {100 * self.accuracy_drop:+.2f} points; "
                  + (f"{100 * self.agreement:.1f} % same predictions)"
                     if self.agreement == self.agreement else "same predictions: n/a)")]
        for key, value in self.metrics.items():
            text = f"{value:.4g}" if isinstance(value, float) else str(value)
            lines.append(f"  {key:<24} {text}")
        if self.layers:
            keys = [k for k in ("node", "scheme", "weight_shape", "crossbars", "row_tiles",
                                "col_tiles", "cells", "utilization", "nonzero_weights",
                                "adc_reads_per_vector", "relative_error", "snr_db")
                    if k in self.layers[0]]
            if len(keys) < 2:   # another accelerator family: show its own columns
                keys = [k for k, v in self.layers[0].items()
                        if isinstance(v, int | float | str)][:8]
            rows = [[_cell(layer[k]) for k in keys] for layer in self.layers]
            widths = [max(len(k), *(len(r[i]) for r in rows)) for i, k in enumerate(keys)]
            lines.append("  per layer:")
            lines.append("    " + "  ".join(k.ljust(w) for k, w in zip(keys, widths, strict=True)))
            for r in rows:
                lines.append("    " + "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))
        return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, list | tuple):
        return "x".join(str(v) for v in value)
    return str(value)


Runner = Callable[..., SimulationResult]
RUNNERS: dict[str, Runner] = {}
"""Accelerator name -> runner. The ReRAM presets register below; AQFP, HeatViT, ... add theirs."""


def register_accelerator(names: str | list[str], runner: Runner) -> None:
    """Make ``simulate(..., accelerator=NAME)`` call ``runner`` for each of ``names``."""
    for name in [names] if isinstance(names, str) else names:
        RUNNERS[name] = runner


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
    if isinstance(data, str | Path):       # "digits" or an .npz of inputs and labels
        from chipforge.importers.model import load_data

        return load_data(data, graph)
    if data is None:
        from chipforge.zoo.data import digits

        shape = graph.input_shape
        data = digits(shape[-1] if len(shape) == 3 else 8)
    if hasattr(data, "x_test"):
        x, y = data.x_test, data.y_test
    else:
        try:
            x, y = data
        except (TypeError, ValueError):
            raise ValueError("data must be a Dataset, an (x, y) pair or None, "
                             f"not {type(data).__name__}") from None
    x, y = np.asarray(x), np.asarray(y)
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"data needs as many labels as samples (> 0), not {len(x)} samples "
                         f"and {len(y)} labels")
    per_sample = int(np.prod(graph.input_shape))
    if x[0].size != per_sample:
        raise ValueError(f"data samples have {x[0].size} values, graph {graph.name!r} expects "
                         f"shape {graph.input_shape}")
    return x.reshape((len(x), *graph.input_shape)), y


def simulate(model: Any, accelerator: Any = "forms8", data: Any = None, *,
             samples: int | None = None, seed: int = 0, **options: Any) -> SimulationResult:
    """Simulate ``model`` on ``accelerator``; see the module doc. ``options`` go to the
    runner (ReRAM: ``device``, ``variation``, ``read_noise``, ``fault_rate``, ``p_stuck_off``,
    ``p_stuck_on``)."""
    if samples is not None and samples < 1:
        raise ValueError(f"samples must be >= 1, not {samples}")
    if str(accelerator) == "heatvit":   # the ViT zoo model has its own format, not a Graph
        start = time.perf_counter()
        result = run_heatvit_accelerator(model, data, samples=samples, seed=seed, **options)
        result.seconds = time.perf_counter() - start
        return result
    graph = load_model(model)
    x, y = _test_data(graph, data)
    if samples is not None:
        x, y = x[:samples], y[:samples]
    from chipforge.accelerators import ReramAcceleratorConfig

    if isinstance(accelerator, ReramAcceleratorConfig) or str(accelerator).endswith(".toml"):
        runner = run_reram
    elif str(accelerator) in RUNNERS:
        runner = RUNNERS[str(accelerator)]
    else:
        raise ValueError(f"unknown accelerator {accelerator!r}; known: "
                         f"{', '.join([*RUNNERS, 'heatvit'])} (or a ReRAM .toml file)")
    start = time.perf_counter()
    result = runner(graph, accelerator, x, y, seed=seed, **options)
    result.seconds = time.perf_counter() - start
    return result


def _accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    return float((logits.argmax(axis=1) == y).mean())


def reram_device(accel, *, device=None, variation: float | None = None,
                 read_noise: float | None = None, fault_rate: float | None = None,
                 p_stuck_off: float | None = None, p_stuck_on: float | None = None):
    """The accelerator's device with the given non-idealities changed."""
    dev = device if device is not None else accel.device
    if variation is not None:
        dev = dev.replace(programming_sigma=variation)
    if read_noise is not None:
        dev = dev.replace(read_noise=read_noise)
    if fault_rate is not None:
        if p_stuck_off is not None or p_stuck_on is not None:
            raise ValueError("give fault_rate (split 1 : 5.2) or p_stuck_off / p_stuck_on, "
                             "not both")
        dev = dev.with_stuck_at_rate(fault_rate)
    if p_stuck_off is not None or p_stuck_on is not None:
        dev = dev.replace(p_stuck_off=p_stuck_off or 0.0, p_stuck_on=p_stuck_on or 0.0)
    return dev


def run_reram(graph, accelerator, x: np.ndarray, y: np.ndarray, *, seed: int = 0,
              mapped=None, ideal_logits: np.ndarray | None = None, float_accuracy: bool = True,
              max_memory: int | str | None = None, device_kind: str = "cpu",
              layer_errors: int = 0, adc_range: str = "max",
              **device_options: Any) -> SimulationResult:
    """The ReRAM crossbar runner: place, program one chip instance (``seed``), run.

    ``mapped`` (a MappedModel of this graph and accelerator) and ``ideal_logits`` skip
    recomputing them, for sweeps. ``max_memory`` (bytes or ``"2G"``; default half the
    available memory) bounds the estimated peak: the batch is streamed in chunks that fit
    (:mod:`chipforge.sim.memory`), with the same result for any chunking. ``device_kind``
    ``"cuda"`` runs the crossbars on torch tensors on the GPU. ``layer_errors`` > 0 adds
    ``metrics["layer_errors"]``: each layer's output vs the ideal run on that many samples
    (:mod:`chipforge.sim.layer_error`). ``adc_range``: ``"max"`` (one level per ADC code,
    the presets'), ``"fraction:F"`` (full scale F x the array's largest column sum) or
    ``"calibrated"`` (the largest column sum of each layer on the first 64 samples); see
    :func:`chipforge.sim.reram.adc_steps`.
    """
    from chipforge.accelerators import get_accelerator
    from chipforge.mappings.placement import place
    from chipforge.sim.executor import run_graph
    from chipforge.sim.memory import parse_size, plan_memory
    from chipforge.sim.reram import CrossbarMatmul, adc_steps, calibrate_adc

    accel = get_accelerator(accelerator)
    device = reram_device(accel, **device_options)
    accel = accel.replace(device=device)
    mapped = mapped if mapped is not None else place(graph, accel)
    if device_kind not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', not {device_kind!r}")
    plan = plan_memory(graph, mapped, device, len(x),
                       None if max_memory is None else parse_size(max_memory))
    if ideal_logits is None:
        ideal_logits = run_graph(graph, x, batch_size=plan.batch)
    calibration = None
    if adc_range == "calibrated":
        calibration = calibrate_adc(graph, x[:64], CrossbarMatmul(mapped, device, seed=seed))
    steps = adc_steps(adc_range, mapped, calibration)
    hook = CrossbarMatmul(mapped, device, seed=seed, chunk_bytes=plan.chunk_bytes,
                          backend="numpy" if device_kind == "cpu" else "torch",
                          array_device=device_kind, adc_steps=steps)
    logits = run_graph(graph, x, matmul=hook, batch_size=plan.batch)
    ideal_pred, hw_pred = ideal_logits.argmax(axis=1), logits.argmax(axis=1)
    acc_float = None
    if float_accuracy:
        acc_float = _accuracy(run_graph(graph, x, quantized=False, batch_size=plan.batch), y)
    weights = sum(layer.stats.weights for layer in mapped.layers.values())
    nonzero = sum(layer.stats.nonzero_weights for layer in mapped.layers.values())
    metrics = {
        "crossbars": mapped.crossbars,
        "cells": mapped.cells,
        "utilization": mapped.cells / mapped.capacity,
        "weights": weights,
        "nonzero_weights": nonzero,
        "adc_reads_per_sample": hook.report.get("adc_reads", 0) / len(x),
        "adc_saturations": hook.report.get("saturated", 0),
        "scheme": accel.scheme.value,
        "device": ", ".join(f"{k}={v}" for k, v in device.to_dict().items()
                            if k in ("programming_sigma", "read_noise", "p_stuck_off",
                                     "p_stuck_on") and v),
    }
    if not metrics["device"]:
        metrics["device"] = "ideal"
    errors: dict = {}
    if layer_errors:
        from chipforge.sim.layer_error import layer_error_table

        make = lambda: CrossbarMatmul(mapped, device, seed=seed,  # noqa: E731
                                      chunk_bytes=plan.chunk_bytes, adc_steps=steps)
        errors = {r["node"]: r for r in layer_error_table(graph, x[:layer_errors], make,
                                                          batch_size=min(plan.batch, 64))}
    metrics["adc_range"] = adc_range
    metrics["memory_estimate_bytes"] = plan.estimate
    metrics["memory_budget_bytes"] = plan.budget
    metrics["batch_chunk"] = plan.batch
    if "crossbar_reduction" in graph.meta:  # FORMS: pruning x quantization x polarization
        metrics["model_crossbar_reduction"] = float(graph.meta["crossbar_reduction"])
    return SimulationResult(
        model=graph.name, accelerator=accel.name, samples=len(x), accuracy_float=acc_float,
        accuracy_ideal=_accuracy(ideal_logits, y), accuracy_hardware=_accuracy(logits, y),
        agreement=float((ideal_pred == hw_pred).mean()), seed=seed, metrics=metrics,
        layers=[row | {k: v for k, v in errors.get(row["node"], {}).items() if k != "node"}
                for row in mapped.stats_table()], config=accel.to_dict())


def _register_reram() -> None:
    # The preset names are fixed; importing chipforge.accelerators here would pull numpy
    # into `import chipforge.simulate` anyway, so list them from the module lazily.
    from chipforge.accelerators import ACCELERATORS

    register_accelerator(list(ACCELERATORS), run_reram)


_register_reram()


# -- AQFP (SupeRBNN) and HeatViT ----------------------------------------------------------

def run_superbnn_accelerator(graph, accelerator, x, y, *, seed: int = 0,
                             **options: Any) -> SimulationResult:
    """A binarized graph on SupeRBNN AQFP arrays (:func:`chipforge.sim.aqfp.run_superbnn`).

    ``options`` change fields of :data:`chipforge.sim.aqfp.SUPERBNN` (``sigma_ua``,
    ``crossbar_size``, ``bitstream_length``, ``accumulation``, ...)."""
    from chipforge.sim.aqfp import SUPERBNN, run_superbnn, with_changes

    cfg = with_changes(SUPERBNN, **options)
    r = run_superbnn(graph, (x, y), cfg, seed)
    metrics = {
        "latency_s": r.latency_s,
        "throughput_per_s": r.throughput_per_s,
        "energy_per_inference_j (4.2 K chip)": r.energy_chip_j,
        "energy_per_inference_j (with cryocooler)": r.energy_wall_j,
        "josephson_junctions": r.jj_total,
    }
    return SimulationResult(
        model=graph.name, accelerator="superbnn", samples=r.samples, accuracy_float=None,
        accuracy_ideal=r.accuracy_ideal, accuracy_hardware=r.accuracy, agreement=r.agreement,
        seed=seed, metrics=metrics, layers=[dataclasses.asdict(c) for c in r.layers],
        config=r.config, ideal_label="the deterministic BNN: sign of the exact MAC")


def run_heatvit_accelerator(model: Any, data: Any = None, *, samples: int | None = None,
                            seed: int = 0, selectors: str | None = "keep50",
                            fixed: bool = True, engine: Any = None) -> SimulationResult:
    """The bundled ViT with HeatViT token selectors, fixed point, on the FPGA engine model
    (:func:`chipforge.heatvit.run_heatvit`). "Ideal" is the same fixed-point ViT without
    selectors; "hardware" is with them. Deterministic (``seed`` is recorded only)."""
    from chipforge.heatvit import run_heatvit

    if data not in (None, "digits"):
        raise ValueError(f"the heatvit accelerator runs the digits test split only, not {data!r}")
    if str(model) != "vit-digits":
        raise ValueError(f"the heatvit accelerator runs the zoo model 'vit-digits', "
                         f"not {model!r}")
    selectors = None if selectors in (None, "none") else selectors
    r = run_heatvit(str(model), selectors=selectors, engine=engine, fixed=fixed,
                    n_images=samples)
    metrics = {
        "selectors": selectors or "none",
        "mac_reduction": r["mac_reduction"],
        "macs_per_image": r["macs_per_image"],
        "cycles_per_image (mean)": r["cycles_per_image"]["mean"],
        "latency_us": r["latency_us"],
        "speedup_vs_no_selectors": r["speedup"],
        "tokens_per_block": [round(t, 2) for t in r["tokens_per_block"]],
    }
    return SimulationResult(
        model=r["model"], accelerator="heatvit", samples=r["images"], accuracy_float=None,
        accuracy_ideal=r["accuracy_no_selectors"], accuracy_hardware=r["accuracy"],
        agreement=float("nan"), seed=seed, metrics=metrics, config=r["engine"],
        ideal_label="the same fixed-point ViT without token selectors")


register_accelerator("superbnn", run_superbnn_accelerator)


class _CallableModule(types.ModuleType):
    """Lets ``chipforge.simulate(model, accelerator=..., data=...)`` call :func:`simulate`
    while ``chipforge.simulate`` stays the module that holds it."""

    def __call__(self, *args: Any, **kwargs: Any) -> SimulationResult:
        return simulate(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
