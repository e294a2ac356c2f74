"""The IR round-trips through .npz without pickle, and the numpy executor is right."""

import numpy as np
import pytest

from chipforge.sim.executor import integer_weights, run_graph
from chipforge.sim.graph import Graph, Node, Op, load_graph, save_graph


def small_cnn(rng, quantized=True):
    conv_w = rng.integers(-7, 8, (4, 1, 3, 3)) * 0.05
    fc_w = rng.integers(-127, 128, (3, 4 * 3 * 3)) * 0.01
    q = lambda ws, a_s, signed: dict(weight_bits=8, weight_scale=ws, act_bits=8,  # noqa: E731
                                     act_scale=a_s, act_signed=signed)
    nodes = [
        Node(Op.CONV2D, "conv", ("input",), dict(stride=1, padding=1) |
             (q(0.05, 1 / 16, False) if quantized else {}),
             {"weight": conv_w, "bias": rng.normal(size=4)}),
        Node(Op.RELU, "relu", ("conv",)),
        Node(Op.MAXPOOL2D, "pool", ("relu",), dict(kernel=2, stride=2)),
        Node(Op.FLATTEN, "flat", ("pool",)),
        Node(Op.LINEAR, "fc", ("flat",), q([0.01, 0.01, 0.01], 0.05, False) if quantized else {},
             {"weight": fc_w}),
    ]
    return Graph("tiny", (1, 6, 6), nodes, meta={"dataset": "random"})


def torch_reference(graph, x):
    import torch
    conv, fc = graph.node("conv"), graph.node("fc")
    t = torch.nn.functional.conv2d(torch.tensor(x), torch.tensor(conv.params["weight"]),
                                   torch.tensor(conv.params["bias"]), padding=1)
    t = torch.nn.functional.max_pool2d(torch.relu(t), 2).flatten(1)
    return (t @ torch.tensor(fc.params["weight"]).T).numpy()


def test_float_execution_matches_torch():
    rng = np.random.default_rng(0)
    graph = small_cnn(rng, quantized=False)
    x = rng.random((5, 1, 6, 6))
    np.testing.assert_allclose(run_graph(graph, x), torch_reference(graph, x), rtol=1e-10)


def test_quantized_execution_calls_the_integer_hook_with_integers():
    rng = np.random.default_rng(1)
    graph = small_cnn(rng)
    x = rng.random((3, 1, 6, 6))
    seen = []

    def hook(node, x_q, w_q):
        assert x_q.dtype == np.int64 and w_q.dtype == np.int64
        seen.append(node.name)
        return x_q @ w_q

    assert np.array_equal(run_graph(graph, x, matmul=hook), run_graph(graph, x))
    assert seen == ["conv", "fc"]
    # A hook that perturbs the product changes the result: the hook is really used.
    assert not np.array_equal(run_graph(graph, x, matmul=lambda n, a, b: a @ b + 1),
                              run_graph(graph, x))


def test_round_trip_without_pickle(tmp_path):
    rng = np.random.default_rng(2)
    graph = small_cnn(rng)
    path = save_graph(graph, tmp_path / "m.npz")
    loaded = load_graph(path)
    x = rng.random((2, 1, 6, 6))
    assert np.array_equal(run_graph(loaded, x), run_graph(graph, x))
    assert loaded.meta == {"dataset": "random"}
    assert np.array_equal(integer_weights(loaded.node("fc")), integer_weights(graph.node("fc")))


def test_corrupt_and_truncated_files_get_clear_errors(tmp_path):
    path = save_graph(small_cnn(np.random.default_rng(3)), tmp_path / "m.npz")
    data = path.read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        load_graph(tmp_path / "cut.npz")
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="not a chipforge graph"):
        load_graph(tmp_path / "other.npz")


def test_bad_graphs_are_rejected():
    with pytest.raises(ValueError, match="reads 'nope'"):
        Graph("g", (4,), [Node(Op.RELU, "r", ("nope",))])
    with pytest.raises(ValueError, match="used twice"):
        Graph("g", (4,), [Node(Op.RELU, "r", ("input",)), Node(Op.RELU, "r", ("input",))])
    with pytest.raises(ValueError, match="needs a 2-D weight"):
        Graph("g", (4,), [Node(Op.LINEAR, "fc", ("input",))])
