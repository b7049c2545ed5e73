"""A consumer's membership of a group: join, heartbeat, leave -- one background loop.

The broker computes the assignment (docs/GROUPS.md); this loop only carries it. Every
heartbeat reports the partitions the consumer owns now (:attr:`GroupMembership.owned`, kept by
the consumer); a response may carry a new assignment, which lands in
:attr:`GroupMembership.assignment` and is announced through ``on_change``. The consumer then
reconciles (revokes, assigns), updates ``owned`` and calls :meth:`GroupMembership.wake` so the
next heartbeat -- which tells the broker what was released -- goes out at once.

When the broker says the member is fenced or unknown (or no heartbeat got through for a whole
session timeout), the member has lost its partitions: :attr:`GroupMembership.lost` is set for
the consumer to drop them without committing, and the loop joins again as a new member.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Final

from tidelog.wire import messages as m
from tidelog.wire.errors import (
    BrokerError,
    CoordinatorNotAvailableError,
    FencedMemberEpochError,
    GroupIdNotFoundError,
    NotCoordinatorError,
    UnknownMemberIdError,
    raise_for_code,
)

from .backoff import Backoff
from .cluster import Cluster
from .connection import Connection
from .errors import (
    BrokerUnavailableError,
    ClientError,
    TidelogConnectionError,
    broker_error,
    is_retriable,
)
from .types import TopicPartition
from .wakeup import Wakeup

logger = logging.getLogger("tidelog.client.group")

LEAVE_TIMEOUT: Final = 5.0
"""How long ``leave()`` waits for the broker's answer (a member that cannot leave times out)."""
_LOST: Final = (FencedMemberEpochError, UnknownMemberIdError, GroupIdNotFoundError)
_MOVED: Final = (NotCoordinatorError, CoordinatorNotAvailableError)


class CoordinatorLink:
    """A connection of its own to the broker coordinating the group, opened on first use and
    again after it breaks or the coordinator moves. Its own, so that group requests never queue
    behind a long-polling fetch, and a member's commits and heartbeats stay in order.

    The coordinator is found with FindCoordinator (any broker answers: on a single broker it
    is that broker, in a cluster the leader of the group's ``__consumer_offsets`` partition).
    A group request answered NOT_COORDINATOR or COORDINATOR_NOT_AVAILABLE, or a broken
    connection, makes the next :meth:`get` find it again (:meth:`moved`) -- after a backoff
    that grows with consecutive failures, so that a caller retrying at once (a commit loop
    while the coordinator is down) does not spin on FindCoordinator and connects."""

    def __init__(
        self,
        cluster: Cluster,
        *,
        group_id: str = "",
        key_type: int = m.KEY_TYPE_GROUP,
        client_id: str = "",
        request_timeout: float = 30.0,
        retry_backoff: Backoff | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ):
        self.cluster = cluster
        self.group_id = group_id
        self.key_type = key_type
        """Which kind of group: a consumer group, or a share group (a queue)."""
        self.client_id = client_id
        self.request_timeout = request_timeout
        self.backoff = retry_backoff or Backoff(0.1, 1.0)
        self._sleep = sleep
        self._conn: Connection | None = None
        self._lock = asyncio.Lock()
        self._closing: set[asyncio.Task[None]] = set()
        self._failures = 0
        self._retry_at = 0.0
        """Loop time before which the next find waits: the backoff after the last failure
        (time the caller spent on its own backoff meanwhile counts)."""

    async def get(self) -> Connection:
        """The open connection. Raises BrokerUnavailableError or COORDINATOR_NOT_AVAILABLE
        (both retriable) if it cannot be opened, ClientClosedError once closed."""
        conn = self._conn
        if conn is not None and not conn.closed:
            return conn
        async with self._lock:
            conn = self._conn
            if conn is not None and not conn.closed:
                return conn
            wait = self._retry_at - asyncio.get_running_loop().time()
            if wait > 0:
                await self._sleep(wait)  # retry backoff
            host, port = await self._find()
            self._conn = await Connection.open(
                host,
                port,
                client_id=self.client_id,
                connect_timeout=self.cluster.connect_timeout,
                request_timeout=self.request_timeout,
            )
            return self._conn

    def succeeded(self) -> None:
        """A group request got through: the next failure backs off from the start again."""
        self._failures = 0

    async def _find(self) -> tuple[str, int]:
        if not self.group_id:  # no group to look up: the controller, as before
            meta = self.cluster.metadata
            broker = meta.brokers.get(meta.controller_id)
            if broker is None:
                meta = await self.cluster.refresh()
                broker = meta.brokers.get(meta.controller_id) or next(
                    iter(meta.brokers.values()), None
                )
            if broker is None:
                raise BrokerUnavailableError("no broker is known to coordinate the group")
            return broker.host, broker.port
        conn = await self.cluster.any_connection()
        response = await conn.call(
            m.FindCoordinatorRequest(self.group_id, self.key_type),
            m.FindCoordinatorResponse,
            timeout=self.request_timeout,
        )
        if response.error_code:
            raise broker_error(
                response.error_code, response.error_message, where=f"group {self.group_id!r}"
            )
        return response.host, response.port

    def moved(self, exc: BaseException) -> None:
        """After a failed group request (or :meth:`get`): if ``exc`` says the coordinator
        moved (or the connection broke), drop the connection so the next :meth:`get` finds it
        again, once the backoff for this many failures in a row has passed."""
        if not isinstance(exc, (*_MOVED, TidelogConnectionError)):
            return
        delay = self.backoff.delay(self._failures)
        self._failures += 1
        self._retry_at = asyncio.get_running_loop().time() + delay
        conn, self._conn = self._conn, None
        if conn is not None:
            task = asyncio.get_running_loop().create_task(conn.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        """Close the connection (a later :meth:`get` opens a new one)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()


def to_wire(tps: Iterable[TopicPartition]) -> tuple[m.TopicPartitions, ...]:
    by_topic: dict[str, list[int]] = {}
    for tp in tps:
        by_topic.setdefault(tp.topic, []).append(tp.partition)
    return tuple(m.TopicPartitions(t, tuple(sorted(ps))) for t, ps in sorted(by_topic.items()))


def from_wire(groups: Iterable[m.TopicPartitions]) -> frozenset[TopicPartition]:
    return frozenset(TopicPartition(g.topic, p) for g in groups for p in g.partitions)


class GroupMembership:
    """One member's protocol loop. Times are seconds."""

    def __init__(
        self,
        cluster: Cluster,
        group_id: str,
        *,
        on_change: Callable[[], None],
        client_id: str = "",
        instance_id: str | None = None,
        assignor: str = "sticky",
        session_timeout: float = 45.0,
        rebalance_timeout: float = 300.0,
        request_timeout: float = 30.0,
        retry_backoff: Backoff | None = None,
        clock: Callable[[], float],
    ) -> None:
        self.cluster = cluster
        self.group_id = group_id
        self.client_id = client_id
        self.instance_id = instance_id
        self.assignor = assignor
        self.session_timeout = session_timeout
        self.rebalance_timeout = rebalance_timeout
        self.request_timeout = request_timeout
        self.backoff = retry_backoff or Backoff(0.1, 1.0)
        self.clock = clock
        self._on_change = on_change
        self.link = CoordinatorLink(
            cluster,
            group_id=group_id,
            client_id=client_id,
            request_timeout=request_timeout,
            retry_backoff=self.backoff,
        )
        self.topics: tuple[str, ...] = ()
        self.pattern: str | None = None
        self.member_id = ""
        self.epoch = 0
        self.heartbeat_interval = 3.0
        self.answered = 0
        """Joins and heartbeats the coordinator has answered (an error answer is not counted,
        except one that arrives after this member was lost or left, which is ignored)."""
        self.assignment: frozenset[TopicPartition] | None = None
        """The latest assignment from the broker (``None`` until the first join)."""
        self.owned: frozenset[TopicPartition] = frozenset()
        """What the consumer owns now: reported in every heartbeat."""
        self.lost: frozenset[TopicPartition] = frozenset()
        """Partitions owned when the membership was lost: the consumer drops them without
        committing (the broker may have given them to others already)."""
        self.error: BaseException | None = None
        """A fatal error (bad group id, unsupported assignor...): the loop has stopped."""
        self._subscription_changed = False
        self._rejoin_requested = False
        self._wakeup = Wakeup()
        self._task: asyncio.Task[None] | None = None
        self._last_ok = 0.0

    # --- control ----------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._last_ok = self.clock()
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"group {self.group_id}"
            )

    def wake(self) -> None:
        """Heartbeat now (the consumer's owned partitions changed)."""
        self._wakeup.set()

    def subscribe(self, topics: tuple[str, ...], pattern: str | None) -> None:
        """A new subscription: a topic list goes in the next heartbeat; a new pattern needs a
        new join."""
        if pattern != self.pattern and self.member_id:
            self._rejoin_requested = True
        self._subscription_changed = topics != self.topics
        self.topics, self.pattern = topics, pattern
        self.wake()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def leave(self, *, permanent: bool = False) -> None:
        """Stop heartbeating and leave the group (a static member leaves for good only when
        ``permanent``; otherwise its partitions wait for it for a session timeout)."""
        await self.stop()
        member_id, self.member_id = self.member_id, ""
        self.assignment = None
        if not member_id:
            return
        request = m.LeaveGroupRequest(
            self.group_id,
            member_id,
            self.epoch,
            instance_id=self.instance_id if permanent else None,
        )
        try:
            async with asyncio.timeout(LEAVE_TIMEOUT):
                conn = await self.link.get()
                response = await conn.call(request, m.LeaveGroupResponse, timeout=LEAVE_TIMEOUT)
            raise_for_code(response.error_code, response.error_message)
        except (BrokerError, ClientError, TimeoutError) as exc:
            logger.info("group %s: could not leave cleanly: %s", self.group_id, exc)

    # --- the loop ---------------------------------------------------------------------------

    async def _run(self) -> None:
        failures = 0
        next_heartbeat = 0.0
        loop = asyncio.get_running_loop()
        while True:
            self._wakeup.clear()
            if self._rejoin_requested:
                self._rejoin_requested = False
                self._lose("the subscription pattern changed")
            try:
                if not self.member_id:
                    await self._join()
                else:
                    sent = loop.time()
                    await self._heartbeat()
                    next_heartbeat = sent + self.heartbeat_interval
                failures = 0
                self.link.succeeded()
                self._last_ok = self.clock()
                self.answered += 1
            except _LOST as exc:
                self._lose(str(exc))
                continue
            except Exception as exc:
                self.link.moved(exc)
                if not is_retriable(exc):
                    self.error = exc
                    logger.error("group %s: giving up: %s", self.group_id, exc)
                    self._on_change()
                    return
                if self.member_id and self.clock() - self._last_ok > self.session_timeout:
                    self._lose(f"no heartbeat got through for a session timeout ({exc})")
                await self._wakeup.wait(self.backoff.delay(failures))
                failures += 1
                continue
            if not self.member_id:
                continue
            await self._wakeup.wait(max(0.0, next_heartbeat - loop.time()))

    def _lose(self, why: str) -> None:
        if self.member_id:
            logger.info(
                "group %s: member %s lost its partitions: %s", self.group_id, self.member_id, why
            )
        self.member_id = ""
        self.epoch = 0
        self.lost |= self.owned
        self.owned = frozenset()
        self.assignment = frozenset()
        self._on_change()

    async def _join(self) -> None:
        request = m.JoinGroupRequest(
            self.group_id,
            subscribed_topics=self.topics,
            subscribed_pattern=self.pattern,
            assignor=self.assignor,
            client_id=self.client_id,
            instance_id=self.instance_id,
            session_timeout_ms=int(self.session_timeout * 1000),
            rebalance_timeout_ms=int(self.rebalance_timeout * 1000),
        )
        conn = await self.link.get()
        response = await conn.call(request, m.JoinGroupResponse, timeout=self.request_timeout)
        raise_for_code(response.error_code, response.error_message)
        self.member_id = response.member_id
        self.epoch = response.member_epoch
        self.heartbeat_interval = response.heartbeat_interval_ms / 1000
        self._subscription_changed = False
        self._set_assignment(from_wire(response.assignment))
        logger.info(
            "group %s: joined as %s (epoch %d) with %d partition(s)",
            self.group_id,
            self.member_id,
            self.epoch,
            len(response.assignment),
        )

    async def _heartbeat(self) -> None:
        request = m.HeartbeatRequest(
            self.group_id,
            self.member_id,
            self.epoch,
            owned=to_wire(self.owned),
            subscribed_topics=self.topics if self._subscription_changed else None,
        )
        self._subscription_changed = False
        conn = await self.link.get()
        # The broker may hold the answer up to one interval. No answer within a session
        # timeout beyond that: the broker has most likely removed us (see _run).
        timeout = self.heartbeat_interval + min(self.request_timeout, self.session_timeout)
        response = await conn.call(request, m.HeartbeatResponse, timeout=timeout)
        if response.error_code:
            if self.member_id != request.member_id:
                return  # lost or left meanwhile
            raise_for_code(response.error_code, response.error_message)
        self.epoch = response.member_epoch
        self.heartbeat_interval = response.heartbeat_interval_ms / 1000
        if response.assignment is not None:
            self._set_assignment(from_wire(response.assignment))

    def _set_assignment(self, assignment: frozenset[TopicPartition]) -> None:
        if assignment != self.assignment:
            self.assignment = assignment
            self._on_change()

    @property
    def pending(self) -> bool:
        """Whether the consumer has something to reconcile."""
        return bool(self.lost) or (self.assignment is not None and self.assignment != self.owned)
