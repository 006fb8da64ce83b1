"""Tap rules: which equations of a traced program are activations worth recording.

A :class:`Rule` looks at one equation (a :class:`Site`: its primitive, parameters, input and output
values, and which inputs are known constants) and returns the :class:`Tap` values it records, or
an empty list. :data:`RULES` maps rule names to rules; ``capture(fn, rules=(...))`` picks rules by
name (or takes :class:`Rule` objects), and :func:`register_rule` adds a rule under a new name.

Built in:

- ``"relu"``: ``max(x, 0)`` (``jax.nn.relu``, Flax's ``relu``, ``jnp.maximum(x, 0)``); records
  ``x`` (the pre-activation) and ``max(x, 0)`` (the post-activation), labelled ``relu``.
- ``"max_min"``: any other ``max(a, b)`` / ``min(a, b)`` (``relu6``, ``clip``, the max of two
  traced values); records ``a - b``, whose sign says which argument is taken.
- ``"abs"``: ``abs(x)``; records ``x``.
- ``"compare"``: ``a > b``, ``a >= b``, ``a < b``, ``a <= b`` on floats (``jnp.where`` kinks:
  ``leaky_relu``, ``hard_tanh``); records ``a - b``.
- ``"clamp"``: ``lax.clamp(lo, x, hi)``; records ``x - lo`` and ``x - hi``.
- ``"sigmoid"``, ``"tanh"``: the ``logistic`` / ``tanh`` primitives; record the input and (as the
  post-activation) the output.
- Function rules (:class:`FunctionRule`): every call of a named Python function is one tap whose
  pre-activation is the call's input and whose post-activation is its output, found from the
  traceback of the traced equations (``jax.nn`` functions are mostly inlined into the program):
  ``"gelu"`` (erf and tanh forms), ``"silu"`` (``silu`` / ``swish``), ``"softplus"``,
  ``"softmax"`` (its output is an attention pattern in attention layers) and ``"layer_norm"``
  (``LayerNorm.__call__`` of Flax Linen, NNX and Equinox, or any function named ``layer_norm``;
  the post-activation is the normalised, scaled and shifted output).

:data:`ACTIVATIONS` names all of these plus ``"relu"``; ``capture(fn, rules="activations")``
records every activation of a transformer. Outputs of residual blocks (the residual stream) are
module outputs: ``capture(fn, modules=...)``.

:data:`PIECEWISE_LINEAR` names every rule whose recorded values change sign exactly at the kinks of
a piecewise-linear network; the polytope lens uses them so that every kink counts as a boundary.
Labels come from the enclosing ``jax.nn`` function where there is one (``leaky_relu``, ``relu6``,
``hard_tanh``, ``clip``), else from the primitive (``max``, ``min``, ``abs``, ``where``, ``clip``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

KNOWN_FUNCTIONS = frozenset({"leaky_relu", "relu6", "hard_tanh", "clip", "hard_sigmoid", "hard_silu", "hard_swish"})


class Tap(NamedTuple):
    """One recorded activation.

    Attributes:
      label: last component of its name (``"relu"``, ``"abs"``, ...).
      pre: the value recorded, shaped like the equation's output (for kinks: a unit whose sign
        changes exactly at the kink).
      post: the equation's output, returned under ``"<name>:post"`` (None when it is no activation).
      source: index of the input whose producing module names the tap.
    """

    label: str
    pre: Any
    post: Any = None
    source: int = 0


@dataclasses.dataclass(frozen=True)
class Site:
    """An equation as a rule sees it.

    Attributes:
      primitive: the primitive's name (``"max"``, ``"abs"``, ...).
      params: the equation's parameters.
      invals: input values (tracers or arrays).
      outvals: output values.
      known: per input, its value when it is a known uniform constant (a literal, or a constant
        broadcast / converted / reshaped), else None.
      function: name of the innermost enclosing ``jax.nn``-style function among
        :data:`KNOWN_FUNCTIONS` (None outside them).
    """

    primitive: str
    params: Mapping[str, Any]
    invals: Sequence[Any]
    outvals: Sequence[Any]
    known: Sequence[float | None]
    function: str | None


@dataclasses.dataclass(frozen=True)
class Rule:
    """A tap rule: ``match(site) -> list[Tap]`` for equations of the given primitives."""

    name: str
    primitives: frozenset[str]
    match: Callable[[Site], list[Tap]]


@dataclasses.dataclass(frozen=True)
class FunctionRule:
    """A tap for every call of a named function.

    A call is a contiguous run of traced equations whose traceback passes through a function whose
    qualified name (``"gelu"``, ``"LayerNorm.__call__"``) is in ``functions`` (the innermost such
    frame, with the same call site), or a ``jit`` equation with that name. Its ``pre`` is the
    call's input (the first array it reads that has the output's shape, else the first) and its
    ``post`` the value it returns (the last value computed in the call and used after it). Calls of
    ruled functions must not nest, and two calls from the same line with nothing traced in between
    are one call.

    Attributes:
      name: the rule's name in :data:`RULES`.
      functions: qualified Python function names.
      label: last component of the recorded names (default: ``name``).
    """

    name: str
    functions: frozenset[str]
    label: str | None = None

    def __post_init__(self):
        if isinstance(self.functions, str) or not all(isinstance(f, str) for f in self.functions):
            raise TypeError(f"`functions` must be a collection of function names; got {self.functions!r}.")
        object.__setattr__(self, "functions", frozenset(self.functions))
        if not self.functions:
            raise ValueError("`functions` must name at least one function.")


def _shaped(site: Site, value: Any) -> Any:
    shape = site.outvals[0].shape
    return value if jnp.shape(value) == shape else jnp.broadcast_to(value, shape)


def _difference(site: Site, a: int, b: int) -> Any:
    """``in[a] - in[b]`` broadcast to the output shape, in the output dtype."""
    dtype = site.outvals[0].dtype
    return _shaped(site, jnp.asarray(site.invals[a], dtype) - jnp.asarray(site.invals[b], dtype))


def _is_floating(value: Any) -> bool:
    return jnp.issubdtype(jnp.result_type(value), jnp.floating)


def _relu(site: Site) -> list[Tap]:
    if len(site.invals) != 2 or 0.0 not in site.known:
        return []
    j = 1 if site.known[0] == 0.0 else 0
    return [Tap("relu", _shaped(site, site.invals[j]), site.outvals[0], j)]


def _max_min(site: Site) -> list[Tap]:
    if len(site.invals) != 2 or all(k is not None for k in site.known) or not _is_floating(site.outvals[0]):
        return []
    a, b = (1, 0) if site.known[0] is not None else (0, 1)
    return [Tap(site.function or site.primitive, _difference(site, a, b), site.outvals[0], a)]


def _abs(site: Site) -> list[Tap]:
    if site.known[0] is not None or not _is_floating(site.invals[0]):
        return []
    return [Tap(site.function or "abs", site.invals[0], site.outvals[0], 0)]


def _compare(site: Site) -> list[Tap]:
    if all(k is not None for k in site.known) or not all(_is_floating(v) for v in site.invals):
        return []
    a, b = (1, 0) if site.known[0] is not None else (0, 1)
    dtype = jnp.result_type(*site.invals)
    unit = jnp.asarray(site.invals[a], dtype) - jnp.asarray(site.invals[b], dtype)
    return [Tap(site.function or "where", _shaped(site, unit), None, a)]


def _clamp(site: Site) -> list[Tap]:
    if site.known[1] is not None or not _is_floating(site.outvals[0]):
        return []
    label = site.function or "clip"
    return [Tap(label, _difference(site, 1, 0), site.outvals[0], 1), Tap(label, _difference(site, 1, 2), None, 1)]


def _unary(label: str) -> Callable[[Site], list[Tap]]:
    def match(site: Site) -> list[Tap]:
        return [Tap(label, site.invals[0], site.outvals[0], 0)] if _is_floating(site.invals[0]) else []

    return match


RULES: dict[str, Rule | FunctionRule] = {
    "relu": Rule("relu", frozenset({"max"}), _relu),
    "max_min": Rule("max_min", frozenset({"max", "min"}), _max_min),
    "abs": Rule("abs", frozenset({"abs"}), _abs),
    "compare": Rule("compare", frozenset({"gt", "ge", "lt", "le"}), _compare),
    "clamp": Rule("clamp", frozenset({"clamp"}), _clamp),
    "sigmoid": Rule("sigmoid", frozenset({"logistic"}), _unary("sigmoid")),
    "tanh": Rule("tanh", frozenset({"tanh"}), _unary("tanh")),
    "gelu": FunctionRule("gelu", frozenset({"gelu"})),
    "silu": FunctionRule("silu", frozenset({"silu", "swish"})),
    "softplus": FunctionRule("softplus", frozenset({"softplus"})),
    "softmax": FunctionRule("softmax", frozenset({"softmax"})),
    "layer_norm": FunctionRule("layer_norm", frozenset({"LayerNorm.__call__", "layer_norm"})),
}
"""Rules by name (``capture(fn, rules=...)`` accepts these names)."""

DEFAULT_RULES: tuple[str, ...] = ("relu",)
PIECEWISE_LINEAR: tuple[str, ...] = ("relu", "max_min", "abs", "compare", "clamp")
ACTIVATIONS: tuple[str, ...] = ("gelu", "silu", "softplus", "softmax", "layer_norm", "relu", "sigmoid", "tanh")
RULE_GROUPS: dict[str, tuple[str, ...]] = {"activations": ACTIVATIONS, "piecewise_linear": PIECEWISE_LINEAR}
"""Names ``capture(fn, rules=...)`` accepts for a group of rules."""


def register_rule(rule: Rule | FunctionRule, *, overwrite: bool = False) -> Rule | FunctionRule:
    """Add ``rule`` to :data:`RULES` under ``rule.name`` (refusing to replace one unless ``overwrite``).

    Example: ``register_rule(FunctionRule("my_act", {"my_act"}))`` taps every call of a function
    ``def my_act(x): ...``; ``capture(fn, rules=("my_act",))`` then records them as ``.../my_act``.
    """
    if not isinstance(rule, (Rule, FunctionRule)):
        raise TypeError(f"`rule` must be a capture Rule or FunctionRule; got {type(rule).__name__}.")
    if rule.name in RULE_GROUPS:
        raise ValueError(f"{rule.name!r} names a group of rules; choose another name.")
    if rule.name in RULES and not overwrite:
        raise ValueError(f"a rule named {rule.name!r} is already registered; pass overwrite=True to replace it.")
    RULES[rule.name] = rule
    return rule


def resolve_rules(rules: Sequence[str | Rule | FunctionRule] | str) -> tuple[Rule | FunctionRule, ...]:
    """Rules from names in :data:`RULES` / :data:`RULE_GROUPS` or rule objects, in priority order."""
    if isinstance(rules, (str, Rule, FunctionRule)):
        rules = [rules]
    out = []
    for r in rules:
        if isinstance(r, (Rule, FunctionRule)):
            out.append(r)
        elif isinstance(r, str) and r in RULE_GROUPS:
            out.extend(RULES[n] for n in RULE_GROUPS[r])
        elif isinstance(r, str) and r in RULES:
            out.append(RULES[r])
        else:
            raise ValueError(f"`rules` must hold rule names among {sorted(RULES)}, group names "
                             f"{sorted(RULE_GROUPS)} or Rule objects; got {r!r}.")
    if not out:
        raise ValueError("`rules` must name at least one rule.")
    return tuple(out)


def uniform_value(value: Any) -> float | None:
    """The single value of a constant array whose elements are all equal (None otherwise)."""
    arr = np.asarray(value)
    if arr.size == 0 or arr.dtype == object:
        return None
    first = arr.reshape(-1)[0]
    return float(first) if np.all(arr == first) and np.isfinite(first) else None
