"""The bad-input battery: every public function refuses bad input with an error naming the
argument, or follows a documented behaviour; none returns NaN or a plausible wrong answer.

Registrations live in ``tests/_registry_<area>.py`` (one per subpackage family); the engine in
``tests/_battery.py``. A public callable that is neither registered nor exempt (with a reason)
fails ``test_every_public_callable_is_registered``.
"""

import importlib
import inspect

import pytest

import _registry_core
import _registry_directions
import _registry_interpretability
import _registry_midrange
import _registry_polytope
import _registry_toy
from _battery import run_entry

REGISTRIES = (_registry_core, _registry_directions, _registry_interpretability, _registry_midrange,
              _registry_polytope, _registry_toy)
ENTRIES = {e.name: e for r in REGISTRIES for e in r.entries()}
EXEMPT = {name: why for r in REGISTRIES for name, why in r.EXEMPT.items()}
#: registered entries whose checks are still missing in the library: strict xfail, so the fix shows
PENDING = {name: why for r in REGISTRIES for name, why in getattr(r, "PENDING", {}).items()}
PUBLIC_MODULES = ("jaxinterp", "jaxinterp.capture", "jaxinterp.checkpoint", "jaxinterp.conv", "jaxinterp.datasets",
                  "jaxinterp.directions", "jaxinterp.distributed", "jaxinterp.interpretability", "jaxinterp.keys",
                  "jaxinterp.launch", "jaxinterp.loop", "jaxinterp.midrange", "jaxinterp.midrange.lenet",
                  "jaxinterp.midrange.probe", "jaxinterp.midrange.training", "jaxinterp.models", "jaxinterp.polytope",
                  "jaxinterp.sharding", "jaxinterp.streaming", "jaxinterp.studies.claims", "jaxinterp.toy")


def _needs_checks(obj) -> bool:
    """Functions (plain or jitted) and config classes (those that validate their fields)."""
    if inspect.isclass(obj):
        return hasattr(obj, "__post_init__") or hasattr(obj, "validate")
    return callable(obj) and not inspect.ismodule(obj)


def _public_callables() -> dict[str, object]:
    found = {}
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in getattr(module, "__all__", ()):
            obj = getattr(module, name)
            if _needs_checks(obj):
                found.setdefault(id(obj), []).append(f"{module_name}.{name}")
    return {min(names, key=len): names for names in found.values()}


def test_every_public_callable_is_registered():
    covered = {name.split("[")[0] for name in ENTRIES} | set(EXEMPT)
    missing = [names[0] for names in _public_callables().values() if not covered.intersection(names)]
    assert not missing, "public callables without a bad-input registration or exemption:\n  " + "\n  ".join(
        sorted(missing))


#: entries that train or sweep inside every variant (each takes 10 s or more on a 2-core CPU): run
#: with ``pytest -m slow``; their argument checks share code with the fast entries of the default run
SLOW_ENTRIES = frozenset({
    "jaxinterp.toy.collisions_sweep", "jaxinterp.directions.fit[sae]", "jaxinterp.directions.fit[dictionary]",
    "jaxinterp.directions.fit[cosine_kmeans]", "jaxinterp.directions.fit[minibatch_kmeans]",
    "jaxinterp.directions.fit[kmeans]", "jaxinterp.directions.evaluate", "jaxinterp.compare_methods",
    "jaxinterp.datasets.make_superposition_data", "jaxinterp.exact_walk", "jaxinterp.boundary_distances",
})


def _entry_param(name):
    marks = [pytest.mark.xfail(strict=True, reason=PENDING[name])] if name in PENDING else []
    marks += [pytest.mark.slow] if name in SLOW_ENTRIES else []
    return pytest.param(name, marks=marks)


def test_slow_entries_exist():
    assert SLOW_ENTRIES <= set(ENTRIES), sorted(SLOW_ENTRIES - set(ENTRIES))


@pytest.mark.parametrize("name", [_entry_param(n) for n in sorted(ENTRIES)])
def test_bad_inputs_give_clear_errors(name):
    outcomes = run_entry(ENTRIES[name])
    bad = [f"{label}: {outcome} ({detail})" for label, outcome, detail in outcomes
           if outcome not in ("clear", "accepted")]
    assert not bad, f"{name}:\n  " + "\n  ".join(bad)
