"""The HeatViT family (PLACEHOLDER ADAPTER): today's bundled-ViT path behind the interface.

The "vit" branch replaces this one file with the family that runs any imported ViT from
the IR (token selectors as IR nodes). Until then the adapter keeps today's behaviour: the
bundled ``vit-digits`` model (its own format, :mod:`chipforge.zoo.vit`) with a token
selector variant, 8-bit fixed point (:func:`chipforge.sim.vit.run_vit`), on the digits test
split, and the FPGA engine's cycle model counting the tokens each image keeps
(:mod:`chipforge.sim.cycle.heatvit`). "Ideal" is the same fixed-point ViT without
selectors; "hardware" is with them. Deterministic (the seed is recorded only).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np

from chipforge.config import ConfigBase
from chipforge.families import register_family
from chipforge.families.base import AcceleratorFamily, CostReport, LayerCost, Mapping, RunOutput
from chipforge.sim.cycle.heatvit import HEATVIT_ZCU102, FpgaEngineConfig

__all__ = ["HEATVIT", "HeatvitConfig", "HeatvitFamily"]

SELECTOR_CHOICES = ("keep80", "keep60", "keep50", "none")


@dataclasses.dataclass(frozen=True, kw_only=True)
class HeatvitConfig(ConfigBase):
    """The HeatViT FPGA engine running the bundled ViT with a token-selector variant."""

    name: str = "heatvit"
    """Name shown in reports."""
    selectors: str = "keep50"
    """Token-selector variant of ``vit-digits`` (keep80, keep60, keep50) or none."""
    fixed: bool = True
    """8-bit fixed point (HeatViT §5.1) or float."""
    engine: FpgaEngineConfig = HEATVIT_ZCU102
    """The GEMM engine (ZCU102, 64x64 8-bit MACs)."""

    def __post_init__(self) -> None:
        if self.selectors not in SELECTOR_CHOICES:
            raise ValueError(f"selectors must be one of {', '.join(SELECTOR_CHOICES)}, "
                             f"not {self.selectors!r}")
        if not isinstance(self.fixed, bool):
            raise ValueError(f"fixed must be true or false, not {self.fixed!r}")
        if not isinstance(self.engine, FpgaEngineConfig):
            raise ValueError(f"engine must be an FpgaEngineConfig, not {self.engine!r}")


# HeatViT (Dong et al., HPCA'23) on the ZCU102 engine model; keep50 is the bundled
# selector variant the README demo uses.
HEATVIT = HeatvitConfig()


@dataclasses.dataclass(frozen=True)
class _BundledVit:
    """Stands in for a Graph until the vit branch lands: the zoo ViT by name."""

    name: str
    input_shape: tuple[int, ...] = (1, 8, 8)


class HeatvitFamily(AcceleratorFamily):
    """HeatViT's FPGA ViT engine with token selectors (placeholder: bundled ViT only)."""

    name = "heatvit"
    description = "HeatViT FPGA ViT engine with token selectors (bundled vit-digits only)"
    config_type = HeatvitConfig
    presets: ClassVar = {"heatvit": HEATVIT}
    options: ClassVar = {"selectors": "selectors"}
    rtl_blocks = ("token-linear", "poly-gelu", "poly-exp", "plan-sigmoid", "token-packager")
    integer_model = False

    def load_model(self, spec: Any):
        if str(spec) != "vit-digits":
            raise ValueError(f"the heatvit accelerator runs the zoo model 'vit-digits', "
                             f"not {str(spec)!r} (imported ViTs: coming with the vit branch)")
        return _BundledVit("vit-digits")

    def load_data(self, data: Any, graph, samples: int | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
        from chipforge.zoo.data import digits

        if data is not None and not (isinstance(data, str) and data == "digits"):
            raise ValueError(f"the heatvit accelerator runs the digits test split only, "
                             f"not {data!r}")
        d = digits(8)
        return np.asarray(d.x_test), np.asarray(d.y_test)

    def map(self, graph, config: HeatvitConfig) -> Mapping:
        from chipforge.heatvit import vit_shape
        from chipforge.zoo.vit import load_vit

        variant = None if config.selectors == "none" else config.selectors
        net = load_vit(f"{graph.name}-{variant}") if variant else load_vit(graph.name)
        shape = vit_shape(net.config)
        rows = [{"node": f"block{i}", "dim": shape.dim, "heads": shape.heads,
                 "mlp_hidden": shape.mlp_hidden} for i in range(shape.depth)]
        return Mapping(self.name, rows, {"selectors": config.selectors,
                                         "engine_dsps": config.engine.dsps},
                       detail=(net, load_vit(graph.name), shape))

    def run(self, graph, mapped: Mapping, config: HeatvitConfig, x: np.ndarray, *,
            seed: int = 0) -> RunOutput:
        from chipforge.sim.vit import run_vit

        net, backbone, _ = mapped.detail
        result = run_vit(net, x, fixed=config.fixed)
        dense = run_vit(backbone, x, fixed=config.fixed)
        tokens = result.tokens_per_block.mean(0)
        layers = [{"node": f"block{i}", "tokens_mean": float(t)} for i, t in enumerate(tokens)]
        metrics = {"mac_reduction": float(1 - result.macs.mean() / dense.macs.mean()),
                   "macs_per_image": float(result.macs.mean()),
                   "tokens_per_block": [round(float(t), 2) for t in tokens]}
        # kept for the cost model: the tokens each image actually kept
        mapped.totals["_run"] = (result, dense)
        return RunOutput(result.logits, dense.logits,
                         "the same fixed-point ViT without token selectors", metrics, layers)

    def cost(self, graph, mapped: Mapping, config: HeatvitConfig,
             x: np.ndarray) -> CostReport | None:
        from chipforge.sim.cycle.heatvit import block_cycles, model_cycles
        from chipforge.sim.vit import run_vit

        net, backbone, shape = mapped.detail
        result, dense = mapped.totals.pop("_run", (None, None))
        if result is None or len(result.logits) != len(x):
            result = run_vit(net, x, fixed=config.fixed)
            dense = run_vit(backbone, x, fixed=config.fixed)
        engine = config.engine
        cycles = model_cycles(shape, result.tokens_per_block, engine, result.candidates)
        dense_cycles = model_cycles(shape, dense.tokens_per_block, engine)
        per_block = block_cycles(result.tokens_per_block, shape, engine).mean(0)
        layers = [LayerCost(f"block{i}", cycles=float(c), latency_s=float(c) / engine.clock_hz)
                  for i, c in enumerate(per_block)]
        mean = float(cycles.mean())
        return CostReport(
            layers=layers, cycles=mean, latency_s=mean / engine.clock_hz,
            throughput_per_s=engine.clock_hz / mean, energy_j=None, area_mm2=None,
            basis="FPGA engine cycle model (chipforge.sim.cycle.heatvit) on the tokens each "
                  "image keeps; clock and tile fill assumed; no energy model",
            samples=len(x),
            details={"speedup_vs_no_selectors": float(dense_cycles.mean() / mean),
                     "cycles_per_image": {"mean": mean, "min": float(cycles.min()),
                                          "max": float(cycles.max())},
                     "engine": engine.to_dict()})


register_family(HeatvitFamily())
