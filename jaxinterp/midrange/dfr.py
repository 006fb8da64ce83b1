"""Deep feature reweighting as the reference implementation does it (Kirichenko, Izmailov and
Wilson 2023, ``dfr_evaluate_spurious.py``, the ``DFR_val`` setting).

1. Tune ``C``: split the held-out set in half at random; group-balance one half by subsampling
   every group to the smallest, standardise it with its own mean and scale, fit an L1 logistic
   regression for every ``C`` in ``C_OPTIONS`` and keep the ``C`` with the best worst-group
   accuracy on the other half (the first best in ``C_OPTIONS`` order).
2. Fit: standardise with the mean and scale of the *training* features; 20 times, draw a
   group-balanced subsample of the whole held-out set and fit the L1 logistic regression with the
   chosen ``C``; average the coefficients and intercepts.

The solver is scikit-learn's liblinear (``LogisticRegression(solver="liblinear", l1_ratio=1)``),
whose intercept is a penalised feature column; with more than two classes the reference (an
older scikit-learn) fitted it one-vs-rest, which ``OneVsRest`` here does explicitly: one binary
fit per class, prediction by the largest decision value.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import jax
import numpy as np

from jaxinterp._validation import (
    check_finite, check_key, check_nonempty, check_positive_int, check_rank, check_real, check_same_leading,
)
from jaxinterp.keys import named_key
from jaxinterp.midrange.curation import check_labels

__all__ = ["C_OPTIONS", "DFR", "dfr_fit", "dfr_logits", "dfr_predict"]

#: standardised features beyond this magnitude make liblinear freeze (scikit-learn refuses them)
_MAX_Z = 1e15

#: The reference's grid of inverse L1 strengths.
C_OPTIONS = (1.0, 0.7, 0.3, 0.1, 0.07, 0.03, 0.01)


class DFR(NamedTuple):
    """A DFR last layer.

    Attributes:
      mean, scale: ``[d]`` standardisation (of the training features).
      coef: ``[n_classes, d]`` averaged coefficients (``[1, d]`` for two classes, as scikit-learn).
      intercept: ``[n_classes]`` (``[1]``) averaged intercepts.
      C: the tuned inverse L1 strength.
      tune_worst_group: ``[len(C_options)]`` worst-group accuracy of every ``C`` on the tuning half.
    """

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray
    C: float
    tune_worst_group: np.ndarray


def liblinear_l1(z, y, C: float, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """L1 logistic regression with liblinear: ``(coef [k, d], intercept [k])``, one-vs-rest for k > 2."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    def binary(target):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            m = LogisticRegression(l1_ratio=1.0, C=C, solver="liblinear").fit(z, target)
        return m.coef_[0], m.intercept_[0]

    if n_classes == 2:
        w, b = binary(np.asarray(y) == 1)
        return w[None], np.array([b])
    fits = [binary(np.asarray(y) == k) for k in range(n_classes)]
    return np.stack([w for w, _ in fits]), np.array([b for _, b in fits])


def _predict(z, coef, intercept) -> np.ndarray:
    scores = z @ coef.T + intercept
    return (scores[:, 0] > 0).astype(np.int64) if coef.shape[0] == 1 else scores.argmax(1)


def _standardize(x) -> tuple[np.ndarray, np.ndarray]:
    """Mean and scale as scikit-learn's StandardScaler (scale 1 for constant columns)."""
    mean, std = x.mean(0), x.std(0)
    return mean, np.where(std > 10 * np.finfo(np.float64).eps * np.maximum(np.abs(mean), 1.0), std, 1.0)


def _balanced(groups, key, n_groups: int) -> np.ndarray:
    """Indices subsampling every present group to the smallest group's size (random order)."""
    g = np.asarray(groups)
    counts = np.bincount(g, minlength=n_groups)
    m = int(counts[counts > 0].min())
    perm = np.asarray(jax.random.permutation(key, len(g)))
    return np.concatenate([perm[g[perm] == k][:m] for k in range(n_groups) if counts[k] > 0])


def _worst_group(pred, y, g, n_groups: int) -> float:
    accs = [np.mean(pred[g == k] == y[g == k]) for k in range(n_groups) if np.any(g == k)]
    return float(np.min(accs))


def _tune(x, y, g, key, C_options, n_classes: int, n_groups: int) -> np.ndarray:
    perm = np.asarray(jax.random.permutation(named_key(key, "split"), len(y)))
    half = len(y) // 2
    ev, fit = perm[:half], perm[half:]
    fit = fit[_balanced(g[fit], named_key(key, "balance"), n_groups)]
    mean, scale = _standardize(x[fit])
    z_fit, z_ev = (x[fit] - mean) / scale, (x[ev] - mean) / scale
    worst = []
    for C in C_options:
        coef, b = liblinear_l1(z_fit, y[fit], C, n_classes)
        worst.append(_worst_group(_predict(z_ev, coef, b), y[ev], g[ev], n_groups))
    return np.array(worst)


def dfr_fit(train_features, features, labels, groups, *, key: jax.Array, C_options=C_OPTIONS,
            n_retrains: int = 20, n_classes: int | None = None, n_groups: int | None = None) -> DFR:
    """Tune ``C`` on half the held-out set, then average ``n_retrains`` group-balanced fits.

    Args:
      train_features: ``[n_train, d]`` training-set features (only their mean and scale are used).
      features: ``[n, d]`` held-out features (the reference's validation set).
      labels: int ``[n]`` held-out class labels.
      groups: int ``[n]`` held-out group ids.
      key: PRNG key of the split and the balanced draws.
      C_options: the ``C`` grid (the reference's by default).
      n_retrains: balanced draws whose coefficients are averaged (20 in the reference).
      n_classes, n_groups: defaults ``max + 1`` of ``labels`` and ``groups``.

    Returns:
      A ``DFR``.

    Raises:
      TypeError: non-integer ``labels`` or ``groups``, a raw uint32 ``key``.
      ValueError: empty or non-finite features, widths or lengths that differ, ids beyond
        ``n_classes``/``n_groups``, ``C_options`` not positive, ``features`` more than 1e15
        training standard deviations from the training mean (liblinear cannot fit them).
    """
    for name, a in (("train_features", train_features), ("features", features)):
        check_rank(a, name, 2)
        check_nonempty(a, name)
        check_finite(a, name)
    if np.shape(train_features)[1] != np.shape(features)[1]:
        raise ValueError(f"`train_features` and `features` must have the same width; got "
                         f"{np.shape(train_features)[1]} and {np.shape(features)[1]}.")
    check_labels(labels)
    check_labels(groups, "groups")
    check_same_leading("features", features, "labels", labels)
    check_same_leading("features", features, "groups", groups)
    if isinstance(C_options, str) or len(C_options) == 0:
        raise ValueError(f"`C_options` must be a non-empty sequence of positive numbers; got {C_options!r}.")
    C_options = [check_real(c, "C_options", low=0.0, open_low=True) for c in C_options]
    n_retrains = check_positive_int(n_retrains, "n_retrains")
    check_key(key)
    x, y, g = np.asarray(features, np.float64), np.asarray(labels), np.asarray(groups)
    n_classes = int(n_classes or y.max() + 1)
    n_groups = int(n_groups or g.max() + 1)
    check_labels(labels, n_classes=n_classes)
    check_labels(groups, "groups", n_classes=n_groups)
    worst = _tune(x, y, g, named_key(key, "tune"), C_options, n_classes, n_groups)
    C = float(C_options[int(np.argmax(worst))])
    mean, scale = _standardize(np.asarray(train_features, np.float64))
    z = (x - mean) / scale
    if np.max(np.abs(z)) > _MAX_Z:
        raise ValueError(f"`features` lie up to {np.max(np.abs(z)):.3g} standard deviations of `train_features` "
                         f"from their mean (more than {_MAX_Z:g}); the two sets are not on one scale.")
    fits = [liblinear_l1(z[idx], y[idx], C, n_classes)
            for idx in (_balanced(g, named_key(key, "retrain", i), n_groups) for i in range(n_retrains))]
    coef = np.mean([w for w, _ in fits], axis=0)
    intercept = np.mean([b for _, b in fits], axis=0)
    return DFR(mean, scale, coef, intercept, C, worst)


def _standardized(dfr: DFR, features) -> np.ndarray:
    check_rank(features, "features", 2)
    check_nonempty(features, "features")
    check_finite(features, "features")
    if np.shape(features)[1] != dfr.mean.shape[0]:
        raise ValueError(f"`features` must have {dfr.mean.shape[0]} columns; got shape {np.shape(features)}.")
    return (np.asarray(features, np.float64) - dfr.mean) / dfr.scale


def dfr_logits(dfr: DFR, features) -> np.ndarray:
    """Decision values ``[n, k]`` of a DFR layer (``k = 1`` for two classes: class 1 iff > 0).

    Raises:
      ValueError: ``features`` not ``[n, d]`` with the fitted width, empty or non-finite.
    """
    return _standardized(dfr, features) @ dfr.coef.T + dfr.intercept


def dfr_predict(dfr: DFR, features) -> np.ndarray:
    """Predicted classes ``[n]`` of a DFR layer.

    Raises:
      ValueError: ``features`` not ``[n, d]`` with the fitted width, empty or non-finite.
    """
    return _predict(_standardized(dfr, features), dfr.coef, dfr.intercept)
