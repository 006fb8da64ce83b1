"""Capture the activations of any JAX function by interpreting its traced program.

``capture(fn)`` traces ``fn`` to a jaxpr and evaluates it equation by equation
(:mod:`~jaxinterp.capture.interpreter`), recording the equations that the tap rules
(:mod:`~jaxinterp.capture.rules`) match: by default the input of every ReLU (``jax.nn.relu``,
Flax's ``relu``, a bare ``jnp.maximum(x, 0)``). It looks inside ``jit``, ``custom_jvp``,
``custom_vjp``, ``checkpoint`` and ``scan`` (activations of a scanned body get a leading
``[length]`` axis). Nothing in the model is edited.

Names (:mod:`~jaxinterp.capture.naming`) come from where an operation sits in the model: the name
stack of the traced program (Flax Linen records module paths there; NNX and Equinox submodules
are given scopes named by their attribute paths while tracing). A ReLU is named after the module
that produced its input, e.g. ``Dense_0/relu``; without any scope, ``relu_0``, ``relu_1``, ... in
call order. A name that would repeat gets ``_0``, ``_1``, ... suffixes in call order. Taps inside
``while_loop`` and ``cond`` bodies are evaluated but not recorded (their trip count / branch is
data dependent).

``rules="activations"`` also records GELU, SiLU, sigmoid, tanh, softplus, softmax (attention
patterns under ``":post"``) and layer-norm inputs/outputs; :func:`register_rule` adds user rules
(:class:`FunctionRule` taps every call of a named Python function). ``capture(fn, reduce=...)``
reduces activations inside the same program (:mod:`~jaxinterp.capture.reduce`; means of conv and
dense outputs come from their inputs, :mod:`~jaxinterp.capture.lineage`, so no map is read twice), and
:func:`intervene` runs ``fn`` with named activations replaced
(:mod:`~jaxinterp.capture.intervene`).
"""

import sys
import types

from jaxinterp.capture.api import POST_SUFFIX, activation_names, capture
from jaxinterp.capture.intervene import (add_direction, intervene, mean_ablate, patch, patch_all, project_out,
                                         zero_ablate)
from jaxinterp.capture.reduce import (Reduction, TopK, channel_argmax, channel_max, channel_mean, channel_topk,
                                      last_token, token_mean)
from jaxinterp.capture.rules import (ACTIVATIONS, DEFAULT_RULES, PIECEWISE_LINEAR, RULE_GROUPS, RULES, FunctionRule,
                                     Rule, Site, Tap, register_rule)

__all__ = ["POST_SUFFIX", "capture", "activation_names", "Rule", "FunctionRule", "Site", "Tap", "RULES",
           "RULE_GROUPS", "ACTIVATIONS", "DEFAULT_RULES", "PIECEWISE_LINEAR", "register_rule", "Reduction", "TopK",
           "channel_mean", "channel_max", "channel_argmax", "channel_topk", "token_mean", "last_token", "intervene",
           "zero_ablate", "mean_ablate", "patch", "patch_all", "project_out", "add_direction"]


class _CallableModule(types.ModuleType):
    """The ``jaxinterp.capture`` module, callable as :func:`capture` (the package's flat API name)."""

    def __call__(self, fn, **kwargs):
        return capture(fn, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
