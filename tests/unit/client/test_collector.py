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


def test_the_position_moves_past_offsets_a_cleaned_batch_no_longer_holds() -> None:
    from tidelog.wire.compaction import BatchRows, empty_batch, filter_batch

    full = RecordBatch.parse(build_batch([(b"k%d" % i, b"v%d" % i) for i in range(6)]))
    kept = RecordBatch.parse(filter_batch(full, BatchRows(full), [1, 3]))  # holds 0..5
    empty = RecordBatch.parse(empty_batch(6, 3, base_timestamp=0, max_timestamp=0))  # 6..9
    for deserializer in (None, bytes.upper):
        state = PartitionState(TP)
        state.seek(0)
        state.batches.extend([kept, empty])
        collector = RecordCollector(deserializer, deserializer)
        out = collector.collect([state], 1)  # one record: the rest of the batch waits
        assert [r.offset for r in out[TP]] == [1]
        assert state.position == 2
        out = collector.collect([state], 100)
        assert [r.offset for r in out[TP]] == [3]
        assert state.position == 10  # past the batch's cleaned tail and the empty batch


def test_a_position_inside_a_cleaned_batch_skips_by_offset() -> None:
    from tidelog.wire.compaction import BatchRows, filter_batch

    full = RecordBatch.parse(build_batch([(b"k%d" % i, b"v%d" % i) for i in range(6)]))
    kept = RecordBatch.parse(filter_batch(full, BatchRows(full), [1, 3, 4]))
    for deserializer in (None, bytes.upper):
        state = PartitionState(TP)
        state.seek(2)
        state.batches.append(kept)
        out = RecordCollector(deserializer, deserializer).collect([state], 100)
        assert [r.offset for r in out[TP]] == [3, 4]
        assert state.position == 6


def test_a_batch_taken_whole_moves_the_position_past_its_cleaned_offsets() -> None:
    from tidelog.wire.compaction import BatchRows, empty_batch, filter_batch

    full = RecordBatch.parse(build_batch([(b"k%d" % i, b"v%d" % i) for i in range(6)]))
    kept = RecordBatch.parse(filter_batch(full, BatchRows(full), [1, 3]))  # holds 0..5
    empty = RecordBatch.parse(empty_batch(6, 3, base_timestamp=0, max_timestamp=0))  # 6..9
    state = PartitionState(TP)
    state.seek(0)
    state.batches.extend([kept, empty])
    collector = RecordCollector(deserialize_bytes, deserialize_bytes)
    batch = collector.take_batch([state])
    assert batch is not None
    assert (list(batch.offsets), batch.raw_values()) == ([1, 3], [b"v1", b"v3"])
    assert state.position == 6  # past the cleaned tail: handed out, so consumed
    assert collector.take_batch([state]) is None  # nothing left to hand out, but
    assert state.position == 10  # the emptied batch is passed over


def test_a_batch_taken_after_getmany_starts_at_the_position() -> None:
    state = PartitionState(TP)
    state.seek(0)
    state.batches.append(RecordBatch.parse(build_batch([(None, b"%d" % i) for i in range(8)])))
    collector = RecordCollector(deserialize_bytes, deserialize_bytes)
    assert [r.offset for r in collector.collect([state], 3)[TP]] == [0, 1, 2]
    assert state.pending  # the other five records, decoded
    batch = collector.take_batch([state])
    assert batch is not None and list(batch.offsets) == [3, 4, 5, 6, 7]
    assert not state.pending and state.position == 8


def test_a_batch_deserializes_its_columns_and_records_when_read() -> None:
    from tidelog.client.types import ConsumerRecord

    state = PartitionState(TP)
    state.seek(1)
    state.batches.append(
        RecordBatch.parse(build_batch([(b'"k%d"' % i, b"%d" % i) for i in range(4)]))
    )
    batch = RecordCollector(json.loads, json.loads).take_batch([state])
    assert batch is not None and batch.tp == TP
    assert (batch.keys, batch.values) == (["k1", "k2", "k3"], [1, 2, 3])
    assert batch.raw_values() == [b"1", b"2", b"3"]
    records = batch.records()
    assert all(type(r) is ConsumerRecord for r in records)
    assert [(r.offset, r.key, r.value) for r in records] == [
        (1, "k1", 1),
        (2, "k2", 2),
        (3, "k3", 3),
    ]
