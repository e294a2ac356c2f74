"""Counts and energies that a one-line error in the model must fail (issue 27).

Every expected value here is derived independently of the code under test: crossbar counts
by a second, simple counter written below (or by hand, worked out in the comments), zero-skip
savings and row-read energies by hand on hand-built inputs, SupeRBNN's energy from the cited
1.4 zJ per junction (Takeuchi et al., APL 114, 042602, 2019) and junctions counted by hand.
"""

import math

import numpy as np
import pytest

from chipforge.accelerators import FORMS8, get_accelerator
from chipforge.mappings.placement import place, place_layer
from chipforge.sim.cycle.arch import FORMS8 as FORMS8_CYCLES
from chipforge.sim.cycle.arch import ISAAC8
from chipforge.sim.cycle.components import Category
from chipforge.sim.cycle.model import LayerWorkload, simulate_cycles
from chipforge.sim.cycle.paper import zero_skip_savings
from chipforge.sim.graph import Node, Op


def _q():
    return dict(weight_bits=8, weight_scale=1.0, act_bits=8, act_scale=1.0, act_signed=False)


def polarized_linear(k, n, size=8, seed=0):
    """A dense LINEAR layer (K inputs, N outputs) polarized in fragments of ``size`` rows:
    every fragment of every output holds one sign and no zero weight."""
    rng = np.random.default_rng(seed)
    groups = -(-k // size)
    signs = rng.choice([-1, 1], (n, groups))
    mag = rng.integers(1, 128, (n, k))
    w = mag * np.repeat(signs, size, axis=1)[:, :k]
    return Node(Op.LINEAR, "fc", ("input",), _q() | dict(fragment_size=size,
                                                          fragment_order="w-major"),
                {"weight": w.astype(float), "fragment_signs": signs.astype(np.int8)})


# --- (a) crossbar counts: polarized layers wider than half a crossbar --------------------
# FORMS-8 stores an 8-bit weight's magnitude in 4 two-bit cells: 128 / 4 = 32 outputs per
# 128-column crossbar, 128 rows. Counted by hand: crossbars = ceil(K/128) * ceil(N/32).
@pytest.mark.parametrize("k,n,crossbars", [
    (256, 17, 2 * 1),      # a little over half a crossbar's outputs: one column tile
    (256, 33, 2 * 2),      # one output over a full crossbar: two column tiles
    (200, 40, 2 * 2),
    (128, 120, 1 * 4),     # LeNet's fc1 width
    (64, 64, 1 * 2),
])
def test_polarized_layer_crossbars_counted_by_hand(k, n, crossbars):
    layer = place_layer(polarized_linear(k, n), FORMS8)
    assert layer.per_output == 4
    assert layer.stats.crossbars == crossbars
    assert layer.stats.col_tiles == -(-n // 32)
    assert layer.stats.cells == k * n * 4
    # the cycle model's own tiling (no placement given) counts the same crossbars
    work = LayerWorkload("fc", layer_weights(layer, k, n), np.ones((1, k), dtype=np.int64),
                         frames=1, fragment_size=8)
    assert simulate_cycles([work], FORMS8_CYCLES).layers[0].crossbars == crossbars


def layer_weights(layer, k, n):
    """(K, N) integer weights back from a placed layer (rows in input order)."""
    w = np.zeros((k, n), dtype=np.int64)
    rows = layer.row_index.reshape(-1)
    mags = (layer.levels.astype(np.int64).reshape(len(rows), n, layer.per_output)
            * (4 ** np.arange(layer.per_output))).sum(axis=2)
    signs = np.repeat(np.sign(layer.coef[:, ::layer.per_output]), 8, axis=0)
    w[rows[rows >= 0]] = (mags * signs)[rows >= 0]
    return w


def simple_crossbar_count(graph, rows=128, cols=128, cells_per_weight=4, fragment=8):
    """A second counter, written from the placement's documented rules only: rows in the
    fragment order the model was polarized with, all-zero fragments and all-zero outputs
    dropped, then ceil(rows / 128) x ceil(outputs / (128 / cells)) crossbars per layer."""
    from chipforge.sim.fragments import row_order

    counts = {}
    for node in graph.weighted_nodes():
        w = node.params["weight"]
        w2 = w.reshape(w.shape[0], -1).T                                   # (K, N)
        w2 = w2[row_order(w.shape, node.attrs["fragment_order"])]
        k = w2.shape[0]
        padded = np.zeros((-(-k // fragment) * fragment, w2.shape[1]))
        padded[:k] = w2
        live_fragments = sum(1 for g in range(0, len(padded), fragment)
                             if np.any(padded[g:g + fragment] != 0))
        live_outputs = int(np.any(w2 != 0, axis=0).sum())
        counts[node.name] = (math.ceil(live_fragments * fragment / rows)
                             * math.ceil(live_outputs / (cols // cells_per_weight)))
    return counts


def test_zoo_forms_model_crossbars_equal_a_second_counter():
    from chipforge import zoo

    graph = zoo.load("lenet-digits-forms8")
    mapped = place(graph, get_accelerator("forms8"))
    want = simple_crossbar_count(graph)
    assert {name: layer.stats.crossbars for name, layer in mapped.layers.items()} == want
    # fc1 (120 outputs) and fc2 (84) are wider than a crossbar's 32 outputs
    assert want["fc1"] >= 4 and want["fc2"] >= 3
    assert mapped.crossbars == sum(want.values()) == 13      # the demo's count


# --- (b) FORMS zero-skip savings, exact on hand-built inputs -------------------------------
def _skip_workload():
    """16 rows (two fragments of 8), one output; two input vectors:
    vector 0: fragment 0 holds 5 (3 bits), fragment 1 holds 255 (8 bits);
    vector 1: fragment 0 all zero (0 bits), fragment 1 holds 2**15 (16 bits)."""
    x = np.zeros((2, 16), dtype=np.int64)
    x[0, 2], x[0, 9] = 5, 255
    x[1, 12] = 1 << 15
    return LayerWorkload("fc", np.ones((16, 1), dtype=np.int64), x, frames=1,
                         input_bits_of_model=16, fragment_size=8)


def test_zero_skip_savings_exact_values():
    s = zero_skip_savings([_skip_workload()], sizes=(8, 16), input_bits=16)
    # fragment 8: EICs 3, 8, 0, 16 -> mean 27/4; fragment 16: 8, 16 -> mean 12
    assert s[8]["eic"] == 6.75 and s[8]["saving"] == 1 - 6.75 / 16
    assert s[16]["eic"] == 12 and s[16]["saving"] == 0.25


def test_cycle_model_skip_saving_exact_value():
    """FORMS-8: a fragment takes EIC + 1 cycles (the load/trigger cycle), fragments of one
    crossbar one after the other. Vector 0: (3+1) + (8+1) = 13; vector 1: (0+1) + (16+1)
    = 18; without skipping (16+1) * 2 = 34 each. Saving = 1 - 15.5 / 34 = 37/68."""
    report = simulate_cycles([_skip_workload()], FORMS8_CYCLES)
    (layer,) = report.layers
    assert layer.cycles_per_vector == 15.5 and layer.full_cycles_per_vector == 34
    assert report.skip_saving == pytest.approx(37 / 68, rel=1e-12, abs=0)
    # ADC conversions: per vector the EICs (3 + 8 + 0 + 16 = 27) x 4 cell columns
    assert layer.actions["adc"] == 27 * 4
    assert layer.mean_group_eic == 6.75


# --- (f) row-read energies from the hand-computed per-row values ---------------------------
def test_row_read_energy_through_the_cycle_model():
    """ISAAC Table I: 2.4 mW crossbars + 0.01 mW S+H for 8 arrays of 128 rows read every
    100 ns -> 2.41e-3 * 100e-9 / 1024 = 0.23535 pJ per row read (hand-computed). FORMS reads
    a row for 128 / (4 x 2.1 GHz) = 15.238 ns: 0.23535 * 0.15238 = 0.035863 pJ. Priced
    through the cycle model on hand-counted row cycles."""
    # ISAAC8: 128 rows all fed, 16 input cycles (no skipping): 2048 row cycles
    work = LayerWorkload("fc", np.ones((128, 1), dtype=np.int64),
                         np.ones((1, 128), dtype=np.int64), frames=1)
    isaac = simulate_cycles([work], ISAAC8).layers[0]
    assert isaac.actions["row_cycles"] == 2048
    assert isaac.energy_pj[Category.CROSSBAR] == pytest.approx(2048 * 0.23535, rel=1e-4)
    # FORMS-8: 8 rows of value 3 (2 effective bits): 16 row cycles
    work = LayerWorkload("fc", np.ones((8, 1), dtype=np.int64),
                         np.full((1, 8), 3, dtype=np.int64), frames=1)
    forms = simulate_cycles([work], FORMS8_CYCLES).layers[0]
    assert forms.actions["row_cycles"] == 16
    assert forms.energy_pj[Category.CROSSBAR] == pytest.approx(16 * 0.035863, rel=1e-4)


# --- (e) SupeRBNN energy from the cited per-junction value ---------------------------------
def test_superbnn_energy_from_the_cited_junction_energy():
    """One 32 x 32 layer on one 32 x 32 crossbar, L = 64, COUNT accumulation. By hand from
    layer_cost's documented assumptions: cells 32*32*2 = 2048, splitters 32*31*4 = 3968,
    readout buffers 32*2 = 64; per output a 7-bit counter ((1*64).bit_length()) of full
    adders (3 MAJ3 of 6 JJ) with 4 two-JJ loop buffers a bit: 7*(18+8) = 182, and a 7-bit
    MAJ3 comparator 42: 224 x 32 outputs = 7168. 13,248 JJs, each switching once per cycle
    at 1.4 zJ for 64 cycles."""
    from chipforge.sim.aqfp import SUPERBNN, BinaryLayer, cost_model, energy_comparison

    assert SUPERBNN.jj_switch_energy_zj == 1.4      # the cited value, not a derived one
    layer = BinaryLayer("fc", np.ones((32, 32), dtype=np.int8), np.zeros(32), True)
    costs, _, _, energy = cost_model([layer], SUPERBNN)
    assert costs[0].jj_total == 13248
    assert energy.chip_j == pytest.approx(13248 * 64 * 1.4e-21, rel=1e-12, abs=0)
    assert energy.wall_j == pytest.approx(13248 * 64 * 1.4e-21 * 401, rel=1e-12, abs=0)
    rows = energy_comparison([layer], SUPERBNN)
    assert rows[0]["energy_j"] == pytest.approx(1.1870208e-15, rel=1e-12, abs=0)


def test_flip_rule_at_the_tie_is_the_references():
    """The reference flips a column when its levels sum *past* half the maximum (ISAAC):
    a fragment of 8 two-bit cells flips at a sum of 13, not at 12 (the tie keeps its levels,
    which matters once read noise depends on the conductances)."""
    w = np.zeros((3, 8))
    w[0, :5] = (3, 3, 3, 2, 1)          # lowest slice sums to 12 = 8 * 3 / 2: the tie
    w[1, :5] = (3, 3, 3, 2, 2)          # 13: flipped
    w[2, :4] = (3, 3, 3, 2)             # 11: kept
    node = Node(Op.LINEAR, "fc", ("input",), _q() | dict(fragment_size=8,
                                                          fragment_order="w-major"),
                {"weight": w})
    layer = place_layer(node, FORMS8)
    assert layer.flipped[0, ::layer.per_output].tolist() == [False, True, False]
    assert not layer.flipped[0].reshape(3, 4)[:, 1:].any()    # empty upper slices
