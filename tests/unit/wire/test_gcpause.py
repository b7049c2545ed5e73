"""The GC pause: restores the collector's state, nests, is shared by threads, covers reads."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import pytest

from tidelog.wire import RecordBatch, build_batch
from tidelog.wire.gcpause import gc_paused


@pytest.fixture(autouse=True)
def gc_enabled() -> Iterator[None]:
    """Each test starts with the collector enabled and leaves it so, pass or fail."""
    gc.enable()
    try:
        yield
    finally:
        gc.enable()


def test_pauses_inside_and_enables_again_after() -> None:
    with gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_leaves_a_collector_disabled_by_someone_else_disabled() -> None:
    gc.disable()
    with gc_paused():
        assert not gc.isenabled()
    assert not gc.isenabled()


def test_a_nested_pause_does_not_end_the_outer_one() -> None:
    with gc_paused():
        with gc_paused():
            assert gc_paused().depth == 2
        assert not gc.isenabled()
    assert gc.isenabled()
    assert gc_paused().depth == 0


def test_an_error_inside_still_ends_the_pause() -> None:
    with pytest.raises(ValueError, match="boom"), gc_paused():
        raise ValueError("boom")
    assert gc.isenabled()


def test_overlapping_pauses_of_two_threads_end_with_the_last_one() -> None:
    entered = threading.Event()
    release = threading.Event()
    seen: list[bool] = []

    def other() -> None:
        with gc_paused():
            entered.set()
            release.wait()
        seen.append(gc.isenabled())

    thread = threading.Thread(target=other, daemon=True)
    try:
        with gc_paused():
            thread.start()
            entered.wait()
        # This thread's pause ended first; the other one still holds the collector paused.
        assert not gc.isenabled()
    finally:
        release.set()
        thread.join()
    assert seen == [True]
    assert gc.isenabled()


def test_reading_a_batch_runs_no_collection() -> None:
    batch = RecordBatch.parse(build_batch([(None, b"v")] * 20_000))
    collections: list[str] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collections.append(phase)

    gc.callbacks.append(count)
    try:
        records = batch.records()  # 20,000 tuples: dozens of young collections unpaused
    finally:
        gc.callbacks.remove(count)
    assert len(records) == 20_000
    assert len(collections) <= 1  # at most one, after the pause ended
