"""Randomized-BNN training and the SupeRBNN claims on the bundled ``bnn-digits``.

What differs from the paper (SupeRBNN, Li et al., MICRO'23): digits 8x8 instead of
MNIST/CIFAR, a 64-128-128-10 MLP, and placeholder device values (gray zone, attenuation
law, current scale, SC module, L) because the paper's are not available; so the tests
assert the qualitative claims with stated tolerances, not the paper's numbers.
"""

import numpy as np
import pytest

from chipforge.mappings.superbnn import (
    BNN_DIGITS,
    RbnnTrainConfig,
    load_bnn_digits,
    mean_by,
    run_trials,
    train_randomized_bnn,
)
from chipforge.sim.aqfp import (
    SUPERBNN,
    Randomness,
    aqfp_forward,
    binary_layers,
    energy_comparison,
    with_changes,
)
from chipforge.sim.executor import run_graph
from chipforge.sim.graph import Op
from chipforge.zoo.data import digits

SEEDS = range(3)


def test_training_is_seeded_clamped_and_exports_a_binary_graph():
    recipe = RbnnTrainConfig(hidden=(32,), epochs=2, seed=5)
    hw = with_changes(SUPERBNN, crossbar_size=16)
    a = train_randomized_bnn(digits(), recipe, hw, name="tiny")
    b = train_randomized_bnn(digits(), recipe, hw, name="tiny")
    for na, nb in zip(a.nodes, b.nodes, strict=True):
        for key in na.params:
            assert np.array_equal(na.params[key], nb.params[key])
    linears = [n for n in a.nodes if n.op is Op.LINEAR]
    assert [n.params["weight"].shape for n in linears] == [(32, 64), (10, 32)]
    assert all(np.all(np.abs(n.params["weight"]) == 1) for n in linears)
    _, layers = binary_layers(a)          # folds into the array's thresholds
    assert [layer.is_output for layer in layers] == [False, True]
    assert a.meta["recipe"]["hidden"] == [32] and a.meta["trained_for"]["crossbar_size"] == 16
    with pytest.raises(ValueError, match="hidden must list at least one layer width"):
        RbnnTrainConfig(hidden=())


def test_bundled_model_is_the_documented_deterministic_bnn():
    graph = load_bnn_digits()
    data = digits()
    pred = run_graph(graph, data.x_test, quantized=False).argmax(axis=1)
    accuracy = float((pred == data.y_test).mean())
    assert accuracy == graph.meta["test_accuracy_deterministic"]
    assert accuracy >= 0.85
    # The integer (accelerator) path of the executor gives the same model.
    assert np.array_equal(run_graph(graph, data.x_test).argmax(axis=1), pred)
    assert graph.meta["recipe"] == BNN_DIGITS.to_dict()


def test_accuracy_converges_with_bitstream_length():
    rows = run_trials([{"bitstream_length": n} for n in (1, 8, 64, 1024)], SEEDS)
    acc = {k: m for k, m, _ in mean_by(rows, "bitstream_length")}
    ideal = rows[0]["accuracy_ideal"]
    assert acc[1] < acc[64] - 0.2          # one bit per crossbar: mostly noise
    assert acc[8] < acc[1024]
    assert abs(acc[1024] - ideal) <= 0.02  # long bitstreams: the deterministic BNN
    # Predictions converge to the L -> infinity limit of the array itself.
    graph, data = load_bnn_digits(), digits()
    encoder, layers = binary_layers(graph)
    x = run_graph(encoder, data.x_test, quantized=False).astype(np.int8)
    limit = aqfp_forward(x, layers, with_changes(SUPERBNN, randomness=Randomness.EXPECTED),
                         np.random.default_rng(0)).argmax(axis=1)
    lengths = (4, 64, 1024, 16384)
    agree = [np.mean([(aqfp_forward(x, layers, with_changes(SUPERBNN, bitstream_length=n),
                                    np.random.default_rng(seed)).argmax(axis=1) == limit).mean()
                      for seed in (1, 2)]) for n in lengths]
    # Neurons near their threshold converge like 1/sqrt(L): slowly but steadily.
    assert agree == sorted(agree) and agree[-1] >= 0.95


def test_gray_zone_and_crossbar_size_trade_off():
    sigma = {k: m for k, m, _ in mean_by(run_trials(
        [{"sigma_ua": s} for s in (0.125, 1.0, 8.0)], SEEDS), "sigma_ua")}
    # Too wide a gray zone drowns the MAC; too narrow hard-thresholds every partial sum.
    assert sigma[8.0] < sigma[1.0] - 0.1
    assert sigma[0.125] < sigma[1.0] - 0.03
    size_rows = run_trials([{"crossbar_size": n} for n in (32, 256)], SEEDS)
    size = {k: m for k, m, _ in mean_by(size_rows, "crossbar_size")}
    noise = {r["crossbar_size"]: r["noise_mac"] for r in size_rows}
    assert noise[256] > 5 * noise[32]      # attenuation: more randomness in MAC units
    assert size[256] < size[32] - 0.015


def test_energy_advantage_is_of_the_papers_order_of_magnitude():
    _, layers = binary_layers(load_bnn_digits())
    rows = {r["design"].split(" (")[0]: r for r in energy_comparison(layers, SUPERBNN)}
    reram = rows["ReRAM BNN"]["aqfp_advantage"]
    # The paper reports ~7.8e4x over a ReRAM BNN. Our estimate rests on placeholder JJ
    # counts, L, path balancing and the baseline's sensing: it is a table, not one number
    # (chipforge.sim.aqfp_sensitivity; its scaling laws are tested in
    # tests/test_claims_physics.py). Here only: AQFP is cheaper than the ReRAM BNN.
    assert reram > 1
    # The cryocooler takes away a factor (1 + 400) and is never folded in silently.
    assert rows["ReRAM BNN"]["aqfp_advantage_with_cryocooler"] == pytest.approx(reram / 401)


@pytest.mark.slow
def test_bundled_model_retrains_from_its_recipe(tmp_path):
    from chipforge.mappings.superbnn import build_bnn_digits
    from chipforge.sim.graph import load_graph

    fresh = load_graph(build_bnn_digits(tmp_path / "bnn.npz"))
    bundled = load_bnn_digits()
    assert fresh.meta["test_accuracy_deterministic"] == pytest.approx(
        bundled.meta["test_accuracy_deterministic"], abs=0.02)


@pytest.mark.slow
def test_randomness_aware_retraining_recovers_a_wide_gray_zone():
    """Co-optimization: a model trained for sigma = 8 uA beats the bundled one (trained
    for 1 uA) on that array by at least 5 points (measured: 0.84 vs 0.69)."""
    from chipforge.sim.aqfp import run_superbnn

    hw = with_changes(SUPERBNN, sigma_ua=8.0)
    data = digits()
    retrained = train_randomized_bnn(data, BNN_DIGITS, hw)
    fresh = np.mean([run_superbnn(retrained, data, hw, s).accuracy for s in SEEDS])
    bundled = np.mean([run_superbnn(load_bnn_digits(), data, hw, s).accuracy for s in SEEDS])
    assert fresh > bundled + 0.05
