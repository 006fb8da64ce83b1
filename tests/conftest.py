"""Shared fixtures. Tests run on CPU; figures use the non-interactive Agg backend."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("JAXINTERP_COMPILATION_CACHE", "0")  # the test suite does not write to the user's cache

import jax  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def key():
    """A fixed PRNG key: tests are deterministic."""
    return jax.random.key(0)
