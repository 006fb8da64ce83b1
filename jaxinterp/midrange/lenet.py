"""The LeNet-style encoder of O'Mahony et al.'s dSprites experiments, with a linear head.

The authors' ``EncoderCore``: two ``Conv(5 x 5, valid) -> ReLU -> AvgPool(2) -> BatchNorm`` blocks
(6 and 16 channels), then ``Dense -> ReLU -> BatchNorm`` layers of 120 and 84 units and a feature
layer of ``feat_size`` (84) units built the same way; a linear layer maps the (batch-normalised)
features to the logits. Every BatchNorm is affine-free (PyTorch ``affine=False``: no scale, no
offset). In training mode (``train=True``) a BatchNorm normalises with the batch's mean and
biased variance and updates running averages (PyTorch momentum 0.1, i.e. ``running = 0.9 *
running + 0.1 * batch``; PyTorch stores the unbiased batch variance in its running average,
Flax the biased one, a factor ``m / (m - 1)`` with ``m`` at least the batch size); in evaluation
mode it normalises with the running averages. ``batch_norm=False`` leaves the BatchNorms out.
With ``dropout > 0`` every block drops units before its BatchNorm while training, and the logits
are dropped too (the authors' ``EncoderCore(dropout=True, dropout_level=0.2)``, as their notebook
trains it: PyTorch's element-wise ``nn.Dropout`` after each pool and each dense ReLU, and their
classifier ``nn.Sequential(nn.Linear(84, 3), nn.Dropout(0.2))``); apply with
``rngs={"dropout": key}`` when ``train=True``. With ``torch_init`` (the default) every layer is
initialised as PyTorch initialises ``nn.Conv2d`` and ``nn.Linear``: weights and biases uniform in
``+/- 1 / sqrt(fan_in)``, ``fan_in`` being the inputs of one output unit (Flax's defaults,
``torch_init=False``, are LeCun-normal weights, three times the variance, and zero biases).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxinterp._validation import check_positive_int, check_real
from jaxinterp.conv import conv_general_dilated

__all__ = ["BN_EPSILON", "BN_MOMENTUM", "LeNet", "LinearHead", "torch_layer_init"]

#: PyTorch's BatchNorm defaults (momentum 0.1 of the new batch, epsilon 1e-5) in Flax's convention.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def torch_layer_init(fan_in: int) -> dict[str, Any]:
    """``kernel_init`` and ``bias_init`` of PyTorch's default ``nn.Linear`` / ``nn.Conv*`` initialisation.

    PyTorch draws weights from ``kaiming_uniform(a=sqrt(5))`` and biases uniformly, both in
    ``+/- 1 / sqrt(fan_in)``; ``fan_in`` is ``in_features`` for a dense layer and
    ``in_channels * prod(kernel_size)`` for a convolution. Pass as ``nn.Dense(n, **torch_layer_init(d))``.
    """
    fan_in = check_positive_int(fan_in, "fan_in")
    bound = 1.0 / math.sqrt(fan_in)

    def bias_init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return dict(kernel_init=nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform"), bias_init=bias_init)


class LeNet(nn.Module):
    """LeNet-style image classifier, channels last.

    Attributes:
      channels: output channels of the two valid-padded conv blocks (each followed by a 2 x 2
        average pool).
      kernel_size: conv kernel size along both spatial axes.
      dense: widths of the ReLU dense layers between the conv blocks and the feature layer.
      feat_size: width of the ReLU feature (penultimate) layer.
      n_classes: number of logits.
      batch_norm: an affine-free BatchNorm after every block, as the authors' encoder has
        (variables gain a ``"batch_stats"`` collection of running means and variances).
      dropout: drop probability of the dropout before every BatchNorm and on the logits while
        training (0: none).
      torch_init: initialise every layer as PyTorch does (``torch_layer_init``); ``False``: Flax's defaults.
    """

    channels: Sequence[int] = (6, 16)
    kernel_size: int = 5
    dense: Sequence[int] = (120, 84)
    feat_size: int = 84
    n_classes: int = 3
    batch_norm: bool = True
    dropout: float = 0.0
    torch_init: bool = True

    def __post_init__(self):
        for name in ("kernel_size", "feat_size", "n_classes"):
            check_positive_int(getattr(self, name), name)
        for name in ("channels", "dense"):
            for w in getattr(self, name):
                check_positive_int(w, name)
        for name in ("batch_norm", "torch_init"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"`{name}` must be a bool; got {type(getattr(self, name)).__name__}.")
        _check_dropout(self.dropout)
        super().__post_init__()

    def _init(self, fan_in: int) -> dict[str, Any]:
        return torch_layer_init(fan_in) if self.torch_init else {}

    def _drop(self, x: jax.Array, train: bool) -> jax.Array:
        return nn.Dropout(self.dropout, deterministic=not train)(x) if self.dropout > 0.0 else x

    def _norm(self, x: jax.Array, train: bool) -> jax.Array:
        x = self._drop(x, train)
        if not self.batch_norm:
            return x
        return nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
                            use_bias=False, use_scale=False)(x)

    @nn.compact
    def __call__(self, x: jax.Array, return_features: bool = False, train: bool = False):
        """Logits ``[batch, n_classes]`` (and features ``[batch, feat_size]``) for ``x [batch, h, w, c]``.

        Args:
          x: images ``[batch, h, w, c]``.
          return_features: also return the (normalised) feature-layer output.
          train: BatchNorms use batch statistics and update their running averages (apply with
            ``mutable=["batch_stats"]``); otherwise they use the running averages.

        Raises:
          ValueError: ``x`` not 4-D, or too small for the valid convolutions and pools.
        """
        if x.ndim != 4:
            raise ValueError(f"LeNet input must be [batch, h, w, channels]; got shape {x.shape}.")
        for c in self.channels:
            if min(x.shape[1:3]) < self.kernel_size + 1:
                raise ValueError(f"LeNet input of {x.shape[1]} x {x.shape[2]} pixels is too small for "
                                 f"{len(self.channels)} valid {self.kernel_size} x {self.kernel_size} conv blocks.")
            conv = nn.Conv(c, (self.kernel_size,) * 2, padding="VALID", conv_general_dilated=conv_general_dilated,
                           **self._init(x.shape[-1] * self.kernel_size ** 2))
            x = _avg_pool_2x2(nn.relu(conv(x)))
            x = self._norm(x, train)
        x = x.reshape(x.shape[0], -1)
        for w in self.dense:
            x = self._norm(nn.relu(nn.Dense(w, **self._init(x.shape[-1]))(x)), train)
        feats = self._norm(nn.relu(nn.Dense(self.feat_size, **self._init(x.shape[-1]))(x)), train)
        logits = self._drop(nn.Dense(self.n_classes, **self._init(feats.shape[-1]))(feats), train)
        return (logits, feats) if return_features else logits


class LinearHead(nn.Module):
    """The authors' linear classifier: ``nn.Sequential(nn.Linear(d, n_classes), nn.Dropout(p))``.

    PyTorch's initialisation (``torch_layer_init``); while training (``train=True``, apply with
    ``rngs={"dropout": key}``) a fraction ``dropout`` of the logits is zeroed and the rest scaled
    by ``1 / (1 - dropout)``; evaluation is the plain affine map ``[batch, d] -> [batch, n_classes]``.

    Attributes:
      n_classes: number of logits.
      dropout: drop probability of the logits while training (the authors' 0.2 with dropout on).
    """

    n_classes: int
    dropout: float = 0.0

    def __post_init__(self):
        check_positive_int(self.n_classes, "n_classes")
        _check_dropout(self.dropout)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        logits = nn.Dense(self.n_classes, **torch_layer_init(x.shape[-1]))(x)
        return nn.Dropout(self.dropout, deterministic=not train)(logits) if self.dropout > 0.0 else logits


def _check_dropout(dropout) -> None:
    check_real(dropout, "dropout", low=0.0, high=1.0)
    if dropout >= 1.0:
        raise ValueError(f"`dropout` must lie in [0, 1); got {dropout}.")


def _avg_pool_2x2(x: jax.Array) -> jax.Array:
    """2 x 2 average pooling at stride 2 without padding (``nn.avg_pool(x, (2, 2), strides=(2, 2))``,
    whose window-size division fails under strict dtype promotion): ``[b, h, w, c] -> [b, h // 2, w // 2, c]``."""
    b, h, w, c = x.shape
    x = x[:, : h - h % 2, : w - w % 2, :]
    return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))
