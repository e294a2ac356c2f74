"""The bundled model zoo: small compressed models trained on scikit-learn's digits data set.

Each model ships as a small ``.npz`` graph (no pickle) next to this file and is reproducible
from its recipe (``chipforge zoo train NAME``; recipes in :mod:`chipforge.zoo.recipes`).
:mod:`chipforge.zoo.data` loads the data.

>>> from chipforge import zoo
>>> zoo.names()[:2]
['lenet-digits', 'lenet-digits-pruned']
>>> graph = zoo.load("lenet-digits-forms8")     # a chipforge.sim.graph.Graph
>>> graph.meta["accuracy_quantized"]            # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["ZOO_DIR", "load", "load_graph_file", "names", "path"]

ZOO_DIR = Path(__file__).resolve().parent

# The shipped models, in listing order (the recipes are in chipforge.zoo.recipes).
_NAMES = ("lenet-digits", "lenet-digits-pruned", "lenet-digits-forms4", "lenet-digits-forms8",
          "lenet-digits-forms16", "lenet-digits-p30", "lenet-digits-p60", "lenet-digits-p90",
          "mlp-digits", "bnn-digits")


# The HeatViT ViTs (chipforge.zoo.vit) are IR graphs too, loadable by name; their recipe is
# `python -m chipforge.zoo.vit`, so `chipforge zoo train` does not list them.
GRAPH_ONLY_NAMES = ("vit-digits", "vit-digits-keep80", "vit-digits-keep60", "vit-digits-keep50")


def names() -> list[str]:
    """Names of the bundled models."""
    return list(_NAMES)


def path(name: str) -> Path:
    """The ``.npz`` file of a bundled model."""
    if name not in _NAMES + GRAPH_ONLY_NAMES:
        raise ValueError(f"unknown zoo model {name!r}; known: "
                         f"{', '.join(_NAMES + GRAPH_ONLY_NAMES)}")
    return ZOO_DIR / f"{name}.npz"


def load(name: str):
    """Load a bundled model as a :class:`chipforge.sim.graph.Graph`."""
    from chipforge.sim.graph import load_graph

    return load_graph(path(name))


def load_graph_file(file: str | Path):
    """Load any chipforge ``.npz`` graph file (no pickle)."""
    from chipforge.sim.graph import load_graph

    return load_graph(file)
