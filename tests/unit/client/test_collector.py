"""The record collector: records out of prefetched batches, deserialized, GC paused."""

from __future__ import annotations

import gc
import json

from tidelog.client.collector import RecordCollector
from tidelog.client.fetcher import PartitionState
from tidelog.client.serializers import deserialize_bytes
from tidelog.client.types import TopicPartition
from tidelog.wire import RecordBatch, build_batch

TP = TopicPartition("t", 0)


def test_deserializing_a_batch_runs_no_collection() -> None:
    state = PartitionState(TP)
    state.seek(0)
    state.batches.append(RecordBatch.parse(build_batch([(None, b"1")] * 20_000)))
    collector = RecordCollector(deserialize_bytes, json.loads)
    collections: list[str] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collections.append(phase)

    gc.enable()
    gc.callbacks.append(count)
    try:
        out = collector.collect([state], 100_000)
    finally:
        gc.callbacks.remove(count)
    assert [r.value for r in out[TP]] == [1] * 20_000
    assert state.position == 20_000
    # Unpaused: one young collection per ~700 new tuples (dozens here). Paused: at most the
    # one that runs at the first allocation after the pause.
    assert len(collections) <= 1
    assert gc.isenabled()
