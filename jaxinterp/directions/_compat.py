"""Transitional one-call wrappers with the pre-learner signatures.

``jaxinterp/__init__.py`` and the interpretability study still import these names; they go
once those callers use ``fit(learner, data, key=...)``. New code uses the learners.
"""

from __future__ import annotations

import jax

from jaxinterp.directions._dictionary import dictionary
from jaxinterp.directions._ica import ica
from jaxinterp.directions._kmeans import kmeans, minibatch_kmeans
from jaxinterp.directions._nmf import nmf
from jaxinterp.directions._pca import pca
from jaxinterp.directions._sae import sae
from jaxinterp.directions.learner import fit

_SAE_KIND = {"relu_l1": "relu"}


def _key(key):
    return jax.random.key(int(key)) if isinstance(key, int) else key


def fit_kmeans(key, x, k, *, cosine=True, response="projection", minibatch=False, batch_size=1024, n_steps=1000,
               **kw):
    """``fit(kmeans(k, ...), x, key=key)`` (or ``minibatch_kmeans`` with ``minibatch=True``)."""
    if minibatch:
        return fit(minibatch_kmeans(k, cosine=cosine, response=response), x, key=_key(key), steps=n_steps,
                   batch_size=batch_size)
    return fit(kmeans(k, cosine=cosine, response=response, **kw), x, key=_key(key))


def fit_pca(x, k, **kw):
    """``fit(pca(k, ...), x, key=...)``."""
    return fit(pca(k, **kw), x, key=jax.random.key(0))


def fit_ica(key, x, k, **kw):
    """``fit(ica(k, ...), x, key=key)``."""
    return fit(ica(k, **kw), x, key=_key(key))


def fit_nmf(key, x, k, **kw):
    """``fit(nmf(k, ...), x, key=key)``."""
    return fit(nmf(k, **kw), x, key=_key(key))


def fit_dictionary(key, x, k, *, n_steps=1000, batch_size=256, progress=False, **kw):
    """``fit(dictionary(k, ...), x, key=key)``."""
    return fit(dictionary(k, **kw), x, key=_key(key), steps=n_steps, batch_size=batch_size, progress=progress)


def fit_sae(key, x, n_latents, kind="relu_l1", *, n_steps=2000, batch_size=256, progress=False, **kw):
    """``fit(sae(n_latents, kind=...), x, key=key)``."""
    learner = sae(n_latents, kind=_SAE_KIND.get(kind, kind), **kw)
    return fit(learner, x, key=_key(key), steps=n_steps, batch_size=batch_size, progress=progress)


def fit_sae_sweep(key, x, n_latents, kind="relu_l1", *, coefs=(0.1,), n_steps=2000, batch_size=256, **kw):
    """``vmap`` of ``fit(sae(..., coef=c))`` over ``coefs``; returns ``(directions, None)``."""
    import jax.numpy as jnp

    run = lambda c: fit_sae(key, x, n_latents, kind, coef=c, n_steps=n_steps, batch_size=batch_size, **kw)  # noqa: E731
    return jax.vmap(run)(jnp.asarray(coefs, jnp.float32)), None
