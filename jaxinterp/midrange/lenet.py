"""The LeNet-style encoder of O'Mahony et al.'s dSprites experiments, with a linear head.

The authors' ``EncoderCore``: two ``Conv(5 x 5, valid) -> ReLU -> AvgPool(2)`` blocks (6 and 16
channels), then ReLU dense layers of 120 and 84 units and a ReLU feature layer of
``feat_size`` (84) units; a linear layer maps the features to the logits. Their encoder puts a
``BatchNorm`` without affine parameters after every block; this module leaves it out (the
trainers here keep no batch statistics) and the study's linear probe standardises the frozen
features instead, which is what an affine-free BatchNorm in evaluation mode does.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax

from jaxinterp._validation import check_positive_int


class LeNet(nn.Module):
    """LeNet-style image classifier, channels last.

    Attributes:
      channels: output channels of the two valid-padded conv blocks (each followed by a 2 x 2
        average pool).
      kernel_size: conv kernel size along both spatial axes.
      dense: widths of the ReLU dense layers between the conv blocks and the feature layer.
      feat_size: width of the ReLU feature (penultimate) layer.
      n_classes: number of logits.
    """

    channels: Sequence[int] = (6, 16)
    kernel_size: int = 5
    dense: Sequence[int] = (120, 84)
    feat_size: int = 84
    n_classes: int = 3

    def __post_init__(self):
        for name in ("kernel_size", "feat_size", "n_classes"):
            check_positive_int(getattr(self, name), name)
        for name in ("channels", "dense"):
            for w in getattr(self, name):
                check_positive_int(w, name)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, return_features: bool = False):
        """Logits ``[batch, n_classes]`` (and features ``[batch, feat_size]``) for ``x [batch, h, w, c]``.

        Raises:
          ValueError: ``x`` not 4-D, or too small for the valid convolutions and pools.
        """
        if x.ndim != 4:
            raise ValueError(f"LeNet input must be [batch, h, w, channels]; got shape {x.shape}.")
        for c in self.channels:
            if min(x.shape[1:3]) < self.kernel_size + 1:
                raise ValueError(f"LeNet input of {x.shape[1]} x {x.shape[2]} pixels is too small for "
                                 f"{len(self.channels)} valid {self.kernel_size} x {self.kernel_size} conv blocks.")
            x = _avg_pool_2x2(nn.relu(nn.Conv(c, (self.kernel_size,) * 2, padding="VALID")(x)))
        x = x.reshape(x.shape[0], -1)
        for w in self.dense:
            x = nn.relu(nn.Dense(w)(x))
        feats = nn.relu(nn.Dense(self.feat_size)(x))
        logits = nn.Dense(self.n_classes)(feats)
        return (logits, feats) if return_features else logits


def _avg_pool_2x2(x: jax.Array) -> jax.Array:
    """2 x 2 average pooling at stride 2 without padding (``nn.avg_pool(x, (2, 2), strides=(2, 2))``,
    whose window-size division fails under strict dtype promotion): ``[b, h, w, c] -> [b, h // 2, w // 2, c]``."""
    b, h, w, c = x.shape
    x = x[:, : h - h % 2, : w - w % 2, :]
    return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))
