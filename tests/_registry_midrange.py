"""Bad-input battery registrations: the mid-range analysis and curation, and the shapes datasets.

``entries()`` registers every public function of the area once with a valid call; ``EXEMPT``
names the public callables that take no user data, with the reason.
"""

import numpy as np

from tests._battery import Entry
from tests._battery_inputs import *  # noqa: F403 - the shared battery inputs

EXEMPT: dict[str, str] = {}


def entries() -> list[Entry]:
    """This area's registered entries (built on first use: it imports the library)."""
    from jaxinterp import midrange
    return [
        Entry("jaxinterp.midrange_mask", lambda logits, labels: midrange.midrange_mask(logits, labels),
              dict(logits=LOGITS, labels=LABELS), kinds={"labels": "labels"}, pairs=(("logits", "labels"),)),
        Entry("jaxinterp.range_analysis",
              lambda values, n_bins: midrange.range_analysis(values, n_bins=n_bins).counts,
              dict(values=LOGITS[:, 0], n_bins=5)),
        Entry("jaxinterp.midrange.group_metrics",
              lambda predictions, labels, groups: midrange.group_metrics(predictions, labels, groups).worst_group,
              dict(predictions=LABELS[::-1].copy(), labels=LABELS, groups=LABELS % 2),
              kinds={"predictions": "labels", "labels": "labels", "groups": "labels"},
              pairs=(("labels", "predictions"), ("labels", "groups"))),
    ]
