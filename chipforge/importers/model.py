"""Load a model from what a user names on the command line, and describe it.

``load_model(spec)``: ``spec`` is an ``.onnx`` file, an ``.npz`` of the IR (written by
:func:`chipforge.sim.graph.save_graph`, read without pickle) or the name of a zoo model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from chipforge.sim.graph import Graph, load_graph

__all__ = ["layer_table", "load_model"]


def _zoo_names() -> list[str]:
    try:
        from chipforge import zoo
    except ImportError:  # pragma: no cover
        return []
    names = getattr(zoo, "MODELS", None) or getattr(zoo, "NAMES", None) or []
    return sorted(names)


def load_model(spec: str | Path | Graph) -> Graph:
    """A :class:`Graph` from an ``.onnx`` file, an IR ``.npz`` or a zoo model name."""
    if isinstance(spec, Graph):
        return spec
    path = Path(spec)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        from chipforge.importers.onnx import load_onnx

        return load_onnx(path)
    if suffix == ".npz":
        return load_graph(path)
    names = _zoo_names()
    if str(spec) in names:
        from chipforge import zoo

        return zoo.load(str(spec))
    raise ValueError(f"model {str(spec)!r} is not an .onnx file, an .npz graph or a zoo model"
                     f" (zoo: {', '.join(names) or 'none installed'})")


def layer_table(graph: Graph) -> str:
    """One line per node: op, output of the weights, quantization, density."""
    rows = [("node", "op", "weight", "bits w/a", "density")]
    for n in graph.nodes:
        weight, bits, density = "", "", ""
        if n.weighted:
            w = n.params["weight"]
            weight = "x".join(map(str, w.shape))
            if "weight_bits" in n.attrs:
                bits = f"{n.attrs['weight_bits']}/{n.attrs.get('act_bits', '-')}"
            density = f"{np.count_nonzero(w) / w.size:.3f}"
        elif n.op.value == "quantize":
            bits = f"-/{n.attrs['bits']}"
        rows.append((n.name, n.op.value, weight, bits, density))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
