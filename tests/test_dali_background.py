"""``pipeline/dali/background.py``: the DALI loader's background batch thread."""

from __future__ import annotations

import itertools
import threading

import pytest


def test_background_batches_keep_order_raise_and_stop():
    from pipeline.dali.background import THREAD_NAME, background_batches

    assert [b["i"] for b in background_batches(lambda: ({"i": i} for i in range(7)))] == list(range(7))

    def broken():
        yield {"i": 0}
        raise ValueError("shard x.tar key k: bad")

    got = []
    with pytest.raises(ValueError, match="shard x.tar"):
        for b in background_batches(broken):
            got.append(b["i"])
    assert got == [0]

    closed = threading.Event()

    def endless():
        try:
            for i in itertools.count():
                yield {"i": i}
        finally:
            closed.set()

    stream = background_batches(endless, depth=2)
    assert [next(stream)["i"] for _ in range(3)] == [0, 1, 2]
    stream.close()  # the consumer stops early (resume skip, end of training)
    assert closed.is_set()  # the producer was closed and joined, not left running
    assert not any(t.name == THREAD_NAME for t in threading.enumerate())
