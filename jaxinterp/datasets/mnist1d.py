"""MNIST-1D (Greydanus 2020), generated offline with the ``mnist1d`` package's ``make_dataset``."""

from __future__ import annotations

import functools

import numpy as np

from jaxinterp._validation import check_seed

from jaxinterp.datasets.base import Dataset

#: Seed of the canonical MNIST-1D dataset (the package's default arguments).
CANONICAL_SEED = 42


# A result cache (generating the data takes about 2 s), not a compile cache.
@functools.lru_cache(maxsize=4)
def _generate(seed: int, num_samples: int) -> dict:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.seed = seed
    args.num_samples = num_samples
    return make_dataset(args)  # generates; never downloads


def load_mnist1d(seed: int = CANONICAL_SEED, num_samples: int = 5000) -> Dataset:
    """MNIST-1D: 10 classes of length-40 signals, generated procedurally (about 2 s).

    With the default arguments this is the canonical dataset of the mnist1d authors
    (``make_dataset(get_dataset_args())``: 4000 train / 1000 test, seed 42).

    Args:
      seed: generator seed; the same seed gives the same dataset.
      num_samples: total number of signals; 80 % go to the training split.

    Returns:
      A ``Dataset`` with ``x`` float32 ``[n, 40, 1]`` (channels last) and ``y`` int32 ``[n]``.
    """
    check_seed(seed)
    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)):
        raise TypeError(f"`num_samples` must be an int; got {type(num_samples).__name__}.")
    if num_samples < 10:
        raise ValueError(f"`num_samples` must be >= 10; got {num_samples}.")
    data = _generate(int(seed), int(num_samples))
    # copies: the generated arrays are cached and must not change under the caller's edits
    as_x = lambda a: np.array(a, dtype=np.float32)[..., None]
    as_y = lambda a: np.array(a, dtype=np.int32)
    return Dataset(as_x(data["x"]), as_y(data["y"]), as_x(data["x_test"]), as_y(data["y_test"]),
                   "mnist1d", 10)
