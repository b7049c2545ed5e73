"""Dead-lettering: the record goes to the dead-letter topic (acks=all) *before* its entry is
archived, so a crash in between duplicates into the dead-letter topic, never loses.

In a cluster the dead-letter topic is created through the cluster, and its partition may be led
by another broker than the group's coordinator: the batch is then produced there (acks=all) over
a connection of this broker's own, as a replica fetcher talks to a leader."""

from __future__ import annotations

import asyncio
import logging
from typing import Final

from tidelog.server.log import PartitionLog, TopicPartition
from tidelog.wire import messages as m
from tidelog.wire.batch_format import Record
from tidelog.wire.errors import (
    LeaderNotAvailableError,
    TopicAlreadyExistsError,
    UnreadableRangeError,
    raise_for_code,
)
from tidelog.wire.messages import Acks
from tidelog.wire.records import RecordBatchBuilder, iter_batches
from tidelog.wire.share_messages import DLQ_HEADER_PREFIX as HEADER_PREFIX

from ..core.state import CoreState
from ..replication.peer import PeerConnection, PeerConnectionError
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
        for record in batch.records_as(Record, (), offset, 1):
            return record if record.offset == offset else None
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
    count = state.partition_count(dlq_topic)
    if count is None:
        try:
            if state.cluster is not None:
                await state.cluster.create_topic(dlq_topic, DLQ_PARTITIONS, -1, {})
            else:
                await state.manager.create_topic_async(dlq_topic, DLQ_PARTITIONS)
            logger.info("created dead-letter topic %s", dlq_topic)
        except TopicAlreadyExistsError:
            pass
        count = state.partition_count(dlq_topic) or DLQ_PARTITIONS
    builder = RecordBatchBuilder()
    for record, headers in rows:
        builder.append(record.value, key=record.key, headers=headers, timestamp=record.timestamp)
    target = TopicPartition(dlq_topic, source.partition % count)
    batch = builder.build()
    cluster = state.cluster
    if cluster is not None:
        leader = cluster.leader_of(target.topic, target.partition)
        if leader is None:
            raise LeaderNotAvailableError(f"{target} has no leader now")
        if leader.broker_id != state.config.broker_id:
            await _produce_on(state, leader.host, leader.port, target, batch)
            return
    appended = state.write_path.append(target, [batch], Acks.ALL)
    if appended.durable is not None:
        await asyncio.shield(appended.durable)


async def _produce_on(
    state: CoreState, host: str, port: int, tp: TopicPartition, batch: bytes
) -> None:
    """Produce ``batch`` to ``tp`` on its leader ``host:port`` (acks=all). Raises the
    partition's :class:`BrokerError`; an unreachable leader is LEADER_NOT_AVAILABLE."""
    config = state.config
    request = m.ProduceRequest((m.ProducePartition(tp.topic, tp.partition, len(batch)),), Acks.ALL)
    try:
        peer = await PeerConnection.open(
            host, port, f"broker-{config.broker_id}-dead-letters", config.max_frame_size
        )
        try:
            response, _ = await peer.request(request, [batch])
        finally:
            peer.close()
    except PeerConnectionError as exc:  # retried by the next tick
        raise LeaderNotAvailableError(f"{tp}: its leader cannot be reached: {exc}") from exc
    assert isinstance(response, m.ProduceResponse)
    for result in response.partitions:
        raise_for_code(result.error_code, result.error_message)
