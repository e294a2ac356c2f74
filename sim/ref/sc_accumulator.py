"""Bit-exact reference of the digital stochastic-computing (SC) accumulator.

``chipforge.hw.sc_accumulator.ScAccumulator`` implements exactly this; its Amaranth and
cocotb tests compare against :func:`sc_accumulate` bit for bit.

Per accumulated vector (``streams`` probability codes ``p_k`` of ``code_bits`` bits):

1. **SNGs.** Stream ``k`` has a Galois LFSR of ``code_bits`` bits with the toggle mask
   ``LFSR_TAPS[code_bits]`` (``state' = (state >> 1) ^ (mask if state & 1 else 0)``),
   starting at ``cfg.lfsr_seeds[k]`` after reset. In bitstream cycle ``t`` the bit is
   ``b_k[t] = (p_k >= r_k[t])`` with ``r_k[t]`` the LFSR state, then every LFSR steps once.
   The LFSRs run free across vectors: vector ``v`` uses steps ``v*L .. v*L + L - 1``
   (they step only on bitstream cycles, never on idle cycles, so results do not depend on
   stream timing).
2. **Accumulation.** COUNT: ``count = sum_t sum_k b_k[t]``; MAJORITY:
   ``count = sum_t [2 * sum_k b_k[t] >= streams]`` (a tie votes 1).
3. **Threshold.** ``sign = +1`` when ``2 * count >= cfg.votes_per_vector``, else ``-1``.

Over a full LFSR period, code ``p`` yields ``p`` ones out of ``2**code_bits - 1``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from chipforge.sc_config import LFSR_TAPS, ScAccumulation, ScAccumulatorConfig

__all__ = ["ScResult", "lfsr_states", "lfsr_table", "sc_accumulate", "sng_bits"]


@lru_cache(maxsize=16)
def lfsr_table(width: int) -> tuple[np.ndarray, np.ndarray]:
    """One full period of the ``width``-bit LFSR from state 1: (states, index_of_state).

    ``states[n]`` is the state after ``n`` steps from 1; ``index_of_state[s]`` inverts it
    (index 0 is unused: 0 is not a state). Computed once per width (a loop over at most
    65535 steps, cached) so that every later lookup is a vectorized gather.
    """
    if width not in LFSR_TAPS:
        raise ValueError(f"LFSR width must be one of {sorted(LFSR_TAPS)}, not {width!r}")
    mask, period = LFSR_TAPS[width], (1 << width) - 1
    states = np.empty(period, dtype=np.int64)
    s = 1
    for n in range(period):
        states[n] = s
        s = (s >> 1) ^ (mask if s & 1 else 0)
    if s != 1 or len(np.unique(states)) != period:
        raise AssertionError(f"LFSR mask {mask:#x} is not maximal-length for width {width}")
    index = np.zeros(period + 1, dtype=np.int64)
    index[states] = np.arange(period)
    states.setflags(write=False)
    index.setflags(write=False)
    return states, index


def lfsr_states(width: int, seeds: np.ndarray | tuple[int, ...], steps: np.ndarray) -> np.ndarray:
    """States of LFSRs started at ``seeds`` (K,) after ``steps`` (any shape) steps:
    result shape ``steps.shape + (K,)``."""
    states, index = lfsr_table(width)
    seeds = np.asarray(seeds, dtype=np.int64)
    if seeds.size and (seeds.min() < 1 or seeds.max() > len(states)):
        raise ValueError(f"LFSR seeds must be in 1..{len(states)}, not {seeds.tolist()}")
    offsets = index[seeds]
    steps = np.asarray(steps, dtype=np.int64)
    return states[(steps[..., None] + offsets) % len(states)]


def sng_bits(codes: np.ndarray, cfg: ScAccumulatorConfig, first_vector: int = 0) -> np.ndarray:
    """Bitstreams (V, L, K) of uint8 for probability codes (V, K), vectors numbered from
    ``first_vector`` since reset."""
    codes = _check_codes(codes, cfg)
    n_vectors = codes.shape[0]
    steps = ((np.arange(n_vectors)[:, None] + first_vector) * cfg.length
             + np.arange(cfg.length)[None, :])                          # (V, L)
    r = lfsr_states(cfg.code_bits, cfg.lfsr_seeds, steps)              # (V, L, K)
    return (codes[:, None, :] >= r).astype(np.uint8)


@dataclass(frozen=True)
class ScResult:
    count: np.ndarray
    """(V,) int64 accumulated count, ``0 .. cfg.votes_per_vector``."""
    sign: np.ndarray
    """(V,) int64 in {-1, +1}."""


def sc_accumulate(codes: np.ndarray, cfg: ScAccumulatorConfig,
                  first_vector: int = 0) -> ScResult:
    """Accumulate vectors of probability codes (V, streams) in order, as the RTL does."""
    bits = sng_bits(codes, cfg, first_vector)
    per_cycle = bits.sum(axis=2, dtype=np.int64)                      # (V, L)
    if cfg.accumulation is ScAccumulation.COUNT:
        count = per_cycle.sum(axis=1)
    else:
        count = (2 * per_cycle >= cfg.streams).sum(axis=1, dtype=np.int64)
    sign = np.where(2 * count >= cfg.votes_per_vector, 1, -1).astype(np.int64)
    return ScResult(count=count, sign=sign)


def _check_codes(codes: np.ndarray, cfg: ScAccumulatorConfig) -> np.ndarray:
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[1] != cfg.streams:
        raise ValueError(f"codes must have shape (vectors, streams={cfg.streams}), "
                         f"not {codes.shape}")
    if not np.issubdtype(codes.dtype, np.integer):
        raise ValueError(f"codes must be integers, not {codes.dtype}")
    if codes.size and (codes.min() < 0 or codes.max() > cfg.code_max):
        raise ValueError(f"codes must be in 0..{cfg.code_max} ({cfg.code_bits} bits), "
                         f"not {int(codes.min())}..{int(codes.max())}")
    return codes.astype(np.int64)
