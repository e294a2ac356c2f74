"""The exact direct convolution of the executor (``exact_conv``): integer results equal to
int64 arithmetic on both sides of float32's 2**24 limit, the digit-half split where one
float32 convolution would round, and a refusal (None) where exactness cannot be
guaranteed; the executor and the ideal-crossbar hook give the im2col path's integers."""

import warnings

import numpy as np
import pytest
import torch

from chipforge.sim.executor import exact_conv, im2col, run_graph


def int64_conv(x, w, stride=1, padding=0, groups=1):
    """The reference: im2col and int64 products, group by group."""
    n = x.shape[0]
    o, c_g = w.shape[:2]
    outs = []
    for g in range(groups):
        patches, oh, ow = im2col(x[:, g * c_g:(g + 1) * c_g].astype(np.int64), w.shape[2],
                                 w.shape[3], stride, padding)
        wg = w[g * (o // groups):(g + 1) * (o // groups)].reshape(o // groups, -1)
        outs.append((patches @ wg.astype(np.int64).T).reshape(n, oh, ow, -1))
    return np.concatenate(outs, axis=3).transpose(0, 3, 1, 2)


def test_small_sums_take_one_convolution_and_are_exact():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (3, 16, 9, 9))
    w = rng.integers(-127, 128, (8, 16, 3, 3))
    for stride, padding in [(1, 1), (2, 0), (2, 1)]:
        y = exact_conv(x.astype(np.float32), w, stride=stride, padding=padding)
        assert y.dtype == np.float64
        np.testing.assert_array_equal(y, int64_conv(x, w, stride, padding))


def test_sums_past_float32s_integers_are_split_and_stay_exact():
    """All inputs 255 (one 254) and all weights 127 over 4608 rows: sums up to 149,230,080,
    far past 2**24; the corner output of channel 0 is odd (127 x (255 x 2048 - 1)), which
    float32 cannot hold, so one float32 convolution must round it (whatever its summation
    order, unlike an all-255 input whose sums may happen to be representable); the
    digit-half split does not round."""
    x = np.full((2, 512, 4, 4), 255.0, dtype=np.float32)
    x[:, 0, 0, 0] = 254.0
    w = np.full((4, 512, 3, 3), 127)
    w[1] = -128
    w[2, :, 1, 1] = 0
    want = int64_conv(x.astype(np.int64), w, padding=1)
    assert np.abs(want).max() > 2**27
    naive = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(
        w.astype(np.float32)), padding=1).numpy().astype(np.int64)
    assert not np.array_equal(naive, want)                 # the bug the bound prevents
    np.testing.assert_array_equal(exact_conv(x, w, padding=1), want)
    # Random full-range data at the same size: the Cauchy-Schwarz or split path, exact.
    rng = np.random.default_rng(1)
    x = rng.integers(-128, 128, (2, 512, 5, 5))
    w = rng.integers(-128, 128, (6, 512, 3, 3))
    np.testing.assert_array_equal(exact_conv(x.astype(np.float32), w, padding=1),
                                  int64_conv(x, w, padding=1))


def test_grouped_and_depthwise_convolutions_are_exact():
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, (2, 8, 6, 6))
    for groups, w_shape in [(8, (8, 1, 3, 3)), (2, (6, 4, 3, 3))]:
        w = rng.integers(-127, 128, w_shape)
        np.testing.assert_array_equal(
            exact_conv(x.astype(np.float32), w, padding=1, groups=groups),
            int64_conv(x, w, padding=1, groups=groups))


def test_sums_too_large_even_when_split_are_refused():
    """16-bit inputs and weights over 4608 rows: even digit halves overflow 2**24."""
    x = np.full((1, 512, 3, 3), 40000.0, dtype=np.float32)
    w = np.full((2, 512, 3, 3), 30000)
    assert exact_conv(x, w, padding=1) is None


def test_no_result_when_torch_would_round():
    """Without oneDNN torch takes NNPACK (Winograd/FFT transforms, which round), and oneDNN
    may be told to multiply in bf16: exact_conv answers None rather than a number it cannot
    vouch for."""
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (16, 8, 8, 8)).astype(np.float32)
    w = rng.integers(-127, 128, (8, 8, 3, 3))
    # (ignore torch's note that TF32 on oneDNN is for Intel GPUs)
    with warnings.catch_warnings(action="ignore"), torch.backends.mkldnn.flags(enabled=False):
        backend = torch._C._select_conv_backend(
            torch.from_numpy(x), torch.from_numpy(w.astype(np.float32)), None, [1, 1], [1, 1],
            [1, 1], False, [0, 0], 1, None).name
        y = exact_conv(x, w, padding=1)
    if backend.startswith("Nnpack"):
        assert y is None
    else:                              # a build without NNPACK: the GEMM fallback, exact
        np.testing.assert_array_equal(y, int64_conv(x.astype(np.int64), w, padding=1))
    # nor when the user lets oneDNN multiply in bf16
    conv = torch.backends.mkldnn.conv
    before = conv.fp32_precision
    try:
        conv.fp32_precision = "bf16"
        assert exact_conv(x, w, padding=1) is None
    finally:
        conv.fp32_precision = before
    np.testing.assert_array_equal(exact_conv(x, w, padding=1),
                                  int64_conv(x.astype(np.int64), w, padding=1))


def test_executor_and_ideal_crossbars_give_the_im2col_integers():
    """The quantized executor (direct convolution) equals an integer hook that sees the
    im2col products; the ideal-crossbar shortcut equals the bit-serial ADC path and counts
    the same ADC reads."""
    from chipforge.accelerators import get_accelerator
    from chipforge.mappings.placement import place
    from chipforge.sim.reram import CrossbarMatmul
    from chipforge.zoo import load
    from chipforge.zoo.data import digits

    graph = load("lenet-digits")
    x = digits(graph.input_shape[-1]).x_test[:12].reshape(-1, *graph.input_shape)

    def int64_hook(node, x_q, w_q):
        return x_q.astype(np.int64) @ w_q.astype(np.int64)

    direct = run_graph(graph, x)
    np.testing.assert_array_equal(direct, run_graph(graph, x, matmul=int64_hook))
    isaac = get_accelerator("isaac")
    mapped = place(graph, isaac.replace(name="isaac-wide-adc", adc_bits=isaac.adc_bits + 8))
    fast, slow = CrossbarMatmul(mapped), CrossbarMatmul(mapped, fast_path=False)
    assert all(fast.exact_weights(n) is not None for n in graph.weighted_nodes())
    np.testing.assert_array_equal(run_graph(graph, x, matmul=fast), direct)
    np.testing.assert_array_equal(run_graph(graph, x, matmul=slow), direct)
    assert fast.report["adc_reads"] == slow.report["adc_reads"] > 0


def _conv_calls(monkeypatch):
    """Record the float32 convolutions exact_conv runs (the patch-norm box sum is float64)."""
    calls = []
    real = torch.nn.functional.conv2d

    def spy(x, w, *args, **kwargs):
        if w.dtype == torch.float32:
            calls.append(tuple(w.shape))
        return real(x, w, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "conv2d", spy)
    return calls


@pytest.mark.parametrize("channels,split", [(57, False), (59, True)])
def test_the_bound_just_below_and_just_above_2_pow_24(monkeypatch, channels, split):
    """All inputs 255 and all weights +-127 over 9 x C rows: every sum is +-255 * 127 * 9C,
    odd. C = 57: 16,613,505 < 2**24, one float32 convolution holds it exactly. C = 59:
    17,196,435 > 2**24, an odd integer float32 cannot hold: only the digit-half split (two
    convolutions) gives it; a bound loosened past 2**24 would answer a rounded number."""
    x = np.full((1, channels, 3, 3), 255.0, dtype=np.float32)
    w = np.full((2, channels, 3, 3), 127)
    w[1] = -127
    want = int64_conv(x.astype(np.int64), w)
    assert abs(int(want[0, 0, 0, 0])) == 255 * 127 * 9 * channels
    assert (abs(int(want[0, 0, 0, 0])) > 2**24) == split
    calls = _conv_calls(monkeypatch)
    got = exact_conv(x, w)
    np.testing.assert_array_equal(got, want)
    assert len(calls) == (2 if split else 1)


def test_random_sums_between_2_pow_24_and_2_pow_27_are_exact():
    """128 outputs whose sums lie between 2**24 and 2**27 (random inputs 200..255, weights
    100..127, 75 x 9 rows): exact against int64, while one plain
    float32 convolution gets some of them wrong."""
    rng = np.random.default_rng(5)
    x = rng.integers(200, 256, (1, 75, 10, 10))
    w = rng.integers(100, 128, (2, 75, 3, 3))
    w[1] *= -1
    want = int64_conv(x, w)
    assert want.size == 128 and np.all(np.abs(want) > 2**24)
    assert np.abs(want).max() < 2**27
    naive = torch.nn.functional.conv2d(torch.from_numpy(x.astype(np.float32)),
                                       torch.from_numpy(w.astype(np.float32))).numpy()
    assert not np.array_equal(naive.astype(np.int64), want)
    np.testing.assert_array_equal(exact_conv(x.astype(np.float32), w), want)


def test_exact_product_below_and_above_its_bounds():
    """The matmul path (exact_product / exact_int_matmul): one float32 GEMM below 2**24, the
    digit-half split above it, float64 above the split's bound, exact Python integers above
    2**53; every result equal to int64 (or Python int) arithmetic."""
    from chipforge.sim.executor import exact_int_matmul, exact_product
    from chipforge.sim.graph import Node, Op

    node = Node(Op.LINEAR, "fc", ("input",), {}, {"weight": np.zeros((1, 1))})
    for k in (513, 531):                       # 255 * 127 * k: below / above 2**24, odd
        x = np.full((3, k), 255, dtype=np.int64)
        w = np.full((k, 2), 127, dtype=np.int64)
        w[:, 1] = -127
        y = exact_product(node, x, w)
        np.testing.assert_array_equal(y, x @ w)
        assert (abs(int((x @ w)[0, 0])) > 2**24) == (k == 531)
    # Digit halves of weights 120 (w_lo = -8, w_hi = 8) and one 127 (-1, 8) over 9000 rows:
    # the low half's sums, -255 x (8 x 8999 + 1) = -18,358,215, are odd and past 2**24, so
    # the split in float32 would round them: exact_product must take float64 here.
    x = np.full((3, 9000), 255, dtype=np.int64)
    w = np.full((9000, 2), 120, dtype=np.int64)
    w[0] = 127
    w[:, 1] *= -1
    np.testing.assert_array_equal(exact_product(node, x, w), x @ w)
    rng = np.random.default_rng(6)             # 16-bit operands: the float64 GEMM
    x = rng.integers(-40000, 40000, (4, 531))
    w = rng.integers(-30000, 30000, (531, 3))
    np.testing.assert_array_equal(exact_product(node, x, w), x @ w)
    x = np.full((2, 4), 1 << 30, dtype=np.int64) + 1     # sums past 2**53: no float answer
    w = np.full((4, 2), (1 << 22) + 1, dtype=np.int64)
    assert exact_product(node, x, w) is None
    want = [[sum(int(a) * int(b) for a, b in zip(row, col, strict=True))
             for col in w.T] for row in x]
    np.testing.assert_array_equal(exact_int_matmul(node, x, w), np.array(want, dtype=np.int64))


def test_exact_product_takes_one_float32_gemm_by_the_norm_bound():
    """Activations mostly below full scale (as after a ReLU) pass the Cauchy-Schwarz bound
    though max|x| max|w| K is past 2**24: one float32 GEMM, still exact; a row at full
    scale against full-scale weights does not pass it (its sums are past 2**24)."""
    from chipforge.sim.executor import _fits_by_norms, exact_product
    from chipforge.sim.graph import Node, Op

    node = Node(Op.LINEAR, "fc", ("input",), {}, {"weight": np.zeros((1, 1))})
    rng = np.random.default_rng(3)
    k = 4608
    x = np.where(rng.random((64, k)) < 0.6, 0, rng.integers(0, 64, (64, k)))
    x[0, :5] = 255                                   # max|x| at full scale
    w = rng.integers(-127, 128, (k, 32))
    assert 255 * 127 * k > 2**24 and _fits_by_norms(x, w)
    np.testing.assert_array_equal(exact_product(node, x, w), x @ w)
    full = np.full((2, 531), 255, dtype=np.int64)    # sums 255 * 127 * 531 > 2**24, odd
    assert not _fits_by_norms(full, np.full((531, 2), 127, dtype=np.int64))
