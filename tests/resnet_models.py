"""Plain-torch CNNs with a non-chain graph, written as a user would (not zoo models):
CIFAR-stem ResNets of BasicBlocks, a depthwise / grouped conv net and a concat net, and
MNIST made CIFAR-shaped, for the ``compress`` tests on real graphs."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np


def _nn():
    import torch
    from torch import nn

    return torch, nn



def _classes():
    torch, nn = _nn()

    class Block(nn.Module):
        """ResNet BasicBlock: two 3x3 convs with batch norm, identity or 1x1-conv shortcut."""

        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.shortcut = nn.Sequential()
            if stride != 1 or cin != cout:
                self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                              nn.BatchNorm2d(cout))

        def forward(self, x):
            y = torch.relu(self.bn1(self.conv1(x)))
            return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))

    class ResNet(nn.Module):
        """CIFAR-stem ResNet: 3x3 stem conv (no max pool), stages of BasicBlocks, global
        average pooling, fc."""

        def __init__(self, widths=(64, 128, 256, 512), blocks=(2, 2, 2, 2), classes=10,
                     channels=3) -> None:
            super().__init__()
            self.stem = nn.Conv2d(channels, widths[0], 3, 1, 1, bias=False)
            self.bn = nn.BatchNorm2d(widths[0])
            layers, cin = [], widths[0]
            for i, (w, b) in enumerate(zip(widths, blocks, strict=True)):
                for j in range(b):
                    layers.append(Block(cin, w, 2 if (j == 0 and i > 0) else 1))
                    cin = w
            self.layers = nn.Sequential(*layers)
            self.fc = nn.Linear(cin, classes)

        def forward(self, x):
            x = torch.relu(self.bn(self.stem(x)))
            x = self.layers(x)
            return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))

    class Grouped(nn.Module):
        """A MobileNet-like net: depthwise 3x3 + pointwise 1x1, a grouped conv (groups=2)."""

        def __init__(self, channels=3, classes=10) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(channels, 8, 3, 1, 1), nn.BatchNorm2d(8))
            self.dw = nn.Sequential(nn.Conv2d(8, 8, 3, 2, 1, groups=8), nn.BatchNorm2d(8))
            self.pw = nn.Sequential(nn.Conv2d(8, 16, 1), nn.BatchNorm2d(16))
            self.grouped = nn.Sequential(nn.Conv2d(16, 16, 3, 1, 1, groups=2),
                                         nn.BatchNorm2d(16))
            self.fc = nn.Linear(16, classes)

        def forward(self, x):
            x = torch.relu(self.stem(x))
            x = torch.relu(self.pw(torch.relu(self.dw(x))))
            x = torch.relu(self.grouped(x))
            return self.fc(x.mean((2, 3)))

    class Concat(nn.Module):
        """Two branches (3x3 and 1x1 conv) concatenated along channels (Inception-like)."""

        def __init__(self, channels=3, classes=10) -> None:
            super().__init__()
            self.stem = nn.Conv2d(channels, 8, 3, 2, 1)
            self.a = nn.Conv2d(8, 8, 3, 1, 1)
            self.b = nn.Conv2d(8, 4, 1)
            self.fc = nn.Linear(12 * 8 * 8, classes)

        def forward(self, x):
            x = torch.relu(self.stem(x))
            x = torch.cat([torch.relu(self.a(x)), torch.relu(self.b(x))], 1)
            return self.fc(torch.flatten(x, 1))

    return Block, ResNet, Grouped, Concat


def resnet18(classes: int = 10, seed: int = 0):
    """CIFAR-stem ResNet-18 (64-128-256-512, 2 BasicBlocks per stage)."""
    torch, _ = _nn()
    torch.manual_seed(seed)
    return _classes()[1](classes=classes)


def tiny_resnet(width: int = 8, seed: int = 0):
    """Stem + 2 BasicBlocks (the second strided, with a 1x1-conv shortcut)."""
    torch, _ = _nn()
    torch.manual_seed(seed)
    return _classes()[1](widths=(width, 2 * width), blocks=(1, 1))


def grouped_net(seed: int = 0):
    torch, _ = _nn()
    torch.manual_seed(seed)
    return _classes()[2]()


def concat_net(seed: int = 0):
    torch, _ = _nn()
    torch.manual_seed(seed)
    return _classes()[3]()


def cifar_shaped(x: np.ndarray, size: int = 32) -> np.ndarray:
    """MNIST (N, 28, 28) or (N, 1, 28, 28) in [0, 1] as CIFAR-shaped (N, 3, size, size):
    zero-padded to size x size (size >= 28) or area-resized (smaller), replicated over 3
    channels."""
    x = np.asarray(x, dtype=np.float32).reshape(len(x), 28, 28)
    if size >= 28:
        lo = (size - 28) // 2
        x = np.pad(x, ((0, 0), (lo, size - 28 - lo), (lo, size - 28 - lo)))
    else:
        torch, _ = _nn()
        x = torch.nn.functional.interpolate(torch.from_numpy(x)[:, None], size=(size, size),
                                            mode="area")[:, 0].numpy()
    return np.repeat(x[:, None], 3, axis=1)


def mnist_cifar_shaped(n: int, size: int = 32, *, split: str = "train"):
    """The first ``n`` real MNIST images of a split (chipforge.zoo.data.mnist), CIFAR-shaped."""
    from chipforge.zoo.data import mnist

    d = mnist()
    x, y = (d.x_train, d.y_train) if split == "train" else (d.x_test, d.y_test)
    return cifar_shaped(np.asarray(x[:n]), size), np.asarray(y[:n], dtype=np.int64)


def train_briefly(module, x: np.ndarray, y: np.ndarray, *, epochs: int, seed: int = 0,
                  lr: float = 2e-3) -> None:
    """A user's own short training (Adam, batch 64), so batch norms hold real statistics."""
    torch, _ = _nn()
    torch.manual_seed(seed)
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    xt, yt = torch.from_numpy(np.array(x)), torch.from_numpy(np.array(y))
    module.train()
    for _ in range(epochs):
        for i in range(0, len(xt), 64):
            loss = torch.nn.functional.cross_entropy(module(xt[i:i + 64]), yt[i:i + 64])
            opt.zero_grad()
            loss.backward()
            opt.step()
    # batch-norm statistics of the final weights (the running averages of a few hundred
    # steps lag behind them): one pass over the training data, cumulative averages
    norms = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    with torch.no_grad():
        for i in range(0, len(xt), 256):
            module(xt[i:i + 256])
    module.eval()


def export_onnx(module, input_shape: tuple[int, ...], path: Path) -> Path:
    """``torch.onnx.export`` at batch 1, as a user does."""
    torch, _ = _nn()
    module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, torch.zeros(1, *input_shape), str(path), dynamo=False)
    return path
