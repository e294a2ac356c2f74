"""Config of the digital stochastic-computing (SC) accumulator (SupeRBNN-style BNN arrays).

Shared by the bit-exact reference (:mod:`chipforge.sim.ref.sc_accumulator`), the AQFP
simulator (:mod:`chipforge.sim.aqfp`) and the Amaranth block
(:mod:`chipforge.hw.sc_accumulator`), so it lives here, next to :mod:`chipforge.config`,
and imports the standard library only.

The accumulator turns ``streams`` probability codes into Bernoulli bitstreams of
``length`` bits with LFSR stochastic number generators (SNGs), accumulates them by
counting or by a per-cycle majority vote, and thresholds the count to a sign.
"""

from __future__ import annotations

import dataclasses
import enum

from chipforge.config import ConfigBase, check_int

__all__ = ["LFSR_TAPS", "SC_DIGITS", "ScAccumulation", "ScAccumulatorConfig", "lfsr_seed"]

# Galois (right-shift) LFSR toggle masks of maximal-length polynomials, one per width:
# state' = (state >> 1) ^ (mask if state & 1 else 0). The masks are the maximal-length
# feedback polynomials listed in Wikipedia's "Linear-feedback shift register" article
# (e.g. 8 bits: x^8 + x^6 + x^5 + x^4 + 1 -> 0xB8; 16 bits: x^16 + x^14 + x^13 + x^11 + 1
# -> 0xB400). tests/test_sc_accumulator.py checks that each one has period 2**width - 1.
LFSR_TAPS: dict[int, int] = {
    3: 0x6, 4: 0xC, 5: 0x14, 6: 0x30, 7: 0x60, 8: 0xB8, 9: 0x110, 10: 0x240,
    11: 0x500, 12: 0xE08, 13: 0x1C80, 14: 0x3802, 15: 0x6000, 16: 0xB400,
}


class ScAccumulation(enum.Enum):
    """How the bitstreams of several crossbars are combined."""

    COUNT = "count"
    """Count every bit of every stream (a popcount adder per cycle); the sign is
    ``+1`` when ``2 * count >= streams * length``."""

    MAJORITY = "majority"
    """Per cycle, a majority vote over the streams (AQFP MAJ3 chains/trees; a tie counts as
    1); the votes are counted over the bitstream and the sign is ``+1`` when
    ``2 * count >= length``."""


def lfsr_seed(width: int, base_seed: int, index: int) -> int:
    """Initial state of SNG ``index``: a multiplicative hash of (base_seed, index) mapped
    into ``1 .. 2**width - 1`` (an LFSR state must be non-zero)."""
    period = (1 << width) - 1
    mixed = ((base_seed * 0x9E3779B1) ^ ((index + 1) * 0x85EBCA6B)) & 0xFFFFFFFF
    mixed ^= mixed >> 15
    return mixed % period + 1


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScAccumulatorConfig(ConfigBase):
    """A digital SC accumulator: ``streams`` LFSR SNGs, ``length``-bit bitstreams."""

    streams: int = 4
    """Bitstreams accumulated together: the crossbars a layer's fan-in is split over,
    ``ceil(fan_in / N)``."""
    code_bits: int = 8
    """Bits of a probability code and width of each SNG's LFSR. Code ``p`` gives bit 1
    when ``p >= r`` for the LFSR state ``r`` in ``1 .. 2**code_bits - 1``: probability
    ``p / (2**code_bits - 1)`` over a full LFSR period."""
    length: int = 64
    """Bitstream length L: clock cycles (bits per stream) per accumulated vector."""
    accumulation: ScAccumulation = ScAccumulation.COUNT
    """Counting or per-cycle majority."""
    seed: int = 1
    """Base seed of the SNGs; SNG ``k`` starts at ``lfsr_seed(code_bits, seed, k)``."""

    def __post_init__(self) -> None:
        check_int("streams", self.streams, 1, 64)
        check_int("code_bits", self.code_bits, min(LFSR_TAPS), max(LFSR_TAPS))
        check_int("length", self.length, 1, 1 << 16)
        check_int("seed", self.seed, 0, (1 << 32) - 1)
        if not isinstance(self.accumulation, ScAccumulation):
            choices = ", ".join(e.name for e in ScAccumulation)
            raise ValueError(f"accumulation must be a ScAccumulation ({choices}), "
                             f"not {self.accumulation!r}")
        if self.streams > self.code_max:
            raise ValueError(f"streams must be <= 2**code_bits - 1 = {self.code_max} (one "
                             f"distinct LFSR state per SNG), not {self.streams}")

    @property
    def lfsr_mask(self) -> int:
        return LFSR_TAPS[self.code_bits]

    @property
    def lfsr_seeds(self) -> tuple[int, ...]:
        """Initial LFSR state of each SNG: distinct non-zero states from :func:`lfsr_seed`."""
        seeds: list[int] = []
        index = 0
        while len(seeds) < self.streams:
            s = lfsr_seed(self.code_bits, self.seed, index)
            if s not in seeds:
                seeds.append(s)
            index += 1
        return tuple(seeds)

    @property
    def code_max(self) -> int:
        """Largest probability code (probability 1)."""
        return (1 << self.code_bits) - 1

    @property
    def votes_per_vector(self) -> int:
        """Bits the count ranges over: ``streams * length`` (COUNT) or ``length``."""
        if self.accumulation is ScAccumulation.COUNT:
            return self.streams * self.length
        return self.length

    @property
    def count_bits(self) -> int:
        """Width of the count output (holds ``0 .. votes_per_vector``)."""
        return self.votes_per_vector.bit_length()

    @property
    def cycles_per_vector(self) -> int:
        """Clock cycles between accepted vectors, back to back without stalls
        (``length`` bitstream cycles plus one cycle to accept the next vector); checked
        against the RTL by the tests."""
        return self.length + 1


# SupeRBNN-style default for the bundled digits BNN: 4 streams (a 128-input layer on 32-row
# crossbars), 8-bit SNGs, L = 64. Our choice: the paper's SC module and L are not available
# (reference/aqfp-and-pim-adc.md A.4).
SC_DIGITS = ScAccumulatorConfig(streams=4, code_bits=8, length=64,
                                accumulation=ScAccumulation.COUNT, seed=1)
