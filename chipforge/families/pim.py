"""The PIM ADC macro family: a charge-domain compute-in-memory macro whose every analog
partial sum goes through a low-resolution ADC (CAP-RAM-like; PIM-QAT's setting).

Config: :class:`PimMacroConfig` — the decomposition scheme, rows summed per conversion,
DAC bits, the column ADC (:class:`chipforge.sim.adc.AdcConfig`: bits, INL, thermal noise,
gain/offset spread, calibration) and the cost figures. Map: the tiling of each quantized
layer onto arrays of ``rows`` x ``columns`` (one column per weight bit and output). Run:
:class:`chipforge.sim.pim.PimMatmul` as the executor's matmul hook. Cost: conversions and
cycles counted from the tiling and the model's bit widths, energy and area from CAP-RAM's
measured chip figures (``/shared/reference/aqfp-and-pim-adc.md`` B.1); what is assumed is
marked [I] below and in the report's ``basis``.

Nested keys reach the ADC: ``--set adc.bits=5 --set adc.thermal_noise_lsb=0.5``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from chipforge.config import ConfigBase, check_float, check_int
from chipforge.families import register_family
from chipforge.families.base import AcceleratorFamily, CostReport, LayerCost, Mapping, RunOutput
from chipforge.sim.adc import CAP_RAM_ADC, IDEAL_ADC, AdcConfig
from chipforge.sim.pim import Decomposition, PimConfig

__all__ = ["CAP_RAM", "CAP_RAM_TERNARY", "PIM_BIT_SERIAL", "PIM_IDEAL", "PIM_PRESETS",
           "PimFamily", "PimMacroConfig"]

# CAP-RAM (Chen et al., JSSC 2021; reference B.1) [V]: 11.62 mW at 70 MHz, one IMC
# operation and conversion per cycle. With 64 column ADCs converting each cycle [I: 32
# pairs of slices, one ADC per slice] one column conversion costs 11.62 mW / 70 MHz / 64.
_CAP_RAM_PJ_PER_CONVERSION = 11.62e-3 / 70e6 / 64 * 1e12        # 2.59 pJ, derived
# The ADC's share is not published [NF]. We take the 8-bit ADC of Accelergy's ISAAC
# derivation (1.667 pJ, reference papers.md §6.2) scaled by 2**(6 - 8) for 6 bits
# (energy ~ 2**ENOB, Walden figure of merit) [I]; the rest is array, DAC and periphery.
_CAP_RAM_ADC_PJ = 1.667 / 4


@dataclasses.dataclass(frozen=True, kw_only=True)
class PimMacroConfig(ConfigBase):
    """A PIM macro with column ADCs: decomposition, array, DAC, ADC and cost figures."""

    name: str = "pim-custom"
    """Name shown in reports."""
    decomposition: Decomposition = Decomposition.MULTIBIT_DAC
    """How a layer's product is split into analog partial sums (bit_serial: 1-bit inputs;
    multibit_dac: ``dac_bits``-bit inputs; differential: ternary weight digits on cell
    pairs read by a bipolar ADC). Weights are one bit per cell."""
    rows: int = 128
    """Rows summed on a column per conversion (CAP-RAM: 128 active clusters)."""
    dac_bits: int = 4
    """Input bits per cycle for multibit_dac (CAP-RAM: 4)."""
    adc: AdcConfig = CAP_RAM_ADC
    """The column ADC and its non-idealities."""
    columns: int = 64
    """ADC columns of one array, converting in parallel each cycle [I: CAP-RAM's 64
    slices]."""
    arrays_per_macro: int = 8
    """Weight sets a macro holds that share its ADCs (CAP-RAM: 8 cells per cluster, one
    active at a time)."""
    clock_hz: float = 70e6
    """One IMC operation and conversion per cycle (CAP-RAM: 70 MHz)."""
    array_energy_pj: float = _CAP_RAM_PJ_PER_CONVERSION - _CAP_RAM_ADC_PJ
    """Array, DAC and periphery energy per column conversion (CAP-RAM chip power minus the
    assumed ADC share)."""
    adc_energy_pj: float = _CAP_RAM_ADC_PJ
    """ADC energy per conversion at ``adc_energy_bits`` [I]."""
    adc_energy_bits: int = 6
    """Resolution at which ``adc_energy_pj`` holds; other resolutions scale it by
    ``2**(bits - adc_energy_bits)`` [I]."""
    macro_area_mm2: float = 0.179
    """Area of one macro with its periphery (CAP-RAM chip: 0.179 mm^2)."""
    cost_adc_bits: int | None = None
    """The ADC resolution the cost model prices (None: ``adc.bits``). ``pim-ideal`` sets
    6: its 16-bit ideal ADC is an accuracy reference, not a circuit, so it is priced as
    the macro's real 6-bit ADC and its report says so (scaling 2**(bits - 6) to 16 bits
    would claim a 1024x ADC no one builds)."""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name must be a non-empty string, not {self.name!r}")
        if not isinstance(self.decomposition, Decomposition):
            raise ValueError(f"decomposition must be one of "
                             f"{', '.join(d.value for d in Decomposition)}, "
                             f"not {self.decomposition!r}")
        check_int("rows", self.rows, 1, 4096)
        check_int("dac_bits", self.dac_bits, 1, 8)
        if not isinstance(self.adc, AdcConfig):
            raise ValueError(f"adc must be an AdcConfig, not {self.adc!r}")
        check_int("columns", self.columns, 1, 4096)
        check_int("arrays_per_macro", self.arrays_per_macro, 1, 1024)
        check_float("clock_hz", self.clock_hz, 0.0, lo_open=True)
        check_float("array_energy_pj", self.array_energy_pj, 0.0)
        check_float("adc_energy_pj", self.adc_energy_pj, 0.0)
        check_int("adc_energy_bits", self.adc_energy_bits, 1, 16)
        check_float("macro_area_mm2", self.macro_area_mm2, 0.0)
        if self.cost_adc_bits is not None:
            check_int("cost_adc_bits", self.cost_adc_bits, 1, 16)

    def pim_config(self) -> PimConfig:
        """The functional simulator's view (:class:`chipforge.sim.pim.PimConfig`)."""
        return PimConfig(decomposition=self.decomposition, rows=self.rows,
                         dac_bits=self.dac_bits, adc=self.adc)

    @property
    def priced_adc_bits(self) -> int:
        """The ADC resolution the cost model prices (``cost_adc_bits`` or ``adc.bits``)."""
        return self.adc.bits if self.cost_adc_bits is None else self.cost_adc_bits

    @property
    def adc_conversion_pj(self) -> float:
        """ADC energy of one conversion at the priced resolution."""
        return self.adc_energy_pj * 2.0 ** (self.priced_adc_bits - self.adc_energy_bits)

    @property
    def conversion_energy_pj(self) -> float:
        """Array plus ADC energy of one column conversion at the priced ADC resolution."""
        return self.array_energy_pj + self.adc_conversion_pj


# CAP-RAM (JSSC 2021, reference B.1, B.5): 4-bit DAC inputs, 1-bit weight cells, 128 rows,
# 6-bit single-ended ciSAR ADC with 0.35 LSB rms thermal noise and per-ADC linear
# calibration (CAP_RAM_ADC documents which ADC figures are ours).
CAP_RAM = PimMacroConfig(name="cap-ram")
# CAP-RAM's ternary mode (B.1): weight digits on cell pairs ("01" = +1, "10" = -1) read by
# the 7-bit differential ciSAR ADC.
CAP_RAM_TERNARY = PimMacroConfig(name="cap-ram-ternary",
                                 decomposition=Decomposition.DIFFERENTIAL,
                                 adc=dataclasses.replace(CAP_RAM_ADC, bits=7))
# Bit-serial inputs (CAP-RAM Eq. 2) on the same macro: 128 x 1 x 1 fits 8 bits, the 6-bit
# ADC drops the two least significant.
PIM_BIT_SERIAL = PimMacroConfig(name="pim-bit-serial",
                                decomposition=Decomposition.BIT_SERIAL)
# The same macro with a wide ideal ADC: exactly the quantized model (a reference point).
# Its cost is the real macro's (6-bit ADC), labelled so: an ideal ADC has no circuit.
PIM_IDEAL = PimMacroConfig(name="pim-ideal", adc=IDEAL_ADC, cost_adc_bits=6)

PIM_PRESETS: dict[str, PimMacroConfig] = {
    c.name: c for c in (CAP_RAM, CAP_RAM_TERNARY, PIM_BIT_SERIAL, PIM_IDEAL)}


def _layer_shape(node) -> tuple[int, int]:
    """(K, N): rows and columns of a weighted node's weight matrix (per group)."""
    w = node.params["weight"]
    return int(np.prod(w.shape[1:])), int(w.shape[0])


class PimFamily(AcceleratorFamily):
    """A charge-domain PIM macro whose partial sums pass low-resolution column ADCs."""

    name = "pim"
    description = "PIM ADC macro (CAP-RAM-like charge-domain compute-in-memory)"
    config_type = PimMacroConfig
    presets: ClassVar = PIM_PRESETS
    options: ClassVar = {"adc_bits": "adc.bits"}

    def map(self, graph, config: PimMacroConfig) -> Mapping:
        rows = []
        for node in graph.weighted_nodes():
            if not node.quantized:
                raise ValueError(f"node {node.name!r} is not quantized: the PIM macro needs "
                                 "integer weights and activations; quantize the model first")
            if node.attrs.get("act_signed"):
                raise ValueError(f"node {node.name!r} takes signed activations; the PIM "
                                 "macro's DACs take unsigned inputs (after a ReLU, or pixels)")
            k, n = _layer_shape(node)
            slices = int(node.attrs["weight_bits"])
            act_bits = int(node.attrs["act_bits"])
            row_tiles = -(-k // config.rows)
            column_tiles = -(-(slices * n) // config.columns)
            arrays = row_tiles * column_tiles
            input_cycles = -(-act_bits // config.pim_config().input_dac_bits)
            rows.append({"node": node.name, "weight_shape": [k, n], "weight_bits": slices,
                         "act_bits": act_bits, "row_tiles": row_tiles,
                         "column_tiles": column_tiles, "arrays": arrays,
                         "macros": -(-arrays // config.arrays_per_macro),
                         "input_cycles": input_cycles,
                         "conversions_per_vector": row_tiles * input_cycles * slices * n,
                         "utilization": k * slices * n
                         / (arrays * config.rows * config.columns)})
        if not rows:
            raise ValueError(f"graph {graph.name!r} has no weighted layers to map")
        totals = {"arrays": sum(r["arrays"] for r in rows),
                  "macros": sum(r["macros"] for r in rows),
                  "decomposition": config.decomposition.value, "adc_bits": config.adc.bits}
        return Mapping(self.name, rows, totals)

    def run(self, graph, mapped: Mapping, config: PimMacroConfig, x: np.ndarray, *,
            seed: int = 0, progress: Callable[[int], None] | None = None) -> RunOutput:
        """``progress(n)`` after each streamed chunk of ``n`` samples (a 20th of the batch,
        at least 16): one hook over consecutive chunks converts exactly as over the whole
        batch (the thermal noise is indexed by input row)."""
        from chipforge.sim.executor import run_graph
        from chipforge.sim.pim import PimMatmul

        hook = PimMatmul(config.pim_config(), seed=seed)
        chunk = len(x) if progress is None else max(16, -(-len(x) // 20))
        parts = []
        for start in range(0, max(len(x), 1), max(chunk, 1)):
            parts.append(run_graph(graph, x[start:start + chunk], matmul=hook))
            if progress is not None:
                progress(len(parts[-1]))
        logits = np.concatenate(parts)
        ideal = run_graph(graph, x)
        metrics: dict[str, Any] = {"adc_full_scale_mac": next(
            (a.full_scale for a in hook._adcs.values()), None)}
        return RunOutput(logits, ideal, "quantized model, exact integer arithmetic", metrics,
                         float_logits=run_graph(graph, x, quantized=False))

    def cost(self, graph, mapped: Mapping, config: PimMacroConfig,
             x: np.ndarray) -> CostReport | None:
        from chipforge.sim.executor import run_graph

        shapes = {k: v.shape for k, v in run_graph(graph, x[:1], return_all=True).items()}
        per_conv = config.conversion_energy_pj * 1e-12
        layers, stage_times, total_conversions = [], [], 0
        for row in mapped.layers:
            out_shape = shapes[row["node"]][1:]
            vectors = int(np.prod(out_shape[1:])) if len(out_shape) == 3 else \
                int(np.prod(out_shape[:-1])) if len(out_shape) > 1 else 1
            conversions = vectors * row["conversions_per_vector"]
            total_conversions += conversions
            # the arrays of one macro share its ADCs: they take turns, each converting
            # `columns` sums per cycle [I]
            cycles = vectors * row["input_cycles"] * min(row["arrays"],
                                                         config.arrays_per_macro)
            adc_j = conversions * config.adc_conversion_pj * 1e-12
            layers.append(LayerCost(row["node"], cycles=float(cycles),
                                    latency_s=cycles / config.clock_hz,
                                    energy_j=conversions * per_conv,
                                    area_mm2=row["macros"] * config.macro_area_mm2,
                                    energy_by_component_j={
                                        "adc": adc_j,
                                        "array_dac_periphery": conversions * per_conv - adc_j}))
            stage_times.append(cycles / config.clock_hz)
        from chipforge.sim.cycle.elementwise import (
            ELEMENTWISE_SOURCE,
            elementwise_activity,
            elementwise_time_ns,
        )

        elementwise = elementwise_activity(graph)
        for a in elementwise:      # one digital unit pair beside the macros (assumed)
            seconds = elementwise_time_ns(a, 1) * 1e-9
            layers.append(LayerCost(a.name, cycles=seconds * config.clock_hz,
                                    latency_s=seconds, energy_j=a.energy_pj * 1e-12,
                                    area_mm2=0.0,
                                    energy_by_component_j={"digital": a.energy_pj * 1e-12}))
            stage_times.append(seconds)
        by_component: dict[str, float] = {}
        for la in layers:
            for k, v in la.energy_by_component_j.items():
                by_component[k] = by_component.get(k, 0.0) + v
        return CostReport(
            layers=layers, cycles=float(sum(la.cycles for la in layers)),
            latency_s=sum(stage_times), throughput_per_s=1.0 / max(stage_times),
            energy_j=sum(la.energy_j for la in layers),
            area_mm2=sum(la.area_mm2 for la in layers),
            energy_by_component_j=by_component,
            basis="counted conversions and cycles of the tiling; energy per conversion "
                  f"{config.conversion_energy_pj:.3g} pJ from CAP-RAM's measured 11.62 mW at "
                  "70 MHz over 64 columns [derived], its ADC share assumed (ISAAC/Accelergy "
                  "8-bit ADC scaled by 2**(bits-8)) [I]; area = macros x 0.179 mm^2 "
                  "(CAP-RAM chip); one macro per layer, layers pipelined [I]"
                  + ("" if config.cost_adc_bits is None or config.cost_adc_bits
                     == config.adc.bits else
                     f"; IDEAL REFERENCE: the {config.adc.bits}-bit ideal ADC is priced as "
                     f"the macro's real {config.cost_adc_bits}-bit ADC")
                  + (f"; element-wise ops on one digital unit pair per chip: "
                     f"{ELEMENTWISE_SOURCE}" if elementwise else ""),
            includes={
                "latency": "layers one after the other, each its macro's IMC cycles at "
                           f"{config.clock_hz / 1e6:.4g} MHz",
                "energy": "macro: ADC conversions plus array, DAC and periphery (CAP-RAM's "
                          "measured chip power per conversion); no off-macro memory",
                "area": f"{mapped.totals['macros']} macros x {config.macro_area_mm2} mm^2 "
                        "(CAP-RAM chip with its periphery); no off-macro memory"},
            extra={"macros": int(mapped.totals["macros"]),
                   "adc_bits_priced": int(config.priced_adc_bits)},
            details={"conversion_energy_pj": config.conversion_energy_pj,
                     "conversions_per_inference": total_conversions,
                     "macros": mapped.totals["macros"]})


register_family(PimFamily())
