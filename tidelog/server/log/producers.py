"""Idempotent producers: per partition, the epoch and the last batches of each producer id.

Kafka's ``ProducerStateManager``. A batch carries its producer id, epoch and base sequence; the
leader keeps, per producer id, its epoch and the sequences and offsets of its last
:data:`MAX_BATCHES_PER_PRODUCER` batches. So a retried batch that is one of those is a
duplicate (answered with its original offsets, not appended again), a gap is
``OUT_OF_ORDER_SEQUENCE`` and an older epoch is fenced (``INVALID_PRODUCER_EPOCH``).

The table is rebuilt from the batch headers in the log, from the newest snapshot on (written at a
clean close, named ``<offset>.snapshot`` like Kafka's), so it survives SIGKILL. Producer ids idle
for ``expiration_ms`` are forgotten; a producer the table does not know may start at any
sequence, as a new one does.
"""

from __future__ import annotations

import logging
import struct
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

import msgspec

from tidelog.wire.errors import (
    CorruptBatchError,
    InvalidProducerEpochError,
    OutOfOrderSequenceError,
)
from tidelog.wire.layouts import (
    BATCH_BASE_OFFSET_OFFSET,
    BATCH_LAST_OFFSET_DELTA_OFFSET,
    BATCH_PRODUCER_OFFSET,
    BATCH_PRODUCER_STRUCT,
)
from tidelog.wire.records import NO_PRODUCER_ID, Buffer, batch_size_at

logger = logging.getLogger("tidelog.server.log")

MAX_BATCHES_PER_PRODUCER: Final = 5
"""Batches remembered per producer: the most a producer keeps in flight per partition."""
SNAPSHOT_SUFFIX: Final = ".snapshot"
SNAPSHOT_VERSION: Final = 1
_SEQUENCE_WRAP: Final = 2**31
_DELTA: Final = struct.Struct(">i")
"""The ``last_offset_delta`` field."""


def next_sequence(sequence: int) -> int:
    """The sequence after ``sequence``: they wrap to 0 after 2**31 - 1, as in Kafka."""
    return 0 if sequence == _SEQUENCE_WRAP - 1 else sequence + 1


def last_sequence(base_sequence: int, record_count: int) -> int:
    return (base_sequence + record_count - 1) % _SEQUENCE_WRAP


class BatchMeta(msgspec.Struct, array_like=True, frozen=True):
    """Where one batch of a producer landed."""

    first_seq: int
    last_seq: int
    base_offset: int
    last_offset: int


@dataclass(slots=True)
class ProducerEntry:
    epoch: int
    last_seen_ms: int
    batches: deque[BatchMeta] = field(
        default_factory=lambda: deque(maxlen=MAX_BATCHES_PER_PRODUCER)
    )


class _Snapshot(msgspec.Struct, array_like=True):
    version: int
    offset: int
    producers: list[tuple[int, int, int, list[BatchMeta]]]  # id, epoch, last seen, batches


class ProducerBatch(msgspec.Struct, array_like=True, frozen=True):
    """The idempotence fields of one batch, read from its header."""

    producer_id: int
    epoch: int
    first_seq: int
    last_seq: int


def producer_batch(batch: Buffer) -> ProducerBatch | None:
    """The producer fields of a (validated) batch, ``None`` for a non-idempotent one. The last
    sequence follows from the last offset delta, not the record count: a batch the cleaner
    rewrote keeps its offset range (and so its sequences) with fewer records."""
    pid, epoch, base_seq, _ = BATCH_PRODUCER_STRUCT.unpack_from(batch, BATCH_PRODUCER_OFFSET)
    if pid == NO_PRODUCER_ID:
        return None
    (delta,) = _DELTA.unpack_from(batch, BATCH_LAST_OFFSET_DELTA_OFFSET)
    return ProducerBatch(pid, epoch, base_seq, last_sequence(base_seq, delta + 1))


class ProducerStateTable:
    """The producers of one partition, as of log offset :attr:`offset`."""

    def __init__(self, expiration_ms: int, offset: int = 0) -> None:
        self.expiration_ms = expiration_ms
        self.offset = offset
        """Every batch below this offset has been applied."""
        self._producers: dict[int, ProducerEntry] = {}

    def __len__(self) -> int:
        return len(self._producers)

    def __contains__(self, producer_id: int) -> bool:
        return producer_id in self._producers

    def epoch_of(self, producer_id: int) -> int | None:
        entry = self._producers.get(producer_id)
        return None if entry is None else entry.epoch

    def check(self, batch: ProducerBatch) -> BatchMeta | None:
        """Whether ``batch`` may be appended: ``None`` if so, the original's offsets if it is
        a duplicate of one of the producer's last batches. Raises
        :class:`InvalidProducerEpochError` (fenced) or :class:`OutOfOrderSequenceError`."""
        entry = self._producers.get(batch.producer_id)
        if entry is None:
            return None
        if batch.epoch < entry.epoch:
            raise InvalidProducerEpochError(
                f"producer {batch.producer_id} epoch {batch.epoch} is fenced by epoch {entry.epoch}"
            )
        if batch.epoch > entry.epoch:
            if batch.first_seq != 0:
                raise OutOfOrderSequenceError(
                    f"producer {batch.producer_id}: a new epoch {batch.epoch} starts at "
                    f"sequence 0, not {batch.first_seq}"
                )
            return None
        for meta in entry.batches:
            if meta.first_seq == batch.first_seq and meta.last_seq == batch.last_seq:
                return meta
        expected = next_sequence(entry.batches[-1].last_seq) if entry.batches else 0
        if batch.first_seq != expected:
            raise OutOfOrderSequenceError(
                f"producer {batch.producer_id} epoch {batch.epoch}: expected sequence "
                f"{expected}, got {batch.first_seq}"
            )
        return None

    def update(self, batch: ProducerBatch, base_offset: int, last_offset: int, now_ms: int) -> None:
        """Record an appended batch (checked, or replayed from the log)."""
        entry = self._producers.get(batch.producer_id)
        if entry is None or entry.epoch != batch.epoch:
            entry = ProducerEntry(batch.epoch, now_ms)
            self._producers[batch.producer_id] = entry
        entry.last_seen_ms = now_ms
        entry.batches.append(BatchMeta(batch.first_seq, batch.last_seq, base_offset, last_offset))
        self.offset = max(self.offset, last_offset + 1)

    def expire(self, now_ms: int) -> int:
        """Forget producers idle for ``expiration_ms``; how many were forgotten."""
        cutoff = now_ms - self.expiration_ms
        idle = [pid for pid, e in self._producers.items() if e.last_seen_ms <= cutoff]
        for pid in idle:
            del self._producers[pid]
        return len(idle)

    def replay(self, data: Buffer, now_ms: int) -> int:
        """Apply the batches of ``data`` (back-to-back, from the log: no checks); the offset
        after the last whole batch. A torn tail is ignored."""
        pos, end = 0, len(data)
        view = memoryview(data)
        while pos < end:
            try:
                size = batch_size_at(view, pos)
            except CorruptBatchError:  # damage no check has isolated yet: stop here
                break
            if size is None or pos + size > end:
                break
            batch = view[pos : pos + size]
            base_at, delta_at = BATCH_BASE_OFFSET_OFFSET, BATCH_LAST_OFFSET_DELTA_OFFSET
            base = int.from_bytes(batch[base_at : base_at + 8], "big", signed=True)
            last = base + int.from_bytes(batch[delta_at : delta_at + 4], "big", signed=True)
            meta = producer_batch(batch)
            if meta is not None:
                self.update(meta, base, last, now_ms)
            self.offset = max(self.offset, last + 1)
            pos += size
        return self.offset

    # --- snapshots --------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        producers = [
            (pid, e.epoch, e.last_seen_ms, list(e.batches)) for pid, e in self._producers.items()
        ]
        return msgspec.msgpack.encode(_Snapshot(SNAPSHOT_VERSION, self.offset, producers))

    @classmethod
    def from_bytes(cls, data: bytes, expiration_ms: int) -> ProducerStateTable:
        """Raises ``ValueError`` for a damaged snapshot (the caller replays the log instead)."""
        try:
            snap = msgspec.msgpack.decode(data, type=_Snapshot)
        except msgspec.DecodeError as exc:
            raise ValueError(f"damaged producer snapshot: {exc}") from exc
        if snap.version != SNAPSHOT_VERSION:
            raise ValueError(f"unknown producer snapshot version {snap.version}")
        table = cls(expiration_ms, snap.offset)
        for pid, epoch, seen, batches in snap.producers:
            entry = ProducerEntry(epoch, seen)
            entry.batches.extend(batches)
            table._producers[pid] = entry
        return table

    def entries(self) -> Iterator[tuple[int, ProducerEntry]]:
        return iter(self._producers.items())


def snapshot_name(offset: int) -> str:
    return f"{offset:020d}{SNAPSHOT_SUFFIX}"
