"""The ReRAM crossbar family: ISAAC, FORMS 4/8/16, ISQED'21 two-column and differential.

Config: :class:`chipforge.accelerators.ReramAcceleratorConfig` (presets cite their tables in
:mod:`chipforge.accelerators`). Map: :func:`chipforge.mappings.placement.place` (bit slicing,
signed-weight scheme, tiling onto crossbars). Run: :class:`chipforge.sim.reram.CrossbarMatmul`
as the executor's matmul hook (one programmed chip instance per seed). Cost: the cycle and
energy model of :mod:`chipforge.sim.cycle` for the ISAAC / FORMS architectures, fed the
placement's row groups and crossbar counts.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from chipforge.accelerators import ACCELERATORS, ReramAcceleratorConfig
from chipforge.families import register_family
from chipforge.families.base import AcceleratorFamily, CostReport, LayerCost, Mapping, RunOutput

__all__ = ["ReramFamily", "cycle_architecture", "cycle_placement", "run_reram"]


def _fault_rate(config: ReramAcceleratorConfig, rate: Any) -> ReramAcceleratorConfig:
    """Total stuck-at rate, split stuck-off : stuck-on = 1 : 5.2 (the device's rule)."""
    return config.replace(device=config.device.with_stuck_at_rate(rate))


def cycle_placement(mapped) -> dict[str, tuple[np.ndarray, int]]:
    """The placement's row groups and crossbar counts per layer (plain data), so the cycle
    model maps the model exactly as the functional simulation did."""
    return {name: (layer.row_index, layer.stats.crossbars)
            for name, layer in mapped.layers.items()}


def cycle_architecture(config: ReramAcceleratorConfig, graph=None):
    """The cycle model's architecture of a config: the ISAAC / FORMS preset of the same
    name when the config is that preset, else ISAAC (offset scheme) or FORMS (polarized)
    with this config's crossbar geometry, bits and ADCs. None for the ISQED schemes (no
    cycle architecture).

    With ``graph`` (a quantized model), the weight and input widths follow the model as
    the placement and the functional simulation do: an 8-bit model on the 16-bit ISAAC
    preset is costed as 8-bit weights in 4 cells fed 8 input cycles, not 16."""
    arch = _config_architecture(config)
    if arch is None or graph is None:
        return arch
    nodes = graph.weighted_nodes()
    if not nodes or not all(n.quantized for n in nodes):
        return arch
    # placement.place_layer stores a layer at max(its bits, 2); inputs take act_bits cycles
    weight_bits = max(max(int(n.attrs["weight_bits"]) for n in nodes), 2)
    input_bits = max(int(n.attrs.get("act_bits", arch.input_bits)) for n in nodes)
    changes = {}
    if weight_bits < arch.weight_bits:
        changes["weight_bits"] = weight_bits
    if input_bits < arch.input_bits:
        changes["input_bits"] = input_bits
        # the pipeline's non-crossbar stages stay; only its input cycles shrink
        changes["pipeline_stages"] = arch.pipeline_stages - (arch.input_bits - input_bits)
    if not changes:
        return arch
    widths = ", ".join(f"{changes[k]}-bit {what}" for k, what in
                       (("weight_bits", "weights"), ("input_bits", "inputs")) if k in changes)
    return arch.replace(name=f"{arch.name} ({widths} of the model)", **changes)


def _config_architecture(config: ReramAcceleratorConfig):
    from chipforge.accelerators import PlacementScheme
    from chipforge.sim.cycle.report import ARCHITECTURES

    if ACCELERATORS.get(config.name) == config and config.name in ARCHITECTURES:
        return ARCHITECTURES[config.name]
    base = {PlacementScheme.OFFSET: "isaac",
            PlacementScheme.POLARIZED: "forms8"}.get(config.scheme)
    if base is None:
        return None
    changes = dict(name=config.name, crossbar_rows=config.rows, crossbar_cols=config.cols,
                   cell_bits=config.cell_bits, weight_bits=config.weight_bits,
                   input_bits=config.input_bits, adcs_per_crossbar=config.adcs_per_crossbar,
                   adc_rate=config.adc_rate)
    if config.scheme is PlacementScheme.POLARIZED:
        changes["fragment_size"] = config.fragment_size
    else:
        changes["fragment_size"] = config.rows
    try:
        return ARCHITECTURES[base].replace(**changes)
    except ValueError:
        return None


class ReramFamily(AcceleratorFamily):
    """ReRAM crossbars with bit-sliced cells, DACs, ADCs and a signed-weight scheme."""

    name = "reram"
    description = "ReRAM crossbars (ISAAC, FORMS, ISQED'21)"
    config_type = ReramAcceleratorConfig
    presets: ClassVar = ACCELERATORS
    options: ClassVar = {
        "variation": "device.programming_sigma",
        "read_noise": "device.read_noise",
        "fault_rate": _fault_rate,
        "p_stuck_off": "device.p_stuck_off",
        "p_stuck_on": "device.p_stuck_on",
        "adc_bits": "adc_bits",
    }
    rtl_blocks = ("shift-add", "forms-fragment")
    rtl_loop = True
    run_options: ClassVar = {
        "max_memory": "memory budget such as 2G (default: half the available memory); the "
                      "batch is streamed in chunks that fit",
        "device_kind": "where the crossbars run: cpu (numpy kernels) or cuda (torch tensors)",
        "layer_errors": "add each layer's relative error and SNR vs the ideal run, on N samples",
        "adc_range": "ADC full scale: max (one level per code), fraction:F (F x the array "
                     "maximum) or calibrated (largest column sum per layer on 64 samples)",
    }

    def map(self, graph, config: ReramAcceleratorConfig) -> Mapping:
        from chipforge.mappings.placement import place

        return self.mapping_of(place(graph, config), graph, config)

    def mapping_of(self, mapped, graph, config: ReramAcceleratorConfig) -> Mapping:
        """The interface's :class:`Mapping` of a placement (a ``MappedModel``)."""
        weights = sum(la.stats.weights for la in mapped.layers.values())
        nonzero = sum(la.stats.nonzero_weights for la in mapped.layers.values())
        totals = {"crossbars": mapped.crossbars, "cells": mapped.cells,
                  "utilization": mapped.cells / mapped.capacity if mapped.capacity else 0.0,
                  "weights": weights, "nonzero_weights": nonzero,
                  "scheme": config.scheme.value}
        # FORMS's paper formula (pruning x 32/bits x polarization), labelled: not a count (the
        # counted crossbars are totals["crossbars"], from the placement).
        ideal = graph.meta.get("idealized_crossbar_reduction",
                               graph.meta.get("crossbar_reduction"))
        if ideal is not None:
            totals["idealized_crossbar_reduction_not_counted"] = float(ideal)
        return Mapping(self.name, mapped.stats_table(), totals, detail=mapped)

    def run(self, graph, mapped: Mapping, config: ReramAcceleratorConfig, x: np.ndarray, *,
            seed: int = 0, ideal_logits: np.ndarray | None = None,
            float_logits: bool = True, max_memory: int | str | None = None,
            device_kind: str = "cpu", layer_errors: int = 0,
            adc_range: str = "max", progress: Callable[[int], None] | None = None
            ) -> RunOutput:
        """``max_memory`` (bytes or ``"2G"``; default half the available memory) bounds the
        estimated peak: the batch is streamed in chunks that fit (:mod:`chipforge.sim.memory`),
        with the same result for any chunking. ``device_kind`` ``"cuda"`` runs the crossbars
        on torch tensors on the GPU. ``layer_errors`` > 0 adds each layer's output error vs
        the ideal run on that many samples (:mod:`chipforge.sim.layer_error`). ``adc_range``:
        ``"max"``, ``"fraction:F"`` or ``"calibrated"`` (:func:`chipforge.sim.reram.adc_steps`).
        ``progress(n)`` is called after each streamed chunk of ``n`` samples of the hardware
        run (chunks of at most a 20th of the batch then, for a steady ETA; same results).
        """
        from chipforge.sim.executor import run_graph
        from chipforge.sim.memory import parse_size, plan_memory
        from chipforge.sim.reram import (
            CrossbarMatmul,
            adc_error_warnings,
            adc_steps,
            calibrate_adc,
        )
        from chipforge.stages import StageTimer

        if device_kind not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', not {device_kind!r}")
        if not isinstance(layer_errors, int) or layer_errors < 0:
            raise ValueError(f"layer_errors must be an integer >= 0, not {layer_errors!r}")
        device, placed = config.device, mapped.detail
        plan = plan_memory(graph, placed, device, len(x),
                           None if max_memory is None else parse_size(max_memory))
        calibration = None
        if adc_range == "calibrated":
            calibration = calibrate_adc(graph, x[:64], CrossbarMatmul(placed, device, seed=seed))
        steps = adc_steps(adc_range, placed, calibration)
        adc_warnings = []
        if adc_range != "max":
            adc_warnings = adc_error_warnings(graph, x[:64], CrossbarMatmul(placed, device,
                                                                            seed=seed), steps)
            for line in adc_warnings:
                print(line, file=sys.stderr)

        def hook_factory():
            return CrossbarMatmul(placed, device, seed=seed, chunk_bytes=plan.chunk_bytes,
                                  backend="numpy" if device_kind == "cpu" else "torch",
                                  array_device=device_kind, adc_steps=steps)

        hook, timer = hook_factory(), StageTimer()
        # One hook over consecutive chunks reads exactly as one call over the whole batch.
        chunk = plan.batch if progress is None else min(plan.batch, max(16, -(-len(x) // 20)))
        parts = []
        with timer("hardware"):
            for start in range(0, len(x), chunk):
                parts.append(run_graph(graph, x[start:start + chunk], matmul=hook,
                                       batch_size=plan.batch))
                if progress is not None:
                    progress(len(parts[-1]))
        logits = np.concatenate(parts)
        if ideal_logits is None:
            with timer("ideal"):
                ideal_logits = run_graph(graph, x, batch_size=plan.batch)
        described = ", ".join(f"{k}={v}" for k, v in device.to_dict().items()
                              if k in ("programming_sigma", "read_noise", "p_stuck_off",
                                       "p_stuck_on") and v)
        metrics = {"adc_reads_per_sample": hook.report.get("adc_reads", 0) / len(x),
                   "adc_saturations": hook.report.get("saturated", 0),
                   "device": described or "ideal", "adc_range": adc_range,
                   "memory_estimate_bytes": plan.estimate,
                   "memory_budget_bytes": plan.budget, "batch_chunk": plan.batch}
        if adc_warnings:
            metrics["adc_warnings"] = adc_warnings
        layers: list[dict] = []
        if layer_errors:
            from chipforge.sim.layer_error import layer_error_table

            with timer("layer_errors"):
                layers = layer_error_table(graph, x[:layer_errors], hook_factory,
                                           batch_size=min(plan.batch, 64))
            metrics["layer_error_samples"] = len(x[:layer_errors])
        float_out = None
        if float_logits:
            with timer("float"):
                float_out = run_graph(graph, x, quantized=False, batch_size=plan.batch)
        return RunOutput(logits, ideal_logits,
                         "quantized model, exact integer arithmetic", metrics, layers=layers,
                         float_logits=float_out, stages=timer.rows())

    def cost(self, graph, mapped: Mapping, config: ReramAcceleratorConfig,
             x: np.ndarray) -> CostReport | None:
        try:
            from chipforge.sim.cycle.report import cycle_reports
        except ImportError:   # a build without the cycle-level models
            return None
        arch = cycle_architecture(config, graph)
        if arch is None:
            return None
        report = cycle_reports(graph, x, [arch], placement=cycle_placement(mapped.detail))[0]
        from chipforge.report import cycle_summary, plain

        layers = [LayerCost(la.name, cycles=float(la.cycles), latency_s=la.time_ns * 1e-9,
                            energy_j=la.energy_total_pj * 1e-12,
                            energy_by_component_j={str(plain(k)): v * 1e-12
                                                   for k, v in la.energy_pj.items()})
                  for la in report.layers]
        return CostReport(
            layers=layers, cycles=float(sum(la.cycles for la in report.layers)),
            latency_s=report.latency_ns * 1e-9, throughput_per_s=report.fps,
            energy_j=report.energy_per_frame_j, area_mm2=report.area_mm2,
            energy_by_component_j={str(plain(k)): v * 1e-12
                                   for k, v in report.energy_pj.items()},
            basis=f"cycle model of the {report.arch.name} architecture "
                  "(chipforge.sim.cycle: component tables of the cited papers), on the "
                  "placement of the functional simulation, zero-skipping on the given inputs",
            samples=int(report.frames), details={"cycles": cycle_summary(report)},
            native=report)


def run_reram(graph, accelerator, x: np.ndarray, y: np.ndarray, *, seed: int = 0,
              mapped=None, ideal_logits: np.ndarray | None = None, float_accuracy: bool = True,
              **device_options: Any):
    """One ReRAM chip instance through the interface, for sweeps: ``mapped`` (a placement's
    ``MappedModel``) and ``ideal_logits`` skip recomputing them; ``device_options`` are the
    family's convenience options (``fault_rate``, ``variation``, ...) and its run options
    (``max_memory``, ``layer_errors``, ...). Returns the
    :class:`~chipforge.simulate.SimulationResult`."""
    from chipforge.families import get_accelerator_spec
    from chipforge.simulate import simulate_graph

    run_options = {k: device_options.pop(k) for k in list(device_options)
                   if k in ReramFamily.run_options}
    spec = get_accelerator_spec(accelerator, options=device_options)
    if not isinstance(spec.family, ReramFamily):
        raise ValueError(f"run_reram needs a ReRAM accelerator, not {spec.name!r} "
                         f"(family {spec.family.name})")
    if mapped is not None and not isinstance(mapped, Mapping):
        mapped = spec.family.mapping_of(mapped, graph, spec.config)
    return simulate_graph(spec, graph, x, y, seed=seed, mapped=mapped,
                          run_options={"ideal_logits": ideal_logits,
                                       "float_logits": float_accuracy,
                                       **run_options}).result


register_family(ReramFamily())
