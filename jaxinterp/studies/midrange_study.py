"""Study ``midrange``: beyond extremal activations (O'Mahony, Nikolov and O'Sullivan, WACV 2025).

1. Accuracy vs bias fraction, with the published protocol by default (read from the authors'
   code, lauraaisling/MID-level-activations): their LeNet-style encoder (84 features, an
   affine-free BatchNorm after every block, batch statistics while training, dropout 0.2 before
   each BatchNorm and on the logits as their notebook trains it, every layer initialised as
   PyTorch initialises it) trained with Adam 1e-3, ``CosineAnnealingLR(T_max=100)`` stepped per
   epoch, batch 1000 and 80 epochs on dSprites' latent grid (64 x 64 binary images, shape x
   position x scale x orientation) whose x-position band matches the shape for a fraction f of
   the training data, with their split (the unbiased part, 5640 images, fixed and the biased
   part added: the set has ``n_unbiased / max(f, 1 - f)`` images, and the unbiased part is drawn
   from the pool the biased part was filtered from, so the two share images); accuracy on
   unbiased images of a fresh linear head (PyTorch ``nn.Linear`` initialisation, logits dropped
   at 0.2 while it trains) retrained for 8 epochs at batch 1000, same optimiser and schedule, on
   the frozen encoder, run as their notebook ran it (``probe_encoder_mode="authors"``): for
   0 < f < 1 the encoder is reloaded from its checkpoint, which leaves it in PyTorch's training
   mode while the probe trains (dropout, batch statistics, BatchNorm averages refreshed), and
   the f=0 and f=1 encoders are probed in evaluation mode; the test accuracy after the last
   epoch (evaluation mode). Differences: the images are rendered here (the dSprites file is not bundled), with
   shapes drawn to the same grid but not pixel-identical; minibatches drawn independently per
   step, ``ceil(n / 1000)`` steps an epoch (theirs: a permutation per epoch ending in a partial
   batch); ``size`` and ``latents`` select smaller, faster images (see the measurements).
2. Mid-range logits: bins over the whole range of one class's logit on unbiased images, with
   exemplars per bin and per-bin statistics of shape and position; the same scores for every
   penultimate unit.
3. Curation and retraining on the group benchmark (its own images, ``group_size`` and
   ``group_latents``: 20-pixel continuous shapes; 95 % aligned training set; a held-out pool
   from the same biased distribution; group-balanced validation and test sets): ERM vs MID
   (cross-class curation of the pool from mid-range logits, no group labels) vs DFR (the
   reference protocol, group labels), with the old own-class rule and retraining on the whole
   pool as ablations. Reported: the minority share of each retraining set, worst-group and
   mean accuracy over seeds.

The scorecard (``claims``) compares the accuracy-vs-f curve point by point with the published
one (within ``CURVE_TOLERANCE``) and tests whether MID raises worst-group accuracy over ERM
(one-sided Wilcoxon signed-rank over seeds).

Measured on CPU, 2026-12-01/02, seed 0.

- Curve with the defaults (the authors' protocol on 64-pixel binary dSprites-grid images), one
  model per f, seed 0: for each F, in its own process, ``_accuracy_vs_f(Config(fractions=(F,),
  seeds=1, analysis_fraction=F, seed=0), named_key(jax.random.key(0), "curve"), bar)`` (19 to
  52 minutes per model on the shared 2-core machine). The 8-epoch probe as the defaults run
  it; in brackets the probe with the encoder in evaluation mode, and the network's own head:

  ======  =====================  ===========
  f       ours                   published
  ======  =====================  ===========
  0       0.777 (0.777; 0.785)   0.827
  0 (s1)  0.883 (0.883; 0.882)   0.827
  0.1     0.891 (0.912; 0.915)   0.833
  0.2     0.894 (0.913; 0.916)   0.864
  0.5     0.947 (0.958; 0.952)   0.879
  1       0.347 (0.347; 0.347)   0.340
  ======  =====================  ===========

  A second seed at f=0 (seed 1: ``named_key(key, "data", 1)``, ``named_key(key, "train", 1,
  0)``) gives 0.883: the two seeds are 10.6 points apart and their mean, 0.830, is 0.3 points
  from the published 82.7 (the authors' seeds span 80.9 to 86.6), so one seed per point is not
  enough to place a point against the tolerance. Single seeds against ``CURVE_TOLERANCE``:
  inside at f=0.2 (+3.0 points) and f=1 (+0.7, chance); f=0 seed 0 on its edge (-5.0; the own
  head 78.5 against the authors' 78.2, their seed 4), seed 1 above it (+5.6); f=0.1 (+5.8) and f=0.5
  (+6.8) above it (the authors' five seeds span 80.2 to 85.5 and 83.8 to 90.3 there). The
  training-mode probe of the defaults is 1.1 to 2.1 points below the evaluation-mode one. Our
  networks fit their training sets as theirs do (f=0.5: 99.8 % against 99.78 %), but gain more
  from the biased images: their own heads at f=0.1 and f=0.2 are 69.8 and 75.8 (training
  accuracy 88 % and 89 %), ours 91.5 and 91.6 (98.7 % and 98.8 %).
- The rendering decides the difficulty. Same protocol, f=0: anti-aliased 64-pixel dSprites-grid
  images give 0.945 (0.965), 17 points easier than the binary ones; anti-aliased 32-pixel grid
  images 0.622 (0.634). On 20-pixel anti-aliased continuous shapes rotated within +/-30
  degrees (``size=20, latents="continuous"``, the default before; its unbiased part then
  disjoint from the biased one): f=0 0.913 (0.907), f=0.2 0.949 (0.947), f=0.5 0.975 (0.975),
  8.6 to 9.6 points above the paper.
- Before the LeNet took PyTorch's initialisation and dropped its logits (20-pixel continuous
  shapes, dropout 0.2 before the BatchNorms only): f=0 0.873 (0.834), f=0.1 0.901 (0.887), f=0.2
  0.921 (0.915), f=0.3 0.935 (0.937), f=0.4 0.928 (0.923), f=0.5 0.935 (0.933), f=1 0.345
  (0.345); without dropout 6 to 9 points above the paper; with Flax's initialisation and
  dropout 0.2 the encoder did not learn 32-pixel dSprites-grid shapes in 80 epochs (f=0 0.423).
- Curve with the earlier protocol (``model="small"``, ``batch_size=64``, ``learning_rate=5e-3``,
  ``epochs=48``, ``probe_epochs=100``, ``n_unbiased=1500``, 20-pixel continuous shapes), linear
  probe (network's own head): f=0 0.876 (0.875), f=0.3 0.930 (0.937), f=0.5 0.952 (0.952), f=1
  0.338 (0.337).
- Group benchmark (its own training settings, ``group_*``; worst group, mean +/- sd over 5
  seeds): ERM 0.104 +/- 0.045, MID 0.018 +/- 0.025, DFR 0.556 +/- 0.082 (mean accuracy 0.663,
  0.665, 0.782). **MID does not beat ERM** on
  the worst group here (lower on every seed), although its curation finds minority samples
  without group labels: 20 % of its candidates and 10.8 % of its retraining set are minority
  samples against 5.0 % of the pool (the old own-class rule keeps 0.8 %). A twofold enrichment
  on ~580 samples is not enough for an L1 last layer to drop the position cue; DFR's
  group-balanced set is two-thirds minority. (DFR here standardised with the curation pool's
  features, drawn from the same distribution as the training set.)
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp.datasets.shapes import (
    BANDS, LATENTS, N_GROUPS, SHAPE_NAMES, ShapesData, bias_sweep, load_shapes_groups, make_shapes,
)
from jaxinterp.keys import named_key
from jaxinterp.studies.base import Study, StudyConfig, numpy_rng, progress_enabled
from jaxinterp.studies.claims import Claim, paired_ordering, within

NAME = "midrange"
PUBLISHED_F = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
PUBLISHED_ACC = (82.7, 83.3, 86.4, 87.1, 88.0, 87.9, 81.6, 73.5, 63.0, 47.1, 34.0)
#: A curve point reproduces the paper when our seed mean is within 5 accuracy points of it.
CURVE_TOLERANCE = 0.05
METHODS = ("erm", "mid", "dfr", "mid_own_class", "all")
REPORTED = ("erm", "mid", "dfr")


@dataclasses.dataclass(frozen=True)
class Config(StudyConfig):
    """Settings of the ``midrange`` study.

    Attributes:
      fractions: bias fractions f of the accuracy-vs-f curve.
      seeds: models per bias fraction.
      n_unbiased: the fixed part of the training set (``size_schedule="authors"``), or the
        training-set size (``"fixed"``). 5640 is the authors' count: their 19000 training images
        (95 % of 20000 dSprites images) keep 5640 after the position filter.
      size_schedule: ``"authors"`` (n / max(f, 1 - f)) or ``"fixed"`` (every set n_unbiased).
      n_test: unbiased test images.
      model: ``"lenet"``, the authors' encoder (``jaxinterp.midrange.lenet.LeNet``: two 5 x 5
        conv blocks of 6 and 16 channels with average pooling, dense 120 and 84, a ReLU feature
        layer of ``feat_size``, an affine-free BatchNorm after each), or ``"small"``, the
        earlier max-pooled CNN of ``channels`` and ``hidden``.
      feat_size: width of the LeNet feature layer (the authors' 84).
      batch_norm: the LeNet's affine-free BatchNorms (the authors' encoder has them; batch
        statistics while it trains, running averages when frozen). ``False`` drops them.
      dropout: drop probability of the LeNet's dropout before each BatchNorm and on its logits
        while it trains, and of the probe's logits (the authors' notebook trains
        ``EncoderCore(dropout=True, dropout_level=0.2)`` and its classifiers
        ``nn.Sequential(nn.Linear, nn.Dropout(0.2))``; 0 drops the dropout layers).
      epochs: training epochs of the curve's networks (the authors' 80).
      lr_period_epochs: the LeNet's and the probe's Adam learning rate follows the authors'
        ``CosineAnnealingLR(T_max=lr_period_epochs)``, stepped per epoch (after 80 of 100
        epochs it is at 9.5 % of the peak). The ``"small"`` CNN's schedule decays to 0 over its run.
      batch_size: minibatch size of the curve's networks and of the probe (the authors' 1000).
      learning_rate: peak learning rate of the curve's networks (the authors' 1e-3).
      probe_epochs: epochs of the linear head (initialised as PyTorch's ``nn.Linear``) retrained
        on the frozen encoder's features, Adam 1e-3 at ``batch_size`` with the cosine schedule
        (the authors' 8 epochs at batch 1000).
      probe_standardize: standardise the probe's features with the training features' mean and
        standard deviation. ``None`` (default): only for an encoder without a final BatchNorm
        (``model="small"`` or ``batch_norm=False``); the authors' features come out of an
        affine-free BatchNorm in evaluation mode, which does the standardising.
      probe_encoder_mode: how the frozen encoder runs while the probe trains
        (``jaxinterp.midrange.probe``). ``"eval"``: evaluation mode, fixed features. ``"train"``:
        training mode (dropout, batch statistics, BatchNorm averages refreshed by the probe's
        steps), as the authors' ``train_classifier`` leaves an encoder loaded from its checkpoint.
        ``"authors"`` (default): what their notebook ran, ``"train"`` for 0 < f < 1 (encoders
        reloaded before probing) and ``"eval"`` for f = 0 and f = 1 (probed in the process that
        trained them); ``"eval"`` wherever the encoder has no training mode (``model="small"``).
      size: image size in pixels of the curve's and the analysis' images (dSprites' 64). A
        LeNet needs at least 16; at 64 pixels one curve network takes 20-50 minutes on 2 CPU
        cores (``size=20, latents="continuous"`` takes 1-3, on an easier task: see above).
      max_rotation: with ``latents="continuous"``, rotations are uniform in [-max_rotation,
        max_rotation] radians (``None``: 30 degrees). Must be ``None`` with ``latents="dsprites"``.
      latents: ``"dsprites"`` (default: dSprites' grid, 32 positions per axis, 6 scales in [0.5,
        1], 40 orientations over the full circle, binary images) or ``"continuous"`` (scales
        uniform in [0.6, 1], continuous positions, rotations from ``max_rotation``,
        anti-aliased); see ``jaxinterp.datasets.shapes``.
      channels: conv channels of the ``"small"`` CNN.
      hidden: penultimate width of the ``"small"`` CNN.
      group_size, group_latents, group_max_rotation: the group benchmark's images (``size``,
        ``latents`` and ``max_rotation`` for its data).
      group_model, group_epochs, group_batch_size, group_learning_rate: training of the group
        benchmark's ERM network. The paper publishes no protocol for this benchmark (the
        authors' code has the dSprites curve only); these are the settings its recorded numbers
        were measured with (the small CNN, 48 epochs at batch 64, peak learning rate 5e-3).
      group_seeds: seeds of the group benchmark.
      n_train: group benchmark: images the ERM model is trained on.
      n_pool: group benchmark: held-out images of the training distribution, MID's curation pool.
      n_val: group benchmark: group-balanced held-out set (DFR's).
      n_group_test: group benchmark: group-balanced test set.
      aligned_fraction: group benchmark: aligned share of the training distribution.
      curation_pool: ``"heldout"`` (the pool) or ``"train"`` (the ERM model's own training set).
      n_bins: quantile bins per class logit for the curation.
      select_first: first selected bin (the selection is bins select_first .. n_bins - 1).
      reference: bins over the ``"others"`` classes' samples or over ``"all"`` samples.
      rest_ratio: size of the class-balanced draw of non-candidates, relative to the candidates.
      C: inverse L1 strength of the MID (and ablation) last layers.
      dfr_retrains: DFR's group-balanced draws whose coefficients are averaged.
      analysis_fraction: bias fraction of the model whose logits are binned.
      analysis_class: class whose logit is binned.
      n_exemplars: exemplars per bin.
    """

    fractions: tuple[float, ...] = PUBLISHED_F
    seeds: int = 5
    n_unbiased: int = 5640
    size_schedule: Literal["authors", "fixed"] = "authors"
    n_test: int = 1500
    model: Literal["lenet", "small"] = "lenet"
    feat_size: int = 84
    batch_norm: bool = True
    dropout: float = 0.2
    epochs: int = 80
    lr_period_epochs: int = 100
    batch_size: int = 1000
    learning_rate: float = 1e-3
    probe_epochs: int = 8
    probe_standardize: bool | None = None
    probe_encoder_mode: Literal["authors", "eval", "train"] = "authors"
    size: int = 64
    max_rotation: float | None = None
    latents: Literal["continuous", "dsprites"] = "dsprites"
    channels: tuple[int, ...] = (8, 16)
    hidden: int = 32
    group_size: int = 20
    group_latents: Literal["continuous", "dsprites"] = "continuous"
    group_max_rotation: float | None = None
    group_model: Literal["lenet", "small"] = "small"
    group_epochs: int = 48
    group_batch_size: int = 64
    group_learning_rate: float = 5e-3
    group_seeds: int = 5
    n_train: int = 2000
    n_pool: int = 1500
    n_val: int = 900
    n_group_test: int = 900
    aligned_fraction: float = 0.95
    curation_pool: Literal["heldout", "train"] = "heldout"
    n_bins: int = 10
    select_first: int = 9
    reference: Literal["others", "all"] = "others"
    rest_ratio: float = 1.0
    C: float = 1.0
    dfr_retrains: int = 20
    analysis_fraction: float = 0.5
    analysis_class: int = 0
    n_exemplars: int = 6

    @classmethod
    def quick(cls) -> Config:
        """Three fractions, one seed, small sets (about a minute on an idle CPU).

        The curve's networks are the small CNN trained 12 epochs at batch 64 with a 100-epoch
        probe: the paper's protocol (80 epochs at batch 1000) takes a few hundred steps per
        network, too many for a one-minute run, and a few dozen leave it untrained.
        """
        return cls(fractions=(0.0, 0.5, 1.0), seeds=1, n_unbiased=400, n_test=600, size=20, latents="continuous",
                   model="small", epochs=12,
                   batch_size=64, learning_rate=5e-3, probe_epochs=100, group_seeds=2, group_epochs=12,
                   n_train=900, n_pool=900, n_val=270, n_group_test=270, dfr_retrains=5)

    def validate(self) -> None:
        """Positive sizes, fractions in [0, 1] including the analysis fraction, a valid bin selection."""
        super().validate()
        for name in ("seeds", "n_unbiased", "n_test", "epochs", "lr_period_epochs", "batch_size", "probe_epochs",
                     "hidden", "feat_size",
                     "group_epochs", "group_batch_size",
                     "group_seeds", "n_train", "n_pool", "n_val", "n_group_test", "n_bins", "dfr_retrains",
                     "n_exemplars"):
            if getattr(self, name) <= 0:
                raise ValueError(f"`{name}` must be positive; got {getattr(self, name)}.")
        if not self.fractions or not all(0.0 <= f <= 1.0 for f in self.fractions):
            raise ValueError(f"`fractions` must be a non-empty list in [0, 1]; got {self.fractions}.")
        if not 0.0 <= self.analysis_fraction <= 1.0:
            raise ValueError(f"`analysis_fraction` must lie in [0, 1]; got {self.analysis_fraction}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"`dropout` must lie in [0, 1); got {self.dropout}.")
        if not 0.0 <= self.aligned_fraction <= 1.0:
            raise ValueError(f"`aligned_fraction` must lie in [0, 1]; got {self.aligned_fraction}.")
        if not 0 <= self.select_first < self.n_bins:
            raise ValueError(f"`select_first` must lie in [0, n_bins={self.n_bins}); got {self.select_first}.")
        if not 0 <= self.analysis_class < len(SHAPE_NAMES):
            raise ValueError(f"`analysis_class` must lie in [0, {len(SHAPE_NAMES)}); got {self.analysis_class}.")
        if self.learning_rate <= 0 or self.group_learning_rate <= 0 or self.C <= 0 or self.rest_ratio < 0:
            raise ValueError("`learning_rate`, `group_learning_rate` and `C` must be positive and `rest_ratio` "
                             f"non-negative; got {self.learning_rate}, {self.group_learning_rate}, {self.C}, "
                             f"{self.rest_ratio}.")
        for prefix, model in (("", self.model), ("group_", self.group_model)):
            size, latents, rotation = (getattr(self, prefix + name) for name in ("size", "latents", "max_rotation"))
            min_size = 16 if model == "lenet" else 8
            if size < min_size:
                raise ValueError(f"`{prefix}size` must be >= {min_size} pixels for a {model!r} model; got {size}.")
            if latents not in LATENTS:
                raise ValueError(f"`{prefix}latents` must be one of {LATENTS}; got {latents!r}.")
            if rotation is not None and (latents == "dsprites" or not 0.0 <= rotation <= np.pi):
                raise ValueError(f"`{prefix}max_rotation` must lie in [0, pi] (and be None with "
                                 f"{prefix}latents='dsprites'); got {rotation}.")
        if self.probe_encoder_mode not in ("authors", "eval", "train"):
            raise ValueError("`probe_encoder_mode` must be 'authors', 'eval' or 'train'; got "
                             f"{self.probe_encoder_mode!r}.")
        if self.probe_encoder_mode == "train" and self.model != "lenet":
            raise ValueError(f"`probe_encoder_mode='train'` needs model='lenet' (the {self.model!r} CNN has no "
                             "training mode).")
        if self.probe_encoder_mode == "train" and self.probe_standardize:
            raise ValueError("`probe_standardize=True` needs fixed features: probe_encoder_mode 'eval' or 'authors'.")
        if not isinstance(self.batch_norm, bool) or self.probe_standardize not in (None, True, False):
            raise TypeError("`batch_norm` must be a bool and `probe_standardize` a bool or None; got "
                            f"{self.batch_norm!r} and {self.probe_standardize!r}.")


class Result(NamedTuple):
    """What ``compute`` returns.

    Attributes:
      config: the settings.
      accuracy: ``[seeds, n_fractions]`` unbiased test accuracy (linear probe).
      accuracy_end_to_end: ``[seeds, n_fractions]`` the trained network's own test accuracy.
      train_sizes: ``[n_fractions]`` training-set sizes.
      test: the unbiased test set of the curve.
      logits, features: ``[n_test, 3]`` and ``[n_test, hidden]`` of the analysis model.
      analysis: the mid-range logit analysis (``_logit_analysis``).
      groups: ``{method: {"worst", "mean": [group_seeds], "per_group": [group_seeds, 9],
        "n_fit": [group_seeds]}}``.
      minority: ``{"pool", "mid", "mid_own_class", "mid_candidates": [group_seeds]}`` minority shares.
    """

    config: Config
    accuracy: np.ndarray
    accuracy_end_to_end: np.ndarray
    train_sizes: np.ndarray
    test: ShapesData
    logits: np.ndarray
    features: np.ndarray
    analysis: dict[str, Any]
    groups: dict[str, dict[str, np.ndarray]]
    minority: dict[str, np.ndarray]


# ---------------------------------------------------------------------------------- training

def _int_seed(key) -> int:
    """A dataset seed drawn from a key (the shapes generators take integer seeds)."""
    return int(numpy_rng(key).integers(2**31 - 1))


def _model(cfg: Config, kind: str | None = None):
    """The curve's network (``cfg.model``), or the ``kind`` given (``"lenet"`` or ``"small"``)."""
    from jaxinterp.midrange.lenet import LeNet
    from jaxinterp.models import CNN

    if (kind or cfg.model) == "lenet":
        return LeNet(feat_size=cfg.feat_size, n_classes=len(SHAPE_NAMES), batch_norm=cfg.batch_norm,
                     dropout=cfg.dropout)
    return CNN(channels=cfg.channels, hidden=cfg.hidden, n_classes=len(SHAPE_NAMES))


def _images(cfg: Config, *, group: bool = False) -> dict[str, Any]:
    """The shapes samplers' image settings (``size``, ``max_rotation``, ``latents``): the curve's,
    or the group benchmark's (``group``)."""
    if group:
        return dict(size=cfg.group_size, max_rotation=cfg.group_max_rotation, latents=cfg.group_latents)
    return dict(size=cfg.size, max_rotation=cfg.max_rotation, latents=cfg.latents)


def _steps(n: int, epochs: int, batch_size: int) -> int:
    return max(1, int(np.ceil(epochs * n / batch_size)))


def _fit(cfg: Config, data: ShapesData, key, *, group: bool = False):
    """Train a network on ``data``: the curve's settings, or the group benchmark's (``group``).

    The LeNet trains with ``jaxinterp.midrange.training.train_epochs`` (BatchNorm statistics,
    the authors' per-epoch cosine schedule); the small CNN with ``models.train_classifier``.
    Returns the network's variables.
    """
    from jaxinterp.midrange.training import train_epochs
    from jaxinterp.models import train_classifier

    kind, epochs, bs, lr = ((cfg.group_model, cfg.group_epochs, cfg.group_batch_size, cfg.group_learning_rate)
                            if group else (cfg.model, cfg.epochs, cfg.batch_size, cfg.learning_rate))
    bs = min(bs, len(data.y))
    if kind == "lenet":
        return train_epochs(_model(cfg, kind), data.x, data.y, key=key, epochs=epochs, batch_size=bs,
                            learning_rate=lr, period_epochs=cfg.lr_period_epochs)[0]
    params, _ = train_classifier(_model(cfg, kind), data.x, data.y, key=key, steps=_steps(len(data.y), epochs, bs),
                                 batch_size=bs, learning_rate=lr)
    return params


def _outputs(cfg: Config, params, x, *, group: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Logits ``[n, 3]`` and penultimate features ``[n, width]`` of a whole split (BatchNorms in
    evaluation mode)."""
    model = _model(cfg, cfg.group_model if group else cfg.model)
    logits, feats = model.apply(params, jnp.asarray(x), return_features=True)
    return np.asarray(logits), np.asarray(feats)


def _probe_standardizes(cfg: Config) -> bool:
    """Whether the probe standardises its features (``cfg.probe_standardize``; ``None``: only
    without a final BatchNorm)."""
    if cfg.probe_standardize is not None:
        return cfg.probe_standardize
    return not (cfg.model == "lenet" and cfg.batch_norm)


def _probe_mode(cfg: Config, fraction: float) -> str:
    """``"eval"`` or ``"train"``: how the curve's encoder for bias fraction ``fraction`` runs while
    its probe trains (``cfg.probe_encoder_mode``; ``"authors"`` resolves as their notebook ran;
    always ``"eval"`` for the small CNN, which has no training mode, and for standardised features)."""
    mode = cfg.probe_encoder_mode
    if mode == "authors":
        mode = "train" if 0.0 < fraction < 1.0 else "eval"
    return mode if cfg.model == "lenet" and not cfg.probe_standardize else "eval"


def linear_probe_accuracy(cfg: Config, train_feats, train_y, test_feats, test_y, key) -> float:
    """Accuracy of a linear head trained on frozen features.

    The authors' protocol: a fresh head initialised as PyTorch's ``nn.Linear`` whose logits are
    dropped at ``cfg.dropout`` while it trains (``jaxinterp.midrange.lenet.LinearHead``), Adam 1e-3 with
    their per-epoch cosine schedule (``T_max`` 100 epochs), ``cfg.probe_epochs`` epochs at
    ``cfg.batch_size``, on the features of the frozen encoder (its BatchNorms in evaluation
    mode); test accuracy after the last epoch. Features are standardised first when
    ``cfg.probe_standardize`` says so (by default, only for an encoder without BatchNorm).

    Args:
      cfg: the study settings (``probe_epochs``, ``batch_size``, ``lr_period_epochs``,
        ``probe_standardize``, ``dropout``).
      train_feats, test_feats: ``[n_train, d]`` and ``[n_test, d]`` frozen features.
      train_y, test_y: ``[n_train]`` and ``[n_test]`` integer labels.
      key: PRNG key of the head's initialisation and minibatches.

    Returns:
      Test accuracy in [0, 1].
    """
    from jaxinterp.midrange.probe import head_accuracy

    return head_accuracy(train_feats, train_y, test_feats, test_y, key=key, epochs=cfg.probe_epochs,
                         batch_size=cfg.batch_size, dropout=cfg.dropout, period_epochs=cfg.lr_period_epochs,
                         standardize=_probe_standardizes(cfg))


def _probe(cfg: Config, fraction: float, params, data: ShapesData, test: ShapesData, test_feats, key) -> float:
    """The probe's unbiased test accuracy for the encoder ``params`` trained on ``data``."""
    if _probe_mode(cfg, fraction) == "eval":
        return linear_probe_accuracy(cfg, _outputs(cfg, params, data.x)[1], data.y, test_feats, test.y, key)
    from jaxinterp.midrange.probe import probe_accuracy

    return probe_accuracy(_model(cfg), params, data.x, data.y, test.x, test.y, key=key, encoder_mode="train",
                          epochs=cfg.probe_epochs, batch_size=cfg.batch_size, dropout=cfg.dropout,
                          period_epochs=cfg.lr_period_epochs)


def _accuracy_vs_f(cfg: Config, key, bar) -> dict[str, Any]:
    test = make_shapes(cfg.n_test, bias_fraction=0.0, seed=_int_seed(named_key(key, "test")), **_images(cfg))
    fractions = list(cfg.fractions)
    probe = np.zeros((cfg.seeds, len(fractions)))
    own = np.zeros_like(probe)
    sizes = np.zeros(len(fractions), int)
    kept = None
    analysis_in_sweep = any(abs(f - cfg.analysis_fraction) < 1e-9 for f in fractions)
    for s in range(cfg.seeds):
        sets = bias_sweep(fractions, n=cfg.n_unbiased, seed=_int_seed(named_key(key, "data", s)), **_images(cfg),
                          schedule=cfg.size_schedule)
        for i, (f, data) in enumerate(zip(fractions, sets)):
            params = _fit(cfg, data, named_key(key, "train", s, i))
            logits, feats = _outputs(cfg, params, test.x)
            own[s, i] = float(np.mean(logits.argmax(-1) == test.y))
            probe[s, i] = _probe(cfg, f, params, data, test, feats, named_key(key, "probe", s, i))
            sizes[i] = len(data.y)
            if s == 0 and abs(f - cfg.analysis_fraction) < 1e-9:
                kept = (logits, feats)
            bar.update(1)
    if not analysis_in_sweep:  # the analysis fraction is not in the sweep: train it once more
        data = bias_sweep([cfg.analysis_fraction], n=cfg.n_unbiased, seed=_int_seed(named_key(key, "data", 0)),
                          **_images(cfg), schedule=cfg.size_schedule)[0]
        kept = _outputs(cfg, _fit(cfg, data, named_key(key, "train", "analysis")), test.x)
    return dict(probe=probe, own=own, sizes=sizes, test=test, logits=kept[0], features=kept[1])


# ---------------------------------------------------------------------------------- analysis

def _logit_analysis(cfg: Config, key, test: ShapesData, logits, feats) -> dict[str, Any]:
    from jaxinterp.midrange import attribute_stats, range_analysis, unit_attribute_scores

    c, n_bins = cfg.analysis_class, cfg.n_bins
    ra = range_analysis(logits[:, c], {"shape": test.y, "band": test.band}, n_bins=n_bins,
                        n_exemplars=cfg.n_exemplars, key=named_key(key, "exemplars"))
    other = test.y != c
    band_other = attribute_stats(ra.bins[other], test.band[other], n_bins)
    fb = np.asarray(band_other.frequencies)
    # fraction of non-target inputs in the target's own band, per bin (chance 1/3)
    own_band = fb[:, list(band_other.values).index(c)] if c in band_other.values else np.zeros(n_bins)
    label_freq = np.asarray(ra.attributes["shape"].frequencies)[:, c]
    units_band = unit_attribute_scores(feats, test.band, n_bins=n_bins)
    units_shape = unit_attribute_scores(feats, test.y, n_bins=n_bins)
    alive = ~np.asarray(units_band.constant)
    thresh = 0.01 / max(int(alive.sum()), 1)  # Bonferroni over live units
    return dict(
        ra=ra, own_band=own_band, label_freq=label_freq, units_band=units_band, units_shape=units_shape,
        metrics=dict(
            model_bias_fraction=cfg.analysis_fraction, logit_class=SHAPE_NAMES[c],
            bin_edges=ra.edges, bin_counts=ra.counts,
            target_fraction_per_bin=label_freq,
            nontarget_own_band_fraction_per_bin=own_band,
            top_bin_target_fraction=float(label_freq[-1]),
            mid_bins_nontarget_own_band_fraction=float(np.mean(own_band[2:-2])) if n_bins > 4 else None,
            mi_bin_shape=float(ra.attributes["shape"].mutual_information),
            mi_bin_band=float(ra.attributes["band"].mutual_information),
            mi_bin_band_nontarget=float(band_other.mutual_information),
            chi2_p_band_nontarget=float(band_other.chi2.p_value),
            penultimate_units_alive=int(alive.sum()),
            penultimate_units_band_significant=int(np.sum(alive & (np.asarray(units_band.p_value) < thresh))),
            penultimate_units_shape_significant=int(np.sum(alive & (np.asarray(units_shape.p_value) < thresh))),
        ),
    )


def _group_seed(cfg: Config, key) -> tuple[dict[str, Any], dict[str, float]]:
    """One group-benchmark seed: ERM on the training part, then every method on the test set."""
    from jaxinterp.midrange import Split, compare_methods, curate

    bench = load_shapes_groups(_int_seed(named_key(key, "data")), aligned_fraction=cfg.aligned_fraction,
                               n_train=cfg.n_train + cfg.n_pool, n_val=cfg.n_val, n_test=cfg.n_group_test,
                               **_images(cfg, group=True))
    train, pool = bench.train.subset(slice(0, cfg.n_train)), bench.train.subset(slice(cfg.n_train, None))
    if cfg.curation_pool == "train":
        pool = train
    params = _fit(cfg, train, named_key(key, "train"), group=True)
    splits = {}
    for name, d in (("pool", pool), ("val", bench.val), ("test", bench.test)):
        logits, feats = _outputs(cfg, params, d.x, group=True)
        splits[name] = Split(feats, logits, d.y, None if name == "pool" else d.group)
    curation = dict(n_bins=cfg.n_bins, select=(cfg.select_first, cfg.n_bins), reference=cfg.reference,
                    rest_ratio=cfg.rest_ratio)
    train_features = (splits["pool"].features if cfg.curation_pool == "train"
                      else _outputs(cfg, params, train.x, group=True)[1])
    res = compare_methods(splits["pool"], splits["val"], splits["test"], key=named_key(key, "methods"),
                          n_groups=N_GROUPS, C=cfg.C, curation=curation, dfr_retrains=cfg.dfr_retrains,
                          dfr_scaler_features=train_features, methods=METHODS)
    minority = ~pool.biased
    cand = curate(splits["pool"].logits, pool.y, key=named_key(key, "methods", "mid"), **curation).candidates
    shares = dict(pool=float(minority.mean()), mid=float(minority[res["mid"].indices].mean()),
                  mid_own_class=float(minority[res["mid_own_class"].indices].mean()),
                  mid_candidates=float(minority[cand].mean()) if cand.any() else float("nan"))
    return res, shares


def _group_benchmark(cfg: Config, key, bar) -> tuple[dict, dict]:
    runs = []
    for s in range(cfg.group_seeds):
        runs.append(_group_seed(cfg, named_key(key, s)))
        bar.update(1)
    groups = {m: dict(worst=np.array([r[m].metrics.worst_group for r, _ in runs]),
                      mean=np.array([r[m].metrics.mean_accuracy for r, _ in runs]),
                      per_group=np.array([r[m].metrics.per_group for r, _ in runs]),
                      n_fit=np.array([r[m].n_fit for r, _ in runs]))
              for m in METHODS}
    minority = {k: np.array([sh[k] for _, sh in runs]) for k in runs[0][1]}
    return groups, minority


def compute(config: Config, key) -> Result:
    """Accuracy vs f, the mid-range logit analysis, and ERM / MID / DFR on the group benchmark."""
    from jaxinterp._progress import progress_bar

    total = config.seeds * len(config.fractions) + config.group_seeds
    with progress_bar(total=total, desc="midrange: training CNNs", disable=not progress_enabled()) as bar:
        sweep = _accuracy_vs_f(config, named_key(key, "curve"), bar)
        groups, minority = _group_benchmark(config, named_key(key, "groups"), bar)
    analysis = _logit_analysis(config, named_key(key, "analysis"), sweep["test"], sweep["logits"], sweep["features"])
    return Result(config, sweep["probe"], sweep["own"], sweep["sizes"], sweep["test"], sweep["logits"],
                  sweep["features"], analysis, groups, minority)


# ---------------------------------------------------------------------------------- views

def _std(a) -> float:
    a = np.asarray(a, float)
    return float(a.std(ddof=1)) if a.size > 1 else 0.0


def metrics(result: Result) -> dict:
    """The curve, the logit analysis, the group benchmark and the curated sets' minority shares."""
    g, acc = result.groups, result.accuracy
    return dict(
        bias_fraction=list(result.config.fractions),
        train_size=result.train_sizes,
        unbiased_accuracy=acc.mean(0),
        unbiased_accuracy_std=[_std(a) for a in acc.T],
        unbiased_accuracy_per_seed=acc,
        unbiased_accuracy_end_to_end=result.accuracy_end_to_end.mean(0),
        probe_encoder_mode=[_probe_mode(result.config, f) for f in result.config.fractions],
        published_unbiased_accuracy=[a / 100 for a in PUBLISHED_ACC],
        worst_group_accuracy={m: float(g[m]["worst"].mean()) for m in METHODS},
        worst_group_accuracy_std={m: _std(g[m]["worst"]) for m in METHODS},
        worst_group_accuracy_per_seed={m: g[m]["worst"] for m in METHODS},
        mean_accuracy={m: float(g[m]["mean"].mean()) for m in METHODS},
        mean_accuracy_std={m: _std(g[m]["mean"]) for m in METHODS},
        per_group_accuracy={m: np.nanmean(g[m]["per_group"], axis=0) for m in METHODS},
        retraining_set_size={m: float(g[m]["n_fit"].mean()) for m in METHODS},
        minority_share={k: float(np.nanmean(v)) for k, v in result.minority.items()},
        minority_share_per_seed=result.minority,
        mid_beats_erm_worst_group=bool(g["mid"]["worst"].mean() > g["erm"]["worst"].mean()),
        midrange_logit=result.analysis["metrics"],
    )


def summary(result: Result) -> dict:
    """Curve end points, worst-group accuracy per method and the curated minority share."""
    g, acc, sh = result.groups, result.accuracy.mean(0), result.minority
    return {
        "unbiased acc (probe) first / last f": f"{acc[0]:.3f} / {acc[-1]:.3f}",
        "worst group ERM / MID / DFR": " / ".join(f"{g[m]['worst'].mean():.3f}" for m in REPORTED),
        "mean acc ERM / MID / DFR": " / ".join(f"{g[m]['mean'].mean():.3f}" for m in REPORTED),
        "minority share pool / MID set": f"{np.nanmean(sh['pool']):.3f} / {np.nanmean(sh['mid']):.3f}",
    }


def claims(result: Result) -> list[Claim]:
    """Each published curve point (within ``CURVE_TOLERANCE``) and MID > ERM on the worst group."""
    rows = []
    for i, f in enumerate(result.config.fractions):
        match = [j for j, p in enumerate(PUBLISHED_F) if abs(p - f) < 1e-9]
        if match:
            paper = PUBLISHED_ACC[match[0]] / 100
            rows.append(within(f"unbiased test accuracy at bias fraction f={f:g} (linear probe)", paper,
                               result.accuracy[:, i], tolerance=CURVE_TOLERANCE, figure="accuracy_vs_f"))
    g = result.groups
    rows.append(paired_ordering("retraining the last layer on MID-curated data raises worst-group accuracy "
                                "over ERM", g["mid"]["worst"], g["erm"]["worst"],
                                paper_value="MID > ERM (worst group)", figure="worst_group"))
    return rows


def _fig_accuracy(result: Result):
    from jaxinterp.plotting import subplots

    fig, ax = subplots(figsize=(6, 3.8))
    f, acc = np.array(result.config.fractions), result.accuracy
    ax.errorbar(f, 100 * acc.mean(0), yerr=100 * np.array([_std(a) for a in acc.T]), marker="o", capsize=3,
                label=f"ours, linear probe ({acc.shape[0]} seed(s))")
    ax.plot(f, 100 * result.accuracy_end_to_end.mean(0), "^:", alpha=0.6, label="ours, end-to-end head")
    ax.plot(PUBLISHED_F, PUBLISHED_ACC, "s--", color="gray", alpha=0.7, label="published (5 seeds)")
    ax.axhline(100 / 3, color="k", lw=0.8, ls=":", label="chance")
    ax.set_xlabel("bias fraction f")
    ax.set_ylabel("unbiased test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8)
    ax.set_title("Shape accuracy vs fraction of position-biased training data", fontsize=9)
    return fig


def _fig_histogram(result: Result):
    from jaxinterp.plotting import subplots

    c, test, v = result.config.analysis_class, result.test, result.logits[:, result.config.analysis_class]
    fig, axes = subplots(1, 2, figsize=(11, 3.6))
    hist_bins = np.linspace(v.min(), v.max(), 40)
    for ax, attr, names, title in (
        (axes[0], test.y, SHAPE_NAMES, "coloured by shape"),
        (axes[1], test.band, [f"band {b} {BANDS[b]}" for b in range(3)], "coloured by x-position band"),
    ):
        ax.hist([v[attr == k] for k in range(3)], bins=hist_bins, stacked=True, label=list(names))
        for e in result.analysis["ra"].edges:
            ax.axvline(e, color="k", lw=0.6, alpha=0.6)
        ax.set_xlabel(f"'{SHAPE_NAMES[c]}' logit (lines: quantile bin edges)")
        ax.set_ylabel("test images")
        ax.set_title(f"{title} (model trained at f={result.config.analysis_fraction:g})", fontsize=9)
        ax.legend(fontsize=7)
    return fig


def _fig_bin_frequencies(result: Result):
    from jaxinterp.plotting import subplots

    c, la = result.config.analysis_class, result.analysis
    fig, ax = subplots(figsize=(6, 3.6))
    b = np.arange(result.config.n_bins)
    ax.plot(b, la["label_freq"], "o-", label=f"fraction that are {SHAPE_NAMES[c]}s")
    ax.plot(b, la["own_band"], "s-", label=f"non-{SHAPE_NAMES[c]}s in band {c} (the {SHAPE_NAMES[c]}'s band)")
    ax.axhline(1 / 3, color="k", lw=0.8, ls=":", label="1/3")
    ax.set_xlabel(f"quantile bin of the '{SHAPE_NAMES[c]}' logit (0 = lowest)")
    ax.set_ylabel("fraction within bin")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7)
    return fig


def _fig_exemplars(result: Result):
    from jaxinterp.plotting import subplots

    ex, test = result.analysis["ra"].exemplars, result.test
    nb, k = ex.shape
    fig, axes = subplots(nb, k, figsize=(k * 1.0, nb * 1.05), squeeze=False)
    for b in range(nb):
        row = nb - 1 - b  # highest bin on top
        for j in range(k):
            ax = axes[row, j]
            ax.set_xticks([])
            ax.set_yticks([])
            i = ex[b, j]
            if i >= 0:
                ax.imshow(test.x[i, ..., 0], cmap="gray", vmin=0, vmax=1)
                ax.set_title(f"{SHAPE_NAMES[test.y[i]][:3]} b{test.band[i]}", fontsize=6, pad=1)
            if j == 0:
                ax.set_ylabel(f"bin {b}", fontsize=7)
    fig.suptitle(f"Exemplars per quantile bin of the '{SHAPE_NAMES[result.config.analysis_class]}' logit "
                 "(top row = highest bin; title: shape, x band)", fontsize=8)
    return fig


def _fig_units(result: Result):
    from jaxinterp.plotting import subplots

    la = result.analysis
    fig, ax = subplots(figsize=(5, 3.8))
    mb, ms = np.asarray(la["units_band"].mutual_information), np.asarray(la["units_shape"].mutual_information)
    dead = np.asarray(la["units_band"].constant)
    ax.scatter(ms[~dead], mb[~dead], s=14, label="live units")
    if dead.any():
        ax.scatter(ms[dead], mb[dead], s=14, marker="x", color="gray", label="constant units")
    ax.set_xlabel("MI(unit bin; shape) [nats]")
    ax.set_ylabel("MI(unit bin; x band) [nats]")
    ax.set_title("Penultimate units, unbiased test set", fontsize=9)
    ax.legend(fontsize=7)
    return fig


def _fig_groups(result: Result):
    from jaxinterp.plotting import subplots

    g, sh, cfg = result.groups, result.minority, result.config
    fig, (ax, ax2) = subplots(1, 2, figsize=(12, 3.8), gridspec_kw=dict(width_ratios=[2.2, 1]))
    x = np.arange(N_GROUPS)
    w = 0.8 / len(METHODS)
    for i, m in enumerate(METHODS):
        worst = g[m]["worst"]
        ax.bar(x + (i - (len(METHODS) - 1) / 2) * w, 100 * np.nanmean(g[m]["per_group"], axis=0), w,
               label=f"{m}: worst {100 * worst.mean():.1f}+/-{100 * _std(worst):.1f}")
    ax.set_xticks(x, [f"{SHAPE_NAMES[k // 3][:3]}\nb{k % 3}" + ("*" if k // 3 == k % 3 else "")
                      for k in range(N_GROUPS)], fontsize=7)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"Per-group accuracy over {len(g['erm']['worst'])} seed(s) (* = aligned; training "
                 f"{100 * cfg.aligned_fraction:.0f}% aligned)", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    keys = ["pool", "mid_candidates", "mid", "mid_own_class"]
    ax2.bar(range(len(keys)), [100 * np.nanmean(sh[k]) for k in keys],
            yerr=[100 * _std(sh[k][np.isfinite(sh[k])]) for k in keys], capsize=3, color="tab:purple")
    ax2.set_xticks(range(len(keys)), ["curation pool", "MID candidates", "MID set", "own-class set"],
                   rotation=20, fontsize=7)
    ax2.set_ylabel("minority (bias-conflicting) share (%)")
    ax2.set_title("Who is in each retraining set", fontsize=9)
    return fig


def figures(result: Result) -> dict:
    """Curve, logit histogram, per-bin frequencies, exemplars, penultimate units, group benchmark."""
    return {"accuracy_vs_f": _fig_accuracy(result), "logit_histogram": _fig_histogram(result),
            "bin_frequencies": _fig_bin_frequencies(result), "exemplars": _fig_exemplars(result),
            "penultimate_units": _fig_units(result), "worst_group": _fig_groups(result)}


STUDY = Study(
    name=NAME,
    description="Mid-range activations: accuracy vs spurious-cue fraction, mid-range logits, MID curation vs ERM/DFR",
    config=Config,
    compute=compute,
    metrics=metrics,
    figures=figures,
    claims=claims,
    summary=summary,
)
