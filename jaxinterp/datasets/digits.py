"""scikit-learn's 8x8 handwritten digits (bundled with scikit-learn, no download)."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits as _sk_load_digits

from jaxinterp._validation import check_in_range
from jaxinterp.datasets.base import Dataset


def load_digits(seed: int = 0, test_fraction: float = 0.25) -> Dataset:
    """The 1797 scikit-learn digits as images, split at random (stratified by class).

    Args:
      seed: seed of the train/test permutation; the same seed gives the same split.
      test_fraction: fraction of each class held out for testing, in (0, 1).

    Returns:
      A ``Dataset`` with ``x`` float32 ``[n, 8, 8, 1]`` scaled to ``[0, 1]`` (pixel / 16) and ``y``
      int32 ``[n]``; about 1347 training and 450 test images.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"`seed` must be an int; got {type(seed).__name__}.")
    if seed < 0:
        raise ValueError(f"`seed` must be >= 0; got {seed}.")
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float, np.integer, np.floating)):
        raise TypeError(f"`test_fraction` must be a number in (0, 1); got {type(test_fraction).__name__}.")
    check_in_range(test_fraction, "test_fraction", 0.0, 1.0, inclusive=False)
    bunch = _sk_load_digits()
    sizes = np.bincount(bunch.target)
    n_test = np.round(test_fraction * sizes).astype(int)
    if n_test.min() < 1 or np.min(sizes - n_test) < 1:
        low, high = 0.5 / sizes.min(), 1.0 - 0.5 / sizes.min()
        raise ValueError(f"`test_fraction` {test_fraction} leaves a class with no test or no training image "
                         f"(class sizes {sizes.min()}..{sizes.max()}); use a value in about ({low:.4f}, {high:.4f}).")
    x = (bunch.images.astype(np.float32) / 16.0)[..., None]
    y = bunch.target.astype(np.int32)
    rng = np.random.default_rng(seed)
    test_mask = np.zeros(len(y), dtype=bool)
    for c in range(10):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        test_mask[idx[: int(round(test_fraction * len(idx)))]] = True
    train_idx = rng.permutation(np.flatnonzero(~test_mask))
    test_idx = np.flatnonzero(test_mask)
    return Dataset(x[train_idx], y[train_idx], x[test_idx], y[test_idx], "digits", 10)
