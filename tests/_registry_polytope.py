"""Bad-input battery registrations: the polytope lens.

``entries()`` registers every public function of the area once with a valid call; ``EXEMPT``
names the public callables that take no user data, with the reason.
"""

import numpy as np

from _battery import Entry
from _battery_inputs import *  # noqa: F403 - the shared battery inputs

EXEMPT: dict[str, str] = {}

DISTANCE_INF = "an infinite distance (a unit constant near the input) is never within the radius (documented)"
NO_CHANGE_NAN = ("NaN is the documented 'class never changes' position; the call reports it as a flag and a "
                 "finite value")


def _codes_entries(polytope, words, layout):
    codes = dict(kinds={"a": "codes", "b": "codes"})
    return [
        Entry("jaxinterp.polytope_codes", lambda x: polytope.polytope_codes(NET, x).words, dict(x=XS),
              accept={"x.rank_up": MODEL_DECIDES, "x.rank_down": MODEL_DECIDES}),
        Entry("jaxinterp.dataset_codes",
              lambda x, batch_size: polytope.dataset_codes(NET, x, batch_size=batch_size).words,
              dict(x=XS, batch_size=4), accept={"x.rank_up": MODEL_DECIDES}),
        Entry("jaxinterp.polytope.codes_from_preactivations",
              lambda z1, z2: polytope.codes_from_preactivations({"a": z1, "b": z2}), dict(z1=PRE_A, z2=PRE_B),
              pairs=(("z1", "z2"),), aliases={"z1": ("acts",), "z2": ("acts",)},
              accept={"z1.rank_up": "any unit shape [batch, ...]: the units are flattened",
                      "z2.rank_up": "any unit shape [batch, ...]: the units are flattened"}),
        Entry("jaxinterp.hamming", lambda a, b: polytope.hamming(a, b), dict(a=words, b=words[::-1].copy()), **codes),
        Entry("jaxinterp.polytope.hamming_per_layer", lambda a, b: polytope.hamming_per_layer(a, b, layout),
              dict(a=words, b=words[::-1].copy()), **codes),
        Entry("jaxinterp.polytope.codes_equal", lambda a, b: polytope.codes_equal(a, b),
              dict(a=words, b=words[::-1].copy()), **codes),
        Entry("jaxinterp.polytope.pairwise_hamming", lambda a, b: polytope.pairwise_hamming(a, b),
              dict(a=words, b=words[:3].copy()), **codes),
        Entry("jaxinterp.polytope.region_ids", lambda words: polytope.region_ids(words), dict(words=words),
              kinds={"words": "codes"},
              accept={"words.width": ANY_WIDTH, "words.rank_down": "a single code [n_words] has one id"}),
        Entry("jaxinterp.polytope.group_by_polytope", lambda words: polytope.group_by_polytope(words).counts,
              dict(words=words), kinds={"words": "codes"}, accept={"words.width": ANY_WIDTH}),
        Entry("jaxinterp.count_polytopes", lambda words: polytope.count_polytopes(words), dict(words=words),
              kinds={"words": "codes"}, accept={"words.width": ANY_WIDTH}),
    ]


def _path_entries(polytope):
    ends = dict(pairs=(("x0", "x1"),), accept={"x0.rank_up": MODEL_DECIDES, "x1.rank_up": MODEL_DECIDES})
    return [
        Entry("jaxinterp.sampled_boundary_counts",
              lambda x0, x1, n_steps: polytope.sampled_boundary_counts(NET, x0, x1, n_steps=n_steps).counts,
              dict(x0=X0, x1=X1, n_steps=8), **ends),
        Entry("jaxinterp.exact_walk",
              # check="off": the battery checks argument handling; the affinity check (an AffinityWarning
              # for 1e30 ends, beyond float64's affine resolution) is tested in test_polytope_paths.py
              lambda x0, x1, max_crossings: polytope.exact_walk(NET, x0, x1, max_crossings=max_crossings,
                                                                keep_regions=False, check="off").n_crossings,
              dict(x0=X0, x1=X1, max_crossings=256), **ends),
        Entry("jaxinterp.polytope.class_change_positions",
              lambda x0, x1, n_steps: (lambda p: (np.isnan(p), np.nan_to_num(p, nan=-1.0)))(
                  polytope.class_change_positions(NET, x0, x1, n_steps=n_steps)),
              dict(x0=X0, x1=X1, n_steps=16), **ends),
        Entry("jaxinterp.polytope.layer_activations",
              lambda x: polytope.layer_activations(NET, x, "relu_0"), dict(x=XS),
              accept={"x.rank_up": MODEL_DECIDES, "x.rank_down": MODEL_DECIDES}),
    ]


def _local_entries(polytope, jaxinterp, words):
    return [
        Entry("jaxinterp.local_complexity",
              lambda x, key, radius, n_directions: polytope.local_complexity(
                  NET, x, key=key, radius=radius, n_directions=n_directions).total,
              dict(x=XS, key=KEY, radius=0.5, n_directions=4), accept={"x.rank_up": MODEL_DECIDES}),
        Entry("jaxinterp.boundary_distances",
              lambda x: polytope.boundary_distances(NET, x).distances, dict(x=XS),
              accept={"x.rank_up": MODEL_DECIDES}),
        Entry("jaxinterp.boundary_density",
              lambda distances, radius: jaxinterp.boundary_density(distances, radius),
              dict(distances=np.abs(XS) + 0.01, radius=0.5), accept={"distances.inf": DISTANCE_INF}),
        Entry("jaxinterp.polytope.sketch_relative_std", lambda n_probes: polytope.sketch_relative_std(n_probes),
              dict(n_probes=16)),
        Entry("jaxinterp.polytope.cluster_codes",
              lambda words, n_clusters: polytope.cluster_codes(words, n_clusters, method="agglomerative"),
              dict(words=words[:12], n_clusters=3), kinds={"words": "codes"}, accept={"words.width": ANY_WIDTH}),
        Entry("jaxinterp.polytope.cluster_activations",
              lambda acts, n_clusters: polytope.cluster_activations(acts, n_clusters, method="agglomerative"),
              dict(acts=X[:12], n_clusters=3)),
        Entry("jaxinterp.polytope.purity", lambda labels, clusters: polytope.purity(labels, clusters),
              dict(labels=CLUSTER_LABELS, clusters=CLUSTER_IDS), kinds={"labels": "labels", "clusters": "labels"},
              pairs=(("labels", "clusters"),)),
        Entry("jaxinterp.polytope.compare_clusterings",
              lambda words, acts, labels, n_clusters: polytope.compare_clusterings(words, acts, labels, n_clusters),
              dict(words=words[:12], acts=X[:12], labels=CLUSTER_LABELS, n_clusters=2),
              kinds={"words": "codes", "labels": "labels"}, pairs=(("labels", "acts"),),
              accept={"words.width": ANY_WIDTH}),
    ]


def entries() -> list[Entry]:
    """This area's registered entries (built on first use: it imports the library)."""
    import jaxinterp
    from jaxinterp import polytope

    codes = polytope.polytope_codes(NET, X)
    words = np.asarray(codes.words)
    return [
        # no data argument: the network and glob patterns (their errors are tested in test_polytope_codes)
        Entry("jaxinterp.polytope.relu_preactivations",
              lambda names: polytope.relu_preactivations(NET, names=names)(XS)["relu_0"], dict(names=("relu_0",))),
        *_codes_entries(polytope, words, codes.layout),
        *_path_entries(polytope),
        *_local_entries(polytope, jaxinterp, words),
    ]
