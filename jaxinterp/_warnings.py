"""Warning classes. Every warning jaxinterp issues is a ``JaxinterpWarning``, so one filter
(``-W error::jaxinterp.JaxinterpWarning`` or ``warnings.simplefilter("error", JaxinterpWarning)``)
turns them all into errors; the test suite does exactly that."""

__all__ = ["JaxinterpWarning", "CircularSimilarityWarning", "AffinityWarning", "CheckpointFallbackWarning"]


class JaxinterpWarning(UserWarning):
    """Base class of every warning jaxinterp issues."""


class CircularSimilarityWarning(JaxinterpWarning):
    """A similarity computed by the very network being analysed: its scores are circular."""


class AffinityWarning(JaxinterpWarning, RuntimeWarning):
    """A region found by an exact walk failed the affinity check (``check="warn"``)."""


class CheckpointFallbackWarning(JaxinterpWarning, RuntimeWarning):
    """The newest checkpoint was unusable; an older one was resumed instead."""
