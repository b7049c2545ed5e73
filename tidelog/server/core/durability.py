"""The broker's one durability path: append, flush if the policy says so, advance the high
watermark, wake the fetchers.

Produce requests and the storage tests both go through :class:`WritePath`, so the policy under
test is the one in production. The append half is synchronous (requests are started in arrival
order, so pipelined produces to one partition land in order); the flush half is a future that a
request may stop waiting for (its timeout) without stopping the flush or the high-watermark
advance that follows it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from tidelog.wire.errors import BrokerError, LeaderNotAvailableError
from tidelog.wire.messages import Acks
from tidelog.wire.records import Buffer, now_ms

from ..log import FlushPolicy, LogManager, PartitionLog, TopicPartition
from ..log.producers import producer_batch
from .idempotence import DAY_MS, ProducerStates

if TYPE_CHECKING:
    from ..replication.leader import PartitionLeader
    from ..replication.manager import ReplicaManager


@dataclass(slots=True)
class Appended:
    """Where a produce's batches landed in one partition, and when they become durable."""

    base_offset: int
    next_offset: int
    log_start_offset: int
    durable: asyncio.Future[None] | None
    """Resolved once the batches are fsynced (then visible); ``None`` when the ack does not
    wait for an fsync (they are visible already)."""


class WritePath:
    """Appends batches to partition logs under the topic's flush policy and the request's ack
    level, and makes them visible to fetches only once they are as durable as promised."""

    def __init__(
        self,
        logs: LogManager,
        on_visible: Callable[[TopicPartition], None],
        producers: ProducerStates | None = None,
    ) -> None:
        self._logs = logs
        self._on_visible = on_visible
        self.producers = ProducerStates(logs, DAY_MS) if producers is None else producers
        self.replicas: ReplicaManager | None = None
        """In a cluster: the partitions this broker leads, whose high watermark replication
        moves (the smallest in-sync log end), and whose batches carry the leader epoch."""

    def append(self, tp: TopicPartition, batches: Sequence[Buffer], acks: int) -> Appended:
        """Append all of ``batches`` to ``tp`` or none of them. A batch of an idempotent
        producer that repeats one of its last batches is not appended again: the result
        reports the original's offsets. Raises the log's :class:`BrokerError` (nothing
        appended), :class:`StorageError`, or the producer's sequence and epoch errors; in a
        cluster NOT_ENOUGH_REPLICAS (acks=all, nothing appended) too."""
        leader = None
        epoch = -1
        if self.replicas is not None:
            leader = self.replicas.leader(tp)
            if leader is None:
                raise LeaderNotAvailableError(f"{tp}: leadership is being set up here")
            if acks == Acks.ALL:
                leader.check_min_isr()
            epoch = leader.epoch
        plog = self._logs.get_log(tp)
        base = plog.log_end_offset
        first = -1
        end = base
        table = None
        try:
            for batch in batches:
                producer = producer_batch(batch)
                if producer is not None:
                    if table is None:
                        table = self.producers.table(tp, plog)
                    original = table.check(producer)
                    if original is not None:  # a retry of a batch already in the log
                        if first < 0:
                            first = original.base_offset
                        end = max(end, original.last_offset + 1)
                        continue
                info = plog.append(batch, leader_epoch=epoch)
                if first < 0:
                    first = info.base_offset
                end = info.last_offset + 1
                if producer is not None and table is not None:
                    table.update(producer, info.base_offset, info.last_offset, now_ms())
        except BrokerError:
            if plog.log_end_offset > base and plog.offline is None:
                plog.truncate_to(base)  # all of a partition's batches, or none
                self.producers.forget(tp)  # rebuilt from the log on next use
            raise
        if leader is not None:
            return self._replicated(tp, plog, leader, first, end, acks)
        durable = None
        if acks == Acks.ALL or plog.config.flush_policy is FlushPolicy.ACK:
            # Durable first, visible after: consumers never see what a crash could take.
            durable = self._logs.committer(tp).until(end)
        if durable is None:
            self._advance(tp, plog, end)
        else:
            durable.add_done_callback(partial(self._flushed, tp, plog, end))
        return Appended(first, end, plog.log_start_offset, durable)

    def _replicated(
        self,
        tp: TopicPartition,
        plog: PartitionLog,
        leader: PartitionLeader,
        first: int,
        end: int,
        acks: int,
    ) -> Appended:
        """The leader's half: followers are woken; the leader's own position moves once the
        append is as durable as the ack asks; acks=all waits for the high watermark."""
        assert self.replicas is not None
        self.replicas.replica_notifier.notify(tp)
        flush = None
        if acks == Acks.ALL or plog.config.flush_policy is FlushPolicy.ACK:
            flush = self._logs.committer(tp).until(end)
        if flush is None:
            leader.advance_local(end)
        else:
            flush.add_done_callback(partial(_leader_flushed, leader, end))
        durable = leader.wait_for(end) if acks == Acks.ALL else flush
        return Appended(first, end, plog.log_start_offset, durable)

    async def append_durably(
        self, tp: TopicPartition, batches: Sequence[Buffer], acks: int = Acks.ALL
    ) -> Appended:
        """:meth:`append` and wait for the flush it needs (tools and tests)."""
        appended = self.append(tp, batches, acks)
        if appended.durable is not None:
            await asyncio.shield(appended.durable)
        return appended

    def _flushed(
        self, tp: TopicPartition, plog: PartitionLog, offset: int, done: asyncio.Future[None]
    ) -> None:
        if not done.cancelled() and done.exception() is None:
            self._advance(tp, plog, offset)

    def _advance(self, tp: TopicPartition, plog: PartitionLog, offset: int) -> None:
        """Move the high watermark (single broker: up to what is as durable as its acks
        promised) and wake the fetches waiting on the partition."""
        if offset > plog.high_watermark:
            plog.update_high_watermark(offset)
            self._on_visible(tp)


def _leader_flushed(leader: PartitionLeader, offset: int, done: asyncio.Future[None]) -> None:
    if done.cancelled():
        return
    exc = done.exception()
    if exc is None:
        leader.advance_local(offset)
    elif isinstance(exc, BrokerError):
        leader.fail_waiters(exc)
