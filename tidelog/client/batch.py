"""The producer's batches: :class:`ProducerBatch` (records on their way to one partition, built
once into the bytes that are sent and resent) and :class:`RecordFuture` (one record's answer).

Records are not futures: :meth:`ProducerBatch.append` returns a :class:`RecordFuture`, three
slots pointing at the batch's one future, and the record's metadata is computed when asked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Generator, Mapping
from typing import Any, Final

from tidelog.wire.records import HeadersInput, RecordBatchBuilder

from .types import RecordMetadata, TopicPartition

RECORD_OVERHEAD: Final = 16
"""Bytes a record adds to a batch besides its key, value and headers (timestamp delta, key and
value lengths), as :class:`~tidelog.wire.records.RecordBatchBuilder` counts them."""


def record_size(key: bytes | None, value: bytes | None, headers: HeadersInput | None) -> int:
    """The bytes a record is accounted for in ``batch_size`` and ``buffer_memory``."""
    size = RECORD_OVERHEAD
    if key is not None:
        size += len(key)
    if value is not None:
        size += len(value)
    if headers:
        items = headers.items() if isinstance(headers, Mapping) else headers
        size += 6 + sum(6 + len(k) * 3 + (len(v) if v else 0) for k, v in items)
    return size


class ProducerBatch:
    """One batch on its way to a partition: open while records are added, then closed into
    bytes (``buffer``) that are sent, and resent as they are after a retriable failure."""

    __slots__ = (
        "_count",
        "_future",
        "acknowledged",
        "attempts",
        "base_offset",
        "buffer",
        "builder",
        "closed",
        "created",
        "deadline",
        "error",
        "group",
        "in_flight",
        "last_error",
        "log_append_time",
        "producer_epoch",
        "producer_id",
        "reserved",
        "retry_at",
        "room",
        "sequence",
        "tp",
    )

    def __init__(
        self, tp: TopicPartition, builder: RecordBatchBuilder, now: float, deadline: float
    ) -> None:
        self.tp = tp
        self.builder = builder
        self.created = now
        self.deadline = deadline
        self.closed = False
        self.in_flight = False
        self.acknowledged = False
        self.attempts = 0
        self.retry_at = 0.0
        self.reserved = 0
        self.room = 0
        """Record bytes (header aside) the batch takes before it is closed: the accumulator's
        ``batch_size`` room, more while it grows (see :mod:`.growth`)."""
        self._count = 0
        self.buffer: bytes | None = None
        self.base_offset = -1
        self.log_append_time = -1
        self.error: BaseException | None = None
        self.last_error: BaseException | None = None
        self._future: asyncio.Future[None] | None = None
        # The idempotence stamp, given once when first drained (-1: none; see stamp()).
        self.producer_id = -1
        self.producer_epoch = -1
        self.sequence = -1
        # The request group it was first sent in (-1: not sent yet): a partition's batches of
        # one request share it, are retried together, and groups are numbered in send order.
        self.group = -1

    def append(
        self,
        value: bytes | None,
        key: bytes | None,
        headers: HeadersInput | None,
        timestamp: int,
        size: int,
    ) -> RecordFuture:
        index = self.builder.append(value, key, headers, timestamp)
        self.reserved += size
        return RecordFuture(self, index, timestamp)

    @property
    def record_count(self) -> int:
        return self._count if self.buffer is not None or self._count else len(self.builder)

    @property
    def size(self) -> int:
        """Bytes of the batch: built size once closed, uncompressed size while open."""
        buffer = self.buffer
        return len(buffer) if buffer is not None else self.builder.size_in_bytes

    def stamp(self, producer_id: int, producer_epoch: int, sequence: int) -> int:
        """Give the batch its idempotence fields before it is built; returns its record
        count (the sequences it takes)."""
        builder = self.builder
        builder.producer_id = self.producer_id = producer_id
        builder.producer_epoch = self.producer_epoch = producer_epoch
        builder.base_sequence = self.sequence = sequence
        return len(builder)

    def close(self) -> bytes:
        """Build the batch (once); no record can be added afterwards."""
        self.closed = True
        if self.buffer is None:
            self._count = len(self.builder)
            self.buffer = self.builder.build()
        return self.buffer

    @property
    def future(self) -> asyncio.Future[None]:
        """Resolves when the batch is acknowledged, fails with its error (created on demand,
        in the running loop)."""
        fut = self._future
        if fut is None:
            fut = self._future = asyncio.get_running_loop().create_future()
            if self.error is not None:
                fut.set_exception(self.error)
            elif self.acknowledged:
                fut.set_result(None)
        return fut

    def succeed(self, base_offset: int, log_append_time: int = -1) -> None:
        """Acknowledged: its first record has ``base_offset`` (-1 when acks=none)."""
        self.base_offset = base_offset
        self.log_append_time = log_append_time
        self.acknowledged = True
        self._count = self.record_count
        self.builder = _EMPTY_BUILDER  # free the records; the built bytes go too
        self.buffer = None
        fut = self._future
        if fut is not None and not fut.done():
            fut.set_result(None)

    def fail(self, error: BaseException) -> None:
        self.error = error
        self._count = self.record_count
        self.builder = _EMPTY_BUILDER
        self.buffer = None
        fut = self._future
        if fut is not None and not fut.done():
            fut.set_exception(error)
            fut.exception()  # the records' futures report it; don't warn if nobody awaits

    def __repr__(self) -> str:
        return (
            f"<ProducerBatch {self.tp.topic}[{self.tp.partition}] {self.record_count} records "
            f"attempts={self.attempts}>"
        )


_EMPTY_BUILDER: Final = RecordBatchBuilder()


class RecordFuture:
    """The future of one sent record: await it for its :class:`RecordMetadata`.

    Shares its batch's future (one per batch, not per record); ``done()``, ``result()``,
    ``exception()`` and ``add_done_callback()`` behave like :class:`asyncio.Future`'s.
    """

    __slots__ = ("_batch", "_index", "_timestamp")

    def __init__(self, batch: ProducerBatch, index: int, timestamp: int) -> None:
        self._batch = batch
        self._index = index
        self._timestamp = timestamp

    def done(self) -> bool:
        b = self._batch
        return b.error is not None or b.acknowledged

    def result(self) -> RecordMetadata:
        """The record's metadata; raises its error, or InvalidStateError if not done."""
        b = self._batch
        if b.error is not None:
            raise b.error
        if not b.acknowledged:
            raise asyncio.InvalidStateError("the record is not acknowledged yet")
        tp = b.tp
        if b.base_offset < 0:
            return RecordMetadata(tp.topic, tp.partition, -1, self._timestamp)
        ts = b.log_append_time if b.log_append_time >= 0 else self._timestamp
        return RecordMetadata(tp.topic, tp.partition, b.base_offset + self._index, ts)

    def exception(self) -> BaseException | None:
        if not self.done():
            raise asyncio.InvalidStateError("the record is not acknowledged yet")
        return self._batch.error

    def add_done_callback(self, fn: Callable[[RecordFuture], object]) -> None:
        self._batch.future.add_done_callback(lambda _: fn(self))

    def __await__(self) -> Generator[Any, None, RecordMetadata]:
        b = self._batch
        if b.error is None and not b.acknowledged:
            fut = b.future
            yield from fut.__await__()
        return self.result()

    def __repr__(self) -> str:
        state = "pending" if not self.done() else ("failed" if self._batch.error else "done")
        return f"<RecordFuture {self._batch.tp} #{self._index} {state}>"
