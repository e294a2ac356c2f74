"""``vit-digits``: a small DeiT-style vision transformer on the digits split, with and without
HeatViT token selectors (Dong et al., HPCA'23).

The model
---------
8x8 digits cut into 2x2 patches (16 patch tokens) plus a class token, embedding
``dim`` = 48, 3 heads of 16 channels, ``depth`` = 4 pre-norm blocks (LayerNorm, attention,
LayerNorm, MLP 48 -> 96 -> 48 with GELU), a final LayerNorm and a linear head on the class
token. Learned position embeddings, no distillation token.

The token selector (simplified from papers.md §5.2)
----------------------------------------------------
A selector sits before each block listed in ``selector_blocks``. It reads the output of that
block's first LayerNorm (the block computes it anyway, so the selector needs no LayerNorm of
its own) and, for each head ``i`` (channels ``i*d .. (i+1)*d``) of each candidate token::

    hidden_i = GELU(W1 @ x_i + b1)           # d -> selector_hidden, weights shared by heads
    logit_i  = w2 . hidden_i + b2            # one keep logit per head
    score    = sum_i a_i * sigmoid(logit_i)  # a = softmax(head_logits): fixed head weights

``sigmoid(logit)`` is the 2-class softmax of HeatViT's per-head keep/prune classifier
(``softmax([l0, l1])[0] = sigmoid(l0 - l1)``), which is why the hardware needs a sigmoid unit.
What is simplified, and why:

- the per-token "SE-net" head weights of §5.2 item 1 become one learned weight per head
  (``a``), so the fusion is a constant weighted sum;
- the "global" half of §5.2 item 2 (the policy-masked mean over all tokens) is dropped: it
  needs a second pass over the tokens, and the selector here is one streaming pass;
- the per-head MLP weights are shared by the heads, as they actually are in the first
  author's code (§5.2 item 7), and the MLP is 2 layers (d -> 8 -> 1) instead of 4.

Keep decision: training uses hard Gumbel-softmax samples of ``[log s, log(1 - s)]``
(straight-through), multiplied by the previous stage's decision; inference keeps a token iff
``score >= keep_threshold`` (0.5), which is image-adaptive. The class token and existing
package tokens are always kept. The tokens pruned at a stage are folded into one new
**package token**, appended after the kept tokens, as the score-weighted average of Eq. 10:
``sum_t s_t x_t / sum_t s_t`` over the pruned tokens (with the division that the
development code comments out, §5.2 item 5).

Training (simplified latency-aware multi-stage schedule)
--------------------------------------------------------
1. The backbone is trained alone (``backbone_epochs``).
2. Selectors are inserted and the whole model is fine-tuned for ``selector_epochs`` with
   ``CE + ratio_weight * sum_k (mean keep_k - target_k)**2 + KL(teacher || student)``, the
   backbone's own float predictions being the teacher. Each selector's target keep ratio
   (relative to the tokens reaching it) decays linearly from 1 to its final value over the
   first half of the epochs, stage by stage (the earlier selector reaches its target first):
   this stands in for HeatViT's latency-aware schedule, which picks insertion blocks and
   pruning rates by the measured latency of each block. Here every block has the same
   latency per token, so the schedule only orders the stages.
3. Gumbel sampling keeps a token with probability ``s``, so the trained scores sit near the
   target ratio rather than near 0 or 1, and a fixed 0.5 threshold would keep nearly
   everything: :func:`calibrate_thresholds` sets each selector's inference threshold to
   the score quantile that keeps its target fraction of the training images' tokens.

The variants are fine-tuned from the shipped (float16) backbone file, so
``python -m chipforge.zoo.vit`` reproduces every file.

Files
-----
``chipforge/zoo/<name>.npz``, written without pickle: every parameter as a float16 array
under its PyTorch name, and the architecture plus training record as JSON under
``"__vit__"``. :func:`load_vit` checks the file and returns a :class:`VitModel`.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["VIT_FORMAT_VERSION", "VIT_VARIANTS", "VitConfig", "VitModel", "load_vit",
           "save_vit", "train_vit", "vit_path"]

VIT_FORMAT_VERSION = 1
ZOO_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True, kw_only=True)
class VitConfig:
    """Architecture of a ``vit-digits`` model (the trained parameters live in the npz)."""

    image_size: int = 8
    """Side of the (square) input image."""
    channels: int = 1
    """Channels of the input image; a patch holds ``channels * patch_size**2`` values in
    (channel, row, column) order, as a ``Conv2d`` patch embedding reads them."""
    patch_size: int = 2
    """Side of a square patch; ``(image_size // patch_size)**2`` patch tokens."""
    dim: int = 48
    """Embedding width D."""
    heads: int = 3
    """Attention heads; each has ``dim // heads`` channels."""
    depth: int = 4
    """Transformer blocks."""
    mlp_hidden: int = 96
    """Hidden width of each block's MLP."""
    num_classes: int = 10
    norm_eps: float = 1e-5
    """Epsilon of every LayerNorm (PyTorch's default 1e-5; timm's ViTs use 1e-6)."""
    selector_blocks: tuple[int, ...] = ()
    """Blocks (0-based) that have a token selector in front of them; empty = baseline."""
    keep_ratios: tuple[float, ...] = ()
    """Training target of each selector: the fraction of the candidate tokens reaching it
    (patch tokens still alive) that it keeps."""
    selector_hidden: int = 8
    """Hidden width of the per-head selector MLP."""
    selector_center: bool = False
    """The selectors score each token relative to the image's mean live token (their
    global feature; ``TokenSelectorConfig.center``). False: each token alone (the bundled
    ``vit-digits-keep*`` models)."""
    keep_threshold: float = 0.5
    """Inference: a token is kept iff its fused score is >= this (when ``keep_thresholds``
    is empty)."""
    keep_thresholds: tuple[float, ...] = ()
    """Inference threshold of each selector, calibrated after training so that each keeps
    its target fraction of the training images' tokens (:func:`calibrate_thresholds`)."""
    engine_threshold_codes: tuple[int, ...] = ()
    """The 8-bit engine's threshold of each selector on its Q0.7 score codes, calibrated on
    the engine's own (PLAN-sigmoid) scores; empty: ``round(threshold * 128)``."""

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError(f"patch_size must divide image_size, not {self.patch_size} "
                             f"into {self.image_size}")
        if self.dim % self.heads:
            raise ValueError(f"heads must divide dim, not {self.heads} into {self.dim}")
        if len(self.selector_blocks) != len(self.keep_ratios):
            raise ValueError("selector_blocks and keep_ratios must have the same length, not "
                             f"{len(self.selector_blocks)} and {len(self.keep_ratios)}")
        if list(self.selector_blocks) != sorted(set(self.selector_blocks)) or any(
                not 0 <= b < self.depth for b in self.selector_blocks):
            raise ValueError("selector_blocks must be increasing block indices in "
                             f"0..{self.depth - 1}, not {self.selector_blocks}")
        if any(not 0 < r <= 1 for r in self.keep_ratios):
            raise ValueError(f"keep_ratios must be in (0, 1], not {self.keep_ratios}")
        if self.engine_threshold_codes and len(self.engine_threshold_codes) != len(
                self.keep_ratios):
            raise ValueError("engine_threshold_codes must be empty or one per selector, not "
                             f"{self.engine_threshold_codes}")
        if self.keep_thresholds and len(self.keep_thresholds) != len(self.keep_ratios):
            raise ValueError("keep_thresholds must be empty or one per selector, not "
                             f"{self.keep_thresholds}")

    def engine_code(self, selector: int, score_frac: int) -> int:
        """The 8-bit engine's threshold on its integer score codes (``score_frac``
        fraction bits) of selector ``selector``: calibrated on the engine's own scores when
        ``engine_threshold_codes`` has it, else the float threshold rounded."""
        if self.engine_threshold_codes:
            return self.engine_threshold_codes[selector]
        return round(self.threshold(selector) * (1 << score_frac))

    def threshold(self, selector: int) -> float:
        """Inference keep threshold of selector number ``selector``."""
        return self.keep_thresholds[selector] if self.keep_thresholds else self.keep_threshold

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def patch_dim(self) -> int:
        return self.channels * self.patch_size ** 2

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> VitConfig:
        known = set(cls.__dataclass_fields__)
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown VitConfig fields: {', '.join(sorted(unknown))}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


@dataclass
class VitModel:
    """A trained ``vit-digits`` model: architecture, float parameters and training record."""

    config: VitConfig
    params: dict[str, np.ndarray]
    """float32 arrays under PyTorch's parameter names."""
    info: dict[str, Any] = field(default_factory=dict)
    """Training record (seed, epochs, float accuracies)."""
    name: str = ""

    def with_selector_center(self, center: bool | None) -> VitModel:
        """This model with all its selectors switched to centered / uncentered
        (``VitConfig.selector_center``; the same weights); None: unchanged."""
        if center is None:
            return self
        return replace(self, config=replace(self.config, selector_center=center))


# name -> (selector blocks, target keep ratio of each selector)
VIT_VARIANTS: dict[str, tuple[tuple[int, ...], tuple[float, ...]]] = {
    "vit-digits": ((), ()),
    "vit-digits-keep80": ((1, 2), (0.8, 0.8)),
    "vit-digits-keep60": ((1, 2), (0.6, 0.7)),
    "vit-digits-keep50": ((1, 2), (0.5, 0.6)),
}


def vit_path(name: str) -> Path:
    if name not in VIT_VARIANTS:
        raise ValueError(f"unknown ViT model {name!r}; models: {', '.join(VIT_VARIANTS)}")
    return ZOO_DIR / f"{name}.npz"


def save_vit(model: VitModel, path: str | Path) -> None:
    """Write ``model`` as an ordinary IR graph (:func:`chipforge.sim.vit_graph.vit_to_graph`,
    ``.npz`` without pickle); parameters rounded to float16 as shipped."""
    import dataclasses

    from chipforge.sim.graph import save_graph
    from chipforge.sim.vit_graph import vit_to_graph

    params = {k: np.asarray(v, dtype=np.float16).astype(np.float32)
              for k, v in model.params.items()}
    save_graph(vit_to_graph(dataclasses.replace(model, params=params)), path)


def load_vit(name_or_path: str | Path) -> VitModel:
    """Load a bundled ViT by name (``vit-digits``, ``vit-digits-keep50``, ...) or a path:
    an IR graph file (lowered by :func:`chipforge.sim.vit_graph.graph_to_vit`) or a file of
    the earlier ViT format (parameters under PyTorch names, ``__vit__`` header)."""
    path = (vit_path(name_or_path) if isinstance(name_or_path, str)
            and name_or_path in VIT_VARIANTS else Path(name_or_path))
    try:
        with np.load(path, allow_pickle=False) as f:
            files = set(f.files)
    except FileNotFoundError:
        raise ValueError(f"ViT model file {path} does not exist") from None
    except (zipfile.BadZipFile, ValueError, OSError) as e:
        raise ValueError(f"ViT model file {path} is not a valid npz: {e}") from None
    if "__graph__" in files:
        from chipforge.sim.graph import load_graph
        from chipforge.sim.vit_graph import graph_to_vit

        return graph_to_vit(load_graph(path))
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    if "__vit__" not in arrays:
        raise ValueError(f"ViT model file {path} has no __vit__ header")
    header = json.loads(str(arrays.pop("__vit__")))
    if header.get("format") != VIT_FORMAT_VERSION:
        raise ValueError(f"ViT model file {path} has format {header.get('format')!r}, "
                         f"expected {VIT_FORMAT_VERSION}")
    config = VitConfig.from_dict(header["config"])
    params = {k: v.astype(np.float32) for k, v in arrays.items()}
    missing = set(_param_shapes(config)) - set(params)
    if missing:
        raise ValueError(f"ViT model file {path} lacks parameters: {', '.join(sorted(missing))}")
    for k, shape in _param_shapes(config).items():
        if params[k].shape != shape:
            raise ValueError(f"ViT model file {path}: {k} has shape {params[k].shape}, "
                             f"expected {shape}")
    return VitModel(config, params, header.get("info", {}), header.get("name", ""))


def _param_shapes(c: VitConfig) -> dict[str, tuple[int, ...]]:
    shapes = {"patch_embed.weight": (c.dim, c.patch_dim), "patch_embed.bias": (c.dim,),
              "cls_token": (1, 1, c.dim), "pos_embed": (1, c.num_patches + 1, c.dim),
              "norm.weight": (c.dim,), "norm.bias": (c.dim,),
              "head.weight": (c.num_classes, c.dim), "head.bias": (c.num_classes,)}
    for b in range(c.depth):
        p = f"blocks.{b}."
        shapes.update({p + "norm1.weight": (c.dim,), p + "norm1.bias": (c.dim,),
                       p + "qkv.weight": (3 * c.dim, c.dim), p + "qkv.bias": (3 * c.dim,),
                       p + "proj.weight": (c.dim, c.dim), p + "proj.bias": (c.dim,),
                       p + "norm2.weight": (c.dim,), p + "norm2.bias": (c.dim,),
                       p + "fc1.weight": (c.mlp_hidden, c.dim), p + "fc1.bias": (c.mlp_hidden,),
                       p + "fc2.weight": (c.dim, c.mlp_hidden), p + "fc2.bias": (c.dim,)})
    for s in range(len(c.selector_blocks)):
        p = f"selectors.{s}."
        shapes.update({p + "fc1.weight": (c.selector_hidden, c.head_dim),
                       p + "fc1.bias": (c.selector_hidden,),
                       p + "fc2.weight": (1, c.selector_hidden), p + "fc2.bias": (1,),
                       p + "head_logits": (c.heads,)})
    return shapes


# --------------------------------------------------------------------------------------
# Training (torch, imported lazily so that loading a model needs numpy only)


def _torch_model(c: VitConfig):
    import torch
    from torch import nn
    from torch.nn import functional as F  # noqa: N812

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm1 = nn.LayerNorm(c.dim, eps=c.norm_eps)
            self.norm2 = nn.LayerNorm(c.dim, eps=c.norm_eps)
            self.qkv, self.proj = nn.Linear(c.dim, 3 * c.dim), nn.Linear(c.dim, c.dim)
            self.fc1, self.fc2 = nn.Linear(c.dim, c.mlp_hidden), nn.Linear(c.mlp_hidden, c.dim)

        def attention(self, h, policy):
            n, t, _ = h.shape
            q, k, v = self.qkv(h).reshape(n, t, 3, c.heads, c.head_dim).permute(2, 0, 3, 1, 4)
            logits = q @ k.transpose(-2, -1) / c.head_dim ** 0.5
            # Softmax over the live keys only (DynamicViT's softmax with policy): masking
            # the keys is the same as removing the pruned tokens, and stays differentiable.
            e = torch.exp(logits - logits.amax(-1, keepdim=True)) * policy[:, None, None, :]
            attn = e / (e.sum(-1, keepdim=True) + 1e-6)
            return self.proj((attn @ v).transpose(1, 2).reshape(n, t, c.dim))

        def forward(self, x, policy, h=None):
            h = self.norm1(x) if h is None else h
            x = x + self.attention(h, policy)
            return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))

    class Selector(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(c.head_dim, c.selector_hidden)
            self.fc2 = nn.Linear(c.selector_hidden, 1)
            self.head_logits = nn.Parameter(torch.zeros(c.heads))

        def forward(self, h, live=None):
            """Keep scores of the tokens ``h`` (N, T, D); ``live`` (N, T): the tokens still
            alive, over which a centered selector takes the image's mean token."""
            n, t, _ = h.shape
            if c.selector_center:
                w = torch.ones(n, t) if live is None else live
                w = w / w.sum(1, keepdim=True).clamp_min(1)
                h = h - (h * w[..., None]).sum(1, keepdim=True)
            per_head = h.reshape(n, t, c.heads, c.head_dim)
            logit = self.fc2(F.gelu(self.fc1(per_head)))[..., 0]      # (n, t, heads)
            a = torch.softmax(self.head_logits, 0)
            return (torch.sigmoid(logit) * a).sum(-1)                 # keep score in (0, 1)

    class Vit(nn.Module):
        def __init__(self):
            super().__init__()
            self.patch_embed = nn.Linear(c.patch_dim, c.dim)
            self.cls_token = nn.Parameter(torch.zeros(1, 1, c.dim))
            self.pos_embed = nn.Parameter(torch.randn(1, c.num_patches + 1, c.dim) * 0.02)
            self.blocks = nn.ModuleList(Block() for _ in range(c.depth))
            self.selectors = nn.ModuleList(Selector() for _ in c.selector_blocks)
            self.norm = nn.LayerNorm(c.dim, eps=c.norm_eps)
            self.head = nn.Linear(c.dim, c.num_classes)
            self.decision = "gumbel"
            """Training keep decisions: "gumbel" (hard Gumbel-softmax samples, the zoo's
            recipe) or "quantile" (the batch's top target fraction, straight-through)."""
            self.targets = [1.0] * len(c.selector_blocks)
            """Current keep-ratio targets (set each epoch by fine_tune_selectors)."""

        def forward(self, images, use_selectors=True, tau=1.0, scores_out=None):
            n = images.shape[0]
            g, p = c.image_size // c.patch_size, c.patch_size
            patches = images.reshape(n, c.channels, g, p, g, p).permute(0, 2, 4, 1, 3, 5)
            patches = patches.reshape(n, g * g, c.patch_dim)
            x = torch.cat([self.cls_token.expand(n, -1, -1), self.patch_embed(patches)], 1)
            x = x + self.pos_embed
            policy = torch.ones(n, x.shape[1], device=x.device)
            candidate = torch.ones_like(policy)
            candidate[:, 0] = 0                                  # the class token stays
            keep_fractions = []
            for b, block in enumerate(self.blocks):
                h = None
                if use_selectors and b in c.selector_blocks:
                    selector = self.selectors[c.selector_blocks.index(b)]
                    h = block.norm1(x)
                    score = selector(h, policy)
                    if scores_out is not None:
                        scores_out.append((score, policy * candidate))
                    alive = policy * candidate
                    if self.training and self.decision == "quantile":
                        # Keep the batch's top target fraction of the live candidates, as the
                        # calibrated inference thresholds will; straight-through gradient.
                        s_index = c.selector_blocks.index(b)
                        live = score.detach()[alive.bool()]
                        cut = torch.quantile(live, 1 - self.targets[s_index])
                        keep = (score >= cut).float() + score - score.detach()
                    elif self.training:
                        logp = torch.stack([score, 1 - score], -1).clamp_min(1e-6).log()
                        keep = F.gumbel_softmax(logp, tau=tau, hard=True)[..., 0]
                    else:
                        keep = (score >= c.threshold(c.selector_blocks.index(b))).float()
                    alive = policy * candidate
                    new_policy = policy * (1 - candidate) + alive * keep
                    pruned = alive * (1 - keep)
                    weight = pruned * score
                    package = (weight[..., None] * x).sum(1, keepdim=True) / (
                        weight.sum(1)[:, None, None] + 1e-6)
                    has_package = (pruned.sum(1, keepdim=True) > 0).float().detach()
                    keep_fractions.append((alive * keep).sum(1) / alive.sum(1).clamp_min(1))
                    x = torch.cat([x, package], 1)
                    policy = torch.cat([new_policy, has_package], 1)
                    candidate = torch.cat([candidate, torch.zeros_like(has_package)], 1)
                    h = block.norm1(x)
                x = block(x, policy, h)
            return self.head(self.norm(x[:, 0])), keep_fractions

    return Vit()


def _accuracy(model, x, y, use_selectors=True) -> float:
    import torch

    model.eval()
    with torch.no_grad():
        logits, _ = model(x, use_selectors)
    return float((logits.argmax(1) == y).float().mean())


def train_vit(name: str, *, seed: int = 0, backbone_epochs: int = 80,
              selector_epochs: int = 60, backbone: VitModel | None = None,
              ratio_weight: float = 4.0, verbose: bool = False) -> VitModel:
    """Train the ``name`` variant (see :data:`VIT_VARIANTS`) from scratch, or fine-tune
    selectors on a given ``backbone``. Deterministic for a given seed (CPU, 1 thread)."""
    import torch
    from torch.nn import functional as F  # noqa: N812

    from chipforge.zoo.data import digits

    if name not in VIT_VARIANTS:
        raise ValueError(f"unknown ViT model {name!r}; models: {', '.join(VIT_VARIANTS)}")
    blocks, ratios = VIT_VARIANTS[name]
    config = VitConfig(selector_blocks=blocks, keep_ratios=ratios)
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    data = digits(8)
    x_train = torch.tensor(np.asarray(data.x_train))[:, 0]
    y_train = torch.tensor(np.asarray(data.y_train))
    x_test = torch.tensor(np.asarray(data.x_test))[:, 0]
    y_test = torch.tensor(np.asarray(data.y_test))
    model = _torch_model(config)
    info: dict[str, Any] = {"seed": seed}

    def batches(gen):
        order = torch.randperm(len(x_train), generator=gen)
        for i in range(0, len(order), 64):
            yield order[i:i + 64]

    gen = torch.Generator().manual_seed(seed)
    if backbone is None:
        opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=backbone_epochs * 23)
        for epoch in range(backbone_epochs):
            model.train()
            for idx in batches(gen):
                logits, _ = model(x_train[idx], use_selectors=False)
                loss = F.cross_entropy(logits, y_train[idx], label_smoothing=0.1)
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
            if verbose and epoch % 25 == 0:
                print(epoch, float(loss.detach()), _accuracy(model, x_test, y_test, False))
        info["backbone_epochs"] = backbone_epochs
    else:
        state = {k: torch.tensor(v) for k, v in backbone.params.items()}
        model.load_state_dict(state, strict=False)
        info.update({k: v for k, v in backbone.info.items() if k != "seed"},
                    backbone_seed=backbone.info.get("seed"))
    info["float_accuracy_backbone"] = _accuracy(model, x_test, y_test, False)

    if blocks:
        teacher = _torch_model(VitConfig())
        teacher.load_state_dict({k: v for k, v in model.state_dict().items()
                                 if not k.startswith("selectors.")})
        teacher.eval()

        def report(epoch, loss, targets):
            if verbose and epoch % 10 == 0:
                print(epoch, targets, loss, _accuracy(model, x_test, y_test))

        fine_tune_selectors(model, teacher, x_train, y_train, ratios, epochs=selector_epochs,
                            ratio_weight=ratio_weight, generator=gen, on_epoch=report)
        info["selector_epochs"] = selector_epochs
        params = {k: v.detach().numpy().astype(np.float32)
                  for k, v in model.state_dict().items()}
        config = calibrate_thresholds(VitModel(config, params)).config
        model = _torch_model(config)
        model.load_state_dict({k: torch.tensor(v) for k, v in params.items()})
        info["float_accuracy"] = _accuracy(model, x_test, y_test)
    else:
        info["float_accuracy"] = info["float_accuracy_backbone"]
    params = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    return VitModel(config, params, info, name)


def selector_targets(ratios, epoch: int, epochs: int) -> list[float]:
    """Keep-ratio schedule: each selector's target decays linearly from 1 to its final
    ratio over the first half of the epochs, stage s reaching it at (s + 1) / stages of
    that half (the earlier selector first)."""
    warm = epochs // 2
    return [1 - min(1.0, epoch / max(1, warm * (s + 1) / len(ratios))) * (1 - final)
            for s, final in enumerate(ratios)]


def fine_tune_selectors(model, teacher, x_train, y_train, ratios, *, epochs: int,
                        ratio_weight: float = 4.0, generator, lr: float = 5e-4,
                        batch_size: int = 64, optimizer=None, start_epoch: int = 0,
                        on_epoch=None, lr_factor=None):
    """Train ``model`` (a torch ViT from :func:`_torch_model` with selectors) for
    ``epochs`` with ``CE + ratio_weight * sum_k (keep_k - target_k)**2 + KL(teacher ||
    model)`` under the :func:`selector_targets` schedule (see the module doc). Batches are
    drawn with ``generator``; ``optimizer`` and ``start_epoch`` resume an interrupted run;
    ``on_epoch(epoch, loss, targets)`` is called after each epoch (checkpoints, progress);
    ``lr_factor(epoch)`` scales each parameter group's ``initial_lr`` for that epoch.
    Returns the optimizer."""
    import torch
    from torch.nn import functional as F  # noqa: N812

    opt = optimizer or torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    for epoch in range(start_epoch, epochs):
        model.train()
        if lr_factor is not None:
            for group in opt.param_groups:
                group["lr"] = group.setdefault("initial_lr", group["lr"]) * lr_factor(epoch)
        targets = selector_targets(ratios, epoch, epochs)
        model.targets = targets
        order = torch.randperm(len(x_train), generator=generator)
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            logits, fractions = model(x_train[idx])
            with torch.no_grad():
                teacher_logits, _ = teacher(x_train[idx], use_selectors=False)
            ratio_loss = sum((f.mean() - t) ** 2 for f, t in zip(fractions, targets,
                                                                  strict=True))
            kl = F.kl_div(F.log_softmax(logits, 1), F.softmax(teacher_logits, 1),
                          reduction="batchmean")
            loss = F.cross_entropy(logits, y_train[idx]) + ratio_weight * ratio_loss + kl
            opt.zero_grad()
            loss.backward()
            opt.step()
        if on_epoch is not None:
            on_epoch(epoch, float(loss.detach()), targets)
    return opt


def calibrate_thresholds(model: VitModel, n_images: int = 1437,
                         images: np.ndarray | None = None) -> VitModel:
    """Set each selector's inference threshold to the score quantile that keeps its target
    fraction of the live candidate tokens of the first ``n_images`` training images
    (default: the digits training split), stage by stage (a stage's candidates depend on
    the thresholds before it)."""
    import dataclasses

    import torch

    from chipforge.zoo.data import digits

    c = model.config
    if images is None:
        images = digits(c.image_size).x_train
    images = torch.tensor(np.asarray(images[:n_images], dtype=np.float32))
    thresholds: list[float] = []
    for s, ratio in enumerate(c.keep_ratios):
        trial = dataclasses.replace(c, keep_thresholds=tuple(thresholds + [0.5] * (
            len(c.keep_ratios) - s)))
        net = _torch_model(trial)
        net.load_state_dict({k: torch.tensor(v) for k, v in model.params.items()})
        net.eval()
        scores: list = []
        with torch.no_grad():
            net(images, scores_out=scores)
        score, alive = scores[s]
        live = score[alive.bool()].numpy()
        thresholds.append(float(np.quantile(live, 1 - ratio)))
    config = dataclasses.replace(c, keep_thresholds=tuple(thresholds))
    return VitModel(config, model.params, model.info, model.name)


def main(argv: list[str] | None = None) -> int:
    """``python -m chipforge.zoo.vit [OUT_DIR]``: retrain every variant (under 10 minutes)."""
    import sys
    import time

    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0]) if args else ZOO_DIR
    start = time.perf_counter()
    backbone = train_vit("vit-digits", backbone_epochs=BACKBONE_EPOCHS)
    save_vit(backbone, out / "vit-digits.npz")
    backbone = load_vit(out / "vit-digits.npz")     # fine-tune from the shipped weights
    print(f"vit-digits: float accuracy {backbone.info['float_accuracy']:.4f} "
          f"({time.perf_counter() - start:.0f} s)")
    for name in VIT_VARIANTS:
        if name == "vit-digits":
            continue
        model = train_vit(name, backbone=backbone, selector_epochs=SELECTOR_EPOCHS)
        save_vit(model, out / f"{name}.npz")
        print(f"{name}: float accuracy {model.info['float_accuracy']:.4f} "
              f"({time.perf_counter() - start:.0f} s)")
    return 0


BACKBONE_EPOCHS = 80
SELECTOR_EPOCHS = 60

if __name__ == "__main__":
    raise SystemExit(main())


def calibrated_variant(name: str, meta_key: str):
    """The bundled ``vit-digits-keep*`` graph ``name`` with its fixed-point formats under
    ``graph.meta[meta_key]``, calibrated on the data it was trained on (the first 256 digits
    training images): the zoo owns its models' data, so the family gets the model ready."""
    from chipforge import zoo
    from chipforge.heatvit import calibrate_graph
    from chipforge.sim.vit_graph import graph_to_vit
    from chipforge.zoo.data import digits

    graph = zoo.load(name)
    graph.meta[meta_key] = {"fracs": list(calibrate_graph(graph_to_vit(graph),
                                                          digits(8).x_train)),
                            "label": "256 digits training images"}
    return graph
