"""Principal component analysis, in memory or from streamed first and second moments."""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

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
    """PCA of ``x [n, d]``, computed on the data divided by its largest magnitude.

    The axes come from the scaled data (no overflow of the squares, e.g. at 1e30 in float32);
    variances are scaled back, so they overflow only when the true value is not representable.
    """
    n = x.shape[0]
    s = jnp.max(jnp.abs(x))
    s = jnp.where(s > 0, s, 1.0)
    xs = x / s
    mean_s = jnp.mean(xs, axis=0)
    xc = xs - mean_s[None, :]
    if method == "auto":
        method = "cov" if n >= 4 * x.shape[1] else "svd"
    if method == "cov":
        fit = _pca_from_cov(mean_s, (xc.T @ xc) / max(n - 1, 1), k)
        return PCAState(fit.components, fit.explained_variance * s**2, mean_s * s, fit.total_variance * s**2)
    _, sv, vt = jnp.linalg.svd(xc, full_matrices=False)
    var = sv**2 / max(n - 1, 1)
    return PCAState(_flip_signs(vt[:k]), var[:k] * s**2, mean_s * s, jnp.sum(var) * s**2)


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
    mean = validate_data(mean if mean is None or isinstance(mean, str) else np.asarray(mean)[None], "mean")[0]
    d = mean.shape[0]
    cov = validate_data(cov, "cov")
    check_shape(cov, "cov", (d, d))
    k = check_positive_int(k, "k", maximum=d, maximum_name="dimension of `mean`")
    s = jnp.max(jnp.abs(cov))
    s = jnp.where(s > 0, s, 1.0)
    fit = _pca_from_cov(mean, cov / s, k)
    fit = fit._replace(explained_variance=fit.explained_variance * s, total_variance=fit.total_variance * s)
    return _pca_finalize(fit, whiten=check_bool(whiten, "whiten"))
