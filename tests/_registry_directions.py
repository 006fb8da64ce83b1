"""Bad-input battery registrations: the direction learners.

``entries()`` registers every public function of the area once with a valid call; ``EXEMPT``
names the public callables that take no user data, with the reason. Inputs are tiny and the
minibatch learners run a few steps, so the whole area stays within seconds of compilation.
"""

import numpy as np

from _battery import Entry
from _battery_inputs import *  # noqa: F403 - the shared battery inputs

EXEMPT: dict[str, str] = {
    "jaxinterp.directions.unstack": "takes only stacked `Directions` (not array data); a non-stacked or "
                                    "non-Directions argument is a clear error, tested in test_directions.py",
}

DEFAULT_STEPS = "None selects the learner's default number of steps (documented in fit)"
DEFAULT_BATCH = "None selects the learner's default batch size (documented in fit)"
MINIBATCH_ACCEPT = {"steps.none": DEFAULT_STEPS, "batch_size.none": DEFAULT_BATCH}
CODES = np.maximum(X, 0.0)                                           # sparse non-negative codes [64, 8]
TRUE_DIRS = RNG.normal(size=(3, 8)).astype(np.float32)               # planted directions [3, d]
TRUE_CODES = np.maximum(RNG.normal(size=(64, 3)), 0.0).astype(np.float32)
# FastICA needs non-Gaussian sources to have a well-defined answer: 3 uniform sources mixed into 8
_SOURCES = np.random.default_rng(1).uniform(-1.0, 1.0, size=(64, 3))
XICA = (_SOURCES @ np.random.default_rng(2).normal(size=(3, 8))
        + 0.01 * np.random.default_rng(3).normal(size=(64, 8))).astype(np.float32)


def _saelens_entries():
    """SAELens export/import: the SAE and the folder come from the registry; paths are the variants."""
    import tempfile

    from jaxinterp import directions as jd

    sae = jd.fit(jd.sae(8, kind="topk", k=2, steps=4, batch_size=16), X, key=KEY)
    folder = jd.save_saelens(sae, tempfile.mkdtemp(prefix="battery_saelens_"))
    return [
        Entry("jaxinterp.directions.save_saelens",
              lambda directions: jd.load_saelens(jd.save_saelens(directions, tempfile.mkdtemp())).encode(X),
              dict(directions=sae), kinds={"directions": "other"}),
        Entry("jaxinterp.directions.load_saelens", lambda folder: jd.load_saelens(folder).encode(X),
              dict(folder=folder), kinds={"folder": "other"}),
        Entry("jaxinterp.directions.saelens_config", lambda folder: jd.saelens_config(folder)["d_sae"],
              dict(folder=folder), kinds={"folder": "other"}),
    ]


def _fit_entry(kind, make, data, *, minibatch=False, accept=None, rtol=2e-2):
    """``fit(make(), data, key=...)`` (with ``steps`` and ``batch_size`` for minibatch learners)."""
    from jaxinterp import directions as jd
    if minibatch:
        def call(data, key, steps, batch_size):
            return jd.fit(make(), data, key=key, steps=steps, batch_size=batch_size).components
        kwargs = dict(data=data, key=KEY, steps=8, batch_size=16)
        accept = {**MINIBATCH_ACCEPT, **(accept or {})}
    else:
        def call(data, key):
            return jd.fit(make(), data, key=key).components
        kwargs = dict(data=data, key=KEY)
    return Entry(f"jaxinterp.directions.fit[{kind}]", call, kwargs, accept=accept or {}, rtol=rtol)


def _learner_entries(jd) -> list[Entry]:
    return [
        _fit_entry("pca", lambda: jd.pca(3), X, accept={"data.huge": "computed on the data divided by its "
                                                                     "largest magnitude: the axes are finite at 1e30"}),
        _fit_entry("kmeans", lambda: jd.kmeans(4), X,
                   accept={"data.huge": "squared distances are scale-free in the assignment; finite centres"}),
        _fit_entry("cosine_kmeans", lambda: jd.kmeans(4, cosine=True), X,
                   accept={"data.huge": "cosine K-means normalises rows"}, rtol=0.2),
        _fit_entry("ica", lambda: jd.ica(3), XICA,
                   accept={"data.huge": "whitening divides by the data's scale"}, rtol=0.1),
        _fit_entry("nmf", lambda: jd.nmf(3, max_iter=20), XPOS,
                   accept={"data.huge": "NMF is scale-equivariant; the factors are finite"}, rtol=0.1),
        _fit_entry("minibatch_kmeans", lambda: jd.minibatch_kmeans(4, steps=8, batch_size=16), X, minibatch=True,
                   accept={"data.huge": "the centres are running means of data rows"}),
        _fit_entry("dictionary", lambda: jd.dictionary(4, steps=8, batch_size=16, code_iter=20), X, minibatch=True,
                   accept={"data.huge": "atoms are unit-norm; codes are scale-free"}, rtol=0.1),
        _fit_entry("sae", lambda: jd.sae(16, steps=8, batch_size=16), X, minibatch=True,
                   accept={"data.huge": "inputs are normalised to unit mean norm first"}, rtol=0.2),
        Entry("jaxinterp.directions.pca", lambda k: jd.pca(k), dict(k=3)),
        Entry("jaxinterp.directions.kmeans", lambda k, n_init, max_iter, tol: jd.kmeans(
            k, n_init=n_init, max_iter=max_iter, tol=tol), dict(k=3, n_init=1, max_iter=10, tol=1e-4)),
        Entry("jaxinterp.directions.minibatch_kmeans", lambda k, batch_size, steps: jd.minibatch_kmeans(
            k, batch_size=batch_size, steps=steps), dict(k=3, batch_size=32, steps=10)),
        Entry("jaxinterp.directions.ica", lambda k, max_iter, tol, alpha: jd.ica(k, max_iter=max_iter, tol=tol,
                                                                                alpha=alpha),
              dict(k=3, max_iter=10, tol=1e-4, alpha=1.0)),
        Entry("jaxinterp.directions.nmf", lambda k, max_iter, tol, l1: jd.nmf(k, max_iter=max_iter, tol=tol, l1=l1),
              dict(k=3, max_iter=10, tol=1e-6, l1=0.1)),
        Entry("jaxinterp.directions.dictionary", lambda k, alpha, batch_size, steps, code_iter: jd.dictionary(
            k, alpha=alpha, batch_size=batch_size, steps=steps, code_iter=code_iter),
              dict(k=3, alpha=0.1, batch_size=32, steps=10, code_iter=20)),
        Entry("jaxinterp.directions.sae", lambda n_latents, coef, k, learning_rate, batch_size, steps, aux_k: jd.sae(
            n_latents, kind="topk", coef=coef, k=k, learning_rate=learning_rate, batch_size=batch_size, steps=steps,
            aux_k=aux_k), dict(n_latents=16, coef=0.1, k=4, learning_rate=1e-3, batch_size=32, steps=10, aux_k=8),
              accept={"coef.none": "None selects the kind's default coefficient (documented)",
                      "aux_k.zero": "0 disables the auxiliary loss (documented)"}),
    ]


def _function_entries(jd) -> list[Entry]:
    x_hat = (0.9 * X).astype(np.float32)
    cov = np.cov(X, rowvar=False).astype(np.float32)
    fitted = jd.fit(jd.pca(3), X, key=KEY)
    return [
        Entry("jaxinterp.directions.pca_from_moments", lambda mean, cov, k: jd.pca_from_moments(mean, cov, k).components,
              dict(mean=X.mean(0), cov=cov, k=3),
              accept={"mean.huge": "the mean only centres later inputs",
                      "cov.huge": "the eigendecomposition runs on the covariance divided by its largest entry"}),
        Entry("jaxinterp.directions.sparse_encode", lambda x, dictionary, alpha, n_iter: jd.sparse_encode(
            x, dictionary, alpha, n_iter=n_iter), dict(x=X[:16], dictionary=TRUE_DIRS, alpha=0.1, n_iter=50),
              rtol=0.1, accept={"x.huge": "lasso codes are finite for finite data",
                                "dictionary.huge": "lasso codes are finite for finite atoms"}),
        Entry("jaxinterp.directions.mse", lambda x, x_hat: jd.mse(x, x_hat), dict(x=X, x_hat=x_hat),
              pairs=(("x", "x_hat"),)),
        Entry("jaxinterp.directions.explained_variance", lambda x, x_hat: jd.explained_variance(x, x_hat),
              dict(x=X, x_hat=x_hat), pairs=(("x", "x_hat"),)),
        Entry("jaxinterp.directions.l0", lambda codes: jd.l0(codes), dict(codes=CODES)),
        Entry("jaxinterp.directions.feature_density", lambda codes: jd.feature_density(codes), dict(codes=CODES)),
        Entry("jaxinterp.directions.dead_fraction", lambda codes, window: jd.dead_fraction(codes, window),
              dict(codes=CODES, window=10), accept={"window.none": "None uses every sample (documented)"}),
        Entry("jaxinterp.directions.feature_density_histogram",
              lambda codes, bins, low: jd.feature_density_histogram(codes, bins, low)["counts"],
              dict(codes=CODES, bins=10, low=-3.0)),
        Entry("jaxinterp.directions.cosine_matrix", lambda a, b: jd.cosine_matrix(a, b), dict(a=X[:5], b=X[:7])),
        Entry("jaxinterp.directions.mean_max_cosine", lambda learned, true: jd.mean_max_cosine(learned, true),
              dict(learned=X[:7], true=TRUE_DIRS)),
        Entry("jaxinterp.directions.correlation_matrix", lambda a, b: jd.correlation_matrix(a, b),
              dict(a=CODES, b=X), pairs=(("a", "b"),)),
        Entry("jaxinterp.directions.matched_correlations", lambda true_codes, learned_codes: jd.matched_correlations(
            true_codes, learned_codes)[2], dict(true_codes=TRUE_CODES, learned_codes=CODES),
              pairs=(("true_codes", "learned_codes"),)),
        Entry("jaxinterp.directions.mcc", lambda true_codes, learned_codes: jd.mcc(true_codes, learned_codes),
              dict(true_codes=TRUE_CODES, learned_codes=CODES), pairs=(("true_codes", "learned_codes"),)),
        Entry("jaxinterp.directions.evaluate", lambda x, true_codes, true_directions, batch_size: jd.evaluate(
            fitted, x, true_codes=true_codes, true_directions=true_directions, batch_size=batch_size),
              dict(x=X, true_codes=TRUE_CODES, true_directions=TRUE_DIRS, batch_size=32),
              pairs=(("x", "true_codes"),),
              accept={"true_codes.huge": "correlations are scale-free", "true_directions.huge": "cosines are "
                      "scale-free", "true_codes.none": "optional: None leaves `mcc` out (documented)",
                      "true_directions.none": "optional: None leaves `mean_max_cosine` out (documented)"}),
    ]


def entries() -> list[Entry]:
    """This area's registered entries (built on first use: it imports the library)."""
    from jaxinterp import directions as jd
    return _learner_entries(jd) + _function_entries(jd) + _saelens_entries()
