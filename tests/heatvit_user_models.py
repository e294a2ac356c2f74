"""Two ViTs written the way users write them, for the ``compress heatvit`` tests and the
HeatViT notebook: a timm-style ViT (hand-written attention, ``Conv2d`` patch embedding,
LayerNorm eps 1e-6) and one built from ``nn.TransformerEncoderLayer``; plus a plain
training loop for their backbones on the digits split."""

import numpy as np
import torch
from torch import nn


class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(
            2, 0, 3, 1, 4).unbind(0)
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim, heads, hidden):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim, eps=1e-6), Attention(dim, heads)
        self.norm2, self.mlp = nn.LayerNorm(dim, eps=1e-6), Mlp(dim, hidden)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class _VitBase(nn.Module):
    def __init__(self, dim, patch, size, classes, eps):
        super().__init__()
        self.patch_embed = nn.Conv2d(1, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, (size // patch) ** 2 + 1, dim) * 0.02)
        self.norm, self.head = nn.LayerNorm(dim, eps=eps), nn.Linear(dim, classes)

    def embed(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        return torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1) + self.pos_embed


class TimmStyleVit(_VitBase):
    def __init__(self, dim=32, heads=2, depth=6, patch=2, size=8, classes=10):
        super().__init__(dim, patch, size, classes, 1e-6)
        self.blocks = nn.Sequential(*[Block(dim, heads, 2 * dim) for _ in range(depth)])

    def forward(self, x):
        return self.head(self.norm(self.blocks(self.embed(x)))[:, 0])


class EncoderLayerVit(_VitBase):
    def __init__(self, dim=32, heads=2, depth=6, patch=2, size=8, classes=10):
        super().__init__(dim, patch, size, classes, 1e-5)
        layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)

    def forward(self, x):
        return self.head(self.norm(self.encoder(self.embed(x))[:, 0]))


def train(net, x, y, *, epochs=60, seed=0, lr=2e-3):
    """AdamW + one-cycle schedule, label smoothing; deterministic on the CPU (seed torch
    before constructing ``net`` too: its initialization)."""
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    x, y = torch.tensor(np.asarray(x, dtype=np.float32)), torch.tensor(np.asarray(y))
    steps = -(-len(x) // 64)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=epochs * steps)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        net.train()
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), 64):
            idx = order[i:i + 64]
            loss = nn.functional.cross_entropy(net(x[idx]), y[idx], label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return net.eval()
