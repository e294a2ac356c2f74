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

Before step 2, :func:`kept_rows_and_outputs` drops what holds no weight: all-zero rows of
the weight matrix (for FORMS, all-zero *fragments*, so fragment boundaries and their sign
bits stay as trained) and all-zero output columns (an output of only zero weights is a
constant 0; the offset mapping keeps them, since it stores a zero as the mid level). This is
what makes structured pruning (whole filters and filter shapes, FORMS' crossbar-aware
pruning) free crossbars: every crossbar count is counted from this placement, never from a
pruning ratio. Dropped rows are not in the arrays (``row_index`` lists the kept ones);
dropped outputs keep zero levels with digital weight ``coef = 0``, so they cannot affect
the result even under faults, and are not counted in crossbars, cells or ADC reads.

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
from chipforge.sim.executor import block_diagonal_weights, integer_weights
from chipforge.sim.fragments import row_order
from chipforge.sim.graph import Graph, Node
from chipforge.sim.ref.crossbar import weight_levels
from chipforge.sim.reram import LayerStats, MappedLayer, MappedModel

__all__ = ["fragment_signs", "kept_rows_and_outputs", "place", "place_layer"]

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


def kept_rows_and_outputs(wp: np.ndarray, group_rows: int, scheme: PlacementScheme
                          ) -> tuple[np.ndarray, np.ndarray]:
    """Which rows of a row-ordered, zero-padded (G*R, N) weight matrix and which of its N
    outputs a placement stores (boolean masks).

    Rows: those with a non-zero weight; for the polarized scheme whole fragments (groups of
    R rows) with a non-zero weight, so that the fragments stay as they were polarized.
    Outputs: those with a non-zero weight, except for the offset mapping (a zero weight is
    a mid-level cell there), which keeps every output. At least one row and one output is
    kept, so that an all-zero layer still maps (onto one row group).
    """
    groups = wp.shape[0] // group_rows
    nonzero = wp != 0
    if scheme is PlacementScheme.POLARIZED:
        per_group = nonzero.reshape(groups, group_rows, -1).any(axis=(1, 2))
        rows = np.repeat(per_group, group_rows)
    else:
        rows = nonzero.any(axis=1)
    if scheme is PlacementScheme.OFFSET:
        outputs = np.ones(wp.shape[1], dtype=bool)
    else:
        outputs = nonzero.any(axis=0)
    if not rows.any():
        rows[:group_rows if scheme is PlacementScheme.POLARIZED else 1] = True
    if not outputs.any():
        outputs[0] = True
    return rows, outputs


def place_layer(node: Node, accel: ReramAcceleratorConfig,
                input_bits: int | None = None) -> MappedLayer:
    """Place one quantized weighted node (see the module doc)."""
    if not node.weighted:
        raise ValueError(f"node {node.name!r} ({node.op.value}) has no weights to place")
    if not node.quantized:
        raise ValueError(f"node {node.name!r} is not quantized (needs weight_bits, "
                         "weight_scale, act_bits, act_scale, act_signed): crossbars store "
                         "integer weights; quantize the model first")
    bits = int(node.attrs["weight_bits"])
    if bits > accel.weight_bits:
        raise ValueError(f"node {node.name!r} has {bits}-bit weights but accelerator "
                         f"{accel.name!r} stores at most weight_bits={accel.weight_bits}")
    # The weight encoding follows the model: an 8-bit model on a 16-bit preset (ISAAC) is
    # sliced as 8-bit weights (4 cells, offset 2**7), not padded to 16 bits whose high cells
    # would hold only offset (and add their read noise to every column sum).
    accel = accel.replace(weight_bits=max(bits, 2))
    w_q = integer_weights(node)
    # grouped/depthwise convolutions: one block-diagonal matrix, each group's weights in
    # rows and columns of their own (see block_diagonal_weights)
    w2 = block_diagonal_weights(node, w_q)                                   # (K, N)
    grouped = int(node.attrs.get("groups", 1)) > 1
    k, n = w2.shape
    scheme = accel.scheme
    r = accel.group_rows
    if scheme is PlacementScheme.POLARIZED:
        size = node.attrs.get("fragment_size")
        # A fragment of F rows with one sign splits into F / f fragments of f rows with
        # that sign: a model polarized at F runs wherever the fragment f divides F.
        if size is not None and int(size) % accel.fragment_size:
            raise ValueError(f"node {node.name!r} was polarized with fragment_size {size}; "
                             f"accelerator {accel.name!r} reads fragments of "
                             f"{accel.fragment_size} rows, which must divide {size} (use a "
                             f"preset whose fragment divides {size}, or polarize again)")
        order = str(node.attrs.get("fragment_order", "w-major"))
        perm = row_order(node.params["weight"].shape, order) if not grouped else np.arange(k)
    else:
        perm = np.arange(k)
    groups = -(-k // r)
    row_index = np.full(groups * r, -1, dtype=np.int64)
    row_index[:k] = perm
    wp = np.zeros((groups * r, n), dtype=np.int64)
    wp[:k] = w2[perm]
    # Drop all-zero rows (fragments) and outputs: they hold no weight (see the module doc).
    keep_rows, keep_out = kept_rows_and_outputs(wp, r, scheme)
    stored_signs = None
    if scheme is PlacementScheme.POLARIZED and node.params.get("fragment_signs") is not None:
        stored_signs = np.asarray(node.params["fragment_signs"]).astype(np.int64).T  # (G, N)
        split = int(size) // r if size is not None else 1
        if split > 1:            # each stored fragment's sign holds for its split parts
            stored_signs = np.repeat(stored_signs, split, axis=0)[:groups]
        if stored_signs.shape != (groups, n):
            raise ValueError(f"node {node.name!r}: fragment_signs of shape "
                             f"{stored_signs.T.shape} do not match {n} outputs x {groups} "
                             "fragments")
        stored_signs = stored_signs[keep_rows.reshape(groups, r)[:, 0]]
    kept = row_index[keep_rows]
    kept = kept[kept >= 0] if scheme is not PlacementScheme.POLARIZED else kept
    k_kept = int((kept >= 0).sum())
    groups = -(-kept.size // r)
    row_index = np.full(groups * r, -1, dtype=np.int64)
    row_index[:kept.size] = kept
    wp = np.zeros((groups * r, n), dtype=np.int64)
    wp[row_index >= 0] = w2[row_index[row_index >= 0]]
    wp[:, ~keep_out] = 0
    n_kept = int(keep_out.sum())
    xcfg = accel.crossbar_config()
    levels = weight_levels(wp, xcfg)                                         # (G*R, N, P)
    per = levels.shape[-1]
    valid = (row_index >= 0)[:, None, None]
    levels = np.where(valid, levels, 0).reshape(groups, r, n * per)
    levels[:, :, np.repeat(~keep_out, per)] = 0     # dropped outputs hold no cells
    slice_w = 1 << (accel.cell_bits * np.arange(accel.slices, dtype=np.int64))
    if scheme in (PlacementScheme.TWO_COLUMN, PlacementScheme.DIFFERENTIAL):
        col_w = np.concatenate([slice_w, -slice_w])
    else:
        col_w = slice_w
    coef = np.broadcast_to(np.tile(col_w, n), (groups, n * per)).copy()
    if scheme is PlacementScheme.POLARIZED:
        signs = fragment_signs(wp, r, node.name)                            # (G, N)
        stored = stored_signs
        if stored is not None:
            nonzero = (wp.reshape(groups, r, n) != 0).any(axis=1)
            if (nonzero & (stored != signs)).any():
                raise ValueError(f"node {node.name!r}: weights disagree with the stored "
                                 "fragment_signs")
            signs = np.where(nonzero, signs, stored)
        coef *= np.repeat(signs, per, axis=1)
    coef[:, np.repeat(~keep_out, per)] = 0          # dropped outputs: never read
    if accel.adc_range is AdcRange.FLIP:
        # The reference's flip rule (flip_columns), per row group over its used rows.
        rows_used = valid.reshape(groups, r).sum(axis=1)[:, None]           # (G, 1)
        flipped = 2 * levels.sum(axis=1) > rows_used * ((1 << accel.cell_bits) - 1)
        levels = np.where(flipped[:, None, :] & valid.reshape(groups, r, 1),
                          ((1 << accel.cell_bits) - 1) - levels, levels)
        flipped &= np.repeat(keep_out, per)[None, :]
    else:
        flipped = np.zeros((groups, n * per), dtype=bool)
    offset = (1 << (accel.weight_bits - 1)) if scheme is PlacementScheme.OFFSET else 0

    # Tiling onto crossbars (statistics only: the arithmetic does not depend on it).
    row_tiles = -(-groups * r // accel.rows)
    outputs_per_xbar = accel.cols // per
    col_tiles = -(-n_kept // outputs_per_xbar)
    crossbars = row_tiles * col_tiles
    cycles = len(accel.crossbar_config(input_bits=input_bits or accel.input_bits)
                 .input_slice_widths)
    units = col_tiles if accel.unit_column else 0
    adc_reads = cycles * groups * (n_kept * per + units)
    cells = k_kept * n_kept * per
    if grouped:
        crossbars, cells, adc_reads = _grouped_tiles(node, accel, r, per, cycles)
    stats = LayerStats(
        node=node.name, scheme=scheme.value, weight_shape=tuple(node.params["weight"].shape),
        crossbars=crossbars, row_tiles=row_tiles, col_tiles=col_tiles, cells=cells,
        capacity=crossbars * accel.rows * accel.cols,
        adc_reads_per_vector=adc_reads,
        nonzero_weights=int(np.count_nonzero(w2)), weights=int(w2.size))
    return MappedLayer(
        node=node.name, scheme=scheme.value, levels=levels.astype(np.uint8),
        row_index=row_index.reshape(groups, r), coef=coef, flipped=flipped, outputs=n,
        per_output=per, offset=offset, unit_column=accel.unit_column,
        cell_bits=accel.cell_bits, dac_bits=accel.dac_bits, adc_bits=accel.adc_bits,
        stats=stats)


def _grouped_tiles(node: Node, accel: ReramAcceleratorConfig, r: int, per: int,
                   cycles: int) -> tuple[int, int, int]:
    """Crossbars, programmed cells and ADC reads per vector of a grouped convolution placed
    block-diagonally: only the crossbars, analog row groups and columns that some group's
    block touches are counted (the zero blocks between groups are never programmed or read).
    Groups are packed in order, so several small depthwise groups share one crossbar."""
    w = node.params["weight"]
    g_count = int(node.attrs["groups"])
    n_g, k_g = w.shape[0] // g_count, int(np.prod(w.shape[1:]))
    outputs_per_xbar = accel.cols // per
    tiles, row_group_cols, row_group_tiles = set(), set(), set()
    for g in range(g_count):
        rows = range(g * k_g, (g + 1) * k_g)
        outs = range(g * n_g, (g + 1) * n_g)
        row_tiles = {i // accel.rows for i in (rows[0], rows[-1])}
        row_tiles = range(min(row_tiles), max(row_tiles) + 1)
        col_tiles = range(outs[0] // outputs_per_xbar, outs[-1] // outputs_per_xbar + 1)
        tiles.update((a, b) for a in row_tiles for b in col_tiles)
        row_groups = range(rows[0] // r, rows[-1] // r + 1)
        row_group_cols.update((a, j) for a in row_groups for j in outs)
        row_group_tiles.update((a, b) for a in row_groups for b in col_tiles)
    units = len(row_group_tiles) if accel.unit_column else 0
    return (len(tiles), g_count * k_g * n_g * per,
            cycles * (len(row_group_cols) * per + units))


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
