"""Bad-input battery registrations: toy models, classifiers and the datasets digits / mnist1d / sparse.

``entries()`` registers every public function of the area once with a valid call; ``EXEMPT``
names the public callables that take no user data, with the reason.
"""

import numpy as np

from tests._battery import Entry
from tests._battery_inputs import *  # noqa: F403 - the shared battery inputs

EXEMPT: dict[str, str] = {}


def entries() -> list[Entry]:
    """This area's registered entries (built on first use: it imports the library)."""
    from jaxinterp import toy
    from jaxinterp.datasets import load_digits
    return [
        Entry("jaxinterp.toy.IncidentalConfig",
              lambda learning_rate, l1, weight_decay: toy.IncidentalConfig(
                  n_features=8, n_hidden=8, learning_rate=learning_rate, l1=l1, weight_decay=weight_decay),
              dict(learning_rate=1e-3, l1=1e-3, weight_decay=0.01),
              ),
        Entry("jaxinterp.toy.collisions_sweep",
              lambda key, n_seeds: toy.collisions_sweep(key, toy.IncidentalConfig(n_features=4, n_hidden=4, steps=10),
                                                        [4, 8], n_seeds)["counts"],
              dict(key=KEY, n_seeds=2)),
        Entry("jaxinterp.datasets.load_digits", lambda seed, test_fraction: load_digits(seed, test_fraction).x_test,
              dict(seed=0, test_fraction=0.25),
              accept={"seed.zero": "0 is a valid seed"}),
    ]
