"""Theory of incidental polysemanticity (Lecomte et al. 2023) and the experiments that test it.

- ``theory_count``: expected number of polysemantic neurons ``n^2 / (4m)`` (about ``C(n, 2)/m``
  initial collisions, half of which survive because only same-sign overlap is penalised by the
  output ReLU); ``loglog_slope`` fits the exponent of counts over ``m`` (theory: -1).
- Sparsification dynamics of one neuron's weight vector, ``dw/dt = (1 - ||w||^2) w - l1 sign(w)``
  (Euler, entries that cross zero stay at zero), against the closed forms
  ``m'(t) = (1/sqrt(m) + l1 t)^-2`` and ``||w||_1 = (1/sqrt(m) + l1 t)^-1``.
- The noise experiment: no L1, SGD, hidden-layer noise (Bernoulli ``+/- sigma`` or Gaussian
  ``N(0, sigma^2)``, one ``[m]`` vector per step shared across the batch); Bernoulli noise
  drives the mean fourth norm ``sum_k W_ik^4`` towards 1, Gaussian noise does not.
- ``winner_agreement``: does the largest initial weight of a feature pick its final neuron?
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxinterp._validation import (check_finite, check_key, check_nonempty, check_positive_int,
                                   check_rank, check_real, check_shape)
from jaxinterp.toy import incidental, training


def _real_array(x, name: str) -> np.ndarray:
    """``x`` as a non-empty, finite float64 array; TypeError for None, strings and non-numbers."""
    if x is None or isinstance(x, str):
        raise TypeError(f"`{name}` must be a numeric array; got {type(x).__name__}.")
    try:
        arr = np.asarray(x, np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"`{name}` must be a numeric array; got {type(x).__name__}: {err}") from None
    check_nonempty(arr.reshape(-1), name)
    check_finite(arr, name)
    return arr


def theory_count(n_features, n_hidden):
    """Expected number of polysemantic neurons ``n^2 / (4 m)`` (numpy; broadcasts over arrays).

    ``n_hidden`` may be any positive real: the closed form is continuous in ``m`` (figures draw
    it on a grid of widths).

    Raises:
      TypeError / ValueError: ``n_features`` is not made of positive integers, or ``n_hidden``
        of positive finite numbers.
    """
    n = _counts(n_features, "n_features")
    m = _real_array(n_hidden, "n_hidden")
    if isinstance(n_hidden, (bool, np.bool_)) or not np.all(np.isfinite(m)) or np.any(m <= 0):
        raise ValueError(f"`n_hidden` must hold positive finite numbers; got {n_hidden!r}.")
    return n ** 2 / (4.0 * m)


def _counts(x, name: str) -> np.ndarray:
    """``x`` (an int or an array of ints) as float64, raising unless every entry is a positive integer."""
    arr = _real_array(x, name)
    if isinstance(x, (bool, np.bool_)) or np.any(arr != np.round(arr)) or np.any(arr < 1):
        raise ValueError(f"`{name}` must hold positive integers; got {x!r}.")
    return arr


def loglog_slope(m, counts) -> float:
    """Least-squares slope of ``log(counts)`` against ``log(m)``, over entries with counts > 0.

    Args:
      m: ``[k]`` hidden sizes.
      counts: ``[k]`` mean counts.

    Returns:
      The slope (theory: -1), or NaN with fewer than two positive counts.
    """
    m, counts = _real_array(m, "m"), _real_array(counts, "counts")
    check_rank(m, "m", 1)
    if np.any(m <= 0) or np.any(counts < 0):
        raise ValueError(f"`m` must be positive and `counts` non-negative; got m={m}, counts={counts}.")
    check_shape(counts, "counts", m.shape)
    keep = counts > 0
    if keep.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(m[keep]), np.log(counts[keep]), 1)[0])


def _closed_form_args(t, n_hidden, l1):
    t = _real_array(t, "t")
    check_rank(t, "t", (0, 1))
    if np.any(t < 0):
        raise ValueError(f"`t` must be non-negative times; its minimum is {t.min()}.")
    return t, check_positive_int(n_hidden, "n_hidden"), check_real(l1, "l1", low=0.0)


def predicted_active(t, n_hidden: int, l1: float):
    """Closed-form number of non-zero entries ``m'(t) = (1/sqrt(m) + l1 t)^-2`` at times ``t`` ``[]`` or ``[k]``."""
    t, n_hidden, l1 = _closed_form_args(t, n_hidden, l1)
    return (1.0 / np.sqrt(n_hidden) + l1 * np.asarray(t, np.float64)) ** -2.0


def predicted_l1_norm(t, n_hidden: int, l1: float):
    """Closed-form ``||w(t)||_1 = (1/sqrt(m) + l1 t)^-1`` at times ``t`` ``[]`` or ``[k]``."""
    t, n_hidden, l1 = _closed_form_args(t, n_hidden, l1)
    return (1.0 / np.sqrt(n_hidden) + l1 * np.asarray(t, np.float64)) ** -1.0


class SparsificationTrace(NamedTuple):
    """Simulated sparsification of one weight vector, sampled every ``record_every`` steps.

    Attributes:
      t: ``[k]`` times.
      n_active: ``[k]`` number of non-zero entries ``m'(t)``.
      l1_norm: ``[k]`` ``||w(t)||_1``.
      sq_norm: ``[k]`` ``||w(t)||^2``.
    """

    t: np.ndarray
    n_active: np.ndarray
    l1_norm: np.ndarray
    sq_norm: np.ndarray


def simulate_sparsification(key: jax.Array, n_hidden: int, l1: float, *, t_max: float | None = None,
                            dt: float = 0.5, init_scale: float = 0.9, record_every: int = 10) -> SparsificationTrace:
    """Euler simulation of ``dw/dt = (1 - ||w||^2) w - l1 sign(w)`` from ``|N(0, init_scale^2/m)|``.

    Entries that reach zero stay there (``sign(0) = 0``), as in the reference simulation; by the
    sign symmetry of the dynamics the start is taken non-negative.

    Args:
      key: PRNG key for the initial weights.
      n_hidden: number of entries ``m``.
      l1: the L1 coefficient ``lambda``.
      t_max: simulated time (default ``3 / l1``; sparsification ends near ``1 / l1``).
      dt: Euler step.
      init_scale: initial standard deviation times ``sqrt(m)``.
      record_every: record every this many Euler steps.

    Returns:
      A ``SparsificationTrace`` starting at ``t = 0``.
    """
    check_key(key)
    check_positive_int(n_hidden, "n_hidden")
    check_positive_int(record_every, "record_every")
    l1 = check_real(l1, "l1", low=0.0, open_low=True)
    dt = check_real(dt, "dt", low=0.0, open_low=True)
    init_scale = check_real(init_scale, "init_scale", low=0.0, open_low=True)
    t_max = 3.0 / l1 if t_max is None else check_real(t_max, "t_max", low=0.0, open_low=True)
    n_records = max(1, int(round(t_max / (dt * record_every))))
    w0 = jnp.abs(jax.random.normal(key, (n_hidden,), jnp.float32)) * (init_scale / np.sqrt(n_hidden))

    def euler(w, _):
        w_new = w + dt * ((1.0 - jnp.sum(w * w)) * w - l1 * jnp.sign(w))
        return jnp.maximum(w_new, 0.0), None

    def block(w, _):
        w, _ = jax.lax.scan(euler, w, None, length=record_every)
        return w, (jnp.sum(w > 0), jnp.sum(w), jnp.sum(w * w))

    @jax.jit
    def run(w0):
        _, (act, l1n, sq) = jax.lax.scan(block, w0, None, length=n_records)
        return act, l1n, sq

    act, l1n, sq = jax.device_get(run(w0))
    t = np.arange(n_records + 1) * dt * record_every
    w0n = np.asarray(w0)
    return SparsificationTrace(t, np.concatenate([[np.sum(w0n > 0)], act]).astype(np.float64),
                               np.concatenate([[w0n.sum()], l1n]).astype(np.float64),
                               np.concatenate([[np.sum(w0n**2)], sq]).astype(np.float64))


def sparsification_agreement(trace: SparsificationTrace, n_hidden: int, l1: float) -> dict[str, float]:
    """Compare a simulated trace with the closed forms during sparsification.

    The window is ``0 < t <= 1/l1`` and stops earlier if the simulation is down to a single
    entry (after that the closed forms, which fall below 1, no longer apply).

    Returns:
      dict with ``max_log_ratio_active`` / ``max_log_ratio_l1`` (largest ``|log(sim / closed)|``
      of ``m'(t)`` and ``||w||_1`` in the window), ``median_ratio_active`` / ``median_ratio_l1``
      (median ``sim / closed``: a constant offset with the right shape shows here),
      ``t_single`` (first time with one active entry; NaN if never) and
      ``t_single_over_inverse_l1`` (``t_single * l1``).
    """
    check_positive_int(n_hidden, "n_hidden")
    check_real(l1, "l1", low=0.0, open_low=True)
    t = np.asarray(trace.t)
    single = np.nonzero(trace.n_active <= 1)[0]
    end = min(single[0] if single.size else t.size, int(np.searchsorted(t, 1.0 / l1, side="right")))
    window = slice(1, max(end, 1))
    if end > 1:
        ra = trace.n_active[window] / predicted_active(t[window], n_hidden, l1)
        rl = trace.l1_norm[window] / predicted_l1_norm(t[window], n_hidden, l1)
    else:    # no time inside the window: the statistics below are NaN
        ra = rl = np.zeros(0)
    t_single = float(t[single[0]]) if single.size else float("nan")
    stat = lambda f, r: float(f(r)) if r.size else float("nan")
    return {"max_log_ratio_active": stat(np.max, np.abs(np.log(ra))),
            "max_log_ratio_l1": stat(np.max, np.abs(np.log(rl))),
            "median_ratio_active": stat(np.median, ra), "median_ratio_l1": stat(np.median, rl),
            "t_single": t_single, "t_single_over_inverse_l1": t_single * l1}


class NoiseResult(NamedTuple):
    """Mean fourth norm over training, per noise kind, scale and seed.

    Attributes:
      kinds: noise kinds, e.g. ``("bernoulli", "gaussian")``.
      sigmas: noise scales.
      steps: ``[k + 1]`` step counts (0 first).
      fourth_norm: ``[len(kinds), len(sigmas), n_seeds, k + 1]``.
    """

    kinds: tuple
    sigmas: tuple
    steps: np.ndarray
    fourth_norm: np.ndarray


def _noise_loss_and_grad(n_features: int):
    grad_fn = jax.value_and_grad(incidental.loss)

    def loss_and_grad(w, key, hyper):
        k_sign, k_gauss = jax.random.split(key)
        m = w.shape[1]
        rademacher = jnp.where(jax.random.bernoulli(k_sign, 0.5, (m,)), 1.0, -1.0)
        gauss = jax.random.normal(k_gauss, (m,), jnp.float32)
        noise = hyper["sigma"] * jnp.where(hyper["bernoulli"], rademacher, gauss)
        return grad_fn(w, jnp.eye(n_features, dtype=w.dtype), 0.0, noise)

    return loss_and_grad


def noise_experiment(key: jax.Array, *, n_features: int = 8, n_hidden: int = 16,
                     sigmas=(0.07, 0.1, 0.15), kinds=("bernoulli", "gaussian"), n_seeds: int = 5,
                     steps: int = 100_000, learning_rate: float = 0.02, record_every: int = 100,
                     chunk_size: int = 10_000, progress: bool = False) -> NoiseResult:
    """Train without L1, with hidden-layer noise, and track the mean fourth norm.

    All ``len(kinds) * len(sigmas) * n_seeds`` runs train at once (vmapped; the kind and scale
    are per-instance hyperparameters); run ``s`` of every setting starts from the same weights.

    Args:
      key: PRNG key.
      n_features, n_hidden: model size (paper: 8 and 16).
      sigmas: noise scales (paper: 0.07, 0.1, 0.15).
      kinds: any of ``"bernoulli"``, ``"gaussian"``.
      n_seeds: runs per setting.
      steps: SGD steps (paper: 100k).
      learning_rate: SGD step size (paper: 0.02).
      record_every: fourth-norm sampling interval (must divide ``chunk_size`` and ``steps``).
      chunk_size: steps per compiled chunk.
      progress: show a progress bar.

    Returns:
      A ``NoiseResult``.
    """
    for k in kinds:
        if k not in ("bernoulli", "gaussian"):
            raise ValueError(f"`kinds` entries must be 'bernoulli' or 'gaussian'; got {k!r}.")
    check_positive_int(n_seeds, "n_seeds")
    for value, name in ((steps, "steps"), (record_every, "record_every"), (chunk_size, "chunk_size")):
        check_positive_int(value, name)
    check_real(learning_rate, "learning_rate", low=0.0, open_low=True)
    chunk_size = min(chunk_size, steps)
    cfg = incidental.IncidentalConfig(n_features=n_features, n_hidden=n_hidden, l1=0.0,
                                      learning_rate=learning_rate, optimizer="sgd", steps=steps)
    n_k, n_s = len(kinds), len(sigmas)
    seed_keys = jax.random.split(key, n_seeds)
    keys = jnp.tile(seed_keys, n_k * n_s)
    sig = np.repeat(np.tile(np.asarray(sigmas, np.float32), n_k), n_seeds)
    bern = np.repeat(np.asarray([k == "bernoulli" for k in kinds]), n_s * n_seeds)
    init = incidental.make_init(cfg)
    hyper = {"sigma": jnp.asarray(sig), "bernoulli": jnp.asarray(bern)}
    result = training.fit(init, _noise_loss_and_grad(n_features), optax.sgd(learning_rate), keys, steps=steps,
                          hyper=hyper,
                          chunk_size=chunk_size, record=incidental.fourth_norm, record_every=record_every,
                          progress=progress, desc="noise")
    w0 = training.initial_params(init, keys, hyper)
    curves = np.concatenate([np.asarray(incidental.fourth_norm(w0))[:, None], result.history], axis=1)
    return NoiseResult(tuple(kinds), tuple(float(s) for s in sigmas),
                       np.concatenate([[0], result.record_steps]),
                       curves.reshape(n_k, n_s, n_seeds, -1))


def winner_agreement(w_init: jax.Array, w_final: jax.Array) -> dict[str, jax.Array]:
    """How well the largest initial weight of each feature predicts its final winning neuron.

    The winner of feature ``i`` is ``argmax_k |W_final[i, k]|``; the prediction is
    ``argmax_k |W_init[i, k]|``.

    Args:
      w_init: ``[..., n, m]`` initial weights.
      w_final: ``[..., n, m]`` trained weights, same shape.

    Returns:
      dict with ``match_rate`` (fraction of features whose winner is the initial argmax; chance
      is ``1/m``), ``mean_rank`` (mean 0-based rank of the winner among the feature's initial
      ``|W|``, largest first; chance ``(m-1)/2``) and ``correlation`` (mean over features of
      the Pearson correlation between ``|W_init[i]|`` and ``|W_final[i]|``), each ``[...]``.
    """
    w_init = incidental.check_weights(w_init, "w_init", (2, 3))
    w_final = incidental.check_weights(w_final, "w_final", (2, 3))
    if np.shape(w_init) != np.shape(w_final):
        raise ValueError(f"`w_init` and `w_final` must have the same shape; got {np.shape(w_init)} and "
                         f"{np.shape(w_final)}.")
    (a0, a1), _ = incidental._half_to_float32(jnp.abs(w_init), jnp.abs(w_final))  # toy functions compute in float32
    winner = jnp.argmax(a1, axis=-1)
    predicted = jnp.argmax(a0, axis=-1)
    win_init = jnp.take_along_axis(a0, winner[..., None], axis=-1)
    rank = jnp.sum(a0 > win_init, axis=-1)
    z0 = (a0 - a0.mean(-1, keepdims=True)) / (a0.std(-1, keepdims=True) + 1e-12)
    z1 = (a1 - a1.mean(-1, keepdims=True)) / (a1.std(-1, keepdims=True) + 1e-12)
    corr = jnp.mean(z0 * z1, axis=-1)
    return {"match_rate": jnp.mean(winner == predicted, axis=-1),
            "mean_rank": jnp.mean(rank, axis=-1).astype(jnp.float32),
            "correlation": jnp.mean(corr, axis=-1)}
