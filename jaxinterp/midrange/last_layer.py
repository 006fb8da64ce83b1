"""Last-layer retraining: L1-penalised multinomial logistic regression on standardised features.

Written in JAX (accelerated proximal gradient, FISTA with adaptive restart, under one
``lax.while_loop``), so it jits and runs on any device. It minimises scikit-learn's
``LogisticRegression(C=C, l1_ratio=1)`` objective (multinomial, unpenalised intercept)::

    C * sum_i cross_entropy(W^T z_i + b, y_i) + ||W||_1

where ``z`` are the features standardised with the mean and standard deviation of the
training features (units with zero variance are left unscaled).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxinterp._validation import (
    check_finite, check_nonempty, check_positive_int, check_rank, check_real, check_same_leading,
)
from jaxinterp.midrange.curation import check_labels


class LastLayer(NamedTuple):
    """A retrained linear read-out on standardised features.

    Attributes:
      mean, scale: ``[d]`` standardisation (``z = (features - mean) / scale``).
      weights: ``[d, n_classes]`` coefficients (sparse under the L1 penalty).
      bias: ``[n_classes]`` intercepts.
      n_iter: iterations the solver ran.
    """

    mean: jax.Array
    scale: jax.Array
    weights: jax.Array
    bias: jax.Array
    n_iter: jax.Array


def _soft_threshold(w, t):
    return jnp.sign(w) * jnp.maximum(jnp.abs(w) - t, 0.0)


@functools.partial(jax.jit, static_argnames=("n_classes", "max_iter"))
def _fista(z, y, weight, lam, n_classes: int, max_iter: int, tol):
    n, d = z.shape
    total = weight.sum()
    onehot = jax.nn.one_hot(y, n_classes, dtype=z.dtype)

    def smooth(params):
        w, b = params
        ce = optax.softmax_cross_entropy(z @ w + b[None, :], onehot)
        return jnp.sum(weight * ce) / total

    grad = jax.grad(smooth)
    zb = jnp.concatenate([z, jnp.ones((n, 1), z.dtype)], axis=1) * jnp.sqrt(weight / total)[:, None]
    lipschitz = 0.5 * jnp.linalg.norm(zb, ord=2) ** 2
    step = 1.0 / jnp.maximum(lipschitz, 1e-12)

    def prox_step(params):
        gw, gb = grad(params)
        w, b = params
        return _soft_threshold(w - step * gw, step * lam), b - step * gb

    def cond(state):
        i, _, _, _, delta = state
        return (i < max_iter) & (delta > tol)

    def body(state):
        i, x, y_, t, _ = state
        x_new = prox_step(y_)
        # adaptive restart (O'Donoghue & Candes): reset momentum when it points uphill
        going_up = jnp.vdot(y_[0] - x_new[0], x_new[0] - x[0]) + jnp.vdot(y_[1] - x_new[1], x_new[1] - x[1]) > 0
        t_new = jnp.where(going_up, 1.0, (1.0 + jnp.sqrt(1.0 + 4.0 * t * t)) / 2.0)
        beta = jnp.where(going_up, 0.0, (t - 1.0) / t_new)
        y_next = jax.tree_util.tree_map(lambda a, c: a + beta * (a - c), x_new, x)
        delta = jnp.maximum(jnp.max(jnp.abs(x_new[0] - x[0])), jnp.max(jnp.abs(x_new[1] - x[1])))
        scale = 1.0 + jnp.maximum(jnp.max(jnp.abs(x_new[0])), jnp.max(jnp.abs(x_new[1])))
        return i + 1, x_new, y_next, t_new, delta / scale

    x0 = (jnp.zeros((d, n_classes), z.dtype), jnp.zeros((n_classes,), z.dtype))
    init = (jnp.asarray(0), x0, x0, jnp.asarray(1.0, z.dtype), jnp.asarray(jnp.inf, z.dtype))
    i, (w, b), _, _, _ = jax.lax.while_loop(cond, body, init)
    return w, b, i


def standardize(features, *, eps: float = 1e-8) -> tuple[jax.Array, jax.Array]:
    """Mean ``[d]`` and scale ``[d]`` of features ``[n, d]`` (scale 1 for constant units).

    Each column is divided by its largest magnitude before the moments are taken, so features
    up to float32's range (1e30 and more) do not overflow the variance.
    """
    f = jnp.asarray(features, jnp.float32)
    return _moments(f, jnp.ones(f.shape[0], jnp.float32), eps)


def _moments(f, rows, eps: float = 1e-8):
    """``standardize`` over the rows where ``rows`` is 1 (padding rows are 0)."""
    count = rows.sum()
    big = jnp.max(jnp.abs(f) * rows[:, None], axis=0)
    big = jnp.where(big > 0, big, 1.0)
    unit = f / big[None, :]
    mean = (unit * rows[:, None]).sum(0) / count
    std = jnp.sqrt((jnp.square(unit - mean[None, :]) * rows[:, None]).sum(0) / count)
    mean, std = mean * big, std * big
    return mean, jnp.where(std > eps, std, 1.0)


@functools.partial(jax.jit, static_argnames=("n_classes", "max_iter"))
def _fit(f, rows, y, weight, lam, n_classes: int, max_iter: int, tol):
    mean, scale = _moments(f, rows)
    z = (f - mean[None, :]) / scale[None, :] * rows[:, None]
    weights, bias, n_iter = _fista(z, y, weight, lam, n_classes, max_iter, tol)
    return mean, scale, weights, bias, n_iter


def fit_last_layer(
    features,
    labels,
    *,
    n_classes: int | None = None,
    C: float = 1.0,
    sample_weight=None,
    max_iter: int = 5000,
    tol: float = 1e-6,
) -> LastLayer:
    """Fit an L1-penalised multinomial logistic regression on standardised features.

    Args:
      features: ``[n, d]`` penultimate-layer activations of the retraining set.
      labels: int ``[n]`` class labels in ``[0, n_classes)``.
      n_classes: number of classes (default ``labels.max() + 1``).
      C: inverse penalty strength, as scikit-learn's ``C`` (objective ``C * sum CE + ||W||_1``).
      sample_weight: optional ``[n]`` non-negative weights (scikit-learn's ``sample_weight``).
      max_iter: iteration cap of the proximal-gradient solver.
      tol: stop when the largest parameter change, relative to ``1 + max |param|``, is below.

    Returns:
      A ``LastLayer``.

    Raises:
      TypeError: non-integer ``labels``; non-numeric ``C``, ``tol`` or ``max_iter``.
      ValueError: empty or non-finite ``features``, labels outside ``[0, n_classes)``, lengths
        differ, ``C`` or ``tol`` not positive and finite, bad ``sample_weight``.
    """
    check_rank(features, "features", 2)
    check_labels(labels)
    check_same_leading("features", features, "labels", labels)
    check_finite(features, "features")
    n = int(np.shape(features)[0])
    if n == 0:
        raise ValueError("`features` is empty: there is nothing to retrain on.")
    lab = np.asarray(labels)
    if n_classes is None:
        n_classes = int(lab.max()) + 1
    n_classes = check_positive_int(n_classes, "n_classes")
    if lab.min() < 0 or lab.max() >= n_classes:
        raise ValueError(f"`labels` must lie in [0, {n_classes}); got values in [{lab.min()}, {lab.max()}].")
    C = check_real(C, "C", low=0.0, open_low=True)
    tol = check_real(tol, "tol", low=0.0)
    if sample_weight is None:
        sample_weight = np.ones(n, np.float32)
    check_rank(sample_weight, "sample_weight", 1)
    check_same_leading("features", features, "sample_weight", sample_weight)
    check_finite(sample_weight, "sample_weight")
    if np.min(sample_weight) < 0 or np.sum(sample_weight) <= 0:
        raise ValueError("`sample_weight` must be non-negative with a positive sum.")
    max_iter = check_positive_int(max_iter, "max_iter")
    lam = 1.0 / (float(C) * float(np.sum(sample_weight)))  # the objective divided by C * sum(weights)
    # rows padded with zero weight (they add nothing to the moments, the objective or its Lipschitz
    # bound), so retraining sets of different sizes share one compiled solver
    pad = [(0, _padded_rows(n) - n)]
    f = np.pad(np.asarray(features, np.float32), pad + [(0, 0)])
    rows = np.pad(np.ones(n, np.float32), pad)
    y = np.pad(lab.astype(np.int32), pad)
    w = np.pad(np.asarray(sample_weight, np.float32), pad)
    mean, scale, weights, bias, n_iter = _fit(f, rows, y, w, jnp.float32(lam), n_classes, max_iter, jnp.float32(tol))
    return LastLayer(mean, scale, weights, bias, n_iter)


def _padded_rows(n: int) -> int:
    """Row count the solver is compiled for: at least 256, else the next power of two."""
    return max(256, 1 << (n - 1).bit_length())


def last_layer_logits(layer: LastLayer, features) -> jax.Array:
    """Logits ``[n, n_classes]`` of a retrained last layer on features ``[n, d]``.

    Raises:
      ValueError: ``features`` not ``[n, d]`` with the retraining width, empty or non-finite.
    """
    check_rank(features, "features", 2)
    check_nonempty(features, "features")
    check_finite(features, "features")
    if np.shape(features)[1] != np.shape(layer.mean)[0]:
        raise ValueError(f"`features` must have {np.shape(layer.mean)[0]} columns (the retraining features); "
                         f"got shape {tuple(np.shape(features))}.")
    centred = jnp.asarray(features, jnp.float32) - jnp.asarray(layer.mean)[None, :]
    return (centred / jnp.asarray(layer.scale)[None, :]) @ layer.weights + jnp.asarray(layer.bias)[None, :]
