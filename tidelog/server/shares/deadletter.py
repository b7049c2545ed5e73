"""Dead-lettering: the record goes to the dead-letter topic (acks=all) *before* its entry is
archived, so a crash in between duplicates into the dead-letter topic, never loses."""

from __future__ import annotations

import asyncio
import logging
from typing import Final

from tidelog.server.log import PartitionLog, TopicPartition
from tidelog.wire.batch_format import Record
from tidelog.wire.errors import TopicAlreadyExistsError, UnreadableRangeError
from tidelog.wire.messages import Acks
from tidelog.wire.records import RecordBatchBuilder, iter_batches
from tidelog.wire.share_messages import DLQ_HEADER_PREFIX as HEADER_PREFIX

from ..core.state import CoreState
from .partition import InFlight

logger = logging.getLogger("tidelog.server.shares")

DLQ_PARTITIONS: Final = 1


def find_record(plog: PartitionLog, offset: int) -> Record | None:
    """The record at ``offset``, or ``None`` if the log no longer has it."""
    if offset < plog.log_start_offset or offset >= plog.high_watermark:
        return None
    try:
        read = plog.read(offset, 1, max_offset=plog.high_watermark)
    except UnreadableRangeError:
        return None
    for batch in iter_batches(read.records):
        for record in batch.records():
            if record.offset == offset:
                return record
            if record.offset > offset:
                return None
    return None


def dead_letter_headers(
    record: Record, group: str, tp: TopicPartition, offset: int, entry: InFlight
) -> list[tuple[str, bytes | None]]:
    own = [(k, v) for k, v in record.headers if not k.startswith(HEADER_PREFIX)]
    extra = {
        "source_topic": tp.topic,
        "source_partition": str(tp.partition),
        "source_offset": str(offset),
        "group": group,
        "delivery_count": str(entry.delivery_count),
        "reason": entry.reason,
        "error": entry.last_error,
        "first_delivery_ms": str(entry.first_delivery),
        "last_delivery_ms": str(entry.last_delivery),
    }
    return own + [(HEADER_PREFIX + k, v.encode()) for k, v in extra.items()]


async def write_dead_letters(
    state: CoreState,
    dlq_topic: str,
    source: TopicPartition,
    rows: list[tuple[Record, list[tuple[str, bytes | None]]]],
) -> None:
    """Append the records to ``dlq_topic`` (created with one partition if missing) and wait
    until they are durable. Raises the write's :class:`BrokerError`."""
    count = state.manager.partition_count(dlq_topic)
    if count is None:
        try:
            await state.manager.create_topic_async(dlq_topic, DLQ_PARTITIONS)
            logger.info("created dead-letter topic %s", dlq_topic)
        except TopicAlreadyExistsError:
            pass
        count = state.manager.partition_count(dlq_topic) or DLQ_PARTITIONS
    builder = RecordBatchBuilder()
    for record, headers in rows:
        builder.append(record.value, key=record.key, headers=headers, timestamp=record.timestamp)
    target = TopicPartition(dlq_topic, source.partition % count)
    appended = state.write_path.append(target, [builder.build()], Acks.ALL)
    if appended.durable is not None:
        await asyncio.shield(appended.durable)
