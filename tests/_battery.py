"""The bad-input battery engine: derive bad variants of one valid call and classify the outcome.

In the style of scikit-learn's ``check_estimator``: every public function is registered once
with a valid call (``Entry``); the engine derives the bad variants from the argument kinds and
requires, for each, either a clear error (``ValueError``/``TypeError``/``KeyError`` whose message
names the argument) or a documented, tested behaviour (listed in ``Entry.accept`` with the
reason). A result that comes back although the input was bad is checked for what can be
checked: finiteness always, and for float16/list inputs agreement with the float32/array call.

Outcomes: ``clear`` (good), ``accepted`` (documented behaviour held), and the failures
``obscure`` (an error that does not name the argument, or an internal exception type),
``nan`` (non-finite output) and ``silent`` (a plausible result for input that must be refused).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

CLEAR_ERRORS = (ValueError, TypeError, KeyError, IndexError)

#: variant -> what a bad input of that kind must produce (besides a clear error)
#: "raise": must raise; "finite": may return, but the output must be finite;
#: "close": may return, but the output must match the clean call's (within ``rtol``).
ARRAY_VARIANTS = {
    "nan": "raise",
    "inf": "raise",
    "rank_up": "raise",
    "rank_down": "raise",
    "empty": "raise",
    "none": "raise",
    "string": "raise",
    "float16": "close",
    "huge": "finite",
    "list": "close",
}
INT_VARIANTS = {"zero": "raise", "negative": "raise", "fraction": "raise", "string": "raise", "none": "raise",
                "nan": "raise"}
FLOAT_VARIANTS = {"nan": "raise", "inf": "raise", "string": "raise", "none": "raise"}
KEY_VARIANTS = {"none": "raise", "int": "raise", "raw_uint32": "raise"}
#: integer class labels / group ids / predictions
LABEL_VARIANTS = {"fraction": "raise", "nan": "raise", "negative": "raise", "none": "raise", "string": "raise",
                  "empty": "raise", "rank_up": "raise"}
#: packed polytope codes (uint32 words)
CODE_VARIANTS = {"float": "raise", "width": "raise", "none": "raise", "string": "raise", "rank_down": "raise"}


@dataclasses.dataclass
class Entry:
    """One public function and a valid call of it.

    Attributes:
      name: dotted public name, e.g. ``"jaxinterp.polytope.hamming"``.
      call: ``call(**kwargs)`` calls the function (a lambda that places positional arguments).
      kwargs: a valid call's arguments. Their kinds are inferred (float ndarrays -> array
        variants, Python ints -> integer variants, Python floats -> float variants, typed PRNG
        keys -> key variants) unless given in ``kinds``.
      kinds: overrides ``{arg: "array" | "int" | "float" | "key" | "other"}``.
      pairs: argument pairs that must agree on their leading axis (``("x", "labels")``): a
        variant drops one row of the second.
      accept: ``{f"{arg}.{variant}": reason}`` for documented behaviours: the variant may
        return, and its output is checked as in ``ARRAY_VARIANTS`` with "finite" at least.
      rtol: tolerance for "close" checks.
      aliases: ``{arg: (other names,)}`` an error may use instead of the argument's name (e.g.
        ``stream`` reports non-finite ``activations`` computed from ``data``).
    """

    name: str
    call: Callable[..., Any]
    kwargs: dict[str, Any]
    kinds: dict[str, str] = dataclasses.field(default_factory=dict)
    pairs: tuple[tuple[str, str], ...] = ()
    accept: dict[str, str] = dataclasses.field(default_factory=dict)
    rtol: float = 2e-2
    aliases: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)

    def kind(self, arg: str) -> str:
        if arg in self.kinds:
            return self.kinds[arg]
        v = self.kwargs[arg]
        if isinstance(v, bool):
            return "other"
        if isinstance(v, int):
            return "int"
        if isinstance(v, float):
            return "float"
        if isinstance(v, jax.Array) and jax.dtypes.issubdtype(v.dtype, jax.dtypes.prng_key):
            return "key"
        if isinstance(v, (np.ndarray, jax.Array)) and np.issubdtype(np.asarray(v).dtype, np.floating):
            return "array"
        return "other"


def _array_variant(v: Any, variant: str) -> Any:
    a = np.asarray(v)
    if variant == "nan":
        b = a.copy()
        b.flat[0] = np.nan
        return b
    if variant == "inf":
        b = a.copy()
        b.flat[-1] = np.inf
        return b
    if variant == "rank_up":
        return a[None]
    if variant == "rank_down":
        return a[0] if a.ndim >= 1 else None
    if variant == "empty":
        return a[:0] if a.ndim >= 1 else None
    if variant == "none":
        return None
    if variant == "string":
        return "not an array"
    if variant == "float16":
        return a.astype(np.float16)
    if variant == "huge":
        return (a * 1e30).astype(a.dtype)
    if variant == "list":
        return a.tolist()
    raise AssertionError(variant)


def _discrete_variant(v: Any, variant: str) -> Any:
    a = np.asarray(v)
    if variant == "fraction":
        return a + 0.5
    if variant == "nan":
        b = a.astype(np.float64)
        b.flat[0] = np.nan
        return b
    if variant == "negative":
        b = a.copy()
        b.flat[0] = -1
        return b
    if variant == "float":
        return a.astype(np.float32)
    if variant == "width":
        return a[..., :-1] if a.shape[-1] > 1 else np.concatenate([a, a], axis=-1)
    if variant in ("none", "string", "empty", "rank_up", "rank_down"):
        return _array_variant(a, variant)
    raise AssertionError(variant)


_INT = {"zero": 0, "negative": -1, "fraction": 2.5, "string": "3", "none": None, "nan": float("nan")}
_FLOAT = {"nan": float("nan"), "inf": float("inf"), "string": "0.1", "none": None}


def variants(entry: Entry) -> list[tuple[str, dict[str, Any], str]]:
    """``(label, kwargs, expectation)`` for every bad variant of ``entry``'s valid call."""
    out = []
    for arg, value in entry.kwargs.items():
        kind = entry.kind(arg)
        table = {"array": ARRAY_VARIANTS, "int": INT_VARIANTS, "float": FLOAT_VARIANTS,
                 "key": KEY_VARIANTS, "labels": LABEL_VARIANTS, "codes": CODE_VARIANTS}.get(kind, {})
        for variant, expect in table.items():
            if kind == "array":
                bad = _array_variant(value, variant)
                if bad is None and variant in ("rank_down", "empty"):
                    continue
            elif kind in ("labels", "codes"):
                bad = _discrete_variant(value, variant)
                if bad is None:
                    continue
            elif kind == "int":
                bad = _INT[variant]
            elif kind == "float":
                bad = _FLOAT[variant]
            else:
                bad = {"none": None, "int": 0, "raw_uint32": jax.random.PRNGKey(0)}[variant]
            out.append((f"{arg}.{variant}", {**entry.kwargs, arg: bad}, expect))
    for a, b in entry.pairs:
        rows = np.asarray(entry.kwargs[b])
        out.append((f"{b}.mismatch", {**entry.kwargs, b: rows[:-1]}, "raise"))
    return out


def _float_leaves(tree: Any) -> list[np.ndarray]:
    leaves = []
    for leaf in jax.tree_util.tree_leaves(tree):
        if isinstance(leaf, (np.ndarray, jax.Array, float, np.floating)):
            arr = np.asarray(leaf)
            if np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.complexfloating):
                leaves.append(arr.astype(np.float64))
    return leaves


def _all_finite(tree: Any) -> bool:
    return all(np.all(np.isfinite(a)) for a in _float_leaves(tree))


def _close(a: Any, b: Any, rtol: float) -> bool:
    la, lb = _float_leaves(a), _float_leaves(b)
    if len(la) != len(lb):
        return False
    for x, y in zip(la, lb):
        if x.shape != y.shape:
            return False
        scale = max(1.0, float(np.max(np.abs(y))) if y.size else 1.0)
        if not np.allclose(x, y, rtol=rtol, atol=rtol * scale, equal_nan=False):
            return False
    return True


def classify(entry: Entry, label: str, kwargs: dict[str, Any], expect: str, clean: Any) -> tuple[str, str]:
    """Run one variant: ``(outcome, detail)`` with outcome in clear/accepted/obscure/nan/silent."""
    arg = label.split(".")[0]
    try:
        out = entry.call(**kwargs)
        jax.block_until_ready(jax.tree_util.tree_leaves(out))
    except CLEAR_ERRORS as err:
        msg = str(err)
        if any(name in msg for name in (arg, *entry.aliases.get(arg, ()))):
            return "clear", msg.splitlines()[0][:160] if msg else ""
        return "obscure", f"{type(err).__name__} not naming `{arg}`: {msg[:200]}"
    except Exception as err:  # noqa: BLE001 - classifying every failure is the point here
        return "obscure", f"{type(err).__name__}: {str(err)[:200]}"
    if label in entry.accept:
        return ("accepted", entry.accept[label]) if _all_finite(out) else ("nan", "documented, but non-finite")
    if not _all_finite(out):
        return "nan", "non-finite output"
    if expect == "raise":
        return "silent", "returned a finite result for an input that must be refused"
    if expect == "close" and not _close(out, clean, entry.rtol):
        return "silent", "result differs from the clean call"
    return "accepted", expect


def run_entry(entry: Entry) -> list[tuple[str, str, str]]:
    """All variants of ``entry``: ``[(label, outcome, detail)]``. The clean call must succeed."""
    clean = entry.call(**entry.kwargs)
    jax.block_until_ready(jax.tree_util.tree_leaves(clean))
    if not _all_finite(clean):
        raise AssertionError(f"{entry.name}: the registered valid call gives non-finite output")
    return [(label, *classify(entry, label, kwargs, expect, clean)) for label, kwargs, expect in variants(entry)]


__all__ = ["Entry", "classify", "run_entry", "variants"]
