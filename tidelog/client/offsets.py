"""Committing and fetching a group's offsets: the OffsetCommit and OffsetFetch round trips,
shared by the consumer and the admin client.

Both are retried while the coordinator answers ``COORDINATOR_LOAD_IN_PROGRESS`` (it is reading
the group's state after a start or a move), with a short backoff, for at most the request's
timeout (:func:`while_loading`)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Final, NamedTuple, TypeVar

from tidelog.wire import messages as m
from tidelog.wire.errors import BrokerError, CoordinatorLoadInProgressError, raise_for_code

from .connection import Connection
from .errors import broker_error
from .membership import to_wire
from .types import TopicPartition

T = TypeVar("T")
LOAD_WAIT: Final = 30.0
"""How long :func:`while_loading` retries when the caller has no timeout of its own."""


async def while_loading(
    call: Callable[[], Awaitable[T]],
    timeout: float | None = None,  # noqa: ASYNC109
    *,
    also: tuple[type[Exception], ...] = (),
) -> T:
    """``await call()``, again while it raises :class:`CoordinatorLoadInProgressError` (or
    one of ``also``), for at most ``timeout`` seconds (then that error is raised)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + (LOAD_WAIT if timeout is None else timeout)
    delay = 0.02
    retried: tuple[type[Exception], ...] = (CoordinatorLoadInProgressError, *also)
    while True:
        try:
            return await call()
        except retried:
            if loop.time() + delay > deadline:
                raise
        await asyncio.sleep(delay)  # retry backoff while the coordinator loads
        delay = min(delay * 2, 0.5)


class OffsetAndMetadata(NamedTuple):
    """A committed offset: the next offset to consume, and the committer's note."""

    offset: int
    metadata: str = ""


async def commit_offsets(
    conn: Connection,
    group_id: str,
    offsets: Mapping[TopicPartition, OffsetAndMetadata],
    *,
    member_id: str = "",
    member_epoch: int = -1,
    timeout: float | None = None,  # noqa: ASYNC109 (a per-request deadline)
) -> None:
    """Commit ``offsets`` for ``group_id``: as a member (``member_id``, ``member_epoch``) or,
    with no member id, administratively (only while the group is empty). Raises the broker's
    error for the request or for the first partition refused (the others noted on it)."""
    if not offsets:
        return
    request = m.OffsetCommitRequest(
        group_id,
        tuple(
            m.OffsetCommitPartition(tp.topic, tp.partition, o.offset, o.metadata)
            for tp, o in sorted(offsets.items())
        ),
        member_id=member_id,
        member_epoch=member_epoch,
    )

    async def call() -> m.OffsetCommitResponse:
        response = await conn.call(request, m.OffsetCommitResponse, timeout=timeout)
        raise_for_code(response.error_code, response.error_message)
        return response

    response = await while_loading(call, timeout)
    errors: list[BrokerError] = [
        broker_error(r.error_code, r.error_message, where=f"{r.topic}[{r.partition}]")
        for r in response.partitions
        if r.error_code
    ]
    if errors:
        first = errors[0]
        if len(errors) > 1:
            first.add_note(f"{len(errors) - 1} more failed: " + "; ".join(map(str, errors[1:])))
        raise first


async def fetch_offsets(
    conn: Connection,
    group_id: str,
    partitions: Iterable[TopicPartition] | None = None,
    *,
    timeout: float | None = None,  # noqa: ASYNC109 (a per-request deadline)
) -> dict[TopicPartition, OffsetAndMetadata]:
    """The committed offsets of ``group_id`` (of ``partitions``, or every committed one);
    partitions with nothing committed are left out. Raises the broker's error."""
    wanted = None if partitions is None else to_wire(partitions)
    request = m.OffsetFetchRequest(group_id, wanted)

    async def call() -> m.OffsetFetchResponse:
        response = await conn.call(request, m.OffsetFetchResponse, timeout=timeout)
        raise_for_code(response.error_code, response.error_message)
        return response

    response = await while_loading(call, timeout)
    out: dict[TopicPartition, OffsetAndMetadata] = {}
    for r in response.partitions:
        if r.error_code:
            raise broker_error(r.error_code, where=f"{r.topic}[{r.partition}]")
        if r.offset >= 0:
            out[TopicPartition(r.topic, r.partition)] = OffsetAndMetadata(r.offset, r.metadata)
    return out
