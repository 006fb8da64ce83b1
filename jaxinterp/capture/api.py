"""``capture`` and ``activation_names``: the public entry points of :mod:`jaxinterp.capture`."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp.capture.interpreter import Interpreter, Options
from jaxinterp.capture.naming import POST_SUFFIX, missing_name, module_scopes, name_records, select
from jaxinterp.capture.reduce import apply_reduce, resolve_reduce
from jaxinterp.capture.rules import ACTIVATIONS, DEFAULT_RULES, PIECEWISE_LINEAR, FunctionRule, Rule, resolve_rules



def _is_array_leaf(x: Any) -> bool:
    return isinstance(x, (jax.Array, np.ndarray, np.generic, jax.core.Tracer))


def _nothing_to_capture(fn: Callable, rules: tuple[Rule, ...], want_modules: bool) -> ValueError:
    names = [r.name for r in rules]
    if names == ["relu"]:
        what = ("applies no ReLU (jax.nn.relu, flax relu or jnp.maximum(x, 0)); for GELU, SiLU, softmax, "
                "layer-norm and other activations pass rules='activations'")
    elif names == list(ACTIVATIONS):
        what = "applies no activation function (relu, gelu, silu, sigmoid, tanh, softplus, softmax, layer_norm)"
    elif names == list(PIECEWISE_LINEAR):
        what = "applies no ReLU and no other piecewise-linear kink (leaky_relu, abs, clip, max/min, where)"
    else:
        what = f"has no equation matched by the rules {names}"
    return ValueError(f"capture: {getattr(fn, '__name__', type(fn).__name__)} {what}"
                      + (" and has no named modules" if want_modules else "") + "; there is nothing to capture.")


def _check_post_names(names: Any, keys: list[str], post_activations: bool) -> None:
    """A ``":post"`` name asked for without ``post_activations=True`` is a KeyError that says so."""
    if post_activations or names is None or callable(names):
        return
    for pat in [names] if isinstance(names, str) else list(names):
        if isinstance(pat, str) and pat.endswith(POST_SUFFIX):
            raise missing_name(f"{pat!r} names a post-activation, which was not captured", pat, keys)


def _trace(fn: Callable, scope_root: Any, args, kwargs, trace_dtype):
    """``(closed jaxpr, array leaves, output treedef)`` of ``fn`` on the array leaves of its arguments."""
    leaves, treedef = jax.tree_util.tree_flatten((args, kwargs))
    is_dyn = [_is_array_leaf(x) for x in leaves]
    dyn = [x for x, d in zip(leaves, is_dyn) if d]
    out_tree: list[Any] = []

    def flat_fn(*dyn_vals):
        it = iter(dyn_vals)
        a, k = jax.tree_util.tree_unflatten(treedef, [next(it) if d else x for x, d in zip(leaves, is_dyn)])
        flat_out, tree = jax.tree_util.tree_flatten(fn(*a, **k))
        out_tree.append(tree)
        return flat_out

    specs = [jax.ShapeDtypeStruct(np.shape(x), trace_dtype if trace_dtype is not None
                                  and jnp.issubdtype(jnp.result_type(x), jnp.floating) else jnp.result_type(x))
             for x in dyn]
    with module_scopes(scope_root):
        closed = jax.make_jaxpr(flat_fn)(*specs)
    return closed, dyn, out_tree[-1]


def capture(
    fn: Callable,
    *,
    names: Sequence[str] | str | Callable[[str], bool] | None = None,
    post_activations: bool = False,
    modules: bool | Sequence[str] = False,
    module: Any = None,
    rules: Sequence[str | Rule | FunctionRule] | str = DEFAULT_RULES,
    promote: Any = None,
    reduce: Any = None,
) -> Callable:
    """Wrap ``fn`` so that it also returns the activations it computes.

    ``fn`` is traced to a jaxpr and evaluated equation by equation; the ``rules``
    (:mod:`jaxinterp.capture.rules`) say which equations are recorded (ReLU pre-activations by
    default). Nothing in the model is edited, so it works on plain functions, Flax Linen
    ``apply``, Flax NNX modules and Equinox modules, and the captured function composes with
    ``jax.jit``, ``jax.vmap`` and ``jax.grad``. Names come from module scopes (Linen paths, NNX
    and Equinox attribute paths), e.g. ``Dense_0/relu``; without scopes ``relu_0``, ``relu_1``, ...
    in call order.

    Args:
      fn: any JAX-traceable function (a plain function, ``linen_model.apply``, an NNX or
        Equinox module). Array arguments (and pytrees of them) are traced; other arguments
        (Python scalars, strings, modules' static parts) are treated as static.
      names: keep only activations whose names match these glob patterns (or for which this
        predicate is true). A pattern that matches nothing raises ``KeyError`` listing the
        available names.
      post_activations: also return each tap's output (e.g. the ReLU output) under ``"<name>:post"``.
      modules: also return the outputs of named modules (values computed inside a module's
        scope and used outside it): ``True`` for every module, or glob patterns of module paths.
      module: an NNX or Equinox module whose submodules should name the scopes (taken from
        ``fn`` itself when ``fn`` is such a module); not needed for Flax Linen.
      rules: names of rules in :data:`jaxinterp.capture.rules.RULES` or of groups of them
        (``"activations"``: ReLU, GELU, SiLU, sigmoid, tanh, softplus, softmax and layer-norm
        outputs; ``"piecewise_linear"``: every piecewise-linear kink), or :class:`Rule` /
        :class:`FunctionRule` objects, in priority order (default ``("relu",)``). Function rules
        record a call's input as the activation and its output under ``":post"`` (for
        ``softmax`` in attention: the attention pattern).
      promote: a floating dtype (e.g. ``jnp.float64``) in which to evaluate ``fn``: it is traced
        with its floating arguments in float32 and every floating value (parameters and the dtype
        arguments of lax-level ops included) is computed in this dtype (``while_loop`` / ``cond``
        bodies are bound as traced, so they must not mix the two dtypes). None: as traced.
      reduce: reduce activations inside the same program (:mod:`jaxinterp.capture.reduce`): a
        callable applied to every activation, or ``{glob pattern: callable}`` (first matching
        pattern wins; unmatched activations are returned in full), e.g.
        ``{"Conv_*": channel_mean()}``. Under ``jax.jit`` only the reductions leave the program.

    Returns:
      A function with the same arguments as ``fn`` returning ``(output, activations)``, where
      ``activations`` maps names to recorded values (``[*batch, ...]``, the shape at the call) in
      call order. Activations of a scanned body are stacked: ``[length, ...]``.

    Raises:
      ValueError: ``fn`` has no equation the rules record and no module outputs were requested.
      KeyError: ``names`` (or a ``reduce`` pattern) asks for an activation that does not exist.
    """
    if not callable(fn):
        raise TypeError(f"`fn` must be callable; got {type(fn).__name__}.")
    resolve_reduce(reduce)  # validates
    resolved = resolve_rules(rules)
    if promote is not None and not jnp.issubdtype(promote, jnp.floating):
        raise TypeError(f"`promote` must be a floating dtype or None; got {promote!r}.")
    want_modules = bool(modules)
    options = Options(resolved, want_modules, None if promote is None else jnp.dtype(promote),
                      lineage=reduce is not None)
    module_patterns = None if isinstance(modules, bool) else list(modules)
    scope_root = module if module is not None else fn
    root_name = type(getattr(fn, "__self__", fn)).__name__

    @functools.wraps(fn)
    def captured(*args, **kwargs):
        closed, dyn, out_tree = _trace(fn, scope_root, args, kwargs, None if promote is None else jnp.float32)
        if promote is not None:
            dyn = [jnp.asarray(x, options.promote) if jnp.issubdtype(jnp.result_type(x), jnp.floating) else x
                   for x in dyn]
        interp = Interpreter(options)
        flat_out = interp.run(closed.jaxpr, list(closed.consts), dyn, "")
        if not interp.records:
            raise _nothing_to_capture(fn, resolved, want_modules)
        pairs = name_records(interp.records, root_name)
        if want_modules and module_patterns is not None:
            mod_names = [n for n, r in pairs if not r.is_tap]
            keep = {mod_names[i] for i in select(mod_names, module_patterns)}
            pairs = [(n, r) for n, r in pairs if r.is_tap or n in keep]
        acts: dict[str, Any] = {}
        producers = {n: r.producer for n, r in pairs}
        for n, r in pairs:
            acts[n] = r.pre
            if post_activations and r.post is not None:
                acts[n + POST_SUFFIX] = r.post
        keys = list(acts)
        _check_post_names(names, keys, post_activations)
        chosen = [keys[i] for i in select(keys, names)]
        reduced = apply_reduce({k: acts[k] for k in chosen}, reduce, producers)
        return jax.tree_util.tree_unflatten(out_tree, flat_out), reduced

    return captured


def activation_names(fn: Callable, *args, post_activations: bool = False, modules: bool | Sequence[str] = False,
                     module: Any = None, rules: Sequence[str | Rule] | str = DEFAULT_RULES, **kwargs) -> list[str]:
    """Names that ``capture(fn, ...)`` returns for these arguments, in call order (no FLOPs)."""
    wrapped = capture(fn, post_activations=post_activations, modules=modules, module=module, rules=rules)
    order: list[str] = []  # pytree flattening sorts dict keys: keep call order from inside the trace

    def names_in_order():
        out, acts = wrapped(*args, **kwargs)
        order[:] = list(acts)
        return out, acts

    jax.eval_shape(names_in_order)
    return order
