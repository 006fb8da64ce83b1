"""Linear probes on a frozen encoder, in the two modes O'Mahony et al.'s code trains them.

The authors score an encoder by retraining a linear head on its frozen features
(``train_classifier(..., freeze_features=True)``, 8 epochs). Which features that head sees
depends on how the encoder came to the probe:

- ``encoder_mode="eval"``: the encoder is in evaluation mode (dropout off, BatchNorms on their
  running averages), so the features are fixed and computed once. Their code does this for an
  encoder trained in the same process (``encoder.untrained`` is false, so ``encoder.eval()`` is
  called): in their notebook, the f=0 and f=1 encoders.
- ``encoder_mode="train"``: the encoder stays in training mode while the head trains. Their code
  does this for an encoder loaded from its checkpoint (a fresh ``EncoderCore`` has
  ``untrained`` true, so neither ``eval()`` nor ``train()`` is called and PyTorch's default
  training mode stays on): in their notebook, every encoder with 0 < f < 1. Each probe step then
  computes the features of its minibatch with dropout and the minibatch's BatchNorm statistics
  (no gradient reaches the encoder), and updates the encoder's BatchNorm running averages; the
  test accuracy is measured in evaluation mode with those updated averages.

``probe_accuracy`` does either for a Flax encoder whose ``__call__`` takes ``return_features``
(and ``train`` for the training mode), e.g. ``jaxinterp.midrange.lenet.LeNet``;
``head_accuracy`` is the probe on fixed features.
"""

from __future__ import annotations

from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp._validation import (
    check_finite, check_integer_labels, check_key, check_positive_int, check_same_leading,
)

__all__ = ["ENCODER_MODES", "FrozenEncoderHead", "head_accuracy", "probe_accuracy"]

#: How the frozen encoder runs while its probe trains (see the module docstring).
ENCODER_MODES = ("eval", "train")


class FrozenEncoderHead(nn.Module):
    """A head on a frozen encoder: ``head(stop_gradient(features(encoder(x))))``.

    Variables are ``{"params": {"encoder": ..., "head": ...}, "batch_stats": {"encoder": ...}}``.
    No gradient reaches the encoder's parameters (Adam leaves a parameter with zero gradient
    exactly where it is); with ``encoder_train`` and ``train=True`` the encoder runs in training
    mode (dropout, batch statistics, running-average updates).

    Attributes:
      encoder: module mapping ``x`` to ``(logits, features [batch, d])`` with ``return_features=True``;
        its ``__call__`` takes ``train``.
      head: module mapping ``[batch, d]`` to logits; its ``__call__`` takes ``train``.
      encoder_train: run the encoder in training mode while the head trains.
    """

    encoder: nn.Module
    head: nn.Module
    encoder_train: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        _, feats = self.encoder(x, return_features=True, train=train and self.encoder_train)
        return self.head(jax.lax.stop_gradient(feats), train=train)


def head_accuracy(f_train, y_train, f_test, y_test, *, key: jax.Array, epochs: int = 8, batch_size: int = 1000,
                  dropout: float = 0.0, learning_rate: float = 1e-3, period_epochs: int = 100,
                  standardize: bool = False) -> float:
    """Test accuracy of a linear head trained on fixed features (a probe with ``encoder_mode="eval"``).

    The head is ``jaxinterp.midrange.lenet.LinearHead`` (PyTorch's ``nn.Linear`` initialisation,
    logits dropped at ``dropout`` while training), trained by
    ``jaxinterp.midrange.training.train_epochs`` (Adam, the per-epoch cosine schedule); the test
    accuracy after the last epoch.

    Args:
      f_train, y_train: ``[n, d]`` features and int ``[n]`` labels the head trains on.
      f_test, y_test: ``[m, d]`` features and int ``[m]`` labels it is scored on.
      key: PRNG key of the head's initialisation, minibatches and dropout.
      epochs: training epochs of the head.
      batch_size: minibatch size (capped at ``n``).
      dropout: drop probability of the head's logits while training.
      learning_rate, period_epochs: Adam's initial rate and the cosine schedule's ``T_max`` in epochs.
      standardize: standardise both splits with the training features' mean and standard
        deviation first (for features that do not come out of a BatchNorm).

    Returns:
      Test accuracy in [0, 1].
    """
    from jaxinterp.midrange.lenet import LinearHead
    from jaxinterp.midrange.training import train_epochs

    check_key(key, "key")
    _check_split("train", f_train, y_train, prefix="f")
    _check_split("test", f_test, y_test, prefix="f")
    if np.ndim(f_train) != 2 or np.ndim(f_test) != 2 or np.shape(f_train)[1] != np.shape(f_test)[1]:
        raise ValueError(f"`f_train` and `f_test` must be [n, d] and [m, d] features of one width; got shapes "
                         f"{np.shape(f_train)} and {np.shape(f_test)}.")
    if standardize:
        f_train, f_test = _standardized(f_train, f_test)
    head = LinearHead(_n_classes(y_train, y_test), dropout=dropout)
    variables, _ = train_epochs(head, np.asarray(f_train, np.float32), y_train, key=key, epochs=epochs,
                                batch_size=_capped_batch(batch_size, y_train),
                                learning_rate=learning_rate, period_epochs=period_epochs)
    logits = head.apply(variables, jnp.asarray(f_test, jnp.float32))
    return float(np.mean(np.asarray(logits).argmax(-1) == np.asarray(y_test)))


def probe_accuracy(encoder: nn.Module, encoder_variables: dict, x_train, y_train, x_test, y_test, *, key: jax.Array,
                   encoder_mode: Literal["eval", "train"] = "eval", epochs: int = 8, batch_size: int = 1000,
                   dropout: float = 0.0, learning_rate: float = 1e-3, period_epochs: int = 100,
                   standardize: bool = False, eval_batch: int = 2000) -> float:
    """Test accuracy of a linear head retrained on a frozen encoder (the authors' 8-epoch probe).

    With ``encoder_mode="eval"`` this is ``head_accuracy`` on the encoder's evaluation-mode
    features. With ``"train"`` the encoder runs in training mode while the head trains
    (``FrozenEncoderHead``; the same head initialisation, minibatches and schedule), and the test
    inputs go through it in evaluation mode with the BatchNorm averages the probe's steps left.

    Args:
      encoder: a Flax module; ``encoder.apply(v, x, return_features=True)`` gives ``(logits,
        features [n, d])``; for ``"train"`` its ``__call__`` also takes ``train``.
      encoder_variables: its trained variables (``"params"``, optionally ``"batch_stats"``); not modified.
      x_train, y_train: ``[n, ...]`` inputs and int ``[n]`` labels the head trains on.
      x_test, y_test: ``[m, ...]`` inputs and int ``[m]`` labels it is scored on.
      key: PRNG key of the head's initialisation, minibatches and dropout.
      encoder_mode: ``"eval"`` or ``"train"`` (see the module docstring).
      epochs, batch_size, dropout, learning_rate, period_epochs: the head's training, as in
        ``head_accuracy``.
      standardize: standardise the fixed features first (``encoder_mode="eval"`` only).
      eval_batch: inputs per forward pass when computing features and test predictions.

    Returns:
      Test accuracy in [0, 1].
    """
    from jaxinterp.midrange.lenet import LinearHead
    from jaxinterp.midrange.training import takes_train, train_epochs

    check_key(key, "key")
    if encoder_mode not in ENCODER_MODES:
        raise ValueError(f"`encoder_mode` must be one of {ENCODER_MODES}; got {encoder_mode!r}.")
    if not isinstance(encoder, nn.Module):
        raise TypeError(f"`encoder` must be a Flax linen Module; got {type(encoder).__name__}.")
    if not isinstance(encoder_variables, dict) or "params" not in encoder_variables:
        raise TypeError("`encoder_variables` must be a dict of Flax variables with a 'params' collection; got "
                        f"{type(encoder_variables).__name__}.")
    _check_split("train", x_train, y_train)
    _check_split("test", x_test, y_test)
    eval_batch = check_positive_int(eval_batch, "eval_batch")

    def features(v, x):
        return _batched(lambda xb: encoder.apply(v, xb, return_features=True)[1], x, eval_batch)

    settings = dict(epochs=epochs, batch_size=batch_size, dropout=dropout, learning_rate=learning_rate,
                    period_epochs=period_epochs)
    if encoder_mode == "eval":
        f_train, f_test = features(encoder_variables, x_train), features(encoder_variables, x_test)
        for split, f in (("train", f_train), ("test", f_test)):
            if not np.all(np.isfinite(f)):
                raise ValueError(f"`x_{split}` gives non-finite features; check its scale and the encoder's variables.")
        return head_accuracy(f_train, y_train, f_test, y_test, key=key, standardize=standardize, **settings)
    if standardize:
        raise ValueError("`standardize` needs encoder_mode='eval' (fixed features to standardise); got "
                         "encoder_mode='train'.")
    if not takes_train(encoder):
        raise ValueError(f"encoder_mode='train' needs an encoder whose __call__ takes `train`; "
                         f"{type(encoder).__name__} has no training mode (use encoder_mode='eval').")
    head = LinearHead(_n_classes(y_train, y_test), dropout=dropout)
    model = FrozenEncoderHead(encoder, head, encoder_train=True)
    one = jax.ShapeDtypeStruct((1, *np.shape(x_train)[1:]), jnp.float32)  # the feature width, without a forward pass
    d = jax.eval_shape(lambda xb: encoder.apply(encoder_variables, xb, return_features=True)[1], one).shape[-1]
    k_head = jax.random.split(key)[0]  # where train_epochs(head, ..., key=key) starts the head: as head_accuracy
    variables: dict[str, Any] = {"params": {"encoder": encoder_variables["params"],
                                            "head": head.init(k_head, jnp.zeros((1, d), jnp.float32))["params"]}}
    if "batch_stats" in encoder_variables:
        variables["batch_stats"] = {"encoder": encoder_variables["batch_stats"]}
    trained, losses = train_epochs(model, np.asarray(x_train, np.float32), y_train, key=key, epochs=epochs,
                                   batch_size=_capped_batch(batch_size, y_train),
                                   learning_rate=learning_rate, period_epochs=period_epochs, variables=variables)
    if not np.all(np.isfinite(losses)):
        raise ValueError("`x_train` gives non-finite features or losses in the encoder's training mode; check its "
                         "scale and the encoder's variables.")
    logits = _batched(lambda xb: model.apply(trained, xb), x_test, eval_batch)
    if not np.all(np.isfinite(logits)):
        raise ValueError("`x_test` gives non-finite logits; check its scale and the encoder's variables.")
    return float(np.mean(logits.argmax(-1) == np.asarray(y_test)))


def _capped_batch(batch_size, y_train) -> int:
    """``batch_size`` (a positive int) capped at the number of training rows."""
    return min(check_positive_int(batch_size, "batch_size"), len(np.asarray(y_train)))


def _n_classes(y_train, y_test) -> int:
    return int(max(np.max(y_train), np.max(y_test))) + 1


def _check_split(split: str, x, y, prefix: str = "x") -> None:
    """``{prefix}_{split}``: a finite floating array with at least one row; ``y_{split}`` its integer labels."""
    name = f"{prefix}_{split}"
    check_same_leading(name, x, f"y_{split}", y)
    if not np.issubdtype(np.asarray(x).dtype, np.floating):
        raise TypeError(f"`{name}` must have a floating dtype; got {np.asarray(x).dtype}.")
    if np.shape(x)[0] == 0:
        raise ValueError(f"`{name}` must hold at least one row; got shape {np.shape(x)}.")
    check_finite(x, name)
    check_integer_labels(y, f"y_{split}")


def _standardized(f_train: np.ndarray, f_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both splits standardised with the training split's per-feature mean and standard deviation
    (a constant feature is only centred)."""
    z_train = np.asarray(f_train, np.float64)
    mean, std = z_train.mean(0), z_train.std(0)
    std = np.where(std > 1e-8, std, 1.0)
    return (((z_train - mean) / std).astype(np.float32),
            ((np.asarray(f_test, np.float64) - mean) / std).astype(np.float32))


def _batched(fn, x, batch: int) -> np.ndarray:
    """``fn`` over ``x`` in slices of ``batch`` rows, concatenated (one compiled shape per slice size)."""
    x = np.asarray(x, np.float32)
    return np.concatenate([np.asarray(fn(jnp.asarray(x[i:i + batch]))) for i in range(0, len(x), batch)])
