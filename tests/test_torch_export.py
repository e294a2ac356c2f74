from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from chipforge.mappings.quantize import QuantizeConfig, prepare_qat, quantize_graph
from chipforge.mappings.torch_export import to_graph, to_module
from chipforge.sim.executor import integer_weights, run_graph
from chipforge.sim.graph import Op


def _model():
    torch.manual_seed(0)
    m = nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(2, 4, 3, padding=1)), ("bn1", nn.BatchNorm2d(4)),
        ("relu1", nn.ReLU()), ("pool1", nn.MaxPool2d(2)),
        ("block", nn.Sequential(nn.Conv2d(4, 6, 3, stride=1, padding=1, groups=2),
                                nn.ReLU(), nn.AvgPool2d(2))),
        ("conv3", nn.Conv2d(6, 8, 1)), ("gap", nn.AdaptiveAvgPool2d(1)),
        ("flatten", nn.Flatten()), ("drop", nn.Dropout(0.5)),
        ("fc1", nn.Linear(8, 16)), ("bn2", nn.BatchNorm1d(16)), ("relu2", nn.ReLU()),
        ("fc2", nn.Linear(16, 5)),
    ]))
    for bn in (m.bn1, m.bn2):      # non-trivial running statistics to fold
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.2, 0.2)
    return m.eval()


def test_float_export_matches_torch_with_batchnorm_folded():
    m = _model()
    x = torch.rand(32, 2, 8, 12)
    g = to_graph(m, (2, 8, 12), name="t")
    assert [n.op for n in g.nodes].count(Op.BATCHNORM) == 0
    assert [n.name for n in g.weighted_nodes()] == ["conv1", "block.0", "conv3", "fc1", "fc2"]
    with torch.no_grad():
        ref = m(x).double().numpy()
    np.testing.assert_allclose(run_graph(g, x.numpy(), quantized=False), ref, atol=1e-5)
    back = to_module(g)                        # and back to torch: same function
    with torch.no_grad():
        np.testing.assert_allclose(back(x).double().numpy(), ref, atol=1e-5)


def test_unsupported_layers_are_named():
    with pytest.raises(ValueError, match="'1' is a Tanh"):
        to_graph(nn.Sequential(nn.Linear(3, 3), nn.Tanh()), (3,))
    with pytest.raises(ValueError, match="differs per axis"):
        to_graph(nn.Sequential(nn.Conv2d(1, 1, 3, stride=(2, 1))), (1, 5, 5))


def _mlp_with_data():
    torch.manual_seed(1)
    m = nn.Sequential(OrderedDict([("fc1", nn.Linear(10, 32)), ("relu", nn.ReLU()),
                                   ("fc2", nn.Linear(32, 4))])).eval()
    x = torch.randn(200, 10)
    return m, x


def test_qat_model_and_quantized_graph_compute_the_same_function():
    """The torch fake-quantized forward (float32) and run_graph's exact integer model agree:
    same argmax on >= 99 % of inputs and logits within 2 % of their range (the float32
    vs float64 rounding of an activation can land on the other side of a rounding step)."""
    m, x = _mlp_with_data()
    prepare_qat(m, x, QuantizeConfig())
    g = to_graph(m, (10,))
    for node in g.weighted_nodes():
        assert node.quantized and node.attrs["weight_bits"] == 8
        q = integer_weights(node)
        assert q.min() >= -127 and q.max() <= 127
    assert g.node("fc1").attrs["act_signed"] and not g.node("fc2").attrs["act_signed"]
    with torch.no_grad():
        ref = m(x).double().numpy()
    y = run_graph(g, x.numpy())
    assert (y.argmax(1) == ref.argmax(1)).mean() >= 0.99
    assert np.abs(y - ref).max() <= 0.02 * (ref.max() - ref.min())


def test_post_training_quantization_of_a_graph_stays_close_to_float():
    m, x = _mlp_with_data()
    g = to_graph(m, (10,))
    gq = quantize_graph(g, x.numpy(), QuantizeConfig(per_channel=False))
    assert all(n.quantized for n in gq.weighted_nodes())
    yf = run_graph(g, x.numpy(), quantized=False)
    yq = run_graph(gq, x.numpy())
    assert np.abs(yq - yf).max() <= 0.02 * (yf.max() - yf.min())
    assert (yq.argmax(1) == yf.argmax(1)).mean() >= 0.97
