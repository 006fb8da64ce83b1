"""Keys derived by name: stable, order-free and collision-free where integer sums collide."""

import jax
import numpy as np
import pytest

from jaxinterp.keys import name_hash, named_key


def _data(k):
    return np.asarray(jax.random.key_data(k))


def test_named_key_is_stable_and_distinct(key):
    assert np.array_equal(_data(named_key(key, "a", 1)), _data(named_key(key, "a", 1)))
    assert not np.array_equal(_data(named_key(key, "a", 1)), _data(named_key(key, "a", 2)))
    assert not np.array_equal(_data(named_key(key, "a")), _data(named_key(key, "b")))
    # seed + width collisions of integer arithmetic do not happen by name
    a = named_key(jax.random.key(1), "width", 8)
    b = named_key(jax.random.key(8), "width", 1)
    assert not np.array_equal(_data(a), _data(b))


def test_name_hash_is_fixed_across_runs():
    # sha256-based, so independent of PYTHONHASHSEED
    assert name_hash("train") == name_hash("train") and 0 <= name_hash("train") < 2**31
    assert name_hash(3) == name_hash("3")


def test_named_key_rejects_bad_input(key):
    with pytest.raises(TypeError, match="key"):
        named_key(0, "a")
    with pytest.raises(ValueError, match="names"):
        named_key(key)
    with pytest.raises(TypeError, match="names"):
        named_key(key, 1.5)
