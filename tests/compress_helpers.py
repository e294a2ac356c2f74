"""A user's own models for the ``chipforge compress`` tests: plain torch modules written here
(not zoo models), trained on the digits training split and exported to ONNX the way a user
would (``torch.onnx.export``), with the training and test splits as ``.npz`` files."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np


def user_cnn(size: int = 16, width: int = 8, seed: int = 0):
    """A small LeNet-like CNN with a batch norm (folded by the ONNX export)."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, width, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 5, padding=2), nn.BatchNorm2d(2 * width), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(2 * width * (size // 4) ** 2, 64), nn.ReLU(), nn.Linear(64, 10))


def user_mlp(hidden: tuple[int, ...] = (128, 128), seed: int = 0):
    import torch
    from torch import nn

    torch.manual_seed(seed)
    layers: list = [nn.Flatten()]
    last = 64
    for h in hidden:
        layers += [nn.Linear(last, h), nn.ReLU()]
        last = h
    return nn.Sequential(*layers, nn.Linear(last, 10))


def train_and_export(module, size: int, epochs: int, folder: Path, name: str,
                     seed: int = 0) -> dict[str, Path]:
    """Train ``module`` on digits(size), export ONNX; write train/test .npz files."""
    import torch

    from chipforge.mappings.train import TrainData, train
    from chipforge.zoo.data import digits

    data = digits(size)
    train(module, TrainData(data), epochs=epochs, lr=2e-3, seed=seed)
    module.eval()
    folder.mkdir(parents=True, exist_ok=True)
    onnx_path = folder / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, torch.zeros(1, 1, size, size), str(onnx_path), dynamo=False,
                          input_names=["input"], dynamic_axes={"input": {0: "n"}})
    train_path, test_path = folder / f"train{size}.npz", folder / f"test{size}.npz"
    np.savez(train_path, x=data.x_train, y=data.y_train)
    np.savez(test_path, x=data.x_test, y=data.y_test)
    return {"model": onnx_path, "train": train_path, "test": test_path}
