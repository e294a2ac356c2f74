"""Graph-level compression passes: ``pass(graph, ..., dataset) -> graph``.

Thin wrappers that convert a float :class:`~chipforge.sim.graph.Graph` to torch
(:func:`~chipforge.mappings.torch_export.to_module` for a chain,
:class:`~chipforge.mappings.torch_export.GraphModule` for any other graph the executor
runs; both keep existing zeros as pruning masks and existing fragment signs), run the
torch pass of :mod:`chipforge.mappings`, and export the result
(:func:`~chipforge.mappings.torch_export.to_graph`, or the same graph with the trained
weights for a non-chain graph). Apply them in
FORMS's order: prune, polarize, quantize (quantization is the last pass: the first two
take float graphs). ``dataset`` is a :class:`chipforge.zoo.data.Dataset` whose input shape
matches the graph.
"""

from __future__ import annotations

from collections.abc import Mapping

from chipforge.mappings.admm import AdmmConfig, admm_prune
from chipforge.mappings.polarize import PolarizeConfig, admm_polarize
from chipforge.mappings.quantize import QuantizeConfig, prepare_qat
from chipforge.mappings.torch_export import (
    GraphModule,
    graph_from_module,
    graph_module,
    to_graph,
    to_module,
)
from chipforge.mappings.train import TrainData, train
from chipforge.sim.graph import Graph

__all__ = ["polarize", "prune", "quantize"]


def _check(graph: Graph, dataset, what: str) -> TrainData:
    if tuple(dataset.input_shape) != graph.input_shape:
        raise ValueError(f"{what}: dataset inputs have shape {dataset.input_shape}, graph "
                         f"{graph.name!r} expects {graph.input_shape}")
    if what != "quantize" and any(n.quantized for n in graph.weighted_nodes()):
        raise ValueError(f"{what}: graph {graph.name!r} is already quantized; {what} takes a "
                         "float graph (quantize last, as FORMS does)")
    return TrainData(dataset)


def _torch(graph: Graph):
    """``to_module`` for a chain graph (as before), a GraphModule for any other."""
    chain = all(n.inputs == ((graph.nodes[i - 1].name if i else "input"),)
                for i, n in enumerate(graph.nodes))
    return to_module(graph) if chain else graph_module(graph)


def _export(model, graph: Graph) -> Graph:
    if isinstance(model, GraphModule):
        return graph_from_module(model, graph, quantize=True)
    return to_graph(model, graph.input_shape, name=graph.name, meta=graph.meta)


def prune(graph: Graph, ratios: float | Mapping[str, float], dataset,
          cfg: AdmmConfig | None = None, *, seed: int = 0) -> Graph:
    """ADMM unstructured pruning (ratios: fraction of zeros, per node name or for all)."""
    data = _check(graph, dataset, "prune")
    cfg = cfg or AdmmConfig()
    return _export(admm_prune(_torch(graph), data, _names(ratios), cfg, seed=seed), graph)


def polarize(graph: Graph, dataset, cfg: PolarizeConfig | None = None, *,
             seed: int = 0) -> Graph:
    """FORMS fragment polarization by ADMM (keeps the graph's zeros)."""
    data = _check(graph, dataset, "polarize")
    cfg = cfg or PolarizeConfig()
    return _export(admm_polarize(_torch(graph), data, cfg, seed=seed), graph)


def quantize(graph: Graph, dataset, cfg: QuantizeConfig | None = None, *,
             seed: int = 0) -> Graph:
    """Activation calibration + ``cfg.qat_epochs`` of quantization-aware fine-tuning
    (zeros and fragment signs held); 0 epochs = post-training quantization."""
    data = _check(graph, dataset, "quantize")
    cfg = cfg or QuantizeConfig()
    model = prepare_qat(_torch(graph), data.x_train, cfg)
    if cfg.qat_epochs:
        train(model, data, epochs=cfg.qat_epochs, lr=cfg.qat_lr, seed=seed, constrained=True)
    return _export(model, graph)


def _names(ratios):
    """Graph node names use dots for nested modules; to_module names them with '_'."""
    if isinstance(ratios, int | float):
        return ratios
    return {k.replace(".", "_"): v for k, v in ratios.items()}
