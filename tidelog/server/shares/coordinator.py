"""The share coordinator: share groups (queues) over the partition logs, their state durable
in ``__share_group_state`` (docs/QUEUES.md).

**Stored before told.** Every change to a share-partition (an acquisition, an ack, a release,
an expiry) appends what changed (a record per changed offset and the partition's start and
end, records.py) as one batch in the same turn of the loop, and the answer that tells of it
waits until that batch is fsynced: an acquired record is never delivered before its delivery
count is durable, an ack is never confirmed before it is. A restarted broker resumes every
partition with its counts and releases what was acquired.

One background loop (every ``tick_ms``) expires locks and dead-letters what is bound for the
dead-letter topic. Time for locks and delays is the injected ``clock`` (monotonic ms).

**In a cluster** a share group is coordinated by the leader of its ``__share_group_state``
partition (clients find it with FindCoordinator, key type 2, as in KIP-932): the coordinator
loads a partition's groups when it gains the leadership and forgets them when it loses it
(:meth:`follow`), writes their state through the replication path (answered once every in-sync
replica has it), and reads the queue's records from its own replica of the topic, up to that
replica's high watermark. Requests for groups it does not coordinate get NOT_COORDINATOR.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Final

from tidelog.server.log import PartitionLog, TopicPartition
from tidelog.wire import share_messages as sm
from tidelog.wire.batch_format import BatchAttributes, Record
from tidelog.wire.errors import (
    BrokerError,
    BrokerShuttingDownError,
    CoordinatorLoadInProgressError,
    CoordinatorNotAvailableError,
    GroupIdNotFoundError,
    InvalidRequestError,
    NotCoordinatorError,
    StorageError,
    UnknownTopicOrPartitionError,
    UnreadableRangeError,
)
from tidelog.wire.records import iter_batches, now_ms

from ..core.state import CoreState, is_internal
from ..core.types import Session
from ..groups.coordinator import monotonic_ms, validate_group_id
from .deadletter import dead_letter_headers, find_record, write_dead_letters
from .group import ShareGroup, check_backlog, describe_group
from .partition import RecordState, SharePartition
from .records import (
    SHARE_STATE_TOPIC,
    ShareRecordError,
    changed_rows,
    decode_partition,
    decode_settings,
    encode_settings,
    settings_key,
    sort_rows,
)
from .settings import ShareSettings
from .store import ShareStore

logger = logging.getLogger("tidelog.server.shares")

TICK_MS: Final = 50
MAX_FETCH_RECORDS: Final = 10_000
MAX_MEMBER_ID_LENGTH: Final = 255


class ShareCoordinator:
    def __init__(
        self,
        state: CoreState,
        *,
        clock: Callable[[], int] = monotonic_ms,
        wall: Callable[[], int] = now_ms,
        tick_ms: int = TICK_MS,
    ) -> None:
        self._state = state
        self.clock = clock
        self._wall = wall
        self._tick_ms = tick_ms
        self.groups: dict[str, ShareGroup] = {}
        self._store = ShareStore(state.manager)
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.clustered = False
        """In a cluster: only the groups of the loaded partitions are served (see the
        module); on a single broker, every group."""
        self._loaded: set[int] = set()
        self._loading: dict[int, asyncio.Task[None]] = {}
        self._failed: dict[int, str] = {}

    # --- lifecycle --------------------------------------------------------------------------

    async def open(self) -> None:
        """Resume every group from ``__share_group_state`` (a single broker: created on first
        use, so a broker without queues has no such topic)."""
        store = self._store
        if not store.exists():
            return
        store.ensure_topic()
        for partition in range(store.partitions):
            await self._load(partition)
            if partition in self._failed:
                raise StorageError(self._failed[partition])

    async def start(self, *, load: bool = True) -> None:
        """Resume the groups (``load``; in a cluster :meth:`follow` loads them instead) and
        start the housekeeping loop."""
        if load:
            await self.open()
        self._task = asyncio.create_task(self._run(), name="share-coordinator")

    async def _load(self, partition: int) -> None:
        """Take over the groups stored in ``partition``."""
        store = self._store
        try:
            rows = await store.read(partition)
            stored = sort_rows(rows)
            groups: dict[str, ShareGroup] = {}
            for group_id, value in stored.settings.items():
                groups.setdefault(group_id, ShareGroup(group_id)).settings = decode_settings(value)
            for (group_id, tp), records in stored.partitions.items():
                group = groups.setdefault(group_id, ShareGroup(group_id))
                group.partitions[tp] = decode_partition(records, group.settings)
        except (ShareRecordError, BrokerError, ValueError, OSError) as exc:
            self._failed[partition] = f"{SHARE_STATE_TOPIC}-{partition}: {exc}"
            logger.error("could not load %s", self._failed[partition])
            return
        finally:
            self._loading.pop(partition, None)
        self.groups.update(groups)
        self._loaded.add(partition)
        self._limits_changed()
        if groups:
            logger.info(
                "resumed %d share group(s) from %s-%d", len(groups), SHARE_STATE_TOPIC, partition
            )

    def follow(self, partitions: int, led: set[int]) -> None:
        """In a cluster: ``__share_group_state`` has ``partitions`` partitions and this
        broker leads ``led``. Load the ones newly led (a failed load is tried again), forget
        the groups of the ones another broker leads now."""
        self.clustered = True
        self._store.partitions = partitions
        held = self._loaded | set(self._loading)
        for partition in sorted(led - held):
            self._failed.pop(partition, None)
            self._loading[partition] = asyncio.create_task(
                self._load(partition), name=f"load-share-state-{partition}"
            )
        for partition in sorted(held - led):
            task = self._loading.pop(partition, None)
            if task is not None:
                task.cancel()
            self._loaded.discard(partition)
            for group_id in [g for g in self.groups if self._store.partition_for(g) == partition]:
                self.groups.pop(group_id).wake()  # its long polls answer NOT_COORDINATOR
        self._limits_changed()

    def _check(self, group_id: str) -> None:
        """Raise unless this broker coordinates ``group_id`` now."""
        validate_group_id(group_id)
        if not self.clustered:
            return
        partition = self._store.partition_for(group_id)
        if partition in self._loaded:
            return
        where = f"share group {group_id!r} ({SHARE_STATE_TOPIC}-{partition})"
        if partition in self._loading:
            raise CoordinatorLoadInProgressError(f"loading the state of {where}")
        if partition in self._failed:
            raise CoordinatorNotAvailableError(
                f"{where} could not be loaded: {self._failed[partition]}"
            )
        raise NotCoordinatorError(f"this broker does not coordinate {where}")

    def _data_log(self, tp: TopicPartition) -> PartitionLog:
        """The log a queue's records are read from: the partition's (leader's) on a single
        broker; this broker's replica in a cluster (see the module)."""
        cluster = self._state.cluster
        if cluster is None:
            return self._state.log(tp.topic, tp.partition)
        cluster.check_replica(tp.topic, tp.partition)
        return self._state.manager.get_log(tp)

    def begin_shutdown(self) -> None:
        self._closing = True
        for group in self.groups.values():
            group.wake()

    async def stop(self) -> None:
        self.begin_shutdown()
        self._state.produce_guard = None
        tasks = [t for t in (self._task, *self._loading.values()) if t is not None]
        self._task = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._tick_ms / 1000)
            try:
                await self.tick()
            except BrokerError as exc:
                logger.error("share coordinator housekeeping failed: %s", exc)
            except Exception:
                logger.exception("share coordinator housekeeping failed unexpectedly")

    async def tick(self) -> None:
        """Expire locks (stored), then dead-letter what is bound for it."""
        now = self.clock()
        for group in list(self.groups.values()):
            changed = [tp for tp, sp in group.partitions.items() if sp.expire(now, group.settings)]
            if changed:
                group.wake()
                await self._persist(group, changed)
            await self.dead_letter(group)

    # --- groups and storage -----------------------------------------------------------------

    def _group(self, group_id: str) -> ShareGroup:
        group = self.groups.get(group_id)
        if group is None:
            group = self.groups[group_id] = ShareGroup(group_id)
        return group

    def _known(self, group_id: str) -> ShareGroup:
        self._check(group_id)
        group = self.groups.get(group_id)
        if group is None:
            raise GroupIdNotFoundError(f"no share group {group_id!r}")
        return group

    @property
    def store(self) -> ShareStore:
        if self._closing:
            raise BrokerShuttingDownError("the share coordinator is not running")
        if not self.clustered:  # a lone broker holds every partition, created on first use
            self._store.ensure_topic()
            self._loaded.update(range(self._store.partitions))
        return self._store

    async def _persist(self, group: ShareGroup, tps: list[TopicPartition]) -> None:
        """Append what changed in the partitions now, as one batch; return once fsynced."""
        if not tps:
            return
        store = self.store
        partition = store.partition_for(group.group_id)
        dirty = [(tp, group.partitions[tp].take_dirty()) for tp in tps]
        rows = [
            row
            for tp, offsets in dirty
            for row in changed_rows(group.group_id, tp, group.partitions[tp], offsets)
        ]
        try:
            await store.write(partition, rows)  # one batch with the other changes of the turn
        except BaseException:
            # still to store, or stored but not known durable: the next change writes them
            # (again: a row holds the whole state of its offset, so twice is harmless)
            for tp, offsets in dirty:
                group.partitions[tp].dirty.update(offsets)
            raise

    # --- the backlog limit ------------------------------------------------------------------

    def _limits_changed(self) -> None:
        """Produce checks queues only while some group has a backlog limit."""
        limited = any(g.settings.max_backlog_records for g in self.groups.values())
        self._state.produce_guard = self.admit if limited else None

    def admit(self, topic: str) -> None:
        """The produce guard: raises :class:`QueueFullError` for a full queue on ``topic``."""
        check_backlog(self.groups.values(), topic, self._state.manager)

    # --- ShareFetch -------------------------------------------------------------------------

    async def fetch(self, request: sm.ShareFetchRequest, session: Session) -> sm.ShareFetchResponse:
        try:
            self._check(request.group_id)
            member = request.member_id
            if not member or len(member) > MAX_MEMBER_ID_LENGTH:
                raise InvalidRequestError("a member id is 1 to 255 characters")
            if not 1 <= request.max_records <= MAX_FETCH_RECORDS:
                raise InvalidRequestError(f"max_records is 1 to {MAX_FETCH_RECORDS}")
            tps = self._partitions(request.topics)
            group = self._group(request.group_id)
            group.members[member] = self.clock()
            session.on_close(
                ("share", group.group_id, member),
                lambda: self._member_gone(group.group_id, member),
            )
            records = await self._acquire_waiting(group, member, tps, request)
        except BrokerError as exc:
            return sm.ShareFetchResponse(int(exc.code), exc.message)
        return sm.ShareFetchResponse(
            records=tuple(records), lock_duration_ms=group.settings.lock_duration_ms
        )

    def _partitions(self, topics: tuple[str, ...]) -> list[TopicPartition]:
        if not topics:
            raise InvalidRequestError("a share fetch names at least one topic")
        out: list[TopicPartition] = []
        for topic in dict.fromkeys(topics):
            count = self._state.partition_count(topic)
            if count is None:
                raise UnknownTopicOrPartitionError(f"topic {topic!r} does not exist")
            if is_internal(topic):
                raise InvalidRequestError(f"{topic} is internal: not a queue")
            out.extend(TopicPartition(topic, p) for p in range(count))
        return out

    async def _acquire_waiting(
        self,
        group: ShareGroup,
        member: str,
        tps: list[TopicPartition],
        request: sm.ShareFetchRequest,
    ) -> list[sm.ShareRecord]:
        clock = self._state.clock
        deadline = clock.monotonic() + max(request.max_wait_ms, 0) / 1000
        while True:
            if self.groups.get(group.group_id) is not group:
                raise NotCoordinatorError(f"share group {group.group_id!r} moved to another broker")
            records, changed = self._acquire(group, member, tps, request)
            if changed:
                await self._persist(group, changed)  # stored before delivered
            if records or self._closing:
                return records
            remaining = deadline - clock.monotonic()
            if remaining <= 0:
                return records
            with self._state.notifier.watch(tps) as future:
                group.waiters.add(future)
                try:
                    await clock.wait(future, min(remaining, self._next_ready(group) / 1000))
                finally:
                    group.waiters.discard(future)

    def _next_ready(self, group: ShareGroup) -> float:
        """ms until the next delayed record or lock expiry (a long poll wakes for it)."""
        now = self.clock()
        times = [
            (r.available_at if r.state is RecordState.AVAILABLE else r.lock_until) - now
            for sp in group.partitions.values()
            for r in sp.records.values()
            if r.state is not RecordState.ARCHIVING
        ]
        return max(min(times, default=3_600_000), 1)

    def _acquire(
        self,
        group: ShareGroup,
        member: str,
        tps: list[TopicPartition],
        request: sm.ShareFetchRequest,
    ) -> tuple[list[sm.ShareRecord], list[TopicPartition]]:
        """Acquire records round the partitions (a new start each fetch, for fairness)."""
        now, wall = self.clock(), self._wall()
        out: list[sm.ShareRecord] = []
        changed: list[TopicPartition] = []
        budget = [request.max_bytes]
        group.rotation += 1
        order = tps[group.rotation % len(tps) :] + tps[: group.rotation % len(tps)]
        for tp in order:
            if len(out) >= request.max_records or budget[0] <= 0:
                break
            before = len(out)
            if (
                self._acquire_partition(
                    group, member, tp, request.max_records - len(out), out, budget, now, wall
                )
                or len(out) > before
            ):
                changed.append(tp)
        return out, changed

    def _acquire_partition(
        self,
        group: ShareGroup,
        member: str,
        tp: TopicPartition,
        limit: int,
        out: list[sm.ShareRecord],
        budget: list[int],
        now: int,
        wall: int,
    ) -> bool:
        """Acquire up to ``limit`` records of ``tp`` into ``out``; whether the state changed."""
        settings = group.settings
        plog = self._data_log(tp)
        sp = group.partitions.get(tp)
        created = sp is None
        if sp is None:
            first = plog.log_start_offset if settings.start == "earliest" else plog.high_watermark
            sp = group.partitions[tp] = SharePartition(first)
        changed = created or sp.expire(now, settings) > 0
        if plog.log_start_offset > sp.start:
            sp.skip_to(plog.log_start_offset)
            changed = True
        lock = settings.lock_duration_ms
        taken = 0
        for offset in sp.redeliverable(now, limit):
            record = find_record(plog, offset)
            if record is None:
                sp.forget(offset)
                changed = True
                continue
            entry = sp.acquire(offset, member, now, wall, lock)
            out.append(_share_record(tp, record, entry.delivery_count))
            budget[0] -= _size(record)
            taken += 1
            changed = True
        hw = plog.high_watermark
        while taken < limit and budget[0] > 0 and sp.room(settings) > 0 and sp.end < hw:
            try:
                read = plog.read(sp.end, budget[0], max_offset=hw)
            except UnreadableRangeError as exc:
                logger.error(
                    "share group %s skips %s-%d: %s", group.group_id, tp.topic, tp.partition, exc
                )
                sp.extend_to(exc.next_offset)
                changed = True
                continue
            if read.size == 0:
                break
            for batch in iter_batches(read.records):
                control = batch.attributes & BatchAttributes.CONTROL
                # decode only what can be taken, plus one to tell that the batch goes on: a
                # fetch of 100 records from a batch of thousands decodes 101 of them
                want = min(limit - taken, sp.room(settings)) + 1
                records = [] if control else batch.records_as(Record, (), sp.end, want)
                for record in records:
                    if taken >= limit or budget[0] <= 0 or sp.room(settings) <= 0:
                        return True
                    entry = sp.acquire(record.offset, member, now, wall, lock)
                    out.append(_share_record(tp, record, entry.delivery_count))
                    budget[0] -= _size(record)
                    taken += 1
                sp.extend_to(batch.next_offset)  # past compacted gaps and control batches
                changed = True
        return changed

    # --- ShareAcknowledge -------------------------------------------------------------------

    async def acknowledge(self, request: sm.ShareAcknowledgeRequest) -> sm.ShareAcknowledgeResponse:
        try:
            group = self._known(request.group_id)
        except BrokerError as exc:
            return sm.ShareAcknowledgeResponse(int(exc.code), exc.message)
        now, wall = self.clock(), self._wall()
        member = request.member_id
        if member in group.members:
            group.members[member] = now
        settings = group.settings
        failed: list[sm.ShareAckResult] = []
        changed: set[TopicPartition] = set()
        released = False
        for ack in request.acknowledgements:
            tp = TopicPartition(ack.topic, ack.partition)
            sp = group.partitions.get(tp)
            try:
                if sp is None:
                    raise InvalidRequestError(f"group {group.group_id!r} never read {tp}")
                match ack.type:
                    case sm.AckType.ACCEPT:
                        entry = sp.accept(ack.offset, member, now)
                        if entry.first_delivery >= 0:
                            spent = max(wall - entry.last_delivery, 0)
                            group.handled += 1
                            group.handling_ms_total += spent
                            group.handling_ms_max = max(group.handling_ms_max, spent)
                    case sm.AckType.RELEASE:
                        sp.release(ack.offset, member, now, settings, ack.delay_ms, ack.error)
                        released = True
                    case sm.AckType.REJECT:
                        sp.reject(ack.offset, member, now, ack.error)
                    case sm.AckType.RENEW:
                        sp.renew(ack.offset, member, now, settings.lock_duration_ms)
                    case _:
                        raise InvalidRequestError(f"unknown acknowledgement type {ack.type}")
            except BrokerError as exc:
                failed.append(
                    sm.ShareAckResult(
                        ack.topic, ack.partition, ack.offset, int(exc.code), exc.message
                    )
                )
                continue
            changed.add(tp)
        if request.leave:
            group.members.pop(member, None)
            for tp, sp in group.partitions.items():
                if sp.release_member(member, now, settings):
                    changed.add(tp)
                    released = True
        if released:
            group.wake()
        try:
            await self._persist(group, sorted(changed))
            await self.dead_letter(group)
        except BrokerError as exc:
            return sm.ShareAcknowledgeResponse(int(exc.code), exc.message, tuple(failed))
        return sm.ShareAcknowledgeResponse(failed=tuple(failed))

    def _member_gone(self, group_id: str, member: str) -> None:
        """The member's connection closed: what it holds is available again (stored by the
        next tick, which also dead-letters what used its last attempt)."""
        group = self.groups.get(group_id)
        if group is None or self._closing:
            return
        group.members.pop(member, None)
        now = self.clock()
        if any(sp.release_member(member, now, group.settings) for sp in group.partitions.values()):
            group.wake()
            task = asyncio.ensure_future(self._persist(group, list(group.partitions)))
            task.add_done_callback(_log_failure)

    # --- dead letters -----------------------------------------------------------------------

    async def dead_letter(self, group: ShareGroup) -> None:
        """Write every record bound for the dead-letter topic there (durably), then archive it
        and store that. Raises the write's :class:`BrokerError` (retried next tick)."""
        async with group.dlq_lock:
            for tp, sp in list(group.partitions.items()):
                offsets = sp.dead_lettering()
                if not offsets:
                    continue
                plog = self._state.manager.get_log(tp)
                rows = []
                for offset in offsets:
                    record = find_record(plog, offset)
                    if record is None:
                        logger.error(
                            "%s offset %d is gone from the log: not dead-lettered", tp, offset
                        )
                        continue
                    headers = dead_letter_headers(
                        record, group.group_id, tp, offset, sp.records[offset]
                    )
                    rows.append((record, headers))
                if rows:
                    await write_dead_letters(
                        self._state, group.settings.dead_letter_for(tp.topic), tp, rows
                    )
                for offset in offsets:
                    sp.archived(offset)
                await self._persist(group, [tp])

    # --- settings and status ----------------------------------------------------------------

    async def alter(self, request: sm.AlterShareGroupRequest) -> sm.AlterShareGroupResponse:
        try:
            self._check(request.group_id)
            group = self.groups.get(request.group_id)
            current = group.settings if group is not None else ShareSettings()
            settings = current.altered(request.configs)
            store = self.store
            partition = store.partition_for(request.group_id)
            end = store.append(
                partition, [(settings_key(request.group_id), encode_settings(settings))]
            )
            self._group(request.group_id).settings = settings
            self._limits_changed()
            await store.durable(partition, end)
        except BrokerError as exc:
            return sm.AlterShareGroupResponse(int(exc.code), exc.message)
        return sm.AlterShareGroupResponse()

    def describe(self, request: sm.DescribeShareGroupRequest) -> sm.DescribeShareGroupResponse:
        try:
            group = self._known(request.group_id)
        except BrokerError as exc:
            return sm.DescribeShareGroupResponse(int(exc.code), exc.message)
        return describe_group(group, self._state.manager, self.clock())

    async def handle(self, request: sm.ShareRequest, session: Session) -> sm.ShareResponse:
        if self._closing:
            raise BrokerShuttingDownError()
        match request:
            case sm.ShareFetchRequest():
                return await self.fetch(request, session)
            case sm.ShareAcknowledgeRequest():
                return await self.acknowledge(request)
            case sm.AlterShareGroupRequest():
                return await self.alter(request)
            case sm.DescribeShareGroupRequest():
                return self.describe(request)


def _share_record(tp: TopicPartition, record: Record, count: int) -> sm.ShareRecord:
    return sm.ShareRecord(
        tp.topic,
        tp.partition,
        record.offset,
        record.timestamp,
        None if record.key is None else bytes(record.key),
        None if record.value is None else bytes(record.value),
        tuple(record.headers),
        count,
    )


def _size(record: Record) -> int:
    key, value = record.key, record.value
    return 32 + (len(key) if key else 0) + (len(value) if value else 0)


def _log_failure(task: asyncio.Future[None]) -> None:
    with contextlib.suppress(asyncio.CancelledError):
        exc = task.exception()
        if exc is not None:
            logger.error("could not store a share-group release: %s", exc)
