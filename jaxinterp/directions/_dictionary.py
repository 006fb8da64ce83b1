"""Sparse coding (lasso by FISTA) and online minibatch dictionary learning (Mairal et al. 2009).

The lasso problem per sample is ``min_c 0.5 ||x - c @ D||^2 + alpha ||c||_1`` (optionally
``c >= 0``) with dictionary ``D [k, d]``: the same objective as scikit-learn's
``sparse_encode(algorithm="lasso_cd")``. The dictionary update is scikit-learn's
``MiniBatchDictionaryLearning`` block coordinate descent on the running sufficient statistics.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxinterp._validation import check_positive_int
from jaxinterp.directions._solvers import lasso_fista, power_lipschitz, unit_rows
from jaxinterp.directions.base import Directions, validate_data
from jaxinterp.directions.encoders import Lasso
from jaxinterp.directions.learner import Learner, check_bool, check_number, static


def sparse_encode(x: jax.Array, dictionary: jax.Array, alpha: float, *, n_iter: int = 1000,
                  positive: bool = False, tol: float = 1e-7) -> jax.Array:
    """Lasso codes of ``x`` on a fixed dictionary, by FISTA with adaptive restart.

    Args:
      x: ``[n, d]`` data.
      dictionary: ``[k, d]`` atoms.
      alpha: L1 penalty, ``>= 0``.
      n_iter: maximum iterations.
      positive: non-negative codes.
      tol: stop when no code moves by more than ``tol`` (relative to the largest code).

    Returns:
      ``[n, k]`` codes minimising ``0.5 ||x - c D||^2 + alpha ||c||_1``.
    """
    x = validate_data(x)
    dictionary = validate_data(dictionary, "dictionary")
    if dictionary.shape[1] != x.shape[1]:
        raise ValueError(f"`dictionary` must have shape (*, {x.shape[1]}); got {dictionary.shape}.")
    check_number(alpha, "alpha")
    # the same lasso on atoms divided by their largest entry s (codes times s, penalty over s):
    # the Lipschitz bound ||D D^T|| cannot overflow
    dictionary = jnp.asarray(dictionary, x.dtype)
    s = jnp.max(jnp.abs(dictionary))
    s = jnp.where(s > 0, s, 1.0)
    codes = lasso_fista(x, dictionary / s, alpha / s, n_iter=check_positive_int(n_iter, "n_iter"),
                        positive=check_bool(positive, "positive"), tol=tol)
    return codes / s


class DictState(NamedTuple):
    """State of online dictionary learning.

    Attributes:
      dictionary: ``[k, d]`` atoms of norm at most 1.
      a: ``[k, k]`` running ``code^T code`` statistic.
      b: ``[d, k]`` running ``x^T code`` statistic.
      step: number of updates so far.
      key: PRNG key for re-sampling unused atoms.
      alpha: L1 penalty used for the codes (scalar).
    """

    dictionary: jax.Array
    a: jax.Array
    b: jax.Array
    step: jax.Array
    key: jax.Array
    alpha: jax.Array


def _dict_init(key, x, k, alpha) -> DictState:
    """``k`` random rows of the sample, normalised."""
    x = validate_data(x, "data", k=k)
    k_pick, k_state = jax.random.split(key)
    rows = x[jax.random.choice(k_pick, x.shape[0], (k,), replace=False)]
    d = x.shape[1]
    return DictState(unit_rows(rows), jnp.zeros((k, k), x.dtype), jnp.zeros((d, k), x.dtype),
                     jnp.asarray(0), k_state, jnp.asarray(alpha, x.dtype))


def _dict_update(state: DictState, batch, *, code_iter, positive) -> DictState:
    """One online step: lasso codes of ``batch [b, d]``, update the statistics, then the atoms.

    The forgetting factor and the atom update (with re-sampling of atoms no code uses) are
    those of scikit-learn's ``MiniBatchDictionaryLearning``.
    """
    dct = state.dictionary
    bsz = batch.shape[0]
    code = lasso_fista(batch, dct, state.alpha, n_iter=code_iter, positive=positive, tol=1e-5,
                       lipschitz=power_lipschitz(dct @ dct.T))
    step = state.step
    theta = jnp.where(step < bsz - 1, (step + 1) * bsz, bsz * bsz + step + 1 - bsz).astype(batch.dtype)
    beta = (theta + 1 - bsz) / (theta + 1)
    a = beta * state.a + code.T @ code / bsz
    b = beta * state.b + batch.T @ code / bsz
    key, k_res = jax.random.split(state.key)
    picks = jax.random.randint(k_res, (dct.shape[0],), 0, bsz)

    def atom(j, dct):
        upd = dct[j] + (b[:, j] - a[j] @ dct) / jnp.where(a[j, j] > 0, a[j, j], 1.0)
        new = jnp.where(a[j, j] > 1e-6, upd, batch[picks[j]])
        if positive:
            new = jnp.maximum(new, 0.0)
        return dct.at[j].set(new / jnp.maximum(jnp.linalg.norm(new), 1.0))

    dct = jax.lax.fori_loop(0, dct.shape[0], atom, dct)
    return DictState(dct, a, b, step + 1, key, state.alpha)


def _dict_finalize(state: DictState, *, positive, encode_iter) -> Directions:
    return Directions.create(state.dictionary, Lasso(state.alpha, n_iter=encode_iter, positive=positive),
                             method="dictionary", info={"steps": state.step})


def dictionary(k: int, *, alpha: float = 0.1, batch_size: int = 256, steps: int = 1000, code_iter: int = 100,
               positive: bool = False, encode_iter: int = 300) -> Learner:
    """Online minibatch dictionary learning; ``encode`` gives the lasso codes (``Lasso`` encoder).

    Args:
      k: number of atoms (may exceed ``d``; at most the rows of the initialisation sample).
      alpha: L1 penalty of the codes (numeric: a sweep may ``vmap`` over it).
      batch_size: default rows per step.
      steps: default number of steps.
      code_iter: FISTA iterations per step.
      positive: non-negative codes and atoms.
      encode_iter: FISTA iterations used by ``encode``.

    Returns:
      A minibatch ``Learner`` for ``fit``.
    """
    k = check_positive_int(k, "k")
    check_number(alpha, "alpha")
    code_iter = check_positive_int(code_iter, "code_iter")
    encode_iter = check_positive_int(encode_iter, "encode_iter")
    positive = check_bool(positive, "positive")

    def init(key, x):
        return _dict_init(key, x, k, alpha)

    return Learner(init, static(_dict_update, code_iter=code_iter, positive=positive),
                   static(_dict_finalize, positive=positive, encode_iter=encode_iter), "dictionary",
                   dict(k=k, alpha=alpha, code_iter=code_iter, positive=positive, encode_iter=encode_iter),
                   steps=check_positive_int(steps, "steps"), batch_size=check_positive_int(batch_size, "batch_size"))
