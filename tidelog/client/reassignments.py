"""Partition reassignment for :class:`~.admin.AdminClient`: start one (ALTER_PARTITION_
REASSIGNMENTS, through any broker of a cluster) and wait until the controller has finished
it (the partitions' metadata shows exactly the target replicas, all in sync)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Final

from tidelog.wire import messages as m

from .connection import Connection
from .errors import RequestTimeoutError, broker_error
from .types import TopicPartition

Targets = dict[TopicPartition, tuple[int, ...]]
POLL_INTERVAL_S: Final = 0.25
"""Seconds between two looks at the metadata while waiting for a reassignment."""


async def alter(conn: Connection, request: m.AlterPartitionReassignmentsRequest) -> Targets:
    """Send ``request``; the target of each partition it set. Raises the first entry's error
    (``InvalidReplicaAssignmentError``, ``UnknownTopicOrPartitionError``, ...)."""
    response = await conn.call(request, m.AlterPartitionReassignmentsResponse)
    errors = []
    for r in response.results:
        if r.error_code:
            where = f"topic {r.topic!r}" + ("" if r.partition < 0 else f" partition {r.partition}")
            errors.append(broker_error(r.error_code, r.error_message, where=where))
    if errors:
        first = errors[0]
        if len(errors) > 1:
            first.add_note(f"{len(errors) - 1} more failed: " + "; ".join(map(str, errors[1:])))
        raise first
    return {TopicPartition(r.topic, r.partition): r.replicas for r in response.results}


def pending(
    targets: Mapping[TopicPartition, tuple[int, ...]],
    partitions: Iterable[tuple[str, m.PartitionMetadata]],
) -> Targets:
    """The partitions of ``targets`` whose replicas are not exactly their target, all in
    sync, yet."""
    now = {(topic, p.partition): p for topic, p in partitions}
    left: Targets = {}
    for tp, target in targets.items():
        found = now.get((tp.topic, tp.partition))
        if found is None or found.replicas != target or set(found.isr) != set(target):
            left[tp] = target
    return left


async def wait(
    targets: Mapping[TopicPartition, tuple[int, ...]],
    look: Callable[[list[str]], Awaitable[list[tuple[str, m.PartitionMetadata]]]],
    within: float,
) -> None:
    """Poll the metadata (``look(topics)``) until every partition of ``targets`` is on its
    target; ``RequestTimeoutError`` naming what is left after ``within`` seconds."""
    deadline = time.monotonic() + within
    topics = sorted({tp.topic for tp in targets})
    while True:
        left = pending(targets, await look(topics))
        if not left:
            return
        if time.monotonic() >= deadline:
            shown = ", ".join(f"{tp.topic}[{tp.partition}]" for tp in list(left)[:5])
            raise RequestTimeoutError(
                f"{len(left)} partition(s) not moved within {within:g}s ({shown}): is every "
                "target broker alive and catching up? The move goes on in the background"
            )
        await asyncio.sleep(POLL_INTERVAL_S)
