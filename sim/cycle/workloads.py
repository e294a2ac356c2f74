"""Synthetic workloads for the cycle model: a ResNet-18-shaped network with FORMS-style weights.

:func:`resnet18_shaped` builds the layer shapes of ResNet-18 (CIFAR stem: 3x3 conv, no
max-pool; 4 stages of 2 basic blocks, 1x1 downsample convs, global pooling, FC) as a
quantized :class:`~chipforge.sim.graph.Graph`. Its weights are random (He), structurally
pruned (a fraction of each layer's fragments of filter-shape rows removed: crossbar rows
freed on both architectures) and polarized
per fragment (every fragment of ``fragment_size`` consecutive rows keeps only the weights of
its majority sign, FORMS Eq. 2), then quantized to 8 bits; activations are 16-bit unsigned
with per-layer scales calibrated on the given images. The point is shapes and real
activation bits through those shapes, not accuracy: both ISAAC and FORMS run these same
weights.
"""

from __future__ import annotations

import numpy as np

from chipforge.sim.executor import im2col, run_graph
from chipforge.sim.fragments import fragment_sign_rule, polarize
from chipforge.sim.graph import Graph, Node, Op

__all__ = ["digits_cnn", "resnet18_shaped"]


def _conv_weight(rng, out_ch, in_ch, k, prune, fragment_size):
    w = rng.normal(0.0, np.sqrt(2.0 / (in_ch * k * k)), (out_ch, in_ch, k, k))
    w2d = w.reshape(out_ch, -1).T                                   # (K, N)
    if prune > 0:
        # Crossbar-aware: remove whole fragments of rows (the smallest by L2 norm), so the
        # freed rows leave the crossbars on FORMS and ISAAC alike.
        rows_total = w2d.shape[0]
        groups = -(-rows_total // fragment_size)
        starts = np.arange(groups) * fragment_size
        norms = np.sqrt(np.add.reduceat((w2d ** 2).sum(axis=1), starts))
        drop = np.argsort(norms)[: groups - max(1, int(round(groups * (1 - prune))))]
        rows = (drop[:, None] * fragment_size + np.arange(fragment_size)).ravel()
        w2d[rows[rows < rows_total]] = 0.0
    w = w2d.T.reshape(out_ch, in_ch, k, k)
    return polarize(w, fragment_sign_rule(w, fragment_size, "w-major"), fragment_size, "w-major")


def resnet18_shaped(images: np.ndarray, *, width: int = 64, prune: float = 0.5,
                    fragment_size: int = 8, classes: int = 10, seed: int = 0) -> Graph:
    """ResNet-18-shaped quantized graph for ``images`` (N, 3, H, W), calibrated on them."""
    if not 0.0 <= prune < 1.0:
        raise ValueError(f"prune must be in [0, 1), not {prune!r}")
    rng = np.random.default_rng(seed)
    nodes: list[Node] = []

    def conv(name, src, in_ch, out_ch, k, stride):
        nodes.append(Node(Op.CONV2D, name, (src,), {"stride": stride, "padding": k // 2},
                          {"weight": _conv_weight(rng, out_ch, in_ch, k, prune, fragment_size)}))
        return name

    x = conv("conv1", "input", images.shape[1], width, 3, 1)
    nodes.append(Node(Op.RELU, "relu1", (x,)))
    x, ch = "relu1", width
    for stage in range(4):
        out_ch = width * 2 ** stage
        for block in range(2):
            stride = 2 if stage > 0 and block == 0 else 1
            p = f"s{stage + 1}b{block + 1}"
            a = conv(f"{p}_conv1", x, ch, out_ch, 3, stride)
            nodes.append(Node(Op.RELU, f"{p}_relu1", (a,)))
            b = conv(f"{p}_conv2", f"{p}_relu1", out_ch, out_ch, 3, 1)
            short = x
            if stride != 1 or ch != out_ch:
                short = conv(f"{p}_down", x, ch, out_ch, 1, stride)
            nodes.append(Node(Op.ADD, f"{p}_add", (b, short)))
            nodes.append(Node(Op.RELU, f"{p}_relu2", (f"{p}_add",)))
            x, ch = f"{p}_relu2", out_ch
    nodes.append(Node(Op.GLOBAL_AVGPOOL, "gap", (x,)))
    nodes.append(Node(Op.FLATTEN, "flat", ("gap",)))
    fc = rng.normal(0.0, np.sqrt(1.0 / ch), (classes, ch))
    fc = polarize(fc, fragment_sign_rule(fc, fragment_size, "w-major"), fragment_size, "w-major")
    nodes.append(Node(Op.LINEAR, "fc", ("flat",), {}, {"weight": fc}))
    graph = Graph("resnet18-shaped", tuple(images.shape[1:]), nodes,
                  meta={"note": "random pruned+polarized weights, ResNet-18 shapes"})
    # Calibrate: 8-bit per-layer weight scales, 16-bit unsigned activations (inputs >= 0).
    values = run_graph(graph, images, quantized=False, return_all=True)
    for node in graph.weighted_nodes():
        inp = values[node.inputs[0]]
        if node.op is Op.CONV2D:
            k = node.params["weight"].shape[-1]
            inp, _, _ = im2col(inp, k, k, node.attrs["stride"], node.attrs["padding"])
        top = float(np.abs(inp).max()) or 1.0
        w = node.params["weight"]
        wscale = float(np.abs(w).max()) / 127 or 1.0
        node.params["weight"] = np.rint(w / wscale) * wscale
        node.attrs.update(weight_bits=8, weight_scale=wscale, act_bits=16,
                          act_scale=top / ((1 << 16) - 1), act_signed=False,
                          fragment_size=fragment_size, fragment_order="w-major")
    return graph


def digits_cnn(seed=0):
    """A small quantized LeNet-like CNN for 8x8 digits: random 8-bit weights, 16-bit
    activations (for tests and examples; the trained models are in the zoo)."""
    rng = np.random.default_rng(seed)
    q = lambda scale, signed=False: dict(weight_bits=8, weight_scale=0.01,  # noqa: E731
                                         act_bits=16, act_scale=scale, act_signed=signed)
    nodes = [
        Node(Op.CONV2D, "conv1", ("input",), dict(stride=1, padding=1) | q(1 / 65535),
             {"weight": rng.integers(-127, 128, (6, 1, 3, 3)) * 0.01}),
        Node(Op.RELU, "relu1", ("conv1",)),
        Node(Op.MAXPOOL2D, "pool1", ("relu1",), dict(kernel=2)),
        Node(Op.CONV2D, "conv2", ("pool1",), dict(stride=1, padding=1) | q(4 / 65535),
             {"weight": rng.integers(-127, 128, (12, 6, 3, 3)) * 0.01}),
        Node(Op.RELU, "relu2", ("conv2",)),
        Node(Op.FLATTEN, "flat", ("relu2",)),
        Node(Op.LINEAR, "fc", ("flat",), q(20 / 65535),
             {"weight": rng.integers(-127, 128, (10, 12 * 16)) * 0.01}),
    ]
    return Graph("digits-cnn", (1, 8, 8), nodes)
