"""Compression statistics of a graph: sparsity, pruning ratio and FORMS's *idealized* factor.

FORMS (ISCA'21, accuracy table; papers.md §1.3) reports the crossbar reduction of a
compressed model against the 32-bit, unpruned, two-column (or offset) mapped original as
``pruning ratio x quantization factor x polarization factor``, e.g. LeNet-5 on MNIST
``23.18 x 4 x 2 = 185.44``:

- pruning ratio = all weights / non-zero weights (of the weighted layers);
- quantization factor = 32 / weight bits (weight-count-weighted over layers when they
  differ; unquantized layers count as 32-bit);
- polarization factor = 2 when every weighted layer is polarized (magnitudes on one
  crossbar plus a sign bit per fragment instead of a positive and a negative crossbar),
  else 1.

These are the paper's idealized weight-storage ratios (pruned weights take no cells), so
the product is called ``idealized_crossbar_reduction`` and is never reported as a count.
The crossbars a model needs are counted by the placement
(:func:`chipforge.mappings.placement.place`, which drops all-zero rows and outputs); for
FORMS' LeNet-5 on MNIST see :func:`chipforge.zoo.forms_mnist.crossbar_counts`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from chipforge.sim.fragments import check_polarized
from chipforge.sim.graph import Graph

__all__ = ["CompressionStats", "LayerStats", "compression_stats"]


@dataclass(frozen=True)
class LayerStats:
    name: str
    weights: int
    nonzero: int
    weight_bits: int
    """32 for an unquantized layer."""
    fragment_size: int | None
    fragment_order: str | None
    fragments: int
    """Number of (column, fragment) pairs, 0 when not polarized."""
    mixed_fragments: int
    """Fragments whose non-zero weights have both signs (0 for a valid polarized layer)."""


@dataclass(frozen=True)
class CompressionStats:
    layers: tuple[LayerStats, ...]

    @property
    def weights(self) -> int:
        return sum(layer.weights for layer in self.layers)

    @property
    def nonzero(self) -> int:
        return sum(layer.nonzero for layer in self.layers)

    @property
    def sparsity(self) -> float:
        """Fraction of zero weights."""
        return 1.0 - self.nonzero / self.weights

    @property
    def pruning_ratio(self) -> float:
        """All weights / non-zero weights (FORMS's 'prune ratio', e.g. 23.18x)."""
        return self.weights / max(self.nonzero, 1)

    @property
    def quantization_factor(self) -> float:
        return 32.0 * self.weights / sum(layer.weight_bits * layer.weights
                                         for layer in self.layers)

    @property
    def polarized(self) -> bool:
        return all(layer.fragment_size is not None and layer.mixed_fragments == 0
                   for layer in self.layers)

    @property
    def polarization_factor(self) -> float:
        return 2.0 if self.polarized else 1.0

    @property
    def idealized_crossbar_reduction(self) -> float:
        """pruning ratio x quantization factor x polarization factor: FORMS's *idealized*
        storage ratio (not a crossbar count; see the module doc)."""
        return self.pruning_ratio * self.quantization_factor * self.polarization_factor

    @property
    def crossbar_reduction(self) -> float:
        """Deprecated alias of :attr:`idealized_crossbar_reduction` (kept so that callers on
        other branches keep working): the paper's formula, **not** a crossbar count."""
        return self.idealized_crossbar_reduction

    def to_dict(self) -> dict:
        return {"weights": self.weights, "nonzero": self.nonzero, "sparsity": self.sparsity,
                "pruning_ratio": self.pruning_ratio,
                "quantization_factor": self.quantization_factor,
                "polarization_factor": self.polarization_factor,
                "idealized_crossbar_reduction": self.idealized_crossbar_reduction}

    def summary(self) -> str:
        return (f"{self.nonzero}/{self.weights} non-zero weights ({100 * self.sparsity:.1f} % "
                f"zeros): pruning {self.pruning_ratio:.2f}x x quantization "
                f"{self.quantization_factor:.0f}x x polarization "
                f"{self.polarization_factor:.0f}x = idealized crossbar reduction "
                f"{self.idealized_crossbar_reduction:.2f}x (paper formula, not a count)")


def _mixed(weight: np.ndarray, size: int, order: str, groups: int = 1) -> int:
    from chipforge.sim.fragments import fragment_view
    view = fragment_view(weight, size, order, groups)
    return int(((view > 0).any(axis=2) & (view < 0).any(axis=2)).sum())


def compression_stats(graph: Graph) -> CompressionStats:
    """Per-layer and total compression statistics of ``graph``'s weighted nodes."""
    layers = []
    for node in graph.weighted_nodes():
        w = node.params["weight"]
        size = node.attrs.get("fragment_size")
        order = node.attrs.get("fragment_order")
        fragments = mixed = 0
        if size is not None:
            signs = node.params.get("fragment_signs")
            groups = int(node.attrs.get("groups", 1))
            mixed = _mixed(w, int(size), order, groups)
            if signs is not None and check_polarized(w, signs, int(size), order, groups):
                mixed = max(mixed, 1)
            fragments = int(np.prod(signs.shape)) if signs is not None else 0
        layers.append(LayerStats(node.name, int(w.size), int(np.count_nonzero(w)),
                                 int(node.attrs.get("weight_bits", 32)),
                                 None if size is None else int(size), order, fragments, mixed))
    if not layers:
        raise ValueError(f"graph {graph.name!r} has no weighted layers")
    return CompressionStats(tuple(layers))
