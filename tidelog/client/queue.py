"""The queue consumer: a member of a share group (docs/QUEUES.md).

``async for message in queue`` yields records the broker acquired for this member under a lock;
each is then settled with ``await message.ack()``, ``nack(delay=None, error=None)``,
``reject(reason)`` or extended with ``renew()``; ``await queue.ack_many(messages)`` acknowledges
a list in one call (as Redis's XACK of many ids). Settlements are batched: those made while one
ShareAcknowledge is in flight go together in the next. Several tasks may iterate one consumer
at once (see :func:`~tidelog.client.workers.run_workers`).

Share requests go to the group's coordinator (found with FindCoordinator, key type 2: in a
cluster the leader of the group's ``__share_group_state`` partition) over a connection of their
own, found again when the coordinator moves.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import uuid
from collections.abc import Sequence
from types import TracebackType
from typing import Final, TypeVar

from tidelog.wire import messages as m
from tidelog.wire import share_messages as sm
from tidelog.wire.errors import BrokerError, error_for, raise_for_code

from .backoff import Backoff
from .cluster import Cluster
from .errors import ClientClosedError, ClientUsageError, TidelogConnectionError
from .membership import CoordinatorLink

logger = logging.getLogger("tidelog.client.queue")

DEFAULT_MAX_RECORDS: Final = 100
RETRY: Final = Backoff(0.05, 1.0)
ADMIN_RETRY_S: Final = 15.0
"""How long a queue admin call (alter, describe) retries a coordinator that is not there yet
(a cluster creates ``__share_group_state`` on the first request that needs it)."""

R = TypeVar("R", sm.ShareFetchResponse, sm.ShareAcknowledgeResponse,
            sm.AlterShareGroupResponse, sm.DescribeShareGroupResponse)  # fmt: skip


async def coordinator_call(
    link: CoordinatorLink,
    request: sm.ShareRequest,
    kind: type[R],
    answer_within: float | None = None,
) -> R:
    """One share request to the group's coordinator; its error raised. A moved coordinator
    or a broken connection makes the link find it again next time (after a backoff)."""
    try:
        conn = await link.get()
        response = await conn.call(request, kind, timeout=answer_within)
        raise_for_code(response.error_code, response.error_message)
    except (TidelogConnectionError, BrokerError) as exc:
        link.moved(exc)
        raise
    link.succeeded()
    return response


class QueueMessage:
    """A record held under this member's lock until it is settled."""

    __slots__ = (
        "_queue",
        "delivery_count",
        "headers",
        "key",
        "offset",
        "partition",
        "settled",
        "timestamp",
        "topic",
        "value",
    )

    def __init__(self, queue: QueueConsumer, r: sm.ShareRecord) -> None:
        self._queue = queue
        self.topic, self.partition, self.offset = r.topic, r.partition, r.offset
        self.key, self.value, self.headers = r.key, r.value, r.headers
        self.timestamp = r.timestamp
        self.delivery_count = r.delivery_count
        """1 on the first delivery; each redelivery adds one."""
        self.settled = False

    async def ack(self) -> None:
        """Done: never delivered again. Raises :class:`InvalidRecordStateError` if this member
        no longer holds it (its lock expired: it is redelivered)."""
        await self._settle(sm.AckType.ACCEPT)

    async def nack(self, delay: float | None = None, error: str | None = None) -> None:
        """Deliver again after ``delay`` seconds (``None``: the group's backoff policy);
        ``error`` is kept for the dead-letter headers."""
        if delay is not None and delay < 0:
            raise ClientUsageError("a nack delay is 0 or more seconds")
        ms = -1 if delay is None else round(delay * 1000)
        await self._settle(sm.AckType.RELEASE, ms, error or "")

    async def reject(self, reason: str = "") -> None:
        """Straight to the dead-letter topic, with ``reason``."""
        await self._settle(sm.AckType.REJECT, error=reason)

    async def renew(self) -> None:
        """Extend the lock by the group's lock duration (for long jobs)."""
        await self._queue._submit(self, sm.AckType.RENEW, -1, "")

    async def _settle(self, kind: sm.AckType, delay_ms: int = -1, error: str = "") -> None:
        if self.settled:
            raise ClientUsageError(f"{self.topic}-{self.partition}@{self.offset} is settled")
        self.settled = True
        await self._queue._submit(self, kind, delay_ms, error)

    def __repr__(self) -> str:
        return (
            f"QueueMessage({self.topic}-{self.partition}@{self.offset}, "
            f"delivery_count={self.delivery_count})"
        )


class QueueConsumer:
    """A member of share group ``group`` reading ``topics``."""

    def __init__(
        self,
        bootstrap_servers: str | Sequence[str],
        group: str,
        topics: str | Sequence[str],
        *,
        max_records: int = DEFAULT_MAX_RECORDS,
        max_wait: float = 0.5,
        client_id: str = "tidelog",
        member_id: str | None = None,
        cluster: Cluster | None = None,
    ) -> None:
        if max_records < 1:
            raise ClientUsageError("max_records must be at least 1")
        self.group = group
        self.topics = (topics,) if isinstance(topics, str) else tuple(topics)
        self.member_id = member_id or uuid.uuid4().hex
        self.max_records = max_records
        self.max_wait_ms = round(max_wait * 1000)
        self._cluster = cluster or Cluster(bootstrap_servers, client_id=client_id)
        self._link = CoordinatorLink(
            self._cluster,
            group_id=group,
            key_type=m.KEY_TYPE_SHARE,
            client_id=client_id,
            request_timeout=self._cluster.request_timeout,
        )
        self._buffer: collections.deque[QueueMessage] = collections.deque()
        self._held: set[QueueMessage] = set()
        self._fetching = asyncio.Lock()
        self._pending: list[tuple[list[sm.ShareAck], asyncio.Future[Failures]]] = []
        """Settlements to send: each caller's acks with the future that gets their failures."""
        self._sender: asyncio.Task[None] | None = None
        self._started = False
        self._closed = False
        self.lock_duration_ms = 0
        """The group's lock duration as of the last fetch (0 before it)."""

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        await self._cluster.start()
        self._started = True

    async def __aenter__(self) -> QueueConsumer:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Release every message held and not settled (delivered again at once to another
        member), leave, and close the connections."""
        if self._closed:
            return
        self._closed = True
        if self._sender is not None:
            await asyncio.gather(self._sender, return_exceptions=True)
        release = [
            sm.ShareAck(x.topic, x.partition, x.offset, sm.AckType.RELEASE, 0)
            for x in self._held
            if not x.settled
        ]
        self._held.clear()
        self._buffer.clear()
        if self._started:
            try:
                request = sm.ShareAcknowledgeRequest(
                    self.group, self.member_id, tuple(release), True
                )
                await coordinator_call(self._link, request, sm.ShareAcknowledgeResponse)
            except (TidelogConnectionError, BrokerError) as exc:
                logger.info("queue %s: could not release held messages: %s", self.group, exc)
        await self._link.close()
        await self._cluster.close()

    # --- receiving --------------------------------------------------------------------------

    def __aiter__(self) -> QueueConsumer:
        return self

    async def __anext__(self) -> QueueMessage:
        while True:
            if self._closed:
                raise StopAsyncIteration
            if self._buffer:
                return self._buffer.popleft()
            async with self._fetching:
                if self._buffer or self._closed:
                    continue
                await self._fetch()

    async def _fetch(self) -> None:
        attempt = 0
        while not self._closed:
            try:
                messages = await self.take(self.max_records, self.max_wait_ms / 1000)
            except (TidelogConnectionError, BrokerError) as exc:
                if isinstance(exc, BrokerError) and not exc.retriable:
                    raise
                attempt += 1
                await asyncio.sleep(RETRY.delay(attempt))
                continue
            self._held.update(messages)
            self._buffer.extend(messages)
            return

    async def take(self, max_records: int, wait: float) -> list[QueueMessage]:
        """One ShareFetch: up to ``max_records`` messages acquired for this member, waiting up
        to ``wait`` seconds for the first; no retry, no buffering (the HTTP gateway's lease).
        Concurrent calls are fine. What it returns is not released one by one by
        :meth:`close` (whose leave releases everything the member holds anyway). Raises the
        broker's error or :class:`TidelogConnectionError`."""
        if self._closed:
            raise ClientClosedError("the queue consumer is closed")
        request = sm.ShareFetchRequest(
            self.group, self.member_id, self.topics, max_records, round(wait * 1000)
        )
        timeout = self._cluster.request_timeout + wait  # the wait is part of the answer
        response = await coordinator_call(self._link, request, sm.ShareFetchResponse, timeout)
        self.lock_duration_ms = response.lock_duration_ms
        return [QueueMessage(self, r) for r in response.records]

    # --- settling ---------------------------------------------------------------------------

    async def _settle_batch(
        self, request: sm.ShareAcknowledgeRequest
    ) -> sm.ShareAcknowledgeResponse:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._cluster.request_timeout
        attempt = 0
        while True:
            try:
                return await coordinator_call(self._link, request, sm.ShareAcknowledgeResponse)
            except BrokerError as exc:
                if not exc.retriable or loop.time() >= deadline:
                    raise
            attempt += 1
            await asyncio.sleep(RETRY.delay(attempt))

    async def ack_many(self, messages: Sequence[QueueMessage]) -> dict[QueueMessage, BrokerError]:
        """Acknowledge every one of ``messages`` (done: never delivered again) in one call and
        one request: the bulk form of :meth:`QueueMessage.ack`, for a worker that handles a
        batch from :meth:`take`. Returns the messages that were not acknowledged, each with
        its error (:class:`InvalidRecordStateError`: this member no longer holds it, its lock
        expired); empty when all were. Raises :class:`ClientUsageError`, before anything is
        sent, if one of them is settled already or comes from another consumer, and what
        :meth:`QueueMessage.ack` raises when the request as a whole fails."""
        for message in messages:
            if message.settled:
                raise ClientUsageError(f"{message!r} is settled")
            if message._queue is not self:
                raise ClientUsageError(f"{message!r} was taken by another queue consumer")
        if not messages:
            return {}
        acks = []
        for message in messages:
            message.settled = True
            self._held.discard(message)
            acks.append(sm.ShareAck(message.topic, message.partition, message.offset))
        failures = await self._enqueue(acks)
        if not failures:
            return {}
        return {
            message: failures[key]
            for message in messages
            if (key := (message.topic, message.partition, message.offset)) in failures
        }

    async def _submit(
        self, message: QueueMessage, kind: sm.AckType, delay_ms: int, error: str
    ) -> None:
        ack = sm.ShareAck(message.topic, message.partition, message.offset, kind, delay_ms, error)
        if kind is not sm.AckType.RENEW:
            self._held.discard(message)
        failures = await self._enqueue([ack])
        if failures:
            raise next(iter(failures.values()))

    async def _enqueue(self, acks: list[sm.ShareAck]) -> Failures:
        """Send ``acks`` with the next ShareAcknowledge; their failures, by record."""
        if self._closed and self._sender is None:
            raise ClientClosedError("the queue consumer is closed")
        future: asyncio.Future[Failures] = asyncio.get_running_loop().create_future()
        self._pending.append((acks, future))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send_acks())
        return await future

    async def _send_acks(self) -> None:
        """Send what is pending, one request at a time: what arrives meanwhile goes next. A
        batch the coordinator refused as a whole with a retriable error (it moved, or is
        loading the group) was not applied: it is sent again, for up to the request timeout;
        after a broken connection its outcome is unknown, so its waiters get the error."""
        while self._pending:
            batch, self._pending = self._pending, []
            request = sm.ShareAcknowledgeRequest(
                self.group, self.member_id, tuple(a for acks, _ in batch for a in acks)
            )
            try:
                response = await self._settle_batch(request)
            except Exception as exc:  # every waiter gets the failure
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            failed = {
                (f.topic, f.partition, f.offset): error
                for f in response.failed
                if (error := error_for(f.error_code, f.error_message)) is not None
            }
            for acks, future in batch:
                if future.done():
                    continue
                if not failed:  # the common case: nothing to look up
                    future.set_result({})
                    continue
                keys = ((a.topic, a.partition, a.offset) for a in acks)
                future.set_result({k: failed[k] for k in keys if k in failed})


Failures = dict[tuple[str, int, int], BrokerError]
"""Settlements the coordinator refused, by (topic, partition, offset)."""


async def _admin_call(
    bootstrap_servers: str | Sequence[str], group: str, request: sm.ShareRequest, kind: type[R]
) -> R:
    """``request`` to ``group``'s coordinator, retried while it is retriably not there (for up
    to :data:`ADMIN_RETRY_S`)."""
    cluster = Cluster(bootstrap_servers)
    link = CoordinatorLink(cluster, group_id=group, key_type=m.KEY_TYPE_SHARE)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ADMIN_RETRY_S
    attempt = 0
    try:
        while True:
            try:
                return await coordinator_call(link, request, kind)
            except (TidelogConnectionError, BrokerError) as exc:
                if isinstance(exc, BrokerError) and not exc.retriable:
                    raise
                if loop.time() >= deadline:
                    raise
            attempt += 1
            await asyncio.sleep(RETRY.delay(attempt))
    finally:
        await link.close()
        await cluster.close()


async def alter_queue(
    bootstrap_servers: str | Sequence[str], group: str, **settings: object
) -> None:
    """Set share group settings (docs/QUEUES.md, "Settings"), creating the group if missing.
    Raises :class:`InvalidConfigError` for an unknown name or an absurd value."""
    configs = tuple((k, str(v)) for k, v in settings.items())
    request = sm.AlterShareGroupRequest(group, configs)
    await _admin_call(bootstrap_servers, group, request, sm.AlterShareGroupResponse)


async def describe_queue(
    bootstrap_servers: str | Sequence[str], group: str
) -> sm.DescribeShareGroupResponse:
    """A share group's settings, members and per-partition counts. Raises
    :class:`GroupIdNotFoundError` for an unknown group."""
    request = sm.DescribeShareGroupRequest(group)
    return await _admin_call(bootstrap_servers, group, request, sm.DescribeShareGroupResponse)
