"""Records out of the consumer's prefetched batches: what ``getmany()`` hands out, and whole
batches, what ``getbatch()`` hands out.

A :class:`RecordCollector` goes over the partitions in rotation (so none starves), takes up to
a limit of records from each one's position on, deserializes them into
:class:`~.types.ConsumerRecord` and advances the position. A record that cannot be
deserialized stops its partition there: the records before it are handed out, and the next
call raises :class:`~.errors.RecordDeserializationError` for it.
"""

from __future__ import annotations

from collections import deque

from tidelog.wire.batch_format import COMPACTED
from tidelog.wire.gcpause import gc_paused
from tidelog.wire.records import Record, RecordBatch

from .consumer_batch import ConsumerBatch
from .errors import RecordDeserializationError
from .fetcher import PartitionState
from .serializers import Deserializer, deserialize_bytes
from .types import AnyRecord, ConsumerRecord, TopicPartition

_new = tuple.__new__


class RecordCollector:
    """Takes records out of partitions' prefetched batches, deserialized (see the module
    documentation). ``deserialize_bytes`` (the default) costs nothing: it is not called."""

    __slots__ = ("_key_deserializer", "_rotation", "_value_deserializer")

    def __init__(self, key_deserializer: Deserializer, value_deserializer: Deserializer) -> None:
        self._key_deserializer = None if key_deserializer is deserialize_bytes else key_deserializer
        self._value_deserializer = (
            None if value_deserializer is deserialize_bytes else value_deserializer
        )
        self._rotation = 0

    def collect(
        self, states: list[PartitionState], limit: int
    ) -> dict[TopicPartition, list[AnyRecord]]:
        """Up to ``limit`` records in all from the unpaused ``states`` with a position."""
        out: dict[TopicPartition, list[AnyRecord]] = {}
        n = len(states)
        if not n:
            return out
        start = self._rotation % n
        self._rotation += 1
        for state in states[start:] + states[:start]:
            if limit <= 0:
                break
            if state.paused or state.position is None or not has_data(state):
                continue
            try:
                records = self._take(state, limit)
            except RecordDeserializationError:
                if out:
                    return out  # what was taken is handed out; the error comes next call
                raise
            if records:
                out[state.tp] = records
                limit -= len(records)
        return out

    def take_batch(self, states: list[PartitionState]) -> ConsumerBatch | None:
        """The next batch of one of the unpaused ``states`` with a position, from its position
        on (partitions in rotation); the position moves past the batch. ``None`` if none has
        one. A batch's records section is checked before it is taken: a damaged one raises
        :class:`CorruptBatchError` and stays, so the error repeats until a seek."""
        n = len(states)
        if not n:
            return None
        start = self._rotation % n
        self._rotation += 1
        for state in states[start:] + states[:start]:
            position = state.position
            if state.paused or position is None or not has_data(state):
                continue
            if state.pending:
                state.unpend()  # records getmany() decoded and left: read again as a batch
            batches = state.batches
            while batches:
                view = ConsumerBatch(
                    state.tp,
                    batches[0],
                    position,
                    self._key_deserializer,
                    self._value_deserializer,
                )
                state.take_batch()
                position = state.position = max(position, view.next_offset)
                if len(view):
                    return view
                # A batch the log cleaner emptied (or wholly before the position): go on.
        return None

    def _take(self, state: PartitionState, limit: int) -> list[AnyRecord]:
        """Up to ``limit`` records of ``state`` from its position on; advances the position."""
        taken: list[AnyRecord] = []
        # Where the position goes once a batch is used up: its end, past any offsets a
        # compacted batch no longer holds (none, for an empty one).
        end = -1
        pending = state.pending
        if pending:
            if len(pending) <= limit:
                taken = list(pending)
                pending.clear()
                assert state.pending_batch is not None
                end = state.pending_batch.next_offset
                state.pending_batch = None
            else:
                popleft = pending.popleft
                taken = [popleft() for _ in range(limit)]
        while len(taken) < limit and state.batches:
            try:
                records, whole = self._convert(state, state.batches[0])
            except RecordDeserializationError:
                if taken:
                    break
                raise
            room = limit - len(taken)
            if not whole:
                # A record of this batch cannot be deserialized: hand out the ones before it
                # and keep the batch; the next call starts at the bad record and raises.
                taken.extend(records[:room])
                break
            batch = state.take_batch()
            if len(records) > room:
                state.pending = deque(records[room:])
                state.pending_batch = batch
                records = records[:room]
                end = -1
            else:
                end = batch.next_offset
            if taken:
                taken.extend(records)
            else:
                taken = records  # a fresh list: no copy needed
        if taken:
            assert state.position is not None
            state.position = taken[-1].offset + 1
        if end >= 0:
            assert state.position is not None
            state.position = max(state.position, end)
        return taken

    def _convert(self, state: PartitionState, batch: RecordBatch) -> tuple[list[AnyRecord], bool]:
        """The batch's records from the position on, as ConsumerRecords, and whether that is
        all of them (else they stop before a record that cannot be deserialized)."""
        assert state.position is not None
        if self._key_deserializer is None and self._value_deserializer is None:
            # Decoded straight into ConsumerRecords, in C, from the position on (with the
            # cyclic GC paused by records_as).
            rows: list[AnyRecord] = batch.records_as(ConsumerRecord, state.tp, state.position)
            return rows, True
        # Records, then ConsumerRecords: twice as many tuples, no cycles among them.
        with gc_paused():
            return self._deserialize_batch(state.tp, state.position, batch)

    def _deserialize_batch(
        self, tp: TopicPartition, position: int, batch: RecordBatch
    ) -> tuple[list[AnyRecord], bool]:
        topic, partition = tp
        raw: list[Record] = batch.records()
        skip = position - batch.base_offset
        if skip > 0:
            # A cleaned batch's records are not one per offset: skip by offset, not index.
            compacted = batch.attributes & COMPACTED
            raw = [r for r in raw if r.offset >= position] if compacted else raw[skip:]
        if not raw:
            return [], True
        try:
            return self._deserialize(topic, partition, raw), True
        except Exception as exc:
            bad = self._find_undecodable(raw)
            if bad > raw[0].offset:
                return self._deserialize(topic, partition, raw[: bad - raw[0].offset]), False
            raise RecordDeserializationError(
                f"cannot deserialize the record at {topic}[{partition}] offset {bad}: {exc} "
                f"(seek(({topic!r}, {partition}), {bad + 1}) to skip it)",
                topic=topic,
                partition=partition,
                offset=bad,
            ) from exc

    def _deserialize(self, topic: str, partition: int, raw: list[Record]) -> list[AnyRecord]:
        kd = self._key_deserializer
        vd = self._value_deserializer
        return [
            _new(
                ConsumerRecord,
                (
                    topic,
                    partition,
                    o,
                    t,
                    k if kd is None or k is None else kd(k),
                    v if vd is None or v is None else vd(v),
                    h,
                ),
            )
            for o, t, k, v, h in raw
        ]

    def _find_undecodable(self, raw: list[Record]) -> int:
        kd = self._key_deserializer
        vd = self._value_deserializer
        for o, _, k, v, _ in raw:
            try:
                if kd is not None and k is not None:
                    kd(k)
                if vd is not None and v is not None:
                    vd(v)
            except Exception:
                return o
        return raw[0].offset if raw else -1


def has_data(state: PartitionState) -> bool:
    """Whether ``state`` holds records to hand out (decoded or still in batches)."""
    return bool(state.pending or state.batches)
