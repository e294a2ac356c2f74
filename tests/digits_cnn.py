"""A tiny float CNN trained briefly on sklearn digits: a user's model stand-in for the
entry-point and compare tests (conv 1->4, ReLU, pool, linear 64->10; 60 full-batch Adam
steps)."""

import torch

from chipforge.zoo.data import digits


def train_digits_cnn(seed: int) -> tuple[torch.nn.Module, torch.Tensor]:
    """The trained net (eval mode) and the digits training inputs as a (N, 1, 8, 8)
    tensor (its first rows serve as the ONNX example input)."""
    d = digits()
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.MaxPool2d(2), torch.nn.Flatten(),
                              torch.nn.Linear(64, 10))
    x = torch.tensor(d.x_train, dtype=torch.float32).reshape(-1, 1, 8, 8)
    y = torch.tensor(d.y_train, dtype=torch.long)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(60):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return net.eval(), x
