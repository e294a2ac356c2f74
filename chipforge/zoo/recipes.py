"""Recipes of the bundled models: architecture, compression chain, seeds.

Every model is trained on the shared digits split (:func:`chipforge.zoo.data.digits`;
the CNNs on its 16x16 upsampling ``digits(16)``, the MLP on the 8x8 original; pixels in
[0, 1]) from fixed seeds with deterministic single-threaded torch, then
compressed by the passes of :mod:`chipforge.mappings` in FORMS's order (prune -> polarize
-> quantize) and exported to a :class:`~chipforge.sim.graph.Graph`.

=========================== ================================================================
name                        recipe
=========================== ================================================================
``lenet-digits``            LeNet-5-style CNN, dense, 8-bit weights and activations (QAT)
``lenet-digits-pruned``     + ADMM unstructured pruning (per-layer ratios, ~87 % zeros)
``lenet-digits-forms4``     pruned + FORMS polarization, fragment 4 (W-major) + 8-bit
``lenet-digits-forms8``     pruned + FORMS polarization, fragment 8 (W-major) + 8-bit
``lenet-digits-forms16``    pruned + FORMS polarization, fragment 16 (W-major) + 8-bit
``lenet-digits-p30|p60|p90`` LeNet, ADMM-pruned 30/60/90 % in every layer, 8-bit (the
                            pruning-ratio axis of ISQED'21's fault-tolerance study)
``mlp-digits``              3-layer MLP 64-64-32-10, dense, 8-bit
=========================== ================================================================

The LeNet-5-style CNN (LeNet-5's layers on a 16x16 input): conv1 1->6 5x5 pad 2, ReLU,
maxpool 2, conv2 6->16 5x5 pad 2, ReLU, maxpool 2, flatten (256), fc1 256->120, ReLU,
fc2 120->84, ReLU, fc3 84->10 (44k weights, 0.23 M MACs per image).

Why 16x16 and 5x5: on the 8x8 images a 3x3-kernel LeNet has only 9 weights per conv1
column, so a fragment of 8 forces nearly every first-layer filter to one sign; that model
lost 3-5 points when polarized at fragment 8, the 16x16 / 5x5 one loses none.
"""

from __future__ import annotations

import copy
import dataclasses
from collections import OrderedDict

from chipforge.mappings.admm import AdmmConfig
from chipforge.sim.fragments import FragmentOrder

__all__ = ["LENET_LAYERS", "LENET_PRUNE_RATIOS", "RECIPES", "Recipe", "build", "build_all",
           "lenet", "mlp"]

LENET_LAYERS = ("conv1", "conv2", "fc1", "fc2", "fc3")
LENET_PRUNE_RATIOS = {"conv1": 0.4, "conv2": 0.7, "fc1": 0.9, "fc2": 0.85, "fc3": 0.6}
"""Fraction of zeros per layer of lenet-digits-pruned (the small first and last layers are
pruned less, as usual); about 87 % zeros overall (pruning ratio ~7.7x)."""


@dataclasses.dataclass(frozen=True)
class Recipe:
    name: str
    arch: str
    """``"lenet"`` or ``"mlp"``."""
    description: str
    base_epochs: int = 40
    base_lr: float = 2e-3
    prune: dict | None = None
    """Per-layer pruning ratios (ADMM), or None for dense."""
    fragment_size: int | None = None
    """FORMS fragment size, or None for no polarization."""
    fragment_order: FragmentOrder = FragmentOrder.W_MAJOR
    seed: int = 0

    @property
    def stages(self) -> tuple:
        """The chain of stages; models that share a prefix share its result in build_all."""
        s = [("base", self.arch, self.base_epochs, self.base_lr, self.seed)]
        if self.prune:
            s.append(("prune", tuple(sorted(self.prune.items()))))
        if self.fragment_size:
            s.append(("polarize", self.fragment_size, self.fragment_order.value))
        return tuple(s)


RECIPES: dict[str, Recipe] = {r.name: r for r in [
    Recipe("lenet-digits", "lenet", "LeNet-5-style CNN, dense, 8-bit weights/activations"),
    Recipe("lenet-digits-pruned", "lenet", "LeNet-5-style CNN, ADMM-pruned, 8-bit",
           prune=LENET_PRUNE_RATIOS),
    *[Recipe(f"lenet-digits-forms{m}", "lenet",
             f"LeNet-5-style CNN, ADMM-pruned, FORMS-polarized (fragment {m}, W-major), 8-bit",
             prune=LENET_PRUNE_RATIOS, fragment_size=m) for m in (4, 8, 16)],
    *[Recipe(f"lenet-digits-p{int(100 * r)}", "lenet",
             f"LeNet-5-style CNN, ADMM-pruned {r:.0%} in every layer, 8-bit "
             "(ISQED'21 pruning-ratio axis)", prune=dict.fromkeys(LENET_LAYERS, r))
      for r in (0.3, 0.6, 0.9)],
    Recipe("mlp-digits", "mlp", "MLP 64-64-32-10, dense, 8-bit weights/activations"),
]}


def lenet():
    from torch import nn
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(1, 6, 5, padding=2)), ("relu1", nn.ReLU()),
        ("pool1", nn.MaxPool2d(2)),
        ("conv2", nn.Conv2d(6, 16, 5, padding=2)), ("relu2", nn.ReLU()),
        ("pool2", nn.MaxPool2d(2)),
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(256, 120)), ("relu3", nn.ReLU()),
        ("fc2", nn.Linear(120, 84)), ("relu4", nn.ReLU()),
        ("fc3", nn.Linear(84, 10)),
    ]))


def mlp():
    from torch import nn
    return nn.Sequential(OrderedDict([
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(64, 64)), ("relu1", nn.ReLU()),
        ("fc2", nn.Linear(64, 32)), ("relu2", nn.ReLU()),
        ("fc3", nn.Linear(32, 10)),
    ]))


ARCHS = {"lenet": lenet, "mlp": mlp}
IMAGE_SIZE = {"lenet": 16, "mlp": 8}
"""Input size of each architecture: ``digits(size)``."""

PRUNE = AdmmConfig(epochs=20, finetune_epochs=40, finetune_lr=1e-3)
"""ADMM pruning schedule of the zoo."""
POLARIZE_ADMM = AdmmConfig(rho=1e-2, rho_growth=1.5, epochs=18, finetune_epochs=40,
                           finetune_lr=1e-3)
"""ADMM polarization schedule of the zoo (signs updated every 3 epochs: M = 3, N = 18)."""


def _run_stage(stage: tuple, model, data, recipe: Recipe):
    from chipforge.mappings.admm import admm_prune
    from chipforge.mappings.polarize import PolarizeConfig, admm_polarize
    from chipforge.mappings.train import seed_everything, train

    kind = stage[0]
    if kind == "base":
        _, arch, epochs, lr, seed = stage
        seed_everything(seed)
        model = ARCHS[arch]()
        return train(model, data, epochs=epochs, lr=lr, seed=seed)
    if kind == "prune":
        return admm_prune(model, data, dict(stage[1]), PRUNE, seed=recipe.seed + 10)
    if kind == "polarize":
        cfg = PolarizeConfig(fragment_size=stage[1], order=FragmentOrder(stage[2]),
                             sign_update_every=3, admm=POLARIZE_ADMM)
        return admm_polarize(model, data, cfg, seed=recipe.seed + 20)
    raise AssertionError(kind)


def _finish(recipe: Recipe, model, data):
    """8-bit QAT of a trained (pruned/polarized) model, export, accuracies, meta."""
    import numpy as np

    from chipforge.mappings.quantize import QuantizeConfig, prepare_qat
    from chipforge.mappings.torch_export import to_graph
    from chipforge.mappings.train import train
    from chipforge.sim.compression import compression_stats
    from chipforge.sim.executor import run_graph

    ds = data.dataset
    float_graph = to_graph(model, ds.input_shape, name=recipe.name, quantize=False)
    acc_float = float((run_graph(float_graph, ds.x_test, quantized=False).argmax(1)
                       == ds.y_test).mean())
    qcfg = QuantizeConfig()
    model = copy.deepcopy(model)
    prepare_qat(model, data.x_train, qcfg)
    train(model, data, epochs=qcfg.qat_epochs, lr=qcfg.qat_lr, seed=recipe.seed + 30,
          constrained=True)
    graph = to_graph(model, ds.input_shape, name=recipe.name)
    acc_q = float((run_graph(graph, ds.x_test).argmax(1) == ds.y_test).mean())
    stats = compression_stats(graph)
    graph.meta.update({
        "dataset": f"digits({IMAGE_SIZE[recipe.arch]}) (sklearn, shared split: seed 0, "
                   "360 test images)",
        "description": recipe.description,
        "recipe": {"arch": recipe.arch, "stages": [list(s) for s in recipe.stages],
                   "quantize": qcfg.to_dict(), "seed": recipe.seed},
        "accuracy_float": acc_float,
        "accuracy_quantized": acc_q,
        "sparsity": stats.sparsity,
        "pruning_ratio": stats.pruning_ratio,
        "idealized_crossbar_reduction": stats.idealized_crossbar_reduction,
        "num_classes": int(np.max(ds.y_test)) + 1,
    })
    return graph


def build(name: str):
    """Train ``name`` from its recipe (deterministic) and return its Graph."""
    return build_all([name])[name]


def build_all(names=None) -> dict:
    """Train several models, sharing common stages (e.g. one pruned LeNet for all FORMS
    variants). Same result as building each alone."""
    from chipforge.mappings.train import deterministic

    names = list(RECIPES) if names is None else list(names)
    for n in names:
        if n not in RECIPES:
            raise ValueError(f"unknown zoo model {n!r}; known: {', '.join(RECIPES)}")
    with deterministic():           # calibration and evaluation too, not only training
        return _build_all(names)


def _build_all(names: list[str]) -> dict:
    from chipforge.mappings.train import TrainData
    from chipforge.zoo.data import digits

    cache: dict[tuple, object] = {}
    out = {}
    for n in names:
        recipe = RECIPES[n]
        data = TrainData(digits(IMAGE_SIZE[recipe.arch]))
        model = None
        for i, stage in enumerate(recipe.stages):
            key = recipe.stages[:i + 1]
            if key not in cache:
                cache[key] = _run_stage(stage, copy.deepcopy(model), data, recipe)
            model = cache[key]
        out[n] = _finish(recipe, copy.deepcopy(model), data)
    return out


def main(argv=None) -> None:
    """``python -m chipforge.zoo.recipes [NAME ...]``: rebuild the shipped .npz files."""
    import sys

    from chipforge.sim.graph import save_graph
    from chipforge.zoo import ZOO_DIR

    names = (sys.argv[1:] if argv is None else argv) or None
    for name, graph in build_all(names).items():
        save_graph(graph, ZOO_DIR / f"{name}.npz")
        m = graph.meta
        print(f"{name}: float {100 * m['accuracy_float']:.2f}%, 8-bit "
              f"{100 * m['accuracy_quantized']:.2f}%, {100 * m['sparsity']:.1f}% zeros, "
              f"idealized crossbar reduction (pruning x 32/bits x polarization, not a "
              f"count) {m['idealized_crossbar_reduction']:.2f}x")


if __name__ == "__main__":
    main()
