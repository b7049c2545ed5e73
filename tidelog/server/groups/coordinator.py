"""The group coordinator: the asyncio edge around the pure :class:`ConsumerGroup` state
machines and the internal topic ``__consumer_offsets`` (:class:`GroupStore`).

It serves the group APIs and runs one background loop (session and rebalance timeouts, topic
changes, every ``tick_ms``). It coordinates the groups of the partitions of
``__consumer_offsets`` it has loaded (:meth:`GroupCoordinator.load_partition`; on a single
broker: all of them, from the start); a group of a partition still loading gets
``COORDINATOR_LOAD_IN_PROGRESS``, of a partition it does not own ``NOT_COORDINATOR``.

**Stored before told.** A group's whole state is appended to the topic in the same turn of the
loop as the change, and every answer to the group's members waits until the group's last
record is fsynced. So whatever a member was told (an epoch, an assignment), the stored state
already says so, and a restarted coordinator never tells an epoch again with another
assignment, nor gives a partition a member still holds.

**Held heartbeats.** A heartbeat whose answer would not change the member's assignment is
held until it would (another member joined, left, died or released a partition), or until one
heartbeat interval has passed; the member sends its next heartbeat as soon as it has the
answer. So an assignment change reaches every member one round trip after the broker makes
it, not at each member's next heartbeat. A member with partitions to give up is answered at
once: it is about to heartbeat again to release them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Mapping
from typing import Final

from tidelog.server.config import BrokerConfig
from tidelog.server.log import LogManager, TopicPartition
from tidelog.wire import messages as m
from tidelog.wire.errors import (
    BrokerError,
    BrokerShuttingDownError,
    CoordinatorLoadInProgressError,
    CoordinatorNotAvailableError,
    ErrorCode,
    FencedMemberEpochError,
    GroupIdNotFoundError,
    InvalidCommitOffsetError,
    InvalidGroupIdError,
    NonEmptyGroupError,
    NotCoordinatorError,
    OffsetMetadataTooLargeError,
    StorageError,
    UnknownMemberIdError,
    UnknownTopicOrPartitionError,
)
from tidelog.wire.records import now_ms

from .group import ConsumerGroup, GroupSettings, GroupState, Removal
from .groupstate import resume_group
from .migration import legacy_pending, migrate_legacy
from .recorder import GroupRecorder
from .records import group_key
from .store import GroupStore, OffsetValue

logger = logging.getLogger("tidelog.server.groups")

MAX_GROUP_ID_LENGTH: Final = 255
TICK_MS: Final = 50
"""How often the background loop checks timeouts and topics."""
OFFSETS_PARTITIONS: Final = 8
"""Default partition count of ``__consumer_offsets`` (BrokerConfig ``offsets_topic_partitions``)."""
OFFSETS_SEGMENT_BYTES: Final = 16 * 1024 * 1024

GroupRequest = (
    m.JoinGroupRequest
    | m.HeartbeatRequest
    | m.LeaveGroupRequest
    | m.OffsetCommitRequest
    | m.OffsetFetchRequest
    | m.ListGroupsRequest
    | m.DescribeGroupsRequest
    | m.DeleteGroupsRequest
)


def monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000


def validate_group_id(group_id: str) -> str:
    if not group_id or len(group_id) > MAX_GROUP_ID_LENGTH or not group_id.isprintable():
        raise InvalidGroupIdError(
            f"a group id is 1 to {MAX_GROUP_ID_LENGTH} printable characters, not {group_id!r}"
        )
    return group_id


class GroupCoordinator:
    """The consumer groups of the loaded partitions of ``__consumer_offsets``, and their
    committed offsets."""

    def __init__(
        self,
        logs: LogManager,
        data_dir: str,
        *,
        settings: GroupSettings | None = None,
        metadata_max_bytes: int = 4096,
        clock: Callable[[], int] = monotonic_ms,
        tick_ms: int = TICK_MS,
        partitions: int = OFFSETS_PARTITIONS,
        segment_bytes: int = OFFSETS_SEGMENT_BYTES,
    ) -> None:
        self._logs = logs
        self._data_dir = data_dir
        self.topic_counts: Callable[[], dict[str, int]] | None = None
        """Every topic's partition count; in a cluster the cluster's (a coordinator need not
        hold a topic's logs to assign its partitions). Default: the local logs."""
        self.settings = settings or GroupSettings()
        self.offsets = GroupStore(logs, partitions=partitions, segment_bytes=segment_bytes)
        self.metadata_max_bytes = metadata_max_bytes
        self._clock = clock
        self._tick_ms = tick_ms
        self._groups: dict[str, ConsumerGroup] = {}
        self._events: dict[str, asyncio.Event] = {}
        self._topics: dict[str, int] = {}
        self._loaded: set[int] = set()
        self._loading: dict[int, asyncio.Task[None]] = {}
        self._failed: dict[int, str] = {}
        self._recorder = GroupRecorder(self.offsets, self._groups)
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    @classmethod
    def from_config(cls, config: BrokerConfig, logs: LogManager) -> GroupCoordinator:
        """The coordinator a broker with ``config`` runs."""
        settings = GroupSettings(
            heartbeat_interval_ms=config.group_heartbeat_interval_ms,
            min_session_timeout_ms=config.group_min_session_timeout_ms,
            max_session_timeout_ms=config.group_max_session_timeout_ms,
            max_size=config.group_max_size,
        )
        return cls(
            logs,
            logs.data_dir,
            settings=settings,
            metadata_max_bytes=config.offset_metadata_max_bytes,
            partitions=config.offsets_topic_partitions,
            segment_bytes=config.offsets_topic_segment_bytes,
        )

    # --- lifecycle --------------------------------------------------------------------------

    async def open(self, *, wait: bool = True, load: bool = True) -> None:
        """Create ``__consumer_offsets`` if missing, migrate the old offsets store if there is
        one (waiting for every partition to load first), and load every partition: before
        returning if ``wait``, else in the background (group requests meanwhile get
        COORDINATOR_LOAD_IN_PROGRESS). No background loop: :meth:`start` adds it.

        Without ``load`` (a broker in a cluster) nothing is created or loaded here: the
        cluster creates the topic and :meth:`follow` says which partitions this broker leads."""
        if not load:
            return
        self.offsets.ensure_topic()
        self._topics = self._read_topics()
        tasks = [self.load_partition(p) for p in range(self.offsets.partitions)]
        migrate = legacy_pending(self._data_dir)
        if wait or migrate:
            await asyncio.gather(*tasks)
            failed = sorted(self._failed)
            if failed:
                raise StorageError(
                    f"could not load __consumer_offsets partition(s) {failed}: "
                    + "; ".join(self._failed[p] for p in failed)
                )
        if migrate:
            await migrate_legacy(self._data_dir, self.offsets)

    async def start(self, *, load: bool = True) -> None:
        """:meth:`open` (every partition loaded before the broker listens: a single broker
        leads them all from its start) and the background loop."""
        await self.open(load=load)
        self._task = asyncio.create_task(self._run(), name="group-coordinator")

    def begin_shutdown(self) -> None:
        """Answer held heartbeats now."""
        self._closing = True
        for event in self._events.values():
            event.set()
        self._events.clear()

    async def stop(self) -> None:
        """Stop the loop and the loads; store what the last tick changed."""
        self.begin_shutdown()
        task, self._task = self._task, None
        tasks = [t for t in (task, *self._loading.values()) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        try:
            await self._recorder.write_changed(self._loaded)
        except StorageError as exc:
            logger.error("could not store group state at shutdown: %s", exc)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._tick_ms / 1000)
            try:
                self.tick()
                await self._recorder.write_changed(self._loaded)
            except StorageError as exc:
                logger.error("group coordinator housekeeping failed: %s", exc)
            except Exception:
                # A bug, not a disk error: say so loudly, and keep session timeouts enforced
                # rather than let them stop silently while the broker serves on.
                logger.exception("group coordinator housekeeping failed unexpectedly")

    # --- partitions of __consumer_offsets ---------------------------------------------------

    def load_partition(self, partition: int) -> asyncio.Task[None]:
        """Become the coordinator of the groups in ``partition``: read it and resume every
        group in it with its epochs and assignments (what a broker does when it becomes the
        partition's leader). Requests for those groups get COORDINATOR_LOAD_IN_PROGRESS
        until it is done."""
        task = self._loading.get(partition)
        if task is None:
            self._failed.pop(partition, None)
            task = asyncio.create_task(self._load(partition), name=f"load-offsets-{partition}")
            self._loading[partition] = task
        return task

    async def _load(self, partition: int) -> None:
        try:
            loaded = await self.offsets.read(partition)
        except (StorageError, OSError) as exc:
            self._failed[partition] = str(exc)
            logger.error("could not load __consumer_offsets-%d: %s", partition, exc)
            return
        finally:
            self._loading.pop(partition, None)
        now = self._clock()
        topics = self._read_topics()
        for group_id, record in loaded.groups.items():
            if not record.members:
                continue
            group = resume_group(group_id, record, self.settings, now=now, topics=topics)
            self._groups[group_id] = group
            self._recorder.resumed(group)
        self.offsets.adopt(loaded.offsets)
        self._loaded.add(partition)
        logger.info(
            "loaded __consumer_offsets-%d: %d record(s), %d group(s) resumed, committed offsets "
            "of %d group(s)",
            partition,
            loaded.records,
            sum(1 for r in loaded.groups.values() if r.members),
            len(loaded.offsets),
        )

    def follow(self, partitions: int, led: Collection[int]) -> None:
        """In a cluster: ``__consumer_offsets`` has ``partitions`` partitions and this broker
        leads ``led``. Load the ones newly led (a failed load is tried again), unload the
        ones another broker leads now."""
        self.offsets.partitions = partitions
        held = self._loaded | set(self._loading)
        for partition in sorted(set(led) - held):
            self.load_partition(partition)
        for partition in sorted(held - set(led)):
            self.unload_partition(partition)

    def unload_partition(self, partition: int) -> None:
        """Stop coordinating the groups in ``partition`` (another broker leads it now): they
        are forgotten here, their held heartbeats answered."""
        task = self._loading.pop(partition, None)
        if task is not None:
            task.cancel()
        self._loaded.discard(partition)
        for group_id in [g for g in self._groups if self.offsets.partition_for(g) == partition]:
            del self._groups[group_id]
            self._recorder.forget(group_id)
            self._notify(group_id)
        self.offsets.forget(partition)

    def _check(self, group_id: str) -> int:
        """The group's partition, if this coordinator serves it now; raises otherwise."""
        validate_group_id(group_id)
        partition = self.offsets.partition_for(group_id)
        if partition in self._loaded:
            return partition
        if partition in self._loading:
            raise CoordinatorLoadInProgressError(
                f"loading the state of group {group_id!r} (__consumer_offsets-{partition})"
            )
        if partition in self._failed:
            raise CoordinatorNotAvailableError(
                f"__consumer_offsets-{partition} could not be loaded: {self._failed[partition]}"
            )
        raise NotCoordinatorError(f"this broker does not coordinate group {group_id!r}")

    def tick(self) -> list[tuple[str, Removal]]:
        """One round of housekeeping: remove timed-out members, follow topic changes."""
        now = self._clock()
        topics = self._read_topics()
        topics_changed = topics != self._topics
        self._topics = topics
        removed: list[tuple[str, Removal]] = []
        for group_id, group in list(self._groups.items()):
            changed = topics_changed and group.update_topics(topics)
            for removal in group.expire(now):
                logger.info(
                    "group %s: removed member %s after its %s",
                    group_id,
                    removal.member_id,
                    removal.reason,
                )
                removed.append((group_id, removal))
                changed = True
            if changed:
                self._notify(group_id)
            if not group.members:
                del self._groups[group_id]
        return removed

    def _read_topics(self) -> dict[str, int]:
        if self.topic_counts is not None:
            return self.topic_counts()
        return {name: info.partitions for name, info in self._logs.topics().items()}

    def group(self, group_id: str) -> ConsumerGroup | None:
        """The live state of a group with members (tests, tools)."""
        return self._groups.get(group_id)

    def _notify(self, group_id: str) -> None:
        event = self._events.pop(group_id, None)
        if event is not None:
            event.set()

    # --- dispatch ---------------------------------------------------------------------------

    async def handle(self, request: GroupRequest, client_host: str = "") -> m.Response:
        """Serve one group request; errors come back in the response's error codes."""
        if self._closing:
            raise BrokerShuttingDownError()
        match request:
            case m.HeartbeatRequest():
                try:
                    return await self.heartbeat(request)
                except BrokerError as exc:
                    await self._recorder.settled(request.group_id)
                    return m.HeartbeatResponse(int(exc.code), exc.message)
            case m.OffsetCommitRequest():
                try:
                    return await self.offset_commit(request)
                except BrokerError as exc:
                    return m.OffsetCommitResponse(int(exc.code), exc.message)
            case m.JoinGroupRequest():
                try:
                    joined = self.join(request, client_host)
                    await self._recorder.durable(request.group_id)
                except BrokerError as exc:
                    await self._recorder.settled(request.group_id)
                    return m.JoinGroupResponse(int(exc.code), exc.message)
                return joined
            case m.LeaveGroupRequest():
                try:
                    self.leave(request)
                    await self._recorder.durable(request.group_id)
                except BrokerError as exc:
                    await self._recorder.settled(request.group_id)
                    return m.LeaveGroupResponse(int(exc.code), exc.message)
                return m.LeaveGroupResponse()
            case m.OffsetFetchRequest():
                try:
                    return self.offset_fetch(request)
                except BrokerError as exc:
                    return m.OffsetFetchResponse(int(exc.code), exc.message)
            case m.ListGroupsRequest():
                return self.list_groups(request)
            case m.DescribeGroupsRequest():
                return self.describe_groups(request)
            case m.DeleteGroupsRequest():
                return await self.delete_groups(request)
            case _:
                raise TypeError(f"{type(request).__name__} is not a group request")

    # --- membership -------------------------------------------------------------------------

    def join(self, request: m.JoinGroupRequest, client_host: str = "") -> m.JoinGroupResponse:
        """Add a member; its group's new state is appended (:meth:`handle` waits for the
        fsync before answering)."""
        group_id = request.group_id
        self._check(group_id)
        group = self._groups.get(group_id) or ConsumerGroup(group_id, self.settings)
        topics = self._read_topics()  # a pattern may match a topic created just now
        response = group.join(request, now=self._clock(), topics=topics, client_host=client_host)
        self._groups[group_id] = group
        self._notify(group_id)
        logger.info(
            "group %s: member %s joined (group epoch %d, %d member(s))",
            group_id,
            response.member_id,
            group.group_epoch,
            len(group.members),
        )
        self._recorder.write(group_id)
        return response

    async def heartbeat(self, request: m.HeartbeatRequest) -> m.HeartbeatResponse:
        group = self._live_group(request.group_id)
        version = group.version
        response = group.heartbeat(request, now=self._clock())
        if group.version != version:
            self._notify(group.group_id)
        self._recorder.write(group.group_id)  # appended now; answered once fsynced
        if response.assignment is None and group.may_hold(request.member_id):
            response = await self._hold(group, request.member_id, response)
        await self._recorder.durable(group.group_id)
        return response

    async def _hold(
        self, group: ConsumerGroup, member_id: str, response: m.HeartbeatResponse
    ) -> m.HeartbeatResponse:
        """Answer once the member's assignment changes, or after one heartbeat interval."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + response.heartbeat_interval_ms / 1000
        while not self._closing:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            event = self._events.setdefault(group.group_id, asyncio.Event())
            try:
                async with asyncio.timeout(remaining):
                    await event.wait()
            except TimeoutError:
                break
            if self._groups.get(group.group_id) is not group:
                raise UnknownMemberIdError(f"group {group.group_id!r} has no member {member_id!r}")
            polled = group.poll(member_id, self._clock())
            if polled.assignment is not None or not group.may_hold(member_id):
                return polled
        return response

    def leave(self, request: m.LeaveGroupRequest) -> None:
        group = self._live_group(request.group_id)
        group.leave(request, now=self._clock())
        logger.info("group %s: member %s left", group.group_id, request.member_id)
        self._notify(group.group_id)
        if not group.members:
            del self._groups[group.group_id]
        self._recorder.write(group.group_id)

    def _live_group(self, group_id: str) -> ConsumerGroup:
        self._check(group_id)
        group = self._groups.get(group_id)
        if group is None:
            raise GroupIdNotFoundError(f"group {group_id!r} has no members; join it first")
        return group

    # --- offsets ----------------------------------------------------------------------------

    async def offset_commit(self, request: m.OffsetCommitRequest) -> m.OffsetCommitResponse:
        group_id = request.group_id
        self._check(group_id)
        group = self._groups.get(group_id)
        tps = [TopicPartition(p.topic, p.partition) for p in request.offsets]
        not_held: Mapping[TopicPartition, str] = {}
        if request.member_id:
            if group is None:
                raise UnknownMemberIdError(
                    f"group {group_id!r} has no member {request.member_id!r}; rejoin the group"
                )
            not_held = group.check_commit(request.member_id, request.member_epoch, tps)
        elif group is not None and group.members:
            raise NonEmptyGroupError(
                f"group {group_id!r} has {len(group.members)} member(s): only a member may "
                "commit; reset offsets once the group is empty"
            )
        results: list[m.OffsetCommitPartitionResult | None] = []
        stamp = now_ms()
        accepted: dict[TopicPartition, OffsetValue] = {}
        for p, tp in zip(request.offsets, tps, strict=True):
            try:
                self._check_partition(tp)
                if tp in not_held:
                    raise _not_held(not_held[tp])
                if p.offset < 0:
                    raise InvalidCommitOffsetError(f"cannot commit offset {p.offset} for {tp}")
                size = len(p.metadata.encode())
                if size > self.metadata_max_bytes:
                    raise OffsetMetadataTooLargeError(
                        f"metadata of {size} bytes is above the limit of {self.metadata_max_bytes}"
                    )
            except BrokerError as exc:
                results.append(
                    m.OffsetCommitPartitionResult(p.topic, p.partition, int(exc.code), exc.message)
                )
                continue
            accepted[tp] = OffsetValue(p.offset, p.metadata, p.leader_epoch, stamp)
            results.append(None)
        failure: BrokerError | None = None
        try:
            await self.offsets.commit(group_id, accepted)
        except StorageError as exc:
            failure = exc
        return m.OffsetCommitResponse(
            partitions=tuple(
                r
                if r is not None
                else m.OffsetCommitPartitionResult(
                    p.topic,
                    p.partition,
                    *((int(failure.code), failure.message) if failure else (0, None)),
                )
                for r, p in zip(results, request.offsets, strict=True)
            )
        )

    def _check_partition(self, tp: TopicPartition) -> None:
        count = self._logs.partition_count(tp.topic)
        if count is None or not 0 <= tp.partition < count:
            raise UnknownTopicOrPartitionError(f"{tp.topic}[{tp.partition}] does not exist")

    def offset_fetch(self, request: m.OffsetFetchRequest) -> m.OffsetFetchResponse:
        group_id = request.group_id
        self._check(group_id)
        committed = self.offsets.committed(group_id)
        if request.partitions is None:
            wanted = sorted(committed)
        else:
            wanted = [TopicPartition(g.topic, p) for g in request.partitions for p in g.partitions]
        out = []
        for tp in wanted:
            value = committed.get(tp)
            if value is not None:
                out.append(
                    m.OffsetFetchPartitionResult(
                        tp.topic, tp.partition, value.offset, value.metadata, value.leader_epoch
                    )
                )
                continue
            try:
                self._check_partition(tp)
            except BrokerError as exc:
                out.append(
                    m.OffsetFetchPartitionResult(tp.topic, tp.partition, error_code=exc.code)
                )
            else:
                out.append(m.OffsetFetchPartitionResult(tp.topic, tp.partition))
        return m.OffsetFetchResponse(partitions=tuple(out))

    # --- administration ---------------------------------------------------------------------

    def _state(self, group_id: str) -> GroupState | None:
        group = self._groups.get(group_id)
        if group is not None:
            return group.state
        if self.offsets.committed(group_id):
            return GroupState.EMPTY
        return None

    def list_groups(self, request: m.ListGroupsRequest) -> m.ListGroupsResponse:
        if self._loading:
            return m.ListGroupsResponse(ErrorCode.COORDINATOR_LOAD_IN_PROGRESS)
        ids = sorted(set(self._groups) | set(self.offsets.groups()))
        out = []
        for group_id in ids:
            state = self._state(group_id)
            if state is None or (request.states and state.value not in request.states):
                continue
            group = self._groups.get(group_id)
            out.append(m.GroupListing(group_id, state.value, len(group.members) if group else 0))
        return m.ListGroupsResponse(groups=tuple(out))

    def describe_groups(self, request: m.DescribeGroupsRequest) -> m.DescribeGroupsResponse:
        out = []
        for group_id in request.group_ids:
            try:
                self._check(group_id)
                group = self._groups.get(group_id)
                if group is not None:
                    out.append(group.describe())
                elif self._state(group_id) is not None:
                    out.append(m.GroupDescription(group_id, state=GroupState.EMPTY.value))
                else:
                    raise GroupIdNotFoundError(f"no group {group_id!r}")
            except BrokerError as exc:
                dead = GroupState.DEAD.value
                out.append(m.GroupDescription(group_id, int(exc.code), exc.message, state=dead))
        return m.DescribeGroupsResponse(tuple(out))

    async def delete_groups(self, request: m.DeleteGroupsRequest) -> m.DeleteGroupsResponse:
        out = []
        for group_id in request.group_ids:
            try:
                self._check(group_id)
                state = self._state(group_id)
                if state is None:
                    raise GroupIdNotFoundError(f"no group {group_id!r}")
                if state is not GroupState.EMPTY:
                    raise NonEmptyGroupError(f"group {group_id!r} still has members")
                await self.offsets.delete(group_id, [(group_key(group_id), None)])
            except BrokerError as exc:
                out.append(m.GroupResult(group_id, int(exc.code), exc.message))
            else:
                logger.info("deleted group %s", group_id)
                out.append(m.GroupResult(group_id))
        return m.DeleteGroupsResponse(tuple(out))


def _not_held(reason: str) -> BrokerError:
    return FencedMemberEpochError(f"{reason}: its assignment changed; rejoin or wait for it")
