"""Sparse autoencoders: ReLU + L1, TopK, BatchTopK and JumpReLU, trained with optax.

Architecture (all kinds): ``u = (x - center) / scale`` (input normalisation),
``pre = (u - b_dec) @ W_enc + b_enc``, ``f = act(pre)``, ``u_hat = f @ W_dec + b_dec``. Decoder
rows are kept at unit norm (the gradient component along each row is removed before the step
and the rows are renormalised after it). Dead latents (not active on any of the last
``dead_window`` samples) are revived by the auxiliary-k loss of Gao et al. (2024): the top
``aux_k`` dead pre-activations reconstruct the residual error.

Kinds:
  ``relu``      ``f = relu(pre)``, loss ``mse + coef * sum(f * ||w_dec||)`` (Bricken et al. 2023).
  ``topk``      keep the ``k`` largest of ``relu(pre)`` per sample (Gao et al. 2024).
  ``batchtopk`` keep the ``k * batch`` largest over the whole batch; at inference a JumpReLU with
                the running mean of the smallest kept activation as threshold (Bussmann et al.).
  ``jumprelu``  ``f = pre * 1[pre > theta]`` with learned ``theta``, loss ``mse + coef * L0``,
                straight-through gradients with a rectangle kernel (Rajamanoharan et al. 2024).

The sparsity coefficient and the learning rate live in the state (the learning rate through
``optax.inject_hyperparams``), so one ``vmap`` over ``sae(..., coef=c)`` trains SAEs with
different coefficients on the same batches.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxinterp._validation import check_positive_int
from jaxinterp.directions._solvers import topk_activation, unit_rows
from jaxinterp.directions.base import Directions, validate_data
from jaxinterp.directions.encoders import BatchTopK, JumpReLU, ReLU, TopK
from jaxinterp.directions.learner import Learner, check_choice, check_number, static

KINDS = ("relu", "topk", "batchtopk", "jumprelu")
NORMALIZATIONS = ("none", "zscore", "norm")
_DEFAULT_COEF = {"relu": 0.1, "jumprelu": 1.0, "topk": 0.0, "batchtopk": 0.0}


@dataclasses.dataclass(frozen=True)
class SAEConfig:
    """Static settings of a sparse autoencoder (hashable; see ``sae`` for their meaning)."""

    n_latents: int
    kind: str
    k: int
    normalize: str
    aux_k: int
    aux_coef: float
    dead_window: int
    bandwidth: float
    init_threshold: float
    threshold_momentum: float
    grad_clip: float

    def optimizer(self, learning_rate) -> optax.GradientTransformation:
        """Adam with the learning rate in its state, after optional global-norm clipping."""
        opt = optax.inject_hyperparams(optax.adam)(learning_rate=learning_rate)
        return optax.chain(optax.clip_by_global_norm(self.grad_clip), opt) if self.grad_clip > 0 else opt


class SAEState(NamedTuple):
    """Training state of one SAE (or, stacked on a leading axis, of several).

    Attributes:
      params: ``{"w_enc" [d, m], "b_enc" [m], "w_dec" [m, d], "b_dec" [d], "log_threshold" [m]}``.
      opt_state: optax state (holds the learning rate).
      coef: sparsity coefficient (L1 for ``relu``, L0 for ``jumprelu``; unused by TopK).
      since_fired: ``[m]`` samples seen since each latent last activated.
      threshold: BatchTopK running inference threshold (scalar).
      center: ``[d]`` input normalisation offset.
      scale: ``[d]`` input normalisation scale.
      step: number of updates.
      loss: total loss of the last step.
      mse: reconstruction MSE (normalised units, summed over features) of the last step.
      l0: mean active latents per sample in the last step.
    """

    params: dict
    opt_state: Any
    coef: jax.Array
    since_fired: jax.Array
    threshold: jax.Array
    center: jax.Array
    scale: jax.Array
    step: jax.Array
    loss: jax.Array
    mse: jax.Array
    l0: jax.Array


# ---------------------------------------------------------------- straight-through JumpReLU


def _rect(z):
    return (jnp.abs(z) < 0.5).astype(z.dtype)


def _sum_to(threshold, d_thr):
    return jnp.sum(d_thr.reshape(-1, threshold.shape[-1]), axis=0).reshape(threshold.shape)


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def jumprelu(pre: jax.Array, threshold: jax.Array, bandwidth: float) -> jax.Array:
    """``pre * 1[pre > threshold]``, with the straight-through threshold gradient."""
    return jnp.where(pre > threshold, pre, 0.0)


def _jumprelu_fwd(pre, threshold, bandwidth):
    return jumprelu(pre, threshold, bandwidth), (pre, threshold)


def _jumprelu_bwd(bandwidth, res, g):
    pre, threshold = res
    d_pre = jnp.where(pre > threshold, g, 0.0)
    d_thr = -(threshold / bandwidth) * _rect((pre - threshold) / bandwidth) * g
    return d_pre, _sum_to(threshold, d_thr)


jumprelu.defvjp(_jumprelu_fwd, _jumprelu_bwd)


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def heaviside(pre: jax.Array, threshold: jax.Array, bandwidth: float) -> jax.Array:
    """``1[pre > threshold]``, with the straight-through threshold gradient (for the L0 term)."""
    return (pre > threshold).astype(pre.dtype)


def _heaviside_fwd(pre, threshold, bandwidth):
    return heaviside(pre, threshold, bandwidth), (pre, threshold)


def _heaviside_bwd(bandwidth, res, g):
    pre, threshold = res
    d_thr = -(1.0 / bandwidth) * _rect((pre - threshold) / bandwidth) * g
    return jnp.zeros_like(pre), _sum_to(threshold, d_thr)


heaviside.defvjp(_heaviside_fwd, _heaviside_bwd)


# ---------------------------------------------------------------- model and loss


def _batch_topk(pre: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """Keep the ``k * batch`` largest ``relu(pre)`` entries of the whole batch; also the smallest kept."""
    flat = jax.nn.relu(pre).reshape(-1)
    vals, idx = jax.lax.top_k(flat, k * pre.shape[0])
    out = jnp.zeros_like(flat).at[idx].set(vals).reshape(pre.shape)
    return out, jnp.min(jnp.where(vals > 0, vals, jnp.inf))


def _encode_train(params, u, config: SAEConfig):
    pre = (u - params["b_dec"]) @ params["w_enc"] + params["b_enc"]
    extra = jnp.zeros((), u.dtype)
    if config.kind == "relu":
        f = jax.nn.relu(pre)
    elif config.kind == "topk":
        f = topk_activation(pre, config.k)
    elif config.kind == "batchtopk":
        f, extra = _batch_topk(pre, config.k)
    else:
        f = jumprelu(pre, jnp.exp(params["log_threshold"]), config.bandwidth)
    return pre, f, extra


def _aux_loss(pre, err, w_dec, dead, *, config: SAEConfig):
    """Aux-k loss (Gao et al. 2024): the ``aux_k`` largest dead pre-activations reconstruct the error."""
    masked = jnp.where(dead[None, :], pre, -jnp.inf)
    f_aux = topk_activation(masked, min(config.aux_k, config.n_latents))
    f_aux = jnp.where(jnp.isfinite(f_aux), f_aux, 0.0)
    e_aux = jax.lax.stop_gradient(err) - f_aux @ w_dec
    return config.aux_coef * jnp.mean(jnp.sum(e_aux * e_aux, axis=-1))


def sae_loss(params: dict, u: jax.Array, coef: jax.Array, dead: jax.Array, config: SAEConfig):
    """Loss of one batch of normalised inputs ``u [b, d]`` and diagnostics.

    Args:
      params: SAE parameters.
      u: ``[b, d]`` normalised inputs.
      coef: sparsity coefficient.
      dead: ``[m]`` bool, latents eligible for the auxiliary loss.
      config: ``SAEConfig``.

    Returns:
      ``(loss, (mse, l0, f, batch_threshold))``.
    """
    pre, f, extra = _encode_train(params, u, config)
    w_dec = params["w_dec"]
    err = u - (f @ w_dec + params["b_dec"])
    mse = jnp.mean(jnp.sum(err * err, axis=-1))
    if config.kind == "relu":
        penalty = coef * jnp.mean(jnp.sum(f * jnp.linalg.norm(w_dec, axis=-1), axis=-1))
    elif config.kind == "jumprelu":
        gates = heaviside(pre, jnp.exp(params["log_threshold"]), config.bandwidth)
        penalty = coef * jnp.mean(jnp.sum(gates, axis=-1))
    else:
        penalty = jnp.zeros((), u.dtype)
    loss = mse + penalty
    if config.aux_k > 0:
        # only when some latent is dead (a top-k over [b, m] costs about a third of a step);
        # under vmap with a batched `dead` the cond becomes a select and both branches run
        loss = loss + jax.lax.cond(jnp.any(dead), partial(_aux_loss, config=config),
                                   lambda *_: jnp.zeros((), u.dtype), pre, err, w_dec, dead)
    l0 = jnp.mean(jnp.sum(f != 0, axis=-1).astype(u.dtype))
    return loss, (mse, l0, f, extra)


# ---------------------------------------------------------------- learner


def _normalisation(x: jax.Array, mode: str) -> tuple[jax.Array, jax.Array]:
    d = x.shape[1]
    if mode == "zscore":
        return jnp.mean(x, axis=0), jnp.maximum(jnp.std(x, axis=0), 1e-6)
    if mode == "norm":
        ms = jnp.mean(jnp.sum(x * x, axis=1))
        return jnp.zeros((d,), x.dtype), jnp.full((d,), jnp.sqrt(jnp.maximum(ms / d, 1e-12)), x.dtype)
    return jnp.zeros((d,), x.dtype), jnp.ones((d,), x.dtype)


@partial(jax.jit, static_argnums=(4,))
def _sae_init(key, x, coef, learning_rate, config: SAEConfig) -> SAEState:
    """Normalisation from ``x``, random unit decoder rows, tied encoder, ``b_dec`` at the data mean."""
    d, m = x.shape[1], config.n_latents
    center, scale = _normalisation(x, config.normalize)
    u = (x - center) / scale
    w_dec = unit_rows(jax.random.normal(key, (m, d), x.dtype))
    params = {
        "w_enc": w_dec.T,
        "b_enc": jnp.zeros((m,), x.dtype),
        "w_dec": w_dec,
        "b_dec": jnp.mean(u, axis=0),
        "log_threshold": jnp.full((m,), jnp.log(config.init_threshold), x.dtype),
    }
    opt_state = config.optimizer(learning_rate).init(params)
    zero = jnp.zeros((), x.dtype)
    return SAEState(params, opt_state, coef, jnp.zeros((m,), jnp.int32), zero, center, scale,
                    jnp.zeros((), jnp.int32), zero, zero, zero)


def _sae_update(state: SAEState, batch: jax.Array, *, config: SAEConfig) -> SAEState:
    """One Adam step on ``batch [b, d]`` (raw activations), keeping decoder rows unit-norm."""
    u = (batch - state.center) / state.scale
    dead = state.since_fired >= config.dead_window
    grad_fn = jax.value_and_grad(sae_loss, has_aux=True)
    (loss, (mse, l0, f, thr)), grads = grad_fn(state.params, u, state.coef, dead, config)
    w_dec = state.params["w_dec"]
    g = grads["w_dec"]
    grads = dict(grads, w_dec=g - jnp.sum(g * w_dec, axis=-1, keepdims=True) * w_dec)
    # the learning rate given here is a placeholder: inject_hyperparams reads it from opt_state
    updates, opt_state = config.optimizer(0.0).update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    params = dict(params, w_dec=unit_rows(params["w_dec"]))
    fired = jnp.any(f != 0, axis=0)
    since = jnp.where(fired, 0, jnp.minimum(state.since_fired + batch.shape[0], 2**30))
    threshold = state.threshold
    if config.kind == "batchtopk":
        mom = config.threshold_momentum
        thr = jnp.where(jnp.isfinite(thr), thr, threshold)
        threshold = jnp.where(state.step == 0, thr, mom * threshold + (1 - mom) * thr)
    return SAEState(params, opt_state, state.coef, since.astype(jnp.int32), threshold, state.center,
                    state.scale, state.step + 1, loss, mse, l0)


def _sae_finalize(state: SAEState, *, config: SAEConfig) -> Directions:
    p = state.params
    args = (p["w_enc"], p["b_enc"])
    if config.kind == "relu":
        encoder = ReLU(*args)
    elif config.kind == "topk":
        encoder = TopK(*args, k=config.k)
    elif config.kind == "batchtopk":
        encoder = BatchTopK(*args, threshold=state.threshold)
    else:
        encoder = JumpReLU(*args, threshold=jnp.exp(p["log_threshold"]))
    return Directions.create(p["w_dec"], encoder, method=f"sae_{config.kind}",
                             center=state.center + p["b_dec"] * state.scale, scale=state.scale,
                             info={"loss": state.loss, "mse": state.mse, "l0": state.l0, "steps": state.step})


def _nonnegative_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"`{name}` must be an int >= 0; got {value!r}.")
    return value


def sae(n_latents: int, *, kind: str = "relu", coef: float | None = None, k: int = 16, learning_rate: float = 1e-3,
        batch_size: int = 256, steps: int = 2000, normalize: str = "norm", aux_k: int = 64,
        aux_coef: float = 1.0 / 32.0, dead_window: int = 100_000, bandwidth: float = 0.1,
        init_threshold: float = 0.3, threshold_momentum: float = 0.99, grad_clip: float = 1.0) -> Learner:
    """A sparse autoencoder (see the module docstring for the kinds), trained by Adam on minibatches.

    Args:
      n_latents: number of latents ``m``.
      kind: ``"relu"`` (ReLU + L1), ``"topk"``, ``"batchtopk"`` or ``"jumprelu"``.
      coef: sparsity coefficient: L1 for ``relu`` (default 0.1), L0 for ``jumprelu`` (default
        1.0); unused by the TopK kinds. Numeric: a sweep may ``vmap`` over it.
      k: active latents per sample for ``topk`` / ``batchtopk``.
      learning_rate: Adam learning rate (numeric: a sweep may ``vmap`` over it).
      batch_size: default rows per step.
      steps: default number of steps.
      normalize: ``"none"``, ``"zscore"`` (per-feature mean and standard deviation, as in
        Klindt et al. 2023) or ``"norm"`` (one scale making the mean squared norm equal ``d``).
      aux_k: dead latents used by the auxiliary loss (0 disables it).
      aux_coef: weight of the auxiliary loss.
      dead_window: a latent is dead after this many samples without activating.
      bandwidth: JumpReLU straight-through kernel width.
      init_threshold: initial JumpReLU threshold.
      threshold_momentum: EMA momentum of the BatchTopK inference threshold.
      grad_clip: global gradient-norm clip (0 disables it).

    Returns:
      A minibatch ``Learner``; ``encode`` of its ``Directions`` gives latent activations and
      ``info`` the last step's ``loss``, ``mse`` and ``l0``.
    """
    n_latents = check_positive_int(n_latents, "n_latents")
    check_choice(kind, "kind", KINDS)
    check_choice(normalize, "normalize", NORMALIZATIONS)
    if kind in ("topk", "batchtopk"):
        check_positive_int(k, "k", maximum=n_latents, maximum_name="n_latents")
    coef = _DEFAULT_COEF[kind] if coef is None else check_number(coef, "coef")
    check_number(learning_rate, "learning_rate", open_low=True)
    config = SAEConfig(
        n_latents=n_latents, kind=kind, k=int(k) if kind in ("topk", "batchtopk") else 0, normalize=normalize,
        aux_k=_nonnegative_int(aux_k, "aux_k"), aux_coef=float(check_number(aux_coef, "aux_coef")),
        dead_window=check_positive_int(dead_window, "dead_window"),
        bandwidth=float(check_number(bandwidth, "bandwidth", open_low=True)),
        init_threshold=float(check_number(init_threshold, "init_threshold", open_low=True)),
        threshold_momentum=float(check_number(threshold_momentum, "threshold_momentum", high=1.0)),
        grad_clip=float(check_number(grad_clip, "grad_clip")))

    def init(key, x):
        x = validate_data(x, "data")
        return _sae_init(key, x, jnp.asarray(coef, x.dtype), jnp.asarray(learning_rate, x.dtype), config)

    hyper = dict(dataclasses.asdict(config), coef=coef, learning_rate=learning_rate)
    return Learner(init, static(_sae_update, config=config), static(_sae_finalize, config=config), f"sae_{kind}",
                   hyper, steps=check_positive_int(steps, "steps"),
                   batch_size=check_positive_int(batch_size, "batch_size"))
