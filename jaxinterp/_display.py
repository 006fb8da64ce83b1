"""Compact text, HTML and treescope displays for result objects.

Result objects (``Directions``, ``UnitStats``, ``LineWalk``, ``IndexResult``, ``TwoAFCResult``,
``UnitCard``, ...) print as one short line: their kind, the shapes of their arrays and a few key
numbers, never the arrays themselves. The same summary renders as a small HTML table in
notebooks (``_repr_html_``) and, where treescope is installed, as an expandable tree
(``__treescope_repr__``; treescope is imported only when it asks for the rendering).

Everything here works on traced values too: inside ``jit`` an array shows its dtype and shape
and the numbers that would need its value are left out.
"""

from __future__ import annotations

import dataclasses
import html
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["array_summary", "compact_repr", "html_table", "is_concrete", "number", "numbers_summary",
           "summary_html", "summary_repr", "summary_treescope", "treescope_constructor"]

#: a repr longer than this is cut (with "...") so that no summary floods a notebook cell
MAX_REPR_CHARS = 280

_DTYPE_SHORT = {"float": "f", "int": "i", "uint": "u", "bool": "bool", "bfloat": "bf", "complex": "c"}


def is_concrete(x: Any) -> bool:
    """Whether ``x`` has a value that can be read (False for a jax tracer inside ``jit``/``vmap``)."""
    import jax

    return not isinstance(x, jax.core.Tracer)


def _dtype_short(dtype: Any) -> str:
    name = str(np.dtype(dtype)) if not hasattr(dtype, "name") else dtype.name
    for prefix, short in _DTYPE_SHORT.items():
        if name.startswith(prefix) and name[len(prefix):].isdigit():
            return short if short == "bool" else f"{short}{name[len(prefix):]}"
    return name


def array_summary(x: Any) -> str:
    """``f32[64,128]`` for an array (numpy, jax or traced), ``None`` for None, ``repr`` otherwise."""
    if x is None:
        return "None"
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        return f"{_dtype_short(x.dtype)}[{','.join(str(int(d)) for d in x.shape)}]"
    return repr(x)


def number(x: Any, fmt: str = ".3g") -> str | None:
    """A scalar formatted with ``fmt``; None when it is traced, not a scalar, or None."""
    if x is None or not is_concrete(x):
        return None
    a = np.asarray(x)
    if a.size != 1 or not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
        return None
    return format(a.reshape(()).item(), fmt)


def numbers_summary(x: Any, fmt: str = ".3g") -> str | None:
    """``median m in [lo, hi]`` of a concrete array's finite values (None if traced, empty or None).

    Non-finite values are counted, not summarised (``; 2 NaN/inf``).
    """
    if x is None or not is_concrete(x) or not hasattr(x, "shape"):
        return None
    a = np.asarray(x)
    if a.size == 0 or not np.issubdtype(a.dtype, np.number):
        return None
    a = a.astype(np.float64).reshape(-1)
    ok = np.isfinite(a)
    bad = f"; {int((~ok).sum())} NaN/inf" if not ok.all() else ""
    if not ok.any():
        return f"all NaN/inf ({a.size})"
    a = a[ok]
    if a.size == 1:
        return format(a[0], fmt) + bad
    return f"median {np.median(a):{fmt}} in [{a.min():{fmt}}, {a.max():{fmt}}]{bad}"


def compact_repr(kind: str, fields: Sequence[tuple[str, str | None]], limit: int = MAX_REPR_CHARS) -> str:
    """``Kind(a=1, b=f32[3,4])`` from ``(name, text)`` pairs; pairs whose text is None are left out.

    The result is cut to ``limit`` characters (ending in ``...)``) so it always stays short.
    """
    body = ", ".join(f"{k}={v}" for k, v in fields if v is not None)
    text = f"{kind}({body})"
    if len(text) > limit:
        text = text[: limit - 4] + "...)"
    return text


def html_table(kind: str, fields: Sequence[tuple[str, str | None]], *, note: str | None = None) -> str:
    """A small HTML table (the notebook display): a header with ``kind``, one row per field."""
    rows = "".join(
        f"<tr><td style='text-align:left;padding:1px 8px'><code>{html.escape(k)}</code></td>"
        f"<td style='text-align:left;padding:1px 8px'>{html.escape(v)}</td></tr>"
        for k, v in fields if v is not None)
    caption = f"<b>{html.escape(kind)}</b>" + (f" <i>{html.escape(note)}</i>" if note else "")
    return (f"<div class='jaxinterp-summary'>{caption}<table style='border-collapse:collapse;font-size:90%'>"
            f"{rows}</table></div>")


def treescope_constructor(obj: Any, attributes: Mapping[str, Any], path: str | None,
                          subtree_renderer: Callable) -> Any:
    """The treescope rendering of ``obj`` as ``Kind(attr=..., ...)`` (arrays get treescope's array views).

    ``attributes`` must be real attributes of ``obj`` (fields or properties), as treescope's
    ``repr_lib.render_object_constructor`` requires. treescope is imported here, on first use.
    """
    from treescope import repr_lib

    return repr_lib.render_object_constructor(object_type=type(obj), attributes=dict(attributes), path=path,
                                              subtree_renderer=subtree_renderer)


def _fields_of(obj: Any) -> tuple[str, ...]:
    if dataclasses.is_dataclass(obj):
        return tuple(f.name for f in dataclasses.fields(obj))
    return tuple(getattr(obj, "_fields", ()))


# The three displays of a result class, from its ``_summary(self) -> [(name, text | None)]``
# (shapes and key numbers, safe on traced values). A class installs them with
# ``__repr__ = summary_repr`` etc. (NamedTuples cannot take a mixin base).

def summary_repr(self: Any) -> str:
    """``Kind(...)``: the one-line summary (at most ``MAX_REPR_CHARS`` characters)."""
    return compact_repr(type(self).__name__, self._summary())


def summary_html(self: Any) -> str:
    """The notebook display: the summary as an HTML table."""
    return html_table(type(self).__name__, self._summary())


def summary_treescope(self: Any, path: str | None, subtree_renderer: Callable) -> Any:
    """The treescope rendering: every field, arrays shown by treescope's array views."""
    return treescope_constructor(self, {f: getattr(self, f) for f in _fields_of(self)}, path, subtree_renderer)
