"""The ReRAM crossbar family: ISAAC, FORMS 4/8/16, ISQED'21 two-column and differential.

Config: :class:`chipforge.accelerators.ReramAcceleratorConfig` (presets cite their tables in
:mod:`chipforge.accelerators`). Map: :func:`chipforge.mappings.placement.place` (bit slicing,
signed-weight scheme, tiling onto crossbars). Run: :class:`chipforge.sim.reram.CrossbarMatmul`
as the executor's matmul hook (one programmed chip instance per seed). Cost: the cycle and
energy model of :mod:`chipforge.sim.cycle` for the ISAAC / FORMS architectures, fed the
placement's row groups and crossbar counts.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from chipforge.accelerators import ACCELERATORS, ReramAcceleratorConfig
from chipforge.families import register_family
from chipforge.families.base import AcceleratorFamily, CostReport, LayerCost, Mapping, RunOutput

__all__ = ["ProgrammedChip", "ReramFamily", "at_model_widths", "cycle_architecture",
           "cycle_placement", "run_reram"]


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
    name when the config is that preset, else ISAAC (offset scheme), FORMS (polarized) or ISAAC
    tiles with paired columns (ISQED'21's two-column and differential schemes,
    :data:`chipforge.sim.cycle.arch.ISQED`) with this config's crossbar geometry, bits and
    ADCs.

    With ``graph`` (a quantized model), the weight and input widths follow the model as
    the placement and the functional simulation do: an 8-bit model on the 16-bit ISAAC
    preset is costed as 8-bit weights in 4 cells fed 8 input cycles, not 16."""
    arch = _config_architecture(config)
    if arch is None or graph is None:
        return arch
    return at_model_widths(arch, graph)


def at_model_widths(arch, graph):
    """``arch`` at a quantized model's weight and input widths where they are narrower
    (the placement stores a layer at max(its bits, 2); inputs take act_bits cycles), so
    every architecture of a comparison does the same work; a float graph: ``arch``."""
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
    from chipforge.sim.cycle.arch import ISQED
    from chipforge.sim.cycle.report import ARCHITECTURES

    if ACCELERATORS.get(config.name) == config and config.name in ARCHITECTURES:
        return ARCHITECTURES[config.name]
    if config.scheme in (PlacementScheme.TWO_COLUMN, PlacementScheme.DIFFERENTIAL):
        # ISQED'21: ISAAC tiles with a weight on a pair of columns (arch.ISQED)
        try:
            return ISQED.replace(name=f"{config.name} ({ISQED.name})",
                                 crossbar_rows=config.rows, crossbar_cols=config.cols,
                                 fragment_size=config.rows, cell_bits=config.cell_bits,
                                 weight_bits=config.weight_bits, input_bits=config.input_bits,
                                 adcs_per_crossbar=config.adcs_per_crossbar,
                                 adc_rate=config.adc_rate, adc_bits=config.adc_bits)
        except ValueError:
            return None
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


@dataclasses.dataclass
class ProgrammedChip:
    """One programmed ReRAM chip (:meth:`ReramFamily.program`): its cells with the
    variation and faults of ``seed`` drawn, and the hook that reads them."""

    seed: int
    device_kind: str
    adc_range: str
    hook: Any
    """The :class:`chipforge.sim.reram.CrossbarMatmul` reading this chip."""
    calibration_label: str | None = None
    adc_warnings: tuple[str, ...] = ()
    """One line per layer whose ADC range predicts a large error (empty: none)."""


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
                     "maximum) or calibrated (largest column sum per layer on 64 inputs that "
                     "are not scored: see adc_calibration)",
        "adc_calibration": "with adc_range calibrated: the inputs to calibrate on, digits (the "
                           "training split), an .npz, or scored (the scored inputs "
                           "themselves); default: the data's training split or the inputs "
                           "after the scored ones",
    }

    def check_run_options(self, options: dict[str, Any]) -> None:
        from chipforge.sim.memory import parse_size
        from chipforge.sim.reram import check_adc_range

        if options.get("max_memory") is not None:
            parse_size(options["max_memory"])
        device_kind = options.get("device_kind", "cpu")
        if device_kind not in ("cpu", "cuda"):
            raise ValueError(f"--device must be cpu or cuda, not {device_kind!r}")
        if device_kind == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise ValueError("--device cuda: no CUDA GPU is usable here "
                                 "(torch.cuda.is_available() is False); use --device cpu")
        layer_errors = options.get("layer_errors", 0)
        if not isinstance(layer_errors, int) or layer_errors < 0:
            raise ValueError(f"--layer-errors must be an integer >= 0, not {layer_errors!r}")
        mode = options.get("adc_range", "max")
        check_adc_range(mode)
        if options.get("adc_calibration") is not None and mode != "calibrated":
            raise ValueError("--adc-calibration applies to --adc-range calibrated, not "
                             f"{mode!r}")

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

    def program(self, graph, mapped: Mapping, config: ReramAcceleratorConfig, *,
                seed: int = 0, device_kind: str = "cpu", adc_range: str = "max",
                adc_calibration: tuple[str, np.ndarray] | None = None,
                warn_inputs: np.ndarray | None = None) -> ProgrammedChip:
        """Program one chip: draw its variation and stuck-at faults into the conductances
        (from ``seed``) and set its ADC ranges. ``run(..., programmed=chip)`` reads it as
        often as wanted without drawing them again (a campaign's worker keeps it across
        the sample chunks of that chip). With a ``fraction`` or ``calibrated`` ADC range, the
        layers whose ADC rounding predicts a large error on the calibration inputs (or on
        ``warn_inputs``) get a warning line (``adc_warnings``;
        :func:`chipforge.sim.reram.adc_error_warnings`)."""
        from chipforge.sim.reram import (
            CrossbarMatmul,
            adc_error_warnings,
            adc_steps,
            calibrate_adc,
        )

        if device_kind not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', not {device_kind!r}")
        placed = mapped.detail
        raw = CrossbarMatmul(placed, config.device, seed=seed, fast_path=False)
        calibration = None
        if adc_range == "calibrated":
            if not (isinstance(adc_calibration, tuple) and len(adc_calibration) == 2):
                raise ValueError("adc range 'calibrated' needs calibration inputs "
                                 "(adc_calibration=(label, inputs)); the scored inputs are "
                                 "not used unless chosen explicitly")
            calibration = calibrate_adc(graph, np.asarray(adc_calibration[1])[:64], raw)
        steps = adc_steps(adc_range, placed, calibration)
        warnings: list[str] = []
        inputs = adc_calibration[1] if calibration is not None else warn_inputs
        if adc_range != "max" and inputs is not None:
            # an ADC range whose rounding swamps the signal is said, not silently used
            warnings = adc_error_warnings(graph, np.asarray(inputs)[:64], raw, steps)
        hook = CrossbarMatmul(placed, config.device, seed=seed,
                              backend="numpy" if device_kind == "cpu" else "torch",
                              array_device=device_kind, adc_steps=steps,
                              programmed=raw.programmed)
        return ProgrammedChip(seed=seed, device_kind=device_kind, adc_range=adc_range,
                              hook=hook, calibration_label=None if calibration is None
                              else adc_calibration[0], adc_warnings=tuple(warnings))

    def run(self, graph, mapped: Mapping, config: ReramAcceleratorConfig, x: np.ndarray, *,
            seed: int = 0, ideal_logits: np.ndarray | None = None,
            float_logits: bool = True, max_memory: int | str | None = None,
            device_kind: str = "cpu", layer_errors: int = 0,
            adc_range: str = "max", adc_calibration: tuple[str, np.ndarray] | None = None,
            progress: Callable[[int], None] | None = None,
            programmed: ProgrammedChip | None = None, sample_offset: int = 0,
            capture_samples: int = 0) -> RunOutput:
        """``max_memory`` (bytes or ``"2G"``; default half the available memory) bounds the
        estimated peak: the batch is streamed in chunks that fit (:mod:`chipforge.sim.memory`),
        with the same result for any chunking. ``device_kind`` ``"cuda"`` runs the crossbars
        on torch tensors on the GPU. ``layer_errors`` > 0 adds each layer's output error vs
        the ideal run on that many samples (:mod:`chipforge.sim.layer_error`). ``adc_range``:
        ``"max"``, ``"fraction:F"`` or ``"calibrated"`` (:func:`chipforge.sim.reram.adc_steps`);
        ``"calibrated"`` needs ``adc_calibration``, ``(label, inputs)``: the inputs to
        calibrate on (never the scored ones unless the caller chose them) and what they are,
        for the report.
        ``progress(n)`` is called after each streamed chunk of ``n`` samples of the hardware
        run (chunks of at most a 20th of the batch then, for a steady ETA; same results).
        ``programmed``: a chip from :meth:`program` with this ``seed`` (else the chip is
        programmed here, timed as the ``program`` stage); ``sample_offset``: the index of
        ``x[0]`` in the whole test set, so that the read noise of sample ``i`` is the same
        whichever shard of a campaign reads it. ``capture_samples`` > 0: the ideal run
        records the cost model's layer inputs on the first that many samples
        (``RunOutput.workloads``, for :meth:`cost`'s ``workloads``; quantized graphs, and
        only where this run computes the ideal logits).
        """
        from chipforge.sim.executor import run_graph
        from chipforge.sim.memory import parse_size, plan_memory
        from chipforge.sim.reram import CrossbarMatmul
        from chipforge.stages import StageTimer

        if device_kind not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', not {device_kind!r}")
        if not isinstance(layer_errors, int) or layer_errors < 0:
            raise ValueError(f"layer_errors must be an integer >= 0, not {layer_errors!r}")
        if isinstance(sample_offset, bool) or not isinstance(sample_offset, int) \
                or sample_offset < 0:
            raise ValueError(f"sample_offset must be an integer >= 0, not {sample_offset!r}")
        device, placed = config.device, mapped.detail
        plan = plan_memory(graph, placed, device, len(x),
                           None if max_memory is None else parse_size(max_memory))
        timer = StageTimer()
        if programmed is None:
            with timer("program"):
                programmed = self.program(graph, mapped, config, seed=seed,
                                          device_kind=device_kind, adc_range=adc_range,
                                          adc_calibration=adc_calibration,
                                          warn_inputs=x[:64])
            for line in programmed.adc_warnings:
                print(line, file=sys.stderr)
        elif (programmed.seed, programmed.device_kind, programmed.adc_range) != \
                (seed, device_kind, adc_range):
            raise ValueError(f"programmed chip (seed {programmed.seed}, "
                             f"{programmed.device_kind}, ADC range {programmed.adc_range}) "
                             f"is not the chip asked for (seed {seed}, {device_kind}, "
                             f"{adc_range})")
        hook = programmed.hook
        hook.chunk_bytes, hook.report = plan.chunk_bytes, {}
        calibration = programmed.calibration_label

        def hook_factory():
            return CrossbarMatmul(placed, device, seed=seed, chunk_bytes=plan.chunk_bytes,
                                  backend=hook.backend, array_device=hook.array_device,
                                  adc_steps=hook.adc_steps, programmed=hook.programmed)

        # Each chunk is one executor batch whose read noise is keyed by the samples'
        # global indices: any chunking reads exactly as one call over the whole batch.
        chunk = plan.batch if progress is None else min(plan.batch, max(16, -(-len(x) // 20)))
        parts = []
        with timer("hardware"):
            for start in range(0, len(x), chunk):
                part = x[start:start + chunk]
                hook.window(sample_offset + start, len(part))
                parts.append(run_graph(graph, part, matmul=hook, batch_size=plan.batch))
                if progress is not None:
                    progress(len(parts[-1]))
        logits = np.concatenate(parts)
        workloads = None
        if ideal_logits is None:
            with timer("ideal"):
                capture = min(capture_samples, len(x))
                if capture and all(n.quantized for n in graph.weighted_nodes()):
                    from chipforge.sim.cycle.model import WorkloadRecorder

                    # the exact integer run, recording each layer's inputs on the first
                    # samples as it goes (the cost model's second exact pass, saved):
                    # the same logits, as every sample's run is its own
                    recorder = WorkloadRecorder(graph)
                    parts = [run_graph(graph, x[:capture], matmul=recorder,
                                       batch_size=plan.batch)]
                    workloads = recorder.workloads(capture)
                    if capture < len(x):
                        parts.append(run_graph(graph, x[capture:], batch_size=plan.batch))
                    ideal_logits = np.concatenate(parts)
                else:
                    ideal_logits = run_graph(graph, x, batch_size=plan.batch)
        described = ", ".join(f"{k}={v}" for k, v in device.to_dict().items()
                              if k in ("programming_sigma", "read_noise", "p_stuck_off",
                                       "p_stuck_on") and v)
        metrics = {"adc_reads_per_sample": hook.report.get("adc_reads", 0) / len(x),
                   "adc_saturations": hook.report.get("saturated", 0),
                   "device": described or "ideal", "adc_range": adc_range,
                   "memory_estimate_bytes": plan.estimate,
                   "memory_budget_bytes": plan.budget, "batch_chunk": plan.batch}
        if calibration is not None:
            metrics["adc_calibration"] = calibration
        if programmed.adc_warnings:
            metrics["adc_warnings"] = list(programmed.adc_warnings)
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
                         float_logits=float_out, stages=timer.rows(), workloads=workloads)

    def cost(self, graph, mapped: Mapping, config: ReramAcceleratorConfig,
             x: np.ndarray, *, workloads: list | None = None) -> CostReport | None:
        """The cycle model on ``x``; ``workloads``: its layer inputs on ``x`` already
        recorded (``RunOutput.workloads``), which skips its own exact pass."""
        try:
            from chipforge.sim.cycle.report import cycle_reports
        except ImportError:   # a build without the cycle-level models
            return None
        arch = cycle_architecture(config, graph)
        if arch is None:
            return None
        report = cycle_reports(graph, x, [arch], placement=cycle_placement(mapped.detail),
                               workloads=workloads)[0]
        from chipforge.report import cycle_summary, plain
        from chipforge.sim.cycle.elementwise import ELEMENTWISE_SOURCE

        # each layer's share of the latency: its crossbar time plus the pipeline's
        # non-crossbar stages (eDRAM, ADC, S+A, ...), so the layers sum to the latency
        stages_ns = (report.arch.pipeline_stages - report.arch.input_bits) * report.cycle_ns
        layers = [LayerCost(la.name, cycles=float(la.cycles),
                            latency_s=(la.time_ns + stages_ns) * 1e-9,
                            energy_j=la.energy_total_pj * 1e-12,
                            energy_by_component_j={str(plain(k)): v * 1e-12
                                                   for k, v in la.energy_pj.items()})
                  for la in report.layers]
        for a in report.elementwise:     # the digital units' element-wise ops
            ns = report.elementwise_ns(a)
            layers.append(LayerCost(a.name, cycles=ns / report.cycle_ns, latency_s=ns * 1e-9,
                                    energy_j=a.energy_pj * 1e-12,
                                    energy_by_component_j={"digital": a.energy_pj * 1e-12}))
        return CostReport(
            layers=layers, cycles=float(sum(la.cycles for la in layers)),
            latency_s=report.latency_ns * 1e-9, throughput_per_s=report.fps,
            energy_j=report.energy_per_frame_j, area_mm2=report.area_mm2,
            energy_by_component_j={str(plain(k)): v * 1e-12
                                   for k, v in report.energy_pj.items()},
            basis=f"cycle model of the {report.arch.name} architecture "
                  "(chipforge.sim.cycle: component tables of the cited papers), on the "
                  "placement of the functional simulation"
                  + (", zero-skipping on the given inputs" if report.arch.zero_skipping
                     else "")
                  + (f"; element-wise ops at the digital units: {ELEMENTWISE_SOURCE}"
                     if report.elementwise else ""),
            samples=int(report.frames), details={"cycles": cycle_summary(report)},
            includes={
                "latency": "layers one after the other, each its crossbar cycles plus the "
                           f"{report.arch.pipeline_stages - report.arch.input_bits} "
                           "non-crossbar pipeline stages (an upper bound: no overlap)",
                "energy": "chip activity: ADC, DAC, crossbar, S+A, eDRAM buffers and bus, "
                          "router; HyperTransport and off-chip memory excluded",
                "area": f"{report.tiles} tiles of the component table holding "
                        f"{report.crossbars} crossbars (one copy of the weights: "
                        f"{mapped.totals.get('crossbars', '?')} crossbars, replicated to "
                        "balance the pipeline); HyperTransport excluded"},
            extra={"crossbars_one_copy": int(mapped.totals.get("crossbars", 0)),
                   "crossbars_priced_in_area": int(report.crossbars),
                   "tiles_priced_in_area": int(report.tiles)},
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
