"""Checkpoints of pytrees: round trips, typed PRNG keys, refusal of mismatches, atomicity, the previous
checkpoint kept and used when the newest is damaged, fingerprints by content."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinterp import checkpoint


class State(NamedTuple):
    params: dict
    key: jax.Array
    step: jax.Array


def _state(seed=0):
    k = jax.random.key(seed)
    return State({"w": jax.random.normal(k, (3, 4)), "b": jnp.arange(4, dtype=jnp.int32)},
                 jax.random.split(k, 5), jnp.asarray(7, jnp.int32))


def test_round_trip_with_typed_keys_and_metadata(tmp_path):
    state = _state()
    path = checkpoint.save_pytree(tmp_path / "c.npz", state, metadata={"steps_done": 500, "fp": "abc"})
    loaded, meta = checkpoint.load_pytree(path, like=_state(1))
    assert meta == {"steps_done": 500, "fp": "abc"}
    assert checkpoint.read_metadata(path) == meta
    np.testing.assert_array_equal(loaded.params["w"], state.params["w"])
    np.testing.assert_array_equal(loaded.params["b"], state.params["b"])
    assert loaded.step == 7
    # keys come back as typed keys that draw the same numbers
    assert jax.dtypes.issubdtype(loaded.key.dtype, jax.dtypes.prng_key)
    np.testing.assert_array_equal(jax.random.normal(loaded.key[2], (3,)), jax.random.normal(state.key[2], (3,)))


def test_overwrite_keeps_the_previous_checkpoint_and_no_temporary_files(tmp_path):
    path = tmp_path / "sub" / "c.npz"
    checkpoint.save_pytree(path, _state(0), metadata={"n": 1})
    checkpoint.save_pytree(path, _state(1), metadata={"n": 2})
    assert sorted(p.name for p in path.parent.iterdir()) == ["c.npz", "c.npz.prev"]
    loaded, meta = checkpoint.load_pytree(path, _state())
    np.testing.assert_array_equal(loaded.params["w"], _state(1).params["w"])
    assert meta == {"n": 2}
    prev, meta = checkpoint.load_pytree(checkpoint.previous_path(path), _state())
    np.testing.assert_array_equal(prev.params["w"], _state(0).params["w"])
    assert meta == {"n": 1}
    checkpoint.save_pytree(path, _state(2), metadata={"n": 3})     # rotation keeps two, not three
    assert sorted(p.name for p in path.parent.iterdir()) == ["c.npz", "c.npz.prev"]
    assert checkpoint.read_metadata(checkpoint.previous_path(path)) == {"n": 2}


def test_failed_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "c.npz"
    checkpoint.save_pytree(path, _state(0), metadata={"v": 1})

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError):
        checkpoint.save_pytree(path, _state(1), metadata={"v": 2})
    monkeypatch.undo()
    assert checkpoint.read_metadata(path) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["c.npz"]


def test_structure_shape_and_dtype_mismatch_raise(tmp_path):
    path = checkpoint.save_pytree(tmp_path / "c.npz", _state())
    with pytest.raises(ValueError, match="structure"):
        checkpoint.load_pytree(path, {"w": jnp.zeros((3, 4))})
    bad_shape = _state()._replace(params={"w": jnp.zeros((4, 4)), "b": jnp.arange(4, dtype=jnp.int32)})
    with pytest.raises(ValueError, match="shape"):
        checkpoint.load_pytree(path, bad_shape)
    bad_dtype = _state()._replace(step=jnp.asarray(7.0, jnp.float32))
    with pytest.raises(ValueError, match="dtype"):
        checkpoint.load_pytree(path, bad_dtype)
    not_key = _state()._replace(key=jnp.zeros((5, 2), jnp.uint32))
    with pytest.raises(ValueError, match="PRNG key"):
        checkpoint.load_pytree(path, not_key)


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _empty(path):
    path.write_bytes(b"")


def _flip_bit(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0x10          # inside the stored arrays
    path.write_bytes(bytes(data))


def _garbage(path):
    path.write_bytes(np.random.default_rng(0).bytes(3000))


def _pickle(path):
    np.save(path.open("wb"), np.asarray([{"a": 1}], dtype=object), allow_pickle=True)


def _forged_arrays(path):
    """A well-formed archive whose array no longer matches the checksum in its manifest."""
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["leaf_0"] = arrays["leaf_0"] + 1
    with path.open("wb") as f:
        np.savez(f, **arrays)


@pytest.mark.parametrize("damage", [_truncate, _empty, _flip_bit, _garbage, _pickle, _forged_arrays])
def test_damaged_checkpoint_falls_back_to_the_previous_with_a_warning(tmp_path, damage):
    path = tmp_path / "c.npz"
    checkpoint.save_pytree(path, _state(0), metadata={"n": 1})
    checkpoint.save_pytree(path, _state(1), metadata={"n": 2})
    damage(path)
    with pytest.warns(RuntimeWarning, match="c.npz") as record:
        loaded, meta = checkpoint.load_pytree(path, _state())
    assert "previous checkpoint" in str(record[0].message) and "c.npz.prev" in str(record[0].message)
    assert meta == {"n": 1}
    np.testing.assert_array_equal(loaded.params["w"], _state(0).params["w"])
    np.testing.assert_array_equal(jax.random.key_data(loaded.key), jax.random.key_data(_state(0).key))


@pytest.mark.parametrize("damage", [_truncate, _empty, _flip_bit, _garbage, _pickle, _forged_arrays])
def test_no_usable_checkpoint_is_a_clear_error_naming_the_files(tmp_path, damage):
    path = tmp_path / "c.npz"
    checkpoint.save_pytree(path, _state(0))
    damage(path)
    with pytest.raises(checkpoint.CheckpointError, match="no usable checkpoint") as err:
        checkpoint.load_pytree(path, _state())
    assert str(path) in str(err.value) and "c.npz.prev does not exist" in str(err.value)
    with pytest.raises(checkpoint.CheckpointError, match=str(path)):
        checkpoint.read_metadata(path)
    # both damaged: each file is named with what is wrong with it
    checkpoint.save_pytree(path, _state(0), keep_previous=False)
    checkpoint.save_pytree(path, _state(1))
    damage(path)
    _truncate(checkpoint.previous_path(path))
    with pytest.raises(checkpoint.CheckpointError) as err:
        checkpoint.load_pytree(path, _state())
    assert str(path) in str(err.value) and str(checkpoint.previous_path(path)) in str(err.value)


def test_missing_checkpoint_and_crash_between_renames(tmp_path):
    path = tmp_path / "c.npz"
    assert not checkpoint.exists(path)
    with pytest.raises(checkpoint.CheckpointError, match="does not exist"):
        checkpoint.load_pytree(path, _state())
    checkpoint.save_pytree(path, _state(0))
    checkpoint.save_pytree(path, _state(1))
    path.unlink()                        # as if a crash removed the newest file
    assert checkpoint.exists(path)
    with pytest.warns(RuntimeWarning, match="does not exist"):
        loaded, _ = checkpoint.load_pytree(path, _state())
    np.testing.assert_array_equal(loaded.params["w"], _state(0).params["w"])


def test_template_may_depend_on_the_metadata(tmp_path):
    path = checkpoint.save_pytree(tmp_path / "c.npz", {"r": np.arange(6.0)}, metadata={"n": 6})
    tree, meta = checkpoint.load_pytree(path, lambda m: {"r": np.zeros(m["n"])})
    np.testing.assert_array_equal(tree["r"], np.arange(6.0))


def test_fingerprints_see_hyperparameters_not_identity():
    optax = pytest.importorskip("optax")

    def closure(l1):
        def loss(w):
            return l1 * w
        return loss

    fp = checkpoint.fingerprint
    assert fp(optax.adamw(1e-3)) == fp(optax.adamw(1e-3))          # rebuilt: equal content
    assert fp(optax.adamw(1e-3)) != fp(optax.adamw(2e-3))
    assert fp(optax.adamw(1e-3)) != fp(optax.adamw(1e-3, weight_decay=0.0))
    assert fp(optax.adamw(1e-3)) != fp(optax.sgd(1e-3))
    assert fp(closure(0.1)) == fp(closure(0.1)) and fp(closure(0.1)) != fp(closure(0.2))
    assert fp(np.arange(3, dtype=np.float32)) == fp(jnp.arange(3.0)) != fp(np.arange(3.0))   # dtype counts
    assert fp(jax.random.key(0)) != fp(jax.random.key(1))
    assert fp({"b": 1, "a": 2}) == fp({"a": 2, "b": 1})
    assert "0x" not in checkpoint.describe((object(), closure(0.1), optax.adamw(1e-3)))
