"""Reference and cycle model of the ReRAM tile (``chipforge.hw.reram_tile.ReramTile``).

:class:`TileProgram` is one layer (or one column group of it) programmed on a tile: the
integer weights (K, N) cut into row groups of ``crossbar.rows`` rows, each encoded with
:func:`chipforge.sim.ref.crossbar.encode_weights` (ISAAC flip flags, FORMS sign
indicators), and the requantization registers. :meth:`TileProgram.dots` is the tile's
digital result, :func:`chipforge.sim.ref.crossbar.shift_add` over the ADC codes of every
row group summed over the groups; :meth:`TileProgram.plane_codes` is what the analog array
answers to one input bit plane (the cocotb crossbar model calls it); :func:`requantize` is
the integer requantization and ReLU; :func:`tile_timeline` is the cycle model.

The tile is config-agnostic here: ``cfg`` is a :class:`chipforge.hw.reram_tile.TileConfig`
(only its fields are read, so ``sim`` does not import ``hw``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from chipforge.config import CrossbarConfig, WeightEncoding
from chipforge.sim.ref.crossbar import adc_codes, adc_convert, encode_weights, shift_add

__all__ = ["REQUANT_STAGES", "Requant", "TileProgram", "TileTimeline", "effective_input_cycles",
           "requant_for", "requantize", "settle_cycles", "tile_timeline"]


@dataclass(frozen=True)
class Requant:
    """The requantization registers: ``clip((acc * mult + bias + 2**(shift-1)) >> shift)``."""

    mult: np.ndarray
    """(N,) int64 multipliers."""
    bias: np.ndarray
    """(N,) int64 biases, in units of ``2**-shift``."""
    shift: int
    relu: bool = True
    """Clip to ``0 .. 2**out_bits - 1`` (else the signed ``out_bits`` range)."""
    raw: bool = False
    """Emit the raw dot products (no requantization)."""
    out_bits: int = 8


def requantize(dots: np.ndarray, rq: Requant) -> np.ndarray:
    """Integer requantization and ReLU of dot products (V, N), as the tile computes them."""
    dots = np.asarray(dots, dtype=object)
    if rq.raw:
        return np.asarray(dots, dtype=np.int64)
    y = dots * np.asarray(rq.mult, dtype=object)[None, :] + np.asarray(rq.bias, dtype=object)
    if rq.shift:
        y = (y + (1 << (rq.shift - 1))) >> rq.shift
    lo, hi = ((0, (1 << rq.out_bits) - 1) if rq.relu
              else (-(1 << (rq.out_bits - 1)), (1 << (rq.out_bits - 1)) - 1))
    return np.clip(y, lo, hi).astype(np.int64)


def requant_for(scale: np.ndarray, bias: np.ndarray, next_scale: float, *, mult_bits: int = 32,
                relu: bool = True, out_bits: int = 8) -> Requant:
    """Registers approximating ``clip(rint((acc * scale + bias) / next_scale))`` (the
    executor's next quantizer after ``y = acc * act_scale * weight_scale + bias``), with the
    largest shift that keeps every multiplier inside ``mult_bits`` signed bits."""
    ratio = np.asarray(scale, dtype=np.float64) / float(next_scale)
    top = float(np.abs(ratio).max(initial=0.0)) or 1.0
    shift = max(0, min(62, mult_bits - 2 - math.frexp(top)[1]))
    mult = np.rint(ratio * 2.0**shift).astype(np.int64)
    offset = np.rint(np.asarray(bias, dtype=np.float64) / float(next_scale) * 2.0**shift)
    return Requant(mult=mult, bias=offset.astype(np.int64), shift=shift, relu=relu,
                   out_bits=out_bits)


def effective_input_cycles(x: np.ndarray) -> np.ndarray:
    """FORMS' EIC of each vector (V, K) of unsigned inputs: its widest input's bit length."""
    x = np.asarray(x, dtype=np.int64)
    top = x.max(axis=1) if x.size else np.zeros(len(x), dtype=np.int64)
    return np.array([int(v).bit_length() for v in top], dtype=np.int64)


@dataclass
class TileProgram:
    """Integer weights (K, N) programmed on a tile; K <= rows_total, N <= cols."""

    cfg: object
    """A ``TileConfig`` (``crossbar``, ``row_groups``, ``cols``, ``forms``)."""
    weights: np.ndarray
    cells: list = field(init=False)
    signs: np.ndarray = field(init=False)
    """(groups, cols) +1/-1 FORMS sign indicators (all +1 for ISAAC)."""

    def __post_init__(self) -> None:
        cfg, xb = self.cfg, self.cfg.crossbar
        w = np.asarray(self.weights, dtype=np.int64)
        k, n = w.shape
        if k > cfg.rows_total or n > cfg.cols:
            raise ValueError(f"weights of shape {w.shape} do not fit a tile of "
                             f"{cfg.rows_total} rows x {cfg.cols} columns")
        padded = np.zeros((cfg.rows_total, cfg.cols), dtype=np.int64)
        padded[:k, :n] = w
        self.k, self.n = k, n
        self.padded = padded
        self.cells, signs = [], []
        for g in range(cfg.row_groups):
            wg = padded[g * xb.rows:(g + 1) * xb.rows]
            if cfg.forms:
                if ((wg > 0).any(axis=0) & (wg < 0).any(axis=0)).any():
                    raise ValueError(f"row group {g}: a FORMS fragment column mixes signs; "
                                     "polarize the weights first")
                signs.append(np.where((wg < 0).any(axis=0), -1, 1))
            else:
                signs.append(np.ones(cfg.cols, dtype=np.int64))
            self.cells.append(encode_weights(wg, xb))
        self.signs = np.array(signs, dtype=np.int64)

    @property
    def crossbar(self) -> CrossbarConfig:
        return self.cfg.crossbar

    def meta(self) -> np.ndarray:
        """(groups, cols) META register values: flip flags, then the sign bit."""
        xb = self.crossbar
        phys = xb.physical_cols_per_weight
        out = np.zeros((self.cfg.row_groups, self.cfg.cols), dtype=np.int64)
        for g, cells in enumerate(self.cells):
            flips = (cells.flipped.astype(np.int64) << np.arange(phys)).sum(axis=1)
            out[g] = flips | ((self.signs[g] < 0).astype(np.int64) << phys)
        return out

    def _padded_inputs(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.int64)
        if x.ndim != 2 or x.shape[1] != self.k:
            raise ValueError(f"inputs must have shape (V, {self.k}), not {x.shape}")
        out = np.zeros((len(x), self.cfg.rows_total), dtype=np.int64)
        out[:, :self.k] = x
        return out

    def dots(self, x: np.ndarray) -> np.ndarray:
        """(V, N) dot products the tile computes for inputs (V, K), ideal analog array."""
        xb, rows = self.crossbar, self.crossbar.rows
        xp = self._padded_inputs(x)
        total = np.zeros((len(xp), self.cfg.cols), dtype=np.int64)
        for g, cells in enumerate(self.cells):
            readout = adc_codes(xp[:, g * rows:(g + 1) * rows], cells, xb)
            signs = self.signs[g] if xb.weight_encoding is WeightEncoding.MAGNITUDE else None
            total += shift_add(readout.codes, readout.unit, readout.flipped, xb, signs)
        return total[:, :self.n]

    def planes(self, x_vector: np.ndarray) -> list[int]:
        """The DAC bit planes (as integers, bit r = row r) the tile drives for one vector, in
        order: MSB first over ``input_bits`` (ISAAC), LSB first up to the EIC (FORMS)."""
        xp = self._padded_inputs(np.asarray(x_vector)[None])[0]
        bits = self.crossbar.input_bits
        pattern = xp & ((1 << bits) - 1)
        if self.cfg.forms:
            order = range(int(pattern.max(initial=0)).bit_length())
        else:
            order = range(bits - 1, -1, -1)
        weights = [1 << r for r in range(len(xp))]
        return [sum(w for w, v in zip(weights, pattern, strict=True) if (v >> b) & 1)
                for b in order]

    def plane_codes(self, plane: int, active: int = -1) -> tuple[np.ndarray, np.ndarray]:
        """The ideal ADC codes (groups, cols, P) and unit codes (groups,) for one bit plane
        (an integer, bit r = row r). Groups whose bit in ``active`` is 0 answer zeros."""
        xb, rows = self.crossbar, self.crossbar.rows
        codes = np.zeros((self.cfg.row_groups, self.cfg.cols, xb.physical_cols_per_weight),
                         dtype=np.int64)
        unit = np.zeros(self.cfg.row_groups, dtype=np.int64)
        for g, cells in enumerate(self.cells):
            if not (active >> g) & 1:
                continue
            bits = np.array([(plane >> (g * rows + r)) & 1 for r in range(rows)], np.int64)
            codes[g] = adc_convert(np.einsum("r,rcp->cp", bits, cells.levels), xb.adc_bits)
            if xb.has_unit_column:
                unit[g] = adc_convert(np.array(bits.sum()), xb.adc_bits)
        return codes, unit


@dataclass
class TileTimeline:
    """Cycle of every event the cycle model predicts (cycle 0: the first after reset)."""

    accepted: list[int]
    """Cycle of each accepted input beat."""
    requests: list[list[int]]
    """Per vector, the cycles in which ``xbar_dac_valid`` is high."""
    outputs: list[list[int]]
    """Per vector, the cycle in which each output beat is accepted."""
    output_start: list[int]
    """Per vector, the first cycle in which ``m_axis_tvalid`` is high."""
    busy: list[tuple[int, int]]
    """Per vector, the inclusive cycle range in which ``busy`` is high."""
    full: list[tuple[int, int]]
    """Per vector, the inclusive range in which ``s_axis_tready`` is low."""

    @property
    def cycles(self) -> int:
        """Cycles through the last accepted output beat (inclusive)."""
        return self.outputs[-1][-1] + 1 if self.outputs else 0


REQUANT_STAGES = 3
"""Pipeline stages of the tile's requantization: a vector's N results take N - 1 +
``REQUANT_STAGES`` cycles into the output buffer."""


def settle_cycles(forms: bool) -> int:
    """Cycles between a vector's last ADC answer (or, FORMS, the check after it) and its
    requantization: ISAAC 2 (the shift-and-add units' second stage, then the adder tree
    across row groups); FORMS 1 (the zero-skip check, in which the last registered plane
    sum is accumulated)."""
    return 1 if forms else 2


def tile_timeline(k: int, n: int, planes: Sequence[int], *, forms: bool, adc_latency: int = 1,
                  valid: Callable[[int], bool] = lambda c: True,
                  ready: Callable[[int], bool] = lambda c: True,
                  horizon: int = 10**8) -> TileTimeline:
    """The tile's cycle model: every handshake of a run of ``len(planes)`` vectors.

    ``planes[v]``: bit planes of vector v (``input_bits`` for ISAAC, its EIC for FORMS);
    ``valid(c)``/``ready(c)``: whether the producer offers a beat / the consumer takes one
    in cycle c; ``adc_latency``: cycles from a plane request to the crossbar's answer.
    Per vector (see ``ReramTile``'s docstring): the buffer fills while not full; the cycle
    after it is full and the tile is idle, 1 start + K load cycles (the buffer is free
    after them); per plane 1 + adc_latency cycles; :func:`settle_cycles` (ISAAC 2: the
    shift-and-add pipeline and the adder tree; FORMS 1: the zero-skip check); N - 1 +
    :data:`REQUANT_STAGES` requantization cycles; then the N output beats as the consumer
    takes them. ``forms`` selects the variant (FORMS: ``planes[v]`` is the vector's EIC).
    """
    def first(start: int, ok: Callable[[int], bool]) -> int:
        c = start
        while not ok(c):
            c += 1
            if c > horizon:
                raise TimeoutError(f"no handshake within {horizon} cycles")
        return c

    tl = TileTimeline([], [], [], [], [], [])
    fill_start, last_out = 0, -1
    for p in planes:
        c = fill_start - 1
        for _ in range(k):
            c = first(c + 1, valid)
            tl.accepted.append(c)
        start = max(c + 1, last_out + 1)         # the IDLE cycle that sees the full buffer
        tl.full.append((c + 1, start + k))
        fill_start = start + k + 1
        request = start + k + 1
        reqs = [request + j * (1 + adc_latency) for j in range(p)]
        tl.requests.append(reqs)
        out = request + p * (1 + adc_latency) + settle_cycles(forms) + (n - 1 + REQUANT_STAGES)
        tl.output_start.append(out)
        beats, c = [], out - 1
        for _ in range(n):
            c = first(c + 1, ready)
            beats.append(c)
        tl.outputs.append(beats)
        tl.busy.append((start + 1, beats[-1]))
        last_out = beats[-1]
    return tl
