"""Bad-input battery registrations: the direction learners.

``entries()`` registers every public function of the area once with a valid call; ``EXEMPT``
names the public callables that take no user data, with the reason.
"""

import numpy as np

from tests._battery import Entry
from tests._battery_inputs import *  # noqa: F403 - the shared battery inputs

EXEMPT: dict[str, str] = {}


def entries() -> list[Entry]:
    """This area's registered entries (built on first use: it imports the library)."""
    from jaxinterp import directions as jd
    return [
        Entry("jaxinterp.directions.fit[pca]",
              lambda data, key: jd.fit(jd.pca(3), data, key=key).components, dict(data=X, key=KEY),
              accept={"data.huge": "computed on centred, scaled data: finite at 1e30"}),
        Entry("jaxinterp.directions.fit[kmeans]",
              lambda data, key: jd.fit(jd.kmeans(4, cosine=True), data, key=key).components, dict(data=X, key=KEY),
              accept={"data.huge": "cosine K-means normalises rows"}, rtol=0.2),
        Entry("jaxinterp.directions.fit[sae]",
              lambda data, key, steps: jd.fit(jd.sae(16), data, key=key, steps=steps, batch_size=32).components,
              dict(data=X, key=KEY, steps=50), rtol=0.2),
        Entry("jaxinterp.directions.pca", lambda k: jd.pca(k), dict(k=3)),
        Entry("jaxinterp.directions.kmeans", lambda k: jd.kmeans(k), dict(k=3)),
        Entry("jaxinterp.directions.ica", lambda k, tol: jd.ica(k, tol=tol), dict(k=3, tol=1e-4)),
        Entry("jaxinterp.directions.nmf", lambda k: jd.nmf(k), dict(k=3)),
        Entry("jaxinterp.directions.dictionary", lambda k, alpha: jd.dictionary(k, alpha=alpha), dict(k=3, alpha=0.1)),
        Entry("jaxinterp.directions.sae", lambda n_latents, coef: jd.sae(n_latents, coef=coef),
              dict(n_latents=16, coef=0.1),
              accept={"coef.none": "None selects the kind's default coefficient (documented)"}),
        Entry("jaxinterp.directions.minibatch_kmeans", lambda k, batch_size: jd.minibatch_kmeans(k, batch_size=batch_size),
              dict(k=3, batch_size=32)),
    ]
