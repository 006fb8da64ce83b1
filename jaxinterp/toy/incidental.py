"""The incidental-polysemanticity toy model (Lecomte et al. 2023, arXiv 2312.03096).

A tied-weight autoencoder ``y = ReLU(W W^T x)`` with ``W`` in ``R^{n x m}`` (``n`` features,
``m >= n`` neurons, no bias), trained full-batch on the ``n`` standard basis vectors with the
sum-reduced squared error plus ``l1 * ||W||_1``. On basis data ``x = I`` the forward pass is
``ReLU(W W^T)`` and the gradient has a closed form, ``4 D W + l1 sign(W)`` with
``D = (ReLU(G) - I) * 1[G > 0]``, ``G = W W^T`` (``D`` is symmetric), which costs two matmuls
per step instead of autodiff's three; ``loss_and_grad`` uses it and the tests check it against
``jax.grad`` and finite differences.

Optionally (the paper's noise experiment) a noise vector of shape ``[m]``, shared across the
batch, is added to the hidden layer every step: Bernoulli ``+/- sigma`` or Gaussian
``N(0, sigma^2)``; that path uses autodiff.

Everything here is for ONE instance; ``jaxinterp.toy.training`` vmaps over seeds.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxinterp.toy import training
from jaxinterp._validation import (check_finite, check_in_range, check_key, check_nonempty,
                                   check_positive_int, check_rank, check_shape, is_concrete)
from jaxinterp._validation import check_real as _check_real_scalar

NoiseKind = Literal["none", "bernoulli", "gaussian"]


def check_real(value, name: str, *, low: float, open_low: bool = False) -> float:
    """Return ``value`` as float, raising unless it is a finite real number ``>= low`` (``> low``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"`{name}` must be a real number; got {type(value).__name__}.")
    v = float(value)
    if not math.isfinite(v) or v < low or (open_low and v == low):
        raise ValueError(f"`{name}` must be a finite number {'>' if open_low else '>='} {low}; got {value}.")
    return v


@dataclasses.dataclass(frozen=True)
class IncidentalConfig:
    """Every setting of the incidental-polysemanticity experiment (paper defaults).

    Attributes:
      n_features: number of features ``n`` (input and output size).
      n_hidden: number of neurons ``m``.
      l1: weight of the ``||W||_1`` penalty (``lambda``).
      learning_rate: optimiser step size.
      weight_decay: AdamW decoupled weight decay (PyTorch's default 0.01 was in effect).
      steps: training steps (full batch each).
      optimizer: ``"adamw"`` (the collisions experiment) or ``"sgd"`` (the noise experiment).
      init_scale: ``W ~ N(0, init_scale^2 / m)``.
      noise: hidden-layer noise, ``"none"``, ``"bernoulli"`` or ``"gaussian"``.
      noise_scale: ``sigma`` of the hidden-layer noise.
      b1, b2, eps: Adam moment decay rates and epsilon (PyTorch defaults).
      pad_hidden: train with ``W`` padded by zero columns up to this many neurons (0: no
        padding). Zero columns receive zero gradient, zero L1 subgradient and zero weight decay,
        so they stay exactly zero and the padded run equals the unpadded one; padding lets
        sweeps over ``m`` share one compiled program.
    """

    n_features: int = 256
    n_hidden: int = 256
    l1: float = 1e-3
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    steps: int = 7500
    optimizer: Literal["adamw", "sgd"] = "adamw"
    init_scale: float = 1.0
    noise: NoiseKind = "none"
    noise_scale: float = 0.0
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    pad_hidden: int = 0

    def __post_init__(self):
        check_positive_int(self.n_features, "n_features")
        check_positive_int(self.n_hidden, "n_hidden")
        check_positive_int(self.steps, "steps")
        if not (isinstance(self.pad_hidden, (int, np.integer)) and not isinstance(self.pad_hidden, bool)):
            raise TypeError(f"`pad_hidden` must be an int; got {type(self.pad_hidden).__name__}.")
        check_real(self.l1, "l1", low=0.0)
        check_real(self.learning_rate, "learning_rate", low=0.0, open_low=True)
        check_real(self.weight_decay, "weight_decay", low=0.0)
        check_real(self.noise_scale, "noise_scale", low=0.0)
        check_real(self.init_scale, "init_scale", low=0.0, open_low=True)
        check_real(self.eps, "eps", low=0.0)
        if self.optimizer not in ("adamw", "sgd"):
            raise ValueError(f"`optimizer` must be 'adamw' or 'sgd'; got {self.optimizer!r}.")
        if self.noise not in ("none", "bernoulli", "gaussian"):
            raise ValueError(f"`noise` must be 'none', 'bernoulli' or 'gaussian'; got {self.noise!r}.")
        check_in_range(self.b1, "b1", 0.0, 1.0)
        check_in_range(self.b2, "b2", 0.0, 1.0)
        if self.pad_hidden and self.pad_hidden < self.n_hidden:
            raise ValueError(f"`pad_hidden` ({self.pad_hidden}) must be 0 or >= n_hidden ({self.n_hidden}).")

    @property
    def width(self) -> int:
        """Number of columns of the trained ``W`` (``pad_hidden`` when padding, else ``m``)."""
        return self.pad_hidden or self.n_hidden


def _optax_optimizer(config: IncidentalConfig) -> optax.GradientTransformation:
    if config.optimizer == "adamw":
        return optax.adamw(config.learning_rate, b1=config.b1, b2=config.b2, eps=config.eps,
                           weight_decay=config.weight_decay)
    return optax.sgd(config.learning_rate)


def check_weights(w, name: str, rank) -> jax.Array:
    """``w`` as a jax array, raising unless it is a non-empty floating array of ``rank`` whose
    values (when concrete) are finite. Lists are converted; strings and None are refused."""
    if w is None or isinstance(w, str):
        raise TypeError(f"`{name}` must be a floating array; got {type(w).__name__}.")
    if isinstance(w, (list, tuple)):
        w = np.asarray(w, np.float32)
    check_rank(w, name, rank)
    if not jnp.issubdtype(jnp.result_type(w), jnp.floating):      # bfloat16 included
        raise TypeError(f"`{name}` must have a floating dtype; got {jnp.result_type(w)}.")
    check_nonempty(w, name)
    check_finite(w, name)
    return w


def check_no_overflow(value, names: str):
    """Raise ValueError if a concrete result is non-finite although its inputs were finite."""
    if is_concrete(value) and not bool(jnp.all(jnp.isfinite(value))):
        raise ValueError(f"{names} too large: the result overflows float32; rescale the weights/inputs.")
    return value


def _half_to_float32(*arrays):
    """Half-precision arrays (float16, bfloat16) as float32, and the dtype to return results in.

    The toy functions compute in float32 (or wider) and return results in the input's dtype, so
    half-precision weights never lose the small gradients and L1 terms to rounding.
    """
    arrays = [jnp.asarray(a) for a in arrays]
    out_dtype = arrays[0].dtype
    up = [a.astype(jnp.float32) if a.dtype in (jnp.float16, jnp.bfloat16) else a for a in arrays]
    return up, out_dtype


def make_optimizer(config: IncidentalConfig) -> optax.GradientTransformation:
    """The optimiser of ``config``: ``optax.adamw`` (weight decay explicit) or plain SGD.

    Its ``init`` and ``update`` are values determined by ``config`` (equal configs give equal
    optimisers), so ``training.fit``'s compiled programs are reused across calls through
    ``jax.jit``'s own cache.
    """
    return training.static_optimizer(_optax_optimizer, config)


def init_weights(key: jax.Array, config: IncidentalConfig, n_hidden=None) -> jax.Array:
    """Initial weights ``W ~ N(0, init_scale^2 / m)``, column ``k`` drawn from ``fold_in(key, k)``.

    Drawing each column from its own key makes the first ``m`` columns identical whatever the
    padded width, so a padded run starts exactly where the unpadded one does.

    Args:
      key: a ``jax.random`` key.
      config: the experiment configuration.
      n_hidden: the number ``m`` of real neurons (may be a traced int, for sweeps that vmap
        over ``m`` under padding); default ``config.n_hidden``.

    Returns:
      float32 ``[n_features, width]``; columns ``>= m`` are zero.
    """
    check_key(key)
    m = config.n_hidden if n_hidden is None else n_hidden
    cols = jnp.arange(config.width)
    draw = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(key, k), (config.n_features,), jnp.float32))
    w = draw(cols).T * (config.init_scale / jnp.sqrt(jnp.asarray(m, jnp.float32)))
    return jnp.where(cols < m, w, 0.0)


@dataclasses.dataclass(frozen=True)
class _Init:
    config: IncidentalConfig

    def __call__(self, key, hyper=None):
        m = hyper.get("n_hidden") if isinstance(hyper, dict) else None
        return init_weights(key, self.config, m)


def make_init(config: IncidentalConfig):
    """``init(key, hyper) -> W`` for ``training.fit``; ``hyper["n_hidden"]`` (if given) sets ``m``.

    The returned function is a value determined by ``config`` (equal configs, equal functions),
    so compiled programs are reused across calls.
    """
    return _Init(config)


def forward(w: jax.Array, x: jax.Array, noise: jax.Array | None = None) -> jax.Array:
    """Model output ``ReLU((x W + noise) W^T)``.

    Args:
      w: weights ``[n, m]``.
      x: inputs ``[batch, n]``.
      noise: optional hidden-layer noise ``[m]``, shared across the batch.

    Returns:
      ``[batch, n]``.
    """
    w = check_weights(w, "w", 2)
    x = check_weights(x, "x", 2)
    check_shape(x, "x", (None, w.shape[0]))
    if noise is not None:
        check_shape(noise, "noise", (w.shape[1],))
    (w, x), dtype = _half_to_float32(w, x)
    hidden = x @ w
    if noise is not None:
        hidden = hidden + jnp.asarray(noise, w.dtype)[None, :]
    return check_no_overflow(jax.nn.relu(hidden @ w.T), "`w` or `x`").astype(dtype)


def loss(w: jax.Array, x: jax.Array, l1: float, noise: jax.Array | None = None) -> jax.Array:
    """Sum-reduced squared reconstruction error plus ``l1 * ||W||_1`` (reference definition).

    Args:
      w: weights ``[n, m]``.
      x: inputs ``[batch, n]`` (the targets are the inputs).
      l1: L1 penalty weight.
      noise: optional hidden-layer noise ``[m]``.

    Returns:
      Scalar loss.
    """
    w, x = check_weights(w, "w", 2), check_weights(x, "x", 2)
    if is_concrete(l1):
        _check_real_scalar(l1, "l1", low=0.0)
    (w32, x32), dtype = _half_to_float32(w, x)
    y = forward(w32, x32, noise)
    value = jnp.sum((y - x32) ** 2) + l1 * jnp.sum(jnp.abs(w32))
    return check_no_overflow(value, "`w` or `x`").astype(dtype)


def basis_loss_and_grad(w: jax.Array, l1: float) -> tuple[jax.Array, jax.Array]:
    """Loss and gradient on the basis-vector data ``x = I`` in closed form (no noise).

    ``G = W W^T``, ``R = ReLU(G) - I``, loss ``= sum(R^2) + l1 ||W||_1``; with
    ``D = R * 1[G > 0]`` (symmetric), ``dloss/dW = 4 D W + l1 sign(W)``.

    Args:
      w: weights ``[n, m]``.
      l1: L1 penalty weight.

    Returns:
      ``(loss, grad)``: scalar and ``[n, m]``.
    """
    w = check_weights(w, "w", 2)
    if is_concrete(l1):
        _check_real_scalar(l1, "l1", low=0.0)
    (w,), dtype = _half_to_float32(w)
    value, grad = _basis_loss_and_grad(w, l1)
    check_no_overflow(value, "`w`")
    return value.astype(dtype), grad.astype(dtype)


def _basis_loss_and_grad(w, l1):
    g = w @ w.T
    r = jax.nn.relu(g) - jnp.eye(w.shape[0], dtype=w.dtype)
    d = jnp.where(g > 0, r, 0.0)
    value = jnp.sum(r * r) + l1 * jnp.sum(jnp.abs(w))
    grad = 4.0 * (d @ w) + l1 * jnp.sign(w)
    return value, grad


def sample_noise(key: jax.Array, config: IncidentalConfig) -> jax.Array:
    """One hidden-layer noise vector ``[width]`` of ``config.noise`` kind and scale."""
    shape = (config.width,)
    if config.noise == "bernoulli":
        return jnp.where(jax.random.bernoulli(key, 0.5, shape), config.noise_scale, -config.noise_scale)
    if config.noise == "gaussian":
        return config.noise_scale * jax.random.normal(key, shape, jnp.float32)
    return jnp.zeros(shape, jnp.float32)


@dataclasses.dataclass(frozen=True)
class _LossAndGrad:
    config: IncidentalConfig
    closed_form: bool

    def __call__(self, w, key, hyper):
        del hyper
        config = self.config
        if config.noise == "none" and self.closed_form:
            return basis_loss_and_grad(w, config.l1)
        noise = None if config.noise == "none" else sample_noise(key, config)
        return jax.value_and_grad(loss)(w, jnp.eye(config.n_features, dtype=w.dtype), config.l1, noise)


def make_loss_and_grad(config: IncidentalConfig, *, closed_form: bool = True):
    """``loss_and_grad(w, key, hyper) -> (loss, grad)`` for ``training.fit``.

    Uses the closed-form basis gradient when there is no noise (and ``closed_form``), autodiff
    of ``loss`` otherwise. ``key`` draws the step's noise; ``hyper`` is unused. The returned
    function is a value determined by its arguments, so compiled programs are reused across calls.
    """
    return _LossAndGrad(config, bool(closed_form))


def represents(w: jax.Array, low: float = 0.8, high: float = 1.2) -> jax.Array:
    """Boolean ``[..., n, m]``: neuron ``k`` represents feature ``i`` iff ``low <= |W_ik| <= high``."""
    w = check_weights(w, "w", (2, 3))
    (w,), _ = _half_to_float32(w)
    a = jnp.abs(w)
    return (a >= low) & (a <= high)


def count_polysemantic(w: jax.Array, *, low: float = 0.8, high: float = 1.2, min_features: int = 2) -> jax.Array:
    """Number of polysemantic neurons: neurons representing ``min_features`` or more features.

    Args:
      w: weights ``[n, m]`` or a stack ``[instances, n, m]``.
      low, high: a neuron represents a feature when ``low <= |W_ik| <= high``.
      min_features: how many features make a neuron polysemantic (the paper: 2).

    Returns:
      int32 count, ``[]`` or ``[instances]``.
    """
    w = check_weights(w, "w", (2, 3))
    check_positive_int(min_features, "min_features")
    if not low <= high:
        raise ValueError(f"need low <= high; got low={low}, high={high}.")
    per_neuron = jnp.sum(represents(w, low, high), axis=-2)
    return jnp.sum(per_neuron >= min_features, axis=-1).astype(jnp.int32)


def fourth_norm(w: jax.Array) -> jax.Array:
    """Mean over features of ``sum_k W_ik^4`` (1 when every feature sits on one unit-norm neuron).

    Args:
      w: ``[n, m]`` or ``[instances, n, m]``.

    Returns:
      ``[]`` or ``[instances]``.
    """
    w = check_weights(w, "w", (2, 3))
    (w32,), dtype = _half_to_float32(w)
    return check_no_overflow(jnp.mean(jnp.sum(w32**4, axis=-1), axis=-1), "`w`").astype(dtype)
