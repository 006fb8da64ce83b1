"""FastICA, parallel (symmetric) variant with the logcosh contrast; whitening by the ``k``
leading axes (eigendecomposition of the ``d x d`` Gram matrix when ``n >= d``, else a thin SVD).

Follows Hyvarinen & Oja (2000) and scikit-learn's ``FastICA(algorithm="parallel",
fun="logcosh", whiten="unit-variance")`` step for step, under ``jit``.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp._validation import check_positive_int, is_concrete
from jaxinterp.directions.base import Directions, validate_data
from jaxinterp.directions.encoders import Linear
from jaxinterp.directions.learner import Learner, check_number, static


class ICAState(NamedTuple):
    """FastICA state: key and settings before ``update``, the fit after it.

    Attributes:
      key: PRNG key of the initial rotation.
      tol: convergence tolerance (scalar).
      alpha: logcosh parameter (scalar).
      unmixing: ``[k, d]`` maps centred data to unit-variance sources ``s = (x - mean) @ unmixing.T``.
      mixing: ``[d, k]`` pseudo-inverse of ``unmixing``: ``x ~ s @ mixing.T + mean``.
      mean: ``[d]`` data mean.
      rank: numerical rank of the centred data (the whitening needs ``rank >= k``).
      n_iter: fixed-point iterations run.
    """

    key: jax.Array
    tol: jax.Array
    alpha: jax.Array
    unmixing: jax.Array
    mixing: jax.Array
    mean: jax.Array
    rank: jax.Array
    n_iter: jax.Array


def _sym_decorrelation(w: jax.Array) -> jax.Array:
    """``(W W^T)^{-1/2} W``."""
    s, u = jnp.linalg.eigh(w @ w.T)
    s = jnp.maximum(s, jnp.finfo(w.dtype).tiny)
    return (u * (1.0 / jnp.sqrt(s))[None, :]) @ u.T @ w


def _leading_axes(xt: jax.Array, k: int):
    """The ``k`` leading left singular vectors ``[d, k]`` and values ``[k]`` of centred ``xt [d, n]``,
    and the numerical rank of ``xt`` (counted up to ``k`` on the Gram path: all ``fit`` checks).

    With ``n >= d`` from the eigendecomposition of the ``d x d`` Gram matrix (computed on data
    divided by its largest magnitude), not from an SVD of the whole data; the rank counts the
    eigenvalues above ``d * eps * 10`` of the largest (the resolution of a float32 eigensolver).
    Signs make each vector's first entry non-negative (scikit-learn's convention).
    """
    dim, n = xt.shape
    eps = jnp.finfo(jnp.float32).eps
    if n >= dim:
        s = jnp.max(jnp.abs(xt))
        s = jnp.where(s > 0, s, 1.0)
        xs = xt / s
        evals, evecs = jnp.linalg.eigh(xs @ xs.T)
        evals, u = jnp.maximum(evals[::-1][:k], 0.0), evecs[:, ::-1][:, :k]
        sv = jnp.sqrt(evals) * s
        rank = jnp.sum(evals > evals[0] * dim * eps * 10)
    else:
        u, sv_all, _ = jnp.linalg.svd(xt, full_matrices=False)
        rank = jnp.sum(sv_all > sv_all[0] * max(xt.shape) * eps * 10)
        u, sv = u[:, :k], sv_all[:k]
    return u * jnp.where(u[0] < 0, -1.0, 1.0)[None, :], sv, rank


@partial(jax.jit, static_argnames=("k", "max_iter"))
def _fastica(key, x, tol, alpha, *, k, max_iter):
    n = x.shape[0]
    mean = jnp.mean(x, axis=0)
    xt = (x - mean[None, :]).T  # [d, n]
    u, d, rank = _leading_axes(xt, k)
    kmat = (u / d[None, :]).T  # [k, d]
    x1 = (kmat @ xt) * jnp.sqrt(jnp.asarray(n, x.dtype))  # [k, n], white
    w0 = _sym_decorrelation(jax.random.normal(key, (k, k), x.dtype))

    def cond(c):
        _, lim, it = c
        return (it < max_iter) & (lim >= tol)

    def body(c):
        w, _, it = c
        gx = jnp.tanh(alpha * (w @ x1))
        g_x = jnp.mean(alpha * (1.0 - gx**2), axis=1)
        w1 = _sym_decorrelation(gx @ x1.T / n - g_x[:, None] * w)
        lim = jnp.max(jnp.abs(jnp.abs(jnp.sum(w1 * w, axis=1)) - 1.0))
        return w1, lim, it + 1

    w, _, n_iter = jax.lax.while_loop(cond, body, (w0, jnp.asarray(jnp.inf, x.dtype), 0))
    unmix = w @ kmat
    std = jnp.std((x - mean[None, :]) @ unmix.T, axis=0)
    unmix = unmix / std[:, None]
    return unmix, jnp.linalg.pinv(unmix), mean, rank, n_iter


def _ica_update(state: ICAState, x, *, k, max_iter) -> ICAState:
    unmix, mixing, mean, rank, n_iter = _fastica(state.key, x, state.tol, state.alpha, k=k, max_iter=max_iter)
    return ICAState(state.key, state.tol, state.alpha, unmix, mixing, mean, rank.astype(jnp.int32), n_iter)


def _ica_finalize(state: ICAState, *, k) -> Directions:
    if is_concrete(state.rank) and np.ndim(state.rank) == 0:
        rank = int(state.rank)
        if rank < k:
            raise ValueError(f"`data` has numerical rank {rank} < k = {k} (constant or collinear features); "
                             f"whitening would divide by zero: use k <= {rank}.")
    zeros = jnp.zeros(state.unmixing.shape[:-1], state.unmixing.dtype)
    return Directions.create(jnp.swapaxes(state.mixing, -1, -2), Linear(jnp.swapaxes(state.unmixing, -1, -2), zeros),
                             method="ica", center=state.mean, info={"n_iter": state.n_iter})


def ica(k: int, *, max_iter: int = 200, tol: float = 1e-4, alpha: float = 1.0) -> Learner:
    """Independent components by parallel FastICA with the logcosh contrast.

    ``encode`` gives the unit-variance sources; ``components`` are the mixing vectors
    (``mixing.T [k, d]``), so ``decode(encode(x))`` projects ``x`` on their span.

    Args:
      k: number of components, ``1 <= k <= min(n, d)`` and at most the data's numerical rank.
      max_iter: maximum fixed-point iterations.
      tol: stop when every row of the rotation changes by less than ``tol`` (numeric).
      alpha: logcosh parameter, in [1, 2] (numeric).

    Returns:
      A full-batch ``Learner``; ``info`` holds ``n_iter``.
    """
    k = check_positive_int(k, "k")
    max_iter = check_positive_int(max_iter, "max_iter")
    check_number(tol, "tol")
    check_number(alpha, "alpha", low=1.0, high=2.0)

    def init(key, x):
        x = validate_data(x, "data", k=k, max_k="rank")
        d, dt = x.shape[1], x.dtype
        return ICAState(key, jnp.asarray(tol, dt), jnp.asarray(alpha, dt), jnp.zeros((k, d), dt),
                        jnp.zeros((d, k), dt), jnp.zeros((d,), dt), jnp.zeros((), jnp.int32),
                        jnp.zeros((), jnp.int32))

    return Learner(init, static(_ica_update, k=k, max_iter=max_iter), static(_ica_finalize, k=k), "ica",
                   dict(k=k, max_iter=max_iter, tol=tol, alpha=alpha), full_batch=True)
