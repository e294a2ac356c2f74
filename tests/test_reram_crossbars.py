"""ReRAM devices, placement passes and the crossbar executor.

Every placement scheme reproduces the quantized model exactly on ideal devices; the
vectorized executor agrees with the bit-exact crossbar reference tile by tile (saturation
included); non-idealities behave as their models say; one seed gives one result.
"""

import numpy as np
import pytest

from chipforge.accelerators import (
    ACCELERATORS,
    FORMS8,
    ISAAC,
    ISQED_DIFFERENTIAL,
    ISQED_TWO_COLUMN,
    AdcRange,
    PlacementScheme,
    ReramAcceleratorConfig,
    get_accelerator,
)
from chipforge.config import WeightEncoding
from chipforge.mappings.placement import place, place_layer
from chipforge.sim.devices import (
    IDEAL_DEVICE,
    ReadNoiseModel,
    ReramDeviceConfig,
    StuckAt,
    draw_fault_map,
    program_cells,
    split_stuck_at_rate,
)
from chipforge.sim.executor import integer_weights, run_graph, weight_matrix
from chipforge.sim.fragments import row_order
from chipforge.sim.graph import Graph, Node, Op
from chipforge.sim.ref.crossbar import crossbar_mvm
from chipforge.sim.reram import CrossbarMatmul, crossbar_layer_matmul, program_layer


def _q(scale, act_scale, signed):
    return dict(weight_bits=8, weight_scale=scale, act_bits=8, act_scale=act_scale,
                act_signed=signed)


def small_cnn(seed=0, sparsity=0.5):
    """A quantized conv + linear graph with signed and unsigned activations, pruned zeros,
    the extreme weights -128 and 127, and a conv K (27) that no fragment size divides."""
    rng = np.random.default_rng(seed)
    conv_w = rng.integers(-128, 128, (6, 3, 3, 3))
    conv_w[rng.random(conv_w.shape) < sparsity] = 0
    conv_w[0, 0, 0, :2] = (-128, 127)
    fc_w = rng.integers(-128, 128, (10, 6 * 4 * 4))
    fc_w[rng.random(fc_w.shape) < sparsity] = 0
    nodes = [
        Node(Op.CONV2D, "conv", ("input",), dict(stride=1, padding=1) | _q(0.01, 1 / 16, True),
             {"weight": conv_w * 0.01, "bias": rng.normal(size=6)}),
        Node(Op.RELU, "relu", ("conv",)),
        Node(Op.MAXPOOL2D, "pool", ("relu",), dict(kernel=2, stride=2)),
        Node(Op.FLATTEN, "flat", ("pool",)),
        Node(Op.LINEAR, "fc", ("flat",), _q(0.01, 0.05, False), {"weight": fc_w * 0.01}),
    ]
    return Graph("small", (3, 8, 8), nodes)


def polarized(graph, size, order):
    """Polarize every weighted node with the FORMS sign rule (zero the opposite sign)."""
    graph = graph.copy()
    for node in graph.weighted_nodes():
        w = node.params["weight"]
        perm = row_order(w.shape, order)
        w2 = w.reshape(w.shape[0], -1)[:, perm]
        k = w2.shape[1]
        groups = -(-k // size)
        padded = np.zeros((w.shape[0], groups * size))
        padded[:, :k] = w2
        view = padded.reshape(w.shape[0], groups, size)
        signs = np.where(view.sum(axis=2) >= 0, 1, -1)
        view = np.where(view * signs[..., None] >= 0, view, 0)
        flat = np.empty((w.shape[0], k))
        flat[:, perm] = view.reshape(w.shape[0], -1)[:, :k]
        node.params["weight"] = flat.reshape(w.shape)
        node.params["fragment_signs"] = signs.astype(np.int8)
        node.attrs["fragment_size"] = size
        node.attrs["fragment_order"] = order
    return graph


X = np.random.default_rng(7).normal(size=(40, 3, 8, 8))

NON_POLARIZED = [ISAAC, ISQED_TWO_COLUMN, ISQED_DIFFERENTIAL,
                 ISQED_TWO_COLUMN.replace(name="offset-clip", scheme=PlacementScheme.OFFSET),
                 ISAAC.replace(name="isaac-small", rows=16, cols=24, weight_bits=8),
                 ISQED_DIFFERENTIAL.replace(name="diff-3bit-dac2", cell_bits=3, dac_bits=2,
                                            rows=32, adc_bits=12)]


@pytest.mark.parametrize("accel", NON_POLARIZED, ids=lambda a: a.name)
def test_ideal_devices_reproduce_the_quantized_model_exactly(accel):
    graph = small_cnn()
    hook = CrossbarMatmul(place(graph, accel))
    assert np.array_equal(run_graph(graph, X, matmul=hook), run_graph(graph, X))
    assert hook.report["saturated"] == 0 and hook.report["adc_reads"] > 0


@pytest.mark.parametrize("size", [4, 8, 16])
@pytest.mark.parametrize("order", ["w-major", "h-major", "c-major"])
def test_forms_polarized_mapping_is_exact_for_every_fragment_size_and_order(size, order):
    graph = polarized(small_cnn(), size, order)
    accel = ACCELERATORS[f"forms{size}"]
    hook = CrossbarMatmul(place(graph, accel))
    assert np.array_equal(run_graph(graph, X, matmul=hook), run_graph(graph, X))
    assert hook.report["saturated"] == 0


@pytest.mark.parametrize("size", [4, 8, 16])
def test_forms_one_bit_short_adc_needs_the_flip_encoding(size):
    """papers.md §1.2: a fragment sums up to 3 m, one bit more than FORMS' ADC holds."""
    accel = ACCELERATORS[f"forms{size}"]
    w = np.full((3, 64), 127.0)                                    # every cell at level 3
    node = Node(Op.LINEAR, "fc", ("input",), _q(1.0, 1.0, False) | {"fragment_size": size},
                {"weight": w})
    x = np.full((2, 64), 255)
    for adc_range, exact in ((AdcRange.FLIP, True), (AdcRange.CLIP, False)):
        layer = place_layer(node, accel.replace(adc_range=adc_range))
        report = {}
        y = crossbar_layer_matmul(x, program_layer(layer), input_bits=8, signed_inputs=False,
                                  report=report)
        assert np.array_equal(y, x @ w.T.astype(int)) is exact
        assert (report["saturated"] == 0) is exact


def test_forms_rejects_unpolarized_weights_and_mismatched_fragments():
    with pytest.raises(ValueError, match="not polarized for fragment size 8"):
        place(small_cnn(), FORMS8)
    with pytest.raises(ValueError, match="polarized with fragment_size 4"):
        place(polarized(small_cnn(), 4, "w-major"), FORMS8)


def test_fragment_signs_are_applied_digitally():
    graph = polarized(small_cnn(), 8, "c-major")
    layer = place_layer(graph.node("conv"), FORMS8)
    signs = graph.node("conv").params["fragment_signs"].T          # (G, N)
    assert np.array_equal(np.sign(layer.coef[:, ::layer.per_output]), signs)
    assert layer.levels.shape[1] == 8 and layer.stats.crossbars == 1


# The vectorized executor equals the reference crossbar (one row group, any saturation).
@pytest.mark.parametrize("encoding,scheme,flip", [
    (WeightEncoding.OFFSET, PlacementScheme.OFFSET, True),
    (WeightEncoding.OFFSET, PlacementScheme.OFFSET, False),
    (WeightEncoding.TWO_COLUMN, PlacementScheme.TWO_COLUMN, False),
    (WeightEncoding.DIFFERENTIAL, PlacementScheme.DIFFERENTIAL, False),
])
def test_executor_matches_the_reference_crossbar_even_when_saturating(encoding, scheme, flip):
    rng = np.random.default_rng(3)
    accel = ReramAcceleratorConfig(rows=32, cols=64, weight_bits=8, input_bits=8, adc_bits=4,
                                   scheme=scheme,
                                   adc_range=AdcRange.FLIP if flip else AdcRange.CLIP)
    w = rng.integers(-128, 128, (32, 8))
    x = rng.integers(-128, 128, (50, 32))
    node = Node(Op.LINEAR, "fc", ("input",), _q(1.0, 1.0, True), {"weight": w.T.astype(float)})
    layer = place_layer(node, accel)
    got = crossbar_layer_matmul(x, program_layer(layer), input_bits=8, signed_inputs=True)
    cfg = accel.crossbar_config(input_bits=8)
    assert cfg.weight_encoding is encoding
    assert np.array_equal(got, crossbar_mvm(x, w, cfg))
    assert not np.array_equal(got, x @ w)  # a 4-bit ADC does saturate here


def test_large_layers_tile_and_accumulate_partial_sums():
    rng = np.random.default_rng(4)
    w = rng.integers(-128, 128, (40, 300))                         # 300 rows, 40 outputs
    node = Node(Op.LINEAR, "fc", ("input",), _q(1.0, 1.0, False), {"weight": w * 1.0})
    accel = ISAAC.replace(weight_bits=8)                           # 4 cells / weight
    layer = place_layer(node, accel)
    assert layer.levels.shape[0] == 3                              # 3 row tiles of 128
    assert (layer.stats.row_tiles, layer.stats.col_tiles, layer.stats.crossbars) == (3, 2, 6)
    assert layer.stats.cells == 300 * 40 * 4
    assert layer.stats.utilization == pytest.approx(48000 / (6 * 128 * 128))
    x = rng.integers(0, 256, (20, 300))
    assert np.array_equal(crossbar_layer_matmul(x, program_layer(layer), input_bits=8,
                                                signed_inputs=False), x @ w.T)


# --- devices -----------------------------------------------------------------------------

def test_stuck_at_split_and_fault_rates():
    p_off, p_on = split_stuck_at_rate(0.062)
    assert p_off == pytest.approx(0.01) and p_on == pytest.approx(0.052)
    device = IDEAL_DEVICE.with_stuck_at_rate(0.062)
    faults = draw_fault_map((400, 500), device, np.random.default_rng(0))
    assert (faults == StuckAt.OFF).mean() == pytest.approx(0.01, rel=0.05)
    assert (faults == StuckAt.ON).mean() == pytest.approx(0.052, rel=0.03)
    # The map depends only on the seed; a higher rate keeps the lower rate's faulty cells.
    again = draw_fault_map((400, 500), device, np.random.default_rng(0))
    assert np.array_equal(faults, again)
    more = draw_fault_map((400, 500), IDEAL_DEVICE.with_stuck_at_rate(0.124),
                          np.random.default_rng(0))
    assert ((faults != 0) <= (more != 0)).all()


def test_programming_variation_is_lognormal_and_faults_override_it():
    device = ReramDeviceConfig(programming_sigma=0.1, g_off=0.0)
    levels = np.full((200, 200), 2)
    g = program_cells(levels, 2, device, np.random.default_rng(1), dtype=np.float64)
    assert np.log(g / 2).std() == pytest.approx(0.1, rel=0.05)
    assert abs(np.log(g / 2).mean()) < 0.005
    faults = np.zeros(levels.shape, np.int8)
    faults[0, 0], faults[0, 1] = StuckAt.OFF, StuckAt.ON
    g = program_cells(levels, 2, device, np.random.default_rng(1), faults)
    assert (g[0, 0], g[0, 1]) == (0, 3)
    assert np.array_equal(program_cells(levels, 2, IDEAL_DEVICE, None), levels)


@pytest.mark.parametrize("model", list(ReadNoiseModel))
def test_read_noise_has_the_variance_of_per_cell_noise(model):
    """One Gaussian per ADC read with the GEMM variance == a fresh Gaussian per cell."""
    rng = np.random.default_rng(5)
    accel = ReramAcceleratorConfig(rows=64, cols=8, weight_bits=4, cell_bits=4, input_bits=2,
                                   adc_bits=16, scheme=PlacementScheme.OFFSET,
                                   adc_range=AdcRange.CLIP,
                                   device=ReramDeviceConfig(read_noise=0.05,
                                                            read_noise_model=model))
    w = rng.integers(-8, 8, (2, 64))
    node = Node(Op.LINEAR, "fc", ("input",),
                _q(1.0, 1.0, False) | {"act_bits": 2, "weight_bits": 4}, {"weight": w * 1.0})
    layer = place_layer(node, accel)
    programmed = program_layer(layer, accel.device)
    x = np.tile(rng.integers(0, 2, (1, 64)), (20000, 1))           # one input, 20000 reads
    got = crossbar_layer_matmul(x, programmed, input_bits=2, signed_inputs=False,
                                rng=np.random.default_rng(6))
    # Brute force for the same input: per cell and read, N(0, sigma_cell^2), summed.
    base = accel.device.g_off / accel.device.level_step(4)
    cells = layer.levels[0].astype(float)                          # (R, C), offset: 1 slice
    sigma = 0.05 * ((cells + base) if model is ReadNoiseModel.PROPORTIONAL
                    else np.full(cells.shape, 15.0))
    a = x[0][layer.row_index[0]]
    want_var = (a[:, None] * sigma ** 2).sum(axis=0)               # per physical column
    # The low cycle (weight 1) reads the ones of x; the output's variance is the column's
    # (plus ADC rounding, which adds ~1/12 per read).
    assert got.std(axis=0) == pytest.approx(np.sqrt(want_var + 1 / 12), rel=0.08)
    # Unbiased: the mean is the exact product within 4 standard errors.
    assert got.mean(axis=0) == pytest.approx(x[0] @ w.T,
                                             abs=4 * got.std(axis=0).max() / np.sqrt(len(x)))


def test_same_seed_same_result_different_seed_different_result():
    graph = small_cnn()
    accel = ISQED_TWO_COLUMN.with_device(programming_sigma=0.1, read_noise=0.02,
                                         p_stuck_off=0.002, p_stuck_on=0.01)
    mapped = place(graph, accel)
    run = lambda seed: run_graph(graph, X, matmul=CrossbarMatmul(mapped, accel.device,  # noqa
                                                                  seed=seed))
    assert np.array_equal(run(3), run(3))
    assert not np.array_equal(run(3), run(4))
    assert not np.array_equal(run(3), run_graph(graph, X))


def test_differential_zero_weights_sit_high_and_shrug_off_stuck_on():
    # 75 % zeros, but no all-zero row or output (the placement would drop those).
    w = (np.arange(128)[None, :] % 4 == np.arange(4)[:, None]).astype(float)   # (4, 128)
    node = Node(Op.LINEAR, "fc", ("input",), _q(1.0, 1.0, False), {"weight": w})
    diff = place_layer(node, ISQED_DIFFERENTIAL)
    two = place_layer(node, ISQED_TWO_COLUMN)
    col_output = np.arange(diff.levels.shape[2]) // diff.per_output
    zero = diff.row_index[0][:, None] % 4 != col_output[None, :]              # zero weights
    assert zero.mean() == 0.75
    assert (diff.levels[0][zero] == 3).all() and (two.levels[0][zero] == 0).all()
    on = ReramDeviceConfig(p_stuck_on=0.3)
    x = np.random.default_rng(0).integers(0, 256, (10, 128))
    run = lambda layer: crossbar_layer_matmul(x, program_layer(layer, on, seed=1),  # noqa
                                              input_bits=8, signed_inputs=False)
    exact = x @ weight_matrix(node, integer_weights(node))
    err = lambda layer: np.abs(run(layer) - exact).mean()  # noqa
    assert err(diff) < 0.5 * err(two)


def test_placement_drops_all_zero_rows_and_outputs():
    # Structured zeros (a removed filter shape = a row, a removed filter = an output) free
    # crossbars; the result is unchanged.
    rng = np.random.default_rng(0)
    w = rng.integers(-100, 100, (64, 300)).astype(float)         # (out, in): K=300, N=64
    dense = place_layer(Node(Op.LINEAR, "fc", ("input",), _q(1.0, 1.0, False),
                             {"weight": w}), ISQED_TWO_COLUMN)
    w[:, 128:] = 0                                                # 172 rows -> 128 rows
    w[:32] = 0                                                    # 64 outputs -> 32
    node = Node(Op.LINEAR, "fc", ("input",), _q(1.0, 1.0, False), {"weight": w})
    sparse = place_layer(node, ISQED_TWO_COLUMN)
    # 8-bit two-column: 8 columns per output, 16 outputs per 128-column crossbar.
    assert (dense.stats.row_tiles, dense.stats.col_tiles) == (3, 4)
    assert (sparse.stats.row_tiles, sparse.stats.col_tiles) == (1, 2)
    assert sparse.stats.cells == 128 * 32 * 8 and sparse.rows == 300
    x = rng.integers(0, 256, (5, 300))
    ideal = ReramDeviceConfig()
    for accel in (ISQED_TWO_COLUMN, ISQED_DIFFERENTIAL, ISAAC):
        layer = place_layer(node, accel)
        got = crossbar_layer_matmul(x, program_layer(layer, ideal, seed=0), input_bits=8,
                                    signed_inputs=False)
        assert (got == x @ weight_matrix(node, integer_weights(node))).all(), accel.name


# --- configs -----------------------------------------------------------------------------

def test_presets_follow_the_papers():
    assert (FORMS8.adc_bits, ACCELERATORS["forms4"].adc_bits,
            ACCELERATORS["forms16"].adc_bits) == (4, 3, 5)
    assert FORMS8.adcs_per_crossbar == 4 and FORMS8.adc_rate == 2.1e9
    assert FORMS8.slices == 4 and FORMS8.input_bits == 16 and FORMS8.dac_bits == 1
    assert ISAAC.adc_bits == 8 and ISAAC.slices == 8


def test_bad_configs_are_rejected_with_the_rule():
    with pytest.raises(ValueError, match="fragment_size must divide rows"):
        FORMS8.replace(fragment_size=6)
    with pytest.raises(ValueError, match="adc_range FLIP needs a unit column"):
        ISQED_TWO_COLUMN.replace(adc_range=AdcRange.FLIP)
    with pytest.raises(ValueError, match="p_stuck_off \\+ p_stuck_on must be at most 1"):
        ReramDeviceConfig(p_stuck_off=0.6, p_stuck_on=0.6)
    with pytest.raises(ValueError, match="p_stuck_on must be a finite number"):
        ReramDeviceConfig(p_stuck_on=-0.1)
    with pytest.raises(ValueError, match="unknown ReRAM accelerator 'nope'"):
        get_accelerator("nope")


def test_accelerator_round_trips_through_toml(tmp_path):
    path = tmp_path / "chip.toml"
    path.write_text('name = "chip"\nrows = 64\nscheme = "differential"\nadc_bits = 9\n'
                    '[device]\nprogramming_sigma = 0.05\nread_noise_model = "independent"\n')
    cfg = get_accelerator(str(path))
    assert cfg.scheme is PlacementScheme.DIFFERENTIAL and cfg.rows == 64
    assert cfg.device.read_noise_model is ReadNoiseModel.INDEPENDENT
    assert type(cfg).from_dict(cfg.to_dict()) == cfg
    path.write_text('scheme = "diagonal"\n')
    with pytest.raises(ValueError, match="scheme must be one of"):
        get_accelerator(str(path))


@pytest.mark.parametrize("accel", [ISQED_TWO_COLUMN, ISQED_DIFFERENTIAL,
                                   ISAAC.replace(name="isaac-9bit", adc_bits=9,
                                                 adc_range=AdcRange.CLIP)],
                         ids=lambda a: a.name)
def test_fast_path_with_faults_equals_the_bit_serial_crossbar(accel):
    """Integer cells + no noise + an ADC that cannot saturate: x @ W_eff is exact."""
    graph = small_cnn()
    mapped = place(graph, accel)
    device = IDEAL_DEVICE.with_stuck_at_rate(0.02)
    fast = CrossbarMatmul(mapped, device, seed=5)
    slow = CrossbarMatmul(mapped, device, seed=5, fast_path=False)
    assert set(fast.effective) == {"conv", "fc"} and not slow.effective
    y_fast = run_graph(graph, X, matmul=fast)
    assert np.array_equal(y_fast, run_graph(graph, X, matmul=slow))
    assert not np.array_equal(y_fast, run_graph(graph, X))


ZOO_CASES = [("lenet-digits", a) for a in ("isaac", "isqed-two-column", "isqed-differential")] + [
    ("lenet-digits-pruned", "isqed-differential"), ("mlp-digits", "isqed-two-column")] + [
    (f"lenet-digits-forms{m}", f"forms{m}") for m in (4, 8, 16)]


@pytest.mark.parametrize("model,accel", ZOO_CASES, ids=[f"{m}@{a}" for m, a in ZOO_CASES])
def test_zoo_models_run_exactly_on_ideal_crossbars(model, accel):
    from chipforge import zoo
    from chipforge.zoo.data import digits

    graph = zoo.load(model)
    x = digits(graph.input_shape[-1]).x_test[:16].reshape(-1, *graph.input_shape)
    mapped = place(graph, accel)
    # The bit-serial path (no shortcut), so the crossbar arithmetic itself is checked.
    hook = CrossbarMatmul(mapped, fast_path=False)
    assert np.array_equal(run_graph(graph, x, matmul=hook), run_graph(graph, x))
    assert hook.report["saturated"] == 0


def test_shipped_toml_preset_loads():
    from pathlib import Path

    import chipforge

    path = Path(chipforge.__file__).parent / "presets" / "forms8_clip.toml"
    cfg = get_accelerator(str(path))
    assert cfg == FORMS8.replace(name="forms8-clip", adc_range=AdcRange.CLIP,
                                 device=ReramDeviceConfig(programming_sigma=0.1))
