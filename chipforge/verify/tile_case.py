"""Test cases for the ReRAM tile: one layer of a bundled CNN, from ``chipforge simulate``'s
ideal run, as the tile's testbench consumes them (``.npz``).

:func:`layer_case` runs the model on the accelerator with ideal devices
(:class:`chipforge.sim.reram.CrossbarMatmul` on the placement, the path of ``chipforge
simulate``), captures the chosen layer's integer inputs ``x_q`` and its product, and
derives the tile's requantization registers from the layer's scales and the next
quantized layer's activation scale (``raw`` for the last layer). The expected tile outputs
are the requantized ideal products; :func:`check_requantization` shows they are the next
layer's own quantized inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from chipforge.sim.executor import activation_range, run_graph
from chipforge.sim.graph import Graph, Op
from chipforge.sim.ref.reram_tile import Requant, requant_for, requantize

__all__ = ["LayerCase", "check_requantization", "column_pass", "layer_case", "load_case",
           "save_case"]


@dataclass
class LayerCase:
    layer: str
    x: np.ndarray
    """(V, K) int64 the layer's integer inputs (im2col patches for a convolution)."""
    weights: np.ndarray
    """(K, N) int64 integer weights."""
    ideal: np.ndarray
    """(V, N) int64 the ideal simulated run's integer product."""
    requant: Requant
    expected: np.ndarray
    """(V, N) int64 what the tile emits: ``requantize(ideal, requant)``."""
    next_layer: str | None
    """The quantized layer that consumes this one's (requantized) outputs."""


def _next_quantized(graph: Graph, layer: str):
    names = [n.name for n in graph.nodes]
    for node in graph.nodes[names.index(layer) + 1:]:
        if node.weighted and node.quantized:
            return node
    return None


def _relu_follows(graph: Graph, layer: str) -> bool:
    return any(n.op is Op.RELU and n.inputs[0] == layer for n in graph.nodes)


def layer_case(graph: Graph, x: np.ndarray, layer: str, accelerator, *,
               max_vectors: int | None = None) -> LayerCase:
    """The tile case of ``layer`` for inputs ``x`` (see the module doc)."""
    from chipforge.mappings.placement import place
    from chipforge.sim.reram import CrossbarMatmul

    hook = CrossbarMatmul(place(graph, accelerator))
    captured = {}

    def capture(node, x_q, w_q):
        y = hook(node, x_q, w_q)
        if node.name == layer:
            captured.update(x=x_q.copy(), w=w_q.copy(), y=np.asarray(y, dtype=np.int64))
        return y

    run_graph(graph, x, matmul=capture, batch_size=len(x))
    if not captured:
        raise ValueError(f"layer {layer!r} is not a quantized weighted layer of {graph.name!r}")
    node = graph.node(layer)
    nxt = _next_quantized(graph, layer)
    relu = _relu_follows(graph, layer)
    if nxt is None or not relu or nxt.attrs["act_signed"]:
        rq = Requant(mult=np.zeros(captured["w"].shape[1], np.int64),
                     bias=np.zeros(captured["w"].shape[1], np.int64), shift=0, raw=True)
        next_name = None
    else:
        scale = (float(node.attrs["act_scale"])
                 * np.broadcast_to(np.asarray(node.attrs["weight_scale"], dtype=np.float64)
                                   .reshape(-1), (captured["w"].shape[1],)))
        bias = node.params.get("bias", np.zeros(captured["w"].shape[1]))
        bits = int(nxt.attrs["act_bits"])
        rq = requant_for(scale, bias, float(nxt.attrs["act_scale"]), out_bits=bits)
        next_name = nxt.name
    xq, y = captured["x"], captured["y"]
    if max_vectors is not None:
        xq, y = xq[:max_vectors], y[:max_vectors]
    return LayerCase(layer=layer, x=xq, weights=captured["w"], ideal=y, requant=rq,
                     expected=requantize(y, rq), next_layer=next_name)


def check_requantization(graph: Graph, x: np.ndarray, case: LayerCase) -> int:
    """How many of the next layer's quantized inputs differ from the tile's requantized
    outputs after the layers between (ReLU, max-pooling, flatten: all commute with the
    monotone requantization). 0 means the tile's outputs are the next layer's ``x_q``."""
    if case.next_layer is None:
        raise ValueError(f"layer {case.layer!r} has no next quantized layer")
    outs = run_graph(graph, x, return_all=True, batch_size=len(x))
    node = graph.node(case.layer)
    tile_out = case.expected.astype(np.float64)
    lo, hi = activation_range(graph.node(case.next_layer))
    # Replay the nodes between the layer and the next one on the integer outputs.
    if node.op is Op.CONV2D:
        n = len(x)
        spatial = tile_out.shape[0] // n
        side = int(round(spatial ** 0.5))
        value = tile_out.reshape(n, side, side, -1).transpose(0, 3, 1, 2)
    else:
        value = tile_out
    names = [m.name for m in graph.nodes]
    from chipforge.sim.executor import run_node
    for m in graph.nodes[names.index(case.layer) + 1:names.index(case.next_layer)]:
        value = run_node(m, [value])
    nxt = graph.node(case.next_layer)
    want = np.clip(np.rint(outs[nxt.inputs[0]] / float(nxt.attrs["act_scale"])), lo, hi)
    return int((value != want).sum())


def save_case(case: LayerCase, path: str | Path) -> Path:
    from chipforge.files import atomic_open

    rq = case.requant
    with atomic_open(path, "wb") as f:
        np.savez(f, x=case.x, weights=case.weights, ideal=case.ideal, expected=case.expected,
                 mult=rq.mult, bias=rq.bias, shift=rq.shift, relu=rq.relu, raw=rq.raw,
                 out_bits=rq.out_bits)
    return Path(path)


def load_case(path: str | Path) -> LayerCase:
    d = np.load(path)
    rq = Requant(mult=d["mult"], bias=d["bias"], shift=int(d["shift"]), relu=bool(d["relu"]),
                 raw=bool(d["raw"]), out_bits=int(d["out_bits"]))
    return LayerCase(layer="", x=d["x"], weights=d["weights"], ideal=d["ideal"], requant=rq,
                     expected=d["expected"], next_layer=None)


def column_pass(case: LayerCase, start: int, stop: int) -> LayerCase:
    """The part of ``case`` computed by one column pass of a tile (outputs start..stop-1)."""
    rq = case.requant
    part = Requant(mult=rq.mult[start:stop], bias=rq.bias[start:stop], shift=rq.shift,
                   relu=rq.relu, raw=rq.raw, out_bits=rq.out_bits)
    return LayerCase(layer=case.layer, x=case.x, weights=case.weights[:, start:stop],
                     ideal=case.ideal[:, start:stop], requant=part,
                     expected=case.expected[:, start:stop], next_layer=case.next_layer)
