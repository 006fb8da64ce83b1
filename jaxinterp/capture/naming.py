"""Naming of captured activations: scopes of the traced program, module paths, unique names.

Scopes come from the name stack of the traced program: Flax Linen records module paths there.
NNX and Equinox modules do not, so while ``fn`` is traced :func:`module_scopes` runs each
submodule's ``__call__`` inside ``jax.named_scope(<its attribute path>)``. That is the one place
where a user class is touched: the wrapper is installed once per class under a lock, reference
counted across concurrent captures, looks its scopes up in a context variable (so other threads
and calls outside a capture see the original behaviour), and is removed when the last capture
using it ends, also when tracing raises.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import fnmatch
import functools
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax
import numpy as np
from jax.extend import core as jex_core

_TRANSFORM_RE = re.compile(r"^[a-z_]+\((.*)\)$")
POST_SUFFIX = ":post"


@dataclasses.dataclass
class Record:
    """One captured value: a tap of a rule (``label`` set) or a module output (``label`` None)."""

    scope: str  # module path the value is attributed to ("" when unscoped)
    label: str | None  # last name component of a tap ("relu", "abs", ...); None for a module output
    pre: Any
    post: Any = None
    stacked: bool = False  # recorded inside a scanned body (values stacked over steps)
    producer: Any = None  # how ``pre`` was computed (``lineage.Producer``), when known

    @property
    def key(self) -> tuple[str, str | None]:
        return self.scope, self.label

    @property
    def is_tap(self) -> bool:
        return self.label is not None


def clean_scope(name_stack: Any) -> str:
    """``'vmap(MLP)/jvp(Dense_0)'`` -> ``'MLP/Dense_0'``; einsum scopes (``'bthd,bshd->bhts'``) are dropped.

    Values computed by an einsum are thereby attributed to the enclosing module.
    """
    parts = []
    for part in str(name_stack).split("/"):
        while (m := _TRANSFORM_RE.match(part)) is not None:
            part = m.group(1)
        if part and "->" not in part:
            parts.append(part)
    return "/".join(parts)


def join(prefix: str, scope: str) -> str:
    return f"{prefix}/{scope}" if prefix and scope else prefix or scope


def eqn_site(eqn, prefix: str) -> str:
    """Scope of equation ``eqn`` inside a program evaluated under scope ``prefix``."""
    return join(prefix, clean_scope(eqn.source_info.name_stack))


def tap_scope(source_scope: str, site: str) -> str:
    """A tap belongs to the module that produced its input when that module is inside ``site``."""
    inside = source_scope.startswith(site) and len(source_scope) > len(site)
    return source_scope if inside or not site else site


def module_boundaries(jaxpr, prefix: str) -> dict[Any, list[str]]:
    """Vars produced inside a scope and used outside it (or returned): the scopes' outputs.

    Only scopes strictly inside ``prefix`` count: ``jaxpr`` is a program evaluated under scope
    ``prefix`` (e.g. the body of a ``jit`` called inside a module), and whether its outputs leave
    ``prefix`` or an enclosing scope is decided where it is called.
    """
    site_of = {v: eqn_site(eqn, prefix) for eqn in jaxpr.eqns for v in eqn.outvars}
    leaving: dict[Any, list[str]] = {}

    def mark(var, consumer_site: str | None):
        src = site_of.get(var)
        if not src:
            return
        parts = src.split("/")
        # every scope inside ``prefix`` that the value leaves (the consumer is not inside it), innermost first
        for depth in range(len(parts), 0, -1):
            scope = "/".join(parts[:depth])
            if prefix and not scope.startswith(prefix + "/"):
                break
            if consumer_site is not None and (consumer_site == scope or consumer_site.startswith(scope + "/")):
                break
            if scope not in leaving.setdefault(var, []):
                leaving[var].append(scope)

    for eqn in jaxpr.eqns:
        site = eqn_site(eqn, prefix)
        for v in eqn.invars:
            if not isinstance(v, jex_core.Literal):
                mark(v, site)
    for v in jaxpr.outvars:
        if not isinstance(v, jex_core.Literal):
            mark(v, None)
    return leaving


# -- scopes of object-oriented modules (NNX, Equinox) -------------------------------------------
def _nnx_scopes(root: Any) -> dict[int, str] | None:
    try:
        from flax import nnx
    except ImportError:  # pragma: no cover - flax is a dependency
        return None
    if not isinstance(root, nnx.Module):
        return None
    paths = {id(node): tuple(str(p) for p in path)
             for path, node in nnx.iter_graph(root) if isinstance(node, nnx.Module) and path}
    scopes = {}
    for node_id, path in paths.items():
        parents = [q for q in paths.values() if len(q) < len(path) and path[: len(q)] == q]
        start = max((len(q) for q in parents), default=0)
        scopes[node_id] = "/".join(path[start:])
    return scopes


def _equinox_scopes(root: Any) -> dict[int, str]:
    try:
        import equinox as eqx
    except ImportError:  # equinox is optional
        return {}
    scopes: dict[int, str] = {}
    if not isinstance(root, eqx.Module):
        return scopes

    def visit(obj, rel: tuple[str, ...]):
        if isinstance(obj, eqx.Module):
            if rel:
                scopes[id(obj)] = "/".join(rel)
            for f in dataclasses.fields(obj):
                visit(getattr(obj, f.name, None), (f.name,))
        elif isinstance(obj, (list, tuple)):
            for i, item in enumerate(obj):
                visit(item, (*rel, str(i)) if rel else (str(i),))

    visit(root, ())
    return scopes


def submodule_scopes(root: Any) -> dict[int, str]:
    """``id(submodule) -> scope component`` for the NNX / Equinox submodules of ``root``."""
    scopes = _nnx_scopes(root)
    return scopes if scopes is not None else _equinox_scopes(root)


def _own_call_class(cls: type) -> type:
    for klass in cls.__mro__:
        if "__call__" in klass.__dict__:
            return klass
    return cls


def _iter_modules(root: Any) -> Iterable[Any]:
    seen: set[int] = set()
    stack = [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, (list, tuple)):
            stack.extend(obj)
        elif hasattr(obj, "__dict__") and not isinstance(obj, type) and not isinstance(obj, jax.Array):
            yield obj
            stack.extend(v for v in vars(obj).values() if not isinstance(v, (jax.Array, np.ndarray)))


_ACTIVE_SCOPES: contextvars.ContextVar[dict[int, str] | None] = contextvars.ContextVar("jaxinterp_scopes",
                                                                                       default=None)
_LOCK = threading.Lock()
_INSTALLED: dict[type, list] = {}  # class -> [original __call__, number of captures using it]


def _scoped(orig: Callable) -> Callable:
    @functools.wraps(orig)
    def call(self, *args, **kwargs):
        scopes = _ACTIVE_SCOPES.get()
        scope = None if scopes is None else scopes.get(id(self))
        if scope is None:
            return orig(self, *args, **kwargs)
        with jax.named_scope(scope):
            return orig(self, *args, **kwargs)

    call.__jaxinterp_scoped__ = True
    return call


def _release_locked(classes: Sequence[type]) -> None:
    for cls in classes:
        entry = _INSTALLED[cls]
        entry[1] -= 1
        if entry[1] == 0:
            type.__setattr__(cls, "__call__", entry[0])
            del _INSTALLED[cls]


def _acquire(classes: Sequence[type]) -> None:
    """Wrap every class's ``__call__`` (or count one more user of its wrapper); all or nothing."""
    with _LOCK:
        done: list[type] = []
        try:
            for cls in classes:
                if cls not in _INSTALLED:
                    orig = cls.__dict__["__call__"]
                    type.__setattr__(cls, "__call__", _scoped(orig))
                    _INSTALLED[cls] = [orig, 0]
                _INSTALLED[cls][1] += 1
                done.append(cls)
        except BaseException:
            _release_locked(done)
            raise


def _release(classes: Sequence[type]) -> None:
    with _LOCK:
        _release_locked(classes)


@contextlib.contextmanager
def module_scopes(root: Any):
    """While active (in this thread or context), calls of ``root``'s submodules run in named scopes.

    Restores every class it touched on exit, also when the body raises; safe when several threads
    capture at once (classes are wrapped once, under a lock, and unwrapped by the last user).
    """
    scopes = submodule_scopes(root)
    if not scopes:
        yield
        return
    classes = list(dict.fromkeys(_own_call_class(type(obj)) for obj in _iter_modules(root)
                                 if id(obj) in scopes and "__call__" in _own_call_class(type(obj)).__dict__))
    outer = _ACTIVE_SCOPES.get()
    token = _ACTIVE_SCOPES.set({**(outer or {}), **scopes})
    try:
        _acquire(classes)
        try:
            yield
        finally:
            _release(classes)
    finally:
        _ACTIVE_SCOPES.reset(token)


# -- names ------------------------------------------------------------------------------------
def _is_linen_class_name(name: str) -> bool:
    """True if ``name`` is the class name of a Flax Linen module (Linen's root scope)."""
    try:
        import flax.linen as nn
    except ImportError:  # pragma: no cover - flax is a dependency
        return False
    stack = [nn.Module]
    while stack:
        cls = stack.pop()
        if cls.__name__ == name:
            return True
        stack.extend(cls.__subclasses__())
    return False


def _unique(bases: list[str]) -> list[str]:
    """Repeated names get ``_0``, ``_1``, ... suffixes in call order."""
    counts: dict[str, int] = {}
    for b in bases:
        counts[b] = counts.get(b, 0) + 1
    seen: dict[str, int] = {}
    out = []
    for b in bases:
        if counts[b] == 1:
            out.append(b)
        else:
            out.append(f"{b}_{seen.get(b, 0)}")
            seen[b] = seen.get(b, 0) + 1
    return out


def name_records(records: list[Record], root: str | None) -> list[tuple[str, Record]]:
    """Readable unique names for ``records``, in call order.

    The scope of the root module (``root``, e.g. a Linen model's class name) is dropped, as in
    Flax parameter paths, and so is the root module's own output (it is ``fn``'s output).
    A tap is named ``<scope>/<label>`` (e.g. ``Dense_0/relu``), a module output by its scope.
    """
    split = [[c for c in r.scope.split("/") if c and not c.startswith("eqx.")] for r in records]
    first = {tuple(s[:1]) for s in split}
    if len(first) == 1 and split and split[0] and (split[0][0] == root or _is_linen_class_name(split[0][0])):
        split = [s[1:] for s in split]
    kept = [(s, r) for s, r in zip(split, records) if s or r.is_tap]
    bases = ["/".join([*s, r.label]) if r.is_tap else "/".join(s) for s, r in kept]
    return [(name, r) for name, (_, r) in zip(_unique(bases), kept)]


def select(names: list[str], patterns: Sequence[str] | str | Callable[[str], bool] | None) -> list[int]:
    """Indices of ``names`` matching glob ``patterns`` (or a predicate); every pattern must match."""
    if patterns is None:
        return list(range(len(names)))
    if callable(patterns):
        return [i for i, n in enumerate(names) if patterns(n)]
    if isinstance(patterns, str):
        patterns = [patterns]
    chosen: set[int] = set()
    for pat in patterns:
        hits = [i for i, n in enumerate(names) if fnmatch.fnmatchcase(n, pat)]
        if not hits:
            raise missing_name(f"no captured activation matches {pat!r}", pat, names)
        chosen.update(hits)
    return sorted(chosen)


def missing_name(message: str, pattern: Any, names: Sequence[str], *, flag_hint: bool = True) -> KeyError:
    """A KeyError for a name (or glob pattern) that matches none of ``names``, listing them.

    A ``"<name>:post"`` pattern when ``names`` hold no post-activations gets the hint to pass
    ``post_activations=True`` (with ``flag_hint``); one whose activation exists but has no
    post-activation (a module output, a kink difference) says so.
    """
    hint = ""
    if isinstance(pattern, str) and pattern.endswith(POST_SUFFIX):
        base = pattern[: -len(POST_SUFFIX)]
        if flag_hint and not any(n.endswith(POST_SUFFIX) for n in names):
            hint = (f" '<name>{POST_SUFFIX}' values are post-activations: pass post_activations=True to capture "
                    "to record them.")
        elif any(fnmatch.fnmatchcase(n, base) for n in names):
            hint = f" {base!r} has no post-activation (module outputs and kink differences have none)."
    return KeyError(f"{message};{hint} available names: {list(names)}")
