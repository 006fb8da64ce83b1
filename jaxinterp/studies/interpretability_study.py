"""Study ``interpretability``: neurons vs directions by the II and the in-silico 2AFC (Klindt et al. 2023).

A CNN is trained on the scikit-learn digits; each conv layer's channel vectors (post-ReLU,
averaged over positions) are the representation. Its neurons (channels) are compared with
K-means (two variants), PCA, FastICA, NMF and sparse-autoencoder directions of the same layer
(``jaxinterp.directions``), with as many directions as live (non-constant) channels (and 0.5x,
2x where the method allows it), and with random unit directions (the baseline that says what an
II value means on its own).

As in the authors' code (david-klindt/Superposition): directions are fitted on the training
split; the Interpretability Index (k = 5, all k x k pairs) is computed on the training split and
the 2AFC (their construction, q = 0 and 0.25) on the test split. Their 2AFC needs more than 800
test inputs inside the [q, 1 - q] range, more than the 450 test digits, so every digit also
appears shifted by up to ``shift`` pixels (zero fill; 9 copies for ``shift=1``); a digit and its
shifted copies are always on the same side of the split.

K-means variants: ``kmeans`` is jaxinterp's spherical K-means (unit-norm centroids,
projection of the normalised input); ``kmeans_authors`` follows the authors' code: minibatch
K-means (scikit-learn's ``MiniBatchKMeans``, batch 1024) on L2-normalised rows, centroids left
unnormalised, response = normalised input @ centroid.

The similarity is LPIPS-style, from a second, independently trained CNN (the "observer"). With
``observer_channels=()`` (the quick run) the studied network is its own observer: that is
circular (a unit is judged by features it feeds), so the run warns and says so in its metrics.

Checks that the scores mean something: planted units with known selectivity (responding to one
digit class, or to three) must be separated by both scores (``ground_truth_auc``); and a
simulated observer (the 2AFC with a pixel-L2 similarity, sampled trial by trial) is predicted by
the II as the IMI validation would be with human data (``observer_validation``; no human data is
used or available offline).

Measured with the default settings (seed 0; 20 minutes on two shared CPU cores): on ``Conv_1/relu``
(30 live channels) the median II is -0.495 for neurons, -0.378 for spherical K-means (one-sided
Mann-Whitney p = 0.024), -0.391 for the authors' K-means (p = 0.073) and -0.576 for random
directions; with twice as many directions K-means reaches -0.273 / -0.295. The 2AFC (q = 0) does
not separate them (neurons 0.931, K-means 0.932 / 0.922, random 0.928). On ``Conv_0/relu`` K-means
scores below the neurons (-0.653 / -0.684 vs -0.594). Planted units are separated with AUC 0.825
(II) and 0.912 (2AFC); the simulated observer's trial-level AUC is 0.577 (920 trials).
"""

from __future__ import annotations

import dataclasses
import itertools
import warnings
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp._warnings import CircularSimilarityWarning
from jaxinterp import datasets, models
from jaxinterp import directions as jd
from jaxinterp import interpretability as interp
from jaxinterp.capture import capture
from jaxinterp.interpretability import ground_truth as gt
from jaxinterp.interpretability import validation as val
from jaxinterp.keys import named_key
from jaxinterp.plotting import subplots
from jaxinterp.streaming import apply_in_batches, reduce_spatial
from jaxinterp.studies import claims as cl
from jaxinterp.studies.base import Study, StudyConfig, numpy_rng

NAME = "interpretability"
#: Everything scored; ``random`` is the baseline (random unit directions), not a method.
METHODS = ("neurons", "kmeans", "kmeans_authors", "pca", "ica", "nmf", "sae")
BASELINE = "random"
#: Methods that cannot give more directions than dimensions.
AT_MOST_D = ("pca", "ica")
#: The authors' normalisation floor (rows with a smaller norm are divided by it).
NORM_FLOOR = 1e-6


@dataclasses.dataclass(frozen=True)
class Config(StudyConfig):
    """Settings of the interpretability study.

    Attributes:
      seed: root PRNG seed.
      channels: conv channels of the studied CNN.
      observer_channels: conv channels of the observer CNN whose features give the similarity;
        empty: the studied CNN itself (circular, warned).
      train_steps: training steps of the studied CNN.
      observer_steps: training steps of the observer CNN.
      shift: largest pixel shift of the digit copies ((2 shift + 1)^2 copies per digit).
      layers: conv layers studied (capture names).
      ratios: directions per live channel on the last layer (and every layer with all_layers_ratios).
      all_layers_ratios: sweep the ratios on every layer, not only the last.
      sae_steps: sparse-autoencoder training steps.
      kmeans_steps: minibatch steps of the authors' K-means variant.
      ii_k: exemplars compared by the Interpretability Index.
      quantiles: 2AFC difficulty quantiles (the authors: 0 and 0.25).
      n_random: random unit directions per layer (the II / 2AFC baseline).
      gt_mono: planted monosemantic units.
      gt_poly: planted polysemantic units.
      gt_features: features (digit classes) per polysemantic unit.
      gt_noise: noise of the planted units.
    """

    channels: tuple[int, ...] = (16, 32)
    observer_channels: tuple[int, ...] = (8, 16)
    train_steps: int = 1500
    observer_steps: int = 1000
    shift: int = 1
    layers: tuple[str, ...] = ("Conv_0/relu", "Conv_1/relu")
    ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    all_layers_ratios: bool = False
    sae_steps: int = 3000
    kmeans_steps: int = 1000
    ii_k: int = 5
    quantiles: tuple[float, ...] = interp.PAPER_QUANTILES
    n_random: int = 64
    gt_mono: int = 20
    gt_poly: int = 20
    gt_features: int = 3
    gt_noise: float = 0.2

    @classmethod
    def quick(cls) -> Config:
        """About a minute: a small CNN that is its own observer (circular), the last layer only."""
        return cls(channels=(8, 16), observer_channels=(), train_steps=150, observer_steps=0,
                   layers=("Conv_1/relu",), ratios=(1.0,), sae_steps=300, kmeans_steps=200, n_random=16)

    def validate(self) -> None:
        super().validate()
        for name in ("train_steps", "sae_steps", "kmeans_steps", "n_random", "gt_mono", "gt_poly"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be >= 1; got {getattr(self, name)}.")
        if self.observer_steps < 0 or self.shift < 0:
            raise ValueError("`observer_steps` and `shift` must be >= 0.")
        if not self.channels or any(c < 1 for c in self.channels + self.observer_channels):
            raise ValueError(f"`channels` must be positive and non-empty; got {self.channels}.")
        if not self.layers:
            raise ValueError("`layers` must name at least one layer.")
        if 1.0 not in self.ratios or any(r <= 0 for r in self.ratios):
            raise ValueError(f"`ratios` must be positive and contain 1.0; got {self.ratios}.")
        if self.ii_k < 2:
            raise ValueError(f"`ii_k` must be >= 2; got {self.ii_k}.")
        if not self.quantiles or any(not 0.0 <= q < 0.5 for q in self.quantiles):
            raise ValueError(f"`quantiles` must lie in [0, 0.5); got {self.quantiles}.")
        if self.gt_features < 2 or self.gt_noise < 0:
            raise ValueError("`gt_features` must be >= 2 and `gt_noise` >= 0.")


# -- results ------------------------------------------------------------------------------------------


class Scores(NamedTuple):
    """II (training split) and 2AFC (test split) of one set of units or directions.

    Attributes:
      ii: ``[units]`` Interpretability Index of the scored units.
      top: ``[units, k]`` training-split indices of their top exemplars.
      two_afc: one ``[units]`` score per 2AFC quantile (``Config.quantiles``).
      trials: one ``[units, trials]`` array of per-trial probabilities per quantile.
      kept: ``[units]`` indices (into all the set's units) of the scored, non-constant units.
      n_units: units in the set, constant ones included.
    """

    ii: np.ndarray
    top: np.ndarray
    two_afc: tuple[np.ndarray, ...]
    trials: tuple[np.ndarray, ...]
    kept: np.ndarray
    n_units: int


class Result(NamedTuple):
    """What ``compute`` returns.

    Attributes:
      config: the settings.
      scores: ``{(layer, method, ratio): Scores}``; ``method`` in ``METHODS`` or ``BASELINE``.
      ground_truth: ``GroundTruthReport`` of the planted units.
      observer_validation: ``val.agreement_by_layer`` of the simulated pixel-L2 observer.
      accuracy, observer_accuracy: test accuracies of the studied and the observer CNN.
      circular: True when the studied CNN is its own observer.
      n_train, n_test: inputs of the two splits (digit copies included).
      x_train: ``[n_train, 8, 8, 1]`` training images (for the exemplar figure).
      dead: ``{layer: dead channels}``.
      skipped: what could not be fitted, and why.
    """

    config: Config
    scores: dict
    ground_truth: gt.GroundTruthReport
    observer_validation: dict
    accuracy: float
    observer_accuracy: float
    circular: bool
    n_train: int
    n_test: int
    x_train: np.ndarray
    dead: dict
    skipped: tuple[str, ...]


# -- data, networks and directions ---------------------------------------------------------------------


def shifted_copies(x: np.ndarray, shift: int) -> np.ndarray:
    """Every image of ``x [n, h, w, c]`` shifted by ``(dy, dx)`` in ``[-shift, shift]^2`` (zero fill).

    Returns:
      ``[(2 shift + 1)^2 * n, h, w, c]``: all images at the first shift, then at the next, ...
    """
    n, h, w, _ = x.shape
    padded = np.pad(x, ((0, 0), (shift, shift), (shift, shift), (0, 0)))
    offsets = range(-shift, shift + 1)
    return np.concatenate([padded[:, shift + dy: shift + dy + h, shift + dx: shift + dx + w]
                           for dy, dx in itertools.product(offsets, offsets)])


def digit_splits(seed: int, shift: int) -> tuple[datasets.Dataset, int]:
    """The digits split as ``load_digits(seed)``, each split extended with its shifted copies."""
    ds = datasets.load_digits(seed=seed)
    copies = (2 * shift + 1) ** 2
    return ds._replace(x_train=shifted_copies(ds.x_train, shift), y_train=np.tile(ds.y_train, copies),
                       x_test=shifted_copies(ds.x_test, shift), y_test=np.tile(ds.y_test, copies)), copies


def _train(channels, steps, x, y, key):
    model = models.CNN(channels=tuple(channels), hidden=2 * channels[-1], n_classes=10)
    params, _ = models.train_classifier(model, x, y, key=key, steps=steps, batch_size=128, learning_rate=3e-3)
    return model, params


def _layer_vectors(model, params, x, layers) -> dict[str, np.ndarray]:
    """``{layer: [n, channels]}`` spatially averaged post-ReLU channel vectors."""
    names = [f"{name}:post" for name in layers]
    fn = capture(partial(model.apply, params), names=names, post_activations=True)
    acts = apply_in_batches(lambda b: reduce_spatial(fn(b)[1], "mean"), x, batch_size=512)
    return {name: np.asarray(acts[f"{name}:post"], np.float32) for name in layers}


def unit_rows(x) -> jax.Array:
    """Rows of ``x [n, d]`` divided by their L2 norm, floored at ``NORM_FLOOR`` (the authors' normalize)."""
    x = jnp.asarray(x, jnp.float32)
    return x / jnp.maximum(jnp.linalg.norm(x, axis=1, keepdims=True), NORM_FLOOR)


class AuthorsKMeans(NamedTuple):
    """The authors' K-means directions: centroids of L2-normalised rows, not renormalised.

    Attributes:
      directions: the minibatch K-means ``Directions`` fitted on ``unit_rows(x)``.
    """

    directions: jd.Directions

    @property
    def components(self) -> jax.Array:
        """``[k, d]`` centroids (norms below 1)."""
        return self.directions.components

    def encode(self, x) -> jax.Array:
        """``[n, k]`` responses: ``unit_rows(x) @ centroids.T``."""
        return self.directions.encode(unit_rows(x))


def authors_kmeans(x, k: int, *, key, steps: int = 1000, batch_size: int = 1024) -> AuthorsKMeans:
    """K-means as in Klindt et al.'s code: minibatch K-means on L2-normalised rows.

    Their ``compute_kmeans`` runs scikit-learn's ``MiniBatchKMeans`` (k-means++ seeds, batch
    1024) on ``normalize(x)`` and scores inputs by projection on the (unnormalised) centroids.

    Args:
      x: ``[n, d]`` activations.
      k: number of centroids.
      key: PRNG key.
      steps: minibatch steps.
      batch_size: rows per step.

    Returns:
      ``AuthorsKMeans`` with ``encode(x) [n, k]``.
    """
    learner = jd.minibatch_kmeans(k, cosine=False, response="projection", batch_size=batch_size, steps=steps)
    return AuthorsKMeans(jd.fit(learner, unit_rows(x), key=key))


def fit_method(method: str, x: np.ndarray, k: int, key, config: Config):
    """Directions of ``method`` (not ``neurons``) with ``k`` directions fitted on ``x [n, d]``."""
    if method == "kmeans":
        return jd.fit(jd.kmeans(k, cosine=True), x, key=key)
    if method == "kmeans_authors":
        return authors_kmeans(x, k, key=key, steps=config.kmeans_steps)
    if method == "pca":
        return jd.fit(jd.pca(k), x, key=key)
    if method == "ica":
        return jd.fit(jd.ica(k), x, key=key)
    if method == "nmf":
        return jd.fit(jd.nmf(k), x, key=key)
    if method == "sae":  # Klindt et al.: ReLU encoder, L1 0.1, lr 1e-3, batch 64, z-scored inputs
        return jd.fit(jd.sae(k, kind="relu", coef=0.1, learning_rate=1e-3, batch_size=64, normalize="zscore",
                             steps=config.sae_steps), x, key=key)
    raise ValueError(f"unknown method {method!r}; expected one of {METHODS[1:]}.")


def random_directions(key, n: int, d: int) -> np.ndarray:
    """``[n, d]`` directions drawn uniformly on the unit sphere."""
    v = np.asarray(jax.random.normal(key, (n, d)), np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


# -- scoring -------------------------------------------------------------------------------------------


def score_units(train_resp: np.ndarray, test_resp: np.ndarray, tables: tuple, sim, config: Config) -> Scores | None:
    """II on the training split and 2AFC on the test split of the units varying on both."""
    keep = np.intersect1d(interp.varying_units(train_resp, tol=1e-6 * (np.abs(train_resp).max() or 1.0)),
                          interp.varying_units(test_resp, tol=1e-6 * (np.abs(test_resp).max() or 1.0)))
    if keep.size == 0:
        return None
    train_table, test_table = tables
    ii = interp.interpretability_index(train_resp[:, keep], train_table, sim, k=config.ii_k)
    afc = [interp.psychophysics(test_resp[:, keep], test_table, sim, q=q) for q in config.quantiles]
    return Scores(ii.scores, ii.top_indices, tuple(r.scores for r in afc), tuple(r.trial_probs for r in afc),
                  keep, int(train_resp.shape[1]))


def _score_layer(layer, train, test, tables, sim, config, key, skipped) -> tuple[dict, int]:
    """Scores of the neurons, every method and ratio, and the random baseline of one layer."""
    out = {(layer, "neurons", 1.0): score_units(train, test, tables, sim, config)}
    live = out[(layer, "neurons", 1.0)].kept
    x_tr, x_te = train[:, live], test[:, live]
    c = len(live)
    sweep = config.ratios if (layer == config.layers[-1] or config.all_layers_ratios) else (1.0,)
    for method, ratio in itertools.product(METHODS[1:], sweep):
        k = max(1, int(round(ratio * c)))
        if method in AT_MOST_D and k > c:
            skipped.append(f"{layer} {method} x{ratio:g}: more directions than dimensions")
            continue
        try:
            dirs = fit_method(method, x_tr, k, named_key(key, "directions", layer, method, f"x{ratio:g}"), config)
        except ValueError as e:  # e.g. rank-deficient activations for PCA/ICA
            skipped.append(f"{layer} {method} x{ratio:g}: {e}")
            continue
        resp = [np.asarray(dirs.encode(jnp.asarray(a)), np.float32) for a in (x_tr, x_te)]
        out[(layer, method, ratio)] = score_units(*resp, tables, sim, config)
    rand = random_directions(named_key(key, "random", layer), config.n_random, c)
    out[(layer, BASELINE, 1.0)] = score_units(x_tr @ rand.T, x_te @ rand.T, tables, sim, config)
    return out, int(train.shape[1] - c)


def _observer_validation(scores: dict, config: Config, x_test: np.ndarray, test_vectors: dict, rng) -> dict:
    """A pixel-L2 2AFC observer on the test split, sampled per trial, predicted by the neurons' training II."""
    pix = interp.pixel_l2()
    layers, units, correct, score = [], [], [], []
    for layer in config.layers:
        sc = scores[(layer, "neurons", 1.0)]
        probs = interp.psychophysics(test_vectors[layer][:, sc.kept], x_test, pix).trial_probs  # [units, trials]
        hits = rng.random(probs.shape) < probs
        n_trials = probs.shape[1]
        for u in range(probs.shape[0]):
            layers += [layer] * n_trials
            units += [f"neuron{int(sc.kept[u])}"] * n_trials
            correct += list(hits[u])
            score += [float(sc.ii[u])] * n_trials
    return val.agreement_by_layer(layers, units, correct, score)


def _similarity(config: Config, model, params, ds, key):
    """The observer network's LPIPS-style similarity (and whether it is the studied network)."""
    circular = not config.observer_channels
    if circular:
        warnings.warn("the LPIPS-style similarity is computed by the network being analysed (observer_channels=()):"
                      " its units are judged by features they feed, so the scores are circular.",
                      CircularSimilarityWarning, stacklevel=3)
        observer, obs_params = model, params
    else:
        observer, obs_params = _train(config.observer_channels, config.observer_steps, ds.x_train, ds.y_train, key)
    return interp.flax_deep_feature(observer, obs_params), observer, obs_params, circular


def compute(config: Config, key) -> Result:
    """Train, find directions on the training split, score (II: train, 2AFC: test), validate."""
    ds, copies = digit_splits(config.seed, config.shift)
    model, params = _train(config.channels, config.train_steps, ds.x_train, ds.y_train, named_key(key, "model"))
    sim, observer, obs_params, circular = _similarity(config, model, params, ds, named_key(key, "observer"))
    tables = tuple(np.asarray(interp.embed_items(sim, x, np.arange(len(x)))) for x in (ds.x_train, ds.x_test))
    psim = interp.precomputed(sim)

    labels = np.concatenate([ds.y_train, ds.y_test])
    planted = gt.planted_units(named_key(key, "planted"), gt.label_features(named_key(key, "features"), labels, 10),
                               n_mono=config.gt_mono, n_poly=config.gt_poly, poly_features=config.gt_features,
                               noise=config.gt_noise)
    train_units, test_units = gt.split_units(planted, len(ds.y_train))
    report = gt.ground_truth_validation(train_units, tables[0], psim, k=config.ii_k, test_units=test_units,
                                        test_items=tables[1])

    train_vectors = _layer_vectors(model, params, ds.x_train, config.layers)
    test_vectors = _layer_vectors(model, params, ds.x_test, config.layers)
    scores, dead, skipped = {}, {}, []
    for layer in config.layers:
        layer_scores, dead[layer] = _score_layer(layer, train_vectors[layer], test_vectors[layer], tables, psim,
                                                 config, key, skipped)
        scores.update(layer_scores)
    rng = numpy_rng(named_key(key, "observer_sampling"))
    observer_validation = _observer_validation(scores, config, ds.x_test, test_vectors, rng)
    return Result(config, scores, report, observer_validation,
                  float(models.accuracy(model, params, ds.x_test, ds.y_test)),
                  float(models.accuracy(observer, obs_params, ds.x_test, ds.y_test)), circular,
                  len(ds.y_train), len(ds.y_test), ds.x_train, dead, tuple(skipped))


# -- metrics: every key is written here and nowhere else --------------------------------------------------


def afc_name(q: float) -> str:
    """The metric name of the 2AFC at quantile ``q`` (``2afc_q0``, ``2afc_q0.25``)."""
    return f"2afc_q{q:g}"


def set_name(method: str, ratio: float) -> str:
    """The metric name of a method at a ratio (``kmeans_x1``)."""
    return f"{method}_x{ratio:g}"


def score_arrays(sc: Scores, config: Config) -> dict[str, np.ndarray]:
    """``{score name: [units]}``: ``ii`` and one ``afc_name(q)`` per quantile."""
    return {"ii": sc.ii, **{afc_name(q): a for q, a in zip(config.quantiles, sc.two_afc)}}


def summarize(sc: Scores | None, config: Config) -> dict:
    """Medians and means of every score, and unit counts."""
    if sc is None:
        return {"n_units": 0, "n_constant": None}
    out = {"n_units": sc.n_units, "n_constant": int(sc.n_units - len(sc.kept))}
    for name, a in score_arrays(sc, config).items():
        out[f"median_{name}"] = float(np.median(a))
        out[f"mean_{name}"] = float(np.mean(a))
    return out


def versus(sc: Scores, ref: Scores, config: Config) -> dict:
    """``auc_<score>``: P(a unit of ``sc`` scores above a unit of ``ref``) (Mann-Whitney AUC)."""
    out = {}
    for (name, a), b in zip(score_arrays(sc, config).items(), score_arrays(ref, config).values()):
        lab = np.r_[np.ones(len(a), bool), np.zeros(len(b), bool)]
        out[f"auc_{name}"] = val.roc_auc(np.concatenate([a, b]), lab)
    return out


def metrics(result: Result) -> dict:
    """The JSON metrics (public contract)."""
    c = result.config
    main = c.layers[-1]
    by_layer = {}
    for layer in c.layers:
        neurons = result.scores[(layer, "neurons", 1.0)]
        by_layer[layer] = {set_name(m, r): dict(summarize(sc, c), **(versus(sc, neurons, c)
                                                                    if sc is not None and m != "neurons" else {}))
                           for (lay, m, r), sc in result.scores.items() if lay == layer}
    return {
        "ground_truth_auc": {"ii": result.ground_truth.auc_ii, "2afc": result.ground_truth.auc_2afc},
        "main_layer": main,
        "methods": {m: summarize(result.scores.get((main, m, 1.0)), c) for m in METHODS + (BASELINE,)},
        "by_layer": by_layer,
        "observer_validation": result.observer_validation,
        "distributions": {layer: {set_name(m, r): {n: a for n, a in score_arrays(sc, c).items()}
                                  for (lay, m, r), sc in result.scores.items() if lay == layer and sc is not None}
                          for layer in c.layers},
        "similarity": {"name": "lpips_like", "circular": result.circular,
                       "warning": ("computed by the network being analysed: circular" if result.circular else None)},
        "splits": {"ii": "train", "2afc": "test", "n_train": result.n_train, "n_test": result.n_test,
                   "copies_per_digit": (2 * c.shift + 1) ** 2},
        "model_test_accuracy": result.accuracy,
        "observer_test_accuracy": result.observer_accuracy,
        "dead_channels": result.dead,
        "skipped": list(result.skipped),
    }


def summary(result: Result) -> dict:
    """Headline numbers of the main layer."""
    m = metrics(result)["methods"]
    q0 = afc_name(result.config.quantiles[0])

    def pair(name):
        return " / ".join(f"{m[x].get('median_' + name, float('nan')):.3f}" for x in ("neurons", "kmeans_authors",
                                                                                     BASELINE))

    return {
        "ground-truth AUC (II / 2AFC)": f"{result.ground_truth.auc_ii:.3f} / {result.ground_truth.auc_2afc:.3f}",
        f"median II, {result.config.layers[-1]} (neurons / authors' K-means / random)": pair("ii"),
        f"median {q0}, {result.config.layers[-1]} (neurons / authors' K-means / random)": pair(q0),
        "similarity": "circular (studied network)" if result.circular else "independent observer network",
    }


# -- claims ---------------------------------------------------------------------------------------------


def claims(result: Result) -> list[cl.Claim]:
    """Seed A: K-means directions beat neurons on the II and on the 2AFC; the II predicts the 2AFC."""
    c = result.config
    rows = []
    for layer in c.layers:
        neurons = result.scores[(layer, "neurons", 1.0)]
        for method, label in (("kmeans_authors", "the authors' K-means"), ("kmeans", "spherical K-means")):
            sc = result.scores.get((layer, method, 1.0))
            if sc is None:
                continue
            rows.append(cl.ordering(f"{layer}: {label} directions have a higher II than neurons (train split)",
                                    sc.ii, neurons.ii, paper_value="K-means II > neurons II (ResNet-50, CIFAR-10)",
                                    figure="distributions"))
            rows.append(cl.ordering(f"{layer}: {label} directions have a higher 2AFC score than neurons "
                                    f"(q={c.quantiles[0]:g}, test split)", sc.two_afc[0], neurons.two_afc[0],
                                    paper_value="K-means 2AFC > neurons 2AFC", figure="distributions"))
        rows.append(_ii_predicts_2afc(result, layer))
    return rows


def _ii_predicts_2afc(result: Result, layer: str) -> cl.Claim:
    """Units (neurons and both K-means) in the top half by II score higher on the 2AFC than the bottom half."""
    ii, afc = [], []
    for method in ("neurons", "kmeans", "kmeans_authors"):
        sc = result.scores.get((layer, method, 1.0))
        if sc is not None:
            ii.append(sc.ii)
            afc.append(sc.two_afc[0])
    ii, afc = np.concatenate(ii), np.concatenate(afc)
    high = ii > np.median(ii)
    return cl.ordering(f"{layer}: units with an above-median II score higher on the 2AFC "
                       f"(q={result.config.quantiles[0]:g})", afc[high], afc[~high],
                       paper_value="II agrees with psychophysics", figure="ii_vs_2afc")


# -- figures --------------------------------------------------------------------------------------------


def _labels(c: Config) -> list[tuple[int | None, str]]:
    """(index into ``Scores.two_afc`` or None for the II, axis label) for each score."""
    return [(None, f"II (k={c.ii_k}, train split)")] + [(i, f"2AFC score, q={q:g} (test split)")
                                                         for i, q in enumerate(c.quantiles)]


def _values(sc: Scores, which: int | None) -> np.ndarray:
    return sc.ii if which is None else sc.two_afc[which]


def _fig_distributions(result: Result):
    c = result.config
    rows = _labels(c)
    fig, axes = subplots(len(rows), len(c.layers), figsize=(7.0 * len(c.layers), 3.4 * len(rows)), squeeze=False)
    names = METHODS + (BASELINE,)
    for j, layer in enumerate(c.layers):
        for i, (which, label) in enumerate(rows):
            ax = axes[i, j]
            data, ticks = [], []
            for m in names:
                sc = result.scores.get((layer, m, 1.0))
                if sc is not None:
                    data.append(_values(sc, which))
                    ticks.append(m.replace("kmeans_authors", "kmeans\n(authors)"))
            ax.boxplot(data, showmeans=True)
            ax.set_xticks(range(1, len(ticks) + 1), ticks, fontsize=8)
            ax.set_ylabel(label, fontsize=9)
            ax.set_title(f"{layer}: {label.split(' (')[0]}", fontsize=10)
            if which is not None:
                ax.axhline(0.5, color="grey", lw=0.8, ls=":", label="chance")
    return fig


def _fig_ratios(result: Result):
    c = result.config
    layer = c.layers[-1]
    rows = _labels(c)[:2]
    fig, axes = subplots(1, len(rows), figsize=(5.5 * len(rows), 4.0), squeeze=False)
    for ax, (which, label) in zip(axes[0], rows):
        for m in METHODS[1:]:
            pts = [(r, np.median(_values(result.scores[(layer, m, r)], which))) for r in c.ratios
                   if result.scores.get((layer, m, r)) is not None]
            if pts:
                ax.plot(*zip(*pts), "o-", label=m)
        for m, style in (("neurons", "--"), (BASELINE, ":")):
            ax.axhline(np.median(_values(result.scores[(layer, m, 1.0)], which)), color="k", ls=style, label=m)
        ax.set_xscale("log", base=2)
        ax.set_xticks(c.ratios, [f"{r:g}" for r in c.ratios])
        ax.set_xlabel("directions per live channel")
        ax.set_ylabel(f"median {label}")
        ax.set_title(f"{layer}: median {label.split(' (')[0]} vs number of directions", fontsize=10)
    axes[0, -1].legend(fontsize=7)
    return fig


def _fig_exemplars(result: Result, methods=("neurons", "kmeans_authors"), n_show: int = 3):
    """Top exemplars (training split) of the most and least interpretable units of each method."""
    layer = result.config.layers[-1]
    rows = []
    for m in methods:
        sc = result.scores.get((layer, m, 1.0))
        if sc is None:
            continue
        order = np.argsort(-sc.ii)
        for tag, sel in (("most", order[:n_show]), ("least", order[::-1][:n_show])):
            rows += [(f"{m} {int(sc.kept[u])} ({tag})\nII={sc.ii[u]:.2f}", sc.top[u]) for u in sel]
    k = rows[0][1].shape[0]
    fig, axes = subplots(len(rows), k, figsize=(1.1 * k + 2.4, 1.1 * len(rows)), squeeze=False)
    for i, (label, idx) in enumerate(rows):
        for j in range(k):
            axes[i, j].imshow(result.x_train[idx[j], ..., 0], cmap="gray_r", vmin=0, vmax=1)
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
        axes[i, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=7)
    fig.suptitle(f"{layer}: top-{k} training exemplars of the most / least interpretable units", fontsize=9)
    return fig


def _roc_points(scores, positive):
    order = np.argsort(-np.asarray(scores), kind="stable")
    pos = np.asarray(positive, bool)[order]
    return np.r_[0.0, np.cumsum(~pos) / max((~pos).sum(), 1)], np.r_[0.0, np.cumsum(pos) / max(pos.sum(), 1)]


def _fig_roc(result: Result):
    rep = result.ground_truth
    fig, ax = subplots(figsize=(4.4, 4.2))
    for scores, label, auc in ((rep.ii, "II (train)", rep.auc_ii), (rep.two_afc, "2AFC q=0 (test)", rep.auc_2afc)):
        ax.plot(*_roc_points(scores, rep.units.monosemantic), label=f"{label}: AUC {auc:.2f}")
    ax.plot([0, 1], [0, 1], color="grey", ls=":", label="chance")
    ax.set_xlabel("false positive rate (polysemantic ranked high)")
    ax.set_ylabel("true positive rate (monosemantic)")
    ax.set_title("planted units: mono- vs polysemantic", fontsize=10)
    ax.legend(fontsize=8)
    return fig


def _fig_ii_vs_2afc(result: Result):
    c = result.config
    fig, axes = subplots(1, len(c.layers), figsize=(5.0 * len(c.layers), 4.2), squeeze=False)
    for ax, layer in zip(axes[0], c.layers):
        for m in ("neurons", "kmeans", "kmeans_authors", BASELINE):
            sc = result.scores.get((layer, m, 1.0))
            if sc is not None:
                ax.scatter(sc.ii, sc.two_afc[0], s=12, alpha=0.7, label=m)
        ax.axhline(0.5, color="grey", lw=0.8, ls=":")
        ax.set_xlabel(f"II (k={c.ii_k}, train split)")
        ax.set_ylabel(f"2AFC score, q={c.quantiles[0]:g} (test split)")
        ax.set_title(f"{layer}: II vs 2AFC per unit", fontsize=10)
        ax.legend(fontsize=7)
    return fig


def figures(result: Result) -> dict:
    """``{suffix: Figure}``."""
    out = {"distributions": _fig_distributions(result), "exemplars": _fig_exemplars(result),
           "ground_truth_roc": _fig_roc(result), "ii_vs_2afc": _fig_ii_vs_2afc(result)}
    if len(result.config.ratios) > 1:
        out["ratios"] = _fig_ratios(result)
    return out


STUDY = Study(
    name=NAME,
    description="Neurons vs K-means/PCA/ICA/NMF/SAE directions by the Interpretability Index (train split) and "
                "the authors' in-silico 2AFC (test split), with a random-direction baseline",
    config=Config,
    compute=compute,
    metrics=metrics,
    figures=figures,
    claims=claims,
    summary=summary,
)
