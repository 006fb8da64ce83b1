"""The polytope lens: polytope codes, boundaries along paths, local complexity, boundary density, clustering.

The building blocks (bit packing, the single-path walk, frames, ...) stay importable from their
modules (``jaxinterp.polytope.codes``, ``.walk``, ...) but are not part of the public surface.

Works on any ReLU network through :mod:`jaxinterp.capture` (pass ``fn: x [batch, ...] -> output``),
or on a hand-written :class:`Preactivations`.
"""

from jaxinterp.polytope.boundary import BoundaryDistances, boundary_density, boundary_distances, sketch_relative_std
from jaxinterp.polytope.clustering import cluster_activations, cluster_codes, compare_clusterings, purity
from jaxinterp.polytope.codes import (PolytopeCodes, PolytopeGroups, codes_equal, codes_from_preactivations,
                                      count_polytopes, dataset_codes, group_by_polytope, hamming, hamming_per_layer,
                                      pairwise_hamming, polytope_codes, region_ids)
from jaxinterp.polytope.local_complexity import LocalComplexity, local_complexity
from jaxinterp.polytope.network import CodeLayout, Preactivations, relu_preactivations
from jaxinterp.polytope.paths import SampledPath, class_change_positions, layer_activations, sampled_boundary_counts
from jaxinterp.polytope.walk import LineWalk, exact_walk

__all__ = [
    "CodeLayout", "Preactivations", "relu_preactivations",
    "PolytopeCodes", "PolytopeGroups", "polytope_codes", "dataset_codes", "codes_from_preactivations",
    "hamming", "hamming_per_layer", "codes_equal", "pairwise_hamming", "region_ids", "group_by_polytope",
    "count_polytopes",
    "SampledPath", "LineWalk", "sampled_boundary_counts", "exact_walk", "layer_activations", "class_change_positions",
    "LocalComplexity", "local_complexity",
    "cluster_codes", "cluster_activations", "compare_clusterings", "purity",
    "BoundaryDistances", "boundary_distances", "boundary_density", "sketch_relative_std",
]
