"""One layer of a model computed by the generated RTL, inside the numpy simulation.

The rest of the network runs in :func:`chipforge.sim.executor.run_graph`; the chosen layer's
integer product goes through the executor's ``matmul`` hook into the ISAAC datapath:

1. the layer's integer operands ``x_q`` (rows, K) and ``w_q`` (K, N) are tiled onto
   crossbars of ``cfg.rows x cfg.cols`` (the config is the one the RTL was generated from,
   read from its manifest);
2. per tile, :func:`chipforge.sim.ref.crossbar.encode_weights` and
   :func:`~chipforge.sim.ref.crossbar.adc_codes` give the ADC codes the crossbar hands to
   its digital side;
3. every (input row, weight column) dot product of every tile is streamed through **one**
   Verilated ``ShiftAdd`` (``rtl/shift-add``): the whole data set's input vectors are
   stacked into one tall batch, packed into payload words with numpy and sent as one
   back-to-back stream, so Python does a fixed handful of C calls per clock cycle and
   nothing per element;
4. the RTL's dot products, summed over the row tiles (the digital reduction across
   crossbars, done in numpy), become the layer's result.

Each RTL dot product is compared with the reference ``shift_add`` on the same codes; the
first difference is reported with its image, input row, output, expected and got. The
measured cycles are compared with :func:`chipforge.sim.cycle.shift_add.shift_add_stream_cycles`.

``sim`` does not import ``hw``: everything about the block comes from ``rtl/shift-add``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from chipforge.config import CrossbarConfig
from chipforge.sim.cycle.shift_add import shift_add_stream_cycles
from chipforge.sim.executor import exact_int_matmul, run_graph
from chipforge.sim.graph import Graph, Node, Op
from chipforge.sim.ref.crossbar import AdcReadout, adc_codes, encode_weights, shift_add
from chipforge.sim.rtl_backend import StreamRun, VerilatedBlock

__all__ = ["DEFAULT_SHIFT_ADD_DIR", "Mismatch", "RtlLayerRun", "ShiftAddRtl", "run_layer_rtl"]

DEFAULT_SHIFT_ADD_DIR = Path(__file__).resolve().parents[1] / "rtl" / "shift-add"
"""The committed ``rtl/shift-add`` of a source checkout (``chipforge rtl shift-add --out DIR``
writes it anywhere else)."""


class ShiftAddRtl:
    """The generated shift-and-add unit, run through Verilator, in the reference's form.

    :meth:`shift_add` takes and returns what :func:`chipforge.sim.ref.crossbar.shift_add`
    does: ADC codes (batch, cycles, cols, P), unit codes (batch, cycles) and flip flags
    (cols, P) -> dot products (batch, cols).
    """

    def __init__(self, block_dir: str | Path = DEFAULT_SHIFT_ADD_DIR, *,
                 cache_dir: str | Path | None = None):
        self.block = VerilatedBlock(block_dir, cache_dir=cache_dir)
        manifest = self.block.manifest
        if manifest.data.get("config_type") != "CrossbarConfig":
            raise ValueError(f"{manifest.path} holds a {manifest.data.get('config_type')}, "
                             "not a shift-and-add unit's CrossbarConfig")
        self.cfg = CrossbarConfig.from_dict(manifest.config)
        self.codec = manifest.codec(f"{self.block.in_port}__payload")

    def beats(self, codes: np.ndarray, unit: np.ndarray, flipped: np.ndarray) -> np.ndarray:
        """Payload words of every dot product, row-major over (batch, cols), each dot product
        ``cfg.input_cycles`` beats in the order the block consumes them."""
        cfg = self.cfg
        codes = np.asarray(codes, dtype=np.int64)
        batch, cycles, cols, phys = codes.shape
        if (cycles, phys) != (cfg.input_cycles, cfg.physical_cols_per_weight):
            raise ValueError(f"codes must have shape (batch, {cfg.input_cycles}, cols, "
                             f"{cfg.physical_cols_per_weight}) for this block, not {codes.shape}")
        shape = (batch, cols, cycles)
        fields: dict[str, np.ndarray] = {
            f"codes[{p}]": codes[..., p].transpose(0, 2, 1).reshape(-1) for p in range(phys)}
        if cfg.has_unit_column:
            fields["unit"] = np.broadcast_to(np.asarray(unit)[:, None, :], shape).reshape(-1)
        if cfg.flip_encoding:
            flip = (np.asarray(flipped, dtype=np.int64) << np.arange(phys)).sum(axis=1)
            fields["flip"] = np.broadcast_to(flip[None, :, None], shape).reshape(-1)
        return self.codec.pack_array(fields)

    def run(self, readouts: list[tuple[np.ndarray, np.ndarray, np.ndarray]], *,
            idle_prob: float = 0.0, ready_prob: float = 1.0,
            seed: int = 0) -> tuple[list[np.ndarray], StreamRun]:
        """Stream several (codes, unit, flipped) readouts back to back through the block in one
        run; return each one's (batch, cols) dot products and the run."""
        beats = [self.beats(*r) for r in readouts]
        sizes = [r[0].shape[0] * r[0].shape[2] for r in readouts]
        stream = self.block.run_stream(np.concatenate(beats) if beats else
                                       np.zeros((0, self.codec.words), np.uint32), sum(sizes),
                                       idle_prob=idle_prob, ready_prob=ready_prob, seed=seed)
        parts = np.split(stream.results, np.cumsum(sizes)[:-1])
        return [p.reshape(r[0].shape[0], r[0].shape[2]) for p, r in
                zip(parts, readouts, strict=True)], stream

    def shift_add(self, codes: np.ndarray, unit: np.ndarray, flipped: np.ndarray,
                  **stream_options) -> tuple[np.ndarray, StreamRun]:
        """Dot products (batch, cols) of one readout, and the stream run (cycles, ...)."""
        (result,), stream = self.run([(codes, unit, flipped)], **stream_options)
        return result, stream


@dataclass(frozen=True)
class Mismatch:
    """The first RTL dot product that differs from the reference model's."""

    layer: str
    image: int
    """Index of the input image (sample) in the data set."""
    row: int
    """Row of the layer's input matrix (a patch, for convolutions)."""
    output: int
    """Output feature (weight column)."""
    tile: int
    """Crossbar row tile (0 unless the layer has more inputs than the crossbar has rows)."""
    expected: int
    got: int

    def __str__(self) -> str:
        return (f"layer {self.layer!r}: the RTL differs from the reference at image "
                f"{self.image} (input row {self.row}), output {self.output}, crossbar tile "
                f"{self.tile}: expected {self.expected}, got {self.got}")


@dataclass(frozen=True)
class RtlLayerRun:
    """Outcome of :func:`run_layer_rtl`."""

    layer: str
    outputs: np.ndarray
    """Network outputs with the layer computed by the RTL."""
    reference_outputs: np.ndarray
    """Network outputs of the quantized model (exact integer matmul everywhere)."""
    rtl: np.ndarray
    """(rows, N) the layer's integer product as computed by the RTL (summed over tiles)."""
    reference: np.ndarray
    """(rows, N) the same from the reference ``shift_add`` on the same ADC codes."""
    exact: np.ndarray
    """(rows, N) ``x_q @ w_q``; equals ``reference`` unless an ADC saturated."""
    mismatches: int
    """RTL dot products (per tile) that differ from the reference."""
    first_mismatch: Mismatch | None
    saturated: bool
    dot_products: int
    """Dot products streamed through the RTL (rows x N x row tiles)."""
    tiles: int
    """Crossbars the layer occupies (row tiles x column tiles)."""
    cycles: int
    """Clock cycles the RTL took, measured (summed over streams, one per hook call)."""
    model_cycles: int
    """The same from the cycle model, for back-to-back streaming (no stalls)."""
    rtl_seconds: float
    """Wall time of the RTL cycle loops."""
    from_cache: bool
    """Whether the Verilated model came from the cache (no build)."""
    accuracy: float | None = None
    """Top-1 accuracy with the layer in RTL (when labels were given)."""
    reference_accuracy: float | None = None

    @property
    def bit_exact(self) -> bool:
        return self.mismatches == 0

    def check(self) -> None:
        """Raise ``AssertionError`` naming the first mismatch, if any."""
        if self.first_mismatch is not None:
            raise AssertionError(f"{self.mismatches} mismatching dot products; first: "
                                 f"{self.first_mismatch}")

    def summary(self) -> str:
        lines = [
            f"layer {self.layer!r} through the RTL (rtl/shift-add, Verilator): "
            f"{self.dot_products} dot products on {self.tiles} crossbar(s), "
            f"{self.cycles} cycles in {self.rtl_seconds:.2f} s "
            f"({self.cycles / max(self.rtl_seconds, 1e-9):,.0f} cycles/s); "
            f"model built {'earlier (cache)' if self.from_cache else 'now'}",
            f"  vs reference shift_add: {self.mismatches} mismatches"
            + (f"; first: {self.first_mismatch}" if self.first_mismatch else " (bit-exact)"),
            f"  vs x_q @ w_q: {int((self.rtl != self.exact).sum())} differences "
            f"(ADC saturated: {'yes' if self.saturated else 'no'})",
            f"  cycles: RTL {self.cycles}, cycle model {self.model_cycles}",
        ]
        if self.accuracy is not None:
            lines.append(f"  accuracy: {self.accuracy:.4f} with the layer in RTL, "
                         f"{self.reference_accuracy:.4f} quantized reference")
        return "\n".join(lines)


def _tiles(size: int, step: int) -> list[slice]:
    return [slice(start, min(start + step, size)) for start in range(0, size, step)]


def _check_operands(node: Node, x_q: np.ndarray, w_q: np.ndarray, cfg: CrossbarConfig) -> None:
    for name, values, (lo, hi), bits in (("activations", x_q, cfg.input_range, "input_bits"),
                                         ("weights", w_q, cfg.weight_range, "weight_bits")):
        if values.size and (values.min() < lo or values.max() > hi):
            raise ValueError(
                f"layer {node.name!r}: integer {name} span {int(values.min())}.."
                f"{int(values.max())}, outside the RTL's range {lo}..{hi} ({bits}="
                f"{getattr(cfg, bits)}, signed_inputs={cfg.signed_inputs})")


def _weighted_nodes(graph: Graph) -> list[str]:
    return [n.name for n in graph.nodes if n.op in (Op.LINEAR, Op.CONV2D) and n.quantized]


def run_layer_rtl(graph: Graph, x: np.ndarray, layer: str, *, labels: np.ndarray | None = None,
                  block: ShiftAddRtl | None = None, block_dir: str | Path | None = None,
                  cache_dir: str | Path | None = None, idle_prob: float = 0.0,
                  ready_prob: float = 1.0, seed: int = 0,
                  batch_size: int = 512) -> RtlLayerRun:
    """Run ``graph`` on ``x`` with quantized layer ``layer``'s integer product computed by
    the generated shift-and-add RTL (see the module doc); everything else in numpy.

    ``labels`` adds top-1 accuracies. ``idle_prob``/``ready_prob`` stall the stream at
    random (the result must not change; the cycles grow). Mismatches are reported, not
    raised: call :meth:`RtlLayerRun.check`.
    """
    names = _weighted_nodes(graph)
    if layer not in names:
        raise ValueError(f"layer must be a quantized linear or conv2d node of {graph.name!r} "
                         f"({', '.join(names) or 'none'}), not {layer!r}")
    x = np.asarray(x)
    if labels is not None and len(labels) != len(x):
        raise ValueError(f"labels has {len(labels)} entries for {len(x)} inputs")
    if block is None:
        block = ShiftAddRtl(block_dir or DEFAULT_SHIFT_ADD_DIR, cache_dir=cache_dir)
    cfg = block.cfg

    rtl_parts, ref_parts, exact_parts = [], [], []
    first: list[Mismatch] = []
    counts = {"mismatches": 0, "dot_products": 0, "cycles": 0, "model_cycles": 0,
              "saturated": False, "seconds": 0.0, "tiles": 0, "calls": 0, "rows": 0}
    chunk = {"start": 0, "images": 0}

    def hook(node: Node, x_q: np.ndarray, w_q: np.ndarray) -> np.ndarray:
        exact = exact_int_matmul(node, x_q, w_q)
        if node.name != layer:
            return exact
        _check_operands(node, x_q, w_q, cfg)
        rows, n_out = exact.shape
        row_tiles, col_tiles = _tiles(x_q.shape[1], cfg.rows), _tiles(n_out, cfg.cols)
        readouts: list[AdcReadout] = []
        places = []
        for r, rt in enumerate(row_tiles):
            for ct in col_tiles:
                readouts.append(adc_codes(x_q[:, rt], encode_weights(w_q[rt, ct], cfg), cfg))
                places.append((r, ct))
        results, stream = block.run([(o.codes, o.unit, o.flipped) for o in readouts],
                                    idle_prob=idle_prob, ready_prob=ready_prob,
                                    seed=seed + counts["calls"])
        rtl = np.zeros_like(exact)
        ref = np.zeros_like(exact)
        for readout, got, (r, ct) in zip(readouts, results, places, strict=True):
            want = shift_add(readout.codes, readout.unit, readout.flipped, cfg)
            rtl[:, ct] += got
            ref[:, ct] += want
            bad = np.argwhere(got != want)
            counts["mismatches"] += len(bad)
            if len(bad) and not first:
                m, n = (int(v) for v in bad[0])
                per_image = rows // max(chunk["images"], 1)
                first.append(Mismatch(layer, chunk["start"] + m // per_image,
                                      counts["rows"] + m, ct.start + n, r,
                                      int(want[m, n]), int(got[m, n])))
            counts["saturated"] |= readout.saturated
        n_dot = sum(o.codes.shape[0] * o.codes.shape[2] for o in readouts)
        counts["dot_products"] += n_dot
        counts["cycles"] += stream.cycles
        counts["model_cycles"] += shift_add_stream_cycles(cfg, n_dot)
        counts["seconds"] += stream.seconds
        counts["tiles"] = len(readouts)
        counts["calls"] += 1
        counts["rows"] += rows
        rtl_parts.append(rtl)
        ref_parts.append(ref)
        exact_parts.append(exact)
        return rtl

    outputs, reference_outputs = [], []
    for start in range(0, len(x), batch_size):
        part = x[start:start + batch_size]
        chunk.update(start=start, images=len(part))
        outputs.append(run_graph(graph, part, matmul=hook, batch_size=len(part)))
        reference_outputs.append(run_graph(graph, part, batch_size=len(part)))
    if not counts["calls"]:
        raise ValueError(f"layer {layer!r} was never executed for these inputs")
    out = np.concatenate(outputs)
    ref_out = np.concatenate(reference_outputs)
    accuracy = reference_accuracy = None
    if labels is not None:
        labels = np.asarray(labels)
        accuracy = float((out.reshape(len(out), -1).argmax(axis=1) == labels).mean())
        reference_accuracy = float((ref_out.reshape(len(out), -1).argmax(axis=1)
                                    == labels).mean())
    return RtlLayerRun(
        layer=layer, outputs=out, reference_outputs=ref_out,
        rtl=np.concatenate(rtl_parts), reference=np.concatenate(ref_parts),
        exact=np.concatenate(exact_parts), mismatches=counts["mismatches"],
        first_mismatch=first[0] if first else None, saturated=counts["saturated"],
        dot_products=counts["dot_products"], tiles=counts["tiles"], cycles=counts["cycles"],
        model_cycles=counts["model_cycles"], rtl_seconds=counts["seconds"],
        from_cache=block.block.from_cache, accuracy=accuracy,
        reference_accuracy=reference_accuracy)
