"""Non-negative matrix factorisation ``x ~ codes @ components`` by coordinate descent (HALS).

Each sweep updates every code column, then every component row, exactly one coordinate block
at a time with the Gram matrices fixed for the sweep: the same updates as scikit-learn's
``NMF(solver="cd")`` (Cichocki & Phan 2009; Hsieh & Dhillon 2011), vectorised over samples.
Initialisation is NNDSVDa (Boutsidis & Gallopoulos 2008), scaled random, or given.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxinterp._validation import check_positive_int, check_shape
from jaxinterp.directions._solvers import hals_sweep
from jaxinterp.directions.base import Directions, validate_data
from jaxinterp.directions.encoders import NNLS
from jaxinterp.directions.learner import Learner, check_choice, check_number, static

INITS = ("auto", "nndsvda", "nndsvd", "random", "custom")


class NMFState(NamedTuple):
    """NMF state: the initial factors before ``update``, the fit after it.

    Attributes:
      codes: ``[n, k]`` non-negative codes of the training data.
      components: ``[k, d]`` non-negative components.
      objective: ``0.5 * ||x - codes @ components||_F^2 + l1 * sum(codes)``.
      n_iter: sweeps run.
      tol: relative tolerance (scalar).
      l1: L1 penalty on the codes (scalar).
    """

    codes: jax.Array
    components: jax.Array
    objective: jax.Array
    n_iter: jax.Array
    tol: jax.Array
    l1: jax.Array


def objective(x, codes, components, l1=0.0):
    """``0.5 ||x - codes @ components||_F^2 + l1 * sum(codes)``."""
    r = x - codes @ components
    return 0.5 * jnp.sum(r * r) + l1 * jnp.sum(codes)


@partial(jax.jit, static_argnums=(1, 2))
def _nndsvd(x, k, fill_mean):
    """NNDSVD(a) initial factors ``(codes [n, k], components [k, d])`` from the truncated SVD."""
    u, s, vt = jnp.linalg.svd(x, full_matrices=False)
    u, s, vt = u[:, :k], s[:k], vt[:k]
    pos = lambda a: jnp.maximum(a, 0.0)  # noqa: E731
    neg = lambda a: jnp.maximum(-a, 0.0)  # noqa: E731
    up, un, vp, vn = pos(u), neg(u), pos(vt), neg(vt)
    nup, nun = jnp.linalg.norm(up, axis=0), jnp.linalg.norm(un, axis=0)
    nvp, nvn = jnp.linalg.norm(vp, axis=1), jnp.linalg.norm(vn, axis=1)
    mp, mn = nup * nvp, nun * nvn
    use_p = mp > mn
    safe = lambda a: jnp.where(a > 0, a, 1.0)  # noqa: E731
    uu = jnp.where(use_p[None, :], up / safe(nup)[None, :], un / safe(nun)[None, :])
    vv = jnp.where(use_p[:, None], vp / safe(nvp)[:, None], vn / safe(nvn)[:, None])
    lbd = jnp.sqrt(s * jnp.where(use_p, mp, mn))
    w = uu * lbd[None, :]
    h = vv * lbd[:, None]
    # the first singular pair has one sign: use it whole
    w = w.at[:, 0].set(jnp.sqrt(s[0]) * jnp.abs(u[:, 0]))
    h = h.at[0].set(jnp.sqrt(s[0]) * jnp.abs(vt[0]))
    w = jnp.where(w < 1e-6, 0.0, w)
    h = jnp.where(h < 1e-6, 0.0, h)
    if fill_mean:
        avg = jnp.mean(x)
        w = jnp.where(w == 0, avg, w)
        h = jnp.where(h == 0, avg, h)
    return w, h


def _random_init(key, x, k):
    """Scaled random factors: ``|N(0, 1)| * sqrt(mean(x) / k)`` (``[n, k]``, ``[k, d]``)."""
    scale = jnp.sqrt(jnp.mean(x) / k)
    k1, k2 = jax.random.split(key)
    return (scale * jnp.abs(jax.random.normal(k1, (x.shape[0], k), x.dtype)),
            scale * jnp.abs(jax.random.normal(k2, (k, x.shape[1]), x.dtype)))


@partial(jax.jit, static_argnames=("max_iter",))
def _nmf(x, codes, comps, tol, l1, *, max_iter):
    x_sq = jnp.sum(x * x)

    def sweep(ct, a):  # codes transposed, [k, n]
        ct = hals_sweep(ct, a @ x.T, a @ a.T, l1)
        ctx, ctc = ct @ x, ct @ ct.T
        a = hals_sweep(a, ctx, ctc, 0.0)
        # the objective from the Gram matrices, without forming the reconstruction
        obj = 0.5 * (x_sq - 2.0 * jnp.sum(ctx * a) + jnp.sum(ctc * (a @ a.T))) + l1 * jnp.sum(ct)
        return ct, a, obj

    def cond(s):
        _, _, it, prev, obj = s
        return (it < max_iter) & ((it < 2) | (prev - obj > tol * jnp.abs(prev)))

    def body(s):
        c, a, it, _, obj = s
        c, a, new = sweep(c, a)
        return c, a, it + 1, obj, new

    obj0 = objective(x, codes, comps, l1)
    ct, a, it, _, _ = jax.lax.while_loop(cond, body, (codes.T, comps, 0, jnp.inf * obj0, obj0))
    return ct.T, a, objective(x, ct.T, a, l1), it


def _nmf_update(state: NMFState, x, *, max_iter) -> NMFState:
    codes, comps, obj, it = _nmf(x, state.codes, state.components, state.tol, state.l1, max_iter=max_iter)
    return NMFState(codes, comps, obj, it, state.tol, state.l1)


def _nmf_finalize(state: NMFState, *, encode_iter) -> Directions:
    return Directions.create(state.components, NNLS(state.l1, n_iter=encode_iter), method="nmf",
                             info={"objective": state.objective, "n_iter": state.n_iter})


def _initial_factors(key, x, k, init, codes_init, components_init):
    n, d = x.shape
    if init == "auto":
        init = "nndsvda" if k <= min(n, d) else "random"
    if init in ("nndsvda", "nndsvd"):
        check_positive_int(k, "k", maximum=min(n, d), maximum_name=f"min(n_samples, n_features) for init={init!r}")
        return _nndsvd(x, k, init == "nndsvda")
    if init == "random":
        return _random_init(key, x, k)
    check_shape(codes_init, "codes_init", (n, k))
    check_shape(components_init, "components_init", (k, d))
    return jnp.asarray(codes_init, x.dtype), jnp.asarray(components_init, x.dtype)


def nmf(k: int, *, max_iter: int = 200, tol: float = 1e-6, init: str = "auto", l1: float = 0.0,
        codes_init=None, components_init=None, encode_iter: int = 100) -> Learner:
    """Factorise non-negative data ``x [n, d]`` as ``codes [n, k] @ components [k, d]``.

    ``encode`` solves the non-negative least-squares codes of new data (``NNLS`` encoder).

    Args:
      k: rank.
      max_iter: maximum coordinate-descent sweeps.
      tol: stop when a sweep lowers the objective by less than ``tol`` (relative; numeric).
      init: ``"nndsvda"``, ``"nndsvd"``, ``"random"``, ``"custom"`` (``codes_init`` and
        ``components_init``) or ``"auto"`` (NNDSVDa when ``k <= min(n, d)``, else random).
      l1: L1 penalty on the codes (numeric).
      codes_init, components_init: ``[n, k]`` and ``[k, d]`` for ``init="custom"``.
      encode_iter: HALS sweeps used by ``encode`` on new data.

    Returns:
      A full-batch ``Learner``; ``info`` holds ``objective`` and ``n_iter``.
    """
    k = check_positive_int(k, "k")
    max_iter = check_positive_int(max_iter, "max_iter")
    encode_iter = check_positive_int(encode_iter, "encode_iter")
    check_choice(init, "init", INITS)
    check_number(tol, "tol")
    check_number(l1, "l1")
    if (init == "custom") != (codes_init is not None and components_init is not None):
        raise ValueError("`codes_init` and `components_init` must both be given exactly when init='custom'.")

    def init_fn(key, x):
        x = validate_data(x, "data", k=k, nonnegative=True)
        codes, comps = _initial_factors(key, x, k, init, codes_init, components_init)
        zero = jnp.zeros((), x.dtype)
        return NMFState(codes, comps, zero, jnp.zeros((), jnp.int32), jnp.asarray(tol, x.dtype),
                        jnp.asarray(l1, x.dtype))

    hyper = dict(k=k, max_iter=max_iter, tol=tol, init=init, l1=l1, encode_iter=encode_iter)
    if init == "custom":
        hyper.update(codes_init=codes_init, components_init=components_init)
    return Learner(init_fn, static(_nmf_update, max_iter=max_iter), static(_nmf_finalize, encode_iter=encode_iter),
                   "nmf", hyper, full_batch=True)
