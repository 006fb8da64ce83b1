"""The polytope lens: polytope codes, boundaries along paths, local complexity, boundary density, clustering.

Works on any ReLU network through :mod:`jaxinterp.capture` (pass ``fn: x [batch, ...] -> output``),
or on a hand-written :class:`Preactivations`.
"""

from jaxinterp.polytope.boundary import BoundaryDistances, boundary_density, boundary_distances, sketch_relative_std
from jaxinterp.polytope.clustering import cluster_activations, cluster_codes, compare_clusterings, purity
from jaxinterp.polytope.codes import (PolytopeCodes, PolytopeGroups, codes_equal, codes_from_preactivations,
                                      count_polytopes, dataset_codes, group_by_polytope, hamming, hamming_per_layer,
                                      hash_codes, pack_bits, pairwise_hamming, polytope_codes, positive,
                                      region_ids,
                                      unpack_bits)
from jaxinterp.polytope.local_complexity import LocalComplexity, local_complexity, random_frames
from jaxinterp.polytope.network import (CodeLayout, Preactivations, as_preactivations, layout_of,
                                        relu_preactivations, unit_values)
from jaxinterp.polytope.paths import (SampledPath, class_change_positions, layer_activations,
                                      sampled_boundary_counts, sampled_counts_single)
from jaxinterp.polytope.walk import LineWalk, exact_walk, likely_cause, walk_single, window_argmax

__all__ = [
    "CodeLayout", "Preactivations", "as_preactivations", "layout_of", "relu_preactivations", "unit_values",
    "PolytopeCodes", "PolytopeGroups", "pack_bits", "unpack_bits", "polytope_codes", "dataset_codes",
    "codes_from_preactivations",
    "positive", "hamming", "hamming_per_layer", "codes_equal", "pairwise_hamming", "hash_codes", "region_ids",
    "group_by_polytope", "count_polytopes",
    "SampledPath", "LineWalk", "sampled_boundary_counts", "sampled_counts_single", "exact_walk", "walk_single", "window_argmax", "likely_cause",
    "layer_activations", "class_change_positions",
    "LocalComplexity", "local_complexity", "random_frames",
    "cluster_codes", "cluster_activations", "compare_clusterings", "purity",
    "BoundaryDistances", "boundary_distances", "boundary_density", "sketch_relative_std",
]
