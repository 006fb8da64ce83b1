"""Numerical kernels shared by the learners and the encoders: distances, top-k, NNLS and lasso codes.

Nothing here knows about ``Directions`` or learners, so both the encoders and the learners import
from this module and never from each other.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from jaxinterp._validation import check_rank


def unit_rows(x: jax.Array) -> jax.Array:
    """Rows of ``x [..., d]`` scaled to unit L2 norm (zero rows stay zero)."""
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def sq_distances(x: jax.Array, c: jax.Array) -> jax.Array:
    """Squared Euclidean distances ``[n, k]`` between rows of ``x [n, d]`` and ``c [k, d]``."""
    return (jnp.sum(x * x, axis=-1, keepdims=True) - 2.0 * (x @ c.T)
            + jnp.sum(c * c, axis=-1)[None, :])


def topk_activation(pre: jax.Array, k: int) -> jax.Array:
    """Keep the ``k`` largest entries of ``relu(pre)`` in each row, zero the rest (``[b, m]``)."""
    vals, idx = jax.lax.top_k(pre, k)
    out = jnp.zeros_like(pre)
    rows = jnp.arange(pre.shape[0])[:, None]
    return out.at[rows, idx].set(jax.nn.relu(vals))


def hals_sweep(rows: jax.Array, target: jax.Array, gram: jax.Array, l1) -> jax.Array:
    """Update each row of ``rows [k, m]`` in turn (one HALS / coordinate-descent sweep).

    Minimises ``0.5 ||y - rows^T B||^2 + l1 * sum(rows)`` over ``rows >= 0`` given the cross
    products ``target = B y^T [k, m]`` and ``gram = B B^T [k, k]``; rows are kept contiguous so
    every update is a contiguous write.
    """

    def row(t, r):
        grad = gram[t] @ r - target[t] + l1
        hess = gram[t, t]
        new = jnp.where(hess > 0, jnp.maximum(r[t] - grad / jnp.where(hess > 0, hess, 1.0), 0.0), r[t])
        return r.at[t].set(new)

    return jax.lax.fori_loop(0, rows.shape[0], row, rows)


@partial(jax.jit, static_argnames=("n_iter",))
def nnls_codes(x: jax.Array, components: jax.Array, *, n_iter: int = 100, l1=0.0) -> jax.Array:
    """Non-negative codes of ``x [n, d]`` for fixed ``components [k, d]`` by ``n_iter`` HALS sweeps.

    Returns:
      ``[n, k]`` codes minimising ``0.5 ||x - c A||^2 + l1 * sum(c)`` over ``c >= 0``.
    """
    check_rank(x, "x", 2)
    ax = components @ x.T
    gram = components @ components.T
    c0 = jnp.zeros((components.shape[0], x.shape[0]), x.dtype)
    return jax.lax.fori_loop(0, n_iter, lambda _, c: hals_sweep(c, ax, gram, l1), c0).T


def power_lipschitz(gram: jax.Array, n_iter: int = 50, safety: float = 1.1) -> jax.Array:
    """An upper estimate of the largest eigenvalue of the PSD ``gram [k, k]`` by power iteration.

    Cheaper than ``eigvalsh`` for the per-step dictionary updates; the Rayleigh quotient after
    ``n_iter`` steps is multiplied by ``safety`` (an overestimate only slows FISTA down).
    """
    v0 = jnp.ones((gram.shape[0],), gram.dtype) / jnp.sqrt(gram.shape[0])

    def body(_, v):
        w = gram @ v
        return w / jnp.maximum(jnp.linalg.norm(w), 1e-30)

    v = jax.lax.fori_loop(0, n_iter, body, v0)
    return safety * (v @ gram @ v)


def _shrink(v, t, positive):
    if positive:
        return jnp.maximum(v - t, 0.0)
    return jnp.sign(v) * jnp.maximum(jnp.abs(v) - t, 0.0)


@partial(jax.jit, static_argnames=("n_iter", "positive"))
def lasso_fista(x: jax.Array, dictionary: jax.Array, alpha, *, n_iter: int = 200, positive: bool = False,
                tol: float = 1e-7, init=None, lipschitz=None) -> jax.Array:
    """Lasso codes by FISTA with adaptive restart (Beck & Teboulle 2009; O'Donoghue & Candes 2015).

    Args:
      x: ``[n, d]`` data.
      dictionary: ``[k, d]`` atoms.
      alpha: L1 penalty (scalar).
      n_iter: maximum iterations.
      positive: constrain codes to be non-negative.
      tol: stop when no code moves by more than ``tol`` (times the largest code, at least 1).
      init: optional ``[n, k]`` warm start.
      lipschitz: optional upper bound of the largest eigenvalue of ``D D^T`` (default: exact).

    Returns:
      ``[n, k]`` codes minimising ``0.5 ||x - c D||^2 + alpha ||c||_1``.
    """
    check_rank(x, "x", 2)
    check_rank(dictionary, "dictionary", 2)
    gram = dictionary @ dictionary.T
    xd = x @ dictionary.T
    lip = jnp.linalg.eigvalsh(gram)[-1] if lipschitz is None else lipschitz
    step = 1.0 / jnp.maximum(lip, 1e-12)
    c0 = jnp.zeros(xd.shape, x.dtype) if init is None else jnp.asarray(init, x.dtype)

    def cond(s):
        _, _, _, it, delta = s
        return (it < n_iter) & (delta > tol)

    def body(s):
        c, y, t, it, _ = s
        grad = y @ gram - xd
        c_new = _shrink(y - step * grad, step * alpha, positive)
        # gradient-based restart, per sample
        restart = jnp.sum((y - c_new) * (c_new - c), axis=1, keepdims=True) > 0
        t_new = 0.5 * (1.0 + jnp.sqrt(1.0 + 4.0 * t * t))
        mom = jnp.where(restart, 0.0, (t - 1.0) / t_new)
        t_new = jnp.where(restart, 1.0, t_new)
        y_new = c_new + mom * (c_new - c)
        scale = jnp.maximum(jnp.max(jnp.abs(c_new)), 1.0)
        delta = jnp.max(jnp.abs(c_new - c)) / scale
        return c_new, y_new, t_new, it + 1, delta

    t0 = jnp.ones((x.shape[0], 1), x.dtype)
    c, *_ = jax.lax.while_loop(cond, body, (c0, c0, t0, 0, jnp.asarray(jnp.inf, x.dtype)))
    return c
