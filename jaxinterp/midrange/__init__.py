"""The whole range of activations: bins, exemplars, attribute statistics, MID curation, retraining.

Follows O'Mahony, Nikolov and O'Sullivan (WACV 2025): look beyond the top activations of a
unit, direction or logit; mid-range logits reveal spurious associations, and retraining the
last layer on inputs curated from mid-range logits mitigates them without group labels.
"""

from jaxinterp.midrange.analysis import RangeAnalysis, range_analysis
from jaxinterp.midrange.binning import assign_bins, bin_counts, bin_edges, bin_exemplars, direction_values
from jaxinterp.midrange.curation import (
    RULES, Curation, balanced_draw, check_labels, class_logit_quantiles, cross_class_bins, curate, midrange_candidates,
    midrange_mask,
)
from jaxinterp.midrange.dfr import C_OPTIONS, DFR, dfr_fit, dfr_logits, dfr_predict
from jaxinterp.midrange.groups import GroupMetrics, balanced_group_indices, group_metrics
from jaxinterp.midrange.last_layer import LastLayer, fit_last_layer, last_layer_logits, standardize
from jaxinterp.midrange.methods import DEFAULT_METHODS, METHODS, MethodResult, Split, compare_methods
from jaxinterp.midrange.stats import (
    AttributeStats, ChiSquare, UnitScores, attribute_stats, bin_frequencies, chi_square, contingency_table,
    encode_attribute, mutual_information, unit_attribute_scores,
)

# Building blocks (bin_counts, cross_class_bins, midrange_candidates, class_logit_quantiles,
# balanced_draw, check_labels, encode_attribute, bin_frequencies, standardize) stay importable
# from their modules; the public surface is the functions a user calls.
__all__ = [
    "C_OPTIONS", "DEFAULT_METHODS", "METHODS", "RULES",
    "AttributeStats", "ChiSquare", "Curation", "DFR", "GroupMetrics", "LastLayer", "MethodResult", "RangeAnalysis",
    "Split", "UnitScores",
    "assign_bins", "attribute_stats", "balanced_group_indices", "bin_edges", "bin_exemplars", "chi_square",
    "compare_methods", "contingency_table", "curate", "dfr_fit", "dfr_logits", "dfr_predict", "direction_values",
    "fit_last_layer", "group_metrics", "last_layer_logits", "midrange_mask", "mutual_information", "range_analysis",
    "unit_attribute_scores",
]
