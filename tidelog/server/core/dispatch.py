"""The broker's request core: a decoded request (and its data section) in, a response (and its
data section) out. No sockets, no streams: the transport in ``server/connection.py`` drives it,
and the unit tier drives it directly with a fake clock.
"""

from __future__ import annotations

from concurrent.futures import Executor
from typing import cast

from tidelog.wire import messages as m
from tidelog.wire import replica_messages as rm
from tidelog.wire import share_messages as sm
from tidelog.wire.errors import (
    BrokerShuttingDownError,
    ErrorCode,
    InvalidRequestError,
    UnknownApiError,
)

from ..config import BrokerConfig
from ..groups import OFFSETS_TOPIC, GroupCoordinator
from ..groups.coordinator import validate_group_id
from ..log import FileSystem, LogManager, MemoryFileSystem, TopicConfig
from ..log.memfs import MEMORY_DATA_DIR
from ..metrics import BrokerMetrics
from ..shares import SHARE_STATE_TOPIC, ShareCoordinator
from .admin import AdminApis
from .configs import parse_topic_configs
from .data import DataApis, fetch_reservation
from .notifier import AppendNotifier
from .state import CoreState
from .types import DeadlineClock, LoopClock, Outcome, Reply, Session


class BrokerCore:
    """Serves every API of a single broker from its :class:`LogManager`."""

    def __init__(
        self,
        config: BrokerConfig,
        clock: DeadlineClock | None = None,
        *,
        fs: FileSystem | None = None,
        flush_executor: Executor | None = None,
    ) -> None:
        """``clock`` times request deadlines; ``fs`` and ``flush_executor`` go to the
        :class:`LogManager` (tests inject faults and hold fsyncs with them)."""
        self.config = config
        if fs is None and config.in_memory:
            fs = MemoryFileSystem(config.max_memory_storage_bytes)
        self._fs = fs
        self._flush_executor = flush_executor
        self.state = CoreState(config, LoopClock() if clock is None else clock)
        self.groups: GroupCoordinator | None = None
        self.shares: ShareCoordinator | None = None
        self._admin = AdminApis(self.state)
        self._data = DataApis(self.state)

    # --- lifecycle ------------------------------------------------------------------------

    async def open(self) -> None:
        defaults = TopicConfig().with_overrides(parse_topic_configs(self.config.topic_defaults))
        memory = self.config.in_memory
        manager = LogManager(
            MEMORY_DATA_DIR if memory else self.config.data_dir,
            defaults=defaults,
            retention_check_interval_ms=self.config.retention_check_interval_ms,
            # Scrubbing looks for bytes a disk changed; memory has no such failure.
            scrub_bytes_per_second=0 if memory else self.config.scrub_bytes_per_second,
            cleaner=self.config.cleaner,
            fs=self._fs,
            flush_executor=self._flush_executor,
        )
        manager.open()
        self.state.attach(manager)
        await manager.start()
        groups = GroupCoordinator.from_config(self.config, manager)
        try:
            # In a cluster, the partitions of __consumer_offsets this broker leads come from
            # the cluster once it has joined (join_cluster).
            await groups.start(load=not self.config.etcd_endpoints)
        except BaseException:
            self.state.attach(None)
            await manager.stop()
            raise
        self.groups = groups
        shares = ShareCoordinator(self.state)
        shares.clustered = bool(self.config.etcd_endpoints)  # loads as join_cluster says
        try:
            await shares.start(load=not shares.clustered)
        except BaseException:
            await groups.stop()
            self.groups = None
            self.state.attach(None)
            await manager.stop()
            raise
        self.shares = shares

    def count_into(self, metrics: BrokerMetrics | None) -> None:
        """Count records and bytes per topic into ``metrics`` (``None``: count nothing)."""
        self._data.metrics = metrics

    def set_advertised_port(self, port: int) -> None:
        self.state.port = port

    async def join_cluster(self) -> None:
        """Join the cluster named ``cluster_id`` over the ``etcd`` endpoints (after the
        listener is bound, so the registration carries the real port)."""
        from ..cluster.role import ClusterRole  # only brokers in a cluster need etcd

        role = ClusterRole(
            self.config,
            lambda: self.state.manager,
            self.state.notifier.notify,
            on_internal_leadership=self._follow_internal,
            producers=lambda: None if self.state.writes is None else self.state.writes.producers,
            monotonic=self.state.clock.monotonic,
        )
        try:
            await role.start(self.config.advertised, self.state.port)
        except BaseException:
            await role.stop()
            raise
        self.state.cluster = role
        from ..replication.serving import LeaderApis

        self.state.replication = LeaderApis(
            role.replicas, self.state.clock, self.config.max_fetch_wait_ms
        )
        if self.state.writes is not None:
            self.state.writes.replicas = role.replicas
            from ..replication.internal import ReplicatedAppends

            replicated = ReplicatedAppends(self.state.writes, role.replicas)
            if self.groups is not None:
                self.groups.offsets.replicated = replicated
            if self.shares is not None:
                self.shares.store.replicated = replicated
        if self.groups is not None:
            self.groups.topic_counts = role.topic_counts

    def _follow_internal(self, topic: str, partitions: int, led: set[int]) -> None:
        if topic == OFFSETS_TOPIC:
            if self.groups is not None:
                self.groups.follow(partitions, led)
        elif self.shares is not None:
            self.shares.follow(partitions, led)

    def find_coordinator(self, request: m.FindCoordinatorRequest) -> m.FindCoordinatorResponse:
        """Who coordinates group ``key``: this broker on its own; in a cluster the leader of
        the group's partition of ``__consumer_offsets`` (key type 0, a consumer group) or of
        ``__share_group_state`` (key type 2, a share group: KIP-932's number)."""
        if request.key_type not in (m.KEY_TYPE_GROUP, m.KEY_TYPE_SHARE):
            raise InvalidRequestError(
                f"unknown coordinator key type {request.key_type} (0: a consumer group, "
                "2: a share group)"
            )
        validate_group_id(request.key)
        groups, shares = self.groups, self.shares
        if groups is None or shares is None:
            raise BrokerShuttingDownError("the broker is not running")
        cluster = self.state.cluster
        if cluster is None:
            config = self.config
            return m.FindCoordinatorResponse(
                node_id=config.broker_id, host=config.advertised, port=self.state.port
            )
        if request.key_type == m.KEY_TYPE_GROUP:
            topic, partition = OFFSETS_TOPIC, groups.offsets.partition_for(request.key)
        else:
            topic, partition = SHARE_STATE_TOPIC, shares.store.partition_for(request.key)
        cluster.ensure_internal_topic(topic)
        leader = None if cluster.leaving else cluster.leader_of(topic, partition)
        if leader is None:
            return m.FindCoordinatorResponse(
                ErrorCode.COORDINATOR_NOT_AVAILABLE,
                f"{topic}-{partition}, where group {request.key!r} lives, has no leader now",
            )
        return m.FindCoordinatorResponse(
            node_id=leader.broker_id, host=leader.host, port=leader.port
        )

    async def leave_cluster(self) -> None:
        """Leave the cluster (others take over at once) -- and from then on lead nothing: the
        role stays attached, refusing every partition, so that a request still in a
        connection during the shutdown is never served as if this were a lone broker (an
        append acknowledged here, outside the ISR, would be lost with the next leader)."""
        role = self.state.cluster
        if role is None:
            return
        await role.drain(self.config.controlled_shutdown_timeout_s)
        role.leaving = True
        if self.groups is not None:  # commits go to the next coordinator, never to this log
            self.groups.follow(self.groups.offsets.partitions, ())
        if self.shares is not None:
            self.shares.follow(self.shares.store.partitions, set())
        await role.stop()

    def begin_shutdown(self) -> None:
        self.state.shutting_down = True
        self.state.notifier.notify_all()
        if self.groups is not None:
            self.groups.begin_shutdown()
        if self.shares is not None:
            self.shares.begin_shutdown()

    async def shutdown(self) -> None:
        """Stop housekeeping, let fsyncs finish, close every log cleanly (producer state
        snapshotted, so the next start replays nothing)."""
        shares, self.shares = self.shares, None
        if shares is not None:
            await shares.stop()
        groups, self.groups = self.groups, None
        if groups is not None:
            await groups.stop()
        if self.state.writes is not None:
            self.state.writes.producers.snapshot()
        manager = self.state.logs
        self.state.attach(None)
        if manager is not None:
            await manager.stop()

    @property
    def logs(self) -> LogManager | None:
        return self.state.logs

    @property
    def manager(self) -> LogManager:
        return self.state.manager

    @property
    def notifier(self) -> AppendNotifier:
        return self.state.notifier

    # --- dispatch -------------------------------------------------------------------------

    def reserve(self, request: m.Request) -> int:
        """Bytes of the connection's budget a request holds for its response, beyond its own
        size, from the moment it is admitted: each kind declares its own here."""
        if isinstance(request, m.FetchRequest):
            return fetch_reservation(request, self.config)
        return 0

    def handle_now(self, request: m.Request, data: bytearray, session: Session) -> Outcome:
        """Produce and fetch are served at once when they need not wait (no task, no loop
        turn: the cost of a small request); every other request is a coroutine to run."""
        kind = type(request)
        if kind is m.ProduceRequest:
            return self._data.produce_now(cast(m.ProduceRequest, request), data)
        if kind is m.FetchRequest:
            return self._data.fetch_now(cast(m.FetchRequest, request))
        return self.handle(request, data, session)

    async def handle(self, request: m.Request, data: bytearray, session: Session) -> Reply:
        match request:
            case m.ProduceRequest():
                return await self._data.produce(request, data)
            case m.FetchRequest():
                return await self._data.fetch(request)
            case m.MetadataRequest():
                return await self._admin.metadata(request), ()
            case m.ListOffsetsRequest():
                return self._data.list_offsets(request), ()
            case m.CreateTopicsRequest():
                return await self._admin.create_topics(request), ()
            case m.DeleteTopicsRequest():
                return await self._admin.delete_topics(request), ()
            case m.DescribeConfigsRequest():
                return self._admin.describe_configs(request), ()
            case m.AlterConfigsRequest():
                return await self._admin.alter_configs(request), ()
            case m.AlterPartitionReassignmentsRequest():
                return await self._admin.alter_partition_reassignments(request), ()
            case m.DescribeLogDirsRequest():
                return self._admin.describe_log_dirs(request), ()
            case m.FindCoordinatorRequest():
                return self.find_coordinator(request), ()
            case m.InitProducerIdRequest():
                return await self._data.init_producer_id(request), ()
            case rm.OffsetsForLeaderEpochRequest():
                if self.state.replication is None:
                    raise InvalidRequestError("OffsetsForLeaderEpoch goes to brokers in a cluster")
                return self.state.replication.offsets_for_leader_epoch(request), ()
            case (
                m.JoinGroupRequest()
                | m.HeartbeatRequest()
                | m.LeaveGroupRequest()
                | m.OffsetCommitRequest()
                | m.OffsetFetchRequest()
                | m.ListGroupsRequest()
                | m.DescribeGroupsRequest()
                | m.DeleteGroupsRequest()
            ):
                if self.groups is None:
                    raise BrokerShuttingDownError("the broker is not running")
                return await self.groups.handle(request, session.peer_host), ()
            case (
                sm.ShareFetchRequest()
                | sm.ShareAcknowledgeRequest()
                | sm.AlterShareGroupRequest()
                | sm.DescribeShareGroupRequest()
            ):
                if self.shares is None:
                    raise BrokerShuttingDownError("the broker is not running")
                return await self.shares.handle(request, session), ()
            case _:
                raise UnknownApiError(f"{type(request).__name__} is not served by this broker yet")
