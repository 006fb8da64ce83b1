"""Sparse synthetic features: the superposition toy setting with planted ground truth."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp._validation import check_positive_int, check_real


def _as_key(key_or_seed) -> jax.Array:
    if isinstance(key_or_seed, (int, np.integer)) and not isinstance(key_or_seed, bool):
        return jax.random.key(int(key_or_seed))
    if (isinstance(key_or_seed, jax.Array) and jax.dtypes.issubdtype(key_or_seed.dtype, jax.dtypes.prng_key)
            and key_or_seed.shape == ()):
        return key_or_seed
    raise TypeError("`key_or_seed` must be an int seed or one typed PRNG key from jax.random.key; "
                    f"got {type(key_or_seed).__name__} {getattr(key_or_seed, 'dtype', '')}.")


def sparse_features(key_or_seed, n_samples: int, n_features: int, feature_probability: float,
                    *, nonnegative: bool = True) -> np.ndarray:
    """Feature activations that are each non-zero with probability ``feature_probability``.

    Non-zero values are uniform in ``[0, 1]`` (or ``[-1, 1]`` with ``nonnegative=False``), as in
    the toy models of superposition (Elhage et al. 2022).

    Args:
      key_or_seed: a ``jax.random`` key or an int seed.
      n_samples: number of samples.
      n_features: number of features.
      feature_probability: probability that a feature is active, in (0, 1].

    Returns:
      float32 ``[n_samples, n_features]``.
    """
    check_positive_int(n_samples, "n_samples")
    check_positive_int(n_features, "n_features")
    check_real(feature_probability, "feature_probability", low=0.0, high=1.0)
    if feature_probability == 0.0:
        raise ValueError("`feature_probability` must be > 0.")
    k_on, k_val = jax.random.split(_as_key(key_or_seed))
    on = jax.random.bernoulli(k_on, feature_probability, (n_samples, n_features))
    low = 0.0 if nonnegative else -1.0
    vals = jax.random.uniform(k_val, (n_samples, n_features), minval=low, maxval=1.0)
    return np.asarray(jnp.where(on, vals, 0.0), dtype=np.float32)


def make_superposition_data(key_or_seed, n_samples: int, n_features: int, dim: int,
                            feature_probability: float, *, nonnegative: bool = True):
    """Sparse features embedded in fewer dimensions by random unit directions.

    ``x = z @ w`` where ``z`` are sparse feature activations and the rows of ``w`` are random
    unit vectors in ``R^dim``: with ``n_features > dim`` the features are in superposition, and a
    method that recovers the rows of ``w`` has found the planted directions.

    Args:
      key_or_seed: a ``jax.random`` key or an int seed.
      n_samples: number of samples.
      n_features: number of planted features (may exceed ``dim``).
      dim: dimension of the embedding space.
      feature_probability: probability that a feature is active.
      nonnegative: non-negative feature values (default) or symmetric ones.

    Returns:
      ``(x, z, w)``: float32 ``x [n_samples, dim]``, ``z [n_samples, n_features]``,
      ``w [n_features, dim]`` with unit-norm rows.
    """
    check_positive_int(dim, "dim")
    key = _as_key(key_or_seed)
    k_z, k_w = jax.random.split(key)
    z = sparse_features(k_z, n_samples, n_features, feature_probability, nonnegative=nonnegative)
    w = jax.random.normal(k_w, (n_features, dim))
    w = np.asarray(w / jnp.linalg.norm(w, axis=1, keepdims=True), dtype=np.float32)
    return (z @ w).astype(np.float32), z, w
