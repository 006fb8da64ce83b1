"""Bad-input battery registrations: capture, streaming, keys, loop, claims, checkpoint, sharding.

``entries()`` registers every public function of the area once with a valid call; ``EXEMPT``
names the public callables that take no user data, with the reason.
"""

import jax
import numpy as np

from tests._battery import Entry
from tests._battery_inputs import *  # noqa: F403 - the shared battery inputs

EXEMPT: dict[str, str] = {}


def entries() -> list[Entry]:
    """This area's registered entries (built on first use: it imports the library)."""
    from jaxinterp import streaming
    return [
        Entry("jaxinterp.apply_in_batches",
              lambda fn, data, batch_size: streaming.apply_in_batches(fn, data, batch_size=batch_size),
              dict(fn=lambda b: b * 2.0, data=X, batch_size=16), kinds={"fn": "other"},
              accept={"data.nan": PASS_THROUGH, "data.inf": PASS_THROUGH, "data.huge": PASS_THROUGH,
                      "data.rank_up": PASS_THROUGH, "data.rank_down": PASS_THROUGH,
                      "data.float16": PASS_THROUGH},
              ),
        Entry("jaxinterp.stream",
              lambda data, batch_size, top_k: streaming.stream(lambda b: {"h": jax.nn.relu(b)}, data,
                                                               batch_size=batch_size, top_k=top_k),
              dict(data=X, batch_size=16, top_k=3),
              aliases={"data": ("activations",)},
              accept={"top_k.zero": "top_k=0 turns the top-k tracking off (documented)",
                      "data.rank_up": PASS_THROUGH, "data.rank_down": PASS_THROUGH}),
    ]
