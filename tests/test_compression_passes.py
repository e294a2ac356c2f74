"""ADMM pruning, FORMS polarization, QAT and ISQED progressive pruning on a small MLP.

Each pass changes the model by design, so the checks are: the constraint holds exactly in
the exported graph, the previous constraints survive, and the accuracy of the quantized
graph (run_graph, ideal hardware) stays within a stated bound of the model before it.
"""

import copy
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from chipforge.mappings.admm import AdmmConfig, admm_prune, prune_projection, sparsity
from chipforge.mappings.polarize import PolarizeConfig, admm_polarize, polarize_graph
from chipforge.mappings.progressive import ProgressiveConfig, progressive_prune, size_blocks
from chipforge.mappings.quantize import QuantizeConfig, prepare_qat
from chipforge.mappings.torch_export import to_graph
from chipforge.mappings.train import TrainData, seed_everything, torch_accuracy, train
from chipforge.sim.compression import compression_stats
from chipforge.sim.executor import run_graph
from chipforge.sim.fragments import check_polarized
from chipforge.zoo.data import digits

FAST = AdmmConfig(epochs=6, finetune_epochs=6, finetune_lr=1e-3)


@pytest.fixture(scope="module")
def data():
    return TrainData(digits())


@pytest.fixture(scope="module")
def dense(data):
    seed_everything(0)
    m = nn.Sequential(OrderedDict([("flatten", nn.Flatten()), ("fc1", nn.Linear(64, 48)),
                                   ("relu1", nn.ReLU()), ("fc2", nn.Linear(48, 10))]))
    return train(m, data, epochs=15, lr=3e-3, seed=0)


@pytest.fixture(scope="module")
def pruned(data, dense):
    return admm_prune(copy.deepcopy(dense), data, {"fc1": 0.8, "fc2": 0.5}, FAST, seed=1)


def _graph_accuracy(model, data, quantized=True):
    g = to_graph(model, (1, 8, 8), quantize=quantized)
    ds = data.dataset
    return float((run_graph(g, ds.x_test, quantized=quantized).argmax(1) == ds.y_test).mean())


def test_prune_projection_keeps_the_largest_magnitudes():
    v = torch.tensor([[0.1, -3.0, 0.2], [2.0, -0.05, 1.0]])
    np.testing.assert_array_equal(prune_projection(0.5)(v).numpy(),
                                  [[0.0, -3.0, 0.0], [2.0, 0.0, 1.0]])
    with pytest.raises(ValueError, match="pruning ratio"):
        prune_projection(1.5)


def test_admm_pruning_hits_the_ratios_and_keeps_accuracy(data, dense, pruned):
    g = to_graph(pruned, (1, 8, 8), quantize=False)
    assert np.mean(g.node("fc1").params["weight"] == 0) == pytest.approx(0.8, abs=1e-3)
    assert np.mean(g.node("fc2").params["weight"] == 0) == pytest.approx(0.5, abs=1e-3)
    # bound: 80 % unstructured pruning of this MLP costs < 3 points (digits test split)
    assert _graph_accuracy(pruned, data, False) >= _graph_accuracy(dense, data, False) - 0.03


def test_polarization_holds_keeps_zeros_and_accuracy(data, pruned):
    cfg = PolarizeConfig(fragment_size=8, sign_update_every=2, admm=FAST)
    pol = admm_polarize(copy.deepcopy(pruned), data, cfg, seed=2)
    g = to_graph(pol, (1, 8, 8), quantize=False)
    gp = to_graph(pruned, (1, 8, 8), quantize=False)
    for node in g.weighted_nodes():
        w, signs = node.params["weight"], node.params["fragment_signs"]
        assert signs.dtype == np.int8 and set(np.unique(signs)) <= {-1, 1}
        assert node.attrs["fragment_size"] == 8 and node.attrs["fragment_order"] == "w-major"
        assert check_polarized(w, signs, 8, "w-major") == 0
        assert not w[gp.node(node.name).params["weight"] == 0].any()   # pruned zeros stay
    assert compression_stats(g).polarized
    # one-shot polarization of an already polarized graph changes nothing
    again = polarize_graph(g, 8, "w-major")
    for a, b in zip(g.weighted_nodes(), again.weighted_nodes(), strict=True):
        np.testing.assert_array_equal(a.params["weight"], b.params["weight"])
    # bound: polarization at fragment 8 of the pruned MLP costs < 3 points
    assert _graph_accuracy(pol, data, False) >= _graph_accuracy(pruned, data, False) - 0.03


def test_qat_preserves_zeros_and_polarization(data, pruned):
    pol = admm_polarize(copy.deepcopy(pruned), data,
                        PolarizeConfig(fragment_size=4, admm=FAST), seed=3)
    q = copy.deepcopy(pol)
    prepare_qat(q, data.x_train, QuantizeConfig())
    train(q, data, epochs=3, lr=3e-4, seed=4, constrained=True)
    g, gf = to_graph(q, (1, 8, 8)), to_graph(pol, (1, 8, 8), quantize=False)
    stats = compression_stats(g)
    assert stats.polarized and stats.quantization_factor == 4.0
    for node in g.weighted_nodes():
        assert node.quantized
        assert not node.params["weight"][gf.node(node.name).params["weight"] == 0].any()
    # bound: 8-bit QAT costs < 2 points against the float polarized model
    assert _graph_accuracy(q, data) >= _graph_accuracy(pol, data, False) - 0.02


def test_progressive_pruning_follows_algorithm_1(data, dense):
    """Algorithm 1 with a scripted evaluate(): accuracy holds while every layer is at most
    60 % sparse, so 0.3 and 0.5 are accepted, 0.7 fails twice (popping both blocks)."""
    assert size_blocks(dense) == [["fc2"], ["fc1"]]

    def evaluate(model):
        layers = [m for m in model.modules() if isinstance(m, nn.Linear)]
        worst = max(float((m.weight == 0).float().mean()) for m in layers)
        return 0.95 if worst <= 0.6 else 0.5

    cfg = ProgressiveConfig(threshold=0.01, ratios=(0.3, 0.5, 0.7, 0.9),
                            admm=AdmmConfig(epochs=1, finetune_epochs=1))
    result = progressive_prune(dense, data, cfg, evaluate=evaluate)
    steps = [(h["ratio"], [b[0] for b in h["blocks"]], h["accepted"]) for h in result.history]
    assert steps == [(0.3, ["fc2", "fc1"], True), (0.5, ["fc2", "fc1"], True),
                     (0.7, ["fc2", "fc1"], False), (0.7, ["fc1"], False)]
    assert result.ratios == {"fc1": 0.5, "fc2": 0.5}
    assert sparsity(result.model) == pytest.approx(0.5, abs=0.01)


def test_progressive_pruning_with_clean_accuracy(data, dense):
    cfg = ProgressiveConfig(threshold=0.02, ratios=(0.5, 0.8), admm=FAST)
    result = progressive_prune(dense, data, cfg)
    assert result.reference_accuracy - result.accuracy < 0.02
    assert result.accuracy == torch_accuracy(result.model, data.x_test, data.y_test)
    assert sparsity(result.model) >= 0.5 - 0.01


def test_graph_level_passes_chain_prune_polarize_quantize(data, dense):
    from chipforge.mappings import passes

    ds = data.dataset
    g = to_graph(dense, (1, 8, 8), name="mlp", meta={"note": "kept"})
    gp = passes.prune(g, 0.7, ds, FAST, seed=5)
    gpol = passes.polarize(gp, ds, PolarizeConfig(fragment_size=8, admm=FAST), seed=6)
    gq = passes.quantize(gpol, ds, QuantizeConfig(qat_epochs=2), seed=7)
    assert gq.name == "mlp" and gq.meta == {"note": "kept"}
    stats = compression_stats(gq)
    assert stats.polarized and stats.quantization_factor == 4.0
    assert stats.sparsity >= 0.7 - 0.01                  # zeros survive polarize + quantize
    acc = float((run_graph(gq, ds.x_test).argmax(1) == ds.y_test).mean())
    dense_acc = float((run_graph(g, ds.x_test, quantized=False).argmax(1) == ds.y_test).mean())
    assert acc >= dense_acc - 0.04      # bound: the whole chain costs < 4 points here
    with pytest.raises(ValueError, match="already quantized"):
        passes.prune(gq, 0.5, ds)
    with pytest.raises(ValueError, match="dataset inputs have shape"):
        passes.prune(g, 0.5, digits(16))


def test_constraints_follow_new_fragment_signs_after_a_projection_with_old_ones():
    """Constrained training projects after every step with each layer's fragment signs
    (expanded once per sign set, not per step): new signs, whether a new buffer or written
    in place, must take effect at the next projection."""
    from chipforge.mappings.polarize import set_fragment_signs
    from chipforge.mappings.train import apply_constraints
    from chipforge.sim.fragments import FragmentOrder

    layer = nn.Linear(8, 2)                          # 8 rows: 2 fragments of 4 per column
    model = nn.Sequential(OrderedDict([("fc", layer)]))
    values = torch.tensor([[1., -2., 3., -4., 5., -6., 7., -8.]] * 2)
    positive = np.ones((2, 2), dtype=np.int8)
    set_fragment_signs(layer, positive, 4, FragmentOrder.W_MAJOR)
    with torch.no_grad():
        layer.weight.copy_(values)
    apply_constraints(model)                         # every fragment +: negatives zeroed
    assert (layer.weight >= 0).all() and (layer.weight > 0).sum() == 8

    set_fragment_signs(layer, -positive, 4, FragmentOrder.W_MAJOR)   # a new buffer
    with torch.no_grad():
        layer.weight.copy_(values)
    apply_constraints(model)
    assert (layer.weight <= 0).all() and (layer.weight < 0).sum() == 8

    with torch.no_grad():
        layer.fragment_signs[:, 1] = 1                # in place: the second fragment turns +
        layer.weight.copy_(values)
    apply_constraints(model)
    w = layer.weight.detach()
    assert (w[:, :4] <= 0).all() and (w[:, 4:] >= 0).all()
    assert w[0].tolist() == [0., -2., 0., -4., 5., 0., 7., 0.]
