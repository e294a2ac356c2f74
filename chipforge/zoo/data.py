"""scikit-learn's digits data set (1797 8x8 grey images of handwritten digits, 10 classes).

It ships with scikit-learn, so it works offline. One fixed, stratified split is used
everywhere (seed 0, 20 % test = 360 images), so every accuracy in chipforge is comparable.
Pixels are scaled from 0..16 to [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

__all__ = ["Dataset", "digits"]

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
