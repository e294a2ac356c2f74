"""The crossbar simulation's kernels and backends: torch gives numpy's integers exactly,
read noise does not depend on chunking or threads, and its Gaussians are Gaussian."""

import numba
import numpy as np
import pytest
import torch
from scipy import stats

from chipforge.accelerators import (
    FORMS8,
    ISAAC,
    ISQED_DIFFERENTIAL,
    ISQED_TWO_COLUMN,
    AdcRange,
    PlacementScheme,
    ReramAcceleratorConfig,
)
from chipforge.mappings.placement import place, place_layer
from chipforge.sim.devices import ReadNoiseModel
from chipforge.sim.executor import run_graph
from chipforge.sim.graph import Graph, Node, Op
from chipforge.sim.reram import (
    CrossbarMatmul,
    crossbar_layer_matmul,
    layer_chunk_bytes_per_row,
    program_layer,
)
from chipforge.sim.reram_kernels import gaussians
from chipforge.sim.reram_torch import gaussians_torch


def _layer(accel, k, n, seed=0, signed=True, fragment=None):
    rng = np.random.default_rng(seed)
    w = rng.integers(-128, 128, (n, k))
    if fragment:   # polarize: one sign per fragment of rows
        signs = rng.choice([-1, 1], (n, -(-k // fragment)))
        w = np.minimum(np.abs(w), 127) * np.repeat(signs, fragment, axis=1)[:, :k]
    w[rng.random(w.shape) < 0.3] = 0
    node = Node(Op.LINEAR, "fc", ("input",),
                dict(weight_bits=8, weight_scale=1.0, act_bits=8, act_scale=1.0,
                     act_signed=signed, fragment_size=fragment or 8,
                     fragment_order="w-major"), {"weight": w * 1.0})
    return node, place_layer(node, accel)


ACCELS = {
    "isaac-gemm-path": ISAAC,
    "forms8-fused-path": FORMS8,
    "two-column-saturating": ISQED_TWO_COLUMN.replace(adc_bits=5),
    "differential": ISQED_DIFFERENTIAL,
    "offset-clip-dac2": ReramAcceleratorConfig(rows=64, cols=64, dac_bits=2, adc_bits=6,
                                               weight_bits=8, scheme=PlacementScheme.OFFSET,
                                               adc_range=AdcRange.CLIP),
}


@pytest.mark.parametrize("name", list(ACCELS))
@pytest.mark.parametrize("signed", [True, False])
def test_torch_backend_gives_numpy_integers_exactly(name, signed):
    """Integer cells (stuck-at faults, no variation) and saturating ADCs: both backends
    compute the same integers, and they differ from the exact product (so faults and
    saturation are really in play)."""
    accel = ACCELS[name].with_device(p_stuck_off=0.02, p_stuck_on=0.05)
    fragment = accel.fragment_size if accel.scheme is PlacementScheme.POLARIZED else None
    node, layer = _layer(accel, 300, 24, signed=signed, fragment=fragment)
    programmed = program_layer(layer, accel.device, seed=3)
    rng = np.random.default_rng(1)
    lo, hi = (-128, 127) if signed else (0, 255)
    x = rng.integers(lo, hi + 1, (70, 300))
    x[:, rng.random(300) < 0.4] = 0
    kw = dict(input_bits=8, signed_inputs=signed)
    report_np, report_t = {}, {}
    got_np = crossbar_layer_matmul(x, programmed, report=report_np, **kw)
    got_t = crossbar_layer_matmul(x, programmed, backend="torch", report=report_t, **kw)
    assert got_np.dtype == got_t.dtype == np.int64
    assert np.array_equal(got_np, got_t)
    assert report_np == report_t
    w_q = (node.params["weight"]).astype(np.int64).T
    assert not np.array_equal(got_np, x @ w_q)


@pytest.mark.parametrize("accel", [ISAAC, FORMS8], ids=["gemm-path", "fused-path"])
def test_read_noise_does_not_depend_on_chunks_or_threads(accel):
    accel = accel.with_device(programming_sigma=0.1, read_noise=0.05)
    _, layer = _layer(accel, 200, 16, fragment=8)
    programmed = program_layer(layer, accel.device, seed=2)
    x = np.random.default_rng(4).integers(-128, 128, (60, 200))
    kw = dict(input_bits=8, signed_inputs=True, noise_key=99)
    whole = crossbar_layer_matmul(x, programmed, **kw)
    tiny_chunks = crossbar_layer_matmul(x, programmed, chunk_bytes=1, **kw)
    split = np.concatenate([crossbar_layer_matmul(x[:23], programmed, **kw),
                            crossbar_layer_matmul(x[23:], programmed, row_offset=23, **kw)])
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        one_thread = crossbar_layer_matmul(x, programmed, **kw)
    finally:
        numba.set_num_threads(threads)
    assert np.array_equal(whole, tiny_chunks)
    assert np.array_equal(whole, split)
    assert np.array_equal(whole, one_thread)
    other_key = crossbar_layer_matmul(x, programmed, **(kw | {"noise_key": 100}))
    assert not np.array_equal(whole, other_key)
    t_whole = crossbar_layer_matmul(x, programmed, backend="torch", **kw)
    t_split = crossbar_layer_matmul(x, programmed, backend="torch", chunk_bytes=1, **kw)
    assert np.array_equal(t_whole, t_split)


def test_executor_batches_do_not_change_a_noisy_run():
    rng = np.random.default_rng(0)
    w = rng.integers(-128, 128, (10, 64))
    node = Node(Op.LINEAR, "fc", ("input",), dict(weight_bits=8, weight_scale=0.01, act_bits=8,
                                                  act_scale=1 / 255, act_signed=False),
                {"weight": w * 0.01})
    graph = Graph("fc", (64,), [node])
    accel = ISAAC.with_device(programming_sigma=0.05, read_noise=0.05, p_stuck_on=0.01)
    mapped = place(graph, accel)
    x = rng.random((50, 64))
    run = lambda batch: run_graph(graph, x, batch_size=batch,  # noqa: E731
                                  matmul=CrossbarMatmul(mapped, accel.device, seed=4))
    assert np.array_equal(run(50), run(7))
    assert not np.array_equal(run(50), run_graph(graph, x))


def test_counter_based_gaussians_are_standard_normal():
    z = gaussians(12345, 0, 400_000)
    assert stats.kstest(z, "norm").pvalue > 1e-3
    assert abs(z.mean()) < 0.01 and abs(z.var() - 1) < 0.01
    assert (np.abs(z) > 3.5).mean() == pytest.approx(2 * stats.norm.sf(3.5), rel=0.25)
    assert abs(np.corrcoef(z[:-1], z[1:])[0, 1]) < 0.01
    assert np.array_equal(gaussians(12345, 1000, 10), z[1000:1010])   # addressable stream
    zt = gaussians_torch(12345, torch.arange(400_000)).numpy()
    assert stats.kstest(zt, "norm").pvalue > 1e-3
    assert stats.ks_2samp(z, zt).pvalue > 1e-3


@pytest.mark.parametrize("model", list(ReadNoiseModel))
def test_torch_noise_equals_numpy_noise_in_distribution(model):
    accel = ISAAC.with_device(read_noise=0.05, read_noise_model=model)
    _, layer = _layer(accel, 256, 4)
    programmed = program_layer(layer, accel.device)
    x = np.tile(np.random.default_rng(2).integers(-128, 128, (1, 256)), (4000, 1))
    kw = dict(input_bits=8, signed_inputs=True, noise_key=5)
    a = crossbar_layer_matmul(x, programmed, **kw).astype(float)
    b = crossbar_layer_matmul(x, programmed, backend="torch", **kw).astype(float)
    assert a.std(axis=0) == pytest.approx(b.std(axis=0), rel=0.1)
    assert a.mean(axis=0) == pytest.approx(b.mean(axis=0), abs=0.2 * a.std(axis=0).max())
    assert a.std(axis=0).min() > 1


def test_an_8bit_model_on_isaac_is_sliced_as_8bit_weights():
    node, layer = _layer(ISAAC, 128, 8)
    assert layer.per_output == 4 and layer.offset == 128      # not 8 cells and 2**15
    assert layer.stats.cells == 128 * 8 * 4


def _gemm_graph(n, bits=8):
    rng = np.random.default_rng(0)
    w = rng.integers(-127, 128, (n, n))
    node = Node(Op.LINEAR, "gemm", ("input",), dict(weight_bits=bits, weight_scale=0.01,
                                                    act_bits=8, act_scale=1 / 255,
                                                    act_signed=False), {"weight": w * 0.01})
    return Graph("gemm", (n,), [node])


def test_a_tight_memory_budget_streams_the_batch_with_the_same_result():
    from chipforge.families.reram import run_reram
    from chipforge.sim.memory import parse_size, plan_memory

    graph = _gemm_graph(512)
    x = np.random.default_rng(1).random((40, 512))
    y = np.zeros(40, dtype=int)
    opts = dict(seed=3, read_noise=0.02, fault_rate=0.001, float_accuracy=False)
    mapped = place(graph, ISAAC)
    tight = plan_memory(graph, mapped, ISAAC.device.replace(read_noise=0.02), 40,
                        parse_size("40M"))
    rows_per_chunk = tight.chunk_bytes // layer_chunk_bytes_per_row(mapped.layers["gemm"], 9,
                                                                      True)
    assert rows_per_chunk < 40 and tight.estimate <= parse_size("40M")
    small = run_reram(graph, "isaac", x, y, max_memory="40M", **opts)
    large = run_reram(graph, "isaac", x, y, max_memory="4G", **opts)
    assert small.accuracy_hardware == large.accuracy_hardware
    hooks = []
    for budget in ("40M", "4G"):
        plan = plan_memory(graph, mapped, ISAAC.device.replace(read_noise=0.02), 40,
                           parse_size(budget))
        hook = CrossbarMatmul(mapped, ISAAC.device.replace(read_noise=0.02), seed=3,
                              chunk_bytes=plan.chunk_bytes)
        hooks.append(run_graph(graph, x, matmul=hook, batch_size=plan.batch))
    assert np.array_equal(*hooks)


def test_memory_budget_refusals_name_the_rule():
    from chipforge.sim.memory import parse_size, plan_memory

    with pytest.raises(ValueError, match="--max-memory must be a size such as 2G"):
        parse_size("lots")
    with pytest.raises(ValueError, match="at least 16M"):
        parse_size("1k")
    graph = _gemm_graph(1024)
    mapped = place(graph, ISAAC)
    with pytest.raises(ValueError, match="needs at least .* the memory budget is 16.00 MiB"):
        plan_memory(graph, mapped, ISAAC.device.replace(read_noise=0.02), 10, 16 << 20)


@pytest.mark.slow
def test_a_4096x4096_gemm_with_read_noise_and_500_samples_fits_the_default_budget():
    """Issue 19: this case reached 15.7 GiB; now its peak stays within the default budget
    (half the available memory) and below the estimate's bound."""
    import resource

    from chipforge.families.reram import run_reram
    from chipforge.sim.memory import available_memory

    budget = available_memory() // 2
    graph = _gemm_graph(4096)
    x = np.random.default_rng(1).random((500, 4096))
    result = run_reram(graph, "isaac", x, np.zeros(500, dtype=int), read_noise=0.02,
                       float_accuracy=False)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    assert result.metrics["memory_estimate_bytes"] <= budget
    assert peak <= budget


def test_layer_error_table_is_zero_on_ideal_chips_and_grows_with_read_noise():
    from chipforge.families.reram import run_reram

    graph = _gemm_graph(128)
    x = np.random.default_rng(1).random((30, 128))
    y = np.zeros(30, dtype=int)
    rows = {}
    for noise in (0.0, 0.02, 0.1):
        r = run_reram(graph, "isaac", x, y, read_noise=noise, layer_errors=20,
                      float_accuracy=False)
        (layer,) = r.layers
        rows[noise] = layer
    assert rows[0.0]["relative_error"] == 0 and rows[0.0]["snr_db"] == float("inf")
    assert 0 < rows[0.02]["relative_error"] < rows[0.1]["relative_error"] < 1
    for noise in (0.02, 0.1):
        assert rows[noise]["snr_db"] == pytest.approx(-20 * np.log10(rows[noise]
                                                                    ["relative_error"]))


def test_adc_range_modes_fix_a_saturating_adc():
    """256 rows of 2-bit cells read with 2-bit DACs reach 2304 levels: a 6-bit ADC at one
    level per code saturates almost every read; a calibrated or fractional range does not,
    and torch agrees with numpy on the wide range."""
    from chipforge.sim.reram import adc_steps, calibrate_adc

    accel = ReramAcceleratorConfig(rows=256, cols=128, dac_bits=2, adc_bits=6, weight_bits=8,
                                   scheme=PlacementScheme.OFFSET, adc_range=AdcRange.CLIP)
    rng = np.random.default_rng(0)
    w = rng.integers(-127, 128, (16, 256))
    node = Node(Op.LINEAR, "fc", ("input",), dict(weight_bits=8, weight_scale=1.0, act_bits=8,
                                                  act_scale=1.0, act_signed=False),
                {"weight": w * 1.0})
    graph = Graph("fc", (256,), [node])
    mapped = place(graph, accel)
    x = rng.integers(0, 256, (60, 256)).astype(float)
    exact = x @ w.T
    hook = CrossbarMatmul(mapped)
    cal = calibrate_adc(graph, x[:50], hook)
    assert cal["fc"].shape == (4,) and 300 < cal["fc"].max() <= 256 * 3 * 3   # per cycle
    errors, reports = {}, {}
    for mode in ("max", "fraction:0.5", "calibrated"):
        steps = adc_steps(mode, mapped, cal)
        h = CrossbarMatmul(mapped, adc_steps=steps)
        got = run_graph(graph, x, matmul=h)
        errors[mode] = np.linalg.norm(got - exact) / np.linalg.norm(exact)
        reports[mode] = h.report["saturated"] / h.report["adc_reads"]
    assert errors["max"] > 0.5 and reports["max"] > 0.5
    # A 6-bit ADC over ~1500 levels quantizes coarsely (about 24 levels per code), but
    # nothing saturates: a fraction of the error that clipping leaves.
    assert errors["calibrated"] < errors["max"] / 3 and errors["fraction:0.5"] < errors["max"] / 2
    assert reports["calibrated"] < 0.01
    steps = adc_steps("calibrated", mapped, cal)
    layer = program_layer(mapped.layers["fc"])
    kw = dict(input_bits=8, signed_inputs=False, adc_step=steps["fc"])
    xi = x.astype(np.int64)
    assert np.allclose(crossbar_layer_matmul(xi, layer, **kw),
                       crossbar_layer_matmul(xi, layer, backend="torch", **kw))
    with pytest.raises(ValueError, match="fraction must be in"):
        adc_steps("fraction:2", mapped)
