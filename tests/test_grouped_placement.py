"""Grouped and depthwise convolutions on the ReRAM presets: placed block-diagonally (each
group's weights in rows and columns of their own), computed exactly on ideal crossbars
(fast path and the full bit-serial path), counted by the placement and the cycle model."""

from __future__ import annotations

import numpy as np
import pytest

from chipforge.mappings.placement import place
from chipforge.sim.cycle.arch import ISAAC as ISAAC_ARCH
from chipforge.sim.cycle.model import capture_workloads, simulate_cycles
from chipforge.sim.devices import IDEAL_DEVICE
from chipforge.sim.executor import block_diagonal_weights, run_graph
from chipforge.sim.graph import Graph, Node, Op
from chipforge.sim.reram import CrossbarMatmul


def grouped_net(groups=4, channels=8, seed=0):
    """conv 1x1 (dense) -> depthwise/grouped 3x3 -> linear, 8-bit integer weights."""
    rng = np.random.default_rng(seed)
    q = dict(weight_bits=8, act_bits=8, act_signed=False)
    w1 = rng.integers(-127, 128, (channels, 2, 1, 1)) * 0.01
    w2 = rng.integers(-127, 128, (channels, channels // groups, 3, 3)) * 0.01
    w3 = rng.integers(-127, 128, (3, channels * 16)) * 0.01
    return Graph(f"grouped{groups}", (2, 4, 4), [
        Node(Op.CONV2D, "pw", ("input",), dict(stride=1, padding=0) | q
             | dict(weight_scale=0.01, act_scale=1 / 64), {"weight": w1}),
        Node(Op.RELU, "r1", ("pw",)),
        Node(Op.CONV2D, "dw", ("r1",), dict(stride=1, padding=1, groups=groups) | q
             | dict(weight_scale=0.01, act_scale=1 / 16), {"weight": w2,
                                                          "bias": rng.normal(size=channels)}),
        Node(Op.RELU, "r2", ("dw",)),
        Node(Op.FLATTEN, "f", ("r2",)),
        Node(Op.LINEAR, "fc", ("f",), q | dict(weight_scale=0.01, act_scale=1 / 8),
             {"weight": w3})])


def test_block_diagonal_weights_are_the_grouped_convolution():
    graph = grouped_net(groups=4)
    node = graph.node("dw")
    w = block_diagonal_weights(node)
    assert w.shape == (8 // 4 * 9 * 4, 8)
    assert np.count_nonzero(w) == np.count_nonzero(node.params["weight"])
    # block g holds group g's 2 output channels, over its 2 input channels' patches
    np.testing.assert_array_equal(w[18:36, 2:4], node.params["weight"][2:4].reshape(2, -1).T)
    assert not w[:18, 2:].any() and not w[18:36, :2].any()


@pytest.mark.parametrize("accel", ["isaac", "isqed-two-column", "isqed-differential",
                                   "forms8"])
@pytest.mark.parametrize("groups", [8, 2])          # depthwise, grouped
def test_grouped_conv_on_ideal_crossbars_equals_the_quantized_model(accel, groups):
    graph = grouped_net(groups=groups)
    x = np.random.default_rng(1).random((5, 2, 4, 4))
    want = run_graph(graph, x)
    if accel == "forms8":     # FORMS needs polarized fragments: a clear error, not a number
        with pytest.raises(ValueError, match="polariz|fragment"):
            run_graph(graph, x, matmul=CrossbarMatmul(place(graph, accel)))
        return
    mapped = place(graph, accel)
    for fast in (True, False):    # exact shortcut and the bit-serial ADC path
        got = run_graph(graph, x, matmul=CrossbarMatmul(mapped, fast_path=fast))
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)


def test_depthwise_packs_groups_into_shared_crossbars_and_counts_only_touched_tiles():
    channels = 64
    graph = grouped_net(groups=channels, channels=channels)
    dw = place(graph, "isaac").layers["dw"].stats
    # 64 groups of 9 rows x 1 output: 576 block-diagonal rows on 128x128 crossbars; each
    # group's block touches one or two row tiles and one column tile, so only the tiles on
    # the diagonal band are crossbars.
    assert dw.crossbars < dw.row_tiles * dw.col_tiles
    assert dw.crossbars >= dw.row_tiles
    assert dw.cells == 64 * 9 * (dw.cells // (64 * 9))
    dense = place(grouped_net(groups=1, channels=channels), "isaac").layers["dw"].stats
    assert dw.adc_reads_per_vector < dense.adc_reads_per_vector


def test_cycle_model_counts_grouped_convolutions():
    graph = grouped_net(groups=8)
    x = np.random.default_rng(2).random((2, 2, 4, 4))
    work = {w.name: w for w in capture_workloads(graph, x)}
    assert work["dw"].weights.shape == (8 * 9, 8)
    assert work["dw"].inputs.shape[1] == 8 * 9
    report = simulate_cycles(list(work.values()), ISAAC_ARCH, model=graph.name)
    layer = next(a for a in report.layers if a.name == "dw")
    assert layer.macs > 0 and layer.crossbars >= 1 and layer.vectors == 16


@pytest.mark.parametrize("groups", [1, 4])
def test_hook_gives_exact_weights_in_the_nodes_layout(groups):
    """CrossbarMatmul.exact_weights un-places the block-diagonal matrix: the executor's
    direct convolution gets a grouped convolution's weights as (O, C / groups, kh, kw)."""
    from chipforge.accelerators import get_accelerator
    from chipforge.sim.executor import integer_weights

    graph = grouped_net(groups=groups)
    isaac = get_accelerator("isaac")
    wide_adc = isaac.replace(name="isaac-wide-adc", adc_bits=isaac.adc_bits + 8)
    hook = CrossbarMatmul(place(graph, wide_adc))
    for node in graph.weighted_nodes():
        np.testing.assert_array_equal(hook.exact_weights(node), integer_weights(node))
    noisy = CrossbarMatmul(place(graph, wide_adc), IDEAL_DEVICE.replace(read_noise=0.01))
    assert all(noisy.exact_weights(node) is None for node in graph.weighted_nodes())
