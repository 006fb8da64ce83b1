"""Clustering inputs by polytope codes (Hamming) against clustering their activations.

The polytope lens's monosemanticity test: if polytopes are natural units, clusters of inputs
with similar codes should be purer in class labels than clusters of their activations. Both
representations go through the same algorithms:

* K-means: on activations, and on codes as +/-1 vectors, whose squared Euclidean distance is
  4 x Hamming (so K-means on them minimises within-cluster Hamming distance to the centroids);
* agglomerative clustering on precomputed distances: Hamming for codes, Euclidean for activations.
"""

from __future__ import annotations

import numpy as np

from jaxinterp._validation import (check_finite, check_floating, check_integer_labels, check_nonempty,
                                   check_positive_int, check_rank, check_same_leading)
from jaxinterp.polytope.codes import check_codes, pairwise_hamming, unpack_bits

_LINKAGES = ("average", "complete", "single")


def _agglomerative(dist: np.ndarray, n_clusters: int, linkage: str) -> np.ndarray:
    if linkage not in _LINKAGES:
        raise ValueError(f"`linkage` must be one of {_LINKAGES}; got {linkage!r}.")
    from sklearn.cluster import AgglomerativeClustering  # imported on use: scikit-learn is slow to import

    model = AgglomerativeClustering(n_clusters=n_clusters, metric="precomputed", linkage=linkage)
    return model.fit_predict(dist.astype(np.float64))


def _kmeans_labels(points: np.ndarray, n_clusters: int, seed: int) -> np.ndarray:
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=n_clusters, n_init=4, random_state=seed).fit_predict(points)


def cluster_codes(words, n_clusters: int, *, method: str = "kmeans", seed: int = 0,
                  linkage: str = "average") -> np.ndarray:
    """Cluster packed codes ``[n, n_words]`` by Hamming distance: int labels ``[n]``.

    ``method="kmeans"`` runs K-means on the codes as +/-1 vectors (squared distance 4 x Hamming);
    ``"agglomerative"`` clusters the precomputed Hamming distances with ``linkage``.
    """
    w = np.asarray(check_codes(words, "words", 2))
    check_nonempty(w, "words")
    n_clusters = check_positive_int(n_clusters, "n_clusters", maximum=len(w), maximum_name="number of inputs")
    if method == "kmeans":
        signs = np.asarray(unpack_bits(w, w.shape[1] * 32), np.float64) * 2 - 1
        return _kmeans_labels(signs, n_clusters, seed)
    if method == "agglomerative":
        return _agglomerative(pairwise_hamming(w), n_clusters, linkage)
    raise ValueError(f"`method` must be 'kmeans' or 'agglomerative'; got {method!r}.")


def cluster_activations(acts, n_clusters: int, *, method: str = "kmeans", seed: int = 0,
                        linkage: str = "average") -> np.ndarray:
    """Cluster activations ``[n, d]`` by K-means or agglomerative (Euclidean): int labels ``[n]``."""
    if acts is None or isinstance(acts, str):
        raise TypeError(f"`acts` must be an array [n, d]; got {type(acts).__name__}.")
    check_rank(acts, "acts", 2)
    check_nonempty(acts, "acts")
    check_floating(acts, "acts")
    a = np.asarray(acts, np.float64)
    check_finite(a, "acts")
    n_clusters = check_positive_int(n_clusters, "n_clusters", maximum=len(a), maximum_name="number of inputs")
    if method == "kmeans":
        return _kmeans_labels(a, n_clusters, seed)
    if method == "agglomerative":
        from sklearn.metrics.pairwise import euclidean_distances

        return _agglomerative(euclidean_distances(a), n_clusters, linkage)
    raise ValueError(f"`method` must be 'kmeans' or 'agglomerative'; got {method!r}.")


def purity(labels, clusters) -> float:
    """Cluster purity: fraction of inputs carrying their cluster's majority label.

    Args:
      labels: non-negative integer class labels ``[n]``.
      clusters: non-negative integer cluster ids ``[n]``.
    """
    labels = check_integer_labels(labels, "labels")
    clusters = check_integer_labels(clusters, "clusters")
    check_same_leading("labels", labels, "clusters", clusters)
    _, c = np.unique(clusters, return_inverse=True)
    _, y = np.unique(labels, return_inverse=True)
    table = np.zeros((c.max() + 1, y.max() + 1), np.int64)
    np.add.at(table, (c, y), 1)
    return float(table.max(axis=1).sum() / labels.size)


def compare_clusterings(words, acts, labels, n_clusters: int, *, linkage: str = "average",
                        seed: int = 0) -> dict[str, float]:
    """Purity and NMI (against ``labels``) of clusters of codes vs clusters of activations.

    Args:
      words: packed codes ``[n, n_words]``.
      acts: activations ``[n, d]`` of the same inputs.
      labels: class labels ``[n]``.
      n_clusters: clusters for every method.
      linkage: agglomerative linkage (codes and activations alike).
      seed: K-means seed.

    Returns:
      ``purity_codes`` / ``purity_activations`` (K-means on each), ``purity_codes_agglomerative`` /
      ``purity_activations_agglomerative``, and the matching ``nmi_*`` entries.
    """
    from sklearn.metrics import normalized_mutual_info_score

    labels = check_integer_labels(labels, "labels")
    check_same_leading("words", words, "labels", labels)
    check_same_leading("acts", acts, "labels", labels)
    runs = {
        "codes": cluster_codes(words, n_clusters, method="kmeans", seed=seed),
        "activations": cluster_activations(acts, n_clusters, method="kmeans", seed=seed),
        "codes_agglomerative": cluster_codes(words, n_clusters, method="agglomerative", linkage=linkage),
        "activations_agglomerative": cluster_activations(acts, n_clusters, method="agglomerative", linkage=linkage),
    }
    out = {}
    for name, c in runs.items():
        out[f"purity_{name}"] = purity(labels, c)
        out[f"nmi_{name}"] = float(normalized_mutual_info_score(labels, c))
    return out
