"""The consumer: read records from assigned partitions, or as a member of a group.

A :class:`Consumer` is a facade over the :class:`~.cluster.Cluster`, the
:class:`~.assignment.Assignment` (partition states and positions, the records ``async for``
holds), a :class:`~.fetcher.Fetcher` that prefetches every assigned partition in the
background, a :class:`~.collector.RecordCollector` that turns prefetched batches into records
and, with a ``group_id``, a :class:`~.group.GroupSubscription` (membership, rebalances,
commits)::

    async with Consumer("127.0.0.1:7070", auto_offset_reset="earliest") as consumer:
        consumer.assign([TopicPartition("events", 0)])
        async for record in consumer:
            print(record.offset, record.value)

    async with Consumer("127.0.0.1:7070", group_id="billing") as consumer:
        consumer.subscribe(["events"])
        async for record in consumer:   # committed every auto_commit_interval seconds
            handle(record)

    async with Consumer("127.0.0.1:7070", auto_offset_reset="earliest") as consumer:
        consumer.assign([TopicPartition("events", 0)])
        async for batch in consumer.batches():   # each fetched batch whole, as columns
            handle_many(batch.offsets, batch.values)

docs/GROUPS.md shows the at-most-once and at-least-once patterns, and whole batches.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Final, TypeVar

from tidelog.wire import messages as m

from .assignment import Assignment
from .backoff import Backoff
from .cluster import Cluster
from .collector import RecordCollector, has_data
from .consumer_batch import ConsumerBatch
from .errors import ClientClosedError, ClientUsageError, NoOffsetForPartitionError
from .fetcher import Fetcher, PartitionState, ResetPolicy
from .group import GroupSubscription, RebalanceCallback
from .lifecycle import AsyncClient, despite_cancellation
from .offsets import OffsetAndMetadata
from .serializers import Deserializer, SerializerName, get_deserializer
from .types import AnyRecord, TopicPartition

T = TypeVar("T")
ITERATION_CHUNK: Final = 10_000
"""Records ``async for`` takes per ``getmany()`` when ``max_poll_records`` is not set."""


class Consumer(AsyncClient):
    """Reads records from the partitions given to :meth:`assign`. Use as
    ``async with Consumer(...)`` or call :meth:`start` and :meth:`close`.

    Sizes are bytes and times seconds:

    * ``auto_offset_reset``: where a partition without a position (newly assigned, or its
      position fell out of the log) starts: ``"earliest"``, ``"latest"`` or ``"none"`` (then
      ``getmany()`` raises :class:`NoOffsetForPartitionError` or the broker's
      ``OffsetOutOfRangeError`` until you ``seek()``).
    * ``fetch_max_wait``, ``fetch_min_bytes``: a fetch waits on the broker up to
      ``fetch_max_wait`` for ``fetch_min_bytes`` to arrive.
    * ``fetch_max_bytes``, ``max_partition_fetch_bytes``: bounds of one fetch response, in
      all and per partition (at least one whole batch always comes back).
    * ``prefetch_bytes``: a partition is fetched ahead while less than this many bytes of it
      wait to be consumed: the consumer's memory bound per partition.
    * ``max_poll_records``: default bound of one ``getmany()``.
    * ``key_deserializer``, ``value_deserializer``: a name or a callable (default: bytes).
    * ``skip_unreadable``: skip a range the broker cannot read (damaged or missing on its
      disk), logging a warning, instead of raising ``DamagedRangeError`` /
      ``MissingRangeError`` (whose ``next_offset`` says where to ``seek()`` to skip it).

    With a ``group_id``, :meth:`subscribe` makes the consumer a member of that group (the
    broker assigns the partitions; see :meth:`subscribe`):

    * ``group_instance_id``: static membership -- a consumer restarting with the same id
      within ``session_timeout`` gets its partitions back without a rebalance.
    * ``session_timeout``: the broker removes a member it has not heard from for this long.
    * ``rebalance_timeout``: how long the member may take to give up revoked partitions.
    * ``assignor``: ``"sticky"`` (default), ``"range"`` or ``"round-robin"``.
    * ``auto_commit``, ``auto_commit_interval``: commit the consumed positions every interval
      (from ``getmany()``/``async for``, so only what the application has been handed), on a
      revocation and on close. Without it, call :meth:`commit`.
    * ``auto_offset_reset`` applies to partitions the group has no committed offset for.
    """

    def __init__(
        self,
        bootstrap_servers: str | Sequence[str] = "127.0.0.1:7070",
        *,
        client_id: str = "tidelog-consumer",
        auto_offset_reset: ResetPolicy = "latest",
        fetch_max_wait: float = 0.5,
        fetch_min_bytes: int = 1,
        fetch_max_bytes: int = 50 * 1024 * 1024,
        max_partition_fetch_bytes: int = 1024 * 1024,
        prefetch_bytes: int = 4 * 1024 * 1024,
        max_poll_records: int | None = None,
        check_crcs: bool = True,
        skip_unreadable: bool = False,
        request_timeout: float = 30.0,
        connect_timeout: float = 10.0,
        retry_backoff: float = 0.1,
        retry_backoff_max: float = 1.0,
        metadata_max_age: float = 300.0,
        key_deserializer: SerializerName | Deserializer | None = None,
        value_deserializer: SerializerName | Deserializer | None = None,
        group_id: str | None = None,
        group_instance_id: str | None = None,
        session_timeout: float = 45.0,
        rebalance_timeout: float = 300.0,
        assignor: str = "sticky",
        auto_commit: bool = True,
        auto_commit_interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        cluster: Cluster | None = None,
    ) -> None:
        if max_poll_records is not None and max_poll_records < 1:
            raise ClientUsageError("max_poll_records must be at least 1")
        self._collector = RecordCollector(
            get_deserializer(key_deserializer), get_deserializer(value_deserializer)
        )
        self.max_poll_records = max_poll_records
        self._cluster = cluster or Cluster(
            bootstrap_servers,
            client_id=client_id,
            connect_timeout=connect_timeout,
            request_timeout=request_timeout,
            metadata_max_age=metadata_max_age,
            clock=clock,
        )
        self._assignment = Assignment()
        self._states = self._assignment.states  # shared with the fetcher and the group
        # The records async for took and has not yielded yet (changed only in place).
        self._iterated = self._assignment.held
        self._fetcher = Fetcher(
            self._cluster,
            self._states,
            auto_offset_reset=auto_offset_reset,
            max_wait=fetch_max_wait,
            min_bytes=fetch_min_bytes,
            max_bytes=fetch_max_bytes,
            max_partition_bytes=max_partition_fetch_bytes,
            prefetch_bytes=prefetch_bytes,
            request_timeout=request_timeout,
            retry_backoff=Backoff(retry_backoff, max(retry_backoff, retry_backoff_max)),
            check_crcs=check_crcs,
            skip_unreadable=skip_unreadable,
            clock=clock,
        )
        self._group: GroupSubscription | None = None
        if group_id is not None:
            self._group = GroupSubscription(
                self._cluster,
                self._states,
                self._fetcher,
                group_id=group_id,
                unbuffer=self._assignment.give_back,
                consumed=self._assignment.consumed,
                client_id=client_id,
                instance_id=group_instance_id,
                assignor=assignor,
                session_timeout=session_timeout,
                rebalance_timeout=rebalance_timeout,
                auto_commit=auto_commit,
                auto_commit_interval=auto_commit_interval,
                request_timeout=request_timeout,
                retry_backoff=Backoff(retry_backoff, max(retry_backoff, retry_backoff_max)),
                clock=clock,
            )
        self._started = False
        self._closed = False

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect to the cluster and start prefetching. Raises
        :class:`~tidelog.client.errors.BrokerUnavailableError` if no broker answers."""
        if self._closed:
            raise ClientClosedError("this consumer is closed; create a new one")
        if self._started:
            return
        await self._cluster.start()
        self._fetcher.start()
        self._started = True
        if self._group is not None:
            self._group.start()

    async def close(self) -> None:
        """Stop fetching and close the connections. Iteration ends; other calls raise
        :class:`ClientClosedError`. A group member first gives up its partitions
        (``on_revoked``, auto-commit) and leaves the group (a static member only for a
        session timeout: see :meth:`unsubscribe`).

        ``async with`` calls it however the block ends: by an exception, or the task
        cancelled (as ``asyncio.run`` does on Ctrl-C). If the task is cancelled again while
        this runs, the commit, the leave and the closing of the connections still happen (each
        bounded by its timeout) before the cancellation is raised; an ``on_revoked`` that is
        running is cancelled, and its error is raised after the rest."""
        if self._closed:
            return
        try:
            if self._group is not None and self._started:
                await self._group.close()  # an on_revoked error is raised after the rest
        finally:
            self._closed = True
            self._fetcher.data_ready.set()  # wakes a getmany() waiting for records
            await despite_cancellation(self._close_connections())

    async def _close_connections(self) -> None:
        await self._fetcher.close()
        await self._cluster.close()

    def _check_open(self) -> None:
        if not self._started or self._closed:
            raise ClientClosedError(
                "the consumer is not running: use 'async with Consumer(...)' or await start()"
            )

    # --- assignment and positions ------------------------------------------------------------

    def assign(self, partitions: Iterable[TopicPartition | tuple[str, int]]) -> None:
        """Consume exactly these partitions from now on. Partitions kept from the previous
        assignment keep their positions; new ones start per ``auto_offset_reset`` unless you
        :meth:`seek`."""
        if self._group is not None and self._group.subscribed:
            raise ClientUsageError("this consumer is subscribed to a group: unsubscribe() first")
        wanted = [TopicPartition(*tp) for tp in partitions]
        for tp in wanted:
            if not isinstance(tp.topic, str) or not isinstance(tp.partition, int):
                raise ClientUsageError(f"not a (topic, partition) pair: {tp!r}")
        self._assignment.replace(wanted, self._fetcher.default_reset)
        self._fetcher.wake()

    def assignment(self) -> frozenset[TopicPartition]:
        return frozenset(self._states)

    def seek(self, partition: TopicPartition | tuple[str, int], offset: int) -> None:
        """Make ``offset`` the next record :meth:`getmany` returns for ``partition``. An
        offset outside the log is handled per ``auto_offset_reset`` at the next fetch."""
        if offset < 0:
            raise ClientUsageError("offsets are not negative: use seek_to_beginning/end()")
        self._assignment.seek(partition, offset)
        self._fetcher.wake()

    async def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        """Move to the first offset still in the log (all assigned partitions if none given)."""
        await self._seek_to(partitions, m.OffsetSpec.EARLIEST)

    async def seek_to_end(self, *partitions: TopicPartition) -> None:
        """Move to the end of the log: only records produced from now on are returned."""
        await self._seek_to(partitions, m.OffsetSpec.LATEST)

    async def _seek_to(self, partitions: Sequence[TopicPartition], spec: int) -> None:
        self._check_open()
        states = self._assignment.states_for(partitions)
        self._assignment.give_back(state.tp for state in states)
        await self._fetcher.reset_now(states, spec)

    async def position(self, partition: TopicPartition | tuple[str, int]) -> int:
        """The offset of the next record :meth:`getmany` returns for ``partition``, resolving
        it per ``auto_offset_reset`` if needed (raises :class:`NoOffsetForPartitionError`
        under ``"none"``)."""
        self._check_open()
        state = self._assignment.state(partition)
        if state.position is None:
            if state.reset_to is None:
                raise NoOffsetForPartitionError(
                    f"{state.tp.topic}[{state.tp.partition}] has no position and "
                    "auto_offset_reset='none': seek() first"
                )
            await self._fetcher.resolve_now(state, state.reset_to)
        assert state.position is not None
        return state.position

    def highwater(self, partition: TopicPartition | tuple[str, int]) -> int | None:
        """The partition's high watermark as of the last fetch (``None`` before one): its
        lag is ``highwater - position``."""
        hw = self._assignment.state(partition).high_watermark
        return hw if hw >= 0 else None

    def pause(self, *partitions: TopicPartition) -> None:
        """Stop fetching and returning records of these partitions (positions are kept)."""
        self._assignment.pause(partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        self._assignment.resume(partitions)
        self._fetcher.wake()

    def paused(self) -> frozenset[TopicPartition]:
        return self._assignment.paused()

    async def partitions_for(self, topic: str) -> tuple[int, ...]:
        """The partition ids of ``topic`` (to build an assignment)."""
        self._check_open()
        return await self._cluster.partitions_for(topic)

    # --- groups ------------------------------------------------------------------------------

    def _require_group(self) -> GroupSubscription:
        if self._group is None:
            raise ClientUsageError("this needs a consumer group: create the Consumer with group_id")
        return self._group

    def subscribe(
        self,
        topics: Iterable[str] = (),
        *,
        pattern: str | None = None,
        on_assigned: RebalanceCallback | None = None,
        on_revoked: RebalanceCallback | None = None,
    ) -> None:
        """Consume ``topics`` (and every topic whose whole name matches the regular expression
        ``pattern``) as a member of the consumer's group. The broker assigns the partitions;
        ``on_assigned(partitions)`` and ``on_revoked(partitions)`` (plain or async functions)
        are called from ``getmany()`` / ``async for`` when they change: in ``on_revoked``,
        commit what you processed if you commit by hand. Calling it again changes the
        subscription (a new pattern rejoins the group)."""
        group = self._require_group()
        if isinstance(topics, str):
            topics = [topics]
        names = tuple(dict.fromkeys(topics))
        if not names and not pattern:
            raise ClientUsageError("subscribe to at least one topic or a pattern")
        if any(not isinstance(t, str) or not t for t in names):
            raise ClientUsageError(f"topic names are non-empty strings, not {names!r}")
        if not group.subscribed and self._states:
            raise ClientUsageError("partitions are assign()ed by hand: assign([]) first")
        group.subscribe(names, pattern, on_assigned, on_revoked)
        if self._started and not self._closed:
            group.start()

    async def unsubscribe(self) -> None:
        """Give up every partition (``on_revoked``, auto-commit) and leave the group for good
        (a static member too)."""
        group = self._require_group()
        self._check_open()
        await group.close(permanent=True)

    @property
    def member_id(self) -> str:
        """This consumer's member id in its group ("" while it is not a member)."""
        return self._require_group().membership.member_id

    @property
    def member_epoch(self) -> int:
        """This consumer's member epoch: it goes up with every assignment the broker sends
        (0 while it is not a member)."""
        return self._require_group().membership.epoch

    @property
    def heartbeats(self) -> int:
        """How many of this consumer's joins and heartbeats its group coordinator has answered
        (a count that only goes up; a test can wait on it to know the member got through)."""
        return self._require_group().membership.answered

    async def commit(
        self,
        offsets: Mapping[TopicPartition, int] | None = None,
        *,
        metadata: str = "",
    ) -> None:
        """Commit, for the group, the positions of every owned partition (the next record
        each would return: everything handed out so far counts as processed), or the given
        ``offsets`` (the next offset to consume, per partition). Raises
        :class:`CommitFailedError` if this consumer no longer owns them."""
        self._check_open()
        await self._require_group().commit(offsets, metadata)

    def commit_async(
        self,
        offsets: Mapping[TopicPartition, int] | None = None,
        *,
        metadata: str = "",
    ) -> asyncio.Task[None]:
        """Like :meth:`commit` without waiting: the positions are taken now. Await the task
        to see the outcome; a failure nobody awaits is logged."""
        self._check_open()
        return self._require_group().commit_async(offsets, metadata)

    async def committed(self, partition: TopicPartition | tuple[str, int]) -> int | None:
        """The group's committed offset of ``partition`` (``None`` if nothing is)."""
        self._check_open()
        tp = TopicPartition(*partition)
        found = await self._require_group().committed([tp])
        value: OffsetAndMetadata | None = found.get(tp)
        return None if value is None else value.offset

    def lag(self, partition: TopicPartition | tuple[str, int]) -> int | None:
        """How many records of ``partition`` are behind this consumer's position: the high
        watermark of the last fetch minus the position (``None`` before both are known)."""
        state = self._assignment.state(partition)
        if state.position is None or state.high_watermark < 0:
            return None
        return max(0, state.high_watermark - self._assignment.consumed([state.tp])[state.tp])

    async def _group_turn(self) -> None:
        group = self._group
        if group is None:
            return
        group.check()
        if group.pending:
            await group.reconcile()
        group.maybe_auto_commit()

    # --- reading -----------------------------------------------------------------------------

    async def getmany(
        self,
        *partitions: TopicPartition,
        timeout: float = 0.0,  # noqa: ASYNC109
        max_records: int | None = None,
    ) -> dict[TopicPartition, list[AnyRecord]]:
        """The records available now from ``partitions`` (all assigned, unpaused ones if none
        given), waiting up to ``timeout`` seconds for some; ``{}`` if none came. At most
        ``max_records`` (default ``max_poll_records``, else no limit) in all.

        Raises the error of a partition that has no records to return: the broker's (e.g.
        ``OffsetOutOfRangeError`` under ``auto_offset_reset="none"``),
        :class:`NoOffsetForPartitionError`, ``CorruptBatchError`` or
        :class:`RecordDeserializationError`; it repeats until you ``seek()``.
        """
        self._check_open()
        limit = max_records or self.max_poll_records or 2**62
        collect = self._collector.collect
        return await self._poll(partitions, timeout, lambda states: collect(states, limit)) or {}

    async def getbatch(
        self,
        *partitions: TopicPartition,
        timeout: float = 0.0,  # noqa: ASYNC109
    ) -> ConsumerBatch | None:
        """The next fetched batch of one of ``partitions`` (all assigned, unpaused ones if
        none given; in rotation), from the partition's position on, waiting up to ``timeout``
        seconds for one; ``None`` if none came. The batch counts as consumed once returned:
        the position (what :meth:`commit` and auto-commit store) moves past it, and past any
        offsets the log cleaner removed from it.

        Raises what :meth:`getmany` raises (but deserialization errors: those come from the
        batch's ``keys`` / ``values``). Records ``async for`` or :meth:`getmany` took and did
        not hand out come first, as a batch."""
        self._check_open()
        if self._iterated:
            self._assignment.give_back(self._states)  # held by async for: hand them out here
        return await self._poll(partitions, timeout, self._collector.take_batch)

    async def batches(self, *partitions: TopicPartition) -> AsyncIterator[ConsumerBatch]:
        """``async for batch in consumer.batches()``: every fetched batch as a
        :class:`ConsumerBatch` (``len()``, ``offsets``, ``keys``, ``values``, ...: columns
        decoded when read), waiting for more; ends when the consumer closes. Each batch counts
        as consumed when it is handed out (see :meth:`getbatch`)."""
        while not self._closed:
            try:
                batch = await self.getbatch(*partitions, timeout=3600.0)
            except ClientClosedError:
                return
            if batch is not None:
                yield batch

    async def _poll(
        self,
        partitions: Sequence[TopicPartition],
        timeout: float,  # noqa: ASYNC109
        take: Callable[[list[PartitionState]], T],
    ) -> T | None:
        """``take(states)`` once it gives something (``None`` after ``timeout`` seconds),
        raising the error of a partition with nothing to give."""
        ready = self._fetcher.data_ready
        deadline: float | None = None
        while True:
            ready.clear()
            await self._group_turn()
            states = self._assignment.states_for(partitions)
            for state in states:
                if state.error is not None and not state.paused and not has_data(state):
                    raise state.error
            out = take(states)
            if out:
                self._fetcher.wake()
                return out
            loop_now = time.monotonic()
            if deadline is None:
                deadline = loop_now + timeout
            remaining = deadline - loop_now
            if remaining <= 0:
                return None
            due = self._group.auto_commit_due_in() if self._group is not None else None
            await ready.wait(remaining if due is None else min(remaining, max(due, 0.001)))
            self._check_open()

    async def getone(self, *partitions: TopicPartition) -> AnyRecord:
        """The next record from ``partitions`` (all assigned if none given), waiting for it."""
        while True:
            batch = await self.getmany(*partitions, timeout=3600.0, max_records=1)
            for records in batch.values():
                return records[0]

    def __aiter__(self) -> Consumer:
        return self

    async def __anext__(self) -> AnyRecord:
        group = self._group
        if group is not None and group.pending and not self._closed:
            await self._group_turn()  # between two records the application finished with
        while not self._iterated:
            if self._closed:
                raise StopAsyncIteration
            try:
                batch = await self.getmany(
                    timeout=3600.0, max_records=self.max_poll_records or ITERATION_CHUNK
                )
            except ClientClosedError:
                raise StopAsyncIteration from None
            for records in batch.values():
                self._iterated.extend(records)
        return self._iterated.popleft()
