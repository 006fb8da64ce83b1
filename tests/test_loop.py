"""The shared chunk loop: chunk sizes, resume offsets, callbacks and argument checks."""

import pytest

from jaxinterp.loop import chunk_sizes, run_chunks


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
