"""The internal topic ``__share_group_state`` as the share coordinator uses it: created at
start, read back whole, appended to in the same turn of the loop as a change, and fsynced
(shared fsyncs, through the partition's committer) before the change is told to anyone."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Sequence
from typing import Final

from tidelog.server.log import FlushPolicy, LogManager, TopicPartition
from tidelog.wire.errors import UnreadableRangeError
from tidelog.wire.records import RecordBatchBuilder, iter_batches

from ..groups.records import partition_for
from .records import SHARE_STATE_TOPIC, Row

logger = logging.getLogger("tidelog.server.shares")

SHARE_STATE_PARTITIONS: Final = 4
SEGMENT_BYTES: Final = 16 * 1024 * 1024
READ_CHUNK: Final = 1024 * 1024
MAX_RECORD_BYTES: Final = 16 * 1024 * 1024


class ShareStore:
    def __init__(self, logs: LogManager, partitions: int = SHARE_STATE_PARTITIONS) -> None:
        self._logs = logs
        self.partitions = partitions
        self._ready = False

    def exists(self) -> bool:
        return self._logs.partition_count(SHARE_STATE_TOPIC) is not None

    def ensure_topic(self) -> None:
        """Create the topic if missing (an existing one keeps its partition count)."""
        if self._ready:
            return
        count = self._logs.partition_count(SHARE_STATE_TOPIC)
        if count is None:
            config: dict[str, object] = {
                "cleanup_policy": "compact",
                "retention_ms": -1,
                "retention_bytes": -1,
                "segment_bytes": SEGMENT_BYTES,
                "flush_policy": FlushPolicy.OS.value,
                "max_message_bytes": MAX_RECORD_BYTES,
            }
            self._logs.create_topic(SHARE_STATE_TOPIC, self.partitions, config)
        else:
            self.partitions = count
        self._ready = True

    def partition_for(self, group_id: str) -> int:
        return partition_for(group_id, self.partitions)

    def _tp(self, partition: int) -> TopicPartition:
        return TopicPartition(SHARE_STATE_TOPIC, partition)

    async def read(self, partition: int) -> dict[bytes, bytes | None]:
        """Every key's last value (tombstones as ``None``), from log start to end."""
        plog = self._logs.get_log(self._tp(partition))
        out: dict[bytes, bytes | None] = {}
        offset, end = plog.log_start_offset, plog.log_end_offset
        while offset < end:
            try:
                read = plog.read(offset, READ_CHUNK)
            except UnreadableRangeError as exc:
                logger.error(
                    "%s-%d: share state in it is lost: %s", SHARE_STATE_TOPIC, partition, exc
                )
                offset = exc.next_offset
                continue
            if read.size == 0:
                break
            for key, value in _rows(read.records, offset):
                out[key] = value
            offset = read.next_offset
            await asyncio.sleep(0)  # serve others between chunks
        plog.update_high_watermark(plog.log_end_offset)
        return out

    def append(self, partition: int, rows: Sequence[Row]) -> int:
        """Append ``rows`` as one batch now; the offset :meth:`durable` waits for."""
        builder = RecordBatchBuilder()
        for key, value in rows:
            builder.append(value, key=key)
        return self._logs.get_log(self._tp(partition)).append(builder.build()).last_offset + 1

    async def durable(self, partition: int, end: int) -> None:
        tp = self._tp(partition)
        await self._logs.committer(tp).flush_until(end)
        plog = self._logs.get_log(tp)
        if end > plog.high_watermark:
            plog.update_high_watermark(end)


def _rows(records: memoryview | bytes, start: int) -> Iterator[Row]:
    for batch in iter_batches(records):
        for record in batch.records():
            if record.offset >= start and record.key is not None:
                yield record.key, record.value
