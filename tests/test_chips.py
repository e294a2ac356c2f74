"""Chip seeds and the spread over chips (chipforge.chips)."""

import doctest

import pytest

import chipforge.chips as chips
from chipforge.chips import chip_seeds, spread


def test_doctests():
    assert doctest.testmod(chips).failed == 0


def test_chip_seeds_are_distinct_stable_and_prefix_closed():
    seeds = chip_seeds(7, 16)
    assert seeds[0] == 7 and len(set(seeds)) == 16
    assert chip_seeds(7, 4) == seeds[:4]                     # adding chips keeps the others
    assert not set(chip_seeds(0, 8)) & set(chip_seeds(1, 8))  # no seed + i overlap
    assert all(0 <= s < 2 ** 63 for s in seeds)


def test_spread_matches_a_hand_computed_t_interval():
    s = spread([0.80, 0.90, 1.00, 0.90])
    # mean 0.9, std sqrt(0.02/3) = 0.08165; t(0.975, 3) = 3.1824; half = 0.12993
    assert s["mean"] == pytest.approx(0.9)
    assert s["std"] == pytest.approx(0.0816497, rel=1e-5)
    assert s["ci95_low"] == pytest.approx(0.9 - 0.129926, rel=1e-4)
    assert s["ci95_high"] == 1.0                             # clipped: 1.0299 > 1
    assert spread([0.5])["ci95_low"] is None


@pytest.mark.parametrize("bad", [-1, 1.5, "3", True])
def test_bad_seed_or_chip_count_is_refused(bad):
    with pytest.raises(ValueError, match="seed must"):
        chip_seeds(bad, 2)
    with pytest.raises(ValueError, match="chips must"):
        chip_seeds(0, 0)
