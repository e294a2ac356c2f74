"""The HeatViT family: an FPGA ViT engine with token selectors (Dong et al., HPCA'23).

It runs any ViT graph that :func:`chipforge.sim.vit_graph.graph_to_vit` recognizes (an ONNX
or ``from_torch`` import of a timm-style ViT or of ``nn.TransformerEncoderLayer``
(pre-norm) blocks, the bundled ``vit-digits*`` graphs, the output of ``chipforge compress
heatvit``):

- **map**: the transformer is recognized in the IR and lowered to the engine's layers
  (patch embedding, blocks, token selectors, head), one row per block;
- **run**: 8-bit fixed point (:func:`chipforge.sim.vit.run_vit`: int8 GEMMs, polynomial
  GELU and exp, PLAN sigmoid, token packager), batched; a graph with ``TOKEN_SELECT`` nodes
  prunes tokens image by image. "Ideal" is the same fixed-point ViT without its selectors
  (dense), so the accuracy cost of pruning reads off directly; the float graph is the
  float view. Deterministic (the seed is recorded only);
- **cost**: the engine's cycle model (:mod:`chipforge.sim.cycle.heatvit`) on the tokens each
  image actually keeps, layer sizes from the graph; energy = an assumed FPGA power
  (:data:`ZCU102_VIT_POWER_W`, cited) x latency; area as FPGA resources (DSP slices).

The activation formats are calibrated once: a graph from ``compress heatvit`` carries the
formats its engine thresholds were calibrated with (``meta["heatvit_calibration"]``);
otherwise ``prepare`` calibrates on the main job's calibration images (256 digits training
images for ``--data digits``), and a run without ``prepare`` on the first 256 inputs it is
given.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np

from chipforge.config import ConfigBase, check_float
from chipforge.families import register_family
from chipforge.families.base import AcceleratorFamily, CostReport, LayerCost, Mapping, RunOutput
from chipforge.sim.cycle.heatvit import HEATVIT_ZCU102, FpgaEngineConfig

__all__ = ["HEATVIT", "HeatvitConfig", "HeatvitFamily"]

BUNDLED_VARIANTS = ("keep80", "keep60", "keep50")
ZCU102_VIT_POWER_W = 780.2 / 105.1
"""7.42 W: Shao et al. (arXiv 2403.20230), a ZCU102 ViT accelerator at 200 MHz, 780.2 GOPS
at 105.1 GOPS/W. Assumed for the HeatViT engine (same board and clock), not HeatViT's."""
XCZU9EG_DSPS = 2520
"""DSP slices of the ZCU102's XCZU9EG."""
SELECTOR_RTL = {"lut": 6518, "ff": 8768, "dsp": 82}
"""One token selector in RTL (chipforge.hw, yosys synth_xilinx 7-series: docs/rtl.md)."""
SELECTOR_CHOICES = ("model", "none", *BUNDLED_VARIANTS)
CALIBRATION_META = "heatvit_calibration"


@dataclasses.dataclass(frozen=True, kw_only=True)
class HeatvitConfig(ConfigBase):
    """The HeatViT FPGA engine."""

    name: str = "heatvit"
    """Name shown in reports."""
    selectors: str = "model"
    """``model``: the graph's own token selectors (none: dense); ``none``: drop them;
    ``keep80``/``keep60``/``keep50``: the bundled ``vit-digits`` with that selector
    variant (a shortcut for the model ``vit-digits-keepNN``)."""
    fixed: bool = True
    """8-bit fixed point (HeatViT §5.1) or float."""
    engine: FpgaEngineConfig = HEATVIT_ZCU102
    """The GEMM engine (ZCU102, 64x64 8-bit MACs)."""
    power_w: float = ZCU102_VIT_POWER_W
    """Power of the FPGA running the engine, static and dynamic, for energy per inference
    = power x latency. Default: an ASSUMED figure, the measured power of a published
    ZCU102 ViT accelerator at the same 200 MHz (Shao et al., "An FPGA-Based Reconfigurable
    Accelerator for Convolution-Transformer Hybrid EfficientViT", arXiv 2403.20230:
    780.2 GOPS at 105.1 GOPS/W = 7.42 W); HeatViT does not publish its power."""

    def __post_init__(self) -> None:
        if self.selectors not in SELECTOR_CHOICES:
            raise ValueError(f"selectors must be one of {', '.join(SELECTOR_CHOICES)}, "
                             f"not {self.selectors!r}")
        if not isinstance(self.fixed, bool):
            raise ValueError(f"fixed must be true or false, not {self.fixed!r}")
        if not isinstance(self.engine, FpgaEngineConfig):
            raise ValueError(f"engine must be an FpgaEngineConfig, not {self.engine!r}")
        check_float("power_w", self.power_w, 0.0, lo_open=True)


# HeatViT (Dong et al., HPCA'23, §5-6) on the ZCU102 engine model of
# chipforge.sim.cycle.heatvit (8-bit, 64x64 MACs in 2048 DSPs; tile sizes assumed).
HEATVIT = HeatvitConfig()


@dataclasses.dataclass
class _Lowered:
    graph: Any
    """The graph that runs (the bundled variant when ``selectors`` names one)."""
    net: Any
    """Its engine description (:class:`chipforge.zoo.vit.VitModel`), selectors as chosen."""
    shape: Any
    runs: dict = dataclasses.field(default_factory=dict)


class HeatvitFamily(AcceleratorFamily):
    """HeatViT's FPGA ViT engine with token selectors, for any ViT graph."""

    name = "heatvit"
    description = "HeatViT FPGA ViT engine (8-bit, token selectors) for imported ViT graphs"
    config_type = HeatvitConfig
    presets: ClassVar = {"heatvit": HEATVIT}
    options: ClassVar = {"selectors": "selectors"}
    rtl_blocks = ("token-linear", "poly-gelu", "poly-exp", "plan-sigmoid", "token-packager")
    integer_model = True       # the main job calls prepare(): calibrate the 8-bit formats

    def load_model(self, spec: Any):
        from chipforge.zoo.vit import VIT_VARIANTS

        if isinstance(spec, str) and spec in VIT_VARIANTS:
            from chipforge import zoo

            return zoo.load(spec)
        return super().load_model(spec)

    def prepare(self, graph, x_calib: np.ndarray, *, mode: str, calib_label: str,
                notes: list[str]):
        """Calibrate the fixed-point formats (with and without selectors) on ``x_calib``;
        the graph's weights stay float (the engine quantizes them to 8 bits itself)."""
        from chipforge.heatvit import calibrate_graph
        from chipforge.sim.vit_graph import graph_to_vit

        if CALIBRATION_META in graph.meta:      # compress heatvit calibrated its thresholds
            notes.append("heatvit: 8-bit activation formats from the model file ("
                         f"{graph.meta[CALIBRATION_META].get('label', '?')})")
            return graph
        out = graph.copy()
        fracs = calibrate_graph(graph_to_vit(graph), np.asarray(x_calib))
        out.meta[CALIBRATION_META] = {"fracs": list(fracs), "label": calib_label}
        notes.append(f"heatvit: 8-bit activation formats calibrated on {calib_label}")
        return out

    def map(self, graph, config: HeatvitConfig) -> Mapping:
        from chipforge.heatvit import vit_shape, without_selectors
        from chipforge.sim.vit_graph import graph_to_vit

        if config.selectors in BUNDLED_VARIANTS:
            if graph.name != "vit-digits":
                raise ValueError(f"selectors={config.selectors} picks a variant of the bundled "
                                 f"vit-digits, not of {graph.name!r}; use selectors=model "
                                 "(the graph's own selectors) or none")
            from chipforge.zoo.vit import calibrated_variant

            graph = calibrated_variant(f"vit-digits-{config.selectors}", CALIBRATION_META)
        net = graph_to_vit(graph)
        if config.selectors == "none":
            net = without_selectors(net)
        c = net.config
        shape = vit_shape(c, graph.name)
        rows = [{"node": f"block{i}", "tokens_in": c.num_patches + 1, "dim": c.dim,
                 "heads": c.heads, "mlp_hidden": c.mlp_hidden,
                 "selector_keep_ratio": (c.keep_ratios[c.selector_blocks.index(i)]
                                         if i in c.selector_blocks else None)}
                for i in range(c.depth)]
        totals = {"blocks": c.depth, "selectors": len(c.selector_blocks),
                  "selector_blocks": list(c.selector_blocks), "engine_dsps": config.engine.dsps}
        return Mapping(self.name, rows, totals, detail=_Lowered(graph, net, shape))

    def _run(self, mapped: Mapping, config: HeatvitConfig, x: np.ndarray):
        from chipforge.heatvit import run_heatvit_graph

        low: _Lowered = mapped.detail
        key = (len(x), x.tobytes()[:4096], hash(x.tobytes()))
        if key not in low.runs:
            meta = low.graph.meta.get(CALIBRATION_META)
            fracs = None
            if meta is not None and config.selectors != "none":
                fracs = tuple(meta["fracs"])
            elif meta is not None:
                fracs = (meta["fracs"][1], meta["fracs"][1])
            low.runs = {key: run_heatvit_graph(low.graph, x, engine=config.engine,
                                               fixed=config.fixed, model=low.net,
                                               fracs=fracs)}
        return low.runs[key]

    def run(self, graph, mapped: Mapping, config: HeatvitConfig, x: np.ndarray, *,
            seed: int = 0) -> RunOutput:
        from chipforge.sim.executor import run_graph

        low: _Lowered = mapped.detail
        r = self._run(mapped, config, np.asarray(x, dtype=np.float64))
        tokens = r.tokens_per_block.mean(0)
        layers = [{"node": f"block{i}", "tokens_mean": round(float(t), 3)}
                  for i, t in enumerate(tokens)]
        metrics = {"selectors": config.selectors, "selector_blocks": list(r.selector_blocks),
                   "keep_ratios": list(r.keep_ratios),
                   "mac_reduction": r.mac_reduction,
                   "macs_per_image": float(r.macs.mean()),
                   "macs_per_image_dense": float(r.macs_dense.mean()),
                   "tokens_per_block": [round(float(t), 2) for t in tokens],
                   "kept_per_selector": [round(float(k), 2) for k in r.kept.mean(0)]}
        float_graph = low.graph
        if config.selectors == "none":
            float_graph = _strip_selectors(low.graph)
        return RunOutput(r.logits, r.logits_dense,
                         "the same " + ("fixed-point " if config.fixed else "float ")
                         + "ViT without its token selectors (every token kept)",
                         metrics, layers,
                         float_logits=run_graph(float_graph, x, quantized=False))

    def cost(self, graph, mapped: Mapping, config: HeatvitConfig,
             x: np.ndarray) -> CostReport | None:
        r = self._run(mapped, config, np.asarray(x, dtype=np.float64))
        engine = config.engine
        per_block = r.cycles_per_block.mean(0)
        layers = [LayerCost(f"block{i}", cycles=float(c), latency_s=float(c) / engine.clock_hz)
                  for i, c in enumerate(per_block)]
        layers += [LayerCost(f"selector{s}", cycles=float(c),
                             latency_s=float(c) / engine.clock_hz)
                   for s, c in enumerate(r.cycles_per_selector.mean(0))]
        mean = float(r.cycles.mean())
        return CostReport(
            layers=layers, cycles=mean, latency_s=mean / engine.clock_hz,
            throughput_per_s=engine.clock_hz / mean,
            energy_j=config.power_w * mean / engine.clock_hz, area_mm2=None,
            basis="FPGA engine cycle model (chipforge.sim.cycle.heatvit) on the tokens each "
                  "image keeps, layer sizes from the graph; clock and tile fill assumed; "
                  f"energy = {config.power_w:.3g} W x latency (ASSUMED power: a published "
                  "ZCU102 ViT accelerator at 200 MHz, Shao et al. arXiv 2403.20230)",
            samples=len(x),
            includes={
                "latency": "the GEMM engine's cycles (blocks and selectors on one engine); "
                           "LayerNorm on the ARM core and the nonlinear units overlap",
                "energy": "the FPGA at the assumed power (as the cited paper measured "
                          "its board) for the latency",
                "area": "an FPGA has no mm^2 of its own: resources instead, "
                        f"{engine.dsps} DSP slices for the engine "
                        f"({engine.dsps / XCZU9EG_DSPS:.0%} of the XCZU9EG's "
                        f"{XCZU9EG_DSPS}); our token-selector RTL, if built beside it: "
                        f"{SELECTOR_RTL['lut']} LUT, {SELECTOR_RTL['ff']} FF, "
                        f"{SELECTOR_RTL['dsp']} DSP (7-series, docs/rtl.md)"},
            extra={"power_assumed_w": float(config.power_w),
                   "engine_dsp_slices": int(engine.dsps),
                   "dsp_share_of_xczu9eg": round(engine.dsps / XCZU9EG_DSPS, 4)},
            details={"speedup_vs_no_selectors": r.speedup,
                     "mac_reduction": r.mac_reduction,
                     "cycles_per_image": {"mean": mean, "min": float(r.cycles.min()),
                                          "max": float(r.cycles.max())},
                     "cycles_per_image_dense": float(r.cycles_dense.mean()),
                     "tokens_per_block": r.tokens_per_block.mean(0).tolist(),
                     "kept_per_selector": r.kept.mean(0).tolist(),
                     "engine": engine.to_dict()})


def _strip_selectors(graph):
    """``graph`` without its TOKEN_SELECT nodes (their readers read their input)."""
    from chipforge.sim.graph import Graph, Op

    out = graph.copy()
    rename = {}
    nodes = []
    for n in out.nodes:
        n.inputs = tuple(rename.get(i, i) for i in n.inputs)
        n.attrs.pop("mask_from", None)
        if n.op is Op.TOKEN_SELECT:
            rename[n.name] = n.inputs[0]
            continue
        nodes.append(n)
    return Graph(out.name, out.input_shape, nodes, out.output, out.meta)


register_family(HeatvitFamily())
