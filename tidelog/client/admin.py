"""The admin client: topics, configs, offsets and the cluster, for tools and tests.

::

    async with AdminClient("127.0.0.1:7070") as admin:
        await admin.create_topic("events", partitions=6, configs={"retention.ms": "86400000"})
        print(await admin.describe_topics(["events"]))
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal, TypeVar

from tidelog.wire import messages as m
from tidelog.wire.api import INTERNAL_TOPICS
from tidelog.wire.errors import (
    BrokerError,
    CoordinatorNotAvailableError,
    ErrorCode,
    NotCoordinatorError,
)

from . import reassignments
from .cluster import Cluster, TopicInfo
from .connection import Connection
from .errors import ClientClosedError, ClientUsageError, broker_error
from .lifecycle import AsyncClient
from .membership import from_wire
from .offsets import OffsetAndMetadata, commit_offsets, fetch_offsets, while_loading
from .types import OffsetAndTimestamp, TopicPartition

NewTopic = m.NewTopic
ConfigEntry = m.ConfigEntry
BrokerInfo = m.BrokerInfo
PartitionMetadata = m.PartitionMetadata
LogDirPartition = m.LogDirPartition


@dataclass(frozen=True, slots=True)
class TopicDescription:
    """A topic: its partitions (leader, replicas, in-sync replicas of each)."""

    name: str
    internal: bool
    partitions: tuple[PartitionMetadata, ...]


@dataclass(frozen=True, slots=True)
class ClusterDescription:
    cluster_id: str
    controller_id: int
    brokers: tuple[BrokerInfo, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class LogDirDescription:
    """What one broker holds on its disk: its data directory and, per partition, the bytes,
    segments and offsets of the log (``LogDirPartition``)."""

    broker_id: int
    log_dir: str
    partitions: tuple[LogDirPartition, ...]


GroupListing = m.GroupListing


@dataclass(frozen=True, slots=True)
class GroupMemberDescription:
    """A member of a consumer group as the broker sees it."""

    member_id: str
    member_epoch: int
    instance_id: str | None
    client_id: str
    client_host: str
    subscribed_topics: tuple[str, ...]
    subscribed_pattern: str | None
    assignment: frozenset[TopicPartition]
    """What it holds now (including partitions it was asked to give up and has not yet)."""
    target_assignment: frozenset[TopicPartition]
    """What it will hold once the group is reconciled."""


@dataclass(frozen=True, slots=True)
class GroupPartitionOffsets:
    """A partition of a group: its committed offset, the partition's end, the lag between."""

    topic: str
    partition: int
    committed: int | None
    """The next offset the group will consume (``None``: nothing committed)."""
    end_offset: int | None
    """The high watermark (``None`` if the partition no longer exists)."""
    lag: int | None
    """``end_offset - committed`` (``None`` when either is unknown)."""
    metadata: str = ""
    member_id: str | None = None
    """The member holding the partition now, if any."""


@dataclass(frozen=True, slots=True)
class GroupDescription:
    """A consumer group: its state, members, and offsets per partition."""

    group_id: str
    state: str
    """``"empty"``, ``"reconciling"`` or ``"stable"``."""
    group_epoch: int
    assignor: str
    members: tuple[GroupMemberDescription, ...]
    offsets: tuple[GroupPartitionOffsets, ...]
    """Every partition with a committed offset or an owner, sorted."""

    @property
    def lag(self) -> int:
        """The total lag of the partitions with a committed offset."""
        return sum(p.lag for p in self.offsets if p.lag is not None)


ResetTarget = Literal["earliest", "latest"] | int


class AdminClient(AsyncClient):
    """Administers a cluster. Use as ``async with AdminClient(...)`` or call :meth:`start`
    and :meth:`close`. Every method raises the broker's typed error
    (:mod:`tidelog.wire.errors`) with a message naming the topic concerned."""

    def __init__(
        self,
        bootstrap_servers: str | Sequence[str] = "127.0.0.1:7070",
        *,
        client_id: str = "tidelog-admin",
        request_timeout: float = 30.0,
        connect_timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        cluster: Cluster | None = None,
    ) -> None:
        self.request_timeout = request_timeout
        self._cluster = cluster or Cluster(
            bootstrap_servers,
            client_id=client_id,
            connect_timeout=connect_timeout,
            request_timeout=request_timeout,
            clock=clock,
        )
        self._started = False
        self._closed = False

    async def start(self) -> None:
        if self._closed:
            raise ClientClosedError("this admin client is closed; create a new one")
        if not self._started:
            await self._cluster.start()
            self._started = True

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self._cluster.close()

    async def _controller(self) -> Connection:
        if not self._started or self._closed:
            raise ClientClosedError(
                "the admin client is not running: use 'async with AdminClient(...)' or start()"
            )
        controller = self._cluster.metadata.controller_id
        if controller in self._cluster.metadata.brokers:
            return await self._cluster.connection(controller)
        return await self._cluster.any_connection()

    async def _coordinator(self, group_id: str) -> Connection:
        """A connection to the broker coordinating ``group_id`` (FindCoordinator; retried
        while the group's partition has no leader, within ``request_timeout``)."""
        await self._controller()  # checks that the client runs

        async def find() -> m.FindCoordinatorResponse:
            conn = await self._cluster.any_connection()
            response = await conn.call(
                m.FindCoordinatorRequest(group_id), m.FindCoordinatorResponse
            )
            if response.error_code:
                raise broker_error(
                    response.error_code, response.error_message, where=f"group {group_id!r}"
                )
            return response

        found = await while_loading(find, self.request_timeout, also=_COORDINATOR_MOVING)
        if found.node_id not in self._cluster.metadata.brokers:
            await self._cluster.refresh()
        return await self._cluster.connection(found.node_id)

    async def _with_coordinator(
        self, group_id: str, call: Callable[[Connection], Awaitable[T]]
    ) -> T:
        """``await call(conn)`` on the coordinator of ``group_id``, finding it again and
        retrying while it moves or loads (NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE,
        COORDINATOR_LOAD_IN_PROGRESS), within ``request_timeout``."""

        async def attempt() -> T:
            return await call(await self._coordinator(group_id))

        return await while_loading(attempt, self.request_timeout, also=_COORDINATOR_MOVING)

    @property
    def _timeout_ms(self) -> int:
        return int(self.request_timeout * 1000)

    # --- topics ------------------------------------------------------------------------------

    async def create_topics(
        self,
        topics: Iterable[NewTopic],
        *,
        validate_only: bool = False,
        if_not_exists: bool = False,
    ) -> None:
        """Create topics (``NewTopic(name, partitions, replication_factor, configs)``; -1
        means the broker's default). Raises the first topic's error, e.g.
        ``TopicAlreadyExistsError`` (ignored with ``if_not_exists``)."""
        request = m.CreateTopicsRequest(
            tuple(topics), timeout_ms=self._timeout_ms, validate_only=validate_only
        )
        conn = await self._controller()
        response = await conn.call(request, m.CreateTopicsResponse)
        ignore = {ErrorCode.TOPIC_ALREADY_EXISTS} if if_not_exists else set()
        _raise_first(response.topics, ignore, "topic")
        await self._cluster.refresh()

    async def create_topic(
        self,
        name: str,
        partitions: int = -1,
        replication_factor: int = -1,
        configs: Mapping[str, str] | None = None,
        *,
        if_not_exists: bool = False,
    ) -> None:
        """Create one topic; see :meth:`create_topics`."""
        topic = NewTopic(name, partitions, replication_factor, dict(configs or {}))
        await self.create_topics([topic], if_not_exists=if_not_exists)

    async def delete_topics(self, names: Iterable[str], *, if_exists: bool = False) -> None:
        """Delete topics and their data. Raises the first topic's error, e.g.
        ``UnknownTopicOrPartitionError`` (ignored with ``if_exists``)."""
        request = m.DeleteTopicsRequest(tuple(names), timeout_ms=self._timeout_ms)
        conn = await self._controller()
        response = await conn.call(request, m.DeleteTopicsResponse)
        ignore = {ErrorCode.UNKNOWN_TOPIC_OR_PARTITION} if if_exists else set()
        _raise_first(response.topics, ignore, "topic")
        await self._cluster.refresh()

    async def list_topics(self, *, internal: bool = False) -> list[str]:
        """Every topic's name, sorted (internal topics only when asked)."""
        return sorted(i.name for i in await self._every_topic(internal))

    async def _every_topic(self, internal: bool) -> list[TopicInfo]:
        """Every topic; the internal ones (which the broker leaves out unless named) only
        when asked."""
        await self._controller()
        meta = await self._cluster.refresh()
        infos = [t for t in meta.topics.values() if not t.internal]
        if internal:
            wanted = sorted(INTERNAL_TOPICS)
            named = await self._cluster.fetch_topics(wanted, allow_auto_create=False)
            # an internal topic made on first use (__share_group_state) may not exist yet
            infos += [
                named.topics[n]
                for n in wanted
                if n in named.topics and not named.topics[n].error_code
            ]
        return infos

    async def describe_topics(
        self, names: Iterable[str] | None = None, *, internal: bool = False
    ) -> list[TopicDescription]:
        """The named topics (if ``None``: every topic, internal ones only when asked, as
        :meth:`list_topics`). Raises ``UnknownTopicOrPartitionError`` for a name that does
        not exist."""
        await self._controller()
        if names is None:
            infos = await self._every_topic(internal)
        else:
            wanted = list(names)
            meta = await self._cluster.fetch_topics(wanted, allow_auto_create=False)
            infos = []
            for name in wanted:
                info = meta.topics.get(name)
                if info is None:
                    raise broker_error(
                        ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, where=f"topic {name!r}"
                    )
                if info.error_code:
                    raise broker_error(info.error_code, where=f"topic {name!r}")
                infos.append(info)
        return [
            TopicDescription(i.name, i.internal, tuple(i.details[p] for p in i.partitions))
            for i in sorted(infos, key=lambda i: i.name)
        ]

    # --- configs -----------------------------------------------------------------------------

    async def describe_configs(
        self, topics: Iterable[str], keys: Iterable[str] | None = None
    ) -> dict[str, dict[str, ConfigEntry]]:
        """Per topic, its config entries by key (only ``keys`` if given): value, source
        (default, topic or broker), read-only and sensitive flags."""
        request = m.DescribeConfigsRequest(
            tuple(m.ConfigResource(m.ConfigResourceType.TOPIC, t) for t in topics),
            keys=None if keys is None else tuple(keys),
        )
        conn = await self._controller()
        response = await conn.call(request, m.DescribeConfigsResponse)
        out: dict[str, dict[str, ConfigEntry]] = {}
        for result in response.results:
            if result.error_code:
                raise broker_error(
                    result.error_code, result.error_message, where=f"topic {result.name!r}"
                )
            out[result.name] = {e.name: e for e in result.entries}
        return out

    async def alter_configs(
        self,
        topic: str,
        values: Mapping[str, str] | None = None,
        delete: Iterable[str] = (),
        *,
        validate_only: bool = False,
    ) -> None:
        """Set config keys of ``topic`` to ``values`` and reset the keys in ``delete`` to
        their defaults.
        Raises ``InvalidConfigError`` for an unknown key or a bad value."""
        request = m.AlterConfigsRequest(
            (
                m.AlterConfigsResource(
                    m.ConfigResourceType.TOPIC, topic, dict(values or {}), tuple(delete)
                ),
            ),
            validate_only=validate_only,
        )
        conn = await self._controller()
        response = await conn.call(request, m.AlterConfigsResponse)
        for result in response.results:
            if result.error_code:
                raise broker_error(
                    result.error_code, result.error_message, where=f"topic {result.name!r}"
                )

    # --- offsets and the cluster -------------------------------------------------------------

    async def list_offsets(
        self, specs: Mapping[TopicPartition, int]
    ) -> dict[TopicPartition, OffsetAndTimestamp]:
        """For each partition, the offset a spec stands for: ``OffsetSpec.EARLIEST`` (the log
        start), ``OffsetSpec.LATEST`` (the end: the next offset to be written) or a timestamp
        in milliseconds (the first record at or after it; offset -1 if none)."""
        await self._controller()
        return await self._cluster.list_offsets(specs)

    async def describe_log_dirs(
        self, topics: Iterable[str] | None = None
    ) -> list[LogDirDescription]:
        """Per broker (sorted by id), what the named topics (every topic if ``None``) hold on
        its disk: per partition ``size_bytes``, ``segments``, ``log_start_offset`` and
        ``log_end_offset``. Raises ``UnknownTopicOrPartitionError`` for a name that does not
        exist."""
        request = m.DescribeLogDirsRequest(None if topics is None else tuple(topics))
        await self._controller()
        meta = self._cluster.metadata
        out: list[LogDirDescription] = []
        for node_id in sorted(meta.brokers):
            conn = await self._cluster.connection(node_id)
            response = await conn.call(request, m.DescribeLogDirsResponse)
            for p in response.partitions:
                if p.error_code:
                    raise broker_error(p.error_code, where=f"topic {p.topic!r}")
            out.append(LogDirDescription(node_id, response.log_dir, response.partitions))
        return out

    # --- consumer groups ---------------------------------------------------------------------

    async def list_groups(self, states: Iterable[str] = ()) -> list[GroupListing]:
        """Every consumer group (with members or committed offsets), sorted by id; only those
        in ``states`` (``"empty"``, ``"reconciling"``, ``"stable"``) if given. In a cluster
        each broker lists the groups it coordinates: every broker is asked."""
        await self._controller()
        meta = await self._cluster.refresh()
        found: dict[str, GroupListing] = {}
        for node_id in sorted(meta.brokers):
            conn = await self._cluster.connection(node_id)

            async def call(conn: Connection = conn) -> m.ListGroupsResponse:
                request = m.ListGroupsRequest(tuple(states))
                response = await conn.call(request, m.ListGroupsResponse)
                if response.error_code:
                    raise broker_error(response.error_code, where="list groups")
                return response

            for listing in (await while_loading(call, self.request_timeout)).groups:
                found.setdefault(listing.group_id, listing)
        return [found[g] for g in sorted(found)]

    async def describe_groups(self, group_ids: Iterable[str]) -> list[GroupDescription]:
        """The named groups: state, members and their assignments, and per partition the
        committed offset, the end offset and the lag. Raises ``GroupIdNotFoundError`` for a
        group that does not exist."""
        out = []
        for group_id in group_ids:

            async def describe(
                conn: Connection, gid: str = group_id
            ) -> tuple[m.GroupDescription, dict[TopicPartition, OffsetAndMetadata]]:
                response = await conn.call(
                    m.DescribeGroupsRequest((gid,)), m.DescribeGroupsResponse
                )
                (d,) = response.groups
                if d.error_code:
                    raise broker_error(d.error_code, d.error_message, where=f"group {gid!r}")
                return d, await fetch_offsets(conn, gid, timeout=self.request_timeout)

            d, committed = await self._with_coordinator(group_id, describe)
            members = tuple(
                GroupMemberDescription(
                    mb.member_id,
                    mb.member_epoch,
                    mb.instance_id,
                    mb.client_id,
                    mb.client_host,
                    mb.subscribed_topics,
                    mb.subscribed_pattern,
                    from_wire(mb.assignment),
                    from_wire(mb.target_assignment),
                )
                for mb in d.members
            )
            out.append(
                GroupDescription(
                    d.group_id,
                    d.state,
                    d.group_epoch,
                    d.assignor,
                    members,
                    await self._group_offsets(committed, members),
                )
            )
        return out

    async def _group_offsets(
        self,
        committed: Mapping[TopicPartition, OffsetAndMetadata],
        members: Sequence[GroupMemberDescription],
    ) -> tuple[GroupPartitionOffsets, ...]:
        owners = {tp: mb.member_id for mb in members for tp in mb.assignment}
        partitions = sorted(set(committed) | set(owners))
        meta = await self._cluster.refresh()
        live = [tp for tp in partitions if tp.partition in (meta.partitions_for(tp.topic) or ())]
        ends = await self._cluster.list_offsets({tp: m.OffsetSpec.LATEST for tp in live})
        out = []
        for tp in partitions:
            c = committed.get(tp)
            end = ends[tp].offset if tp in ends else None
            lag = None if c is None or end is None else max(0, end - c.offset)
            out.append(
                GroupPartitionOffsets(
                    tp.topic,
                    tp.partition,
                    None if c is None else c.offset,
                    end,
                    lag,
                    "" if c is None else c.metadata,
                    owners.get(tp),
                )
            )
        return tuple(out)

    async def delete_groups(self, group_ids: Iterable[str]) -> None:
        """Delete empty groups and their committed offsets. Raises the first group's error:
        ``NonEmptyGroupError`` (it has members) or ``GroupIdNotFoundError``."""
        results: list[m.GroupResult] = []
        for group_id in group_ids:

            async def delete(conn: Connection, gid: str = group_id) -> list[m.GroupResult]:
                response = await conn.call(m.DeleteGroupsRequest((gid,)), m.DeleteGroupsResponse)
                for r in response.results:
                    if r.error_code in _RETRIED_GROUP_ERRORS:
                        raise broker_error(r.error_code, r.error_message)
                return list(response.results)

            results += await self._with_coordinator(group_id, delete)
        _raise_first(
            (m.TopicResult(r.group_id, r.error_code, r.error_message) for r in results),
            set(),
            "group",
        )

    async def list_committed(self, group_id: str) -> dict[TopicPartition, OffsetAndMetadata]:
        """Every offset ``group_id`` has committed (offset and metadata per partition)."""
        return await self._with_coordinator(
            group_id, lambda conn: fetch_offsets(conn, group_id, timeout=self.request_timeout)
        )

    async def commit_offsets(
        self, group_id: str, offsets: Mapping[TopicPartition, OffsetAndMetadata]
    ) -> None:
        """Commit ``offsets`` (the next offset to consume, per partition) for ``group_id`` as
        an administrator: only while the group has no members (``NonEmptyGroupError``
        otherwise). The broker's error for the first partition refused is raised."""
        await self._with_coordinator(
            group_id,
            lambda conn: commit_offsets(conn, group_id, offsets, timeout=self.request_timeout),
        )

    async def reset_offsets(
        self,
        group_id: str,
        topic: str,
        to: ResetTarget | None = None,
        *,
        timestamp: int | None = None,
        partitions: Iterable[int] | None = None,
        dry_run: bool = False,
    ) -> dict[TopicPartition, int]:
        """Set the committed offsets of an **empty** group for ``topic`` (every partition, or
        ``partitions``): ``to="earliest"`` (the log start), ``"latest"`` (the end), an offset
        (clamped into the log), or the first record at or after ``timestamp`` (ms since the
        epoch; the end if there is none). Returns the new offsets; with ``dry_run`` nothing is
        committed. Raises ``NonEmptyGroupError`` while the group has members."""
        if (to is None) == (timestamp is None):
            raise ClientUsageError("give exactly one of to= and timestamp=")
        if isinstance(to, str) and to not in ("earliest", "latest"):
            raise ClientUsageError(f"to= is 'earliest', 'latest' or an offset, not {to!r}")
        all_parts = await self._cluster.partitions_for(topic)
        wanted = all_parts if partitions is None else tuple(partitions)
        for p in wanted:
            if p not in all_parts:
                raise broker_error(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, where=f"{topic}[{p}]")
        tps = [TopicPartition(topic, p) for p in wanted]
        earliest = await self._cluster.list_offsets({tp: m.OffsetSpec.EARLIEST for tp in tps})
        latest = await self._cluster.list_offsets({tp: m.OffsetSpec.LATEST for tp in tps})
        if timestamp is not None:
            found = await self._cluster.list_offsets({tp: timestamp for tp in tps})
            chosen = {
                tp: found[tp].offset if found[tp].offset >= 0 else latest[tp].offset for tp in tps
            }
        elif to == "earliest":
            chosen = {tp: earliest[tp].offset for tp in tps}
        elif to == "latest":
            chosen = {tp: latest[tp].offset for tp in tps}
        else:
            assert isinstance(to, int)
            chosen = {tp: min(max(to, earliest[tp].offset), latest[tp].offset) for tp in tps}
        if not dry_run:
            await self.commit_offsets(
                group_id, {tp: OffsetAndMetadata(o) for tp, o in chosen.items()}
            )
        return chosen

    # --- moving partitions -------------------------------------------------------------------

    async def reassign_partitions(
        self,
        topic: str,
        replicas: Sequence[int],
        *,
        partition: int | None = None,
        validate_only: bool = False,
    ) -> dict[TopicPartition, tuple[int, ...]]:
        """Move ``partition`` of ``topic`` (``None``: every partition) to the brokers
        ``replicas`` (the first is the preferred leader); the targets set. The controller adds
        the new replicas, waits until they are in sync, moves leadership, then drops the old
        ones; :meth:`wait_for_reassignment` waits for that. Raises
        ``InvalidReplicaAssignmentError`` (an unknown or repeated broker, a count other than
        the replication factor) or ``UnknownTopicOrPartitionError``."""
        entry = m.ReassignPartition(topic, -1 if partition is None else partition, tuple(replicas))
        request = m.AlterPartitionReassignmentsRequest((entry,), validate_only=validate_only)
        return await reassignments.alter(await self._controller(), request)

    async def rebalance_partitions(
        self, *, validate_only: bool = False
    ) -> dict[TopicPartition, tuple[int, ...]]:
        """Spread the replicas (and preferred leaders) of every non-internal topic evenly over
        the live brokers, moving as few as possible; the targets set (empty: balanced)."""
        request = m.AlterPartitionReassignmentsRequest(rebalance=True, validate_only=validate_only)
        return await reassignments.alter(await self._controller(), request)

    async def wait_for_reassignment(
        self, targets: Mapping[TopicPartition, Sequence[int]], within: float = 300.0
    ) -> None:
        """Wait until every partition of ``targets`` has exactly its target replicas, all in
        sync; ``RequestTimeoutError`` after ``within`` seconds."""

        async def look(topics: list[str]) -> list[tuple[str, PartitionMetadata]]:
            return [(d.name, p) for d in await self.describe_topics(topics) for p in d.partitions]

        wanted = {tp: tuple(r) for tp, r in targets.items()}
        await reassignments.wait(wanted, look, within)

    async def describe_cluster(self) -> ClusterDescription:
        """The cluster id, the controller and every broker."""
        await self._controller()
        meta = await self._cluster.refresh()
        brokers = tuple(sorted(meta.brokers.values(), key=lambda b: b.node_id))
        return ClusterDescription(meta.cluster_id, meta.controller_id, brokers)


T = TypeVar("T")
_RETRIED_GROUP_ERRORS: Final = frozenset(
    {
        ErrorCode.COORDINATOR_LOAD_IN_PROGRESS,
        ErrorCode.COORDINATOR_NOT_AVAILABLE,
        ErrorCode.NOT_COORDINATOR,
    }
)
_COORDINATOR_MOVING: Final = (CoordinatorNotAvailableError, NotCoordinatorError)
"""The coordinator is moving (its partition has no leader, or another broker leads it now):
find it again and retry."""


def _raise_first(results: Iterable[m.TopicResult], ignore: set[ErrorCode], what: str) -> None:
    errors: list[BrokerError] = []
    for r in results:
        if r.error_code and r.error_code not in ignore:
            errors.append(broker_error(r.error_code, r.error_message, where=f"{what} {r.name!r}"))
    if errors:
        first = errors[0]
        if len(errors) > 1:
            first.add_note(f"{len(errors) - 1} more failed: " + "; ".join(map(str, errors[1:])))
        raise first
