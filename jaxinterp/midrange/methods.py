"""ERM vs MID curation vs DFR: ways to get the last layer, evaluated on groups.

- ``erm``: the trained model's own logits.
- ``mid``: last layer retrained on the MID-curated training set (``curate``, the cross-class
  rule: samples whose logit for another class is mid-to-high, plus a class-balanced draw of the
  rest); uses class labels only, no group labels.
- ``mid_own_class`` (ablation): the old per-class rule (``midrange_mask``), which removes the
  minority instead of finding it.
- ``dfr``: deep feature reweighting as the reference does it (``dfr_fit``: ``C`` tuned on half
  the held-out set, coefficients averaged over 20 group-balanced draws); needs group labels.
- ``all`` (ablation): last layer retrained on every training input, to separate the effect of
  the curation from that of refitting the last layer with an L1 penalty.

``mid``, ``mid_own_class`` and ``all`` use ``fit_last_layer`` with the same ``C``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import numpy as np

from jaxinterp._validation import (
    check_finite, check_key, check_nonempty, check_positive_int, check_rank, check_real, check_same_leading,
)
from jaxinterp.keys import named_key
from jaxinterp.midrange.curation import check_labels, curate
from jaxinterp.midrange.dfr import C_OPTIONS, dfr_fit, dfr_predict
from jaxinterp.midrange.groups import GroupMetrics, group_metrics
from jaxinterp.midrange.last_layer import fit_last_layer, last_layer_logits

METHODS = ("erm", "mid", "mid_own_class", "dfr", "all")
DEFAULT_METHODS = ("erm", "mid", "dfr", "all")


class Split(NamedTuple):
    """One split's penultimate features ``[n, d]``, logits ``[n, C]``, labels ``[n]``, groups ``[n]``.

    ``groups`` may be None where a method must not see them (the training split).
    """

    features: np.ndarray
    logits: np.ndarray
    labels: np.ndarray
    groups: np.ndarray | None = None


class MethodResult(NamedTuple):
    """Test-set group metrics of one method, its last layer (None for ERM), its retraining-set size
    and the retraining set's indices into its pool (None for ERM; the held-out set for DFR)."""

    metrics: GroupMetrics
    layer: Any
    n_fit: int
    indices: np.ndarray | None = None


def _check_split(split: Split, name: str, need_groups: bool, need_logits: bool) -> None:
    check_rank(split.features, f"{name}.features", 2)
    check_nonempty(split.features, f"{name}.features")
    check_finite(split.features, f"{name}.features")
    check_labels(split.labels, f"{name}.labels")
    check_same_leading(f"{name}.features", split.features, f"{name}.labels", split.labels)
    if need_logits:
        if split.logits is None:
            raise ValueError(f"`{name}.logits` is required.")
        check_rank(split.logits, f"{name}.logits", 2)
        check_finite(split.logits, f"{name}.logits")
        check_same_leading(f"{name}.features", split.features, f"{name}.logits", split.logits)
    if need_groups:
        if split.groups is None:
            raise ValueError(f"`{name}.groups` is required.")
        check_labels(split.groups, f"{name}.groups")
        check_same_leading(f"{name}.features", split.features, f"{name}.groups", split.groups)


def compare_methods(
    train: Split,
    heldout: Split,
    test: Split,
    *,
    key: jax.Array,
    n_groups: int | None = None,
    C: float = 1.0,
    curation: dict | None = None,
    dfr_C_options=C_OPTIONS,
    dfr_retrains: int = 20,
    dfr_scaler_features=None,
    methods: tuple[str, ...] = DEFAULT_METHODS,
) -> dict[str, MethodResult]:
    """Evaluate ERM, MID curation, DFR (and the ablations) on the test groups.

    Args:
      train: the training split (features, logits of the ERM model, labels; groups unused).
      heldout: held-out split with group labels, used by DFR only.
      test: evaluation split with logits and group labels.
      key: PRNG key (MID's balanced draw, DFR's split and draws).
      n_groups: number of groups (default: the largest group id in ``test``/``heldout`` + 1).
      C: inverse L1 strength of the ``mid``/``mid_own_class``/``all`` last layers.
      curation: keyword arguments of ``curate`` for ``mid`` (``n_bins``, ``select``, ``reference``,
        ``rest_ratio``) and ``mid_own_class`` (``low``, ``high``).
      dfr_C_options, dfr_retrains: DFR's ``C`` grid and number of averaged balanced draws.
      dfr_scaler_features: ``[m, d]`` features whose mean and scale standardise DFR's inputs (the
        reference uses the ERM model's training set); default ``train.features``.
      methods: which of ``METHODS`` to run.

    Returns:
      ``{method: MethodResult}``.

    Raises:
      ValueError/TypeError: naming the split field (``train.logits``, ``test.groups``, ...) or
        the argument (``C``, ``dfr_retrains``, ``key``, ``methods``) that is malformed.
    """
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ValueError(f"unknown method(s) {sorted(unknown)} in `methods`; choose from {METHODS}.")
    C = check_real(C, "C", low=0.0, open_low=True)
    dfr_retrains = check_positive_int(dfr_retrains, "dfr_retrains")
    check_key(key)
    _check_split(train, "train", False, "mid" in methods or "mid_own_class" in methods)
    _check_split(test, "test", True, "erm" in methods)
    if "dfr" in methods:
        _check_split(heldout, "heldout", True, False)
    n_classes = int(np.shape(test.logits)[1]) if test.logits is not None else int(np.max(train.labels)) + 1
    if n_groups is None:
        n_groups = int(max(np.max(test.groups), np.max(heldout.groups) if heldout.groups is not None else 0)) + 1
    curation = dict(curation or {})

    def evaluate(pred) -> GroupMetrics:
        return group_metrics(np.asarray(pred).astype(np.int64), test.labels, test.groups, n_groups)

    def refit(indices) -> MethodResult:
        layer = fit_last_layer(np.asarray(train.features)[indices], np.asarray(train.labels)[indices],
                               n_classes=n_classes, C=C)
        return MethodResult(evaluate(np.asarray(last_layer_logits(layer, test.features)).argmax(-1)), layer,
                            int(len(indices)), np.asarray(indices))

    out: dict[str, MethodResult] = {}
    for name in methods:
        if name == "erm":
            out[name] = MethodResult(evaluate(np.asarray(test.logits).argmax(-1)), None, int(len(train.labels)))
        elif name in ("mid", "mid_own_class"):
            rule = "cross_class" if name == "mid" else "own_class"
            cur = curate(train.logits, train.labels, key=named_key(key, "mid"), rule=rule, **curation)
            if cur.indices.size == 0:
                raise ValueError(f"`{name}` curation selected no training sample; widen `curation`.")
            out[name] = refit(cur.indices)
        elif name == "dfr":
            scaler = train.features if dfr_scaler_features is None else dfr_scaler_features
            dfr = dfr_fit(scaler, heldout.features, heldout.labels, heldout.groups, key=named_key(key, "dfr"),
                          C_options=dfr_C_options, n_retrains=dfr_retrains, n_classes=n_classes, n_groups=n_groups)
            out[name] = MethodResult(evaluate(dfr_predict(dfr, test.features)), dfr, int(len(heldout.labels)))
        else:
            out[name] = refit(np.arange(len(train.labels)))
    return out
