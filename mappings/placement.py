"""Placement passes: a quantized graph's weighted layers onto ReRAM crossbars.

``place(graph, accelerator)`` returns a :class:`chipforge.sim.reram.MappedModel`: for each
quantized ``CONV2D`` / ``LINEAR`` node, its integer weight matrix (K, N) (the executor's
``W2 = weight.reshape(out, -1).T``) is

1. optionally reordered row-wise (FORMS fragment order from the node's attrs, with the
   models' contract :func:`chipforge.sim.fragments.row_order`),
2. cut into *analog row groups* of R rows: whole crossbars (R = ``rows``) or FORMS
   fragments (R = ``fragment_size``), partial sums added digitally,
3. encoded into cell levels by the reference slicing rule
   (:func:`chipforge.sim.ref.crossbar.weight_levels`): offset + unit column, two columns,
   ISQED's differential pair, or FORMS' magnitude with one sign per fragment,
4. flipped column by column where the accelerator uses ISAAC's flip encoding,
5. tiled onto ``rows x cols`` crossbars (an output's cells stay in one crossbar), which
   only decides the statistics: crossbars, cells, utilization, ADC reads.

The result runs on :class:`chipforge.sim.reram.CrossbarMatmul`; with ideal devices it
reproduces the quantized model exactly (tested for every scheme).
"""

from __future__ import annotations

import numpy as np

from chipforge.accelerators import (
    AdcRange,
    PlacementScheme,
    ReramAcceleratorConfig,
    get_accelerator,
)
from chipforge.sim.executor import integer_weights, weight_matrix
from chipforge.sim.fragments import row_order
from chipforge.sim.graph import Graph, Node
from chipforge.sim.ref.crossbar import weight_levels
from chipforge.sim.reram import LayerStats, MappedLayer, MappedModel

__all__ = ["fragment_signs", "place", "place_layer"]

def fragment_signs(w2: np.ndarray, size: int, node: str = "?") -> np.ndarray:
    """Signs (G, N) of the fragments of a row-ordered (G*size, N) matrix; checks polarization.

    A fragment is negative when it holds a negative weight, else positive (all-zero
    fragments are positive). Raises ``ValueError`` when a fragment mixes signs.
    """
    groups = w2.reshape(-1, size, w2.shape[1])
    has_neg, has_pos = (groups < 0).any(axis=1), (groups > 0).any(axis=1)
    mixed = int((has_neg & has_pos).sum())
    if mixed:
        raise ValueError(f"node {node!r} is not polarized for fragment size {size}: {mixed} "
                         f"of {has_neg.size} fragments mix positive and negative weights "
                         "(use a polarized model, e.g. the zoo's lenet-digits-forms8, or "
                         "chipforge.mappings.passes.polarize)")
    return np.where(has_neg, -1, 1).astype(np.int64)


def place_layer(node: Node, accel: ReramAcceleratorConfig,
                input_bits: int | None = None) -> MappedLayer:
    """Place one quantized weighted node (see the module doc)."""
    if not node.weighted:
        raise ValueError(f"node {node.name!r} ({node.op.value}) has no weights to place")
    if not node.quantized:
        raise ValueError(f"node {node.name!r} is not quantized (needs weight_bits, "
                         "weight_scale, act_bits, act_scale, act_signed): crossbars store "
                         "integer weights; quantize the model first")
    if int(node.attrs.get("groups", 1)) != 1:
        raise ValueError(f"node {node.name!r}: grouped convolutions (groups="
                         f"{node.attrs['groups']}) are not placed on crossbars yet")
    bits = int(node.attrs["weight_bits"])
    if bits > accel.weight_bits:
        raise ValueError(f"node {node.name!r} has {bits}-bit weights but accelerator "
                         f"{accel.name!r} stores at most weight_bits={accel.weight_bits}")
    # The weight encoding follows the model: an 8-bit model on a 16-bit preset (ISAAC) is
    # sliced as 8-bit weights (4 cells, offset 2**7), not padded to 16 bits whose high cells
    # would hold only offset (and add their read noise to every column sum).
    accel = accel.replace(weight_bits=max(bits, 2))
    w_q = integer_weights(node)
    w2 = weight_matrix(node, w_q)                                            # (K, N)
    k, n = w2.shape
    scheme = accel.scheme
    r = accel.group_rows
    if scheme is PlacementScheme.POLARIZED:
        size = node.attrs.get("fragment_size")
        if size is not None and int(size) != accel.fragment_size:
            raise ValueError(f"node {node.name!r} was polarized with fragment_size {size}, "
                             f"accelerator {accel.name!r} reads fragments of "
                             f"{accel.fragment_size}")
        order = str(node.attrs.get("fragment_order", "w-major"))
        perm = row_order(node.params["weight"].shape, order)
    else:
        perm = np.arange(k)
    groups = -(-k // r)
    row_index = np.full(groups * r, -1, dtype=np.int64)
    row_index[:k] = perm
    wp = np.zeros((groups * r, n), dtype=np.int64)
    wp[:k] = w2[perm]
    xcfg = accel.crossbar_config()
    levels = weight_levels(wp, xcfg)                                         # (G*R, N, P)
    per = levels.shape[-1]
    valid = (row_index >= 0)[:, None, None]
    levels = np.where(valid, levels, 0).reshape(groups, r, n * per)
    slice_w = 1 << (accel.cell_bits * np.arange(accel.slices, dtype=np.int64))
    if scheme in (PlacementScheme.TWO_COLUMN, PlacementScheme.DIFFERENTIAL):
        col_w = np.concatenate([slice_w, -slice_w])
    else:
        col_w = slice_w
    coef = np.broadcast_to(np.tile(col_w, n), (groups, n * per)).copy()
    if scheme is PlacementScheme.POLARIZED:
        signs = fragment_signs(wp, r, node.name)                            # (G, N)
        stored = node.params.get("fragment_signs")
        if stored is not None:
            stored = np.asarray(stored).astype(np.int64).T                  # (G, N)
            if stored.shape != signs.shape:
                raise ValueError(f"node {node.name!r}: fragment_signs of shape "
                                 f"{stored.T.shape} do not match {n} outputs x {groups} "
                                 "fragments")
            nonzero = (wp.reshape(groups, r, n) != 0).any(axis=1)
            if (nonzero & (stored != signs)).any():
                raise ValueError(f"node {node.name!r}: weights disagree with the stored "
                                 "fragment_signs")
            signs = np.where(nonzero, signs, stored)
        coef *= np.repeat(signs, per, axis=1)
    if accel.adc_range is AdcRange.FLIP:
        # The reference's flip rule (flip_columns), per row group over its used rows.
        rows_used = np.minimum(r, k - r * np.arange(groups))[:, None]       # (G, 1)
        flipped = 2 * levels.sum(axis=1) > rows_used * ((1 << accel.cell_bits) - 1)
        levels = np.where(flipped[:, None, :] & valid.reshape(groups, r, 1),
                          ((1 << accel.cell_bits) - 1) - levels, levels)
    else:
        flipped = np.zeros((groups, n * per), dtype=bool)
    offset = (1 << (accel.weight_bits - 1)) if scheme is PlacementScheme.OFFSET else 0

    # Tiling onto crossbars (statistics only: the arithmetic does not depend on it).
    row_tiles = -(-groups * r // accel.rows)
    outputs_per_xbar = accel.cols // per
    col_tiles = -(-n // outputs_per_xbar)
    crossbars = row_tiles * col_tiles
    cycles = len(accel.crossbar_config(input_bits=input_bits or accel.input_bits)
                 .input_slice_widths)
    units = col_tiles if accel.unit_column else 0
    stats = LayerStats(
        node=node.name, scheme=scheme.value, weight_shape=tuple(node.params["weight"].shape),
        crossbars=crossbars, row_tiles=row_tiles, col_tiles=col_tiles, cells=k * n * per,
        capacity=crossbars * accel.rows * accel.cols,
        adc_reads_per_vector=cycles * groups * (n * per + units),
        nonzero_weights=int(np.count_nonzero(w2)), weights=int(w2.size))
    return MappedLayer(
        node=node.name, scheme=scheme.value, levels=levels.astype(np.uint8),
        row_index=row_index.reshape(groups, r), coef=coef, flipped=flipped, outputs=n,
        per_output=per, offset=offset, unit_column=accel.unit_column,
        cell_bits=accel.cell_bits, dac_bits=accel.dac_bits, adc_bits=accel.adc_bits,
        stats=stats)


def place(graph: Graph, accelerator: ReramAcceleratorConfig | str) -> MappedModel:
    """Place every weighted node of a quantized graph on the accelerator's crossbars."""
    accel = get_accelerator(accelerator)
    layers = {}
    for node in graph.nodes:
        if node.weighted:
            bits = int(node.attrs.get("act_bits", 0) or 0)
            if bits > accel.input_bits:
                raise ValueError(f"node {node.name!r} has {bits}-bit activations but "
                                 f"accelerator {accel.name!r} feeds at most "
                                 f"input_bits={accel.input_bits}")
            layers[node.name] = place_layer(node, accel, input_bits=bits or None)
    if not layers:
        raise ValueError(f"graph {graph.name!r} has no weighted layers to place")
    return MappedModel(accel.name, layers, {"graph": graph.name})
