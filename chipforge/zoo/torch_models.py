"""Plain-PyTorch definitions of the networks users bring: ResNet-18, VGG-11-BN, MobileNetV2
and two ViTs (a timm/DeiT-style one with hand-written attention, and one built from
``nn.TransformerEncoderLayer``).

torchvision and timm are not dependencies of chipforge, so these are written out here,
layer for layer as in ``torchvision.models`` (v0.20) and ``timm.models.vision_transformer``
(v1.0): same module structure, same operators, same default hyper-parameters. Each
builder takes ``num_classes`` and a width/size knob so that tests can run reduced copies
of exactly the same graph; the defaults are the full published sizes:

- :func:`resnet18` (He et al., CVPR'16): ``stem="imagenet"`` is torchvision's 7x7/2 conv
  and 3x3/2 max pool; ``stem="cifar"`` is the usual 3x3/1 conv and no pool (32x32 inputs).
- :func:`vgg11_bn` (Simonyan & Zisserman, ICLR'15, configuration "A" with BatchNorm):
  torchvision's ``AdaptiveAvgPool2d((7, 7))`` is left out: it is the identity on the
  224x224 inputs of the paper, and with ``image_size`` other sizes get a classifier that
  fits their feature map instead.
- :func:`mobilenet_v2` (Sandler et al., CVPR'18): inverted residuals with depthwise 3x3
  convolutions and ReLU6, ``width_mult`` as torchvision's.
- :func:`deit_tiny` (Touvron et al., ICML'21): DeiT-tiny = ViT with dim 192, depth 12, 3
  heads, patch 16, 224x224, class token, learned position embedding, pre-norm blocks with
  LayerNorm eps 1e-6, timm's attention ``qkv.reshape(B, N, 3, H, d).permute(2, 0, 3, 1, 4)``
  and ``unbind(0)``. No distillation token (DeiT-tiny without distillation).
- :func:`vit_encoder` : the same shape of ViT, its blocks ``nn.TransformerEncoderLayer``
  (``batch_first`` and ``norm_first`` selectable), i.e. ``nn.MultiheadAttention`` inside.

All are in float32, eval-ready (call ``.eval()``), and deterministic for a given
``torch.manual_seed``.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["deit_tiny", "mobilenet_v2", "resnet18", "vgg11_bn", "vit_encoder"]


# -- ResNet-18 ---------------------------------------------------------------------------
class BasicBlock(nn.Module):
    """torchvision's ``BasicBlock``: two 3x3 convs, identity or 1x1/stride shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                            nn.BatchNorm2d(c_out))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    def __init__(self, layers=(2, 2, 2, 2), *, num_classes: int = 1000, width: int = 64,
                 stem: str = "imagenet", in_channels: int = 3):
        super().__init__()
        if stem not in ("imagenet", "cifar"):
            raise ValueError(f"stem must be 'imagenet' or 'cifar', not {stem!r}")
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, width, 7, 2, 3, bias=False)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        else:
            self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        stages, c = [], width
        for i, n in enumerate(layers):
            c_out = width * 2 ** i
            blocks = [BasicBlock(c, c_out, 1 if i == 0 else 2)]
            blocks += [BasicBlock(c_out, c_out, 1) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
            c = c_out
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(c, num_classes)
        for m in self.modules():     # torchvision's initialization
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18(*, num_classes: int = 1000, width: int = 64, stem: str = "imagenet",
             in_channels: int = 3) -> ResNet:
    """ResNet-18 (torchvision layout). ``width``: channels of the first stage (64)."""
    return ResNet((2, 2, 2, 2), num_classes=num_classes, width=width, stem=stem,
                  in_channels=in_channels)


# -- VGG-11-BN ---------------------------------------------------------------------------
_VGG11 = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


class VGG(nn.Module):
    def __init__(self, *, num_classes: int = 1000, width_div: int = 1, image_size: int = 224,
                 hidden: int = 4096, in_channels: int = 3):
        super().__init__()
        layers, c = [], in_channels
        for v in _VGG11:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c, v // width_div, 3, padding=1),
                           nn.BatchNorm2d(v // width_div), nn.ReLU(inplace=True)]
                c = v // width_div
        self.features = nn.Sequential(*layers)
        side = image_size // 32
        if side < 1:
            raise ValueError(f"image_size must be at least 32 (five 2x2 pools), not "
                             f"{image_size}")
        self.classifier = nn.Sequential(
            nn.Linear(c * side * side, hidden), nn.ReLU(True), nn.Dropout(),
            nn.Linear(hidden, hidden), nn.ReLU(True), nn.Dropout(),
            nn.Linear(hidden, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


def vgg11_bn(*, num_classes: int = 1000, width_div: int = 1, image_size: int = 224,
             hidden: int = 4096, in_channels: int = 3) -> VGG:
    """VGG-11 with BatchNorm; ``width_div`` divides every conv's channels (1 = paper)."""
    return VGG(num_classes=num_classes, width_div=width_div, image_size=image_size,
               hidden=hidden, in_channels=in_channels)


# -- MobileNetV2 -------------------------------------------------------------------------
def _make_divisible(v: float, divisor: int = 8) -> int:
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def _conv_bn_relu6(c_in, c_out, kernel=3, stride=1, groups=1):
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, stride, (kernel - 1) // 2,
                                   groups=groups, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = int(round(c_in * expand_ratio))
        self.use_res_connect = stride == 1 and c_in == c_out
        layers = [] if expand_ratio == 1 else [_conv_bn_relu6(c_in, hidden, 1)]
        layers += [_conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden),   # depthwise
                   nn.Conv2d(hidden, c_out, 1, bias=False), nn.BatchNorm2d(c_out)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, *, num_classes: int = 1000, width_mult: float = 1.0,
                 first_stride: int = 2, in_channels: int = 3, last_channel: int = 1280):
        super().__init__()
        settings = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                    (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
        c = _make_divisible(32 * width_mult)
        self.last_channel = _make_divisible(last_channel * max(1.0, width_mult))
        features = [_conv_bn_relu6(in_channels, c, 3, first_stride)]
        for t, ch, n, s in settings:
            c_out = _make_divisible(ch * width_mult)
            for i in range(n):
                features.append(InvertedResidual(c, c_out, s if i == 0 else 1, t))
                c = c_out
        features.append(_conv_bn_relu6(c, self.last_channel, 1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(self.last_channel,
                                                                   num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")

    def forward(self, x):
        x = nn.functional.adaptive_avg_pool2d(self.features(x), (1, 1))
        return self.classifier(torch.flatten(x, 1))


def mobilenet_v2(*, num_classes: int = 1000, width_mult: float = 1.0, first_stride: int = 2,
                 in_channels: int = 3, last_channel: int = 1280) -> MobileNetV2:
    """MobileNetV2 (torchvision layout). ``first_stride=1`` for 32x32 inputs."""
    return MobileNetV2(num_classes=num_classes, width_mult=width_mult,
                       first_stride=first_stride, in_channels=in_channels,
                       last_channel=last_channel)


# -- ViTs --------------------------------------------------------------------------------
class PatchEmbed(nn.Module):
    def __init__(self, image_size: int, patch: int, in_channels: int, dim: int):
        super().__init__()
        if image_size % patch:
            raise ValueError(f"image_size {image_size} must be a multiple of patch {patch}")
        self.num_patches = (image_size // patch) ** 2
        self.proj = nn.Conv2d(in_channels, dim, patch, patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)     # (B, N, dim)


class Attention(nn.Module):
    """timm's ``Attention`` (fused qkv, hand-written scaled dot product)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(b, n, c)
        return self.proj(x)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """timm's pre-norm ``Block``."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class _VitBase(nn.Module):
    def __init__(self, image_size, patch, in_channels, dim, num_classes):
        super().__init__()
        self.patch_embed = PatchEmbed(image_size, patch, in_channels, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, self.patch_embed.num_patches + 1, dim)
                                      * 0.02)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)
        nn.init.normal_(self.cls_token, std=0.02)

    def tokens(self, x):
        x = self.patch_embed(x)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        return torch.cat((cls, x), dim=1) + self.pos_embed


class VisionTransformer(_VitBase):
    def __init__(self, *, image_size=224, patch=16, in_channels=3, dim=192, depth=12,
                 heads=3, mlp_ratio=4.0, num_classes=1000):
        super().__init__(image_size, patch, in_channels, dim, num_classes)
        self.blocks = nn.Sequential(*(Block(dim, heads, mlp_ratio) for _ in range(depth)))

    def forward(self, x):
        x = self.norm(self.blocks(self.tokens(x)))
        return self.head(x[:, 0])


def deit_tiny(*, image_size: int = 224, patch: int = 16, in_channels: int = 3, dim: int = 192,
              depth: int = 12, heads: int = 3, mlp_ratio: float = 4.0,
              num_classes: int = 1000) -> VisionTransformer:
    """DeiT-tiny-shaped ViT (timm's ``deit_tiny_patch16_224`` without distillation)."""
    return VisionTransformer(image_size=image_size, patch=patch, in_channels=in_channels,
                             dim=dim, depth=depth, heads=heads, mlp_ratio=mlp_ratio,
                             num_classes=num_classes)


class EncoderViT(_VitBase):
    """A ViT whose blocks are ``nn.TransformerEncoderLayer``: with ``batch_first=False`` the
    tokens go through the encoder as (N, B, dim), as older code writes it."""

    def __init__(self, *, image_size=224, patch=16, in_channels=3, dim=192, depth=12,
                 heads=3, mlp_ratio=4.0, num_classes=1000, batch_first=True,
                 norm_first=True):
        super().__init__(image_size, patch, in_channels, dim, num_classes)
        self.batch_first = batch_first
        layer = nn.TransformerEncoderLayer(dim, heads, int(dim * mlp_ratio), dropout=0.0,
                                           activation="gelu", layer_norm_eps=1e-6,
                                           batch_first=batch_first, norm_first=norm_first)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)

    def forward(self, x):
        x = self.tokens(x)
        if self.batch_first:
            x = self.encoder(x)
        else:
            x = self.encoder(x.transpose(0, 1)).transpose(0, 1)
        return self.head(self.norm(x)[:, 0])


def vit_encoder(*, image_size: int = 224, patch: int = 16, in_channels: int = 3,
                dim: int = 192, depth: int = 12, heads: int = 3, mlp_ratio: float = 4.0,
                num_classes: int = 1000, batch_first: bool = True,
                norm_first: bool = True) -> EncoderViT:
    """DeiT-tiny-shaped ViT from ``nn.TransformerEncoderLayer`` (pre-norm by default)."""
    return EncoderViT(image_size=image_size, patch=patch, in_channels=in_channels, dim=dim,
                      depth=depth, heads=heads, mlp_ratio=mlp_ratio, num_classes=num_classes,
                      batch_first=batch_first, norm_first=norm_first)
