"""Shared fixtures. Tests run on CPU; figures use the non-interactive Agg backend."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("JAXINTERP_COMPILATION_CACHE", "0")  # the test suite does not write to the user's cache
# The suite compiles hundreds of small programs and runs each briefly: XLA's LLVM optimisation passes
# cost far more than they save (measured: 61 % less CPU time on tests/test_toy_training.py and
# tests/test_midrange_lenet.py). Set before jax starts, so every worker and subprocess inherits it.
# JAXINTERP_TEST_OPTIMIZE=1 runs the suite with XLA's default optimisation.
if os.environ.get("JAXINTERP_TEST_OPTIMIZE", "0") != "1":
    os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), "--xla_backend_optimization_level=0",
                                        "--xla_llvm_disable_expensive_passes=true"]).strip()

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
