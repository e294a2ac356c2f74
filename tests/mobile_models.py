"""Mobile CNNs and ViTs written in plain torch, layer for layer as torchvision's
``mobilenet_v3_small``, ``efficientnet_b0``, ``squeezenet1_1`` and ``VisionTransformer`` and
timm's ``VisionTransformer`` (fused qkv Linear + ``F.scaled_dot_product_attention``) define
them; torchvision and timm are not dependencies. ``width`` scales every channel count
(reduced variants for fast tests)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn


def make_divisible(v: float, divisor: int = 8) -> int:
    """torchvision's ``_make_divisible``: round to a multiple of ``divisor``, never more
    than 10 % below ``v``."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def conv_bn_act(c_in, c_out, kernel, stride=1, groups=1, act=None):
    layers = [nn.Conv2d(c_in, c_out, kernel, stride, (kernel - 1) // 2, groups=groups,
                        bias=False), nn.BatchNorm2d(c_out)]
    return nn.Sequential(*layers, *([act()] if act is not None else []))


class SqueezeExcitation(nn.Module):
    """torchvision's ``SqueezeExcitation``: ``x * gate(fc2(act(fc1(avgpool(x)))))``."""

    def __init__(self, channels, squeeze, act=nn.ReLU, gate=nn.Hardsigmoid):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1, self.fc2 = nn.Conv2d(channels, squeeze, 1), nn.Conv2d(squeeze, channels, 1)
        self.activation, self.scale_activation = act(), gate()

    def forward(self, x):
        s = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return x * s


# -- MobileNetV3-small --------------------------------------------------------------------
# (input, kernel, expanded, output, squeeze-excite, activation, stride): torchvision's
# _mobilenet_v3_conf("mobilenet_v3_small")
V3_SMALL = [(16, 3, 16, 16, True, "RE", 2), (16, 3, 72, 24, False, "RE", 2),
            (24, 3, 88, 24, False, "RE", 1), (24, 5, 96, 40, True, "HS", 2),
            (40, 5, 240, 40, True, "HS", 1), (40, 5, 240, 40, True, "HS", 1),
            (40, 5, 120, 48, True, "HS", 1), (48, 5, 144, 48, True, "HS", 1),
            (48, 5, 288, 96, True, "HS", 2), (96, 5, 576, 96, True, "HS", 1),
            (96, 5, 576, 96, True, "HS", 1)]


class V3Block(nn.Module):
    def __init__(self, c_in, kernel, expanded, c_out, se, act, stride):
        super().__init__()
        act_layer = nn.Hardswish if act == "HS" else nn.ReLU
        self.use_res = stride == 1 and c_in == c_out
        layers = []
        if expanded != c_in:
            layers.append(conv_bn_act(c_in, expanded, 1, act=act_layer))
        layers.append(conv_bn_act(expanded, expanded, kernel, stride, expanded, act_layer))
        if se:
            layers.append(SqueezeExcitation(expanded, make_divisible(expanded // 4)))
        layers.append(conv_bn_act(expanded, c_out, 1))
        self.block = nn.Sequential(*layers)

    def forward(self, x):
        y = self.block(x)
        return x + y if self.use_res else y


class MobileNetV3Small(nn.Module):
    def __init__(self, *, num_classes=1000, width=1.0, last_channel=1024):
        super().__init__()

        def w(c):
            return make_divisible(c * width)

        first = w(16)
        layers = [conv_bn_act(3, first, 3, 2, act=nn.Hardswish)]
        for c_in, k, exp, c_out, se, act, s in V3_SMALL:
            layers.append(V3Block(w(c_in), k, w(exp), w(c_out), se, act, s))
        last_conv = 6 * w(96)
        layers.append(conv_bn_act(w(96), last_conv, 1, act=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(last_conv, last_channel), nn.Hardswish(),
                                        nn.Dropout(0.2), nn.Linear(last_channel, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


# -- EfficientNet-B0 ----------------------------------------------------------------------
# (expand ratio, kernel, stride, input, output, layers): torchvision's efficientnet_b0
B0 = [(1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
      (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1)]


class MBConv(nn.Module):
    def __init__(self, expand, kernel, stride, c_in, c_out):
        super().__init__()
        self.use_res = stride == 1 and c_in == c_out
        expanded = make_divisible(c_in * expand)
        layers = []
        if expanded != c_in:
            layers.append(conv_bn_act(c_in, expanded, 1, act=nn.SiLU))
        layers.append(conv_bn_act(expanded, expanded, kernel, stride, expanded, nn.SiLU))
        layers.append(SqueezeExcitation(expanded, max(1, c_in // 4), nn.SiLU, nn.Sigmoid))
        layers.append(conv_bn_act(expanded, c_out, 1))
        self.block = nn.Sequential(*layers)

    def forward(self, x):
        y = self.block(x)
        return x + y if self.use_res else y       # stochastic depth: identity in eval


class EfficientNetB0(nn.Module):
    def __init__(self, *, num_classes=1000, width=1.0, depth=1.0):
        super().__init__()

        def w(c):
            return make_divisible(c * width)

        layers = [conv_bn_act(3, w(32), 3, 2, act=nn.SiLU)]
        for expand, k, s, c_in, c_out, n in B0:
            for i in range(int(math.ceil(n * depth))):
                layers.append(MBConv(expand, k, s if i == 0 else 1, w(c_in) if i == 0
                                     else w(c_out), w(c_out)))
        last = 4 * w(320)
        layers.append(conv_bn_act(w(320), last, 1, act=nn.SiLU))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def mobilenet_v3_small(**kw) -> MobileNetV3Small:
    return MobileNetV3Small(**kw)


def efficientnet_b0(**kw) -> EfficientNetB0:
    return EfficientNetB0(**kw)


# -- timm-style ViT with scaled_dot_product_attention --------------------------------------
class SdpaAttention(nn.Module):
    """timm's ``Attention`` with ``fused_attn``: one qkv Linear, then
    ``F.scaled_dot_product_attention``."""

    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(
            2, 0, 3, 1, 4).unbind(0)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class VitBlock(nn.Module):
    def __init__(self, dim, heads, hidden):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim, eps=1e-6), SdpaAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class SdpaVit(nn.Module):
    """``patches="conv"``: timm's ``PatchEmbed`` (Conv2d, stride = kernel);
    ``patches="unfold"``: ``F.unfold`` then a Linear; ``patches="slice"``: ``Tensor.unfold``
    (strided slices) then a Linear."""

    def __init__(self, *, size=32, patch=8, channels=3, dim=48, depth=2, heads=3, classes=10,
                 patches="conv"):
        super().__init__()
        self.patch, self.patches = patch, patches
        if patches == "conv":
            self.patch_embed = nn.Conv2d(channels, dim, patch, patch)
        else:
            self.patch_embed = nn.Linear(channels * patch * patch, dim)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, (size // patch) ** 2 + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*[VitBlock(dim, heads, 4 * dim) for _ in range(depth)])
        self.norm, self.head = nn.LayerNorm(dim, eps=1e-6), nn.Linear(dim, classes)

    def embed(self, x):
        p = self.patch
        if self.patches == "conv":
            return self.patch_embed(x).flatten(2).transpose(1, 2)
        if self.patches == "unfold":
            return self.patch_embed(F.unfold(x, p, stride=p).transpose(1, 2))
        b, c = x.shape[:2]     # (B, C, gh, gw, p, p) -> (B, gh*gw, C*p*p)
        t = x.unfold(2, p, p).unfold(3, p, p).permute(0, 2, 3, 1, 4, 5)
        return self.patch_embed(t.reshape(b, -1, c * p * p))

    def forward(self, x):
        x = self.embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1) + self.pos_embed
        return self.head(self.norm(self.blocks(x))[:, 0])


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters (a fresh model's are 0/1, so a
    wrong fold would pass); eval mode."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) - 0.5)
    return model.eval()


# -- torchvision-style ViT ------------------------------------------------------------------
class TorchvisionEncoderBlock(nn.Module):
    """torchvision's ``EncoderBlock``: ln_1, ``nn.MultiheadAttention(batch_first=True)``,
    ln_2, MLP (Linear, GELU, Linear)."""

    def __init__(self, dim, heads, hidden):
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim, eps=1e-6)
        self.self_attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x):
        y = self.ln_1(x)
        y, _ = self.self_attention(y, y, y, need_weights=False)
        x = x + y
        return x + self.mlp(self.ln_2(x))


class TorchvisionVit(nn.Module):
    """torchvision's ``VisionTransformer``: ``conv_proj``, class token, position embedding
    added inside the encoder, final ``ln``, ``heads`` on the class token."""

    def __init__(self, *, size=32, patch=8, dim=48, depth=2, heads=3, classes=10):
        super().__init__()
        self.patch, self.dim = patch, dim
        self.conv_proj = nn.Conv2d(3, dim, patch, patch)
        self.class_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos_embedding = nn.Parameter(torch.randn(1, (size // patch) ** 2 + 1, dim) * 0.02)
        self.layers = nn.Sequential(*[TorchvisionEncoderBlock(dim, heads, 4 * dim)
                                      for _ in range(depth)])
        self.ln = nn.LayerNorm(dim, eps=1e-6)
        self.heads = nn.Linear(dim, classes)

    def forward(self, x):
        n = x.shape[0]
        x = self.conv_proj(x).reshape(n, self.dim, -1).permute(0, 2, 1)
        x = torch.cat([self.class_token.expand(n, -1, -1), x], dim=1)
        x = self.ln(self.layers(x + self.pos_embedding))
        return self.heads(x[:, 0])


# -- SqueezeNet 1.1 -------------------------------------------------------------------------
class Fire(nn.Module):
    def __init__(self, c_in, squeeze, expand1, expand3):
        super().__init__()
        self.squeeze = nn.Sequential(nn.Conv2d(c_in, squeeze, 1), nn.ReLU())
        self.expand1x1 = nn.Sequential(nn.Conv2d(squeeze, expand1, 1), nn.ReLU())
        self.expand3x3 = nn.Sequential(nn.Conv2d(squeeze, expand3, 3, padding=1), nn.ReLU())

    def forward(self, x):
        x = self.squeeze(x)
        return torch.cat([self.expand1x1(x), self.expand3x3(x)], 1)


class SqueezeNet11(nn.Module):
    """torchvision's ``squeezenet1_1`` (max pooling with ``ceil_mode=True``)."""

    def __init__(self, *, num_classes=1000, width=1.0):
        def w(c):
            return max(1, int(c * width))

        super().__init__()
        pool = [nn.MaxPool2d(3, 2, ceil_mode=True)]
        self.features = nn.Sequential(
            nn.Conv2d(3, w(64), 3, 2), nn.ReLU(), *pool,
            Fire(w(64), w(16), w(64), w(64)), Fire(w(128), w(16), w(64), w(64)),
            nn.MaxPool2d(3, 2, ceil_mode=True),
            Fire(w(128), w(32), w(128), w(128)), Fire(w(256), w(32), w(128), w(128)),
            nn.MaxPool2d(3, 2, ceil_mode=True),
            Fire(w(256), w(48), w(192), w(192)), Fire(w(384), w(48), w(192), w(192)),
            Fire(w(384), w(64), w(256), w(256)), Fire(w(512), w(64), w(256), w(256)))
        self.classifier = nn.Sequential(nn.Dropout(0.5), nn.Conv2d(w(512), num_classes, 1),
                                        nn.ReLU(), nn.AdaptiveAvgPool2d(1))

    def forward(self, x):
        return torch.flatten(self.classifier(self.features(x)), 1)


def export(model: nn.Module, x: torch.Tensor, dynamo: bool) -> bytes:
    """``model`` as ONNX bytes from torch's default (dynamo) exporter with nothing but the
    model and its input, or from ``dynamo=False`` with a dynamic batch axis."""
    import io
    import warnings

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:       # PyTorch's defaults: nothing but the model, its input and a file
            torch.onnx.export(model, (x,), buffer)
        else:
            torch.onnx.export(model, (x,), buffer, dynamo=False, input_names=["input"],
                              dynamic_axes={"input": {0: "batch"}})
    return buffer.getvalue()
