"""Sparse autoencoders: ReLU + L1, TopK, BatchTopK and JumpReLU, trained with optax.

Architecture (all kinds): ``u = (x - center) / scale`` (input normalisation),
``pre = (u - b_dec) @ W_enc + b_enc``, ``f = act(pre)``, ``u_hat = f @ W_dec + b_dec``.

Kinds:
  ``relu``      ``f = relu(pre)``, loss ``mse + coef * sum(f * ||w_dec||)`` (Bricken et al. 2023).
  ``topk``      keep the ``k`` largest of ``relu(pre)`` per sample (Gao et al. 2024).
  ``batchtopk`` keep the ``k * batch`` largest over the whole batch; at inference a JumpReLU with
                the running mean of the smallest kept activation as threshold (Bussmann et al.).
  ``jumprelu``  ``f = pre * 1[pre > theta]`` with a learned per-latent ``theta``, loss
                ``mse + coef * L0`` (or ``mse + coef * (L0 / target_l0 - 1)^2`` with a target L0);
                ``theta`` gets the straight-through pseudo-derivatives of Rajamanoharan et al.
                (2024), a rectangle kernel density estimate of width ``bandwidth``.

Decoder (``decoder=``): ``"unit"`` keeps decoder rows at unit norm (the gradient component along
each row is removed before the step and the rows are renormalised after it); ``"free"`` leaves
them unconstrained (SAELens's training SAEs, rows initialised at norm ``decoder_init_norm``):
the ReLU L1 penalty is weighted by the decoder norms, and the TopK kinds select latents by
``pre * ||w_dec||`` (SAELens's ``rescale_acts_by_decoder_norm``). ``finalize`` folds the decoder
norms into the encoder (as SAELens's ``fold_W_dec_norm``), so every fitted ``Directions`` has
unit components, unchanged reconstructions, and latents in units of their decoder direction.

JumpReLU threshold (``threshold_param=``): ``"direct"`` trains ``theta`` itself (kept >= 0 after
each step); ``"log"`` trains ``log(theta)`` as SAELens does, so Adam moves ``theta`` by a fixed
*fraction* per step and small thresholds barely move.

Dead latents (not active on any of the last ``dead_window`` samples) are revived by two
remedies: the auxiliary-k loss of Gao et al. (2024) (the top ``aux_k`` dead pre-activations
reconstruct the residual error; computed only when some latent is dead), and resampling
(Bricken et al. 2023, the "neuron resampling" of *Towards Monosemanticity*): every
``resample_every`` steps up to ``resample_until``, each latent silent since the previous
resampling (and for at least ``dead_window`` samples) is re-initialised toward an input of the
current batch drawn, without replacement, with probability proportional to the square of its
reconstruction loss (decoder row: the unit input direction ``u - b_dec``; encoder column: the
same direction times ``resample_scale`` times the mean encoder norm of the live latents;
encoder bias 0), and its Adam moments are reset. Latents the aux-k loss is still reviving are
left alone. Resampling runs inside ``update`` under ``lax.cond``, decided by the state (step,
silence counters, a key in the state), so it is jittable and vmappable.

Schedules (optax schedules of the update count, laid out on the factory's ``steps``): a linear
learning-rate warm-up over ``lr_warmup_steps`` (the rate at update ``t`` is
``learning_rate * (t + 1) / lr_warmup_steps``, as SAELens), a linear or cosine decay to
``lr_end * learning_rate`` over the last ``lr_decay_steps``, and the same linear warm-up of the
sparsity coefficient over ``coef_warmup_steps`` (SAELens's ``l1_warm_up_steps`` /
``l0_warm_up_steps``).

The numeric hyperparameters (``learning_rate``, ``coef``, ``target_l0``) live in the state, so
one ``vmap`` over ``sae(..., coef=c)`` trains SAEs with different values on the same batches;
the others (sizes, kinds, schedule lengths) are static.
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
from jaxinterp.keys import named_key

KINDS = ("relu", "topk", "batchtopk", "jumprelu")
NORMALIZATIONS = ("none", "zscore", "norm")
DECODERS = ("unit", "free")
THRESHOLD_PARAMS = ("direct", "log")
LR_DECAYS = ("linear", "cosine")
_DEFAULT_COEF = {"relu": 0.1, "jumprelu": 1.0, "topk": 0.0, "batchtopk": 0.0}
#: Axis of the latent index in each parameter (``b_dec`` has none).
_LATENT_AXIS = {"w_enc": 1, "b_enc": 0, "w_dec": 0, "threshold": 0, "log_threshold": 0}


def _warmup(steps: int) -> optax.Schedule:
    """``(t + 1) / steps`` for ``t < steps``, then 1 (SAELens's linear warm-up, as an optax schedule)."""
    return optax.join_schedules([optax.linear_schedule(1.0 / steps, 1.0, steps - 1), optax.constant_schedule(1.0)],
                                [steps])


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
    decoder: str = "unit"
    decoder_init_norm: float = 0.1
    threshold_param: str = "direct"
    target_l0: bool = False
    steps: int = 2000
    lr_warmup_steps: int = 0
    lr_decay_steps: int = 0
    lr_decay: str = "linear"
    lr_end: float = 0.0
    coef_warmup_steps: int = 0
    resample_every: int = 0
    resample_until: int = 0
    resample_scale: float = 0.2

    def optimizer(self) -> optax.GradientTransformation:
        """Adam's descent direction (unit learning rate), after optional global-norm clipping."""
        adam = optax.chain(optax.scale_by_adam(), optax.scale(-1.0))
        return optax.chain(optax.clip_by_global_norm(self.grad_clip), adam) if self.grad_clip > 0 else adam

    def lr_schedule(self) -> optax.Schedule:
        """Multiplier of ``learning_rate`` at update ``t`` (0-based): warm-up, constant, decay."""
        parts, bounds = [], []
        if self.lr_warmup_steps:
            parts.append(_warmup(self.lr_warmup_steps))
            bounds.append(self.lr_warmup_steps)
        parts.append(optax.constant_schedule(1.0))
        if self.lr_decay_steps:
            n = self.lr_decay_steps
            parts.append(optax.linear_schedule(1.0, self.lr_end, n) if self.lr_decay == "linear"
                         else optax.cosine_decay_schedule(1.0, n, alpha=self.lr_end))
            bounds.append(self.steps - n)
        return optax.join_schedules(parts, bounds) if bounds else parts[0]

    def coef_schedule(self) -> optax.Schedule:
        """Multiplier of the sparsity coefficient at update ``t``: linear warm-up, then 1."""
        return _warmup(self.coef_warmup_steps) if self.coef_warmup_steps else optax.constant_schedule(1.0)

    def threshold(self, params: dict) -> jax.Array:
        """The JumpReLU thresholds ``[m]`` of ``params``."""
        if self.threshold_param == "log":
            return jnp.exp(params["log_threshold"])
        return params["threshold"]


class SAEState(NamedTuple):
    """Training state of one SAE (or, stacked on a leading axis, of several).

    Attributes:
      params: ``{"w_enc" [d, m], "b_enc" [m], "w_dec" [m, d], "b_dec" [d]}``, plus ``"threshold"
        [m]`` (or ``"log_threshold" [m]``) for JumpReLU.
      opt_state: optax state of Adam.
      learning_rate: peak learning rate (scalar; the schedule multiplies it).
      coef: sparsity coefficient (L1 for ``relu``, L0 for ``jumprelu``; unused by TopK), after
        its warm-up.
      target_l0: the JumpReLU target L0 (used only with ``target_l0``).
      key: PRNG key of the resampling draws (step ``t`` uses ``fold_in(key, t)``).
      since_fired: ``[m]`` samples seen since each latent last activated.
      threshold: BatchTopK running inference threshold (scalar).
      center: ``[d]`` input normalisation offset.
      scale: ``[d]`` input normalisation scale.
      step: number of updates.
      loss: total loss of the last step.
      mse: reconstruction MSE (normalised units, summed over features) of the last step.
      l0: mean active latents per sample in the last step.
      lr: learning rate used by the last step.
      coef_now: sparsity coefficient used by the last step.
      n_resampled: latents re-initialised by resampling so far (counted once per resampling).
    """

    params: dict
    opt_state: Any
    learning_rate: jax.Array
    coef: jax.Array
    target_l0: jax.Array
    key: jax.Array
    since_fired: jax.Array
    threshold: jax.Array
    center: jax.Array
    scale: jax.Array
    step: jax.Array
    loss: jax.Array
    mse: jax.Array
    l0: jax.Array
    lr: jax.Array
    coef_now: jax.Array
    n_resampled: jax.Array


# ---------------------------------------------------------------- straight-through JumpReLU


def _rect(z):
    return (jnp.abs(z) < 0.5).astype(z.dtype)


def _sum_to(threshold, d_thr):
    return jnp.sum(d_thr.reshape(-1, threshold.shape[-1]), axis=0).reshape(threshold.shape)


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def jumprelu(pre: jax.Array, threshold: jax.Array, bandwidth: float) -> jax.Array:
    """``pre * 1[pre > threshold]``, with the straight-through threshold gradient."""
    return jnp.where(pre > jnp.broadcast_to(threshold, pre.shape), pre, 0.0)


def _jumprelu_fwd(pre, threshold, bandwidth):
    return jumprelu(pre, threshold, bandwidth), (pre, threshold)


def _jumprelu_bwd(bandwidth, res, g):
    pre, threshold = res
    t = jnp.broadcast_to(threshold, pre.shape)
    d_pre = jnp.where(pre > t, g, 0.0)
    d_thr = -(t / bandwidth) * _rect((pre - t) / bandwidth) * g
    return d_pre, _sum_to(threshold, d_thr)


jumprelu.defvjp(_jumprelu_fwd, _jumprelu_bwd)


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def heaviside(pre: jax.Array, threshold: jax.Array, bandwidth: float) -> jax.Array:
    """``1[pre > threshold]``, with the straight-through threshold gradient (for the L0 term)."""
    return (pre > jnp.broadcast_to(threshold, pre.shape)).astype(pre.dtype)


def _heaviside_fwd(pre, threshold, bandwidth):
    return heaviside(pre, threshold, bandwidth), (pre, threshold)


def _heaviside_bwd(bandwidth, res, g):
    pre, threshold = res
    d_thr = -(1.0 / bandwidth) * _rect((pre - jnp.broadcast_to(threshold, pre.shape)) / bandwidth) * g
    return jnp.zeros_like(pre), _sum_to(threshold, d_thr)


heaviside.defvjp(_heaviside_fwd, _heaviside_bwd)


# ---------------------------------------------------------------- model and loss


def _batch_topk(pre: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """Keep the ``k * batch`` largest ``relu(pre)`` entries of the whole batch; also the smallest kept."""
    flat = jax.nn.relu(pre).reshape(-1)
    vals, idx = jax.lax.top_k(flat, k * pre.shape[0])
    out = jnp.zeros_like(flat).at[idx].set(vals).reshape(pre.shape)
    return out, jnp.min(jnp.where(vals > 0, vals, jnp.inf))


def _forward(params, u, config: SAEConfig):
    """``(pre, f, w_dec, extra)`` of normalised inputs ``u [b, d]``; ``u_hat = f @ w_dec + b_dec``.

    With a free decoder the TopK kinds select on ``pre * ||w_dec||`` and decode with unit rows
    (the decoder norms folded into the latents); otherwise ``w_dec`` is the parameter itself.
    """
    pre = (u - params["b_dec"][None, :]) @ params["w_enc"] + params["b_enc"][None, :]
    w_dec = params["w_dec"]
    if config.decoder == "free" and config.kind in ("topk", "batchtopk"):
        norms = jnp.linalg.norm(w_dec, axis=-1)
        pre, w_dec = pre * norms[None, :], w_dec / norms[:, None]
    extra = jnp.zeros((), u.dtype)
    if config.kind == "relu":
        f = jax.nn.relu(pre)
    elif config.kind == "topk":
        f = topk_activation(pre, config.k)
    elif config.kind == "batchtopk":
        f, extra = _batch_topk(pre, config.k)
    else:
        f = jumprelu(pre, config.threshold(params), config.bandwidth)
    return pre, f, w_dec, extra


def _aux_loss(pre, err, w_dec, dead, *, config: SAEConfig):
    """Aux-k loss (Gao et al. 2024): the ``aux_k`` largest dead pre-activations reconstruct the error."""
    masked = jnp.where(dead[None, :], pre, -jnp.inf)
    f_aux = topk_activation(masked, min(config.aux_k, config.n_latents))
    f_aux = jnp.where(jnp.isfinite(f_aux), f_aux, 0.0)
    e_aux = jax.lax.stop_gradient(err) - f_aux @ w_dec
    return config.aux_coef * jnp.mean(jnp.sum(e_aux * e_aux, axis=-1))


def _penalty(params, pre, f, w_dec, coef, target_l0, config: SAEConfig):
    """Sparsity penalty: decoder-norm-weighted L1 (``relu``), L0 or target-L0 (``jumprelu``), else 0."""
    if config.kind == "relu":
        return coef * jnp.mean(jnp.sum(f * jnp.linalg.norm(w_dec, axis=-1)[None, :], axis=-1))
    if config.kind != "jumprelu":
        return jnp.zeros((), pre.dtype)
    l0 = jnp.sum(heaviside(pre, config.threshold(params), config.bandwidth), axis=-1)
    if config.target_l0:
        return coef * (jnp.mean(l0) / target_l0 - 1.0) ** 2
    return coef * jnp.mean(l0)


def sae_loss(params: dict, u: jax.Array, coef: jax.Array, dead: jax.Array, config: SAEConfig,
             target_l0: jax.Array | float = 1.0):
    """Loss of one batch of normalised inputs ``u [b, d]`` and diagnostics.

    Args:
      params: SAE parameters.
      u: ``[b, d]`` normalised inputs.
      coef: sparsity coefficient (after its warm-up).
      dead: ``[m]`` bool, latents eligible for the auxiliary loss.
      config: ``SAEConfig``.
      target_l0: the JumpReLU target L0 (used only when ``config.target_l0``).

    Returns:
      ``(loss, (mse, l0, f, batch_threshold))``.
    """
    pre, f, w_dec, extra = _forward(params, u, config)
    err = u - (f @ w_dec + params["b_dec"][None, :])
    mse = jnp.mean(jnp.sum(err * err, axis=-1))
    loss = mse + _penalty(params, pre, f, w_dec, coef, target_l0, config)
    if config.aux_k > 0:
        # only when some latent is dead (a top-k over [b, m] costs about a third of a step);
        # under vmap with a batched `dead` the cond becomes a select and both branches run
        loss = loss + jax.lax.cond(jnp.any(dead), partial(_aux_loss, config=config),
                                   lambda *_: jnp.zeros((), u.dtype), pre, err, w_dec, dead)
    l0 = jnp.mean(jnp.sum(f != 0, axis=-1).astype(u.dtype))
    return loss, (mse, l0, f, extra)


# ---------------------------------------------------------------- resampling dead latents


def _zero_latents(tree: dict, mask: jax.Array) -> dict:
    """``tree`` (params-shaped) with the entries of the latents in ``mask [m]`` set to 0."""
    out = dict(tree)
    for name, axis in _LATENT_AXIS.items():
        if name in tree:
            shape = [1] * tree[name].ndim
            shape[axis] = -1
            out[name] = jnp.where(mask.reshape(shape), 0.0, tree[name])
    return out


def reset_moments(opt_state, mask: jax.Array):
    """``opt_state`` with Adam's first and second moments of the latents in ``mask [m]`` set to 0."""
    def reset(s):
        if isinstance(s, optax.ScaleByAdamState):
            return s._replace(mu=_zero_latents(s.mu, mask), nu=_zero_latents(s.nu, mask))
        return s

    return jax.tree_util.tree_map(reset, opt_state, is_leaf=lambda s: isinstance(s, optax.ScaleByAdamState))


def resample(params: dict, opt_state, u: jax.Array, dead: jax.Array, key: jax.Array, config: SAEConfig):
    """Re-initialise the ``dead [m]`` latents toward high-loss inputs of ``u [b, d]`` (Bricken et al. 2023).

    The dead latents draw distinct inputs (while there are enough rows), without replacement, with
    probability proportional to the square of their squared reconstruction error; a dead latent's
    decoder row becomes the unit direction of
    ``u - b_dec`` (times the live latents' mean decoder norm with a free decoder), its encoder
    column the same direction times ``resample_scale`` times the live latents' mean encoder
    norm, its encoder bias 0, and its Adam moments 0. Live latents are unchanged.

    Returns:
      ``(params, opt_state)``.
    """
    _, f, w_eff, _ = _forward(params, u, config)
    err = u - (f @ w_eff + params["b_dec"][None, :])
    sq = jnp.sum(err * err, axis=-1)
    logits = 2.0 * jnp.log(jnp.maximum(sq, jnp.finfo(u.dtype).tiny))
    # draws without replacement (Gumbel top-k), given to the dead latents in order, so that no two
    # dead latents share an input while the batch has enough rows (twins would stay twins)
    _, picks = jax.lax.top_k(logits + jax.random.gumbel(key, logits.shape, u.dtype), min(u.shape[0], config.n_latents))
    rank = jnp.cumsum(dead) - 1
    v = unit_rows(u[picks[rank % picks.shape[0]]] - params["b_dec"][None, :])
    live = ~dead
    n_live = jnp.maximum(jnp.sum(live), 1).astype(u.dtype)

    def live_mean(norms):
        return jnp.where(jnp.any(live), jnp.sum(jnp.where(live, norms, 0.0)) / n_live, 1.0)

    enc_norm = live_mean(jnp.linalg.norm(params["w_enc"], axis=0))
    dec_norm = live_mean(jnp.linalg.norm(params["w_dec"], axis=-1)) if config.decoder == "free" else 1.0
    new = dict(params,
               w_dec=jnp.where(dead[:, None], v * dec_norm, params["w_dec"]),
               w_enc=jnp.where(dead[None, :], (v * (config.resample_scale * enc_norm)).T, params["w_enc"]),
               b_enc=jnp.where(dead, 0.0, params["b_enc"]))
    return new, reset_moments(opt_state, dead)


def _maybe_resample(params, opt_state, u, dead, step, key, config: SAEConfig):
    """``resample`` at the scheduled steps when some latent is dead; ``(params, opt_state, n)``."""
    if config.resample_every <= 0:
        return params, opt_state, jnp.zeros((), jnp.int32)
    done = step + 1
    go = (done % config.resample_every == 0) & (done <= config.resample_until) & jnp.any(dead)
    params, opt_state = jax.lax.cond(go, partial(resample, config=config), lambda p, o, *_: (p, o),
                                     params, opt_state, u, dead, jax.random.fold_in(key, step))
    return params, opt_state, jnp.where(go, jnp.sum(dead), 0).astype(jnp.int32)


# ---------------------------------------------------------------- learner


def _normalisation(x: jax.Array, mode: str) -> tuple[jax.Array, jax.Array]:
    d = x.shape[1]
    if mode == "zscore":
        return jnp.mean(x, axis=0), jnp.maximum(jnp.std(x, axis=0), 1e-6)
    if mode == "norm":
        ms = jnp.mean(jnp.sum(x * x, axis=1))
        return jnp.zeros((d,), x.dtype), jnp.full((d,), jnp.sqrt(jnp.maximum(ms / d, 1e-12)), x.dtype)
    return jnp.zeros((d,), x.dtype), jnp.ones((d,), x.dtype)


@partial(jax.jit, static_argnums=(5,))
def _sae_init(key, x, coef, learning_rate, target_l0, config: SAEConfig) -> SAEState:
    """Normalisation from ``x``, random decoder rows (unit, or ``decoder_init_norm`` when free), tied
    encoder, ``b_dec`` at the data mean."""
    d, m = x.shape[1], config.n_latents
    center, scale = _normalisation(x, config.normalize)
    u = (x - center[None, :]) / scale[None, :]
    w_dec = unit_rows(jax.random.normal(key, (m, d), x.dtype))
    if config.decoder == "free":
        w_dec = w_dec * config.decoder_init_norm
    params = {"w_enc": w_dec.T, "b_enc": jnp.zeros((m,), x.dtype), "w_dec": w_dec, "b_dec": jnp.mean(u, axis=0)}
    if config.kind == "jumprelu":
        thr = jnp.full((m,), config.init_threshold, x.dtype)
        params.update({"log_threshold": jnp.log(thr)} if config.threshold_param == "log" else {"threshold": thr})
    opt_state = config.optimizer().init(params)
    zero = jnp.zeros((), x.dtype)
    return SAEState(params, opt_state, learning_rate, coef, target_l0, named_key(key, "resample"),
                    jnp.zeros((m,), jnp.int32), zero, center, scale, jnp.zeros((), jnp.int32), zero, zero, zero,
                    zero, zero, jnp.zeros((), jnp.int32))


def _project(params: dict, config: SAEConfig) -> dict:
    """Unit decoder rows (``decoder="unit"``) and non-negative direct JumpReLU thresholds."""
    if config.decoder == "unit":
        params = dict(params, w_dec=unit_rows(params["w_dec"]))
    if "threshold" in params:
        params = dict(params, threshold=jax.nn.relu(params["threshold"]))
    return params


def _sae_update(state: SAEState, batch: jax.Array, *, config: SAEConfig) -> SAEState:
    """One scheduled Adam step on ``batch [b, d]`` (raw activations), then scheduled resampling."""
    u = (batch - state.center[None, :]) / state.scale[None, :]
    dead = state.since_fired >= config.dead_window
    with jax.numpy_dtype_promotion("standard"):  # optax mixes int32 step counts with Python floats
        coef = state.coef * jnp.asarray(config.coef_schedule()(state.step), state.coef.dtype)
    grad_fn = jax.value_and_grad(sae_loss, has_aux=True)
    (loss, (mse, l0, f, thr)), grads = grad_fn(state.params, u, coef, dead, config, state.target_l0)
    if config.decoder == "unit":
        w_dec, g = state.params["w_dec"], grads["w_dec"]
        grads = dict(grads, w_dec=g - jnp.sum(g * w_dec, axis=-1, keepdims=True) * w_dec)
    with jax.numpy_dtype_promotion("standard"):  # as above, in Adam's bias correction and the schedule
        updates, opt_state = config.optimizer().update(grads, state.opt_state, state.params)
        lr = state.learning_rate * jnp.asarray(config.lr_schedule()(state.step), state.learning_rate.dtype)
    params = _project(jax.tree_util.tree_map(lambda p, d: p + lr.astype(p.dtype) * d, state.params, updates), config)
    fired = jnp.any(f != 0, axis=0)
    since = jnp.where(fired, 0, jnp.minimum(state.since_fired + batch.shape[0], 2**30)).astype(jnp.int32)
    # resampling takes the latents silent since the previous resampling (at least `dead_window`),
    # leaving those the aux-k loss is still reviving
    long_dead = since >= max(config.dead_window, config.resample_every * batch.shape[0])
    params, opt_state, n_new = _maybe_resample(params, opt_state, u, long_dead, state.step, state.key, config)
    threshold = state.threshold
    if config.kind == "batchtopk":
        mom = config.threshold_momentum
        thr = jnp.where(jnp.isfinite(thr), thr, threshold)
        threshold = jnp.where(state.step == 0, thr, mom * threshold + (1 - mom) * thr)
    return state._replace(params=params, opt_state=opt_state, since_fired=since, threshold=threshold,
                          step=state.step + 1, loss=loss, mse=mse, l0=l0, lr=lr, coef_now=coef,
                          n_resampled=state.n_resampled + n_new)


def _sae_finalize(state: SAEState, *, config: SAEConfig) -> Directions:
    """The fitted SAE; a free decoder's row norms are folded into the encoder (unit components)."""
    p = state.params
    w_enc, b_enc, w_dec = p["w_enc"], p["b_enc"], p["w_dec"]
    norms = jnp.ones((config.n_latents,), w_dec.dtype)
    if config.decoder == "free":
        norms = jnp.maximum(jnp.linalg.norm(w_dec, axis=-1), jnp.finfo(w_dec.dtype).tiny)
        w_enc, b_enc, w_dec = w_enc * norms[None, :], b_enc * norms, w_dec / norms[:, None]
    if config.kind == "relu":
        encoder = ReLU(w_enc, b_enc)
    elif config.kind == "topk":
        encoder = TopK(w_enc, b_enc, k=config.k)
    elif config.kind == "batchtopk":
        encoder = BatchTopK(w_enc, b_enc, threshold=state.threshold)
    else:
        encoder = JumpReLU(w_enc, b_enc, threshold=config.threshold(p) * norms)
    info = {"loss": state.loss, "mse": state.mse, "l0": state.l0, "steps": state.step,
            "n_resampled": state.n_resampled}
    return Directions.create(w_dec, encoder, method=f"sae_{config.kind}",
                             center=state.center + p["b_dec"] * state.scale, scale=state.scale, info=info)


def _nonnegative_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"`{name}` must be an int >= 0; got {value!r}.")
    return value


def _schedule_settings(kind: str, steps: int, lr_warmup_steps, lr_decay_steps, lr_decay, lr_end, coef_warmup_steps,
                       resample_every, resample_until, resample_scale) -> dict:
    """Validated schedule settings of ``sae`` (lengths in updates, laid out on ``steps``)."""
    warm, decay = _nonnegative_int(lr_warmup_steps, "lr_warmup_steps"), _nonnegative_int(lr_decay_steps, "lr_decay_steps")
    if warm + decay > steps:
        raise ValueError(f"`lr_warmup_steps` + `lr_decay_steps` must be at most `steps` ({steps}); "
                         f"got {warm} + {decay}.")
    if resample_every is None:  # Bricken et al.'s schedule: four resamplings, the last at 80 % of training
        resample_every = max(1, steps // 5) if kind in ("topk", "batchtopk") else 0
    resample_every = _nonnegative_int(resample_every, "resample_every")
    resample_until = 4 * steps // 5 if resample_until is None else _nonnegative_int(resample_until, "resample_until")
    if resample_scale is None:
        resample_scale = 1.0 if kind in ("topk", "batchtopk") else 0.2
    return dict(steps=steps, lr_warmup_steps=warm, lr_decay_steps=decay, lr_decay=check_choice(lr_decay, "lr_decay",
                                                                                              LR_DECAYS),
                lr_end=float(check_number(lr_end, "lr_end", high=1.0)),
                coef_warmup_steps=_nonnegative_int(coef_warmup_steps, "coef_warmup_steps"),
                resample_every=resample_every, resample_until=resample_until,
                resample_scale=float(check_number(resample_scale, "resample_scale", open_low=True)))


def sae(n_latents: int, *, kind: str = "relu", coef: float | None = None, k: int = 16, learning_rate: float = 1e-3,
        batch_size: int = 256, steps: int = 2000, normalize: str = "norm", aux_k: int = 64,
        aux_coef: float = 1.0 / 32.0, dead_window: int = 100_000, bandwidth: float = 0.1,
        init_threshold: float = 0.3, threshold_momentum: float = 0.99, grad_clip: float = 1.0,
        decoder: str = "unit", decoder_init_norm: float = 0.1, threshold_param: str = "direct",
        target_l0: float | None = None, lr_warmup_steps: int = 0, lr_decay_steps: int = 0,
        lr_decay: str = "linear", lr_end: float = 0.0, coef_warmup_steps: int = 0,
        resample_every: int | None = None, resample_until: int | None = None,
        resample_scale: float | None = None) -> Learner:
    """A sparse autoencoder (see the module docstring for the kinds and options), trained by Adam.

    Args:
      n_latents: number of latents ``m``.
      kind: ``"relu"`` (ReLU + L1), ``"topk"``, ``"batchtopk"`` or ``"jumprelu"``.
      coef: sparsity coefficient: L1 for ``relu`` (default 0.1), L0 or target-L0 for
        ``jumprelu`` (default 1.0); unused by the TopK kinds. Numeric: a sweep may ``vmap`` over it.
      k: active latents per sample for ``topk`` / ``batchtopk``.
      learning_rate: peak Adam learning rate (numeric: a sweep may ``vmap`` over it).
      batch_size: default rows per step.
      steps: default number of steps; the schedules below are laid out on it (give the run's
        length here rather than to ``fit`` when using decay or resampling).
      normalize: ``"none"``, ``"zscore"`` (per-feature mean and standard deviation, as in
        Klindt et al. 2023) or ``"norm"`` (one scale making the mean squared norm equal ``d``).
      aux_k: dead latents used by the auxiliary loss (0 disables it).
      aux_coef: weight of the auxiliary loss.
      dead_window: a latent is dead after this many samples without activating.
      bandwidth: JumpReLU straight-through kernel width.
      init_threshold: initial JumpReLU threshold.
      threshold_momentum: EMA momentum of the BatchTopK inference threshold.
      grad_clip: global gradient-norm clip (0 disables it).
      decoder: ``"unit"`` (unit-norm decoder rows) or ``"free"`` (unconstrained, norm-weighted).
      decoder_init_norm: initial decoder row norm with ``decoder="free"`` (SAELens's 0.1).
      threshold_param: JumpReLU threshold trained ``"direct"`` ly or as its ``"log"``.
      target_l0: JumpReLU only: replace the L0 penalty by ``coef * (L0 / target_l0 - 1)^2`` (the
        batch mean L0); numeric, a sweep may ``vmap`` over it. None: the L0 penalty.
      lr_warmup_steps: linear learning-rate warm-up length (0: none).
      lr_decay_steps: decay over the last this many of ``steps`` (0: none).
      lr_decay: decay shape, ``"linear"`` or ``"cosine"``.
      lr_end: learning-rate multiplier at the end of the decay, in ``[0, 1]``.
      coef_warmup_steps: linear warm-up length of the sparsity coefficient (0: none).
      resample_every: resample dead latents every this many steps (0: never). Default:
        ``steps // 5`` for the TopK kinds (resampling at 20, 40, 60 and 80 % of training, the
        schedule of Bricken et al.), 0 for the others.
      resample_until: last step at which resampling may happen (default ``4 * steps // 5``).
      resample_scale: encoder norm of a resampled latent relative to the live latents' mean.
        Default: 1.0 for the TopK kinds (a resampled latent must reach the top k of its input to
        get any gradient), 0.2 (Bricken et al.) for the others.

    Returns:
      A minibatch ``Learner``; ``encode`` of its ``Directions`` gives latent activations and
      ``info`` the last step's ``loss``, ``mse``, ``l0``, the step count and ``n_resampled``.
    """
    n_latents = check_positive_int(n_latents, "n_latents")
    check_choice(kind, "kind", KINDS)
    check_choice(normalize, "normalize", NORMALIZATIONS)
    if kind in ("topk", "batchtopk"):
        check_positive_int(k, "k", maximum=n_latents, maximum_name="n_latents")
    coef = _DEFAULT_COEF[kind] if coef is None else check_number(coef, "coef")
    check_number(learning_rate, "learning_rate", open_low=True)
    if target_l0 is not None:
        if kind != "jumprelu":
            raise ValueError(f"`target_l0` applies to kind='jumprelu' only; got kind={kind!r}.")
        check_number(target_l0, "target_l0", open_low=True)
    steps = check_positive_int(steps, "steps")
    config = SAEConfig(
        n_latents=n_latents, kind=kind, k=int(k) if kind in ("topk", "batchtopk") else 0, normalize=normalize,
        aux_k=_nonnegative_int(aux_k, "aux_k"), aux_coef=float(check_number(aux_coef, "aux_coef")),
        dead_window=check_positive_int(dead_window, "dead_window"),
        bandwidth=float(check_number(bandwidth, "bandwidth", open_low=True)),
        init_threshold=float(check_number(init_threshold, "init_threshold", open_low=True)),
        threshold_momentum=float(check_number(threshold_momentum, "threshold_momentum", high=1.0)),
        grad_clip=float(check_number(grad_clip, "grad_clip")), decoder=check_choice(decoder, "decoder", DECODERS),
        decoder_init_norm=float(check_number(decoder_init_norm, "decoder_init_norm", open_low=True)),
        threshold_param=check_choice(threshold_param, "threshold_param", THRESHOLD_PARAMS),
        target_l0=target_l0 is not None,
        **_schedule_settings(kind, steps, lr_warmup_steps, lr_decay_steps, lr_decay, lr_end, coef_warmup_steps,
                             resample_every, resample_until, resample_scale))
    target = 1.0 if target_l0 is None else target_l0

    def init(key, x):
        x = validate_data(x, "data")
        return _sae_init(key, x, jnp.asarray(coef, x.dtype), jnp.asarray(learning_rate, x.dtype),
                         jnp.asarray(target, x.dtype), config)

    hyper = dict(dataclasses.asdict(config), coef=coef, learning_rate=learning_rate, target_l0=target_l0)
    return Learner(init, static(_sae_update, config=config), static(_sae_finalize, config=config), f"sae_{kind}",
                   hyper, steps=steps, batch_size=check_positive_int(batch_size, "batch_size"))
