"""Evaluate a jaxpr equation by equation under the current trace, recording taps and module outputs.

The interpreter knows how to evaluate (and look inside) ``jit``, ``custom_jvp``, ``custom_vjp``,
``checkpoint`` and ``scan``; which equations are taps is decided by the rules
(:mod:`jaxinterp.capture.rules`), and how values are attributed to modules by
:mod:`jaxinterp.capture.naming`. Values of a scanned body are stacked: ``[length, ...]``.
``while_loop`` and ``cond`` bodies are evaluated as single equations (their trip count / branch
is data dependent), so nothing inside them is recorded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jex_core

from jaxinterp.capture.lineage import TRACKED, Producer
from jaxinterp.capture.naming import Record, eqn_site, module_boundaries, tap_scope
from jaxinterp.capture.rules import KNOWN_FUNCTIONS, FunctionRule, Rule, Site, Tap, uniform_value

try:  # internal; keeps name stacks (hence module names) in the re-traced program
    from jax._src import source_info_util as _siu
except ImportError:  # pragma: no cover - internal API drift
    _siu = None
_HAS_USER_CONTEXT = _siu is not None and hasattr(_siu, "user_context") and hasattr(_siu, "new_name_stack")

_INLINE_CALLS = frozenset({"pjit", "jit", "closed_call", "core_call", "remat2", "checkpoint", "remat"})
_CUSTOM_CALLS = frozenset({"custom_jvp_call", "custom_vjp_call", "custom_vjp_call_jaxpr"})
_VALUE_PRESERVING = frozenset({"broadcast_in_dim", "convert_element_type", "reshape", "squeeze", "expand_dims"})
_DTYPE_PARAMS = ("new_dtype", "preferred_element_type", "dtype")


@dataclasses.dataclass(frozen=True)
class Options:
    """What the interpreter records.

    Attributes:
      rules: tap rules in priority order (the first that matches an equation records it).
      want_modules: also record module outputs.
      promote: evaluate every floating value in this dtype (parameters, constants and dtype
        arguments of lax-level ops included); None keeps the program's dtypes.
      lineage: note how recorded values were produced (:mod:`~jaxinterp.capture.lineage`), so
        that fused reductions can be computed without reading the values.
    """

    rules: tuple[Rule | FunctionRule, ...]
    want_modules: bool = False
    promote: Any = None
    edits: Any = None  # {(scope, label, occurrence, "pre" | "post"): edit function}; see ``intervene``
    lineage: bool = False

    @functools.cached_property
    def primitives(self) -> frozenset[str]:
        return frozenset().union(*(r.primitives for r in self.rules if isinstance(r, Rule)))

    @functools.cached_property
    def functions(self) -> dict[str, str]:
        """Qualified function name -> label, for the function rules (first rule wins)."""
        out: dict[str, str] = {}
        for r in self.rules:
            if isinstance(r, FunctionRule):
                for f in sorted(r.functions):
                    out.setdefault(f, r.label or r.name)
        return out

    @functools.cached_property
    def function_key(self) -> tuple[tuple[str, str], ...]:
        return tuple(sorted(self.functions.items()))


def jaxpr_of(param: Any):
    """(jaxpr, consts) of a ClosedJaxpr or Jaxpr parameter."""
    if hasattr(param, "jaxpr") and hasattr(param, "consts"):
        return param.jaxpr, list(param.consts)
    return param, []


def sub_jaxprs(eqn) -> list:
    """The programs inside an equation's parameters (bodies of jit, scan, cond, custom rules, ...)."""
    out = []
    for value in eqn.params.values():
        for item in value if isinstance(value, (tuple, list)) else (value,):
            if hasattr(item, "eqns") or (hasattr(item, "jaxpr") and hasattr(item.jaxpr, "eqns")):
                out.append(jaxpr_of(item)[0])
    return out


@functools.lru_cache(maxsize=1024)
def contains(jaxpr, primitives: frozenset[str]) -> bool:
    """Whether ``jaxpr`` (or a program inside it) applies one of ``primitives``."""
    return any(eqn.primitive.name in primitives or any(contains(j, primitives) for j in sub_jaxprs(eqn))
               for eqn in jaxpr.eqns)


@dataclasses.dataclass(frozen=True)
class Call:
    """A call of a ruled function: equations ``[start, end]``, its input and output variables."""

    label: str
    start: int
    end: int
    invar: Any
    outvar: Any


def _call_of(eqn, functions: dict[str, str]) -> tuple[str, tuple] | None:
    """``(label, call-site key)`` of the innermost ruled function in ``eqn``'s traceback."""
    tb = eqn.source_info.traceback
    frames = [] if tb is None else tb.frames
    for k, frame in enumerate(frames):
        label = functions.get(frame.function_name)
        if label is not None:
            return label, (frame.function_name, *((f.file_name, f.line_num) for f in frames[k + 1:]))
    return None


@functools.lru_cache(maxsize=256)
def function_calls(jaxpr, function_key: tuple[tuple[str, str], ...]) -> tuple[Call, ...]:
    """Calls of the ruled functions among ``jaxpr``'s equations (jit equations by their name)."""
    functions = dict(function_key)
    runs: list[list] = []  # [label, key, start, end]
    for i, eqn in enumerate(jaxpr.eqns):
        name = eqn.params.get("name") if eqn.primitive.name in _INLINE_CALLS else None
        hit = (functions[name], ("jit", i)) if isinstance(name, str) and name in functions else \
            _call_of(eqn, functions)
        if hit is not None and runs and runs[-1][1] == hit[1] and runs[-1][3] == i - 1:
            runs[-1][3] = i
        elif hit is not None:
            runs.append([hit[0], hit[1], i, i])
    calls = []
    for label, _, start, end in runs:
        inside = {v for e in jaxpr.eqns[start:end + 1] for v in e.outvars}
        reads = [v for e in jaxpr.eqns[start:end + 1] for v in e.invars
                 if not isinstance(v, jex_core.Literal) and v not in inside]
        used_after = {v for e in jaxpr.eqns[end + 1:] for v in e.invars if not isinstance(v, jex_core.Literal)}
        used_after |= {v for v in jaxpr.outvars if not isinstance(v, jex_core.Literal)}
        outs = [v for e in jaxpr.eqns[start:end + 1] for v in e.outvars if v in used_after]
        if not reads or not outs:
            continue
        out = outs[-1]
        same = [v for v in reads if getattr(v.aval, "shape", None) == out.aval.shape]
        calls.append(Call(label, start, end, (same or reads)[0], out))
    return tuple(calls)


def _custom_body(eqn):
    for key in ("call_jaxpr", "fun_jaxpr", "jaxpr"):
        if key in eqn.params:
            return eqn.params[key]
    return None


def _function_name(eqn, outer: str | None) -> str | None:
    name = eqn.params.get("name")
    name = getattr(name, "__name__", name)
    return name if isinstance(name, str) and name in KNOWN_FUNCTIONS else outer


class Interpreter:
    """Evaluates a jaxpr under the current trace; ``records`` lists what it recorded, in call order."""

    def __init__(self, options: Options):
        self.options = options
        self.records: list[Record] = []
        self._quiet = 0  # > 0 inside a call of a ruled function: its inner taps are not recorded
        self._seen: dict[tuple, int] = {}  # (scope, label) -> records so far (the occurrence of the next)
        self._producers: dict[int, tuple[Any, Producer]] = {}  # id(value) -> (value, its producer)

    def producer(self, value: Any) -> Producer | None:
        """How ``value`` was computed, if it is the output of a tracked equation (see ``Options.lineage``)."""
        entry = self._producers.get(id(value))
        return entry[1] if entry is not None and entry[0] is value else None

    def _note_producer(self, name: str, params: dict, invals: Sequence[Any], outs: list) -> None:
        if self.options.lineage and name in TRACKED and len(outs) == 1:
            parents = tuple(self.producer(v) for v in invals)
            self._producers[id(outs[0])] = (outs[0], Producer(name, params, tuple(invals), parents))

    def _edit(self, scope: str, label: str | None, which: str):
        """The edit of the next record with this scope and label (``which``: "pre" / "post"), or None."""
        edits = self.options.edits
        if not edits or self._quiet:
            return None
        return edits.get((scope, label, self._seen.get((scope, label), 0), which))

    # -- values ----------------------------------------------------------------------------------
    def _promoted(self, val: Any) -> Any:
        target = self.options.promote
        if target is None or not jnp.issubdtype(jnp.result_type(val), jnp.floating):
            return val
        return val if jnp.result_type(val) == target else jnp.asarray(val, target)

    def _params(self, params: dict) -> dict:
        target = self.options.promote
        if target is None:
            return params
        out = dict(params)
        for key in _DTYPE_PARAMS:
            if out.get(key) is not None and jnp.issubdtype(out[key], jnp.floating):
                out[key] = jnp.dtype(target)
        return out

    def _bind(self, eqn, invals):
        params = self._params(eqn.primitive.get_bind_params(eqn.params))
        ans = eqn.primitive.bind(*invals, **params)
        return list(ans) if eqn.primitive.multiple_results else [ans]

    # -- evaluation ------------------------------------------------------------------------------
    def run(self, jaxpr, consts, args, prefix: str, in_scopes: Sequence[str] | None = None,
            in_known: Sequence[float | None] | None = None, function: str | None = None):
        """Evaluate ``jaxpr`` on ``consts`` and ``args`` under scope ``prefix``; return its outputs."""
        env: dict[Any, Any] = {}
        scope_of: dict[Any, str] = {}
        known: dict[Any, float] = {}

        override: dict[Any, Any] = {}  # edited inputs of the ruled function call being evaluated

        def read(atom):
            if isinstance(atom, jex_core.Literal):
                return self._promoted(atom.val)
            return override.get(atom, env[atom]) if override else env[atom]

        def known_of(atom):
            return uniform_value(atom.val) if isinstance(atom, jex_core.Literal) else known.get(atom)

        def scope(atom, default):
            return default if isinstance(atom, jex_core.Literal) else scope_of.get(atom, default)

        for var, val in zip(jaxpr.constvars, consts):
            env[var], scope_of[var] = self._promoted(val), prefix
            if not isinstance(val, jax.core.Tracer) and (u := uniform_value(val)) is not None:
                known[var] = u
        for i, (var, val) in enumerate(zip(jaxpr.invars, args)):
            env[var] = val
            scope_of[var] = in_scopes[i] if in_scopes is not None else prefix
            if in_known is not None and in_known[i] is not None:
                known[var] = in_known[i]

        module_uses = module_boundaries(jaxpr, prefix) if self.options.want_modules else {}
        calls = function_calls(jaxpr, self.options.function_key) if self.options.functions else ()
        starts, ends = {c.start: c for c in calls}, {c.end: c for c in calls}
        for i, eqn in enumerate(jaxpr.eqns):
            site = eqn_site(eqn, prefix)
            invals = [read(v) for v in eqn.invars]
            sub = dict(site=site, scopes=[scope(v, site) for v in eqn.invars],
                       known=[known_of(v) for v in eqn.invars], function=_function_name(eqn, function))
            if i in starts:
                self._start_call(starts[i], jaxpr, prefix, env, override, scope)
                invals = [read(v) for v in eqn.invars]
            with self._context(eqn, site):
                outs = self._eqn(eqn, invals, **sub)
            for var, val in zip(eqn.outvars, outs):
                if eqn.primitive.name in _VALUE_PRESERVING and sub["known"] and sub["known"][0] is not None:
                    known[var] = sub["known"][0]
                for mod in module_uses.get(var, ()):
                    if (edit := self._edit(mod, None, "pre")) is not None:
                        val = edit(val)
                    self._append(Record(mod, None, val, producer=self.producer(val)))
                env[var], scope_of[var] = val, site
            if i in ends:
                self._end_call(ends.pop(i), env, override, eqn_site(eqn, prefix), scope)
        return [read(v) for v in jaxpr.outvars]

    def _start_call(self, c: Call, jaxpr, prefix: str, env: dict, override: dict, scope) -> None:
        """Enter a ruled function call: its inner taps go unrecorded; an input edit applies inside it."""
        site = eqn_site(jaxpr.eqns[c.end], prefix)
        edit = self._edit(tap_scope(scope(c.invar, site), site), c.label, "pre")
        if edit is not None:
            override[c.invar] = edit(env[c.invar])
        self._quiet += 1

    def _end_call(self, c: Call, env: dict, override: dict, site: str, scope) -> None:
        self._quiet -= 1
        pre = override.pop(c.invar, env[c.invar])
        tap_site = tap_scope(scope(c.invar, site), site)
        if (edit := self._edit(tap_site, c.label, "post")) is not None:
            env[c.outvar] = edit(env[c.outvar])
        self._record(Tap(c.label, pre, env[c.outvar]), tap_site)

    def _record(self, tap: Tap, scope: str) -> None:
        self._append(Record(scope, tap.label, tap.pre, tap.post, producer=self.producer(tap.pre)))

    def _append(self, rec: Record) -> None:
        if not self._quiet:
            self.records.append(rec)
            self._seen[rec.key] = self._seen.get(rec.key, 0) + 1

    def _eqn(self, eqn, invals, *, site, scopes, known, function):
        name = eqn.primitive.name
        if name in _INLINE_CALLS and eqn.params.get("name") in self.options.functions and self.options.promote is None:
            return self._bind(eqn, invals)  # the whole call is one tap, recorded by ``run``
        if name in _INLINE_CALLS:
            sub, sub_consts = jaxpr_of(eqn.params["jaxpr"])
            return self.run(sub, sub_consts, invals, site, scopes, known, function)
        if name in _CUSTOM_CALLS and _custom_body(eqn) is not None:
            return self._custom_call(eqn, invals, site, scopes, known, function)
        if name == "scan" and (self.options.want_modules or self.options.functions
                               or contains(jaxpr_of(eqn.params["jaxpr"])[0], self.options.primitives)):
            return self._scan(eqn, invals, site, scopes, known, function)
        outs = self._bind(eqn, invals)
        self._note_producer(name, eqn.params, invals, outs)
        if name in self.options.primitives:
            outs = self._tap(eqn, Site(name, eqn.params, invals, outs, known, function), site, scopes)
        return outs

    def _match(self, site_info: Site) -> list[Tap]:
        for rule in self.options.rules:
            if isinstance(rule, Rule) and site_info.primitive in rule.primitives:
                taps = rule.match(site_info)
                if taps:
                    return taps
        return []

    def _tap(self, eqn, site_info: Site, site: str, scopes: Sequence[str]) -> list:
        """Record the taps of one equation, applying edits; returns the equation's (edited) outputs."""
        taps = self._match(site_info)
        outs = list(site_info.outvals)
        if taps and (edit := self._edit(tap_scope(scopes[taps[0].source], site), taps[0].label, "pre")):
            j = taps[0].source
            if taps[0].pre is not site_info.invals[j]:
                raise ValueError(f"only the output of a {taps[0].label!r} tap can be edited (its recorded value "
                                 "is not one of the equation's inputs); edit '<name>:post' instead.")
            invals = list(site_info.invals)
            invals[j] = edit(invals[j])
            outs = self._bind(eqn, invals)
            site_info = dataclasses.replace(site_info, invals=invals, outvals=outs)
            taps = self._match(site_info)
        for tap in taps:
            scope = tap_scope(scopes[tap.source], site)
            if tap.post is not None and tap.post is outs[0] and (edit := self._edit(scope, tap.label, "post")):
                outs[0] = edit(outs[0])
                tap = tap._replace(post=outs[0])
            self._record(tap, scope)
        return outs

    @staticmethod
    def _context(eqn, site: str):
        if not _HAS_USER_CONTEXT:
            return eqn.ctx.manager
        stack = contextlib.ExitStack()
        stack.enter_context(_siu.user_context(eqn.source_info.traceback,
                                              name_stack=_siu.new_name_stack(site) if site else None))
        stack.enter_context(eqn.ctx.manager)
        return stack

    # -- higher-order primitives -----------------------------------------------------------------
    def _custom_call(self, eqn, invals, site, scopes, known, function):
        """Outputs from the original custom-derivative call; records from evaluating its body.

        When promoting dtypes, the body itself gives the outputs (the call's rule is typed for the
        program's original dtypes), and so it does when editing activations (the edits are in it).
        """
        body, body_consts = jaxpr_of(_custom_body(eqn))
        if self.options.promote is not None or self.options.edits:
            return self.run(body, body_consts, invals, site, scopes, known, function)
        outs = self._bind(eqn, invals)
        tracks = self.options.lineage and contains(body, TRACKED)
        if self.options.want_modules or self.options.functions or contains(body, self.options.primitives) or tracks:
            before = len(self.records)
            body_outs = self.run(body, body_consts, invals, site, scopes, known, function)
            # Post-activations must be the outputs of the call itself (same values, original
            # derivative rule): link records whose post is a body output to the call output.
            for rec in self.records[before:]:
                for b, o in zip(body_outs, outs):
                    if rec.post is b:
                        rec.post = o
            # and a call output was produced as its body output was (e.g. a custom-derivative conv)
            for b, o in zip(body_outs, outs):
                if (p := self.producer(b)) is not None:
                    self._producers[id(o)] = (o, p)
        return outs

    def _scan(self, eqn, invals, site, scopes, known, function):
        p = eqn.params
        body, body_consts = jaxpr_of(p["jaxpr"])
        n_consts, n_carry = p["num_consts"], p["num_carry"]
        consts, init, xs = invals[:n_consts], invals[n_consts : n_consts + n_carry], invals[n_consts + n_carry :]
        body_known = [*known[:n_consts], *([None] * (len(invals) - n_consts))]
        meta: list[tuple[str, str | None, bool]] = []

        def step(carry, x):
            inner = Interpreter(dataclasses.replace(self.options, edits=None))
            inner._quiet = self._quiet
            outs = inner.run(body, body_consts, [*consts, *carry, *x], site, scopes, body_known, function)
            meta[:] = [(r.scope, r.label, r.post is not None) for r in inner.records]
            recs = [(r.pre, r.post) if r.post is not None else (r.pre,) for r in inner.records]
            return outs[:n_carry], (outs[n_carry:], recs)

        carry, (ys, recs) = jax.lax.scan(step, list(init), list(xs), length=p["length"],
                                         reverse=p["reverse"], unroll=p.get("unroll", 1))
        for (scope, label, has_post), vals in zip(meta, recs):
            self._append(Record(scope, label, vals[0], vals[1] if has_post else None, stacked=True))
        return [*carry, *ys]
