"""The AQFP stochastic BNN array model: device, circuit, mapping and cost."""

import math

import numpy as np
import pytest

from chipforge.sc_config import SC_DIGITS, ScAccumulation
from chipforge.sim.aqfp import (
    SUPERBNN,
    AqfpConfig,
    Randomness,
    accumulate,
    aqfp_forward,
    binary_layers,
    cmos_bnn_energy,
    cost_model,
    crossbar_partials,
    energy_comparison,
    layer_cost,
    layer_latency_s,
    reram_bnn_energy,
    run_superbnn,
    sample_bitstreams,
    switching_probability,
    with_changes,
)
from chipforge.sim.executor import run_graph
from chipforge.sim.graph import Graph, Node, Op
from chipforge.sim.ref.sc_accumulator import sc_accumulate


def random_bnn(rng, sizes=(20, 48, 40, 6), negative_gamma=True):
    """A random binarized graph with non-integer thresholds (no exact ties)."""
    nodes = [Node(Op.FLATTEN, "flat", ("input",)),
             Node(Op.SIGN, "enc", ("flat",))]
    prev = "enc"
    for i, (a, b) in enumerate(zip(sizes, sizes[1:], strict=False)):
        w = rng.choice([-1.0, 1.0], (b, a))
        if i == len(sizes) - 2:
            nodes.append(Node(Op.LINEAR, f"fc{i}", (prev,), {},
                              {"weight": w, "bias": rng.integers(-3, 4, b) + 0.5}))
            break
        gamma = rng.uniform(0.5, 2.0, b) * (rng.choice([-1, 1], b) if negative_gamma else 1)
        nodes += [Node(Op.LINEAR, f"fc{i}", (prev,), {}, {"weight": w}),
                  Node(Op.BATCHNORM, f"bn{i}", (f"fc{i}",), {"eps": 0.0},
                       {"gamma": gamma, "beta": rng.normal(0, 0.3, b),
                        "mean": rng.integers(-4, 5, b) + 0.37, "var": rng.uniform(4, 30, b)}),
                  Node(Op.SIGN, f"s{i}", (f"bn{i}",))]
        prev = f"s{i}"
    return Graph("rand-bnn", (sizes[0],), nodes)


# -- config -------------------------------------------------------------------------------
def test_config_validation_names_field_and_rule():
    with pytest.raises(ValueError, match="crossbar_size must be an integer in 1..4096, not 0"):
        AqfpConfig(crossbar_size=0)
    with pytest.raises(ValueError, match="sigma_ua must be a finite number in \\(0.0"):
        AqfpConfig(sigma_ua=0.0)
    with pytest.raises(ValueError, match="attenuation_table N values must increase"):
        AqfpConfig(attenuation_table=((64, 0.5), (32, 0.6)))
    with pytest.raises(ValueError, match="randomness must be a Randomness"):
        AqfpConfig(randomness="thermal")
    with pytest.raises(ValueError, match="AqfpConfig has no field 'sigma'"):
        with_changes(SUPERBNN, sigma=1.0)
    assert AqfpConfig.from_dict(SUPERBNN.to_dict()) == SUPERBNN
    table = AqfpConfig(attenuation_table=((16, 0.8), (64, 0.4)))
    assert AqfpConfig.from_dict(table.to_dict()) == table


def test_the_rtl_preset_is_the_superbnn_arrays_accumulator():
    # fc2 of bnn-digits: 128 inputs on 32-row crossbars -> 4 streams; same L and SNG width.
    assert SUPERBNN.sc_config(streams=128 // SUPERBNN.crossbar_size, seed=1) == SC_DIGITS


def test_attenuation_temperature_and_noise_in_mac_units():
    cfg = AqfpConfig(attenuation_n0=16.0, sigma_ua=1.0, i_unit_ua=2.0)
    assert cfg.attenuation(16) == pytest.approx(0.5)
    alphas = [cfg.attenuation(n) for n in (8, 32, 128, 512)]
    assert all(a > b for a, b in zip(alphas, alphas[1:], strict=False))
    noise = [with_changes(cfg, crossbar_size=n).noise_mac for n in (8, 32, 128)]
    assert noise == sorted(noise) and noise[0] == pytest.approx(1.0 / (2.0 / 1.5))
    table = AqfpConfig(attenuation_table=((16, 0.8), (64, 0.4)))
    assert table.attenuation(40) == pytest.approx(0.6) and table.attenuation(1000) == 0.4
    hot = with_changes(cfg, temperature_k=16.8)
    assert hot.sigma_at_temperature_ua == pytest.approx(2.0)
    assert with_changes(hot, temperature_scaling=False).sigma_at_temperature_ua == 1.0
    assert cfg.phase_s == pytest.approx(50e-12) and cfg.cycle_s == pytest.approx(200e-12)


# -- device -------------------------------------------------------------------------------
def test_switching_probability_is_the_gaussian_cdf_of_the_offset_current():
    cfg = AqfpConfig(sigma_ua=2.0, i_offset_ua=0.5)
    p = switching_probability(np.array([0.5, 2.5, -1.5, 100.0]), cfg)
    assert p[0] == pytest.approx(0.5)
    assert p[1] == pytest.approx(0.5 * (1 + math.erf(1 / math.sqrt(2))))
    assert p[1] + p[2] == pytest.approx(1.0)
    assert p[3] == pytest.approx(1.0)
    assert cfg.gray_zone_ua == pytest.approx(2 * 2.326 * 2.0, rel=1e-3)


def test_explicit_bitstreams_have_the_switching_probability():
    rng = np.random.default_rng(0)
    p = np.array([[[0.1, 0.5, 0.93]]])
    bits = sample_bitstreams(p, 20000, rng)
    assert np.allclose(bits.mean(axis=-1), p, atol=0.015)


# -- circuit ------------------------------------------------------------------------------
def test_crossbar_partials_split_the_mac():
    rng = np.random.default_rng(1)
    x = rng.choice([-1, 1], (5, 70))
    w = rng.choice([-1, 1], (70, 9))
    partial, rows = crossbar_partials(x, w, 32)
    assert partial.shape == (5, 9, 3) and rows.tolist() == [32, 32, 6]
    assert np.array_equal(partial.sum(axis=-1), x @ w)
    assert np.array_equal(partial[..., 2], x[:, 64:] @ w[64:])


@pytest.mark.parametrize("mode", list(ScAccumulation))
def test_thermal_counts_have_the_expected_mean(mode):
    rng = np.random.default_rng(2)
    p = rng.random((400, 3, 5))
    cfg = AqfpConfig(bitstream_length=32, accumulation=mode)
    counts, votes = accumulate(p, cfg, rng)
    expected, _ = accumulate(p, with_changes(cfg, randomness=Randomness.EXPECTED), rng)
    assert votes == (32 if mode is ScAccumulation.MAJORITY else 160)
    assert np.all(counts == np.rint(counts)) and counts.min() >= 0 and counts.max() <= votes
    # The mean count is within 4 standard errors (a count's variance is <= votes / 4).
    assert abs((counts - expected).mean()) < 4 * math.sqrt(votes / 4 / counts.size)


def test_majority_probability_matches_explicit_votes():
    rng = np.random.default_rng(3)
    p = np.array([[[0.2, 0.7, 0.6, 0.55]]])
    bits = sample_bitstreams(p, 40000, rng)
    votes = (2 * bits.sum(axis=2) >= 4).mean()
    cfg = AqfpConfig(bitstream_length=1000, accumulation=ScAccumulation.MAJORITY,
                     randomness=Randomness.EXPECTED)
    expected, length = accumulate(p, cfg, rng)
    assert expected[0, 0] / length == pytest.approx(votes, abs=0.01)


def test_lfsr_randomness_is_the_bit_exact_reference():
    p = np.random.default_rng(4).random((6, 2, 3))
    cfg = AqfpConfig(bitstream_length=16, randomness=Randomness.LFSR, sng_bits=6)
    counts, votes = accumulate(p, cfg, np.random.default_rng(9))
    seed = int(np.random.default_rng(9).integers(0, 2**32))
    sc = cfg.sc_config(streams=3, seed=seed)
    ref = sc_accumulate(np.rint(p * 63).astype(np.int64).reshape(-1, 3), sc)
    assert counts.reshape(-1).tolist() == ref.count.tolist() and votes == 48


# -- mapping ------------------------------------------------------------------------------
def test_folded_thresholds_reproduce_the_graph_exactly():
    rng = np.random.default_rng(5)
    graph = random_bnn(rng)
    encoder, layers = binary_layers(graph)
    x = rng.normal(size=(64, 20))
    values = run_graph(graph, x, quantized=False, return_all=True)
    h = run_graph(encoder, x, quantized=False).astype(np.int64)
    for i, layer in enumerate(layers):
        mac = h @ layer.weights
        if layer.is_output:
            assert np.allclose(mac - layer.threshold, values[f"fc{i}"])
            break
        h = np.where(mac >= layer.threshold, 1, -1)
        assert np.array_equal(h, values[f"s{i}"])


def test_noiseless_single_crossbar_array_is_the_deterministic_bnn():
    rng = np.random.default_rng(6)
    graph = random_bnn(rng)
    x = rng.normal(size=(50, 20))
    # N >= every fan-in (K = 1) and a gray zone far narrower than half a MAC unit: every
    # buffer switches deterministically, so one bit per crossbar is the sign of MAC - theta.
    cfg = AqfpConfig(crossbar_size=64, sigma_ua=1e-4, bitstream_length=1)
    encoder, layers = binary_layers(graph)
    h = run_graph(encoder, x, quantized=False).astype(np.int8)
    scores = aqfp_forward(h, layers, cfg, np.random.default_rng(0))
    ideal = run_graph(graph, x, quantized=False)
    assert np.array_equal(scores, np.where(ideal >= 0, 1.0, -1.0))


def test_mapping_errors_name_the_node():
    rng = np.random.default_rng(7)
    graph = random_bnn(rng)
    graph.nodes[2].params["weight"][0, 0] *= 0.5     # neither +-1 nor +-1 times a scale
    with pytest.raises(ValueError, match="linear 'fc0' has weights that are not \\+-1"):
        binary_layers(graph)
    relu = random_bnn(rng)
    relu.nodes[4] = Node(Op.RELU, "s0", ("bn0",))
    with pytest.raises(ValueError, match="expects BATCHNORM then SIGN, found 's0' \\(relu\\)"):
        binary_layers(relu)
    no_encoder = Graph("g", (4,), [Node(Op.LINEAR, "fc", ("input",), {},
                                        {"weight": np.ones((2, 4))})])
    with pytest.raises(ValueError, match="needs binary inputs"):
        binary_layers(no_encoder)


# -- cost ---------------------------------------------------------------------------------
def test_junction_counts_energy_and_latency():
    cfg = AqfpConfig(crossbar_size=32, bitstream_length=64)
    cost = layer_cost(100, 40, cfg)
    assert cost.streams == 4 and cost.crossbars == 8
    assert cost.jj["cells"] == 8 * 32 * 32 * 2
    assert cost.jj["splitters"] == 8 * 32 * 31 * 4
    assert cost.jj["readout_buffers"] == 8 * 32 * 2
    assert layer_latency_s(cost, cfg) == pytest.approx(cost.depth_phases * 50e-12
                                                       + 64 * 200e-12)
    graph = random_bnn(np.random.default_rng(8))
    _, layers = binary_layers(graph)
    costs, latency, throughput, energy = cost_model(layers, cfg)
    # Independent anchor: 1.4 zJ per junction per 5-GHz cycle (Takeuchi et al., APL 2019).
    # The arrays alone, counted here from the layer sizes (per 32x32 crossbar: 2-JJ cells,
    # 4-JJ splitter trees of 31 per row, one 2-JJ buffer per column), switch for L = 64
    # cycles; the SC accumulators add less than twice that again.
    xbars = sum(-(-la.fan_in // 32) * -(-la.fan_out // 32) for la in layers)
    arrays = xbars * (32 * 32 * 2 + 32 * 31 * 4 + 32 * 2) * 64 * 1.4e-21
    assert arrays < energy.chip_j < 3 * arrays
    # One bitstream per 200-ps cycle: the pipelined array finishes a frame every L cycles.
    assert 1 / throughput == pytest.approx(64 / 5e9)
    balanced = with_changes(cfg, path_balance_overhead=1.0)
    assert cost_model(layers, balanced)[3].chip_j == pytest.approx(2 * energy.chip_j, abs=0)
    # Twice the bitstream, twice the energy per inference.
    assert cost_model(layers, with_changes(cfg, bitstream_length=128))[3].chip_j > \
        1.9 * energy.chip_j


def test_baselines_list_their_assumptions_and_scale_with_the_network():
    graph = random_bnn(np.random.default_rng(9))
    _, layers = binary_layers(graph)
    for estimate in (reram_bnn_energy(layers), cmos_bnn_energy(layers)):
        assert estimate.energy_j == pytest.approx(sum(estimate.breakdown_j.values()))
        assert len(estimate.assumptions) >= 3
    rows = energy_comparison(layers, SUPERBNN)
    assert [r["aqfp_advantage"] > 1 for r in rows[1:]] == [True, True]
    assert rows[1]["aqfp_advantage_with_cryocooler"] == pytest.approx(
        rows[1]["aqfp_advantage"] / 401)


def test_run_superbnn_is_seeded_and_reports_everything():
    rng = np.random.default_rng(10)
    graph = random_bnn(rng)
    x = rng.normal(size=(80, 20))
    y = run_graph(graph, x, quantized=False).argmax(axis=1)
    a = run_superbnn(graph, (x, y), SUPERBNN, seed=3)
    b = run_superbnn(graph, (x, y), SUPERBNN, seed=3)
    c = run_superbnn(graph, (x, y), with_changes(SUPERBNN, bitstream_length=2), seed=4)
    assert a.accuracy == b.accuracy and a.accuracy_ideal == 1.0
    assert c.accuracy < a.accuracy
    assert a.latency_s > 0 and a.energy_chip_j > 0 and a.jj_total > 0
    assert "with cryocooler x400" in a.summary()
    with pytest.raises(ValueError, match="expects \\(20,\\)"):
        run_superbnn(graph, (x[:, :5], y), SUPERBNN)
