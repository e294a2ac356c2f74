"""Load a model from what a user names on the command line, and describe it.

``load_model(spec)``: ``spec`` is an ``.onnx`` file, an ``.npz`` of the IR (written by
:func:`chipforge.sim.graph.save_graph`, read without pickle) or the name of a zoo model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from chipforge.sim.graph import Graph, load_graph

__all__ = ["digits_train_inputs", "input_rows", "layer_table", "load_data", "load_model",
           "output_classes"]

_INPUT_KEYS = ("x", "inputs", "images")
MAX_INPUT_MAGNITUDE = 1e9
"""Largest input value :func:`load_data` takes (pixels, normalized or raw 16-bit, are far
below; 1e300 overflows the first layer's sums)."""
_LABEL_KEYS = ("y", "labels", "targets")


def _zoo_names() -> list[str]:
    from chipforge import zoo

    names = list(zoo.names()) if hasattr(zoo, "names") else []
    return names + list(getattr(zoo, "GRAPH_ONLY_NAMES", ()))     # the HeatViT ViTs


def load_model(spec: str | Path | Graph) -> Graph:
    """A :class:`Graph` from an ``.onnx`` file, an IR ``.npz`` or a zoo model name."""
    if isinstance(spec, Graph):
        return spec
    path = Path(spec)
    suffix = path.suffix.lower()
    if suffix in (".onnx", ".npz") and path.is_dir():
        raise ValueError(f"model {path} is a folder, not a {suffix} file")
    return _check_input_size(_load_model(spec, path, suffix), spec)


def _check_input_size(graph: Graph, spec: object) -> Graph:
    """Refuse a model whose one input sample alone (float64, as the simulation holds it)
    exceeds the file budget: it would fail only after gigabytes were allocated."""
    from chipforge.guard import InputError, npz_budget

    values = int(np.prod(graph.input_shape, dtype=object))
    budget = npz_budget()
    if values * 8 > budget:
        raise InputError(f"model {spec}: input shape {graph.input_shape} is "
                         f"{values * 8 / 2**30:.2f} GiB per sample (float64), more than the "
                         f"{budget / 2**30:.2f} GiB allowed (a quarter of the available "
                         "memory; set CHIPFORGE_MAX_FILE_MEMORY to change)")
    return graph


def _load_model(spec: str | Path, path: Path, suffix: str) -> Graph:
    if suffix == ".onnx":
        from chipforge.guard import npz_budget
        from chipforge.importers.onnx import load_onnx

        budget = npz_budget()
        if path.is_file() and path.stat().st_size > budget:
            raise ValueError(f"model file {path} has {path.stat().st_size / 2**30:.2f} GiB, "
                             f"more than the {budget / 2**30:.2f} GiB allowed for a file (a "
                             "quarter of the available memory; set CHIPFORGE_MAX_FILE_MEMORY)")

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


def _digits_for(graph: Graph):
    from chipforge.zoo.data import digits

    shape = graph.input_shape
    side = shape[-1] if len(shape) == 3 and shape[-1] == shape[-2] else 8
    if side % 8 or int(np.prod(shape)) != side * side:
        raise ValueError(f"--data digits: graph {graph.name!r} takes {shape}; digits come "
                         "as 8x8 images (or 16, 24, 32 upsampled), one channel")
    return digits(side)


def digits_train_inputs(graph: Graph) -> np.ndarray:
    """The digits training images, shaped for ``graph`` (calibration data)."""
    x = _digits_for(graph).x_train
    return x.astype(np.float64).reshape((len(x), *graph.input_shape))


def load_data(spec: str | Path, graph: Graph, *, samples: int | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """Test inputs and labels for ``graph``: ``"digits"`` (the shared test split, upsampled to
    the graph's image size) or an ``.npz`` with inputs under ``x``/``inputs``/``images`` and
    integer labels under ``y``/``labels``/``targets`` (read without pickle).

    Inputs are reshaped to ``(N, *graph.input_shape)`` when the per-sample size matches;
    anything else is a ``ValueError`` naming the file and the rule. With ``samples``, only
    the first ``samples`` inputs and labels are returned, and from an ``.npz`` only they are
    inflated (the archive's declared sizes are checked first,
    :func:`chipforge.guard.inspect_npz`); the whole file must fit the memory budget
    otherwise.
    """
    from chipforge.guard import (
        InputError,
        check_inflation,
        inspect_npz,
        npz_budget,
        read_npz_rows,
    )

    per_sample = int(np.prod(graph.input_shape))
    if str(spec) == "digits":
        data = _digits_for(graph)
        x, y, label = data.x_test, data.y_test, "digits"
    else:
        path = Path(spec)
        label = str(path)
        if path.suffix.lower() != ".npz":
            raise ValueError(f"data {label!r} must be 'digits' or an .npz file")
        members = inspect_npz(path, what="data file")
        keys = set(members)
        xk = [k for k in _INPUT_KEYS if k in keys]
        yk = [k for k in _LABEL_KEYS if k in keys]
        if len(xk) != 1 or len(yk) != 1:
            raise ValueError(f"data file {label} must hold one input array (one of "
                             f"{', '.join(_INPUT_KEYS)}) and one label array (one of "
                             f"{', '.join(_LABEL_KEYS)}); it holds "
                             f"{', '.join(sorted(keys)) or 'nothing'}")
        xm, ym = members[xk[0]], members[yk[0]]
        for m in (xm, ym):
            if not m.shape:
                raise ValueError(f"data file {label}: array {m.key!r} is a scalar; it must "
                                 "hold one entry per sample")
        # From the headers, before anything is inflated: shapes, counts and types.
        if int(np.prod(xm.shape[1:], dtype=object)) != per_sample:
            raise ValueError(f"data {label}: each input has shape {xm.shape[1:]} "
                             f"({int(np.prod(xm.shape[1:], dtype=object))} values); graph "
                             f"{graph.name!r} takes {graph.input_shape} (read from the "
                             "file's header; nothing was loaded)")
        if xm.shape[0] != ym.shape[0]:
            raise ValueError(f"data {label}: {xm.shape[0]} inputs and {ym.shape[0]} labels; "
                             "need as many labels as inputs, at least one")
        if xm.dtype.kind not in "biuf" or ym.dtype.kind not in "biuf":
            raise ValueError(f"data {label}: inputs and labels must be real numbers, not "
                             f"{xm.dtype} and {ym.dtype}")
        rows = min(samples, xm.shape[0]) if samples is not None else xm.shape[0]
        for m in (xm, ym):
            check_inflation(m, m.bytes_for(rows), f"data file {label}")
        # the arrays as read, plus the float64 copy of the inputs the simulation takes
        need = xm.bytes_for(rows) + ym.bytes_for(rows) + (
            rows * per_sample * 8 if xm.dtype != np.float64 else 0)
        budget = npz_budget()
        if need > budget:
            raise InputError(
                f"data file {label}: {rows} samples of {xm.key!r} {xm.shape[1:]} {xm.dtype} "
                f"inflate to {need / 2**30:.2f} GiB, more than the {budget / 2**30:.2f} GiB "
                "allowed for a file (a quarter of the available memory); use --samples, or "
                "set CHIPFORGE_MAX_FILE_MEMORY")
        x = read_npz_rows(path, xm, rows, what="data file")
        y = read_npz_rows(path, ym, rows, what="data file")
        if xm.shape[0] != ym.shape[0]:
            raise ValueError(f"data {label}: {xm.shape[0]} inputs and {ym.shape[0]} labels; "
                             "need as many labels as inputs, at least one")
    if samples is not None:
        x, y = x[:samples], y[:samples]
    if not np.issubdtype(x.dtype, np.number) or x.dtype.kind == "c":
        raise ValueError(f"data {label}: inputs must be real numbers, not {x.dtype}")
    if y.ndim != 1 or not (np.issubdtype(y.dtype, np.integer)
                           or np.issubdtype(y.dtype, np.floating)
                           and np.all(np.mod(y, 1) == 0)):
        raise ValueError(f"data {label}: labels must be a 1-D array of class indices, not "
                         f"{y.dtype} of shape {y.shape}")
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"data {label}: {len(x)} inputs and {len(y)} labels; need as many "
                         "labels as inputs, at least one")
    if x[0].size != per_sample:
        raise ValueError(f"data {label}: each input has shape {x.shape[1:]} ({x[0].size} "
                         f"values); graph {graph.name!r} takes {graph.input_shape}")
    # a file's arrays are ours (no second float64 copy); the shared digits split is copied
    x = x.astype(np.float64, copy=str(spec) == "digits").reshape((len(x), *graph.input_shape))
    if not np.all(np.isfinite(x)):
        raise ValueError(f"data {label}: inputs contain NaN or infinity")
    largest = max(abs(float(x.max())), abs(float(x.min())))   # no copy of x
    if largest > MAX_INPUT_MAGNITUDE:
        raise ValueError(f"data {label}: inputs must be at most {MAX_INPUT_MAGNITUDE:.0e} in "
                         f"magnitude, found {largest:.3g} (the layers' sums would overflow "
                         "or the quantizer would round every other input to 0); give the "
                         "inputs scaled as the model was trained")
    if y.min() < 0:
        raise ValueError(f"data {label}: labels must be >= 0, found {int(y.min())}")
    classes = output_classes(graph)
    if classes is not None and y.max() >= classes:
        raise ValueError(f"data {label}: labels must be class indices below the model's "
                         f"{classes} outputs, found {int(y.max())}")
    return x, y.astype(np.int64)


def input_rows(members: dict, path: str | Path) -> int:
    """Inputs a data ``.npz`` holds (from its headers; ``members`` from
    :func:`chipforge.guard.inspect_npz`)."""
    keys = [k for k in _INPUT_KEYS if k in members]
    if len(keys) != 1 or not members[keys[0]].shape:
        raise ValueError(f"data file {path} must hold one input array (one of "
                         f"{', '.join(_INPUT_KEYS)}) with one entry per sample")
    return members[keys[0]].shape[0]


def output_classes(graph: Graph) -> int | None:
    """Number of classes of a (batch, classes) output, from a one-sample float run; None
    when the output has another shape."""
    from chipforge.sim.executor import run_graph

    with np.errstate(all="ignore"):
        out = run_graph(graph, np.zeros((1, *graph.input_shape)), quantized=False)
    return int(out.shape[1]) if out.ndim == 2 else None
