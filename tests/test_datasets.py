"""Datasets: shapes, splits, determinism in the seed."""

import numpy as np
import pytest

from jaxinterp import datasets


def test_digits_split_is_stratified_and_deterministic():
    a, b = datasets.load_digits(seed=3), datasets.load_digits(seed=3)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert a.x_train.shape[1:] == (8, 8, 1) and a.x_train.dtype == np.float32
    assert len(a.y_train) + len(a.y_test) == 1797
    assert 0.0 <= a.x_train.min() and a.x_train.max() <= 1.0
    counts = np.bincount(a.y_test, minlength=10)
    assert counts.min() >= 40  # about a quarter of each class (~180 per class)
    assert not np.array_equal(a.y_train, datasets.load_digits(seed=4).y_train)
    with pytest.raises(ValueError, match="test_fraction"):
        datasets.load_digits(test_fraction=1.5)


def test_mnist1d_is_the_canonical_generated_dataset():
    from mnist1d.data import get_dataset_args, make_dataset

    ds = datasets.load_mnist1d()
    ref = make_dataset(get_dataset_args())
    assert ds.x_train.shape == (4000, 40, 1) and ds.x_test.shape == (1000, 40, 1)
    np.testing.assert_allclose(ds.x_train[..., 0], ref["x"], atol=1e-6)
    np.testing.assert_array_equal(ds.y_test, ref["y_test"])
    other = datasets.load_mnist1d(seed=1, num_samples=500)
    assert other.x_train.shape == (400, 40, 1)


def test_superposition_data_embeds_sparse_features():
    x, z, w = datasets.make_superposition_data(0, 2000, 12, 5, 0.1)
    assert x.shape == (2000, 5) and z.shape == (2000, 12) and w.shape == (12, 5)
    np.testing.assert_allclose(np.linalg.norm(w, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(x, z @ w, atol=1e-5)
    assert abs(np.mean(z > 0) - 0.1) < 0.01  # Bernoulli(0.1): 24k draws, sd ~0.002
    x2, _, _ = datasets.make_superposition_data(0, 2000, 12, 5, 0.1)
    np.testing.assert_array_equal(x, x2)
    with pytest.raises(ValueError, match="feature_probability"):
        datasets.sparse_features(0, 10, 3, 1.5)


def test_digits_split_that_empties_a_class_is_rejected():
    for bad in (0.001, 0.999):
        with pytest.raises(ValueError, match="test_fraction"):
            datasets.load_digits(0, bad)
    with pytest.raises(TypeError, match="seed"):
        datasets.load_digits(seed=1.5)
    small = datasets.load_digits(0, 0.01)          # one or two test images per class
    assert np.bincount(small.y_test, minlength=10).min() >= 1


def test_bad_seeds_and_keys_are_clear_errors():
    with pytest.raises(TypeError, match="key_or_seed"):
        datasets.sparse_features(None, 10, 3, 0.5)
    with pytest.raises(TypeError, match="num_samples"):
        datasets.load_mnist1d(num_samples=500.0)
    with pytest.raises(TypeError, match="seed"):
        datasets.load_mnist1d(seed="42")


def test_mnist1d_cache_is_not_changed_by_the_caller():
    a = datasets.load_mnist1d(seed=1, num_samples=100)
    a.x_train[:] = 0.0
    b = datasets.load_mnist1d(seed=1, num_samples=100)
    assert np.abs(b.x_train).sum() > 0
