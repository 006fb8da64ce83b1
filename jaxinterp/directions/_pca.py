"""Principal component analysis, in memory or from streamed first and second moments."""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxinterp._validation import check_positive_int, check_rank, check_shape
from jaxinterp.directions.base import Directions, validate_data
from jaxinterp.directions.encoders import Linear
from jaxinterp.directions.learner import Learner, check_bool, check_choice, static

METHODS = ("auto", "svd", "cov")


class PCAState(NamedTuple):
    """PCA fit (zeros before ``update``).

    Attributes:
      components: ``[k, d]`` orthonormal principal axes, by decreasing variance; the sign makes
        each axis's largest-magnitude entry positive (scikit-learn's convention).
      explained_variance: ``[k]`` variance along each axis (denominator ``n - 1``).
      mean: ``[d]`` data mean.
      total_variance: scalar, summed variance of all ``d`` features.
    """

    components: jax.Array
    explained_variance: jax.Array
    mean: jax.Array
    total_variance: jax.Array


def _flip_signs(v: jax.Array) -> jax.Array:
    idx = jnp.argmax(jnp.abs(v), axis=1)
    signs = jnp.sign(v[jnp.arange(v.shape[0]), idx])
    return v * jnp.where(signs == 0, 1.0, signs)[:, None]


@partial(jax.jit, static_argnums=(2,))
def _pca_from_cov(mean, cov, k):
    evals, evecs = jnp.linalg.eigh(cov)
    order = jnp.argsort(-evals)[:k]
    comps = _flip_signs(evecs[:, order].T)
    return PCAState(comps, jnp.maximum(evals[order], 0.0), mean, jnp.trace(cov))


@partial(jax.jit, static_argnums=(1, 2))
def _pca(x, k, method):
    n = x.shape[0]
    mean = jnp.mean(x, axis=0)
    xc = x - mean
    if method == "auto":
        method = "cov" if n >= 4 * x.shape[1] else "svd"
    if method == "cov":
        return _pca_from_cov(mean, (xc.T @ xc) / max(n - 1, 1), k)
    _, s, vt = jnp.linalg.svd(xc, full_matrices=False)
    var = s**2 / max(n - 1, 1)
    return PCAState(_flip_signs(vt[:k]), var[:k], mean, jnp.sum(var))


def _pca_update(state: PCAState, x, *, k, method) -> PCAState:
    return _pca(x, k, method)


def _pca_finalize(state: PCAState, *, whiten) -> Directions:
    comps = state.components
    info = {"explained_variance": state.explained_variance, "total_variance": state.total_variance}
    zeros = jnp.zeros(comps.shape[:-1], comps.dtype)
    if whiten:
        std = jnp.sqrt(jnp.maximum(state.explained_variance, 1e-12))[..., None]
        return Directions.create(comps * std, Linear(jnp.swapaxes(comps / std, -1, -2), zeros), method="pca",
                                 center=state.mean, info=info)
    return Directions.create(comps, Linear(jnp.swapaxes(comps, -1, -2), zeros), method="pca", center=state.mean,
                             info=info)


def pca(k: int, *, whiten: bool = False, method: str = "auto") -> Learner:
    """Top-``k`` principal components; ``encode`` gives the projections on the axes.

    Args:
      k: number of components, ``1 <= k <= min(n, d)``.
      whiten: divide the responses by the axes' standard deviations (unit-variance responses).
      method: ``"svd"`` (thin SVD of the centred data), ``"cov"`` (eigendecomposition of the
        ``d x d`` covariance; fast when ``n >> d``) or ``"auto"`` (``cov`` when ``n >= 4 d``).

    Returns:
      A full-batch ``Learner``; the ``Directions`` have ``center`` the data mean and ``info``
      ``explained_variance [k]`` and ``total_variance``.
    """
    k = check_positive_int(k, "k")
    whiten = check_bool(whiten, "whiten")
    check_choice(method, "method", METHODS)

    def init(key, x):
        x = validate_data(x, "data", k=k, max_k="rank")
        d, dt = x.shape[1], x.dtype
        return PCAState(jnp.zeros((k, d), dt), jnp.zeros((k,), dt), jnp.zeros((d,), dt), jnp.zeros((), dt))

    return Learner(init, static(_pca_update, k=k, method=method), static(_pca_finalize, whiten=whiten), "pca",
                   dict(k=k, whiten=whiten, method=method), full_batch=True)


def pca_from_moments(mean: jax.Array, cov: jax.Array, k: int, *, whiten: bool = False) -> Directions:
    """PCA ``Directions`` from streamed statistics (e.g. accumulated over batches of activations).

    Args:
      mean: ``[d]`` mean.
      cov: ``[d, d]`` covariance (denominator ``count - 1``).
      k: number of components, ``1 <= k <= d``.
      whiten: unit-variance responses.

    Returns:
      ``Directions``, as ``fit(pca(k), x)`` on data with these moments.
    """
    check_rank(mean, "mean", 1)
    d = mean.shape[0]
    check_shape(cov, "cov", (d, d))
    k = check_positive_int(k, "k", maximum=d, maximum_name="dimension of `mean`")
    return _pca_finalize(_pca_from_cov(jnp.asarray(mean), jnp.asarray(cov), k), whiten=check_bool(whiten, "whiten"))
