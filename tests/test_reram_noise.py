"""Read noise of the crossbar kernels: the counter-based Box-Muller normals are standard
normal and independent, a read's normal does not depend on blocks, chunks or threads, each
ADC read gets one Gaussian of its own variance, and programming variation keeps column sums
exact (the same integers for every chunking and on torch)."""

import sys
from pathlib import Path

import numba
import numpy as np
import pytest
from scipy import stats

from chipforge.accelerators import (
    FORMS8,
    ISAAC,
    AdcRange,
    PlacementScheme,
    ReramAcceleratorConfig,
)
from chipforge.mappings.placement import place_layer
from chipforge.sim.devices import ReadNoiseModel, ReramDeviceConfig
from chipforge.sim.graph import Node, Op
from chipforge.sim.reram import crossbar_layer_matmul, program_layer
from chipforge.sim.reram_kernels import gaussians

sys.path.insert(0, str(Path(__file__).parent))
from test_reram_backends import _layer  # noqa: E402

N = 1_000_000


@pytest.fixture(scope="module")
def normals():
    return gaussians(2024, 0, N).astype(np.float64)


def test_normals_have_the_standard_normal_distribution(normals):
    z = normals
    assert stats.kstest(z, "norm").pvalue > 1e-3
    se = 1 / np.sqrt(N)
    assert abs(z.mean()) < 5 * se
    assert abs(z.var() - 1) < 5 * np.sqrt(2) * se
    assert abs(stats.kurtosis(z)) < 5 * np.sqrt(24) * se
    for t in (1.0, 2.0, 3.0, 4.0):              # tails: binomial counts within 5 sigma
        p = 2 * stats.norm.sf(t)
        assert abs((np.abs(z) > t).sum() - N * p) < 5 * np.sqrt(N * p * (1 - p)) + 1
    # deciles of |z| against the half-normal: a chi-square on 20 equiprobable bins
    edges = stats.norm.ppf(np.linspace(0, 1, 21))
    counts, _ = np.histogram(z, edges)
    assert stats.chisquare(counts).pvalue > 1e-3


def test_normals_are_independent_across_reads(normals):
    z = normals
    se = 1 / np.sqrt(N)
    first, second = z[0::2], z[1::2]               # the two normals of one Box-Muller pair
    for a, b in ((first, second), (z[:-1], z[1:]), (z[:-2], z[2:]), (z[:-1024], z[1024:]),
                 (first ** 2, second ** 2), (np.abs(z[:-1]), np.abs(z[1:]))):
        assert abs(np.corrcoef(a, b)[0, 1]) < 6 * se * np.sqrt(2)
    # joint distribution of a pair: 10 x 10 equiprobable cells
    u, v = (np.minimum((stats.norm.cdf(a) * 10).astype(int), 9) for a in (first, second))
    table = np.bincount(u * 10 + v, minlength=100)
    assert stats.chisquare(table).pvalue > 1e-3
    other = gaussians(2025, 0, 100_000)
    assert abs(np.corrcoef(z[:100_000], other)[0, 1]) < 0.02
    assert not np.array_equal(z[:10], other[:10])


def test_a_normal_does_not_depend_on_block_start_or_threads(normals):
    z = normals.astype(np.float32)
    for start in (0, 1, 999, 4095, 4096, 4097):
        for count in (1, 2, 3, 10, 5001):
            for block in (2, 7, 4096):
                assert np.array_equal(gaussians(2024, start, count, block=block),
                                      z[start:start + count])
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        assert np.array_equal(gaussians(2024, 0, 100_000, block=333), z[:100_000])
    finally:
        numba.set_num_threads(threads)


@pytest.mark.parametrize("rows", [8, 128], ids=["fused-path", "gemm-path"])
def test_each_read_gets_one_gaussian_of_its_own_variance(rows):
    """Two cells at levels 2 and 3, read once per input (one active row, 1-bit input):
    the ADC codes follow round(level + sigma z) with sigma the cell's proportional noise,
    independently for every read (rows of the batch, columns)."""
    device = ReramDeviceConfig(read_noise=0.3, read_noise_model=ReadNoiseModel.PROPORTIONAL)
    accel = ReramAcceleratorConfig(rows=rows, cols=8, cell_bits=2, weight_bits=2, input_bits=2,
                                   dac_bits=1, adc_bits=4, scheme=PlacementScheme.OFFSET,
                                   adc_range=AdcRange.CLIP, device=device)
    node = Node(Op.LINEAR, "fc", ("input",), dict(weight_bits=2, weight_scale=1.0, act_bits=2,
                                                  act_scale=1.0, act_signed=False),
                {"weight": np.array([[0.0], [1.0]])})
    layer = place_layer(node, accel)
    assert layer.levels[0, 0].tolist() == [2, 3] and layer.offset == 2
    programmed = program_layer(layer, device)
    samples = 100_000
    y = crossbar_layer_matmul(np.ones((samples, 1), dtype=np.int64), programmed, input_bits=2,
                              signed_inputs=False, noise_key=7)
    codes = y + layer.offset                       # the unit column reads the one input: 1
    full = (1 << layer.adc_bits) - 1
    for col, level in enumerate((2, 3)):
        sigma = float(np.sqrt(programmed.noise_var[0, 0, col]))
        assert sigma == pytest.approx(0.3 * (level + device.g_off / device.level_step(2)), rel=1e-4)
        cdf = stats.norm.cdf((np.arange(full + 1) + 0.5 - level) / sigma)
        p = np.diff(np.concatenate([[0.0], cdf[:-1], [1.0]]))
        counts = np.bincount(codes[:, col], minlength=full + 1)
        keep = p * samples > 5                     # chi-square on the populated codes
        expected = p[keep] / p[keep].sum() * counts[keep].sum()
        assert stats.chisquare(counts[keep], expected).pvalue > 1e-3
        assert counts[~keep].sum() < 20
    se = 1 / np.sqrt(samples)
    c = codes.astype(float)
    assert abs(np.corrcoef(c[:, 0], c[:, 1])[0, 1]) < 6 * se
    assert abs(np.corrcoef(c[:-1, 1], c[1:, 1])[0, 1]) < 6 * se


@pytest.mark.parametrize("accel", [ISAAC, FORMS8], ids=["gemm-path", "fused-path"])
def test_programming_variation_keeps_column_sums_exact(accel):
    """Conductances with variation lie on a grid on which every column sum is exact, so
    the BLAS blocking (chunk size) and torch's GEMM give the very same ADC codes."""
    accel = accel.with_device(programming_sigma=0.1, p_stuck_on=0.01)
    _, layer = _layer(accel, 300, 24, fragment=8)
    programmed = program_layer(layer, accel.device, seed=2)
    g = programmed.conductance
    assert not np.array_equal(g, np.rint(g))                 # the variation is there
    assert np.abs(g - layer.levels).max() > 0.2
    x = np.random.default_rng(4).integers(-128, 128, (70, 300))
    kw = dict(input_bits=8, signed_inputs=True)
    whole = crossbar_layer_matmul(x, programmed, **kw)
    assert np.array_equal(whole, crossbar_layer_matmul(x, programmed, chunk_bytes=1, **kw))
    assert np.array_equal(whole, crossbar_layer_matmul(x, programmed, backend="torch", **kw))


def test_torch_draws_the_kernels_normals(normals):
    """The torch backend's Box-Muller in float64 with torch's log/sin/cos on the same bits:
    the kernels' float32 polynomials agree to float32 precision (1e-4 absolute at worst,
    near z = 0 where the radius' float32 uniform is coarsest)."""
    import torch

    from chipforge.sim.reram_torch import gaussians_torch

    zt = gaussians_torch(2024, torch.arange(N)).numpy()
    d = np.abs(zt - normals)
    assert d.max() < 1e-4
    assert np.percentile(d, 99.9) < 1e-6 * 5
    assert (d / np.maximum(np.abs(zt), 1.0)).max() < 1e-4
