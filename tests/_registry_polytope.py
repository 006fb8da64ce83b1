"""Bad-input battery registrations: the polytope lens.

``entries()`` registers every public function of the area once with a valid call; ``EXEMPT``
names the public callables that take no user data, with the reason.
"""

import numpy as np

from tests._battery import Entry
from tests._battery_inputs import *  # noqa: F403 - the shared battery inputs

EXEMPT: dict[str, str] = {}


def entries() -> list[Entry]:
    """This area's registered entries (built on first use: it imports the library)."""
    import jaxinterp
    from jaxinterp import polytope

    words = np.asarray(polytope.polytope_codes(NET, X).words)
    return [
        Entry("jaxinterp.polytope_codes", lambda x: polytope.polytope_codes(NET, x).words, dict(x=X),
              accept={"x.rank_up": MODEL_DECIDES, "x.rank_down": MODEL_DECIDES}),
        Entry("jaxinterp.dataset_codes",
              lambda x, batch_size: polytope.dataset_codes(NET, x, batch_size=batch_size).words,
              dict(x=X, batch_size=16),
              accept={"x.rank_up": MODEL_DECIDES, "x.rank_down": MODEL_DECIDES}),
        Entry("jaxinterp.hamming", lambda a, b: polytope.hamming(a, b), dict(a=words, b=words[::-1].copy()),
              kinds={"a": "codes", "b": "codes"}),
        Entry("jaxinterp.count_polytopes", lambda words: polytope.count_polytopes(words), dict(words=words),
              kinds={"words": "codes"}),
        Entry("jaxinterp.sampled_boundary_counts",
              lambda x0, x1, n_steps: polytope.sampled_boundary_counts(NET, x0, x1, n_steps=n_steps).counts,
              dict(x0=X0, x1=X1, n_steps=20), pairs=(("x0", "x1"),)),
        Entry("jaxinterp.exact_walk",
              lambda x0, x1, max_crossings: polytope.exact_walk(NET, x0, x1, max_crossings=max_crossings,
                                                                keep_regions=False).n_crossings,
              dict(x0=X0, x1=X1, max_crossings=256), pairs=(("x0", "x1"),)),
        Entry("jaxinterp.local_complexity",
              lambda x, key, radius, n_directions: polytope.local_complexity(
                  NET, x, key=key, radius=radius, n_directions=n_directions).total,
              dict(x=X[:8], key=KEY, radius=0.5, n_directions=4)),
        Entry("jaxinterp.boundary_distances",
              lambda x: polytope.boundary_distances(NET, x).distances, dict(x=X[:8])),
        Entry("jaxinterp.boundary_density",
              lambda distances, radius: jaxinterp.boundary_density(distances, radius),
              dict(distances=np.abs(X[:8]) + 0.01, radius=0.5)),
    ]
