"""Token selectors as an IR node kind: the float executor prunes tokens per image (a mask
that equals removing them), the ViT zoo files are ordinary graphs, and the graph <-> engine
lowering is checked."""

import dataclasses

import numpy as np
import pytest
import torch

from chipforge.sim.executor import run_graph, token_scores
from chipforge.sim.graph import Graph, Node, Op, load_graph, save_graph
from chipforge.sim.vit import run_vit
from chipforge.sim.vit_graph import graph_to_vit, vit_to_graph
from chipforge.zoo.data import digits
from chipforge.zoo.vit import VitConfig, VitModel, _torch_model, load_vit


def _random_vit(selector_blocks=(1,), keep_ratios=(0.5,), thresholds=(0.5,), seed=0):
    config = VitConfig(dim=16, heads=2, depth=2, mlp_hidden=24, selector_blocks=selector_blocks,
                       keep_ratios=keep_ratios, keep_thresholds=thresholds)
    torch.manual_seed(seed)
    net = _torch_model(config)
    params = {k: v.detach().numpy().astype(np.float32) for k, v in net.state_dict().items()}
    params["pos_embed"] = params["pos_embed"] * 20          # varied tokens, varied scores
    return VitModel(config, params, {}, "tiny"), net


def test_bundled_keep50_graph_equals_the_engine_float_model_image_by_image():
    data = digits(8)
    model = load_vit("vit-digits-keep50")
    graph = vit_to_graph(model)
    out = run_graph(graph, data.x_test, quantized=False, return_all=True)
    ref = run_vit(model, data.x_test, fixed=False)   # appends package tokens: another layout
    np.testing.assert_allclose(out[graph.output_name], ref.logits, atol=1e-9)
    for s in range(2):
        kept = (out[f"selector.{s}:live"] & out[f"selector.{s}:candidate"]).sum(1)
        assert np.array_equal(kept, ref.kept[:, s])
        assert kept.std() > 0                             # image-adaptive
    assert ref.kept[:, 1].mean() < 0.5 * 16


def test_masked_tokens_are_the_same_as_removed_tokens():
    """Per image, the kept tokens and the package token, gathered into a shorter sequence
    and run through the torch block without any mask, give the graph's logits."""
    model, net = _random_vit()
    graph = vit_to_graph(model)
    x = np.random.default_rng(1).random((12, 1, 8, 8))
    out = run_graph(graph, x, quantized=False, return_all=True)
    sel = graph.node("selector.0")          # threshold at the median score: about half pruned
    sel.attrs["threshold"] = float(np.median(token_scores(sel, out[sel.inputs[0]])[:, 1:]))
    out = run_graph(graph, x, quantized=False, return_all=True)
    live = out["selector.0:live"]
    assert 1 < live.sum(1).min() and live.sum(1).max() < 17 and live.sum(1).std() > 0
    net.eval()
    before = out[sel.inputs[0]]
    score = token_scores(sel, before)
    pruned = score < sel.attrs["threshold"]
    pruned[:, 0] = False                                    # the class token stays
    for i in range(len(x)):
        tokens = torch.tensor(out["selector.0"][i, live[i]][None], dtype=torch.float32)
        with torch.no_grad():
            y = net.blocks[1](tokens, torch.ones(1, tokens.shape[1]))
            logits = net.head(net.norm(y[:, 0]))[0].numpy()
        np.testing.assert_allclose(logits, out[graph.output_name][i], rtol=1e-4, atol=1e-4)
        # The package (score-weighted mean of the pruned tokens, Eq. 10) sits in the slot
        # of the first pruned token; the other pruned slots are dead.
        rows = np.flatnonzero(pruned[i])
        assert live[i].sum() == 17 - len(rows) + 1
        weights = np.where(pruned[i], score[i], 0)
        np.testing.assert_allclose(out["selector.0"][i, rows[0]],
                                   weights @ before[i] / weights.sum(), rtol=1e-9)
        assert not live[i, rows[1:]].any() and live[i, rows[0]]


def test_graph_with_selectors_saves_without_pickle_and_lowers_back(tmp_path):
    model, _ = _random_vit((0, 1), (0.7, 0.5), (0.45, 0.55))
    graph = vit_to_graph(model)
    path = save_graph(graph, tmp_path / "vit.npz")
    with np.load(path, allow_pickle=False) as f:           # no object arrays inside
        assert all(f[k].dtype != object for k in f.files)
    again = load_graph(path)
    assert [n.attrs for n in again.nodes] == [n.attrs for n in graph.nodes]
    lowered = graph_to_vit(again)
    assert lowered.config == model.config
    x = np.random.default_rng(2).random((5, 1, 8, 8))
    np.testing.assert_allclose(run_graph(again, x, quantized=False),
                               run_vit(lowered, x, fixed=False).logits, atol=1e-9)


def test_bad_token_selectors_are_clear_errors():
    model, _ = _random_vit((0, 1), (0.7, 0.5), (0.45, 0.55))
    graph = vit_to_graph(model)

    def broken(edit):
        g = graph.copy()
        edit(g)
        with pytest.raises(ValueError) as err:
            Graph(g.name, g.input_shape, g.nodes, g.output, g.meta)
        return str(err.value)

    assert "lacks fc2_bias" in broken(lambda g: g.node("selector.0").params.pop("fc2_bias"))
    assert "threshold must be in [0, 1], not 2" in broken(
        lambda g: g.node("selector.0").attrs.update(threshold=2))
    assert "heads=3 must divide" in broken(lambda g: g.node("selector.0").attrs.update(heads=3))
    assert "not a token_select node before it" in broken(
        lambda g: g.node("blocks.0.attn").attrs.update(mask_from="blocks.0.norm1"))
    assert "only softmax, mean and token_select" in broken(
        lambda g: g.node("blocks.1.fc1").attrs.update(mask_from="selector.0"))
    with pytest.raises(ValueError, match="is not a ViT the HeatViT engine runs"):
        graph_to_vit(load_graph_or_zoo("lenet-digits"))
    scaled = graph.copy()                     # attention scaled otherwise: caught by the check
    scaled.node("blocks.1.scale").params["constant"] = np.array(1.0, dtype=np.float32)
    with pytest.raises(ValueError, match="differs from the graph's"):
        graph_to_vit(scaled)


def load_graph_or_zoo(name):
    from chipforge import zoo

    return zoo.load(name)


def test_selector_before_block_zero_and_without_keep_ratio():
    model, _ = _random_vit((0,), (1.0,), (0.5,))
    graph = vit_to_graph(model)
    del graph.node("selector.0").attrs["keep_ratio"]
    assert graph_to_vit(graph).config == dataclasses.replace(model.config)
    node = Node(Op.SOFTMAX, "s", ("input",), {"axis": 1, "mask_from": "x"})
    with pytest.raises(ValueError, match="mask_from"):
        Graph("g", (4,), [node])
