"""Quality of learned directions: reconstruction, sparsity, dead latents, ground-truth recovery."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import linear_sum_assignment

from jaxinterp._validation import check_positive_int, check_real, check_same_leading, check_shape, is_concrete
from jaxinterp.directions.base import Directions, validate_data
from jaxinterp.directions.learner import check_bool


def _pair(x, x_hat):
    """``x, x_hat`` validated as finite ``[n, d]`` arrays of the same shape (half precision in float32)."""
    x = validate_data(x, "x")
    x_hat = validate_data(x_hat, "x_hat")
    check_shape(x_hat, "x_hat", tuple(x.shape))
    return x, x_hat


def _codes(codes, name: str = "codes") -> jax.Array:
    """``codes [n, k]`` validated (floating, finite, at least one row)."""
    return validate_data(codes, name)


def _max_abs(a: jax.Array, axis=None) -> jax.Array:
    """Largest magnitude along ``axis`` (1 where it is 0): divide by it before squaring."""
    m = jnp.max(jnp.abs(a), axis=axis, keepdims=axis is not None)
    return jnp.where(m > 0, m, 1.0)


def mse(x: jax.Array, x_hat: jax.Array) -> jax.Array:
    """Mean squared reconstruction error over all entries of ``x, x_hat [n, d]``.

    Raises ValueError when the error is too large for the dtype (e.g. data near 1e30 in float32).
    """
    x, x_hat = _pair(x, x_hat)
    out = _mse(x, x_hat)
    if is_concrete(out) and not np.isfinite(float(out)):
        raise ValueError(f"the mean squared error of `x` and `x_hat` overflows {out.dtype}; rescale the data.")
    return out


@jax.jit
def _mse(x, x_hat):
    s = jnp.maximum(_max_abs(x), _max_abs(x_hat))
    return jnp.mean(((x - x_hat) / s) ** 2) * s**2


def explained_variance(x: jax.Array, x_hat: jax.Array) -> jax.Array:
    """``1 - sum ||x - x_hat||^2 / sum ||x - mean(x)||^2`` (variance measured around the mean).

    Computed on values divided by the largest magnitude, so it is finite for any finite input.

    Args:
      x: ``[n, d]`` data.
      x_hat: ``[n, d]`` reconstruction.
    """
    out = _explained_variance(*_pair(x, x_hat))
    if is_concrete(out) and not np.isfinite(float(out)):
        raise ValueError(f"the explained variance of `x_hat` overflows {out.dtype}: the residual is too large "
                         "against the variance of `x`; rescale the data.")
    return out


@jax.jit
def _explained_variance(x, x_hat):
    r = x - x_hat
    xc = x - jnp.mean(x, axis=0, keepdims=True)
    rs, cs = _max_abs(r), _max_abs(xc)  # each sum of squares on its own scale: no overflow
    resid = jnp.sum((r / rs) ** 2)
    total = jnp.maximum(jnp.sum((xc / cs) ** 2), jnp.finfo(x.dtype).tiny)
    return 1.0 - (resid / total) * (rs / cs) ** 2


def l0(codes: jax.Array) -> jax.Array:
    """Mean number of non-zero codes per sample, ``codes [n, k]``."""
    return _l0(_codes(codes))


@jax.jit
def _l0(codes):
    return jnp.mean(jnp.sum(codes != 0, axis=1).astype(jnp.float32))


def feature_density(codes: jax.Array) -> jax.Array:
    """Fraction of samples on which each latent is non-zero, ``[n, k] -> [k]``."""
    return _feature_density(_codes(codes))


@jax.jit
def _feature_density(codes):
    return jnp.mean((codes != 0).astype(jnp.float32), axis=0)


def dead_fraction(codes: jax.Array, window: int | None = None) -> jax.Array:
    """Fraction of latents that are zero on every sample of the window.

    Args:
      codes: ``[n, k]`` codes, in stream order.
      window: use the last ``window`` samples (default: all ``n``).

    Returns:
      Scalar in [0, 1].
    """
    codes = _codes(codes)
    if window is not None:
        window = check_positive_int(window, "window", maximum=codes.shape[0], maximum_name="number of samples")
        codes = codes[-window:]
    return jnp.mean((_feature_density(codes) == 0).astype(jnp.float32))


def feature_density_histogram(codes: jax.Array, bins: int = 30, low: float = -6.0) -> dict:
    """Histogram of log10 feature densities (dead latents counted apart).

    Args:
      codes: ``[n, k]`` codes.
      bins: number of bins between ``low`` and 0.
      low: lowest log10 density shown (densities below it go to the first bin).

    Returns:
      ``{"counts" [bins], "edges" [bins + 1], "dead": int, "log10_density" [k]}`` (numpy; dead
      latents have ``-inf``).
    """
    bins = check_positive_int(bins, "bins")
    low = check_real(low, "low", high=-1e-12)
    dens = np.asarray(feature_density(codes), dtype=np.float64)
    with np.errstate(divide="ignore"):
        logd = np.log10(dens)
    live = logd[np.isfinite(logd)]
    counts, edges = np.histogram(np.clip(live, low, 0.0), bins=bins, range=(low, 0.0))
    return {"counts": counts, "edges": edges, "dead": int(np.sum(~np.isfinite(logd))), "log10_density": logd}


def cosine_matrix(a: jax.Array, b: jax.Array) -> jax.Array:
    """Cosine similarities ``[p, q]`` between the rows of ``a [p, d]`` and ``b [q, d]`` (zero rows give 0)."""
    a = validate_data(a, "a")
    b = validate_data(b, "b")
    check_shape(b, "b", (None, a.shape[1]))
    return _cosine_matrix(a, b)


@jax.jit
def _cosine_matrix(a, b):
    a, b = a / _max_abs(a, 1), b / _max_abs(b, 1)  # no overflow in the norms
    an = a / jnp.maximum(jnp.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    bn = b / jnp.maximum(jnp.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return an @ bn.T


def mean_max_cosine(learned: jax.Array, true: jax.Array, *, absolute: bool = True) -> jax.Array:
    """Recovery of planted features: for each true feature the best cosine with a learned one, averaged.

    Args:
      learned: ``[k, d]`` learned directions.
      true: ``[f, d]`` ground-truth feature directions.
      absolute: ignore the sign (PCA and ICA directions have arbitrary sign).

    Returns:
      Scalar in [-1, 1] (``[0, 1]`` with ``absolute``).
    """
    absolute = check_bool(absolute, "absolute")
    c = cosine_matrix(validate_data(true, "true"), validate_data(learned, "learned"))
    if absolute:
        c = jnp.abs(c)
    return jnp.mean(jnp.max(c, axis=1))


def correlation_matrix(a: jax.Array, b: jax.Array) -> jax.Array:
    """Pearson correlations ``[p, q]`` between the columns of ``a [n, p]`` and ``b [n, q]``.

    Constant columns get correlation 0.
    """
    a = validate_data(a, "a")
    b = validate_data(b, "b")
    check_same_leading("a", a, "b", b)
    return _correlation_matrix(a, b)


@jax.jit
def _correlation_matrix(a, b):
    a = a - jnp.mean(a, axis=0, keepdims=True)
    b = b - jnp.mean(b, axis=0, keepdims=True)
    a, b = a / _max_abs(a, 0), b / _max_abs(b, 0)  # no overflow in the norms
    na = jnp.linalg.norm(a, axis=0)
    nb = jnp.linalg.norm(b, axis=0)
    c = (a.T @ b) / jnp.maximum(na[:, None] * nb[None, :], 1e-30)
    return jnp.where((na[:, None] > 0) & (nb[None, :] > 0), c, 0.0)


def matched_correlations(true_codes: jax.Array, learned_codes: jax.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-to-one matching of true and learned features maximising total |correlation|.

    Uses the Hungarian algorithm (``scipy.optimize.linear_sum_assignment``).

    Args:
      true_codes: ``[n, f]`` ground-truth feature activations.
      learned_codes: ``[n, k]`` learned codes.

    Returns:
      ``(true_idx, learned_idx, |corr|)`` of the ``min(f, k)`` matched pairs.
    """
    true_codes, learned_codes = _codes(true_codes, "true_codes"), _codes(learned_codes, "learned_codes")
    check_same_leading("true_codes", true_codes, "learned_codes", learned_codes)
    c = np.abs(np.asarray(correlation_matrix(true_codes, learned_codes), dtype=np.float64))
    rows, cols = linear_sum_assignment(-c)
    return rows, cols, c[rows, cols]


def mcc(true_codes: jax.Array, learned_codes: jax.Array) -> float:
    """Mean correlation coefficient after Hungarian matching (averaged over the true features).

    Unmatched true features (when ``k < f``) count as 0.

    Args:
      true_codes: ``[n, f]``.
      learned_codes: ``[n, k]``.

    Returns:
      Float in [0, 1].
    """
    _, _, corr = matched_correlations(true_codes, learned_codes)
    return float(np.sum(corr) / np.shape(true_codes)[1])


def evaluate(directions: Directions, x: jax.Array, *, true_codes=None, true_directions=None,
             batch_size: int = 8192, histogram: bool = False) -> dict:
    """All metrics of ``directions`` on activations ``x`` (and ground truth when given).

    Args:
      directions: learned ``Directions``.
      x: ``[n, d]`` held-out activations.
      true_codes: optional ``[n, f]`` planted feature activations of ``x`` (adds ``mcc``).
      true_directions: optional ``[f, d]`` planted directions (adds ``mean_max_cosine``).
      batch_size: rows encoded at a time.
      histogram: add ``density_histogram`` (see ``feature_density_histogram``).

    Returns:
      dict of floats: ``mse``, ``explained_variance``, ``l0``, ``dead_fraction``, and
      ``mean_max_cosine`` / ``mcc`` when ground truth is given.
    """
    if not isinstance(directions, Directions):
        raise TypeError(f"`directions` must be Directions from fit(...); got {type(directions).__name__}.")
    x = validate_data(x, "x")
    if x.shape[1] != directions.dim:
        raise ValueError(f"`x` must have shape (*, {directions.dim}); got {x.shape}.")
    batch_size = check_positive_int(batch_size, "batch_size")
    histogram = check_bool(histogram, "histogram")
    if true_codes is not None:
        true_codes = _codes(true_codes, "true_codes")
        check_same_leading("x", x, "true_codes", true_codes)
    if true_directions is not None:
        true_directions = validate_data(true_directions, "true_directions")
        check_shape(true_directions, "true_directions", (None, directions.dim))
    # op by op: the iterative encoders are jitted inside, and one more compilation per fitted
    # object would cost more than it saves on held-out sets of this size
    codes = jnp.concatenate([directions.codes(x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)])
    x_hat = directions.decode(codes)
    out = {
        "mse": float(mse(x, x_hat)),
        "explained_variance": float(explained_variance(x, x_hat)),
        "l0": float(l0(codes)),
        "dead_fraction": float(dead_fraction(codes)),
    }
    if true_directions is not None:
        out["mean_max_cosine"] = float(mean_max_cosine(directions.unit_directions(), jnp.asarray(true_directions)))
    if true_codes is not None:
        out["mcc"] = mcc(true_codes, codes)
    if histogram:
        out["density_histogram"] = feature_density_histogram(codes)
    return out
