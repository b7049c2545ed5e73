"""A share group's state in memory, and what is read off it: the status DescribeShareGroup
answers, and the backlog its ``max_backlog_records`` bounds (QUEUE_FULL)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field

from tidelog.server.log import LogManager, TopicPartition
from tidelog.wire import share_messages as sm
from tidelog.wire.errors import QueueFullError, UnknownTopicOrPartitionError

from .partition import SharePartition
from .settings import ShareSettings


@dataclass(slots=True)
class ShareGroup:
    group_id: str
    settings: ShareSettings = field(default_factory=ShareSettings)
    partitions: dict[TopicPartition, SharePartition] = field(default_factory=dict)
    members: dict[str, int] = field(default_factory=dict)
    """member id -> last request (clock ms)."""
    waiters: set[asyncio.Future[None]] = field(default_factory=set)
    dlq_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    rotation: int = 0
    handled: int = 0
    handling_ms_total: int = 0
    handling_ms_max: int = 0

    def wake(self) -> None:
        """Records became available: waiting fetches look again."""
        for future in self.waiters:
            if not future.done():
                future.set_result(None)


def describe_group(group: ShareGroup, logs: LogManager, now: int) -> sm.DescribeShareGroupResponse:
    parts = []
    for tp, sp in sorted(group.partitions.items()):
        try:
            end = logs.get_log(tp).high_watermark
        except UnknownTopicOrPartitionError:
            continue  # its topic was deleted: nothing left to describe
        in_flight, delayed, ready, dlq = sp.counts(now)
        parts.append(
            sm.SharePartitionStatus(
                tp.topic,
                tp.partition,
                sp.start,
                sp.end,
                end,
                in_flight,
                delayed,
                ready,
                dlq,
                sp.acked,
                sp.dead_lettered,
                sp.oldest_delivery(),
                *sp.delivery_stats(),
            )
        )
    return sm.DescribeShareGroupResponse(
        configs=group.settings.as_configs(),
        members=tuple(sorted(group.members)),
        partitions=tuple(parts),
        handled=group.handled,
        handling_ms_total=group.handling_ms_total,
        handling_ms_max=group.handling_ms_max,
    )


def backlog(group: ShareGroup, topic: str, logs: LogManager) -> int:
    """Records of ``topic`` the group has not settled: the unsettled ones of its windows, and
    every one past them to the log end (a partition it never read does not count yet)."""
    total = 0
    for tp, sp in group.partitions.items():
        if tp.topic == topic:
            total += max(logs.get_log(tp).log_end_offset - sp.end, 0) + len(sp.records)
    return total


def check_backlog(groups: Iterable[ShareGroup], topic: str, logs: LogManager) -> None:
    """Raise :class:`QueueFullError` if a group reading ``topic`` has reached its
    ``max_backlog_records`` there. Per produced partition, never per record."""
    for group in groups:
        limit = group.settings.max_backlog_records
        if limit and (held := backlog(group, topic, logs)) >= limit:
            raise QueueFullError(
                f"queue {group.group_id!r} on {topic!r} holds {held} records not yet settled, "
                f"at its max_backlog_records ({limit}): retry once its workers catch up"
            )
