"""Bad-input battery registrations: the interpretability index and 2AFC.

``entries()`` registers every public function of the area once with a valid call; ``EXEMPT``
names the public callables that take no user data, with the reason.
"""

import numpy as np

from tests._battery import Entry
from tests._battery_inputs import *  # noqa: F403 - the shared battery inputs

EXEMPT: dict[str, str] = {}


def entries() -> list[Entry]:
    """This area's registered entries (built on first use: it imports the library)."""
    from jaxinterp import interpretability as interp
    return [
        Entry("jaxinterp.interpretability_index",
              lambda acts, items, k: interp.interpretability_index(acts, items, interp.pixel_l2(), k=k).scores,
              dict(acts=ACTS, items=ITEMS, k=5), pairs=(("acts", "items"),)),
        Entry("jaxinterp.psychophysics",
              lambda acts, items: interp.psychophysics(acts, items, interp.pixel_l2()).scores,
              dict(acts=ACTS, items=ITEMS), pairs=(("acts", "items"),)),
    ]
