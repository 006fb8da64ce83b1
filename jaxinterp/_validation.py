"""Argument checks shared by every public entry point.

Each check raises ``ValueError`` or ``TypeError`` whose message names the argument, what was
expected and what was received. Shape checks work on tracers (they only read ``.shape``), so
they run at trace time under ``jit``; value checks (finiteness, signs) run only on concrete
arrays and are skipped silently on tracers.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np


def is_concrete(x) -> bool:
    """True when ``x`` holds actual values (not an abstract tracer)."""
    return not isinstance(x, jax.core.Tracer)


def check_rank(x, name: str, rank: int | Sequence[int]) -> None:
    """Raise ValueError unless ``x.ndim`` is ``rank`` (or one of ``rank``)."""
    ranks = (rank,) if isinstance(rank, int) else tuple(rank)
    ndim = np.ndim(x)
    if ndim not in ranks:
        want = " or ".join(str(r) for r in ranks)
        raise ValueError(f"`{name}` must have rank {want}; got shape {tuple(np.shape(x))}.")


def check_shape(x, name: str, shape: Sequence[int | None]) -> None:
    """Raise ValueError unless ``x.shape`` matches ``shape`` (``None`` matches any size)."""
    got = tuple(np.shape(x))
    if len(got) != len(shape) or any(s is not None and s != g for s, g in zip(shape, got)):
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"`{name}` must have shape {want}; got {got}.")


def check_same_leading(name_a: str, a, name_b: str, b) -> None:
    """Raise ValueError unless ``a`` and ``b`` have the same length along axis 0."""
    if np.shape(a)[:1] != np.shape(b)[:1]:
        raise ValueError(
            f"`{name_a}` and `{name_b}` must have the same length along axis 0; "
            f"got {np.shape(a)[:1]} and {np.shape(b)[:1]}."
        )


def check_floating(x, name: str) -> None:
    """Raise TypeError unless ``x`` has a floating dtype."""
    if not np.issubdtype(np.asarray(x).dtype if is_concrete(x) else x.dtype, np.floating):
        raise TypeError(f"`{name}` must have a floating dtype; got {x.dtype}.")


def check_finite(x, name: str) -> None:
    """Raise ValueError if a concrete ``x`` contains NaN or infinity."""
    if is_concrete(x):
        arr = np.asarray(x)
        if np.issubdtype(arr.dtype, np.inexact) and not np.all(np.isfinite(arr)):
            bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
            raise ValueError(f"`{name}` contains {bad} NaN or infinite value(s); clean the input first.")


def check_nonnegative(x, name: str) -> None:
    """Raise ValueError if a concrete ``x`` has a negative entry."""
    if is_concrete(x):
        low = np.min(np.asarray(x)) if np.size(x) else 0
        if low < 0:
            raise ValueError(f"`{name}` must be non-negative; its minimum is {low}.")


def check_positive_int(value, name: str, *, maximum: int | None = None, maximum_name: str = "") -> int:
    """Return ``value`` as int, raising ValueError unless 1 <= value (<= maximum)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"`{name}` must be an int; got {type(value).__name__}.")
    if value < 1:
        raise ValueError(f"`{name}` must be >= 1; got {value}.")
    if maximum is not None and value > maximum:
        where = f" ({maximum_name})" if maximum_name else ""
        raise ValueError(f"`{name}` must be <= {maximum}{where}; got {value}.")
    return int(value)


def check_in_range(value, name: str, low: float, high: float, *, inclusive: bool = True) -> float:
    """Return ``value`` as float, raising ValueError unless low <= value <= high."""
    v = float(value)
    ok = low <= v <= high if inclusive else low < v < high
    if not ok:
        br = "[]" if inclusive else "()"
        raise ValueError(f"`{name}` must lie in {br[0]}{low}, {high}{br[1]}; got {value}.")
    return v


def check_key(key, name: str = "key"):
    """Return ``key``, raising TypeError unless it is a typed PRNG key (``jax.random.key(seed)``)."""
    if not (isinstance(key, jax.Array) and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)):
        got = type(key).__name__ if not hasattr(key, "dtype") else f"{type(key).__name__} of dtype {key.dtype}"
        raise TypeError(f"`{name}` must be a typed PRNG key from jax.random.key(seed) (raw uint32 keys from "
                        f"jax.random.PRNGKey are not accepted); got {got}.")
    return key


def check_real(value, name: str, *, low: float = -np.inf, high: float = np.inf, open_low: bool = False) -> float:
    """Return a real scalar ``value`` as float, raising TypeError for non-numbers (strings, None,
    bools, arrays of size > 1) and ValueError unless it is finite and in ``[low, high]`` (``(low,
    high]`` with ``open_low``)."""
    if isinstance(value, (bool, np.bool_)) or not (
            isinstance(value, (int, float, np.integer, np.floating))
            or (hasattr(value, "dtype") and np.ndim(value) == 0 and np.issubdtype(np.asarray(value).dtype,
                                                                                   np.number))):
        raise TypeError(f"`{name}` must be a real number; got {type(value).__name__} {value!r}.")
    v = float(value)
    if not np.isfinite(v):
        raise ValueError(f"`{name}` must be finite; got {v}.")
    if (v <= low if open_low else v < low) or v > high:
        br = "(" if open_low else "["
        raise ValueError(f"`{name}` must lie in {br}{low}, {high}]; got {v}.")
    return v


def check_nonempty(x, name: str) -> None:
    """Raise ValueError if ``x`` has no rows (length 0 along axis 0) or no entries."""
    shape = tuple(np.shape(x))
    if not shape or shape[0] == 0 or 0 in shape:
        raise ValueError(f"`{name}` must be non-empty; got shape {shape}.")


def check_unsigned(x, name: str) -> None:
    """Raise TypeError unless ``x`` has an unsigned integer dtype (packed bit codes)."""
    dtype = x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype
    if not np.issubdtype(dtype, np.unsignedinteger):
        raise TypeError(f"`{name}` must hold packed codes of an unsigned integer dtype (uint32); got {dtype}.")


def check_integer_labels(x, name: str) -> np.ndarray:
    """Return concrete ``x`` as a numpy array, raising unless it is a non-empty rank-1 array of
    non-negative integers (an integer dtype: float labels such as ``2.5`` or NaN are refused)."""
    arr = np.asarray(x) if not isinstance(x, str) and x is not None else None
    if arr is None or not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
        got = type(x).__name__ if arr is None else arr.dtype
        raise TypeError(f"`{name}` must be an array of integer labels; got {got}.")
    check_rank(arr, name, 1)
    check_nonempty(arr, name)
    check_nonnegative(arr, name)
    return arr


def float32_if_half(x):
    """``x`` as float32 when its dtype is float16 or bfloat16 (half precision is computed in
    float32), otherwise unchanged."""
    dtype = getattr(x, "dtype", None)
    if dtype is not None and np.dtype(dtype).name in ("float16", "bfloat16"):
        return x.astype(np.float32) if isinstance(x, np.ndarray) else jax.numpy.asarray(x, jax.numpy.float32)
    return x


def check_seed(seed, name: str = "seed") -> int:
    """Return an integer seed as int, raising TypeError for non-integers (floats, strings, None,
    bools) and ValueError for negative seeds (numpy's generators refuse them)."""
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"`{name}` must be a non-negative int; got {type(seed).__name__} {seed!r}.")
    if seed < 0:
        raise ValueError(f"`{name}` must be >= 0; got {seed}.")
    return int(seed)


def check_classifier_data(x, y, batch_size) -> tuple[int, int]:
    """Validate a classifier's training data and minibatch size; return ``(n, batch_size)``.

    ``x`` must be a finite floating array ``[n, ...]``, ``y`` integer labels ``[n]`` and
    ``batch_size`` an int in ``[1, n]``.
    """
    check_same_leading("x", x, "y", y)
    x_dtype = np.asarray(x).dtype
    if not np.issubdtype(x_dtype, np.floating):
        raise TypeError(f"`x` must have a floating dtype; got {x_dtype}.")
    check_finite(x, "x")
    check_integer_labels(y, "y")
    n = int(np.shape(x)[0])
    return n, check_positive_int(batch_size, "batch_size", maximum=n, maximum_name="number of samples")
