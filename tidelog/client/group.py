"""The consumer's side of a group: subscription, rebalance callbacks, commits.

:class:`GroupSubscription` owns the :class:`~.membership.GroupMembership` loop and turns the
assignments it brings into changes of the consumer's partitions. Reconciling runs in the
consumer's ``getmany()`` / ``async for`` -- that is, only between two batches the application
has finished with -- so that positions committed on a revocation cover exactly what the
application has processed:

* **revoked** partitions: ``on_revoked`` is called, their consumed positions are committed
  (with ``auto_commit``), they stop being fetched, and the next heartbeat goes out at once to
  tell the broker they are free;
* **assigned** partitions: their committed offsets are fetched (``auto_offset_reset`` applies
  where there is none), fetching starts, and ``on_assigned`` is called;
* **lost** partitions (the member was fenced or timed out): dropped without committing, then
  ``on_revoked`` is called; the member joins again.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Final, TypeAlias

from tidelog.wire.errors import (
    BrokerError,
    FencedMemberEpochError,
    GroupIdNotFoundError,
    UnknownMemberIdError,
)

from .backoff import Backoff
from .cluster import Cluster
from .errors import ClientError, is_retriable
from .fetcher import Fetcher, PartitionState
from .lifecycle import despite_cancellation
from .membership import GroupMembership
from .offsets import OffsetAndMetadata, commit_offsets, fetch_offsets
from .types import TopicPartition

logger = logging.getLogger("tidelog.client.group")

RebalanceCallback: TypeAlias = Callable[[frozenset[TopicPartition]], Awaitable[None] | None]
"""``on_assigned`` / ``on_revoked``: called with the partitions concerned; may be async."""

_MEMBERSHIP_ERRORS: Final = (FencedMemberEpochError, UnknownMemberIdError, GroupIdNotFoundError)


class CommitFailedError(ClientError):
    """The commit was refused because this consumer is not, or no longer, the member owning
    these partitions (it was fenced, timed out, or is rejoining). ``__cause__`` holds the
    broker's error, if any. The partitions may be consumed by another member now: the records
    processed since the last successful commit will be delivered again."""


class GroupSubscription:
    """One consumer's membership of a group and what follows from it; see the module doc."""

    def __init__(
        self,
        cluster: Cluster,
        states: dict[TopicPartition, PartitionState],
        fetcher: Fetcher,
        *,
        group_id: str,
        unbuffer: Callable[[Iterable[TopicPartition]], None],
        consumed: Callable[[Iterable[TopicPartition]], dict[TopicPartition, int]],
        client_id: str = "",
        instance_id: str | None = None,
        assignor: str = "sticky",
        session_timeout: float = 45.0,
        rebalance_timeout: float = 300.0,
        auto_commit: bool = True,
        auto_commit_interval: float = 5.0,
        request_timeout: float = 30.0,
        retry_backoff: Backoff | None = None,
        clock: Callable[[], float],
    ) -> None:
        self.cluster = cluster
        self.states = states
        self.fetcher = fetcher
        self.group_id = group_id
        self.auto_commit = auto_commit
        self.auto_commit_interval = auto_commit_interval
        self.request_timeout = request_timeout
        self.backoff = retry_backoff or Backoff(0.1, 1.0)
        self.clock = clock
        self._unbuffer = unbuffer
        self._consumed = consumed
        self.membership = GroupMembership(
            cluster,
            group_id,
            on_change=self._changed,
            client_id=client_id,
            instance_id=instance_id,
            assignor=assignor,
            session_timeout=session_timeout,
            rebalance_timeout=rebalance_timeout,
            request_timeout=request_timeout,
            retry_backoff=self.backoff,
            clock=clock,
        )
        self.on_assigned: RebalanceCallback | None = None
        self.on_revoked: RebalanceCallback | None = None
        self.subscribed = False
        self.pending = False
        """Set when the membership brought something to reconcile: cheap to test per record."""
        self._lock = asyncio.Lock()
        self._next_auto_commit = 0.0
        self._commits: set[asyncio.Task[None]] = set()

    # --- subscription -----------------------------------------------------------------------

    def subscribe(
        self,
        topics: tuple[str, ...],
        pattern: str | None,
        on_assigned: RebalanceCallback | None,
        on_revoked: RebalanceCallback | None,
    ) -> None:
        self.on_assigned = on_assigned
        self.on_revoked = on_revoked
        self.membership.subscribe(topics, pattern)
        self.subscribed = True

    def start(self) -> None:
        """Join (once subscribed and the consumer runs)."""
        if self.subscribed:
            self._next_auto_commit = self.clock() + self.auto_commit_interval
            self.membership.start()

    def _changed(self) -> None:
        self.pending = True
        self.fetcher.data_ready.set()  # wakes a getmany() waiting for records

    def check(self) -> None:
        """Raise the membership's fatal error (e.g. an unknown assignor), if any."""
        if self.membership.error is not None:
            raise self.membership.error

    # --- reconciling ------------------------------------------------------------------------

    async def reconcile(self) -> None:
        """Apply the latest assignment (see the module doc). Errors of the callbacks propagate
        once the change they interrupted is complete."""
        async with self._lock:
            g = self.membership
            self.pending = False
            while g.pending:
                if g.lost:
                    lost, g.lost = g.lost, frozenset()
                    self._drop(lost)
                    await self._call(self.on_revoked, lost)
                    continue
                target = g.assignment or frozenset()
                revoked = g.owned - target
                if revoked:
                    await self._revoke(revoked)
                    continue
                added = target - g.owned
                if added:
                    await self._assign(added, target)

    async def _revoke(self, revoked: frozenset[TopicPartition]) -> None:
        g = self.membership
        self._unbuffer(revoked)
        try:
            await self._call(self.on_revoked, revoked)
            if self.auto_commit and not g.lost:
                await self._commit_quietly(self._consumed(revoked))
        finally:
            if not g.lost:  # else the lost path drops them
                self._drop(revoked)
                g.owned -= revoked
                g.wake()

    async def _assign(
        self, added: frozenset[TopicPartition], target: frozenset[TopicPartition]
    ) -> None:
        g = self.membership
        committed = await self._fetch_committed(added)
        if g.lost or g.assignment != target:
            return  # it changed meanwhile: start over
        for tp in added:
            state = PartitionState(tp)
            found = committed.get(tp)
            if found is not None:
                state.seek(found.offset)
            else:
                state.need_reset(self.fetcher.default_reset)
            self.states[tp] = state
        g.owned |= added
        g.wake()
        self.fetcher.wake()
        await self._call(self.on_assigned, added)

    def _drop(self, partitions: Iterable[TopicPartition]) -> None:
        self._unbuffer(partitions)
        for tp in partitions:
            self.states.pop(tp, None)

    async def _call(
        self, callback: RebalanceCallback | None, partitions: frozenset[TopicPartition]
    ) -> None:
        if callback is None or not partitions:
            return
        result = callback(partitions)
        if inspect.isawaitable(result):
            await result

    async def _fetch_committed(
        self, partitions: Iterable[TopicPartition]
    ) -> dict[TopicPartition, OffsetAndMetadata]:
        wanted = list(partitions)
        attempt = 0
        while True:
            try:
                conn = await self.membership.link.get()
                return await fetch_offsets(
                    conn, self.group_id, wanted, timeout=self.request_timeout
                )
            except Exception as exc:
                self.membership.link.moved(exc)
                if not is_retriable(exc):
                    raise
                await asyncio.sleep(self.backoff.delay(attempt))  # retry backoff
                attempt += 1

    # --- commits ----------------------------------------------------------------------------

    async def commit(
        self, offsets: Mapping[TopicPartition, int] | None = None, metadata: str = ""
    ) -> None:
        """Commit ``offsets`` (default: the consumed positions of every owned partition).
        Raises :class:`CommitFailedError` if this consumer is not the member owning them, or
        the broker's error (e.g. ``UnknownTopicOrPartitionError``)."""
        positions = self._consumed(self.membership.owned) if offsets is None else dict(offsets)
        g = self.membership
        if not positions:
            return
        if not g.member_id:
            raise CommitFailedError(
                f"not a member of group {self.group_id!r} right now (joining or rejoining)"
            )
        try:
            conn = await self.membership.link.get()
            await commit_offsets(
                conn,
                self.group_id,
                {tp: OffsetAndMetadata(o, metadata) for tp, o in positions.items()},
                member_id=g.member_id,
                member_epoch=g.epoch,
                timeout=self.request_timeout,
            )
        except _MEMBERSHIP_ERRORS as exc:
            g.wake()  # the heartbeat finds out what happened and rejoins
            raise CommitFailedError(f"group {self.group_id!r}: {exc}") from exc
        except (BrokerError, ClientError) as exc:
            g.link.moved(exc)  # a coordinator that moved is found again next time
            raise
        g.link.succeeded()

    def commit_async(
        self, offsets: Mapping[TopicPartition, int] | None = None, metadata: str = ""
    ) -> asyncio.Task[None]:
        """Start a commit of what is consumed now; failures are logged unless the returned
        task is awaited."""
        positions = self._consumed(self.membership.owned) if offsets is None else dict(offsets)
        task = asyncio.get_running_loop().create_task(self.commit(positions, metadata))
        self._commits.add(task)
        task.add_done_callback(self._commit_done)
        return task

    def _commit_done(self, task: asyncio.Task[None]) -> None:
        self._commits.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.warning("group %s: commit failed: %s", self.group_id, task.exception())

    async def _commit_quietly(self, positions: Mapping[TopicPartition, int]) -> None:
        try:
            await self.commit(positions)
        except (BrokerError, ClientError) as exc:
            logger.warning("group %s: auto-commit failed: %s", self.group_id, exc)

    def auto_commit_due_in(self) -> float | None:
        """Seconds until the next auto-commit (``None`` without auto-commit)."""
        if not self.auto_commit or not self.subscribed:
            return None
        return max(0.0, self._next_auto_commit - self.clock())

    def maybe_auto_commit(self) -> None:
        """Start an auto-commit of the consumed positions if one is due."""
        due = self.auto_commit_due_in()
        if due is None or due > 0 or not self.membership.member_id:
            return
        self._next_auto_commit = self.clock() + self.auto_commit_interval
        positions = self._consumed(self.membership.owned)
        if positions:
            self.commit_async(positions)

    async def committed(
        self, partitions: Iterable[TopicPartition]
    ) -> dict[TopicPartition, OffsetAndMetadata]:
        conn = await self.membership.link.get()
        return await fetch_offsets(conn, self.group_id, partitions, timeout=self.request_timeout)

    # --- leaving ----------------------------------------------------------------------------

    async def close(self, *, permanent: bool = False) -> None:
        """Revoke everything (``on_revoked``, auto-commit), wait for commits in flight, and
        leave the group.

        However it ends -- an error of ``on_revoked``, or the task cancelled, also while this
        runs -- the member then leaves and, with ``auto_commit``, its consumed positions are
        committed (unless ``on_revoked`` failed): a cancellation waits for that (a commit is
        bounded by ``request_timeout``, the leave by ``LEAVE_TIMEOUT``) and is raised after.
        The group never waits a session timeout for a consumer that was closed."""
        g = self.membership
        if not self.subscribed:
            return
        self.subscribed = False
        try:
            await g.stop()
            async with self._lock:
                if g.lost:
                    lost, g.lost = g.lost, frozenset()
                    self._drop(lost)
                    await self._call(self.on_revoked, lost)
                if g.owned:
                    await self._revoke(g.owned)
        finally:
            await despite_cancellation(self._leave(permanent))

    async def _leave(self, permanent: bool) -> None:
        g = self.membership
        if g.owned:  # cancelled before the revocation began: commit what was consumed
            if self.auto_commit:
                await self._commit_quietly(self._consumed(g.owned))
            self._drop(g.owned)
            g.owned = frozenset()
        if self._commits:
            await asyncio.gather(*self._commits, return_exceptions=True)
        await g.leave(permanent=permanent)
        await g.link.close()
