"""Ground truth for the scores: units whose selectivity is planted, mono- or polysemantic.

Each planted unit responds to a known set of features of the inputs (one feature: monosemantic;
several: polysemantic). A good interpretability score must rank the monosemantic units above the
polysemantic ones; the ROC AUC of that separation is the check.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np

from jaxinterp._validation import check_finite, check_in_range, check_nonnegative, check_positive_int, check_rank
from jaxinterp.interpretability.index import interpretability_index
from jaxinterp.interpretability.psychophysics import psychophysics
from jaxinterp.interpretability.similarity import Similarity, as_similarity
from jaxinterp.interpretability.validation import roc_auc


class PlantedUnits(NamedTuple):
    """Synthetic units with known selectivity.

    Attributes:
      acts: ``[n, units]`` responses.
      features: ``[units, max_features]`` indices of the features each unit responds to (-1: none).
      monosemantic: ``[units]`` True for units responding to exactly one feature.
    """

    acts: np.ndarray
    features: np.ndarray
    monosemantic: np.ndarray


def label_features(key, labels, n_classes: int, *, low: float = 0.5, high: float = 1.5) -> np.ndarray:
    """Feature strengths ``[n, n_classes]``: ``strength * one_hot(label)``, strength ~ U(low, high)."""
    labels = np.asarray(labels)
    check_rank(labels, "labels", 1)
    n_classes = check_positive_int(n_classes, "n_classes")
    strength = np.asarray(jax.random.uniform(key, (len(labels),), minval=low, maxval=high))
    return (np.eye(n_classes, dtype=np.float32)[labels] * strength[:, None]).astype(np.float32)


def planted_units(key, features, *, n_mono: int, n_poly: int, poly_features: int = 3,
                  noise: float = 0.05, weight_spread: float = 0.0) -> PlantedUnits:
    """Units responding to one (monosemantic) or ``poly_features`` (polysemantic) planted features.

    Unit ``u`` responds ``sum_{f in S_u} w_uf * features[:, f] + noise * eps`` with weights
    ``w ~ U(1 - weight_spread, 1 + weight_spread)`` and Gaussian ``eps``. With unequal weights a
    polysemantic unit's top exemplars come mostly from its strongest feature (it looks
    monosemantic at the top); equal weights (the default) mix its features. Monosemantic units cycle through the features;
    each polysemantic unit draws ``poly_features`` distinct features at random.

    Args:
      key: PRNG key.
      features: ``[n, n_features]`` non-negative feature strengths of the inputs (e.g.
        ``label_features``, or the sparse codes of a superposition toy dataset).
      n_mono, n_poly: numbers of mono- and polysemantic units.
      poly_features: features per polysemantic unit (>= 2).
      noise: standard deviation of the additive response noise.
      weight_spread: half-width of the uniform distribution of the weights around 1, in [0, 1).

    Returns:
      ``PlantedUnits`` (monosemantic units first).
    """
    check_rank(features, "features", 2)
    check_finite(features, "features")
    check_nonnegative(features, "features")
    n, n_features = np.shape(features)
    n_mono = check_positive_int(n_mono, "n_mono")
    n_poly = check_positive_int(n_poly, "n_poly")
    poly_features = check_positive_int(poly_features, "poly_features", maximum=n_features,
                                       maximum_name="number of features")
    if poly_features < 2:
        raise ValueError("`poly_features` must be >= 2: a polysemantic unit responds to several features.")
    noise = check_in_range(noise, "noise", 0.0, np.inf)
    weight_spread = check_in_range(weight_spread, "weight_spread", 0.0, 1.0)
    k_sets, k_w, k_eps = jax.random.split(key, 3)
    units = n_mono + n_poly
    sets = np.full((units, poly_features), -1, np.int64)
    sets[:n_mono, 0] = np.arange(n_mono) % n_features
    perm_keys = jax.random.split(k_sets, n_poly)
    for i, k in enumerate(perm_keys):
        sets[n_mono + i] = np.asarray(jax.random.permutation(k, n_features))[:poly_features]
    w = np.asarray(jax.random.uniform(k_w, (units, poly_features), minval=1.0 - weight_spread,
                                      maxval=1.0 + weight_spread))
    weights = np.zeros((n_features, units), np.float32)
    for u in range(units):
        for f, wf in zip(sets[u], w[u]):
            if f >= 0:
                weights[f, u] = wf
    eps = np.asarray(jax.random.normal(k_eps, (n, units)))
    acts = np.asarray(features, np.float32) @ weights + noise * eps
    mono = np.zeros(units, bool)
    mono[:n_mono] = True
    return PlantedUnits(acts.astype(np.float32), sets, mono)


def separation_auc(scores, monosemantic) -> float:
    """ROC AUC with which ``scores [units]`` rank monosemantic above polysemantic units."""
    return roc_auc(scores, monosemantic)


class GroundTruthReport(NamedTuple):
    """Scores of planted units and how well they separate mono- from polysemantic ones.

    Attributes:
      auc_ii, auc_2afc: separation AUCs of the II and of the 2AFC score.
      ii, two_afc: ``[units]`` scores.
      units: the ``PlantedUnits``.
    """

    auc_ii: float
    auc_2afc: float
    ii: np.ndarray
    two_afc: np.ndarray
    units: PlantedUnits


def ground_truth_validation(units: PlantedUnits, items, similarity: Similarity | str, *, k: int = 5,
                            q: float = 0.0, test_units: PlantedUnits | None = None,
                            test_items=None) -> GroundTruthReport:
    """Score planted units with the II and the 2AFC and report how well each separates them.

    Args:
      units: from ``planted_units``; the II is computed on them.
      items: ``[n, ...]`` the inputs as the similarity sees them.
      similarity: the similarity both scores use (a ``Similarity`` or a built-in's name, ``"pixel"``).
      k: exemplars of the II.
      q: difficulty quantile of the 2AFC.
      test_units, test_items: the same units on held-out inputs, for the 2AFC (the authors
        compute the II on the training split and the 2AFC on the test split); None scores the
        2AFC on ``units`` and ``items``.
    """
    similarity = as_similarity(similarity)
    if (test_units is None) != (test_items is None):
        raise ValueError("`test_units` and `test_items` must be given together.")
    if test_units is not None and test_units.acts.shape[1] != units.acts.shape[1]:
        raise ValueError(f"`test_units` must hold the same {units.acts.shape[1]} units as `units`; got "
                         f"{test_units.acts.shape[1]}.")
    ii = interpretability_index(units.acts, items, similarity, k=k).scores
    afc_units, afc_items = (units, items) if test_units is None else (test_units, test_items)
    afc = psychophysics(afc_units.acts, afc_items, similarity, q=q).scores
    return GroundTruthReport(separation_auc(ii, units.monosemantic), separation_auc(afc, units.monosemantic),
                             ii, afc, units)


def split_units(units: PlantedUnits, n_first: int) -> tuple[PlantedUnits, PlantedUnits]:
    """The same planted units on the first ``n_first`` inputs and on the remaining ones."""
    n_first = check_positive_int(n_first, "n_first", maximum=units.acts.shape[0] - 1,
                                 maximum_name="inputs minus one")
    return units._replace(acts=units.acts[:n_first]), units._replace(acts=units.acts[n_first:])
