"""The AQFP family: SupeRBNN superconducting stochastic BNN arrays.

Config: :class:`chipforge.sim.aqfp.AqfpConfig` (preset ``superbnn``: :data:`SUPERBNN`,
whose placeholders are documented there). Map: :func:`chipforge.sim.aqfp.binary_layers`
turns any binarized graph (sign activations, +-1 weights, batch norm kept as a node or
folded into the weights by an importer) into N x N crossbar layers with per-column
thresholds. Run: :func:`chipforge.sim.aqfp.aqfp_forward` (randomized buffers, stochastic
accumulation; one seed one result). Cost: junction counts, 4-phase clock latency and
energy per junction switch (:func:`chipforge.sim.aqfp.cost_model`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from chipforge.families import register_family
from chipforge.families.base import AcceleratorFamily, CostReport, LayerCost, Mapping, RunOutput
from chipforge.sim.aqfp import SUPERBNN, AqfpConfig

__all__ = ["AqfpFamily"]


class AqfpFamily(AcceleratorFamily):
    """AQFP crossbars of binary weights read by randomized buffers (SupeRBNN)."""

    name = "aqfp"
    description = "AQFP superconducting stochastic BNN arrays (SupeRBNN)"
    config_type = AqfpConfig
    presets: ClassVar = {"superbnn": SUPERBNN}
    options: ClassVar = {"sigma_ua": "sigma_ua", "crossbar_size": "crossbar_size",
                         "bitstream_length": "bitstream_length"}
    rtl_blocks = ("sc-accumulator",)
    integer_model = False   # binarized (+-1) as it is; no post-training quantization

    def map(self, graph, config: AqfpConfig) -> Mapping:
        from chipforge.sim.aqfp import binary_layers, layer_cost

        encoder, layers = binary_layers(graph)
        rows = []
        for layer in layers:
            c = layer_cost(layer.fan_in, layer.fan_out, config, layer.name)
            rows.append({"node": layer.name, "fan_in": layer.fan_in, "fan_out": layer.fan_out,
                         "crossbars": c.crossbars, "streams": c.streams,
                         "josephson_junctions": c.jj_total, "output": layer.is_output})
        totals = {"crossbars": sum(r["crossbars"] for r in rows),
                  "josephson_junctions": sum(r["josephson_junctions"] for r in rows),
                  "crossbar_size": config.crossbar_size}
        return Mapping(self.name, rows, totals, detail=(encoder, layers))

    def run(self, graph, mapped: Mapping, config: AqfpConfig, x: np.ndarray, *,
            seed: int = 0) -> RunOutput:
        from chipforge.sim.aqfp import aqfp_forward
        from chipforge.sim.executor import run_graph

        encoder, layers = mapped.detail
        x_pm = run_graph(encoder, x, quantized=False).reshape(len(x), -1).astype(np.int8)
        scores = aqfp_forward(x_pm, layers, config, np.random.default_rng(seed))
        ideal = run_graph(graph, x, quantized=False)
        metrics = {"noise_mac": config.noise_mac, "bitstream_length": config.bitstream_length,
                   "randomness": config.randomness.value}
        return RunOutput(scores, ideal, "the deterministic BNN: sign of the exact MAC",
                         metrics)

    def cost(self, graph, mapped: Mapping, config: AqfpConfig,
             x: np.ndarray) -> CostReport | None:
        from chipforge.sim.aqfp import cost_model, layer_latency_s

        _, layers = mapped.detail
        costs, latency, throughput, energy = cost_model(layers, config)
        per_jj = config.jj_switch_energy_zj * 1e-21 * config.bitstream_length
        cycles_per_layer = [layer_latency_s(c, config) / config.cycle_s for c in costs]
        rows = [LayerCost(c.name, cycles=cyc, latency_s=layer_latency_s(c, config),
                          energy_j=c.jj_total * per_jj,
                          energy_by_component_j={k: v * per_jj for k, v in c.jj.items()})
                for c, cyc in zip(costs, cycles_per_layer, strict=True)]
        details: dict[str, Any] = {
            "josephson_junctions": sum(c.jj_total for c in costs),
            "energy_per_inference_j_with_cryocooler": energy.wall_j,
            "cryocooler_overhead_w_per_w": energy.cryocooler_overhead,
        }
        return CostReport(
            layers=rows, cycles=float(sum(cycles_per_layer)), latency_s=latency,
            throughput_per_s=throughput, energy_j=energy.chip_j,
            area_mm2=sum(c.jj_total for c in costs) / config.jj_per_mm2,
            energy_by_component_j=dict(energy.by_block_j),
            basis="AQFP cost model (chipforge.sim.aqfp): junction counts per block, 4-phase "
                  "clock, 1.4 zJ per junction per cycle at 4.2 K [V-2nd]; cell and MAJ3 "
                  "junction counts assumed [I]; energy: the chip at 4.2 K, and wall-plug "
                  f"with the cryocooler (x{config.cryocooler_overhead:g} W/W) beside it",
            includes={
                "latency": "the 4-phase clock through every layer's junction pipeline",
                "energy": "junction switching on the chip at 4.2 K only; wall-plug = chip x "
                          f"(1 + {config.cryocooler_overhead:g}), the cryocooler's W per W "
                          "at 4 K (300-1000 for small Gifford-McMahon / pulse-tube coolers, "
                          "200-300 for large ones: AQFP design textbook, "
                          "Adiabatic-Machines/sce-futures [secondary]); input encoding, "
                          "room-temperature I/O and memory excluded",
                "area": f"the junctions counted at {config.jj_per_mm2:g} JJ/mm^2 "
                        "(MIT-LL SFQ5ee shift-register chips, 108,500 JJ on 25 mm^2) "
                        "[assumed for AQFP: a lower bound]; the input encoder and I/O "
                        "excluded"},
            extra={"energy_per_inference_at_4K_j": energy.chip_j,
                   "energy_per_inference_wall_plug_j": energy.wall_j,
                   "cryocooler_factor": float(config.cryocooler_overhead),
                   "josephson_junctions": int(sum(c.jj_total for c in costs))},
            details=details)


register_family(AqfpFamily())
