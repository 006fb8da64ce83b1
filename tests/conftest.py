"""Shared fixtures. Tests run on CPU; figures use the non-interactive Agg backend."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("JAXINTERP_COMPILATION_CACHE", "0")  # the test suite does not write to the user's cache

import jax  # noqa: E402
import pytest  # noqa: E402

# Strict numerics for the whole suite: an implicit rank broadcast or dtype promotion is an error,
# so the library works for users who turn these on (and hides no accidental promotion). Warnings
# from jaxinterp are errors too (pyproject.toml: filterwarnings).
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")


@pytest.fixture
def key():
    """A fixed PRNG key: tests are deterministic."""
    return jax.random.key(0)
