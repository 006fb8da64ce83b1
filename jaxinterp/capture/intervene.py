"""Interventions: run a function with some of its activations replaced, the sibling of ``capture``.

``intervene(fn, {name: edit})`` returns a function with ``fn``'s arguments and output in which the
named activation (a name that ``capture(fn, ...)`` returns) is replaced by ``edit(value)``:

- ``"<name>"`` edits the recorded value itself, the input of the activation function (for ReLU:
  the pre-activation), so the activation function is applied to the edited value; for module
  outputs (``modules=True``) it replaces the module's output.
- ``"<name>:post"`` edits the activation function's output, which is what the rest of the model
  reads.

Edits are ordinary JAX functions, so the edited function composes with ``jax.jit``, ``jax.vmap``
and ``jax.grad`` (also with respect to values the edit closes over). Helpers build the usual
edits: :func:`zero_ablate`, :func:`mean_ablate`, :func:`patch` / :func:`patch_all` (from a cached
run on another input), :func:`project_out` and :func:`add_direction`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from jaxinterp._validation import check_finite, check_nonempty, check_real, float32_if_half, is_concrete
from jaxinterp.capture.api import POST_SUFFIX, _trace
from jaxinterp.capture.interpreter import Interpreter, Options
from jaxinterp.capture.naming import missing_name, name_records
from jaxinterp.capture.rules import DEFAULT_RULES, FunctionRule, Rule, resolve_rules


def _name_keys(closed, dyn, options: Options, root_name: str) -> dict[str, tuple]:
    """``name -> (scope, label, occurrence, "pre" | "post")`` for every editable activation (no FLOPs)."""
    records = []

    def dry(*vals):
        interp = Interpreter(options)
        interp.run(closed.jaxpr, list(closed.consts), list(vals), "")
        records.extend(interp.records)
        return 0

    jax.eval_shape(dry, *dyn)
    seen: dict[tuple, int] = {}
    keys: dict[str, tuple] = {}
    occurrence = []
    for r in records:
        occurrence.append(seen.get(r.key, 0))
        seen[r.key] = occurrence[-1] + 1
    index = {id(r): i for i, r in enumerate(records)}
    for name, r in name_records(records, root_name):
        base = (*r.key, occurrence[index[id(r)]])
        keys[name] = (*base, "pre", r.stacked)
        if r.post is not None:
            keys[name + POST_SUFFIX] = (*base, "post", r.stacked)
    return keys


def _resolve_edits(edits: Mapping[str, Callable], keys: dict[str, tuple]) -> dict[tuple, Callable]:
    out = {}
    for name, edit in edits.items():
        if name not in keys:
            raise missing_name(f"intervene: no activation named {name!r}", name, list(keys), flag_hint=False)
        *key, stacked = keys[name]
        if stacked:
            raise ValueError(f"intervene: {name!r} is computed inside a scanned body; editing it is not supported.")
        out[tuple(key)] = edit
    return out


def intervene(
    fn: Callable,
    edits: Mapping[str, Callable[[Any], Any]],
    *,
    rules: Sequence[str | Rule | FunctionRule] | str = DEFAULT_RULES,
    modules: bool = False,
    module: Any = None,
) -> Callable:
    """Wrap ``fn`` so that the named activations are replaced by ``edit(value)``.

    Args:
      fn: any JAX-traceable function, as for :func:`~jaxinterp.capture.capture`.
      edits: ``{name: edit}``; ``name`` is one that ``capture(fn, rules=rules, modules=modules,
        post_activations=True)`` returns (``"<name>:post"`` edits an activation function's output);
        ``edit`` maps the value (``[*batch, ...]``, its shape at the call) to a value of the same
        shape and dtype.
      rules: the tap rules that define the names (as for ``capture``).
      modules: also allow editing module outputs (named by module path).
      module: an NNX or Equinox module naming the scopes (as for ``capture``).

    Returns:
      A function with ``fn``'s arguments returning ``fn``'s output computed with the edits.

    Raises:
      KeyError: a name in ``edits`` is not an activation of ``fn`` (the message lists them).
      ValueError: an edit targets a value inside a scanned body, or the recorded value of a tap
        that is not the activation function's input (a kink difference): edit ``":post"``.
      TypeError: ``fn`` or an edit is not callable.
    """
    if not callable(fn):
        raise TypeError(f"`fn` must be callable; got {type(fn).__name__}.")
    if not isinstance(edits, Mapping) or not all(isinstance(k, str) and callable(v) for k, v in edits.items()):
        raise TypeError(f"`edits` must map activation names to callables; got {edits!r}.")
    base = Options(resolve_rules(rules), bool(modules), None)
    scope_root = module if module is not None else fn
    root_name = type(getattr(fn, "__self__", fn)).__name__

    @functools.wraps(fn)
    def edited(*args, **kwargs):
        closed, dyn, out_tree = _trace(fn, scope_root, args, kwargs, None)
        resolved = _resolve_edits(edits, _name_keys(closed, dyn, base, root_name))
        options = Options(base.rules, base.want_modules, None, resolved)
        flat_out = Interpreter(options).run(closed.jaxpr, list(closed.consts), dyn, "")
        return jax.tree_util.tree_unflatten(out_tree, flat_out)

    return edited


# -- edits ---------------------------------------------------------------------------------------
def zero_ablate() -> Callable[[Any], Any]:
    """Replace the activation by zeros."""
    return jnp.zeros_like


def _edit_array(value: Any, name: str, *, vector: bool = False) -> Any:
    """``value`` as a finite, non-empty float array (half precision as float32), named in errors."""
    if value is None or isinstance(value, (str, bytes)):
        raise TypeError(f"`{name}` must be an array; got {type(value).__name__}.")
    arr = float32_if_half(jnp.asarray(value))
    if not jnp.issubdtype(arr.dtype, jnp.inexact):
        arr = arr.astype(jnp.float32)
    if vector and arr.ndim != 1:
        raise ValueError(f"`{name}` must be a vector [units]; got shape {arr.shape}.")
    check_nonempty(arr if arr.ndim else arr[None], name)
    check_finite(arr, name)
    return arr


def mean_ablate(mean: Any) -> Callable[[Any], Any]:
    """Replace the activation by ``mean`` (e.g. its mean over a dataset).

    ``mean`` broadcasts to the activation's shape: a scalar, ``[units]``, the per-example shape or
    the full shape; anything that does not broadcast is an error naming ``mean``.
    """
    mean = _edit_array(mean, "mean")

    def edit(value):
        try:
            target = jnp.broadcast_shapes(jnp.shape(mean), jnp.shape(value))
        except ValueError:
            target = None
        if target != tuple(jnp.shape(value)):
            raise ValueError(f"`mean` of shape {jnp.shape(mean)} does not broadcast to the activation's shape "
                             f"{jnp.shape(value)}.")
        return jnp.broadcast_to(mean, jnp.shape(value)).astype(jnp.result_type(value))

    return edit


def patch(value: Any) -> Callable[[Any], Any]:
    """Replace the activation by ``value`` (e.g. the activation cached from a run on another input)."""
    value = _edit_array(value, "value")

    def edit(current):
        if jnp.shape(value) != jnp.shape(current):
            raise ValueError(f"patch: `value` (the cached activation) has shape {jnp.shape(value)}; the "
                             f"activation has {jnp.shape(current)}.")
        return value.astype(jnp.result_type(current))

    return edit


def patch_all(cache: Mapping[str, Any]) -> dict[str, Callable[[Any], Any]]:
    """``{name: patch(value)}`` for every activation in ``cache`` (a ``capture`` result)."""
    if not isinstance(cache, Mapping):
        raise TypeError(f"`cache` must be a mapping {{name: activation}}; got {type(cache).__name__}.")
    return {name: patch(value) for name, value in cache.items()}


def _unit(direction: Any) -> Any:
    d = _edit_array(direction, "direction", vector=True)
    norm = jnp.linalg.norm(d)
    if is_concrete(norm) and not float(norm) > 0:
        raise ValueError("`direction` must be non-zero.")
    return d / norm


def project_out(direction: Any) -> Callable[[Any], Any]:
    """Remove the component along ``direction`` ``[units]`` (the last axis): ``v - (v . u) u``, ``u`` unit."""
    u = _unit(direction)
    return lambda v: v - (v @ u)[..., None] * u.reshape((1,) * (v.ndim - 1) + (-1,))


def add_direction(direction: Any, scale: Any = 1.0) -> Callable[[Any], Any]:
    """Add ``scale * direction`` (``[units]``, along the last axis; not normalised) to the activation.

    ``scale`` may be traced (e.g. differentiated through); a concrete one must be finite.
    """
    d = _edit_array(direction, "direction", vector=True)
    if is_concrete(scale):
        scale = check_real(scale, "scale")
    elif jnp.ndim(scale) != 0 or not jnp.issubdtype(jnp.result_type(scale), jnp.floating):
        raise TypeError(f"`scale` must be a real scalar; got a traced value of shape {jnp.shape(scale)} and dtype "
                        f"{jnp.result_type(scale)}.")
    return lambda v: v + scale * d.reshape((1,) * (v.ndim - 1) + (-1,))
