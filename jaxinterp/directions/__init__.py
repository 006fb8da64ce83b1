"""Sparse direction learning: K-means, PCA, FastICA, NMF, dictionary learning, sparse autoencoders.

One idiom for every method. A factory whose arguments are the hyperparameters returns a
``Learner`` (pure ``init`` / ``update`` / ``finalize``); the one driver ``fit`` runs any learner
on an array, a memmap or an iterable of batches and returns ``Directions`` with
``encode(x) [batch, k]``, ``codes``, ``decode`` and ``components [k, d]``::

    from jaxinterp import directions as jd

    dirs = jd.fit(jd.kmeans(16, cosine=True), x, key=jax.random.key(0))
    dirs = jd.fit(jd.sae(64, kind="topk", k=4), x, key=key, steps=2000)
    responses = dirs.encode(x)                                   # [n, 16]
    sweep = jax.vmap(lambda c: jd.fit(jd.sae(64, coef=c), x, key=key))(jnp.array([0.1, 1.0]))

How ``encode`` works is the type of ``dirs.encoder`` (``Linear``, ``ReLU``, ``TopK``,
``BatchTopK``, ``JumpReLU``, ``NearestCentroid``, ``CosineCentroid``, ``NNLS``, ``Lasso``).
"""

from jaxinterp.directions._dictionary import dictionary, sparse_encode
from jaxinterp.directions._ica import ica
from jaxinterp.directions._kmeans import kmeans, kmeans_plusplus, minibatch_kmeans
from jaxinterp.directions._nmf import nmf
from jaxinterp.directions._pca import pca, pca_from_moments
from jaxinterp.directions._sae import sae
from jaxinterp.directions.base import Directions, unstack
from jaxinterp.directions.encoders import (
    NNLS,
    BatchTopK,
    CosineCentroid,
    Encoder,
    JumpReLU,
    Lasso,
    Linear,
    NearestCentroid,
    ReLU,
    TopK,
)
from jaxinterp.directions.learner import Learner, fit
from jaxinterp.directions.metrics import (
    correlation_matrix,
    cosine_matrix,
    dead_fraction,
    evaluate,
    explained_variance,
    feature_density,
    feature_density_histogram,
    l0,
    matched_correlations,
    mcc,
    mean_max_cosine,
    mse,
)

from jaxinterp.directions.saelens import load_saelens, save_saelens, saelens_config

__all__ = [
    "Learner", "fit",
    "kmeans", "minibatch_kmeans", "pca", "ica", "nmf", "dictionary", "sae",
    "Directions", "unstack",
    "Encoder", "Linear", "ReLU", "TopK", "BatchTopK", "JumpReLU", "NearestCentroid", "CosineCentroid", "NNLS",
    "Lasso",
    "pca_from_moments", "sparse_encode",
    "save_saelens", "load_saelens", "saelens_config",
    "correlation_matrix", "cosine_matrix", "dead_fraction", "evaluate", "explained_variance", "feature_density",
    "feature_density_histogram", "l0", "matched_correlations", "mcc", "mean_max_cosine", "mse",
]
