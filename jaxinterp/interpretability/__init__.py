"""Automated interpretability: exemplars, similarities, the Interpretability Index, 2AFC and unit cards.

Internal building blocks (``similarity.lpips_embedding``, ``similarity.pairwise``,
``exemplars.paper_top_indices``) stay importable from their modules but are not part of the
public API.
"""

from jaxinterp.interpretability.cards import (
    OutputEffects,
    UnitCard,
    unit_card,
    unit_card_data,
    unit_card_figure,
)
from jaxinterp.interpretability.exemplars import (
    N_REFS,
    N_TRIALS,
    PAPER_QUANTILES,
    PAPER_SEED,
    PROTOCOLS,
    Exemplars,
    TwoAFCStimuli,
    quantile_exemplars,
    query_orders,
    stream_exemplars,
    stream_quantile_exemplars,
    stream_two_afc_stimuli,
    top_bottom_exemplars,
    two_afc_stimuli,
    varying_units,
)
from jaxinterp.interpretability.index import (
    IndexResult,
    index_from_embeddings,
    index_of_exemplars,
    interpretability_index,
)
from jaxinterp.interpretability.psychophysics import (
    TwoAFCResult,
    max_score,
    psychophysics,
    two_afc_from_embeddings,
    two_afc_of_stimuli,
)
from jaxinterp.interpretability.similarity import (
    Similarity,
    deep_feature,
    embed_items,
    flax_deep_feature,
    label_agreement,
    mean_colour_l2,
    network_features,
    pixel_l2,
    precomputed,
)

__all__ = [
    "N_REFS", "N_TRIALS", "PAPER_QUANTILES", "PAPER_SEED", "PROTOCOLS", "Exemplars", "IndexResult", "Similarity", "TwoAFCResult", "TwoAFCStimuli",
    "deep_feature", "embed_items", "flax_deep_feature", "index_from_embeddings", "index_of_exemplars",
    "interpretability_index", "label_agreement", "max_score", "mean_colour_l2",
    "network_features", "pixel_l2", "precomputed", "psychophysics", "quantile_exemplars", "query_orders",
    "stream_exemplars", "stream_quantile_exemplars", "stream_two_afc_stimuli", "top_bottom_exemplars",
    "two_afc_from_embeddings", "two_afc_of_stimuli", "two_afc_stimuli", "varying_units",
    "OutputEffects", "UnitCard", "unit_card", "unit_card_data", "unit_card_figure",
]
