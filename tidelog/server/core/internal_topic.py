"""A coordinator's internal topic (``__consumer_offsets``, ``__share_group_state``): rows
appended in the same turn of the loop as the change they store (or, through
:meth:`InternalTopic.write`, with every other write of that turn, at its end), answered once
durable, and read back whole when the coordinator takes the partition over.

**Durable** means fsynced through the partition's :class:`GroupCommitter` (writes that
arrive while one fsync runs share the next) on a single broker, and in a cluster
(:attr:`InternalTopic.replicated`) what a produce with acks=all gets: in every in-sync replica,
fsynced (``replication.internal``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Final, Protocol

from tidelog.wire.errors import UnreadableRangeError
from tidelog.wire.records import RecordBatchBuilder, iter_batches, now_ms

from ..log import FlushPolicy, LogManager, TopicPartition

logger = logging.getLogger("tidelog.server")

READ_CHUNK: Final = 1024 * 1024
MAX_RECORD_BYTES: Final = 16 * 1024 * 1024
"""Largest batch such a topic takes: a group of 1,000 members with big assignments fits."""

Row = tuple[bytes, bytes | None]
"""A record to write: key and value (``None``: a tombstone)."""
COALESCE_MAX_ROWS: Final = 10_000
"""Rows :meth:`InternalTopic.write` gathers for one batch before it appends them at once."""


class Replicated(Protocol):
    """Appends answered once every in-sync replica has them (``replication.internal``)."""

    def append(self, tp: TopicPartition, batch: bytes) -> int: ...

    async def until(self, tp: TopicPartition, end: int) -> None: ...


def internal_topic_config(segment_bytes: int) -> dict[str, object]:
    """The overrides of a coordinator topic: compacted, kept forever, flushed explicitly
    before answers."""
    return {
        "cleanup_policy": "compact",
        "retention_ms": -1,
        "retention_bytes": -1,
        "segment_bytes": segment_bytes,
        "flush_policy": FlushPolicy.OS.value,
        "max_message_bytes": MAX_RECORD_BYTES,
    }


class InternalTopic:
    """Topic ``name`` as its coordinator writes and reads it."""

    replicated: Replicated | None = None
    """In a cluster: writes go through the partition leader's replication path."""

    def __init__(self, logs: LogManager, name: str, partitions: int) -> None:
        self._logs = logs
        self.name = name
        self.partitions = partitions
        """The topic's partition count (of the existing topic, once it is known)."""
        self._staged: dict[int, tuple[list[Row], list[asyncio.Future[int]]]] = {}
        """Per partition: the rows :meth:`write` callers of this loop turn wait to append, and
        their waiters."""

    def tp(self, partition: int) -> TopicPartition:
        return TopicPartition(self.name, partition)

    async def rows(self, partition: int) -> AsyncIterator[tuple[int, bytes, bytes | None]]:
        """Every keyed record of ``partition`` as (offset, key, value), from its log start to
        its end; the loop runs other work between chunks. A damaged or missing range is
        skipped, loudly: what it held is lost."""
        plog = self._logs.get_log(self.tp(partition))
        offset, end = plog.log_start_offset, plog.log_end_offset
        while offset < end:
            try:
                read = plog.read(offset, READ_CHUNK)
            except UnreadableRangeError as exc:
                logger.error("%s-%d: the state in it is lost: %s", self.name, partition, exc)
                offset = exc.next_offset
                continue
            if read.size == 0:
                break
            for batch in iter_batches(read.records):
                for record in batch.records():
                    if record.offset >= offset and record.key is not None:
                        yield record.offset, bytes(record.key), record.value
            offset = read.next_offset
            await asyncio.sleep(0)  # serve others between chunks
        if self.replicated is None:  # in a cluster, the partition's leader moves it
            plog.update_high_watermark(plog.log_end_offset)

    def append(self, partition: int, rows: Sequence[Row]) -> int:
        """Append ``rows`` as one batch (now, synchronously); returns the offset that
        :meth:`durable` waits for. Raises :class:`StorageError` (in a cluster, the coordinator
        errors of :class:`Replicated`)."""
        keys = [key for key, _ in rows]
        values = [value for _, value in rows]
        size = 16 * len(rows) + sum(map(len, keys)) + sum(len(v) for v in values if v)
        builder = RecordBatchBuilder()
        builder.extend(values, keys, now_ms(), size)  # one call for the batch, not per row
        tp = self.tp(partition)
        if self.replicated is not None:
            return self.replicated.append(tp, builder.build())
        return self._logs.get_log(tp).append(builder.build()).last_offset + 1

    async def write(self, partition: int, rows: Sequence[Row]) -> None:
        """Append ``rows`` and return once they are durable, sharing the append with every
        other write to ``partition`` in this turn of the loop: 16 workers' acknowledgements
        arriving together cost one batch built, checked and written, not 16 (each followed
        by the same fsync anyway). The rows are in the batch in the order of the calls, so
        a key written twice keeps the later value. Raises what :meth:`append` and
        :meth:`durable` raise; the rows were not stored if the append failed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        staged = self._staged.get(partition)
        if staged is None:
            staged = self._staged[partition] = ([], [])
            loop.call_soon(self._append_staged, partition)
        staged[0].extend(rows)
        staged[1].append(future)
        if len(staged[0]) >= COALESCE_MAX_ROWS:
            self._append_staged(partition)
        end = await future
        await self.durable(partition, end)

    def _append_staged(self, partition: int) -> None:
        staged = self._staged.pop(partition, None)
        if staged is None:
            return  # appended already (the rows reached the bound)
        rows, waiters = staged
        try:
            end = self.append(partition, rows)
        except Exception as exc:  # each waiter gets it: none of their rows is stored
            for future in waiters:
                if not future.done():
                    future.set_exception(exc)
            return
        for future in waiters:
            if not future.done():
                future.set_result(end)

    async def durable(self, partition: int, end: int) -> None:
        """Wait until the partition is durable up to ``end`` (see the module), then make it
        visible. Raises :class:`StorageError` (in a cluster, the coordinator errors)."""
        tp = self.tp(partition)
        if self.replicated is not None:
            await self.replicated.until(tp, end)
            return
        await self._logs.committer(tp).flush_until(end)
        plog = self._logs.get_log(tp)
        if end > plog.high_watermark:
            plog.update_high_watermark(end)
