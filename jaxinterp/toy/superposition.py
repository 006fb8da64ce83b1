"""The classic toy model of superposition (Elhage et al. 2022), on the same training machinery.

``n`` sparse features (each non-zero with probability ``p``, uniform in ``[0, 1]`` when on), with
importances ``I_i = importance_decay^i``, are squeezed through ``m < n`` hidden units and read
back out: ``h = W x``, ``y = ReLU(W^T h + b)``, ``W`` in ``R^{m x n}``; the loss is
``mean_batch sum_i I_i (x_i - y_i)^2``. Dense features get the ``m`` most important directions
(no superposition); sparse ones are packed into more than ``m`` directions (superposition), the
"necessary" origin of polysemanticity to contrast with the incidental one.

Measures: feature dimensionality ``D_i = ||W_i||^2 / sum_j (W_i_hat . W_j)^2`` (``W_i`` column
``i``; 1 for a feature with a dedicated dimension, 1/2 for an antipodal pair, 0 when not
represented) and dimensions per feature ``m / ||W||_F^2``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxinterp._validation import check_in_range, check_positive_int, check_rank, check_shape
from jaxinterp.toy import training
from jaxinterp.toy.incidental import check_real


@dataclasses.dataclass(frozen=True)
class SuperpositionConfig:
    """Settings of the superposition toy model.

    Attributes:
      n_features: number of features ``n``.
      n_hidden: number of hidden units ``m`` (``< n`` for superposition).
      importance_decay: feature ``i`` has importance ``importance_decay ** i``.
      batch_size: samples per step (drawn fresh every step).
      steps: training steps.
      learning_rate: AdamW step size.
      weight_decay: AdamW weight decay (0: plain Adam, as in the original).
    """

    n_features: int = 20
    n_hidden: int = 5
    importance_decay: float = 0.9
    batch_size: int = 1024
    steps: int = 5000
    learning_rate: float = 1e-3
    weight_decay: float = 0.0

    def __post_init__(self):
        check_positive_int(self.n_features, "n_features")
        check_positive_int(self.n_hidden, "n_hidden")
        check_positive_int(self.batch_size, "batch_size")
        check_positive_int(self.steps, "steps")
        check_in_range(self.importance_decay, "importance_decay", 0.0, 1.0, inclusive=False)
        check_real(self.learning_rate, "learning_rate", low=0.0, open_low=True)
        check_real(self.weight_decay, "weight_decay", low=0.0)

    def importance(self) -> jax.Array:
        """``[n_features]`` importances ``importance_decay ** i``."""
        return self.importance_decay ** jnp.arange(self.n_features, dtype=jnp.float32)


def init_params(key: jax.Array, config: SuperpositionConfig) -> dict[str, jax.Array]:
    """``{"W": [m, n] Xavier-normal, "b": [n] zeros}``."""
    m, n = config.n_hidden, config.n_features
    w = jax.random.normal(key, (m, n), jnp.float32) * jnp.sqrt(2.0 / (m + n))
    return {"W": w, "b": jnp.zeros((n,), jnp.float32)}


def forward(params: dict[str, jax.Array], x: jax.Array) -> jax.Array:
    """``ReLU(x W^T W + b)``.

    Args:
      params: ``{"W": [m, n], "b": [n]}``.
      x: ``[batch, n]``.

    Returns:
      ``[batch, n]``.
    """
    w = params["W"]
    check_rank(w, "W", 2)
    check_shape(x, "x", (None, w.shape[1]))
    return jax.nn.relu((x @ w.T) @ w + params["b"][None, :])


def sample_features(key: jax.Array, batch_size: int, n_features: int, feature_probability) -> jax.Array:
    """``[batch, n]`` features, each on with probability ``feature_probability`` and uniform in [0, 1]."""
    k_on, k_val = jax.random.split(key)
    on = jax.random.uniform(k_on, (batch_size, n_features)) < feature_probability
    return jnp.where(on, jax.random.uniform(k_val, (batch_size, n_features)), 0.0)


def loss(params: dict[str, jax.Array], x: jax.Array, importance: jax.Array) -> jax.Array:
    """Importance-weighted squared error, summed over features, averaged over the batch."""
    y = forward(params, x)
    return jnp.mean(jnp.sum(jnp.broadcast_to(importance, y.shape) * (x - y) ** 2, axis=-1))


@dataclasses.dataclass(frozen=True)
class _LossAndGrad:
    config: SuperpositionConfig

    def __call__(self, params, key, hyper):
        c = self.config
        x = sample_features(key, c.batch_size, c.n_features, hyper["feature_probability"])
        with jax.ensure_compile_time_eval():   # a constant, computed as outside the trace
            importance = c.importance()
        return jax.value_and_grad(loss)(params, x, importance)


@dataclasses.dataclass(frozen=True)
class _Init:
    config: SuperpositionConfig

    def __call__(self, key, hyper=None):
        del hyper
        return init_params(key, self.config)


def make_loss_and_grad(config: SuperpositionConfig):
    """``loss_and_grad(params, key, hyper)`` for ``training.fit``; ``hyper["feature_probability"]``.

    A value determined by ``config`` (equal configs, equal functions), so compiled programs are
    reused across calls.
    """
    return _LossAndGrad(config)


def feature_dimensionality(w: jax.Array) -> jax.Array:
    """``D_i = ||W_i||^2 / sum_j (W_i_hat . W_j)^2`` for each feature (column) ``i``.

    Args:
      w: ``[m, n]`` or ``[instances, m, n]``.

    Returns:
      ``[n]`` or ``[instances, n]``; 0 for a zero column.
    """
    check_rank(w, "w", (2, 3))
    norms2 = jnp.sum(w * w, axis=-2)
    unit = w / jnp.sqrt(jnp.maximum(norms2, 1e-30))[..., None, :]
    overlaps = jnp.einsum("...mi,...mj->...ij", unit, w) ** 2
    denom = jnp.sum(overlaps, axis=-1)
    return jnp.where(norms2 > 1e-12, norms2 / jnp.maximum(denom, 1e-30), 0.0)


def dimensions_per_feature(w: jax.Array) -> jax.Array:
    """``m / ||W||_F^2``: hidden dimensions per represented feature (1: none in superposition)."""
    check_rank(w, "w", (2, 3))
    return w.shape[-2] / jnp.sum(w * w, axis=(-2, -1))


def sweep_sparsity(key: jax.Array, config: SuperpositionConfig, feature_probabilities, *,
                   chunk_size: int = 1000, progress: bool = False) -> dict[str, np.ndarray]:
    """Train one model per feature probability, all at once (the probability is a vmapped hyperparameter).

    Args:
      key: PRNG key (split per instance).
      config: model and training settings.
      feature_probabilities: ``[k]`` probabilities in (0, 1].
      chunk_size: steps per compiled chunk.
      progress: show a progress bar.

    Returns:
      dict of numpy arrays: ``feature_probability [k]``, ``W [k, m, n]``, ``b [k, n]``,
      ``loss [k]``, ``dimensions_per_feature [k]``, ``feature_dimensionality [k, n]``,
      ``n_represented [k]`` (features with ``||W_i|| > 0.5``).
    """
    probs = np.asarray(feature_probabilities, np.float32)
    check_rank(probs, "feature_probabilities", 1)
    if probs.size == 0 or np.any(probs <= 0) or np.any(probs > 1):
        raise ValueError(f"`feature_probabilities` must lie in (0, 1]; got {probs.tolist()}.")
    keys = jax.random.split(key, probs.size)
    opt = training.static_optimizer(optax.adamw, config.learning_rate, weight_decay=config.weight_decay)
    result = training.fit(_Init(config), make_loss_and_grad(config), opt, keys,
                          steps=config.steps, hyper={"feature_probability": jnp.asarray(probs)},
                          chunk_size=min(chunk_size, config.steps), progress=progress, desc="superposition")
    w = result.state.params["W"]
    return {"feature_probability": probs, "W": np.asarray(w), "b": np.asarray(result.state.params["b"]),
            "loss": np.asarray(result.state.loss),
            "dimensions_per_feature": np.asarray(dimensions_per_feature(w)),
            "feature_dimensionality": np.asarray(feature_dimensionality(w)),
            "n_represented": np.asarray(jnp.sum(jnp.linalg.norm(w, axis=-2) > 0.5, axis=-1))}
