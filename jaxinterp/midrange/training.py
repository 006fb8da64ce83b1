"""Training for the midrange experiments: Adam with the authors' per-epoch cosine schedule, and
BatchNorm running statistics carried through the steps.

O'Mahony et al. train their encoder and its linear probe with ``torch.optim.Adam(lr=1e-3)`` and
``CosineAnnealingLR(T_max=100)`` stepped once per epoch, at batch 1000; the encoder's affine-free
BatchNorms use batch statistics while it trains and running averages when it is frozen.
``train_epochs`` does the same for any Flax module: a module whose ``__call__`` takes ``train``
is applied with ``train=True`` and a ``"dropout"`` key of its own per step (e.g.
``LeNet(dropout=0.2)`` or the authors' classifier ``LinearHead(3, dropout=0.2)``); if the
variables hold a ``"batch_stats"`` collection, the module is applied with
``mutable=["batch_stats"]`` and the updated statistics are carried to the next step.
Minibatches are drawn without replacement within a step and independently across steps (as
``jaxinterp.models.train_classifier`` draws them); an epoch is ``ceil(n / batch_size)`` steps
(PyTorch's loader instead permutes once per epoch and ends it with a partial batch).
"""

from __future__ import annotations

import inspect
import math
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxinterp._validation import check_classifier_data, check_key, check_positive_int, check_real
from jaxinterp.loop import run_keyed_chunks
from jaxinterp.midrange.lenet import torch_layer_init

__all__ = ["EpochSettings", "cosine_epoch_schedule", "takes_train", "torch_linear", "train_epochs"]


class EpochSettings(NamedTuple):
    """Static settings of a ``train_epochs`` run (they shape the compiled program).

    Attributes:
      n: training examples.
      batch_size: minibatch size.
      steps_per_epoch: ``ceil(n / batch_size)``.
      learning_rate: Adam's learning rate at epoch 0.
      period_epochs: ``T_max`` of the per-epoch cosine schedule.
    """

    n: int
    batch_size: int
    steps_per_epoch: int
    learning_rate: float
    period_epochs: int


def cosine_epoch_schedule(learning_rate: float, steps_per_epoch: int, period_epochs: int):
    """PyTorch's ``CosineAnnealingLR(T_max=period_epochs)`` stepped once per epoch, as an optax schedule.

    ``lr(step) = learning_rate * (1 + cos(pi * e / period_epochs)) / 2`` with
    ``e = step // steps_per_epoch`` the epoch of the step.
    """
    learning_rate = check_real(learning_rate, "learning_rate", low=0.0, open_low=True)
    steps_per_epoch = check_positive_int(steps_per_epoch, "steps_per_epoch")
    period_epochs = check_positive_int(period_epochs, "period_epochs")

    def schedule(step):
        epoch = (jnp.asarray(step, jnp.int32) // steps_per_epoch).astype(jnp.float32)
        return learning_rate * 0.5 * (1.0 + jnp.cos(jnp.float32(math.pi) * epoch / period_epochs))

    return schedule


def torch_linear(in_features: int, out_features: int) -> nn.Dense:
    """A dense layer initialised as PyTorch's ``nn.Linear``: weights and biases uniform in
    ``+/- 1 / sqrt(in_features)`` (Flax's default is LeCun-normal weights and zero biases)."""
    init = torch_layer_init(check_positive_int(in_features, "in_features"))
    return nn.Dense(check_positive_int(out_features, "out_features"), **init)


def takes_train(model: nn.Module) -> bool:
    """Whether ``model.__call__`` has a ``train`` argument (``train_epochs`` then trains it with
    ``train=True`` and a dropout key)."""
    return "train" in inspect.signature(type(model).__call__).parameters


def _loss(model: nn.Module, params, stats, xb, yb, dropout_key):
    kwargs = dict(train=True, rngs={"dropout": dropout_key}) if takes_train(model) else {}
    if stats is None:
        logits, new_stats = model.apply({"params": params}, xb, **kwargs), None
    else:
        logits, upd = model.apply({"params": params, "batch_stats": stats}, xb, mutable=["batch_stats"], **kwargs)
        new_stats = upd["batch_stats"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean(), new_stats


def _optimizer(s: EpochSettings) -> optax.GradientTransformation:
    return optax.adam(cosine_epoch_schedule(s.learning_rate, s.steps_per_epoch, s.period_epochs))


def _chunk_impl(carry, keys, xs, ys, *, model: nn.Module, settings: EpochSettings):
    """``len(keys)`` Adam steps under ``lax.scan``; ``carry = (params, batch_stats or None, opt_state)``."""
    opt = _optimizer(settings)

    def step(carry, k):
        params, stats, opt_state = carry
        idx = jax.random.choice(k, settings.n, (settings.batch_size,), replace=False)
        (loss, stats), g = jax.value_and_grad(_loss, argnums=1, has_aux=True)(model, params, stats, xs[idx], ys[idx],
                                                                               jax.random.fold_in(k, 1))
        with jax.numpy_dtype_promotion("standard"):  # optax mixes int32 step counts with Python floats
            upd, opt_state = opt.update(g, opt_state, params)
        return (optax.apply_updates(params, upd), stats, opt_state), loss

    return jax.lax.scan(step, carry, keys)


_chunk = jax.jit(_chunk_impl, static_argnames=("model", "settings"))


def train_epochs(model: nn.Module, x: np.ndarray, y: np.ndarray, *, key: jax.Array, epochs: int, batch_size: int,
                 learning_rate: float = 1e-3, period_epochs: int = 100, variables: Any = None, chunk: int = 500,
                 progress: bool = False) -> tuple[dict, np.ndarray]:
    """Train a classifier with softmax cross-entropy, Adam and the per-epoch cosine schedule.

    Args:
      model: a Flax module mapping ``[batch, ...]`` to logits ``[batch, n_classes]``. If its
        ``__call__`` takes ``train``, each step applies it with ``train=True`` and a dropout key;
        if its variables have ``"batch_stats"``, it must take ``train`` (batch statistics and
        running-average updates when true).
      x: float ``[n, ...]`` training inputs.
      y: int ``[n]`` labels.
      key: PRNG key of the initialisation and the minibatches.
      epochs: training epochs; the run has ``epochs * ceil(n / batch_size)`` steps.
      batch_size: minibatch size (at most ``n``).
      learning_rate: Adam's learning rate at epoch 0.
      period_epochs: ``T_max`` of the cosine schedule in epochs (the authors' 100; with 80
        epochs the last epoch runs at 9.5 % of ``learning_rate``).
      variables: start from these variables instead of a fresh initialisation.
      chunk: steps per jitted ``scan`` chunk.
      progress: show a tqdm bar over steps.

    Returns:
      ``(variables, losses)``: ``{"params": ..., ["batch_stats": ...]}`` after training, and
      the per-step training loss ``[steps]``.
    """
    check_key(key, "key")
    n, batch_size = check_classifier_data(x, y, batch_size)
    epochs = check_positive_int(epochs, "epochs")
    settings = EpochSettings(n, batch_size, -(-n // batch_size),
                             check_real(learning_rate, "learning_rate", low=0.0, open_low=True),
                             check_positive_int(period_epochs, "period_epochs"))
    k_init, k_data = jax.random.split(key)
    xs, ys = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.int32)
    if variables is None:
        variables = jax.jit(model.init)(k_init, xs[:1])
    params, stats = variables["params"], variables.get("batch_stats")
    if stats is not None and not takes_train(model):
        raise ValueError(f"`model` has BatchNorm statistics but its __call__ takes no `train` argument "
                         f"({type(model).__name__}); train_epochs cannot put it in training mode.")

    def chunk_fn(carry, step_keys):
        return _chunk(carry, step_keys, xs, ys, model=model, settings=settings)

    (params, stats, _), losses = run_keyed_chunks(
        chunk_fn, (params, stats, _optimizer(settings).init(params)), key=k_data,
        steps=epochs * settings.steps_per_epoch, chunk_size=check_positive_int(chunk, "chunk"), progress=progress,
        desc="train_epochs")
    out = {"params": params} if stats is None else {"params": params, "batch_stats": stats}
    return out, losses
