"""Cycle model of a HeatViT-style FPGA ViT engine: one GEMM engine (a PE array with tiling)
that runs every linear layer, the attention products and the token selectors.

Assumptions (HeatViT does not publish its tile sizes or latency tables; papers.md §5.1):

- A GEMM ``(M x K) @ (K x N)`` is tiled into ``ceil(K / pe_in) * ceil(N / pe_out)`` weight
  tiles; each tile streams its M rows (tokens) through the ``pe_in x pe_out`` MAC array, one
  row per cycle, after ``tile_fill_cycles`` of pipeline fill:
  ``cycles = ceil(K/pe_in) * ceil(N/pe_out) * (M + tile_fill_cycles)``.
- Attention runs head by head on the same engine (``Q K^T``: M = n, K = head_dim, N = n;
  ``A V``: M = n, K = n, N = head_dim).
- LayerNorm runs on the ARM core and GELU / softmax / sigmoid in pipelined units beside the
  engine; both overlap with the GEMMs and add no cycles (HeatViT §5 puts LayerNorm on the
  ARM core; the polynomial units are 1 value per cycle in ``chipforge.hw.heatvit``).
- Token selectors reuse the GEMM engine (HeatViT's point): their linear layers are GEMMs
  over the candidate tokens. Keep decision and packaging stream beside it (the token
  packager takes 1 token per cycle) and overlap.
- DSPs: a 16-bit MAC takes one DSP48; two 8-bit MACs that share an operand pack into one
  DSP48E2 (Xilinx WP486), so ``dsps = pe_in * pe_out / macs_per_dsp``. The ZCU102's
  XCZU9EG has 2520 DSPs, the default budget.

The speedup of the paper (3.46-4.89x over its baseline accelerator, ZCU102, DeiT-T/S/B and
LV-ViT) compares its 8-bit engine with token selectors against a baseline whose precision
and array size are not given here; :func:`deit_speedups` reports both the token-pruning
speedup on one engine and the speedup over a 16-bit baseline engine of the same DSP count.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from chipforge.config import ConfigBase, check_int

__all__ = ["BASELINE_ZCU102_16BIT", "DEIT_B", "DEIT_S", "DEIT_T", "HEATVIT_ZCU102",
           "FpgaEngineConfig", "SelectorShape", "VitShape", "block_cycles", "deit_speedups",
           "gemm_cycles", "model_cycles", "pipelined_unit_cycles", "selector_cycles",
           "token_counts", "token_linear_cycles", "token_packager_cycles"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class FpgaEngineConfig(ConfigBase):
    """The GEMM engine of the FPGA ViT accelerator."""

    pe_in: int = 64
    """Input channels the PE array reduces per cycle (tile height T_i)."""
    pe_out: int = 64
    """Output channels it produces per cycle (tile width T_o)."""
    macs_per_dsp: int = 2
    """MACs one DSP slice does per cycle: 2 for packed 8-bit, 1 for 16-bit."""
    dsp_budget: int = 2520
    """DSP slices of the device (ZCU102's XCZU9EG: 2520)."""
    tile_fill_cycles: int = 8
    """Pipeline fill of each weight tile (assumed)."""
    clock_hz: float = 200e6
    """Engine clock (assumed; only converts cycles to seconds)."""

    def __post_init__(self) -> None:
        check_int("pe_in", self.pe_in, 1, 4096)
        check_int("pe_out", self.pe_out, 1, 4096)
        check_int("macs_per_dsp", self.macs_per_dsp, 1, 4)
        check_int("dsp_budget", self.dsp_budget, 1)
        check_int("tile_fill_cycles", self.tile_fill_cycles, 0, 1024)
        if self.dsps > self.dsp_budget:
            raise ValueError(f"pe_in * pe_out / macs_per_dsp = {self.dsps} DSPs exceeds "
                             f"dsp_budget={self.dsp_budget}")

    @property
    def dsps(self) -> int:
        return -(-self.pe_in * self.pe_out // self.macs_per_dsp)


# The 8-bit engine (HeatViT §5.1: 8-bit fixed point), 64x64 MACs in 2048 of the ZCU102's
# 2520 DSPs; the baseline: the same 2048 DSPs at 16 bits (32x64 MACs). Tile sizes assumed.
HEATVIT_ZCU102 = FpgaEngineConfig()
BASELINE_ZCU102_16BIT = FpgaEngineConfig(pe_in=32, pe_out=64, macs_per_dsp=1)


@dataclass(frozen=True)
class SelectorShape:
    """Linear layers of one token selector, as GEMMs per candidate token."""

    layers: tuple[tuple[int, int, int], ...]
    """(rows per token, K, N) of each layer: e.g. (heads, head_dim, hidden) for a per-head
    layer."""


@dataclass(frozen=True)
class VitShape:
    name: str
    dim: int
    heads: int
    depth: int
    mlp_hidden: int
    patches: int
    patch_dim: int
    num_classes: int
    selector: SelectorShape

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads


def _spvit_selector(dim: int, heads: int) -> SelectorShape:
    """papers.md §5.2: per head d -> d, MLP d -> d/2 -> d/4 -> 2; SE net h -> h/2 -> h."""
    d = dim // heads
    return SelectorShape(((heads, d, d), (heads, d, d // 2), (heads, d // 2, d // 4),
                          (heads, d // 4, 2), (1, heads, max(1, heads // 2)),
                          (1, max(1, heads // 2), heads)))


def _deit(name: str, dim: int, heads: int) -> VitShape:
    return VitShape(name, dim, heads, 12, 4 * dim, 196, 3 * 16 * 16, 1000,
                    _spvit_selector(dim, heads))


DEIT_T = _deit("DeiT-T", 192, 3)
DEIT_S = _deit("DeiT-S", 384, 6)
DEIT_B = _deit("DeiT-B", 768, 12)


def gemm_cycles(m, k: int, n, engine: FpgaEngineConfig):
    """Cycles of ``(m x k) @ (k x n)`` on the engine (m and n may be arrays)."""
    tiles = math.ceil(k / engine.pe_in) * np.ceil(np.asarray(n) / engine.pe_out)
    return tiles * (np.asarray(m) + engine.tile_fill_cycles)


def _attention_cycles(n, shape: VitShape, engine: FpgaEngineConfig):
    n = np.asarray(n, dtype=np.float64)
    hd = shape.head_dim
    qk = np.ceil(hd / engine.pe_in) * np.ceil(n / engine.pe_out) * (n + engine.tile_fill_cycles)
    av = np.ceil(n / engine.pe_in) * math.ceil(hd / engine.pe_out) * (
        n + engine.tile_fill_cycles)
    return shape.heads * (qk + av)


def block_cycles(n, shape: VitShape, engine: FpgaEngineConfig):
    """Cycles of one transformer block on ``n`` tokens."""
    d = shape.dim
    return (gemm_cycles(n, d, 3 * d, engine) + gemm_cycles(n, d, d, engine)
            + gemm_cycles(n, d, shape.mlp_hidden, engine)
            + gemm_cycles(n, shape.mlp_hidden, d, engine) + _attention_cycles(n, shape, engine))


def selector_cycles(n_candidates, shape: VitShape, engine: FpgaEngineConfig):
    """Cycles of one selector on the GEMM engine for ``n_candidates`` tokens."""
    n = np.asarray(n_candidates, dtype=np.float64)
    return sum(gemm_cycles(rows * n, k, out, engine) for rows, k, out in shape.selector.layers)


def model_cycles(shape: VitShape, tokens_per_block, engine: FpgaEngineConfig,
                 selector_candidates=None) -> np.ndarray:
    """Cycles per image: patch embedding, blocks on their live token counts
    (``(..., depth)``), selectors on their candidate counts (``(..., selectors)``), head."""
    t = np.asarray(tokens_per_block, dtype=np.float64)
    if t.shape[-1] != shape.depth:
        raise ValueError(f"tokens_per_block must have {shape.depth} entries per image, "
                         f"not {t.shape[-1]}")
    cycles = block_cycles(t, shape, engine).sum(-1)
    cycles = cycles + gemm_cycles(shape.patches, shape.patch_dim, shape.dim, engine)
    cycles = cycles + gemm_cycles(1, shape.dim, shape.num_classes, engine)
    if selector_candidates is not None:
        cycles = cycles + selector_cycles(np.asarray(selector_candidates, dtype=np.float64),
                                          shape, engine).sum(-1)
    return cycles


def token_counts(shape: VitShape, selector_blocks: tuple[int, ...],
                 keep_ratios: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Live tokens per block and candidates per selector for given per-stage keep ratios
    (each relative to the patch tokens reaching that selector; one package token is added
    per stage, class and package tokens always kept)."""
    if len(selector_blocks) != len(keep_ratios):
        raise ValueError("selector_blocks and keep_ratios must have the same length")
    if any(not 0 < r <= 1 for r in keep_ratios):
        raise ValueError(f"keep_ratios must be in (0, 1], not {keep_ratios}")
    patches, packages = float(shape.patches), 0
    tokens, candidates = [], []
    for b in range(shape.depth):
        if b in selector_blocks:
            candidates.append(patches)
            patches = round(patches * keep_ratios[selector_blocks.index(b)])
            packages += 1
        tokens.append(1 + patches + packages)
    return np.array(tokens), np.array(candidates)


def deit_speedups(keep_ratios=(0.7, 0.7, 0.7), selector_blocks=(3, 6, 9),
                  engine: FpgaEngineConfig = HEATVIT_ZCU102,
                  baseline: FpgaEngineConfig = BASELINE_ZCU102_16BIT) -> list[dict]:
    """Modelled speedups for DeiT-T/S/B: per model, the MAC reduction, the token-pruning
    speedup on ``engine`` (selectors included) and the speedup of ``engine`` with
    selectors over ``baseline`` without them."""
    rows = []
    for shape in (DEIT_T, DEIT_S, DEIT_B):
        full = np.full(shape.depth, shape.patches + 1.0)
        tokens, candidates = token_counts(shape, tuple(selector_blocks), tuple(keep_ratios))
        dense = model_cycles(shape, full, engine)
        pruned = model_cycles(shape, tokens, engine, candidates)
        base = model_cycles(shape, full, baseline)
        macs_full = _macs(shape, full)
        macs_pruned = _macs(shape, tokens, candidates)
        rows.append({
            "model": shape.name, "keep_ratios": tuple(keep_ratios),
            "selector_blocks": tuple(selector_blocks),
            "mac_reduction": float(1 - macs_pruned / macs_full),
            "speedup_same_engine": float(dense / pruned),
            "speedup_vs_16bit_baseline": float(base / pruned),
            "latency_ms": float(pruned / engine.clock_hz * 1e3),
            "baseline_latency_ms": float(base / baseline.clock_hz * 1e3),
        })
    return rows


def _macs(shape: VitShape, tokens, candidates=None) -> float:
    d, t = shape.dim, np.asarray(tokens, dtype=np.float64)
    macs = (t * (4 * d * d + 2 * d * shape.mlp_hidden) + 2 * t * t * d).sum()
    macs += shape.patches * shape.patch_dim * d + d * shape.num_classes
    if candidates is not None:
        macs += sum(rows * np.asarray(candidates).sum() * k * n
                    for rows, k, n in shape.selector.layers)
    return float(macs)


# --------------------------------------------------------------------------------------
# Cycle counts of the selector blocks that have RTL (chipforge.hw.heatvit); the tests
# check them against cycles measured in RTL simulation.


def token_linear_cycles(n_tokens: int, cfg) -> int:
    """Cycles from the first token's transfer into ``TokenLinear`` to its last output's
    transfer, with tokens offered back to back and no back-pressure: one output per cycle
    (``out_features`` per token) after a 2-cycle latency."""
    return n_tokens * cfg.out_features + 1


def pipelined_unit_cycles(n_values: int, latency: int) -> int:
    """Same for the one-value-per-cycle polynomial units (GELU and exp: latency 3,
    PLAN sigmoid: 1)."""
    return n_values - 1 + latency


def token_packager_cycles(kept_last_with_package: list[bool], tokens: list[int]) -> int:
    """Cycles from the first token's transfer to the last token's transfer through the
    packager for back-to-back images: one token per cycle, plus one cycle for each image
    but the last whose last token is kept and followed by a package beat."""
    return sum(tokens) - 1 + sum(kept_last_with_package[:-1])
