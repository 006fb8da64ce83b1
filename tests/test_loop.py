"""The shared chunk loop: chunk sizes, resume offsets, callbacks and argument checks."""

import jax
import numpy as np
import pytest

from jaxinterp.loop import chunk_sizes, run_chunks, run_keyed_chunks


def test_chunk_sizes_cover_the_remaining_steps():
    assert chunk_sizes(10, 0, 4) == [4, 4, 2]
    assert chunk_sizes(10, 6, 4) == [4]
    assert chunk_sizes(10, 10, 4) == []


def test_run_chunks_passes_first_step_and_calls_after_chunk():
    calls, seen = [], []

    def run_chunk(state, first, n):
        calls.append((first, n))
        return state + n

    out = run_chunks(run_chunk, 3, steps=10, chunk_size=4, start=3,
                     after_chunk=lambda done, s: seen.append((done, s)))
    assert out == 10
    assert calls == [(3, 4), (7, 3)]
    assert seen == [(7, 7), (10, 10)]


@pytest.mark.parametrize("kwargs, match", [(dict(steps=0, chunk_size=1), "steps"),
                                           (dict(steps=5, chunk_size=0), "chunk_size"),
                                           (dict(steps=5, chunk_size=2, start=6), "start")])
def test_run_chunks_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        run_chunks(lambda s, f, n: s, 0, **kwargs)


def test_chunk_sizes_refuses_a_span_that_cannot_end():
    with pytest.raises(ValueError, match="chunk_size"):
        chunk_sizes(10, 0, 0)          # used to loop forever
    with pytest.raises(TypeError, match="start"):
        chunk_sizes(10, 2.5, 4)
    with pytest.raises(ValueError, match="start"):
        chunk_sizes(10, 11, 4)


def _key_words(total, step_keys):
    return total + len(step_keys), np.asarray(jax.vmap(jax.random.key_data)(step_keys))


def test_run_keyed_chunks_gives_step_t_the_t_th_split_key_whatever_the_chunk_size():
    key = jax.random.key(3)
    expected = np.asarray(jax.vmap(jax.random.key_data)(jax.random.split(key, 11)))
    for chunk_size in (1, 4, 11, 50):
        total, words = run_keyed_chunks(_key_words, 0, key=key, steps=11, chunk_size=chunk_size)
        assert total == 11
        np.testing.assert_array_equal(words, expected)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(key=0), TypeError, "`key`"),
    (dict(steps=0), ValueError, "`steps`"),
    (dict(chunk_fn="f"), TypeError, "`chunk_fn`"),
])
def test_run_keyed_chunks_rejects_bad_arguments(kwargs, error, match):
    args = dict(chunk_fn=_key_words, key=jax.random.key(0), steps=5, chunk_size=2) | kwargs
    with pytest.raises(error, match=match):
        run_keyed_chunks(args.pop("chunk_fn"), 0, **args)
