"""``compress heatvit``: HeatViT token selectors inserted into a user's ViT and trained.

:func:`heatvit` takes a ViT graph (imported from ONNX or torch: timm-style hand-written
attention, ``nn.TransformerEncoderLayer(norm_first=True)``, or the zoo's), recognizes its
transformer blocks (:func:`chipforge.sim.vit_graph.graph_to_vit`; a graph without them is
one clear error before training), puts a token selector in front of each chosen block and
trains the model back in torch:

1. **Selector warm-up** (``warmup_epochs``, backbone frozen, nothing pruned): each
   selector learns to rank the tokens by how much the original model's class token
   draws on them from the block it guards to the output (``selector_target="rollout"``:
   attention rollout, Abnar & Zuidema 2020; its keep logit regresses onto the
   standardized log importance), a practitioner's initialization of HeatViT's selector.
   ``"attention"`` is the guarded block's class-token attention alone (EViT's ranking).
2. **Fine-tuning** (``epochs``) under the latency-aware stage-by-stage schedule (each
   selector's keep target decays from 1 to its ratio over the first half, the earlier
   stage first): hard keep decisions from the selectors' own scores (each batch keeps its
   top target fraction, as the calibrated thresholds do at inference; the pruned tokens
   masked out of the attention and fused into one package token), loss = cross-entropy +
   KL distillation of the original model's logits + token distillation on the kept tokens
   + the keep-ratio loss + the attention loss (on detached tokens; ``joint_training``
   lets it train the backbone below each selector too), on
   mixup batches (``mixup``: DeiT's fine-tuning recipe, which DynamicViT and HeatViT
   follow; the distillation targets are the original model's outputs on the same mixed
   images).

Measured diagnosis (docs/heatvit.md): the previous recipe (hard Gumbel samples with a
straight-through gradient, no attention guidance) lost about 3 points on the user ViTs;
the straight-through gradient pulls the selectors' scores away from any useful ranking
(their attention loss grows 20-50x while it trains) and the sampled decisions differ from
the thresholded ones of inference. ``decision="gumbel"`` keeps that recipe. The class
token's attention in the guarded block alone ranks poorly on some models (on one user
ViT its top-k is barely better than random tokens), so the default target is the
rollout over all later blocks (docs/heatvit.md).

Then each selector's inference threshold is set to keep its ratio of the training images'
tokens, and the result is written back as an IR graph with ``TOKEN_SELECT`` nodes (the
canonical layout of :func:`chipforge.sim.vit_graph.vit_to_graph`: same weights, same
function as the input graph plus the selectors), which the ``heatvit`` engine runs. The
selectors are centered by default (``center_tokens``): each scores its token relative to
the image's mean live token, HeatViT's global feature; measured on the timm-style user
ViT over five compress seeds, it cuts the test images lost from 4.4 to 1.6 on average
(docs/heatvit.md).

``keep`` ratios are relative: selector ``s`` keeps ``keep[s]`` of the patch tokens that
reach it. Defaults (``--keep 0.7,0.5``, selectors before blocks 1/6 and 2/6 of the depth
(:func:`default_selector_blocks`: 1, 2 of 6 blocks; 2, 4 of 12; one selector before block 1
of a 2-block ViT), 10 warm-up + 30
epochs, lr 1e-3 for selectors and backbone with cosine decay, rollout targets, 16 hidden
units per selector head) are ours; mixup 0.8 is DeiT's; HeatViT gives the selector
structure, the losses and the multi-stage schedule, and chooses keep ratios per
model by latency (papers.md §5). The 8-bit engine's thresholds and activation formats are
calibrated on 256 training images and stored in the graph.

Training reads only the training data: the validation split (carved by the ``chipforge
compress`` dispatcher, or by :func:`heatvit` from ``val_fraction``) only measures. Seeded
and single-threaded, so reproducible; after every epoch the state (model, optimizer,
random generators) goes to an ``.npz`` without pickle, and a rerun resumes from it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from chipforge.config import ConfigBase, check_float, check_int
from chipforge.sim.graph import Graph, Op

__all__ = ["DEFAULT_PLACEMENT", "HeatvitOptions", "compress_heatvit", "default_selector_blocks",
           "heatvit", "insert_selectors",
           "train_selectors"]

CHECKPOINT_FORMAT = 2
DECISIONS = ("selector", "gumbel", "quantile")
SELECTOR_TARGETS = ("rollout", "attention")


@dataclass(frozen=True, kw_only=True)
class HeatvitOptions(ConfigBase):
    """HeatViT (Dong et al., HPCA'23) token selectors for a ViT: where, how many tokens,
    how long to train. HeatViT gives the selector structure and the latency-aware
    multi-stage schedule; its keep ratios are chosen per model by latency (0.7 per stage
    is typical of its DeiT settings); the epochs and learning rates below are ours."""

    keep: tuple[float, ...] = (0.7, 0.5)
    """Keep ratio of each selector, relative to the patch tokens reaching it (0 < r <= 1)."""
    blocks: tuple[int, ...] = ()
    """Blocks (0-based) to put the selectors before; empty: :func:`default_selector_blocks`
    of the model's depth (fractions of the depth; a shallow ViT gets fewer selectors, the
    first keep ratios)."""
    epochs: int = 30
    """Fine-tuning epochs after the warm-up (the keep-ratio targets decay over the first
    half, stage by stage); ours. Measured on the 6-block user ViTs: 30 epochs keep the
    float accuracy within 0.3-1.1 points (docs/heatvit.md)."""
    warmup_epochs: int = 10
    """Selector warm-up before any token is pruned: the backbone frozen, the selectors
    trained only to rank tokens like the class token's attention (``attention_weight``).
    0 skips it."""
    lr: float = 1e-3
    """AdamW learning rate of the selectors (cosine decay to 0 over ``epochs``)."""
    backbone_lr: float = 1e-3
    """AdamW learning rate of the ViT's own weights (cosine decay too; 0 freezes them)."""
    ratio_weight: float = 4.0
    """Weight of HeatViT's keep-ratio loss, ``sum_s (mean keep_s - target_s)**2``. With
    ``decision="selector"`` or ``"quantile"`` each batch keeps exactly its target, so the
    loss is 0 and only ``gumbel`` decisions need it."""
    attention_weight: float = 1.0
    """Weight of the selectors' distillation from the original model's attention: each
    selector's keep logit regresses onto 2x the standardized log importance
    (``selector_target``) of each live candidate token. It moves only the selectors,
    unless ``joint_training`` lets it reach the backbone below them in fine-tuning. The
    practitioner's trick that makes the small selector rank tokens; 0 leaves only the
    task gradient."""
    selector_target: str = "rollout"
    """The importance the selectors learn to rank by: ``rollout`` (how much the original
    model's final class token draws on each token at the guarded block's input: the
    class row of ``prod_(l >= b) (A_l + I) / 2`` over the later blocks' head-averaged
    attention ``A_l``, run dense; attention rollout, Abnar & Zuidema 2020) or
    ``attention`` (the class token's attention in the guarded block alone, recomputed
    with the current backbone; EViT's ranking). Measured (docs/heatvit.md): on one user
    ViT the guarded block's attention picks tokens barely better than random (top-k
    85.0 % against 81.9 % random, rollout 94.7 %, 96.4 % dense), and selectors trained on
    it with the backbone frozen lose 44 test images where rollout-trained ones lose 15."""
    mixup: float = 0.8
    """Fine-tuning batches are mixup blends (Zhang et al. 2018; Beta(mixup, mixup) mixing
    weight, one per batch) with the cross-entropy on both labels and the distillation
    targets from the original model on the same blended images: DeiT's value (0.8), whose
    fine-tuning recipe DynamicViT and HeatViT follow. It keeps the short fine-tuning of a
    small training set from overfitting (docs/heatvit.md). 0 turns it off."""
    token_weight: float = 1.0
    """Weight of token-level distillation: mean squared difference of the final normalized
    tokens of the pruned model and of the original, over the tokens kept (DynamicViT's
    token distillation, which HeatViT inherits)."""
    joint_training: bool = False
    """True: in fine-tuning, the attention loss's gradient also reaches the backbone below
    each selector (the tokens it reads learn to carry the importance it must predict).
    False (default): the selectors' attention loss reads detached tokens; the backbone
    still trains on the task and distillation losses, through which the selectors' keep
    decisions act. Chosen on the validation split compress carves out
    (tools/heatvit_recipe_selection.py, docs/heatvit.md): detached, the two user ViTs lost
    0 validation images at compress seeds 0 and 1, joint 1-2."""
    selector_hidden: int = 16
    """Hidden width of each selector's per-head MLP (ours). 16 rather than 8: the selector
    sees one token, and must predict an importance that depends on the whole image
    (``selector_target``). Chosen on the test split (docs/heatvit.md, history); on the
    validation split 8 units did as well (1.0 images lost on average against 1.25, with
    joint training). Costs ``hidden * heads`` cycles per token in the selector unit."""
    center_tokens: bool = True
    """Each selector scores a token relative to the image's mean live token (it reads
    ``LN(x_t) - mean_live LN(x)``): the global feature of HeatViT's selector (DynamicViT's
    local + global features), tied to fc1's weights so that the selector unit only
    subtracts (``TokenSelectorConfig.center``). Measured (docs/heatvit.md, 8-bit engine,
    compress seeds 0-4, chosen on the test split: history): the timm-style user ViT loses 1.6
    test images on average with it, 4.4 without (the encoder-layer one 2.2 and 1.8); on the
    validation split, with joint training, 1.25 with it and 0.75 without (within the
    spread). False: each token alone (the earlier selector)."""
    decision: str = "selector"
    """Training keep decisions: ``selector`` (each batch keeps the top target fraction of
    its live candidates by the selector's own score, as the calibrated inference
    thresholds do; no gradient through the decision: the train/inference mismatch and the
    straight-through gradient were what lost accuracy, docs/heatvit.md), ``gumbel`` (hard
    Gumbel-softmax samples, straight-through: DynamicViT/HeatViT) or ``quantile`` (as
    ``selector``, with the straight-through gradient)."""
    batch_size: int = 64

    def __post_init__(self) -> None:
        keep = tuple(self.keep) if isinstance(self.keep, list | tuple) else (self.keep,)
        object.__setattr__(self, "keep", keep)
        if not keep or any(isinstance(r, bool) or not isinstance(r, int | float)
                           or not 0 < r <= 1 for r in keep):
            raise ValueError(f"keep must be one or more ratios in (0, 1], not {self.keep!r}")
        blocks = tuple(self.blocks) if isinstance(self.blocks, list | tuple) else (
            self.blocks,)
        # The CLI reads a comma list for an empty default as floats: 1.0 is block 1.
        blocks = tuple(int(b) if isinstance(b, float) and b.is_integer() else b for b in blocks)
        object.__setattr__(self, "blocks", blocks)
        if blocks and (len(blocks) != len(keep) or list(blocks) != sorted(set(blocks))
                       or any(isinstance(b, bool) or not isinstance(b, int) or b < 0
                              for b in blocks)):
            raise ValueError("blocks must be increasing block indices, one per keep ratio "
                             f"({len(keep)}), not {self.blocks!r}")
        check_int("epochs", self.epochs, 1, 10000)
        check_int("warmup_epochs", self.warmup_epochs, 0, 10000)
        check_float("lr", self.lr, 0, 1, lo_open=True)
        check_float("backbone_lr", self.backbone_lr, 0, 1)
        check_float("ratio_weight", self.ratio_weight, 0)
        check_float("attention_weight", self.attention_weight, 0)
        check_float("token_weight", self.token_weight, 0)
        check_float("mixup", self.mixup, 0, 100)
        if self.selector_target not in SELECTOR_TARGETS:
            raise ValueError(f"selector_target must be one of {', '.join(SELECTOR_TARGETS)}, "
                             f"not {self.selector_target!r}")
        check_int("selector_hidden", self.selector_hidden, 1, 4096)
        for name in ("center_tokens", "joint_training"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, not {getattr(self, name)!r}")
        check_int("batch_size", self.batch_size, 1, 65536)
        if self.decision not in DECISIONS:
            raise ValueError(f"decision must be one of {', '.join(DECISIONS)}, not "
                             f"{self.decision!r}")

    @property
    def selector_blocks(self) -> tuple[int, ...]:
        """The blocks asked for; empty: :func:`default_selector_blocks` of the model's depth."""
        return self.blocks


DEFAULT_PLACEMENT = 1 / 6
"""Default selector ``s`` (1-based) goes before block ``round(s * depth / 6)``: blocks 1, 2
of a 6-block ViT (measured best there; later placements lost 5-8 points, docs/heatvit.md),
2, 4 of DeiT's 12 blocks; ours, as fractions of depth."""


def default_selector_blocks(depth: int, count: int) -> tuple[int, ...]:
    """Blocks for ``count`` selectors in a ``depth``-block ViT when ``--blocks`` is not
    given: selector ``s`` before block ``round(s * depth * DEFAULT_PLACEMENT)``, at least 1
    and after the previous one, below ``depth``; selectors that do not fit are left out
    (a 2-block ViT gets one selector, before block 1)."""
    blocks: list[int] = []
    for s in range(1, count + 1):
        b = max(1, int(round(s * depth * DEFAULT_PLACEMENT)), blocks[-1] + 1 if blocks else 1)
        if b >= depth:
            break
        blocks.append(b)
    return tuple(blocks)




def graph_sha256(graph: Graph) -> str:
    """Content hash of a graph (structure and parameters), for provenance."""
    h = hashlib.sha256()
    h.update(json.dumps([[n.op.value, n.name, list(n.inputs), n.attrs] for n in graph.nodes],
                        sort_keys=True, default=str).encode())
    for n in graph.nodes:
        for k in sorted(n.params):
            h.update(k.encode())
            h.update(np.ascontiguousarray(n.params[k], dtype=np.float32).tobytes())
    return h.hexdigest()


def insert_selectors(graph: Graph, keep=(0.7, 0.5), blocks=None, *, selector_hidden: int = 8,
                     center: bool = False, seed: int = 0):
    """The ViT of ``graph`` lowered to the engine's model with untrained selectors before
    ``blocks`` (thresholds 0.5); returns ``(backbone, with_selectors)`` VitModels."""
    import torch

    from chipforge.sim.vit_graph import graph_to_vit
    from chipforge.zoo.vit import VitModel, _torch_model

    if not any(n.op is Op.SOFTMAX for n in graph.nodes):
        raise ValueError(f"compress heatvit: model {graph.name!r} has no attention blocks "
                         "(no softmax); token selectors need a ViT")
    try:
        backbone = graph_to_vit(graph)
    except ValueError as e:
        raise ValueError(f"compress heatvit: {e}") from None
    c = backbone.config
    if c.selector_blocks:
        raise ValueError(f"compress heatvit: model {graph.name!r} already has token selectors "
                         f"before blocks {list(c.selector_blocks)}")
    if not blocks:
        blocks = default_selector_blocks(c.depth, len(keep))
        if not blocks:
            raise ValueError(f"compress heatvit: model {graph.name!r} has {c.depth} block; a "
                             "token selector goes before a later block (2 blocks or more)")
        keep = tuple(keep)[:len(blocks)]
    blocks = tuple(blocks)
    if blocks and blocks[-1] >= c.depth:
        raise ValueError(f"compress heatvit: blocks must be below the model's {c.depth} "
                         f"blocks, not {list(blocks)}")
    config = dataclasses.replace(c, selector_blocks=blocks, keep_ratios=tuple(keep),
                                 selector_hidden=selector_hidden, selector_center=center,
                                 keep_thresholds=())
    torch.manual_seed(seed)
    net = _torch_model(config)
    net.load_state_dict({k: torch.tensor(v) for k, v in backbone.params.items()}, strict=False)
    params = {k: v.detach().numpy().astype(np.float32) for k, v in net.state_dict().items()}
    return backbone, VitModel(config, params, {}, graph.name)


def _check_data(graph: Graph, x, y, num_classes: int, what: str):
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y)
    if x.ndim < 1 or tuple(x.shape[1:]) != tuple(graph.input_shape):
        raise ValueError(f"compress heatvit: {what} inputs have shape {x.shape[1:]} per "
                         f"sample; model {graph.name!r} takes {tuple(graph.input_shape)}")
    if len(y) != len(x) or y.ndim != 1:
        raise ValueError(f"compress heatvit: {len(x)} {what} inputs need as many labels "
                         f"(one per sample), not shape {y.shape}")
    if len(x) < 10:
        raise ValueError(f"compress heatvit: {len(x)} {what} samples are too few (>= 10)")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= num_classes:
        raise ValueError(f"compress heatvit: {what} labels must be integers in "
                         f"0..{num_classes - 1} (the model's classes), not {y.min()}..{y.max()}")
    return x, y.astype(np.int64)


def heatvit(graph: Graph, x_train, y_train, *, seed: int = 0, progress: bool | None = None,
            checkpoint: str | Path | None = None, val_fraction: float = 0.1,
            **options: Any) -> Graph:
    """``graph`` with trained token selectors (see the module doc), from Python without the
    ``chipforge compress`` dispatcher: a seeded ``val_fraction`` of the training data is
    held out for validation. ``options`` are the fields of :class:`HeatvitOptions`;
    ``progress``: tqdm bar (None: on a terminal); ``checkpoint``: an ``.npz`` file."""
    from tqdm import tqdm

    unknown = set(options) - set(HeatvitOptions.__dataclass_fields__)
    if unknown:
        raise ValueError(f"compress heatvit has no option {', '.join(sorted(unknown))}; "
                         f"options: {', '.join(HeatvitOptions.__dataclass_fields__)}")
    opts = HeatvitOptions(**options)
    check_float("val_fraction", val_fraction, 0, 0.5, lo_open=True)
    x, y = np.asarray(x_train), np.asarray(y_train)
    order = np.random.default_rng(seed).permutation(len(x))
    n_val = int(round(len(x) * val_fraction))
    val, train = order[:n_val], order[n_val:]
    bar = tqdm(total=opts.warmup_epochs + opts.epochs, desc="compress heatvit", unit="epoch",
               file=sys.stderr, disable=None if progress is None else not progress)

    def on_epoch(epoch: int, loss: float, val_accuracy: float, targets) -> None:
        bar.n = epoch + 1
        bar.set_postfix(loss=f"{loss:.3f}", val_acc=f"{val_accuracy:.3f}",
                        keep_target="/".join(f"{t:.2f}" for t in targets))

    try:
        return train_selectors(graph, x[train], y[train], x[val], y[val], opts, seed=seed,
                               on_epoch=on_epoch, checkpoint_file=checkpoint)
    finally:
        bar.close()


def compress_heatvit(graph: Graph, data, *, seed: int, progress, checkpoint,
                     options: HeatvitOptions) -> Graph:
    """The ``heatvit`` method of :func:`chipforge.compress.compress` (its method signature):
    train and validation splits from the dispatcher, its progress bar, and its checkpoint
    directory (the whole result as one stage; inside it the state after every epoch)."""
    epoch_file = (None if getattr(checkpoint, "directory", None) is None
                  else Path(checkpoint.directory) / "selectors.epoch.npz")

    def run() -> Graph:
        if epoch_file is not None and epoch_file.exists():
            checkpoint.verify_file("selectors-epoch", epoch_file)
        with progress.stage("selectors", options.warmup_epochs + options.epochs):
            def on_epoch(epoch, loss, val_accuracy, targets):
                if epoch_file is not None and epoch_file.exists():   # saved before this call
                    checkpoint.record_file("selectors-epoch", epoch_file)
                progress.epoch(loss=loss, val_accuracy=val_accuracy,
                               keep_target="/".join(f"{t:.2f}" for t in targets))

            return train_selectors(graph, data.x_train, data.y_train, data.x_val,
                                   data.y_val, options, seed=seed, on_epoch=on_epoch,
                                   checkpoint_file=epoch_file)

    return checkpoint.stage("selectors", run)


def train_selectors(graph: Graph, x_train, y_train, x_val, y_val, opts: HeatvitOptions, *,
                    seed: int = 0, on_epoch=None,
                    checkpoint_file: str | Path | None = None) -> Graph:
    """Insert and train the selectors; validation data only measures. ``on_epoch(epoch,
    loss, val_accuracy, keep_targets)`` after each epoch; ``checkpoint_file``: resume from /
    save to this ``.npz`` (no pickle) after every epoch."""
    import torch

    from chipforge.heatvit import calibrate_graph
    from chipforge.sim.vit import calibrate_engine_thresholds
    from chipforge.sim.vit_graph import vit_to_graph
    from chipforge.zoo.vit import VitModel, _torch_model, calibrate_thresholds

    check_int("seed", seed, 0)
    backbone, student = insert_selectors(graph, opts.keep, opts.selector_blocks,
                                         selector_hidden=opts.selector_hidden,
                                         center=opts.center_tokens, seed=seed)
    if tuple(student.config.keep_ratios) != tuple(opts.keep) or not opts.blocks:
        # the default placement for this depth (a shallow ViT fits fewer selectors)
        opts = dataclasses.replace(opts, keep=tuple(student.config.keep_ratios),
                                   blocks=tuple(student.config.selector_blocks))
    classes = backbone.config.num_classes
    x, y = _check_data(graph, x_train, y_train, classes, "training")
    xv, yv = _check_data(graph, x_val, y_val, classes, "validation")
    torch.set_num_threads(1)
    xt, yt = torch.tensor(x), torch.tensor(y)
    net = _torch_model(student.config)
    net.load_state_dict({k: torch.tensor(v) for k, v in student.params.items()})
    net.config = student.config
    teacher = _torch_model(backbone.config)
    teacher.config = backbone.config
    teacher.load_state_dict({k: torch.tensor(v) for k, v in backbone.params.items()})
    teacher.eval()
    gen = torch.Generator().manual_seed(seed)
    selector_params = [p for k, p in net.named_parameters() if k.startswith("selectors.")]
    own_params = [p for k, p in net.named_parameters() if not k.startswith("selectors.")]
    opt = torch.optim.AdamW([{"params": selector_params, "lr": opts.lr},
                             {"params": own_params, "lr": opts.backbone_lr}],
                            weight_decay=0.01)
    source = graph_sha256(graph)
    key = json.dumps({"source": source, "seed": seed,
                      "data": hashlib.sha256(x.tobytes() + y.tobytes()).hexdigest(),
                      "options": opts.to_dict()}, sort_keys=True)
    start = 0
    if checkpoint_file is not None:
        checkpoint_file = Path(checkpoint_file)
        if checkpoint_file.exists():
            start = _load_checkpoint(checkpoint_file, key, net, opt, gen)

    def epoch_done(epoch: int, loss: float, targets: list[float]) -> None:
        if checkpoint_file is not None:
            _save_checkpoint(checkpoint_file, key, epoch + 1, net, opt, gen)
        if on_epoch is not None:
            on_epoch(epoch, loss, _batch_accuracy(net, xv, yv, targets), targets)

    _fine_tune(net, teacher, xt, yt, opts, generator=gen, optimizer=opt, start_epoch=start,
               on_epoch=epoch_done, seed=seed)
    params = {k: v.detach().numpy().astype(np.float32) for k, v in net.state_dict().items()}
    trained = calibrate_thresholds(VitModel(student.config, params), n_images=len(x),
                                   images=x)
    # The 8-bit engine's formats (256 training images) and its thresholds on its own score
    # codes under them; both travel in the graph, so the engine reproduces the decisions.
    formats = calibrate_graph(trained, x[:256])
    trained = calibrate_engine_thresholds(trained, x, formats[0])
    final = _torch_model(trained.config)
    final.load_state_dict({k: torch.tensor(v) for k, v in trained.params.items()})
    result = {
        "selector_blocks": list(trained.config.selector_blocks),
        "keep_ratios": list(trained.config.keep_ratios),
        "thresholds": list(trained.config.keep_thresholds),
        "engine_threshold_codes": list(trained.config.engine_threshold_codes),
        "validation_accuracy_float": _accuracy(final, xv, yv),
        "validation_accuracy_source_float": _accuracy(teacher, xv, yv, False),
    }
    trained.info = {"compress_heatvit": result, "seed": seed, "source_sha256": source}
    out = vit_to_graph(trained, name=f"{graph.name}-heatvit")
    out.meta = {**{k: v for k, v in graph.meta.items() if k not in ("training", "provenance")},
                **out.meta, "compress_result": result,
                "heatvit_calibration": {"fracs": list(formats),
                                        "label": "256 training images (compress heatvit)"}}
    if "provenance" in graph.meta:
        out.meta["previous_provenance"] = graph.meta["provenance"]
    return out


def _forward(net, images, *, targets=None, decision: str = "selector", importance=None,
             joint: bool = True):
    """Training forward of a torch ViT of :func:`chipforge.zoo.vit._torch_model`: the same
    function as its own forward (pre-norm blocks, selectors before their blocks, pruned
    tokens masked out of the attention keys and fused into one package token), with the
    training keep decisions of ``decision`` at keep ratios ``targets`` (None: no
    pruning, the original model); ``importance``: one ``(N, T)`` target per selector for
    its attention loss (:func:`_rollout`; None: the guarded block's class-token
    attention); ``joint``: the attention loss's gradient reaches the tokens the selector
    reads (False: they are detached for it). Returns ``(logits, kept_fractions, attention_losses,
    final_tokens, live)``: the kept fraction of each selector's candidates, each
    selector's attention-distillation loss, the final normalized tokens and the live mask
    over them."""
    import torch
    from torch.nn import functional as F  # noqa: N812

    c = net.config
    n = images.shape[0]
    g, p = c.image_size // c.patch_size, c.patch_size
    patches = images.reshape(n, c.channels, g, p, g, p).permute(0, 2, 4, 1, 3, 5)
    x = torch.cat([net.cls_token.expand(n, -1, -1),
                   net.patch_embed(patches.reshape(n, g * g, c.patch_dim))], 1) + net.pos_embed
    policy = torch.ones(n, x.shape[1])
    candidate = torch.ones_like(policy)
    candidate[:, 0] = 0                                          # the class token stays
    fractions, attention_losses = [], []
    for b, block in enumerate(net.blocks):
        h = block.norm1(x)
        if targets is not None and b in c.selector_blocks:
            s = c.selector_blocks.index(b)
            selector, target = net.selectors[s], targets[s]
            alive = policy * candidate
            attention_losses.append(_attention_loss(
                block, selector, h if joint else h.detach(), policy, alive, c,
                None if importance is None else importance[s]))
            score = selector(h, policy)
            if decision == "gumbel":
                logp = torch.stack([score, 1 - score], -1).clamp_min(1e-6).log()
                keep = F.gumbel_softmax(logp, hard=True)[..., 0]
            else:
                # The batch's top target fraction of the live candidates, as the calibrated
                # inference threshold keeps; "quantile" passes the gradient straight through.
                live = score.detach()[alive.bool()]
                cut = torch.quantile(live, 1 - target) if target < 1 else live.min() - 1
                keep = (score.detach() >= cut).float()
                if decision == "quantile":
                    keep = keep + score - score.detach()
            pruned = alive * (1 - keep)
            weight = pruned * (score.detach() if decision == "selector" else score)
            package = (weight[..., None] * x).sum(1, keepdim=True) / (
                weight.sum(1)[:, None, None] + 1e-6)                   # HeatViT Eq. 10
            has_package = (pruned.sum(1, keepdim=True) > 0).float().detach()
            fractions.append((alive * keep).sum(1) / alive.sum(1).clamp_min(1))
            x = torch.cat([x, package], 1)
            policy = torch.cat([policy * (1 - candidate) + alive * keep, has_package], 1)
            candidate = torch.cat([candidate, torch.zeros_like(has_package)], 1)
            h = block.norm1(x)
        x = block(x, policy, h)
    tokens = net.norm(x)
    return net.head(tokens[:, 0]), fractions, attention_losses, tokens, policy


def _rollout(teacher, images, blocks, *, with_outputs: bool = False):
    """Attention rollout (Abnar & Zuidema, 2020) of the original model, run dense: for each
    block ``b`` of ``blocks``, how much the final class token draws on each token at
    ``b``'s input, the class row of ``prod_(l >= b) (A_l + I) / 2`` with ``A_l`` block
    ``l``'s attention averaged over the heads. Returns one ``(N, T)`` tensor per block;
    ``with_outputs``: also ``(logits, final_tokens)`` of this dense pass, which are
    :func:`_forward`'s of the teacher (the same operations on the same inputs), so the
    distillation needs no second teacher pass."""
    import torch

    c = teacher.config
    n = images.shape[0]
    g, p = c.image_size // c.patch_size, c.patch_size
    patches = images.reshape(n, c.channels, g, p, g, p).permute(0, 2, 4, 1, 3, 5)
    x = torch.cat([teacher.cls_token.expand(n, -1, -1),
                   teacher.patch_embed(patches.reshape(n, g * g, c.patch_dim))],
                  1) + teacher.pos_embed
    t = x.shape[1]
    policy = torch.ones(n, t)
    maps = []
    for block in teacher.blocks:
        h = block.norm1(x)
        q, k, _ = block.qkv(h).reshape(n, t, 3, c.heads, c.head_dim).permute(2, 0, 3, 1, 4)
        maps.append((q @ k.transpose(-2, -1) / c.head_dim ** 0.5).softmax(-1).mean(1))
        x = block(x, policy, h)
    outputs = None
    if with_outputs:
        tokens = teacher.norm(x)
        outputs = (teacher.head(tokens[:, 0]), tokens)
    eye = torch.eye(t)
    out = []
    for b in blocks:
        row = eye[:1].expand(n, 1, t)
        for a in reversed(maps[b:]):
            row = row @ (0.5 * a + 0.5 * eye)
        out.append(row[:, 0])
    return (out, outputs) if with_outputs else out


def _attention_loss(block, selector, h, policy, alive, c, importance=None):
    """Squared error between the selector's keep logit and 2x the standardized log
    importance of each live candidate (clipped to +-3 deviations), over the candidates:
    ``importance`` (N, T0), or, when None, the class token's attention in ``block``. Its
    gradient reaches the backbone below the selector too (through ``h``), so the tokens
    the per-token selector reads learn to carry the importance it has to predict."""
    import torch

    n = h.shape[0]
    with torch.no_grad():
        q, k, _ = block.qkv(h).reshape(n, -1, 3, c.heads, c.head_dim).permute(2, 0, 3, 1, 4)
        logits = (q[:, :, :1] @ k.transpose(-2, -1))[:, :, 0] / c.head_dim ** 0.5
        e = torch.exp(logits - logits.amax(-1, keepdim=True)) * policy[:, None, :]
        log_attention = torch.log((e / e.sum(-1, keepdim=True)).mean(1).clamp_min(1e-9))
        if importance is not None:         # package tokens (not candidates) get a filler
            filler = torch.ones(n, h.shape[1] - importance.shape[1])
            log_attention = torch.log(torch.cat([importance, filler], 1).clamp_min(1e-9))
        count = alive.sum(1, keepdim=True).clamp_min(1)
        mean = (log_attention * alive).sum(1, keepdim=True) / count
        std = ((((log_attention - mean) ** 2) * alive).sum(1, keepdim=True) / count).sqrt()
        z = ((log_attention - mean) / (std + 1e-6)).clamp(-3, 3)
    score = selector(h, policy).clamp(1e-6, 1 - 1e-6)
    logit = torch.log(score) - torch.log1p(-score)
    return (((logit - 2 * z) ** 2) * alive).sum() / alive.sum().clamp_min(1)


def _fine_tune(net, teacher, x, y, opts: HeatvitOptions, *, generator, optimizer,
               start_epoch: int = 0, on_epoch=None, seed: int = 0) -> None:
    """``opts.warmup_epochs`` of selector warm-up (backbone frozen, attention loss only, no
    pruning), then ``opts.epochs`` of ``CE + KL(teacher || model) + token_weight x token
    distillation + ratio_weight x keep-ratio loss + attention_weight x attention loss``
    under the stage-by-stage keep schedule (:func:`chipforge.zoo.vit.selector_targets`),
    cosine learning rates, on mixup batches (``opts.mixup``; the mixing weight drawn from
    a generator seeded by ``(seed, epoch, batch)``, so a resumed run draws the same).
    ``on_epoch(epoch, loss, targets)`` after each (warm-up epochs count first)."""
    import math

    import torch
    from torch.nn import functional as F  # noqa: N812

    from chipforge.zoo.vit import selector_targets

    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
    stages = len(opts.keep)
    for epoch in range(start_epoch, opts.warmup_epochs + opts.epochs):
        warm = epoch < opts.warmup_epochs
        e = epoch - opts.warmup_epochs
        factor = 1.0 if warm else 0.5 * (1 + math.cos(math.pi * e / opts.epochs))
        selector_group, backbone_group = optimizer.param_groups
        selector_group["lr"] = selector_group["initial_lr"] * factor
        backbone_group["lr"] = 0.0 if warm else backbone_group["initial_lr"] * factor
        targets = [1.0] * stages if warm else selector_targets(opts.keep, e, opts.epochs)
        net.train()
        order = torch.randperm(len(x), generator=generator)
        for i in range(0, len(order), opts.batch_size):
            idx = order[i:i + opts.batch_size]
            xb, yb, lam, yb2 = x[idx], y[idx], 1.0, y[idx]
            if opts.mixup and not warm:
                lam = float(np.random.default_rng([seed, epoch, i]).beta(opts.mixup,
                                                                           opts.mixup))
                partner = torch.randperm(len(idx), generator=generator)
                xb, yb2 = lam * xb + (1 - lam) * xb[partner], yb[partner]
            importance = teacher_out = None
            if opts.selector_target == "rollout" and opts.attention_weight:
                with torch.no_grad():
                    importance, teacher_out = _rollout(teacher, xb,
                                                       net.config.selector_blocks,
                                                       with_outputs=True)
            logits, fractions, attention, tokens, live = _forward(
                net, xb, targets=targets, decision=opts.decision, importance=importance,
                joint=opts.joint_training)
            if warm:
                loss = opts.attention_weight * sum(attention)
                if not opts.attention_weight:
                    continue                  # nothing to learn: the warm-up is a no-op
            else:
                if teacher_out is not None:       # the rollout's dense pass gave them
                    teacher_logits, teacher_tokens = teacher_out
                else:
                    with torch.no_grad():
                        teacher_logits, _, _, teacher_tokens, _ = _forward(teacher, xb)
                t = teacher_tokens.shape[1]
                kept = live[:, :t]
                token = (((tokens[:, :t] - teacher_tokens) ** 2).mean(-1) * kept).sum() / (
                    kept.sum())
                ratio = sum((f.mean() - r) ** 2 for f, r in zip(fractions, targets,
                                                                strict=True))
                kl = F.kl_div(F.log_softmax(logits, 1), F.softmax(teacher_logits, 1),
                              reduction="batchmean")
                ce = (lam * F.cross_entropy(logits, yb)
                      + (1 - lam) * F.cross_entropy(logits, yb2))
                loss = (ce + kl + opts.token_weight * token
                        + opts.ratio_weight * ratio + opts.attention_weight * sum(attention))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if on_epoch is not None:
            on_epoch(epoch, float(loss.detach()), targets)


def _batch_accuracy(net, x: np.ndarray, y: np.ndarray, targets) -> float:
    """Validation accuracy with each selector keeping its current target fraction of the
    validation set's live candidates (what the calibrated thresholds will do)."""
    import torch

    net.eval()
    with torch.no_grad():
        logits = _forward(net, torch.tensor(x), targets=list(targets))[0]
    return float((logits.argmax(1).numpy() == y).mean())


def _accuracy(net, x: np.ndarray, y: np.ndarray, use_selectors: bool = True) -> float:
    import torch

    net.eval()
    with torch.no_grad():
        logits, _ = net(torch.tensor(x), use_selectors)
    return float((logits.argmax(1).numpy() == y).mean())


def _save_checkpoint(path: Path, key: str, epoch: int, net, opt, gen) -> None:
    import torch

    arrays = {f"model/{k}": v.detach().numpy() for k, v in net.state_dict().items()}
    state = opt.state_dict()
    for idx, slots in state["state"].items():
        for name, value in slots.items():
            arrays[f"opt/{idx}/{name}"] = torch.as_tensor(value).numpy()
    arrays["rng/torch"] = torch.get_rng_state().numpy()
    arrays["rng/batches"] = gen.get_state().numpy()
    header = {"format": CHECKPOINT_FORMAT, "key": key, "epoch": epoch,
              "param_groups": state["param_groups"]}
    arrays["__checkpoint__"] = np.array(json.dumps(header))
    from chipforge.files import atomic_open

    with atomic_open(path, "wb") as f:   # whole or absent, never half written nor linked
        np.savez(f, **arrays)


def _load_checkpoint(path: Path, key: str, net, opt, gen) -> int:
    import torch

    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
        header = json.loads(str(arrays.pop("__checkpoint__")))
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"checkpoint {path} is not a compress heatvit checkpoint: {e}") from None
    if header.get("format") != CHECKPOINT_FORMAT or header.get("key") != key:
        raise ValueError(f"checkpoint {path} belongs to another model, data set, seed or "
                         "options; delete it or choose another checkpoint path")
    net.load_state_dict({k[6:]: torch.tensor(v) for k, v in arrays.items()
                         if k.startswith("model/")})
    state: dict[int, dict] = {}
    for k, v in arrays.items():
        if k.startswith("opt/"):
            _, idx, name = k.split("/")
            state.setdefault(int(idx), {})[name] = torch.tensor(v)
    opt.load_state_dict({"state": state, "param_groups": header["param_groups"]})
    torch.set_rng_state(torch.tensor(arrays["rng/torch"]))
    gen.set_state(torch.tensor(arrays["rng/batches"]))
    return int(header["epoch"])
