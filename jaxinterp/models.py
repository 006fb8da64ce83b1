"""Small Flax (Linen) ReLU networks used by the studies, and one optax training function."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxinterp._validation import (check_classifier_data, check_finite, check_integer_labels, check_nonempty,
                                   check_positive_int, check_real, check_same_leading)
from jaxinterp.conv import conv_general_dilated
from jaxinterp.loop import run_keyed_chunks
from jaxinterp.sharding import enable_compilation_cache

__all__ = ["CNN", "MLP", "TrainHistory", "TrainedClassifier", "accuracy", "init_params", "predict",
           "train_classifier", "trained_classifier"]


def _check_widths(widths, name: str) -> None:
    """Raise unless ``widths`` is a sequence of positive ints (layer widths or channels)."""
    if isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence):
        raise TypeError(f"`{name}` must be a sequence of ints; got {type(widths).__name__}.")
    for w in widths:
        check_positive_int(w, name)


class MLP(nn.Module):
    """A ReLU multi-layer perceptron; inputs of any shape are flattened after the batch axis.

    Attributes:
      hidden: widths of the hidden ReLU layers.
      n_classes: number of output logits.
    """

    hidden: Sequence[int] = (128, 128)
    n_classes: int = 10

    def __post_init__(self):
        _check_widths(self.hidden, "hidden")
        check_positive_int(self.n_classes, "n_classes")
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, return_features: bool = False):
        """Logits ``[batch, n_classes]`` for ``x [batch, ...]`` (and the last hidden layer)."""
        x = x.reshape(x.shape[0], -1)
        for width in self.hidden:
            x = nn.relu(nn.Dense(width)(x))
        logits = nn.Dense(self.n_classes)(x)
        return (logits, x) if return_features else logits


class CNN(nn.Module):
    """A ReLU convolutional network for 1-D signals or 2-D images, channels last.

    Each conv block is ``Conv -> ReLU`` followed by max-pooling (window 2) when ``pool``;
    then a ReLU dense layer of width ``hidden`` (the penultimate features) and the logits. The
    convolutions are ``jaxinterp.conv.conv_general_dilated`` (XLA's, with a weight gradient that
    stays fast inside the trainers' scanned loops).

    Attributes:
      channels: output channels of the conv blocks.
      kernel_size: kernel size along every spatial axis.
      hidden: width of the penultimate ReLU layer.
      n_classes: number of output logits.
      pool: max-pool by 2 after each conv block.
    """

    channels: Sequence[int] = (16, 32)
    kernel_size: int = 3
    hidden: int = 64
    n_classes: int = 10
    pool: bool = True

    def __post_init__(self):
        _check_widths(self.channels, "channels")
        for name in ("kernel_size", "hidden", "n_classes"):
            check_positive_int(getattr(self, name), name)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, return_features: bool = False):
        """Logits ``[batch, n_classes]`` for ``x [batch, *spatial, channels]``."""
        spatial = x.ndim - 2
        if spatial not in (1, 2):
            raise ValueError(f"CNN input must be [batch, length, channels] or [batch, h, w, channels]; "
                             f"got shape {x.shape}.")
        for c in self.channels:
            conv = nn.Conv(c, (self.kernel_size,) * spatial, padding="SAME", conv_general_dilated=conv_general_dilated)
            x = nn.relu(conv(x))
            if self.pool:
                x = nn.max_pool(x, (2,) * spatial, strides=(2,) * spatial)
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(self.hidden)(x))
        logits = nn.Dense(self.n_classes)(x)
        return (logits, x) if return_features else logits


class TrainHistory(NamedTuple):
    """Per-step training loss ``[steps]`` and the number of steps taken."""

    loss: np.ndarray
    steps: int


def _init_impl(key, *, model: nn.Module, shape: tuple[int, ...]):
    return model.init(key, jnp.zeros((1, *shape), jnp.float32))


# model and shape are static: jax.jit's own cache compiles once per (model, input shape)
_init_jit = jax.jit(_init_impl, static_argnames=("model", "shape"))


def init_params(model: nn.Module, input_shape: Sequence[int], *, key: jax.Array) -> Any:
    """Initialise ``model`` for inputs of shape ``input_shape`` (one example, no batch axis)."""
    return _init_jit(_check_key(key, "key"), model=model, shape=tuple(int(d) for d in input_shape))


def _check_key(key, name: str) -> jax.Array:
    if not (isinstance(key, jax.Array) and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)):
        raise TypeError(f"`{name}` must be a typed PRNG key from jax.random.key(seed); "
                        f"got {type(key).__name__} {getattr(key, 'dtype', '')}.")
    if key.shape != ():
        raise ValueError(f"`{name}` must be a single key (shape ()); got shape {key.shape}.")
    return key


class _Settings(NamedTuple):
    """The static settings of a training run: they shape the compiled program."""

    n: int
    batch_size: int
    steps: int
    learning_rate: float
    weight_decay: float
    schedule: str


def _optimizer(settings: _Settings) -> optax.GradientTransformation:
    s = settings
    lr = optax.cosine_decay_schedule(s.learning_rate, s.steps) if s.schedule == "cosine" else s.learning_rate
    return optax.adamw(lr, weight_decay=s.weight_decay)


def _train_chunk_impl(carry, keys, xs, ys, *, model: nn.Module, settings: _Settings):
    """Steps ``len(keys)`` of minibatch AdamW on cross-entropy, under ``lax.scan``."""
    opt = _optimizer(settings)

    def loss_fn(p, xb, yb):
        return optax.softmax_cross_entropy_with_integer_labels(model.apply(p, xb), yb).mean()

    def step(carry, k):
        p, s = carry
        idx = jax.random.choice(k, settings.n, (settings.batch_size,), replace=False)
        loss, g = jax.value_and_grad(loss_fn)(p, xs[idx], ys[idx])
        with jax.numpy_dtype_promotion("standard"):  # optax mixes int32 step counts with Python floats
            upd, s = opt.update(g, s, p)
        return (optax.apply_updates(p, upd), s), loss

    return jax.lax.scan(step, carry, keys)


# model and settings are static: jax.jit's own cache compiles once per (model, settings, chunk
# length) across calls, so repeated trainings of one architecture compile once.
_train_chunk = jax.jit(_train_chunk_impl, static_argnames=("model", "settings"))


def train_classifier(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    *,
    key: jax.Array,
    steps: int = 2000,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
    weight_decay: float = 0.0,
    schedule: str = "cosine",
    params: Any = None,
    chunk: int = 500,
    progress: bool = False,
) -> tuple[Any, TrainHistory]:
    """Train a classifier with softmax cross-entropy and Adam(W), minibatches drawn with ``key``.

    The loop runs in jitted ``lax.scan`` chunks of ``chunk`` steps through
    ``jaxinterp.loop.run_keyed_chunks``; step ``t`` draws its minibatch with
    ``jax.random.split(key_data, steps)[t]``. Inputs of any floating dtype (half precision
    included) are computed in float32. Compiled programs are reused across calls with the same
    model and settings, and across processes through JAX's persistent compilation cache
    (``jaxinterp.sharding.enable_compilation_cache``).

    Args:
      model: a Flax Linen module mapping ``[batch, ...]`` to logits ``[batch, n_classes]``.
      x: float ``[n, ...]`` training inputs.
      y: int ``[n]`` labels.
      key: PRNG key (initialisation and minibatch sampling); same key, same parameters.
      steps: number of optimisation steps.
      batch_size: minibatch size (sampled with replacement across steps, without within a batch).
      learning_rate: peak learning rate.
      weight_decay: decoupled weight decay (AdamW); 0 gives Adam.
      schedule: ``"cosine"`` (decay to 0) or ``"constant"``.
      params: start from these parameters instead of a fresh initialisation.
      chunk: steps per jitted ``scan`` chunk.
      progress: show a tqdm bar over steps.

    Returns:
      ``(params, history)``: the trained parameters and the per-step loss ``[steps]``.
    """
    settings = _check_training(x, y, key, steps, batch_size, learning_rate, weight_decay, schedule, chunk)
    enable_compilation_cache()
    k_init, k_data = jax.random.split(key)
    if params is None:
        params = init_params(model, np.shape(x)[1:], key=k_init)
    xs = jnp.asarray(x, jnp.float32)
    ys = jnp.asarray(y, jnp.int32)

    def chunk_fn(carry, step_keys):
        return _train_chunk(carry, step_keys, xs, ys, model=model, settings=settings)

    carry, losses = run_keyed_chunks(chunk_fn, (params, _optimizer(settings).init(params)), key=k_data,
                                     steps=steps, chunk_size=chunk, progress=progress, desc="train_classifier")
    return carry[0], TrainHistory(losses, steps)


def _check_training(x, y, key, steps, batch_size, learning_rate, weight_decay, schedule, chunk) -> _Settings:
    """Validate ``train_classifier``'s arguments; returns its static settings."""
    _check_key(key, "key")
    n, batch_size = check_classifier_data(x, y, batch_size)
    steps = check_positive_int(steps, "steps")
    check_positive_int(chunk, "chunk")
    if schedule not in ("cosine", "constant"):
        raise ValueError(f"`schedule` must be 'cosine' or 'constant'; got {schedule!r}.")
    check_real(learning_rate, "learning_rate", low=0.0, open_low=True)
    check_real(weight_decay, "weight_decay", low=0.0)
    return _Settings(n, batch_size, steps, float(learning_rate), float(weight_decay), schedule)


_apply_jit = jax.jit(lambda params, x, *, model: model.apply(params, x), static_argnames="model")


def predict(model: nn.Module, params: Any, x: np.ndarray, *, batch_size: int = 1024) -> np.ndarray:
    """Logits ``[n, n_classes]`` of ``model`` on ``x [n, ...]``, computed in jitted batches.

    Raises:
      TypeError / ValueError: ``x`` is not a non-empty finite floating array of rank >= 2, or
        its shape does not match the one ``params`` were initialised for.
    """
    check_positive_int(batch_size, "batch_size")
    x = _check_inputs(x, "x")
    try:
        outs = [np.asarray(_apply_jit(params, jnp.asarray(x[i : i + batch_size], jnp.float32), model=model))
                for i in range(0, len(x), batch_size)]
    except flax.errors.ScopeParamShapeError as err:
        raise ValueError(f"`x` of shape {x.shape} does not fit the parameters: {err}") from None
    return np.concatenate(outs, axis=0)


def _check_inputs(x, name: str) -> np.ndarray:
    """``x`` as a numpy array, raising unless it is a non-empty finite floating array ``[n, ...]``."""
    if x is None or isinstance(x, str):
        raise TypeError(f"`{name}` must be a floating array [n, ...]; got {type(x).__name__}.")
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"`{name}` must have a floating dtype; got {x.dtype}.")
    if x.ndim < 2:
        raise ValueError(f"`{name}` must have a batch axis and at least one feature axis; got shape {x.shape}.")
    check_nonempty(x, name)
    check_finite(x, name)
    return x


def accuracy(model: nn.Module, params: Any, x: np.ndarray, y: np.ndarray) -> float:
    """Fraction of ``x [n, ...]`` whose arg-max logit equals the label ``y [n]`` (non-negative ints)."""
    check_integer_labels(y, "y")
    check_same_leading("x", x, "y", y)
    return float(np.mean(predict(model, params, x).argmax(-1) == np.asarray(y)))


#: Architectures by name, as used by ``trained_classifier`` and the studies.
ARCHITECTURES = {
    "mlp": lambda n_classes: MLP(hidden=(128, 128), n_classes=n_classes),
    "cnn": lambda n_classes: CNN(channels=(16, 32), hidden=64, n_classes=n_classes),
}

#: Default training steps per (architecture, dataset): enough to converge at batch 128.
DEFAULT_STEPS = {("mlp", "mnist1d"): 3000, ("cnn", "mnist1d"): 3000,
                 ("mlp", "digits"): 1500, ("cnn", "digits"): 1000}


class TrainedClassifier(NamedTuple):
    """A trained model with its parameters, data and test accuracy."""

    model: nn.Module
    params: Any
    dataset: Any
    test_accuracy: float


@functools.lru_cache(maxsize=16)
def trained_classifier(arch: str, dataset: str, *, seed: int = 0, steps: int | None = None) -> TrainedClassifier:
    """Train (once per process: memoised) a standard model on a standard dataset.

    Args:
      arch: ``"mlp"`` (ReLU 128-128) or ``"cnn"`` (conv 16-32, dense 64).
      dataset: ``"mnist1d"`` or ``"digits"``.
      seed: PRNG seed of initialisation and minibatches (and of the digits split).
      steps: training steps (default ``DEFAULT_STEPS``); Adam, lr 3e-3, cosine decay, batch 128.

    Returns:
      A ``TrainedClassifier``. On CPU this takes seconds (MLP) to about half a minute (CNN).
    """
    from jaxinterp import datasets

    if arch not in ARCHITECTURES:
        raise ValueError(f"`arch` must be one of {sorted(ARCHITECTURES)}; got {arch!r}.")
    loaders = {"mnist1d": lambda: datasets.load_mnist1d(), "digits": lambda: datasets.load_digits(seed=seed)}
    if dataset not in loaders:
        raise ValueError(f"`dataset` must be one of {sorted(loaders)}; got {dataset!r}.")
    ds = loaders[dataset]()
    model = ARCHITECTURES[arch](ds.n_classes)
    n_steps = steps if steps is not None else DEFAULT_STEPS[(arch, dataset)]
    params, _ = train_classifier(model, ds.x_train, ds.y_train, key=jax.random.key(seed), steps=n_steps,
                                 learning_rate=3e-3)
    return TrainedClassifier(model, params, ds, accuracy(model, params, ds.x_test, ds.y_test))
