"""K-means and cosine (spherical) K-means: k-means++ seeding, full-batch Lloyd, minibatch updates.

Cosine K-means clusters L2-normalised activation vectors and keeps unit-norm centroids, as used
to find interpretable directions in superposition (Klindt et al. 2023). Plain K-means follows
scikit-learn's ``KMeans`` (greedy k-means++ with ``2 + log(k)`` local trials, Lloyd iterations,
tolerance relative to the mean feature variance) so results compare line by line. Lloyd's
iteration keeps Hamerly's (2010) per-row distance bounds, so only the rows whose bounds no longer
prove their label are compared with the centres again (the same labels as plain Lloyd, with a
fraction of the distance products once the centres settle). Minibatch K-means follows Sculley
(2010) with per-centre learning rates ``1 / count``.
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

import numpy as np

from jaxinterp._validation import check_key, check_positive_int, is_concrete
from jaxinterp.directions._solvers import sq_distances, unit_rows
from jaxinterp.directions.base import Directions, validate_data
from jaxinterp.directions.encoders import CosineCentroid, NearestCentroid
from jaxinterp.directions.learner import Learner, check_bool, check_choice, check_number, static

RESPONSES = ("projection", "distance")


def kmeans_plusplus(x: jax.Array, k: int, *, key: jax.Array, n_local_trials: int | None = None) -> jax.Array:
    """Greedy k-means++ seeding (Arthur & Vassilvitskii 2007, as in scikit-learn).

    Args:
      x: ``[n, d]`` data.
      k: number of centres, ``1 <= k <= n``.
      key: PRNG key.
      n_local_trials: candidates tried per centre (default ``2 + int(log(k))``).

    Returns:
      ``[k, d]`` initial centres (rows of ``x``).
    """
    x = validate_data(x, k=k)
    check_distinct(x, k, "x")
    key = check_key(key, "key")
    trials = _trials(k, n_local_trials)
    return _kmeans_plusplus(key, x, k, trials)


def check_distinct(x, k: int, name: str, *, cosine: bool = False) -> None:
    """Raise ValueError when a concrete ``x [n, d]`` has fewer than ``k`` distinct rows.

    k-means++ would have to repeat a row, and K-means would return duplicate centres. The first
    ``4k`` rows are checked first, so the usual case costs a sort of ``4k`` rows.
    """
    if not is_concrete(x):
        return
    a = np.asarray(x)
    if cosine:
        a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    for m in dict.fromkeys((min(len(a), 4 * k), len(a))):
        n_distinct = len(np.unique(a[:m], axis=0))
        if n_distinct >= k:
            return
    what = "distinct directions" if cosine else "distinct rows"
    raise ValueError(f"`k` = {k} exceeds the {n_distinct} {what} of `{name}`; K-means would return duplicate "
                     f"centres. Use k <= {n_distinct}.")


def _trials(k, n_local_trials):
    if n_local_trials is None:
        return 2 + int(math.log(k))
    return check_positive_int(n_local_trials, "n_local_trials")


@partial(jax.jit, static_argnums=(2, 3))
def _kmeans_plusplus(key, x, k, trials):
    n = x.shape[0]
    k0, kloop = jax.random.split(key)
    sq = jnp.sum(x * x, axis=1)
    first = jax.random.randint(k0, (), 0, n)

    def dist_to(rows):  # [t, d] -> [t, n]
        return jnp.maximum(jnp.sum(rows * rows, 1)[:, None] - 2 * rows @ x.T + sq[None, :], 0.0)

    closest = dist_to(x[first][None])[0]
    centers = jnp.zeros((k, x.shape[1]), x.dtype).at[0].set(x[first])

    def body(c, carry):
        centers, closest = carry
        kc = jax.random.fold_in(kloop, c)
        pot = jnp.sum(closest)
        r = jax.random.uniform(kc, (trials,), x.dtype) * pot
        cand = jnp.clip(jnp.searchsorted(jnp.cumsum(closest), r), 0, n - 1)
        new = jnp.minimum(closest[None, :], dist_to(x[cand]))
        best = jnp.argmin(jnp.sum(new, axis=1))
        return centers.at[c].set(x[cand[best]]), new[best]

    centers, _ = jax.lax.fori_loop(1, k, body, (centers, closest))
    return centers


def _cost(x, centers, cosine):
    """Per-sample cost ``[n]``: squared distance to the nearest centre (cosine: ``1 - max cos``)."""
    if cosine:
        return 1.0 - jnp.max(x @ centers.T, axis=1)
    return jnp.maximum(jnp.min(sq_distances(x, centers), axis=1), 0.0)


def _m_step(x, labels, old, cosine):
    k = old.shape[0]
    sums = jax.ops.segment_sum(x, labels, k)
    counts = jnp.bincount(labels, length=k).astype(x.dtype)
    new = jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1.0)[:, None], old)
    return unit_rows(new) if cosine else new


class _Bounds(NamedTuple):
    """Per-sample assignment and distance bounds of Hamerly's (2010) exact Lloyd iteration.

    Attributes:
      labels: ``[n]`` nearest centre.
      upper: ``[n]`` upper bound of the distance to the nearest centre.
      lower: ``[n]`` lower bound of the distance to every other centre.
    """

    labels: jax.Array
    upper: jax.Array
    lower: jax.Array


def _assign(x, xsq, centers) -> _Bounds:
    """Exact labels and the first and second smallest distances of the rows of ``x [b, d]``."""
    k = centers.shape[0]
    d2 = jnp.sum(centers * centers, axis=1)[None, :] - 2.0 * (x @ centers.T)   # + ||x||^2, added below
    labels = jnp.argmin(d2, axis=1)
    first = jnp.min(d2, axis=1)
    second = jnp.min(jnp.where(jax.lax.broadcasted_iota(jnp.int32, d2.shape, 1) == labels[:, None], jnp.inf, d2),
                     axis=1) if k > 1 else jnp.full_like(first, jnp.inf)
    return _Bounds(labels.astype(jnp.int32), jnp.sqrt(jnp.maximum(first + xsq, 0.0)),
                   jnp.sqrt(jnp.maximum(second + xsq, 0.0)))


def _reassign(x, xsq, slack, centers, moved, bounds: _Bounds) -> _Bounds:
    """Bounds for ``centers`` after each centre moved by ``moved [k]``; rows whose bounds no longer
    prove their label are recomputed: gathered into the smallest of buffers of ``n / 32``, ``n / 8``
    and ``n / 3`` rows that holds them, else all rows."""
    k = centers.shape[0]
    upper = bounds.upper + moved[bounds.labels]
    if k > 1:
        top2, arg = jax.lax.top_k(moved, 2)
        lower = bounds.lower - jnp.where(bounds.labels == arg[0], top2[1], top2[0])
        cc = sq_distances(centers, centers) + jnp.diag(jnp.full((k,), jnp.inf, centers.dtype))
        half = 0.5 * jnp.sqrt(jnp.maximum(jnp.min(cc, axis=1), 0.0))
        stale = upper + slack > jnp.maximum(lower, half[bounds.labels])
    else:
        lower, stale = bounds.lower, jnp.zeros_like(upper, bool)
    bounds = _Bounds(bounds.labels, upper, lower)

    n = x.shape[0]

    def some(bounds, cap):
        idx = jnp.nonzero(stale, size=cap, fill_value=n)[0]
        fresh = _assign(jnp.take(x, idx, axis=0, mode="clip"), jnp.take(xsq, idx, mode="clip"), centers)
        return _Bounds(*(old.at[idx].set(new, mode="drop") for old, new in zip(bounds, fresh)))

    caps = sorted({max(1, n // 32), max(1, n // 8), max(1, n // 3)})
    branches = [partial(some, cap=c) for c in caps] + [lambda _: _assign(x, xsq, centers)]
    tier = jnp.sum(jnp.sum(stale) > jnp.asarray(caps))
    return jax.lax.switch(tier, branches, bounds)


@partial(jax.jit, static_argnames=("k", "cosine", "max_iter", "n_local_trials"))
def _lloyd(key, x, tol, *, k, cosine, max_iter, n_local_trials):
    """Lloyd's iteration from k-means++ seeds, with Hamerly's bounds: a row whose label the bounds
    prove unchanged is not compared with the centres again (same labels as plain Lloyd)."""
    centers = _kmeans_plusplus(key, x, k, n_local_trials)
    if cosine:
        centers = unit_rows(centers)
    xsq = jnp.sum(x * x, axis=1)
    # rounding of the expanded distances: a bound proves a label only with this margin
    slack = 1e-3 * jnp.sqrt(xsq + jnp.max(xsq))

    def cond(c):
        return (c[3] < max_iter) & (c[2] > tol)

    def body(c):
        centers, bounds, _, it = c
        new = _m_step(x, bounds.labels, centers, cosine)
        moved = jnp.linalg.norm(new - centers, axis=1)
        shift = jnp.sum(moved * moved)
        bounds = jax.lax.cond((shift > tol) & (it + 1 < max_iter),
                              lambda b: _reassign(x, xsq, slack, new, moved, b), lambda b: b, bounds)
        return new, bounds, shift, it + 1

    init = (centers, _assign(x, xsq, centers), jnp.asarray(jnp.inf, x.dtype), 0)
    centers, _, _, n_iter = jax.lax.while_loop(cond, body, init)
    return centers, jnp.sum(_cost(x, centers, cosine)), n_iter


class KMeansState(NamedTuple):
    """State of full-batch K-means: the key and tolerance before ``update``, the fit after it.

    Attributes:
      key: PRNG key of the k-means++ seeding.
      tol: relative tolerance (scalar; a ``vmap`` sweep may batch it).
      centers: ``[k, d]`` centroids (unit norm for cosine K-means).
      inertia: sum of squared distances to the nearest centroid (cosine: sum of ``1 - cos``).
      n_iter: Lloyd iterations of the best initialisation.
    """

    key: jax.Array
    tol: jax.Array
    centers: jax.Array
    inertia: jax.Array
    n_iter: jax.Array


def _kmeans_update(state: KMeansState, x, *, k, cosine, n_init, max_iter, trials) -> KMeansState:
    if cosine:
        x = unit_rows(x)
    abs_tol = state.tol * jnp.mean(jnp.var(x, axis=0))
    keys = jax.random.split(state.key, n_init)
    # one initialisation after another: under vmap the bounds' branches would all run as selects
    centers, inertia, n_iter = jax.lax.map(
        lambda kk: _lloyd(kk, x, abs_tol, k=k, cosine=cosine, max_iter=max_iter, n_local_trials=trials), keys)
    best = jnp.argmin(inertia)
    return KMeansState(state.key, state.tol, centers[best], inertia[best], n_iter[best])


def _centroid_directions(centers, *, cosine, response, method, info) -> Directions:
    encoder = CosineCentroid(response=response) if cosine else NearestCentroid(response=response)
    return Directions.create(centers, encoder, method=method, info=info)


def _kmeans_finalize(state: KMeansState, *, cosine, response) -> Directions:
    return _centroid_directions(state.centers, cosine=cosine, response=response,
                                method="cosine_kmeans" if cosine else "kmeans",
                                info={"inertia": state.inertia, "n_iter": state.n_iter})


def kmeans(k: int, *, cosine: bool = False, response: str = "projection", n_init: int = 1, max_iter: int = 300,
           tol: float = 1e-4, n_local_trials: int | None = None) -> Learner:
    """Full-batch K-means (Lloyd from k-means++ seeds); the best of ``n_init`` runs.

    A direction's response (``encode``) is the projection of the (unit-normalised, for cosine)
    input on the centroid, or with ``response="distance"`` minus the distance to it; ``codes``
    keep only the nearest centroid. ``info`` holds ``inertia`` and ``n_iter``.

    Args:
      k: number of clusters, at most the number of distinct rows of the data (distinct
        directions for cosine K-means); more is an error, as the centres would repeat.
      cosine: cluster the L2-normalised rows with unit-norm centroids (spherical K-means).
      response: ``"projection"`` or ``"distance"``.
      n_init: independent initialisations, run one after another; the lowest inertia wins.
      max_iter: maximum Lloyd iterations.
      tol: stop when the squared centre shift is below ``tol`` times the mean feature variance
        (numeric: a sweep may ``vmap`` over it).
      n_local_trials: k-means++ candidates per centre (default ``2 + int(log(k))``).

    Returns:
      A full-batch ``Learner`` for ``fit``.
    """
    k = check_positive_int(k, "k")
    cosine = check_bool(cosine, "cosine")
    check_choice(response, "response", RESPONSES)
    settings = dict(k=k, cosine=cosine, n_init=check_positive_int(n_init, "n_init"),
                    max_iter=check_positive_int(max_iter, "max_iter"), trials=_trials(k, n_local_trials))
    check_number(tol, "tol")

    def init(key, x):
        x = validate_data(x, "data", k=k)
        check_distinct(x, k, "data", cosine=cosine)
        return KMeansState(key, jnp.asarray(tol, x.dtype), jnp.zeros((k, x.shape[1]), x.dtype),
                           jnp.zeros((), x.dtype), jnp.zeros((), jnp.int32))

    return Learner(init, static(_kmeans_update, **settings),
                   static(_kmeans_finalize, cosine=cosine, response=response),
                   "cosine_kmeans" if cosine else "kmeans", dict(settings, response=response, tol=tol),
                   full_batch=True)


class MiniBatchKMeansState(NamedTuple):
    """State of minibatch K-means.

    Attributes:
      centers: ``[k, d]`` current centres.
      counts: ``[k]`` samples assigned so far (the per-centre learning rate is ``1 / count``).
    """

    centers: jax.Array
    counts: jax.Array


def _minibatch_init(key, x, *, k, cosine, init_size) -> MiniBatchKMeansState:
    x = validate_data(x, "data", k=k)
    n = x.shape[0]
    m = min(n, init_size or 3 * k + 1024)
    k_sub, k_pp = jax.random.split(key)
    sub = x[jax.random.choice(k_sub, n, (m,), replace=False)]
    if cosine:
        sub = unit_rows(sub)
    check_distinct(sub, k, "data (its initialisation sample)")
    centers = _kmeans_plusplus(k_pp, sub, k, 2 + int(math.log(k)))
    if cosine:
        centers = unit_rows(centers)
    return MiniBatchKMeansState(centers, jnp.zeros((k,), x.dtype))


def _minibatch_update(state: MiniBatchKMeansState, batch, *, cosine) -> MiniBatchKMeansState:
    """One minibatch step (Sculley 2010): move each centre to the running mean of its samples."""
    k = state.centers.shape[0]
    xb = unit_rows(batch) if cosine else batch
    d2 = sq_distances(xb, state.centers)
    onehot = jax.nn.one_hot(jnp.argmin(d2, axis=1), k, dtype=batch.dtype)
    n_j = jnp.sum(onehot, axis=0)
    sums = onehot.T @ xb
    counts = state.counts + n_j
    lr = jnp.where(n_j > 0, 1.0 / jnp.maximum(counts, 1.0), 0.0)[:, None]
    centers = state.centers + lr * (sums - n_j[:, None] * state.centers)
    return MiniBatchKMeansState(unit_rows(centers) if cosine else centers, counts)


def _minibatch_finalize(state: MiniBatchKMeansState, *, cosine, response) -> Directions:
    return _centroid_directions(state.centers, cosine=cosine, response=response,
                                method="minibatch_cosine_kmeans" if cosine else "minibatch_kmeans",
                                info={"counts": state.counts})


def minibatch_kmeans(k: int, *, cosine: bool = False, response: str = "projection", batch_size: int = 1024,
                     steps: int = 1000, init_size: int | None = None) -> Learner:
    """Minibatch K-means (Sculley 2010) from k-means++ seeds on a random subset of the data.

    Args:
      k: number of centres.
      cosine: spherical K-means on unit-normalised rows.
      response: ``"projection"`` or ``"distance"`` (see ``kmeans``).
      batch_size: default rows per step.
      steps: default number of steps.
      init_size: rows of the initialisation sample used for seeding (default ``3k + 1024``).

    Returns:
      A minibatch ``Learner`` for ``fit``; ``info`` holds the per-centre ``counts``.
    """
    k = check_positive_int(k, "k")
    cosine = check_bool(cosine, "cosine")
    check_choice(response, "response", RESPONSES)
    if init_size is not None:
        check_positive_int(init_size, "init_size")
    init = partial(_minibatch_init, k=k, cosine=cosine, init_size=init_size)
    return Learner(init, static(_minibatch_update, cosine=cosine),
                   static(_minibatch_finalize, cosine=cosine, response=response),
                   "minibatch_kmeans", dict(k=k, cosine=cosine, response=response, init_size=init_size),
                   steps=check_positive_int(steps, "steps"), batch_size=check_positive_int(batch_size, "batch_size"))
