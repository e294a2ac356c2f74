"""``chipforge compress``: the papers' compression methods applied to the user's own model.

::

    chipforge compress forms model.onnx --data train.npz --out model-forms8.npz --fragment-size 8
    chipforge simulate model-forms8.npz --accelerator forms8 --data test.npz

    import chipforge
    graph = chipforge.compress("forms", "model.onnx", data="train.npz", out="m.npz",
                               fragment_size=8)

``MODEL`` is an ``.onnx`` file, an IR ``.npz``, a zoo name, a :class:`~chipforge.sim.graph.Graph`
or (from Python) a ``torch.nn.Module``. ``data`` is an ``.npz`` of training inputs and labels
(``x``/``inputs``/``images`` and ``y``/``labels``/``targets``, read without pickle), an
``(x, y)`` pair, or ``"digits"`` (the digits *training* split, shaped for the model). A
validation split is carved from it (``val_fraction``, seeded); test data is never read.

Methods (:data:`METHODS`; options in :mod:`chipforge.compress_options`):

=============== ============================================================================
``forms``       ADMM pruning + FORMS fragment polarization + 8-bit QAT  -> forms4/8/16
``isqed``       ISQED'21 progressive pruning, accepted by the fault-injected accuracy of the
                chosen mapping on the validation split            -> isqed-differential
``pim-qat``     PIM-aware training for a PIM ADC macro + BN calibration -> that PIM preset
``superbnn``    randomized-BNN training + BN matching of an MLP      -> superbnn
``heatvit``     HeatViT token selectors for a ViT, keep-ratio schedule + distillation -> heatvit
=============== ============================================================================

**Method signature** (what a new method implements)::

    def method(graph: Graph, data: CompressData, *, seed: int, progress: Progress,
               checkpoint: Checkpoint, options: <its options dataclass>) -> Graph

``data`` holds the train and validation splits (numpy); ``progress.stage(name, epochs)``
opens a bar and ``progress.epoch(loss=..., val_accuracy=...)`` advances it;
``checkpoint.stage(name, fn)`` returns the stage's saved :class:`Graph` when resuming or
runs ``fn()`` and saves its result (``checkpoint.arrays`` does the same for a dict of numpy
arrays, e.g. a torch state dict). Checkpoints are ``.npz`` files written without pickle.
A method raises :class:`ValueError` for a model it cannot apply to *before* training, and
may put method-specific results into ``graph.meta["compress_result"]`` (a JSON-able dict).

**Provenance** (``graph.meta["provenance"]`` of the written model, printed by
``chipforge simulate``)::

    {"method", "options", "seed", "source_model", "source_sha256", "data", "data_sha256",
     "train_samples", "validation_samples", "validation_accuracy",
     "validation_accuracy_on", "validation_accuracy_exact", "result",
     "chipforge_version", "seconds", "previous"}

``validation_accuracy`` is the headline: the written model's accuracy on the validation
split on what ``validation_accuracy_on`` names: the quantized model in exact arithmetic
(float when it is not quantized), or, where a method says its model is meant for
non-ideal hardware (a ``"headline"`` entry in its result: pim-qat), that hardware's
simulation (pim-qat: the PIM macro's ADC path); ``validation_accuracy_exact`` is always the
exact one. ``result`` holds the method's own
numbers (e.g. the fault-injected accuracy); ``previous`` the provenance of the input model
when it was itself compressed. ``source_sha256`` hashes the model's structure and weights
(:func:`graph_sha256`), so it does not depend on the file format.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import json
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from chipforge.files import array_sha256

__all__ = ["METHODS", "Checkpoint", "CompressData", "MethodSpec", "Progress", "compress",
           "check_class_balance", "format_provenance", "graph_sha256", "register_method",
           "split_data"]

MIN_VALIDATION = 10
"""Fewest validation samples (and at least one per class of the model's output)."""


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """A compression method: where its function and options live (imported on use)."""

    function: str
    """``"module:function"`` with the method signature of the module doc."""
    options: str
    """``"module:Class"``: a frozen keyword-only options dataclass (ConfigBase)."""
    help: str
    runs_on: str
    """The accelerators the output runs on (shown in help and the provenance)."""

    def load_function(self) -> Callable[..., Any]:
        module, name = self.function.split(":")
        return getattr(importlib.import_module(module), name)

    def load_options(self) -> type:
        module, name = self.options.split(":")
        return getattr(importlib.import_module(module), name)


METHODS: dict[str, MethodSpec] = {}
"""Method name -> :class:`MethodSpec`."""


def register_method(name: str, spec: MethodSpec) -> None:
    """Add (or replace) a compression method."""
    METHODS[name] = spec


register_method("forms", MethodSpec(
    "chipforge.compress_methods:forms", "chipforge.compress_options:FormsOptions",
    "FORMS: ADMM pruning, fragment polarization, 8-bit QAT", "forms4, forms8, forms16"))
register_method("isqed", MethodSpec(
    "chipforge.compress_methods:isqed", "chipforge.compress_options:IsqedOptions",
    "ISQED'21: progressive pruning judged by fault-injected accuracy", "isqed-differential, "
    "isqed-two-column"))
register_method("pim-qat", MethodSpec(
    "chipforge.compress_methods:pim_qat", "chipforge.compress_options:PimQatOptions",
    "PIM-aware training for a PIM ADC macro, BN calibration", "the PIM macro preset"))
register_method("superbnn", MethodSpec(
    "chipforge.compress_methods:superbnn", "chipforge.compress_options:SuperbnnOptions",
    "SupeRBNN: randomized-BNN training with BN matching (MLP)", "superbnn"))
# HeatViT's selector training lives on the vit branch (chipforge.mappings.heatvit_selectors);
# its compress_heatvit takes this dispatcher's split, progress bars and checkpoint directory.
register_method("heatvit", MethodSpec(
    "chipforge.mappings.heatvit_selectors:compress_heatvit",
    "chipforge.mappings.heatvit_selectors:HeatvitOptions",
    "HeatViT: token selectors before chosen ViT blocks, keep-ratio schedule, distillation",
    "heatvit"))


# -- data ---------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class CompressData:
    """The training file split into train and validation parts (numpy, model-shaped)."""

    x_train: np.ndarray
    """(N, *input_shape) float32."""
    y_train: np.ndarray
    """(N,) int64."""
    x_val: np.ndarray
    y_val: np.ndarray
    num_classes: int
    """Outputs of the model (labels are 0..num_classes-1)."""
    label: str = "data"
    """What the data came from (for messages and the provenance)."""

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def train_data(self):
        """The splits as :class:`chipforge.mappings.train.TrainData` (validation in the
        ``*_test`` slots, which the training passes evaluate on; the test data is not here)."""
        import torch

        from chipforge.mappings.train import TrainData

        out = TrainData.__new__(TrainData)
        out.x_train = torch.from_numpy(np.ascontiguousarray(self.x_train, dtype=np.float32))
        out.y_train = torch.from_numpy(np.ascontiguousarray(self.y_train, dtype=np.int64))
        out.x_test = torch.from_numpy(np.ascontiguousarray(self.x_val, dtype=np.float32))
        out.y_test = torch.from_numpy(np.ascontiguousarray(self.y_val, dtype=np.int64))
        out.dataset = None
        return out


def _output_width(graph) -> int:
    from chipforge.sim.executor import run_graph

    out = run_graph(graph, np.zeros((1, *graph.input_shape)), quantized=False)
    if out.ndim != 2:
        raise ValueError(f"model {graph.name!r} outputs shape {out.shape[1:]} per sample; "
                         "compress trains classifiers with one score per class")
    return int(out.shape[1])


def split_data(x: np.ndarray, y: np.ndarray, num_classes: int, *, val_fraction: float,
               seed: int, label: str = "data") -> CompressData:
    """Check labels and sizes, then carve a stratified validation split (seeded)."""
    if y.max(initial=0) >= num_classes:
        raise ValueError(f"{label}: labels run up to {int(y.max())}, but the model has "
                         f"{num_classes} outputs (labels must be 0..{num_classes - 1})")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), not {val_fraction!r}")
    check_class_balance(y, label)
    rng = np.random.default_rng([seed, 0xC0DE])
    val_idx = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        take = int(round(val_fraction * len(idx)))
        val_idx.append(rng.permutation(idx)[:take])
    val = np.sort(np.concatenate(val_idx)) if val_idx else np.zeros(0, dtype=int)
    train = np.setdiff1d(np.arange(len(y)), val)
    need = max(MIN_VALIDATION, min(num_classes, len(np.unique(y))))
    if len(val) < need or len(train) < need:
        raise ValueError(f"{label}: {len(y)} samples are too few: a validation fraction of "
                         f"{val_fraction} leaves {len(train)} to train and {len(val)} to "
                         f"validate; each needs at least {need}")
    return CompressData(x[train].astype(np.float32), y[train], x[val].astype(np.float32),
                        y[val], num_classes, label)


RARE_CLASS_FRACTION = 0.01
"""A class with fewer than this fraction of the samples, while the largest class has at
least :data:`RARE_CLASS_MIN_LARGEST`, is warned about (one line on stderr)."""
RARE_CLASS_MIN_LARGEST = 100


def check_class_balance(y: np.ndarray, label: str = "data") -> None:
    """Refuse training labels of one class (a classifier learns nothing from them and its
    validation accuracy would read 100 %); warn in one line (stderr) about a class with
    under 1 % of the samples while another has many."""
    classes, counts = np.unique(np.asarray(y), return_counts=True)
    if len(classes) < 2:
        raise ValueError(f"{label}: all {len(y)} training labels are class "
                         f"{int(classes[0]) if len(classes) else '?'}; compress trains a "
                         "classifier and needs at least two classes")
    rare = counts < RARE_CLASS_FRACTION * len(y)
    if rare.any() and counts.max() >= RARE_CLASS_MIN_LARGEST:
        worst = int(np.argmin(counts))
        print(f"warning: {label}: class {int(classes[worst])} has {int(counts[worst])} of "
              f"{len(y)} training samples ({100 * counts[worst] / len(y):.2g} %; "
              f"{int(rare.sum())} class(es) under {100 * RARE_CLASS_FRACTION:g} %): the model "
              "will hardly learn it and its validation share is tiny", file=sys.stderr)


def _load_training(data: Any, graph) -> tuple[np.ndarray, np.ndarray, str]:
    if isinstance(data, str | Path) and str(data) == "digits":
        from chipforge.importers.model import _digits_for

        d = _digits_for(graph)
        return (np.asarray(d.x_train, dtype=np.float64).reshape((-1, *graph.input_shape)),
                np.asarray(d.y_train), "digits (training split)")
    if isinstance(data, str | Path):
        from chipforge.importers.model import load_data

        x, y = load_data(data, graph)
        return x, y, str(data)
    try:
        x, y = data
    except (TypeError, ValueError):
        raise ValueError(f"data must be 'digits', an .npz path or an (x, y) pair, not "
                         f"{type(data).__name__}") from None
    x, y = np.asarray(x), np.asarray(y)
    if len(x) != len(y) or len(x) == 0 or y.ndim != 1:
        raise ValueError(f"data: {len(x)} inputs and labels of shape {y.shape}; need one "
                         "label per input, at least one")
    per_sample = int(np.prod(graph.input_shape))
    if x[0].size != per_sample:
        raise ValueError(f"data: each input has shape {x.shape[1:]} ({x[0].size} values); "
                         f"model {graph.name!r} takes {graph.input_shape}")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
        raise ValueError(f"data: labels must be non-negative integers, not {y.dtype} "
                         f"(min {y.min()})")
    x = x.astype(np.float64).reshape((len(x), *graph.input_shape))
    if not np.all(np.isfinite(x)):
        raise ValueError("data: inputs contain NaN or infinity")
    return x, y.astype(np.int64), "(x, y) arrays"


def graph_sha256(graph) -> str:
    """Hash of a graph's structure, attributes and parameters (not its name or meta)."""
    h = hashlib.sha256()
    h.update(json.dumps({"input_shape": list(graph.input_shape), "output": graph.output,
                         "nodes": [[n.op.value, n.name, list(n.inputs), n.attrs]
                                   for n in graph.nodes]}, sort_keys=True).encode())
    for n in graph.nodes:
        for k in sorted(n.params):
            h.update(f"{n.name}/{k}".encode())
            h.update(array_sha256(np.asarray(n.params[k], dtype=np.float64)).encode())
    return h.hexdigest()


# -- progress -----------------------------------------------------------------------------

class Progress:
    """Progress on stderr. ``enabled=None`` (the default): on a terminal a tqdm bar per stage,
    advanced once per epoch with the loss, the validation accuracy and tqdm's ETA; off a
    terminal (a log, a batch job) one line when a stage starts and one when it ends, so a
    long run shows signs of life. ``True``: bars even off a terminal; ``False``: silent."""

    def __init__(self, method: str, enabled: bool | None = None) -> None:
        self.method, self.enabled = method, enabled
        self.bars = enabled if enabled is not None else bool(
            getattr(sys.stderr, "isatty", lambda: False)())
        self.lines = enabled is None and not self.bars
        self._bar = None
        self._started = 0.0
        self.before_first_stage: Callable[[], None] | None = None
        """Called once, when the first stage starts (the run-time estimate)."""
        self.log: list[dict[str, Any]] = []
        """Every epoch reported: stage, epoch, loss, val_accuracy."""

    def line(self, text: str) -> None:
        """One line on stderr, unless progress is off."""
        if self.enabled is False:
            return
        if self._bar is not None:
            self._bar.write(f"{self.method}: {text}", file=sys.stderr)
        else:
            print(f"{self.method}: {text}", file=sys.stderr, flush=True)

    @contextlib.contextmanager
    def stage(self, name: str, epochs: int | None = None):
        from tqdm import tqdm

        if self.before_first_stage is not None:
            announce, self.before_first_stage = self.before_first_stage, None
            announce()
        self._stage = name
        self._started = time.perf_counter()
        if self.lines:
            self.line(f"stage {name!r} started" + (f" ({epochs} epochs)" if epochs else ""))
        self._bar = tqdm(total=epochs, desc=f"{self.method}: {name}", unit="epoch",
                         file=sys.stderr, disable=not self.bars, leave=True)
        try:
            yield self
        finally:
            self._bar.close()
            self._bar = None
            if self.lines:
                last = next((e for e in reversed(self.log) if e["stage"] == name), None)
                acc = "" if last is None or last.get("val_accuracy") is None else \
                    f", validation accuracy {100 * last['val_accuracy']:.2f} %"
                self.line(f"stage {name!r} done in "
                          f"{time.perf_counter() - self._started:.1f} s{acc}")

    def epoch(self, *, loss: float | None = None, val_accuracy: float | None = None,
              **extra: Any) -> None:
        entry = {"stage": getattr(self, "_stage", ""), "loss": loss,
                 "val_accuracy": val_accuracy, **extra}
        self.log.append(entry)
        if self._bar is not None:
            post = {}
            if loss is not None:
                post["loss"] = f"{loss:.4f}"
            if val_accuracy is not None:
                post["val_acc"] = f"{100 * val_accuracy:.2f}%"
            post.update({k: (f"{v:.4g}" if isinstance(v, float) else v)
                         for k, v in extra.items()})
            self._bar.set_postfix(post, refresh=False)
            self._bar.update()

    def note(self, text: str) -> None:
        if self.bars or self.lines:
            self.line(text)


def planned_epochs(method: str, opts) -> tuple[int, str]:
    """Training epochs over the training split that ``method`` runs with ``opts`` (its
    stages summed), and what the count assumes."""
    o = opts
    if method == "forms":
        prune = (o.prune_epochs + o.finetune_epochs) if (
            o.prune_ratio > 0 or parse_ratios_any(o.prune_ratios)) else 0
        polar = (o.polarize_epochs + o.finetune_epochs) if o.polarize else 0
        return prune + polar + o.qat_epochs, "prune + polarize + QAT"
    if method == "isqed":
        return (len(o.ratios) * (o.prune_epochs + o.finetune_epochs) + o.qat_epochs,
                f"{len(o.ratios)} progressive steps, each accepted, + QAT; a refused step "
                "adds one more, fault-injected evaluations not counted")
    if method == "pim-qat":
        return o.qat_epochs + o.epochs, "digital QAT + PIM-aware training"
    if method == "superbnn":
        return o.epochs, "randomized-BNN training"
    if method == "heatvit":
        return o.warmup_epochs + o.epochs, "selector warm-up + fine-tuning"
    return 0, "unknown method"


EPOCH_COST = {
    "admm": 1.03, "finetune": 0.98, "qat": 1.04,         # forms / isqed: the LeNet-sized CNN
    "pim-qat digital": 4.1, "pim-aware": 13.2,           # the same CNN on cap-ram
    "superbnn": 3.1,                                     # MLP 784-128-128-10
    "heatvit warm-up": 1.2, "heatvit fine-tune": 2.1,    # ViT, 6 blocks, 32 wide, 49 patches
}
"""CPU seconds of one epoch of each kind of compress stage, as a multiple of one plain torch
training epoch of the same model on the same data (same batch, optimizer type and thread
count, a validation forward each), **measured** by ``benchmarks/bench_compress.py`` on a
quiet machine (forms and isqed averaged; see docs/compress.md for the run);
:func:`estimate_seconds` scales the measured float step by them."""


def epoch_costs(method: str, opts) -> list[tuple[str, int, float]]:
    """``(kind, epochs, cost per epoch relative to plain training)`` of each training phase
    of ``method`` with ``opts`` (:data:`EPOCH_COST`); the epochs sum to
    :func:`planned_epochs`'s."""
    o, c = opts, EPOCH_COST
    if method == "forms":
        prune = o.prune_ratio > 0 or parse_ratios_any(o.prune_ratios)
        return [("admm", o.prune_epochs * prune + o.polarize_epochs * o.polarize, c["admm"]),
                ("finetune", o.finetune_epochs * (prune + o.polarize), c["finetune"]),
                ("qat", o.qat_epochs, c["qat"])]
    if method == "isqed":
        steps = len(o.ratios)
        return [("admm", steps * o.prune_epochs, c["admm"]),
                ("finetune", steps * o.finetune_epochs, c["finetune"]),
                ("qat", o.qat_epochs, c["qat"])]
    if method == "pim-qat":
        return [("pim-qat digital", o.qat_epochs, c["pim-qat digital"]),
                ("pim-aware", o.epochs, c["pim-aware"])]
    if method == "superbnn":
        return [("superbnn", o.epochs, c["superbnn"])]
    if method == "heatvit":
        return [("heatvit warm-up", o.warmup_epochs, c["heatvit warm-up"]),
                ("heatvit fine-tune", o.epochs, c["heatvit fine-tune"])]
    return []


def parse_ratios_any(text: str) -> bool:
    from chipforge.compress_options import parse_ratios

    return any(v > 0 for v in parse_ratios(text).values())


ESTIMATE_PROBE_BATCH = 64
"""Images in the timed training step of :func:`estimate_seconds`."""


def estimate_seconds(graph, data: CompressData, epochs: float) -> float | None:
    """Run time of ``epochs`` plain training epochs over the training split (plus a
    validation pass each), from one *measured* training step (forward, backward, Adam
    update) of the float model on :data:`ESTIMATE_PROBE_BATCH` training images,
    single-threaded as compress trains; None when the model has no torch equivalent here
    (e.g. token selectors). A method's run: ``epochs`` weighted by :func:`epoch_costs`."""
    import torch

    from chipforge.mappings.torch_export import graph_module
    from chipforge.mappings.train import deterministic

    try:
        module = graph_module(graph, keep_zeros=False)
    except ValueError:
        return None
    batch = min(ESTIMATE_PROBE_BATCH, len(data.x_train))
    x = torch.from_numpy(np.ascontiguousarray(data.x_train[:batch], dtype=np.float32))
    y = torch.from_numpy(np.ascontiguousarray(data.y_train[:batch]))
    opt = torch.optim.Adam(module.parameters(), lr=0.0)
    times = []
    with deterministic():
        for _ in range(3):                       # the first step warms up, the best counts
            start = time.perf_counter()
            loss = torch.nn.functional.cross_entropy(module(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - start)
    per_image = min(times[1:]) / batch
    # a validation forward costs about a third of a training step per image
    per_epoch = per_image * (len(data.x_train) + len(data.x_val) / 3)
    return epochs * per_epoch


def _duration(seconds: float) -> str:
    if seconds < 1:
        return "under 1 s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


# -- checkpoints --------------------------------------------------------------------------

def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class Checkpoint:
    """Stage results of one run in a directory, as ``.npz`` files (no pickle).

    The directory's ``run.json`` holds the run's fingerprint (method, options, seed, model
    and data hashes) and the sha256 of every stage file written (``"stages"``); a directory
    of a different run is an error, never overwritten, and a stage file whose hash is not
    the recorded one (edited, replaced, or not written by this run) is refused on resume,
    naming the stage. ``None`` as directory keeps nothing (no resume).
    """

    def __init__(self, directory: str | Path | None, fingerprint: dict[str, Any]) -> None:
        self.directory = None if directory is None else Path(directory)
        self.fingerprint = fingerprint
        self.resumed: list[str] = []
        self._written: list[Path] = []
        self._stages: dict[str, str] = {}
        if self.directory is None:
            return
        run = self.directory / "run.json"
        if run.exists():
            try:
                old = json.loads(run.read_text())
                stages = old.pop("stages", {}) if isinstance(old, dict) else {}
                if not isinstance(stages, dict):
                    raise ValueError("its stages are not a table")
            except (OSError, ValueError) as e:
                raise ValueError(f"checkpoint {run} is unreadable ({e}); remove the directory "
                                 "to start over") from None
            if old != json.loads(json.dumps(fingerprint)):
                raise ValueError(f"checkpoint directory {self.directory} belongs to another run "
                                 "(different method, options, seed, model or data); remove it "
                                 "or give another --checkpoint")
            self._stages = {str(k): str(v) for k, v in stages.items()}
        elif self.directory.exists() and any(self.directory.iterdir()):
            raise ValueError(f"checkpoint directory {self.directory} exists and is not a "
                             "chipforge checkpoint; give another --checkpoint")
        else:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._write_run()
            self._written.append(run)

    def _write_run(self) -> None:
        assert self.directory is not None
        from chipforge.files import atomic_write

        atomic_write(self.directory / "run.json",
                     json.dumps({**json.loads(json.dumps(self.fingerprint)),
                                 "stages": self._stages}, sort_keys=True, indent=1))

    def record_file(self, name: str, path: Path) -> None:
        """Fingerprint a stage file just written (its sha256 goes into run.json)."""
        if self.directory is None:
            return
        self._stages[name] = _file_sha256(Path(path))
        self._write_run()

    def verify_file(self, name: str, path: Path) -> None:
        """Refuse a stage file whose sha256 is not the one recorded when it was written."""
        recorded = self._stages.get(name)
        if recorded is None or _file_sha256(Path(path)) != recorded:
            raise ValueError(f"checkpoint stage {name!r} ({path}) is not the file this run "
                             f"wrote (sha256 {'differs' if recorded else 'not recorded'}); "
                             f"remove {self.directory} to start over")

    def _path(self, name: str, kind: str) -> Path | None:
        if self.directory is None:
            return None
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
        return self.directory / f"{safe}.{kind}.npz"

    def stage(self, name: str, fn: Callable[[], Any]):
        """The saved Graph of stage ``name``, or ``fn()``'s Graph, saved."""
        from chipforge.sim.graph import load_graph, save_graph

        path = self._path(name, "graph")
        if path is not None and path.exists():
            self.verify_file(name, path)
            self.resumed.append(name)
            return load_graph(path)
        graph = fn()
        if path is not None:
            tmp = path.with_suffix(".tmp")
            save_graph(graph, tmp)
            tmp.replace(path)               # a stage file is complete or absent
            self._written.append(path)
            self.record_file(name, path)
        return graph

    def arrays(self, name: str, fn: Callable[[], dict[str, np.ndarray]]
               ) -> dict[str, np.ndarray]:
        """The saved arrays of stage ``name``, or ``fn()``'s arrays, saved."""
        path = self._path(name, "arrays")
        if path is not None and path.exists():
            self.verify_file(name, path)
            self.resumed.append(name)
            with np.load(path, allow_pickle=False) as f:
                return {k: f[k] for k in f.files}
        arrays = fn()
        if path is not None:
            from chipforge.files import atomic_open

            with atomic_open(path, "wb") as f:      # a symlink in the way is replaced
                np.savez(f, **arrays)
            self._written.append(path)
            self.record_file(name, path)
        return arrays

    def discard_if_empty(self) -> None:
        """Remove the directory when no stage finished in this or an earlier attempt."""
        if self.directory is not None and not list(self.directory.glob("*.npz")):
            self.remove()

    def remove(self) -> None:
        """Delete this run's checkpoint files (and the directory when it is then empty)."""
        if self.directory is None or not self.directory.exists():
            return
        for p in self.directory.glob("*.npz"):
            p.unlink()
        (self.directory / "run.json").unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.directory.rmdir()


# -- the dispatcher -----------------------------------------------------------------------

def _load_source(model: Any, data: Any):
    """(Graph, label) from a Graph, a torch module, a file or a zoo name."""
    from chipforge.sim.graph import Graph

    if isinstance(model, Graph):
        return model, model.name
    if type(model).__module__.startswith("torch") or hasattr(model, "named_modules"):
        from chipforge.importers.torch import from_torch

        if isinstance(data, str | Path):
            raise ValueError("a torch.nn.Module needs data as an (x, y) pair, so that its "
                             "input shape is known (or export it to ONNX first)")
        x = np.asarray(data[0], dtype=np.float32)
        return from_torch(model, x[:1], name=type(model).__name__.lower()), \
            f"torch module {type(model).__name__}"
    from chipforge.importers.model import load_model

    return load_model(model), str(model)


def parse_options(method: str, options: dict[str, Any]):
    """The method's options dataclass from keyword options (unknown names are errors)."""
    if method not in METHODS:
        raise ValueError(f"unknown compression method {method!r}; methods: "
                         f"{', '.join(METHODS)}")
    try:
        cls = METHODS[method].load_options()
    except ImportError as e:
        raise ValueError(f"method {method!r} is not available in this build ({e})") from None
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise ValueError(f"{method}: unknown option(s) {', '.join(unknown)}; its options: "
                         f"{', '.join(sorted(fields))}")
    return cls.from_dict(options) if hasattr(cls, "from_dict") else cls(**options)


def options_dict(opts) -> dict[str, Any]:
    """A method's options as a JSON-able dict."""
    if hasattr(opts, "to_dict"):
        return opts.to_dict()
    return json.loads(json.dumps(dataclasses.asdict(opts), default=_jsonable))


def _validation_accuracy(graph, data: CompressData) -> float:
    from chipforge.sim.executor import run_graph

    quantized = all(n.quantized for n in graph.weighted_nodes())
    logits = run_graph(graph, data.x_val.astype(np.float64), quantized=quantized)
    return float((logits.argmax(1) == data.y_val).mean())


def _exact_label(graph) -> str:
    quantized = all(n.quantized for n in graph.weighted_nodes())
    return ("the quantized model, exact integer arithmetic" if quantized
            else "the float model")


def compress(method: str, model: Any, data: Any = "digits", *, out: str | Path | None = None,
             seed: int = 0, val_fraction: float = 0.2, checkpoint: str | Path | None = None,
             overwrite: bool = False, progress: bool | None = None, **options: Any):
    """Compress ``model`` with ``method`` on ``data``; return the Graph (and write it to
    ``out`` when given). See the module doc. ``checkpoint`` is a directory for stage
    results (default ``OUT.ckpt`` when ``out`` is given); a rerun after an interruption
    resumes from it, and it is removed after success."""
    start = time.perf_counter()
    opts = parse_options(method, options)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, not {seed!r}")
    out = None if out is None else Path(out)
    if out is not None:
        if out.suffix != ".npz":
            raise ValueError(f"--out {out} must name an .npz file (the compressed model)")
        if out.exists() and not overwrite:
            raise ValueError(f"--out {out} exists; give another name or --overwrite")
        if not out.parent.is_dir():
            raise ValueError(f"--out {out}: directory {out.parent} does not exist")
    graph, source = _load_source(model, data)
    x, y, data_label = _load_training(data, graph)
    split = split_data(x, y, _output_width(graph), val_fraction=val_fraction, seed=seed,
                       label=data_label)
    fingerprint = {"method": method, "options": options_dict(opts), "seed": seed,
                   "val_fraction": val_fraction, "source_sha256": graph_sha256(graph),
                   "data_sha256": array_sha256(x, y)}
    ckpt_dir = checkpoint if checkpoint is not None else (
        None if out is None else out.with_name(out.name + ".ckpt"))
    ckpt = Checkpoint(ckpt_dir, fingerprint)
    bars = Progress(method, progress)
    epochs, assumes = planned_epochs(method, opts)
    plain_epochs = sum(n * cost for _, n, cost in epoch_costs(method, opts))

    def announce() -> None:      # at the first stage: after the method's checks passed
        plain = estimate_seconds(graph, split, 1)
        if plain is not None:
            per_image_ms = 1e3 * plain / len(split.y_train)
            bars.line(f"estimated run time about {_duration(plain * plain_epochs)}: "
                      f"{epochs} epochs ({assumes}) over {len(split.y_train)} training "
                      f"images; plain training of this model {per_image_ms:.3g} ms per image "
                      "per epoch (a measured step of the float model), this method's epochs "
                      f"{plain_epochs / max(epochs, 1):.2g}x that on average (measured by "
                      "benchmarks/bench_compress.py); one-off conversions and evaluations "
                      "not counted")

    if progress is not False:
        bars.before_first_stage = announce
    fn = METHODS[method].load_function()
    try:
        result = fn(graph, split, seed=seed, progress=bars, checkpoint=ckpt, options=opts)
    except BaseException:
        ckpt.discard_if_empty()          # a refusal before training leaves nothing behind
        raise
    result.meta = dict(result.meta)
    method_result = result.meta.pop("compress_result", {})
    # a method whose model runs on non-ideal hardware names that accuracy as the headline
    # (pim-qat: the simulated PIM path), the exact model's accuracy kept beside it
    headline = method_result.pop("headline", None)
    exact_accuracy = _validation_accuracy(result, split)
    provenance = {
        "method": method,
        "options": options_dict(opts),
        "seed": seed,
        "source_model": source,
        "source_sha256": fingerprint["source_sha256"],
        "data": data_label,
        "data_sha256": fingerprint["data_sha256"],
        "val_fraction": val_fraction,
        "train_samples": len(split.y_train),
        "validation_samples": len(split.y_val),
        "validation_accuracy": exact_accuracy if headline is None else headline["accuracy"],
        "validation_accuracy_on": _exact_label(result) if headline is None
        else headline["on"],
        "validation_accuracy_exact": exact_accuracy,
        "runs_on": result.meta.pop("compress_runs_on", METHODS[method].runs_on),
        "result": method_result,
        "resumed_stages": list(ckpt.resumed),
        "chipforge_version": _version(),
        "seconds": round(time.perf_counter() - start, 1),
    }
    if "provenance" in graph.meta:
        provenance["previous"] = graph.meta["provenance"]
    result.meta["provenance"] = json.loads(json.dumps(provenance, default=_jsonable))
    if out is not None:
        from chipforge.sim.graph import save_graph

        save_graph(result, out)
    ckpt.remove()
    return result


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if hasattr(value, "value"):
        return value.value
    return str(value)


def _version() -> str:
    from chipforge import __version__

    return __version__


def format_provenance(meta: dict[str, Any]) -> str | None:
    """One line about how a model was compressed (None when it was not)."""
    p = meta.get("provenance")
    if not isinstance(p, dict):
        return None
    opts = ", ".join(f"{k}={v}" for k, v in sorted(p.get("options", {}).items()))
    acc = p.get("validation_accuracy")
    acc_text = f"{100 * acc:.2f} %" if isinstance(acc, int | float) else "n/a"
    return (f"compressed by `chipforge compress {p.get('method')}` (seed {p.get('seed')}; "
            f"{opts}) from {p.get('source_model')} (sha256 {str(p.get('source_sha256'))[:12]}) "
            f"on {p.get('data')}: validation accuracy {acc_text} on "
            f"{p.get('validation_samples')} held-out training samples"
            + (f", on {p['validation_accuracy_on']}" if p.get("validation_accuracy_on")
               else ""))


# -- the command line ---------------------------------------------------------------------

def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _add_common(p) -> None:
    import argparse

    p.add_argument("model", metavar="MODEL",
                   help="an .onnx file, an IR .npz graph or a zoo model name")
    p.add_argument("--data", default="digits", metavar="TRAIN",
                   help="training .npz (inputs x/inputs/images, labels y/labels/targets) or "
                        "'digits' (the digits training split); a validation split is carved "
                        "from it")
    p.add_argument("--out", required=True, type=Path, metavar="MODEL_OUT",
                   help="the compressed model (.npz graph)")
    p.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    p.add_argument("--val-fraction", type=float, default=0.2,
                   help="fraction of the training file held out for validation (default 0.2)")
    p.add_argument("--checkpoint", type=Path, metavar="DIR",
                   help="stage checkpoints (default MODEL_OUT.ckpt); a rerun resumes from it")
    p.add_argument("--overwrite", action="store_true", help="replace an existing MODEL_OUT")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="stage and epoch bars with ETA on stderr (default: on a terminal; "
                        "off one, a line per stage); --no-progress: silent")


def add_arguments(p) -> None:
    """The ``compress`` subcommand: one sub-parser per method, each with the common
    arguments and that method's options only (``chipforge compress forms --help``)."""
    import argparse

    p.description = ("compress your model for an accelerator with one of the papers' "
                     "methods: " + "; ".join(f"{k} ({v.help}; runs on {v.runs_on})"
                                              for k, v in METHODS.items())
                     + ". `chipforge compress METHOD --help` lists that method's options "
                       "(docs/compress.md).")
    sub = p.add_subparsers(dest="method", metavar="METHOD", required=True)
    for name, spec in METHODS.items():
        mp = sub.add_parser(name, help=f"{spec.help} (runs on {spec.runs_on})",
                            description=f"chipforge compress {name}: {spec.help}; the "
                                        f"result runs on {spec.runs_on} (docs/compress.md)")
        _add_common(mp)
        try:
            cls = spec.load_options()
        except ImportError:
            continue                      # a method whose module this build does not have
        group = mp.add_argument_group(f"{name} options (defaults shown; docs/compress.md)")
        own = {f.name for f in dataclasses.fields(cls)}
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else None
            _add_option(group, f, f"default: "
                        f"{_show(default) if default not in ('', ()) else 'none'}")
        # Other methods' options parse but stay out of the help, so that one given to the
        # wrong method is the one-line "not an option of" error of _convert.
        for other in _all_option_fields():
            if other.name not in own:
                _add_option(mp, other, argparse.SUPPRESS)
                own.add(other.name)


def _all_option_fields() -> list:
    fields = []
    for spec in METHODS.values():
        try:
            fields += dataclasses.fields(spec.load_options())
        except ImportError:
            continue
    return fields


def _add_option(group, f, help_text: str) -> None:
    import argparse

    default = f.default if f.default is not dataclasses.MISSING else None
    if type(default) is bool:
        group.add_argument(_flag(f.name), dest=f"opt_{f.name}", default=argparse.SUPPRESS,
                           action=argparse.BooleanOptionalAction, help=help_text)
    else:
        group.add_argument(_flag(f.name), dest=f"opt_{f.name}", default=argparse.SUPPRESS,
                           metavar=f.name.upper(), help=help_text)


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(getattr(value, "value", value))


def _convert(method: str, fname: str, text: Any) -> Any:
    """A CLI string as the type of the method's option field's default."""
    cls = METHODS[method].load_options()
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if fname not in fields:
        raise ValueError(f"{_flag(fname)} is not an option of {method}; its options: "
                         f"{', '.join(_flag(n) for n in sorted(fields))}")
    if not isinstance(text, str):
        return text
    default = fields[fname].default
    annotation = str(fields[fname].type)
    try:
        if default is None and annotation.startswith("tuple["):   # optional lists
            item = int if annotation.startswith("tuple[int") else float
            return tuple(item(v) for v in text.split(",") if v.strip())
        if isinstance(default, bool):
            return text
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
        if isinstance(default, tuple):
            item = type(default[0]) if default else float
            return tuple(item(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"{_flag(fname)}: {text!r} is not a valid "
                         f"{type(default).__name__}") from None
    return text


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_short(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_short(v) for v in value) + "]"
    return str(value)


def run_cli(args) -> int:
    opts = {k[4:]: v for k, v in vars(args).items() if k.startswith("opt_")}
    options = {k: _convert(args.method, k, v) for k, v in opts.items()}
    graph = compress(args.method, args.model, args.data, out=args.out, seed=args.seed,
                     val_fraction=args.val_fraction, checkpoint=args.checkpoint,
                     overwrite=args.overwrite, progress=args.progress, **options)
    p = graph.meta["provenance"]
    print(format_provenance(graph.meta))
    for key, value in p.get("result", {}).items():
        if isinstance(value, list) and value and all(isinstance(e, dict) for e in value):
            print(f"  {key}:")                # a history: one line per entry
            for entry in value:
                print("    " + ", ".join(f"{k} {_short(v)}" for k, v in entry.items()))
            continue
        print(f"  {key:<36} {_short(value)}")
    print(f"wrote {args.out} (runs on {p['runs_on']}; try `chipforge simulate {args.out} "
          f"--accelerator ...`)")
    return 0



class _CallableModule(types.ModuleType):
    """Lets ``chipforge.compress(method, model, ...)`` call :func:`compress` while
    ``chipforge.compress`` stays the module that holds it."""

    def __call__(self, *args: Any, **kwargs: Any):
        return compress(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
