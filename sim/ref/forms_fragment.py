"""Bit-exact reference of FORMS' fragment datapath (what ``chipforge.hw.forms_fragment`` does).

A *fragment job* is one fragment's ``fragment_size`` unsigned inputs, the cell levels of
its weight magnitudes for ``columns`` weight columns, one sign bit per column (the sign
indicator) and a ``last`` flag that closes a dot product. Per job:

1. **Zero-skip.** The inputs sit in shift registers and leave LSB first, one bit per cycle;
   shifting stops as soon as every bit still to shift is zero. The cycles fed are the
   fragment's effective input cycles ``EIC = max_i effective_bits(x_i)``
   (:func:`effective_bits`: width minus leading zeros).
2. **ADC.** Each fed cycle, each cell column's sum ``sum_i bit_i * level_i`` is digitized
   by an ideal ADC clipping at ``2**adc_bits - 1`` (as in ``crossbar.adc_codes``).
3. **Shift-and-add** over slices and cycles: ``value = sum_t sum_s code * 2**(t + cell_bits*s)``.
4. **Sign-indicator accumulator.** ``acc += value`` for a positive fragment, ``acc -= value``
   for a negative one; ``last`` emits ``acc`` and clears it.

Timing (the RTL's, and the cycle model's ``group_overhead_cycles = 1``): a job occupies the
datapath ``EIC + 1`` cycles (:func:`fragment_cycles`): EIC shift cycles plus the cycle that
loads it (the trigger of the previous job, merged).

:func:`forms_dot` maps a polarized weight matrix onto fragments and equals ``x @ W``
exactly while no ADC code clips.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from chipforge.config import CrossbarConfig, FormsFragmentConfig, WeightEncoding
from chipforge.sim.ref.crossbar import input_slices

__all__ = [
    "FragmentJobs",
    "accumulate_signed",
    "effective_bits",
    "forms_dot",
    "fragment_codes",
    "fragment_cycles",
    "fragment_eic",
    "fragment_jobs",
    "fragment_values",
    "run_fragments",
    "slice_magnitudes",
]


def effective_bits(x: np.ndarray, bits: int) -> np.ndarray:
    """Bits an input needs when fed LSB first: ``bits`` minus leading zeros (0 for 0).

    Negative (two's-complement) inputs have no leading zeros: they take all ``bits``.
    """
    x = np.asarray(x, dtype=np.int64)
    mag = np.where(x < 0, (1 << bits) - 1, x)
    if mag.size and mag.max(initial=0) >= (1 << bits):
        raise ValueError(f"inputs must fit {bits} bits, the largest is {int(mag.max())}")
    _, exponent = np.frexp(mag.astype(np.float64))  # floor(log2 v) + 1, exact below 2**53
    return np.where(mag > 0, exponent, 0).astype(np.int64)


def fragment_eic(inputs: np.ndarray, cfg: FormsFragmentConfig) -> np.ndarray:
    """Effective input cycles of each job: (F, fragment_size) inputs -> (F,)."""
    return effective_bits(inputs, cfg.input_bits).max(axis=-1, initial=0)


def fragment_cycles(inputs: np.ndarray, cfg: FormsFragmentConfig) -> np.ndarray:
    """Cycles each job occupies the datapath: EIC shift cycles + 1 load/trigger cycle."""
    return fragment_eic(inputs, cfg) + 1


def slice_magnitudes(magnitudes: np.ndarray, cfg: FormsFragmentConfig) -> np.ndarray:
    """Weight magnitudes (..., ) -> cell levels (..., slices), least significant first."""
    mag = np.asarray(magnitudes, dtype=np.int64)
    if mag.size and (mag.min() < 0 or mag.max() >= (1 << cfg.magnitude_bits)):
        raise ValueError(f"magnitudes must lie in 0..{(1 << cfg.magnitude_bits) - 1}, "
                         f"not {int(mag.min())}..{int(mag.max())}")
    shifts = cfg.cell_bits * np.arange(cfg.slices)
    return (mag[..., None] >> shifts) & ((1 << cfg.cell_bits) - 1)


def _crossbar_view(cfg: FormsFragmentConfig) -> CrossbarConfig:
    """The fragment as a crossbar of unsigned 1-bit-DAC inputs (for input_slices)."""
    return CrossbarConfig(rows=cfg.fragment_size, cols=cfg.columns, cell_bits=cfg.cell_bits,
                          weight_bits=2 * cfg.slices * cfg.cell_bits,
                          input_bits=cfg.input_bits, dac_bits=1, adc_bits=cfg.adc_bits,
                          weight_encoding=WeightEncoding.TWO_COLUMN, signed_inputs=False)


def fragment_codes(inputs: np.ndarray, levels: np.ndarray, cfg: FormsFragmentConfig
                   ) -> np.ndarray:
    """ADC codes (F, input_bits, columns, slices), cycle 0 = LSB, for jobs' inputs
    (F, fragment_size) and levels (F, fragment_size, columns, slices).

    The bit planes come from :func:`chipforge.sim.ref.crossbar.input_slices` (1-bit DAC,
    unsigned); each cell column's sum clips at the ADC's full scale like
    :func:`chipforge.sim.ref.crossbar.adc_codes`. Cycles at or past a job's EIC feed only
    zero bits, so their codes are 0: skipping them changes nothing but time.
    """
    inputs = np.asarray(inputs, dtype=np.int64)
    levels = np.asarray(levels, dtype=np.int64)
    f, m, cols, slices = levels.shape
    if inputs.shape != (f, m):
        raise ValueError(f"inputs have shape {inputs.shape}, the levels need {(f, m)}")
    bits = input_slices(inputs, _crossbar_view(cfg))[::-1]          # (cycles LSB first, F, m)
    sums = np.einsum("tfm,fmcs->ftcs", bits, levels)
    return np.minimum(sums, cfg.adc_max_code)


def fragment_values(codes: np.ndarray, cfg: FormsFragmentConfig) -> np.ndarray:
    """Shift-and-add of each job's codes: (F, input_bits, columns, slices) -> (F, columns)."""
    t = np.arange(cfg.input_bits)[:, None]
    s = np.arange(cfg.slices)[None, :]
    weights = (1 << (t + cfg.cell_bits * s)).astype(object)
    total = np.einsum("ftcs,ts->fc", np.asarray(codes).astype(object), weights)
    return total.astype(np.int64)


def accumulate_signed(values: np.ndarray, negative: np.ndarray, last: np.ndarray
                      ) -> np.ndarray:
    """The sign-indicator accumulator: (F, columns) values, (F, columns) sign bits, (F,)
    last flags -> (D, columns) results, one per job with ``last`` set."""
    values = np.asarray(values, dtype=np.int64)
    signed = np.where(np.asarray(negative, dtype=bool), -values, values)
    last = np.asarray(last, dtype=bool)
    if not last.any():
        return np.zeros((0, values.shape[1]), dtype=np.int64)
    ends = np.flatnonzero(last)
    starts = np.concatenate([[0], ends[:-1] + 1])
    return np.add.reduceat(signed, starts, axis=0)[: len(ends)] if len(ends) else signed[:0]


@dataclass(frozen=True)
class FragmentJobs:
    """A stream of fragment jobs (what the RTL's input stream carries)."""

    inputs: np.ndarray
    """(F, fragment_size) unsigned inputs."""
    levels: np.ndarray
    """(F, fragment_size, columns, slices) cell levels of the magnitudes."""
    negative: np.ndarray
    """(F, columns) sign-indicator bits (1 = subtract)."""
    last: np.ndarray
    """(F,) closes a dot product."""


def run_fragments(jobs: FragmentJobs, cfg: FormsFragmentConfig) -> np.ndarray:
    """Results (D, columns) of a job stream, exactly as the RTL computes them."""
    codes = fragment_codes(jobs.inputs, jobs.levels, cfg)
    return accumulate_signed(fragment_values(codes, cfg), jobs.negative, jobs.last)


def fragment_jobs(x: np.ndarray, weights: np.ndarray, cfg: FormsFragmentConfig
                  ) -> FragmentJobs:
    """Map ``x @ weights`` onto fragment jobs: x (B, K) unsigned, weights (K, columns)
    polarized per fragment of ``fragment_size`` rows (one sign per fragment and column;
    zeros allowed). Jobs are ordered by vector, then fragment; ``last`` ends each vector.
    """
    x = np.asarray(x, dtype=np.int64)
    w = np.asarray(weights, dtype=np.int64)
    batch, k = x.shape
    if w.shape != (k, cfg.columns):
        raise ValueError(f"weights must have shape ({k}, {cfg.columns}), not {w.shape}")
    m = cfg.fragment_size
    frags = -(-k // m)
    if frags > cfg.max_fragments:
        raise ValueError(f"{k} rows make {frags} fragments, more than max_fragments "
                         f"{cfg.max_fragments}")
    pad = frags * m - k
    wp = np.pad(w, ((0, pad), (0, 0))).reshape(frags, m, cfg.columns)
    xp = np.pad(x, ((0, 0), (0, pad))).reshape(batch, frags, m)
    if x.size and (x.min() < 0 or x.max() >= (1 << cfg.input_bits)):
        raise ValueError(f"inputs must be unsigned {cfg.input_bits}-bit, "
                         f"not {int(x.min())}..{int(x.max())}")
    negative = wp.sum(axis=1) < 0          # FORMS Eq. 2: + when the fragment sum is >= 0
    wrong = np.where(negative[:, None, :], wp > 0, wp < 0)
    if wrong.any():
        f, r, c = np.argwhere(wrong)[0]
        raise ValueError(f"weights are not polarized: fragment {f} column {c} holds "
                         f"{int(wp[f, r, c])} against the fragment's sign")
    levels = slice_magnitudes(np.abs(wp), cfg)                       # (frags, m, cols, S)
    last = np.zeros((batch, frags), dtype=bool)
    last[:, -1] = True
    return FragmentJobs(
        inputs=xp.reshape(batch * frags, m),
        levels=np.broadcast_to(levels, (batch, *levels.shape)).reshape(batch * frags, m,
                                                                      cfg.columns, cfg.slices),
        negative=np.broadcast_to(negative, (batch, frags, cfg.columns)).reshape(-1, cfg.columns),
        last=last.reshape(-1),
    )


def forms_dot(x: np.ndarray, weights: np.ndarray, cfg: FormsFragmentConfig) -> np.ndarray:
    """``x @ weights`` through the fragment datapath (exact while no code clips)."""
    return run_fragments(fragment_jobs(x, weights, cfg), cfg)
