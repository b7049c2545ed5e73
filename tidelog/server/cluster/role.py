"""The broker's part in a cluster as its request core sees it.

:class:`ClusterRole` joins the cluster (a :class:`~.member.ClusterMember`), keeps the local logs
in line with the cluster's view, and answers the questions the request core asks: which
brokers and partitions the metadata lists, whether this broker leads a partition, and how
topics are created, deleted and reconfigured (through etcd, by any broker).

**Local logs follow the view** (:meth:`ClusterRole._reconcile`, one pass at a time, after every
change): a topic with a partition this broker holds gets a local topic tagged with the
cluster's topic id; a local topic whose id the cluster no longer knows (deleted, or deleted and
created again under the same name while this broker was away) is deleted, so an old log is
never served for a new topic; config changes are applied. A local topic without an id (data of
a single broker, before it joined) is left alone and not served: the log says so.

**Replicas follow the view too**: after each pass, the :class:`~..replication.ReplicaManager`
is told which partitions this broker leads (and at which epoch) and which it follows from
whom. Every broker holding one of a topic's partitions keeps a local log for each of the
topic's partitions (empty where it holds no replica); only the leader serves a partition,
everyone else answers NOT_LEADER, and a leaderless partition answers LEADER_NOT_AVAILABLE (both
retriable: the client refreshes its metadata and tries again).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import Final

import msgspec

from tidelog.etcd import Compare, EtcdClient, EtcdError, Put
from tidelog.wire import messages as m
from tidelog.wire.errors import (
    BrokerError,
    CoordinatorNotAvailableError,
    ErrorCode,
    InvalidReplicaAssignmentError,
    InvalidRequestError,
    LeaderNotAvailableError,
    NotLeaderError,
    RequestTimedOutError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)

from ..config import BrokerConfig
from ..core.configs import parse_topic_configs
from ..core.idempotence import ProducerStates
from ..groups.records import OFFSETS_TOPIC
from ..groups.store import offsets_topic_config
from ..log import LogManager, TopicPartition
from ..replication.leader import PartitionLeader
from ..replication.manager import Assignment, ReplicaManager
from ..shares.records import SHARE_STATE_TOPIC
from ..shares.store import SHARE_STATE_PARTITIONS, share_state_topic_config
from .decisions import spread
from .member import ClusterMember
from .records import NO_LEADER, BrokerRecord, ClusterKeys, encode
from .view import ClusterView

logger = logging.getLogger("tidelog.server.cluster")

INTERNAL_TOPICS: Final = (OFFSETS_TOPIC, SHARE_STATE_TOPIC)
"""The coordinators' topics: led partitions are loaded by the group and share coordinators."""

DEPOSITION_CHECK_S: Final = 0.2
"""Seconds between looks at the followers while the lease is lost."""
PLACE_WITHIN: Final = 10.0
"""Seconds CreateTopics waits for the controller to place the new partitions."""


class ClusterRole:
    """This broker in the cluster ``config.cluster_id`` over ``config.etcd``."""

    def __init__(
        self,
        config: BrokerConfig,
        logs: Callable[[], LogManager],
        on_partition_change: Callable[[tuple[str, int]], None],
        *,
        on_internal_leadership: Callable[[str, int, set[int]], None] = lambda *_: None,
        producers: Callable[[], ProducerStates | None] = lambda: None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """``on_internal_leadership(topic, partitions, led)`` is told, after each pass over
        the view and for each coordinator topic (``__consumer_offsets``,
        ``__share_group_state``), how many partitions it has and which of them this broker
        leads (with its log ready): the group and share coordinators load and unload by it."""
        self.config = config
        self.broker_id = config.broker_id
        self._logs = logs
        self._on_partition_change = on_partition_change
        self._on_internal_leadership = on_internal_leadership
        self.etcd = EtcdClient(config.etcd_endpoints)
        self.keys = ClusterKeys(config.cluster_id)
        self.member: ClusterMember | None = None
        self._leaving = False
        self.lease_lost: str | None = None
        """Why the etcd lease was lost, until this broker is registered again."""
        self.fenced: str | None = None
        """Why this broker leads nothing now: its lease was lost and its followers went to
        another leader, until it is registered again and has read the cluster afresh."""
        self._deposition: asyncio.Task[None] | None = None
        self._dirty = asyncio.Event()
        self._changed = asyncio.Event()
        """Set on every change of the view (:meth:`drain` waits on it)."""
        self._task: asyncio.Task[None] | None = None
        self._creating: dict[str, asyncio.Task[None]] = {}
        self._unserved: set[str] = set()
        self.replicas = ReplicaManager(
            config.broker_id,
            logs,
            producers,
            on_partition_change,
            self._propose_isr,
            min_insync_replicas=config.min_insync_replicas,
            replica_lag_time_max_ms=config.replica_lag_time_max_ms,
            max_frame_size=config.max_frame_size,
            monotonic=monotonic,
        )

    @property
    def leaving(self) -> bool:
        """Whether this broker leads nothing and lists itself nowhere: it is leaving the
        cluster (shutting down: set once, for good), or it is fenced (its lease was lost)."""
        return self._leaving or self.fenced is not None

    @leaving.setter
    def leaving(self, value: bool) -> None:
        self._leaving = value

    def _out(self) -> str:
        if self._leaving:
            return f"broker {self.broker_id} is shutting down"
        return (
            f"broker {self.broker_id} lost its etcd lease ({self.fenced}) and another broker "
            "leads its partitions"
        )

    @property
    def view(self) -> ClusterView:
        if self.member is None:
            raise LeaderNotAvailableError("this broker has not joined its cluster yet")
        return self.member.view

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self, host: str, port: int) -> None:
        """Register as ``host:port`` and bring the local logs in line with the cluster."""
        record = BrokerRecord(self.broker_id, host, port, self.config.rack)
        self.member = ClusterMember(
            self.etcd,
            self.keys,
            record,
            lease_ttl=self.config.etcd_lease_ttl_s,
            on_change=lambda _: self._view_changed(),
            on_lease_lost=self._lease_lost,
            on_rejoined=self._rejoined,
            auto_leader_rebalance=self.config.auto_leader_rebalance,
        )
        await self.member.start(register_within=self.config.cluster_join_timeout_s)
        self.replicas.start()
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._follow(), name="cluster-logs")
        self._dirty.set()

    def _lease_lost(self, reason: str) -> None:
        """The cluster counts this broker dead: the controller elects other leaders for what
        it leads, and this broker may not hear of it (etcd may be out of its reach, or its
        watch hang). Or etcd is down for every broker, and nothing changes. Which of the two,
        its followers tell: see :meth:`_watch_deposition`."""
        self.lease_lost = reason
        if self._deposition is None or self._deposition.done():
            self._deposition = asyncio.get_running_loop().create_task(
                self._watch_deposition(), name="cluster-deposition"
            )

    async def _watch_deposition(self) -> None:
        """While the lease is lost: once the in-sync followers of a partition led here have
        all been silent for a lease TTL, they follow another leader, elected by a controller
        that counts this broker dead. The broker is then fenced: it resigns every leadership
        (the controller replaced it everywhere at once), so that producers and consumers get
        NOT_LEADER and look elsewhere instead of waiting on a leader that can commit nothing;
        its metadata lists neither itself nor its leaderships. If etcd is down for everyone,
        the followers keep fetching and it keeps leading."""
        ttl_ms = self.config.etcd_lease_ttl_s * 1000
        while self.lease_lost is not None:
            deposed = self.replicas.abandoned(ttl_ms)
            if deposed:
                self.fenced = self.lease_lost
                logger.warning(
                    "broker %d is fenced: its lease is lost and the followers of %s went "
                    "elsewhere; it leads nothing until it has rejoined",
                    self.broker_id, ", ".join(map(str, deposed[:5])),
                )  # fmt: skip
                self._dirty.set()
                return
            await asyncio.sleep(DEPOSITION_CHECK_S)

    def _rejoined(self) -> None:
        self.lease_lost = self.fenced = None
        if self._deposition is not None:
            self._deposition.cancel()
        self._dirty.set()

    def ensure_internal_topic(self, name: str) -> None:
        """Have coordinator topic ``name`` (``__consumer_offsets`` or ``__share_group_state``)
        created if the cluster has none yet, in the background. Like Kafka, on the first
        request that needs it (FindCoordinator), not at start: by then the brokers of a
        cluster started together have joined, and its partitions spread over all of them."""
        if name in self.view.topics:
            return
        task = self._creating.get(name)
        if task is None or task.done():
            self._creating[name] = asyncio.get_running_loop().create_task(
                self._create_internal_topic(name), name=f"create-{name}"
            )

    def _view_changed(self) -> None:
        self._dirty.set()
        self._changed.set()

    async def drain(self, within: float) -> None:
        """Controlled shutdown, first half: mark this broker draining and serve on until the
        controller has handed every partition it leads to an in-sync follower (one without
        such a follower stays; it goes leaderless when the broker leaves), for up to
        ``within`` seconds. Never raises: a shutdown goes on regardless."""
        member = self.member
        if member is None:
            return
        try:
            await member.drain()
        except EtcdError as exc:
            logger.warning("could not hand over leaderships before stopping: %s", exc)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            self._changed.clear()  # before the look: a change after it wakes the wait
            left = self._handing_over()
            wait = deadline - loop.time()
            if not left or wait <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), wait)
        if left:
            logger.warning(
                "stopping with %d leadership(s) not handed over within %gs: %s",
                len(left), within, ", ".join(left[:5]),
            )  # fmt: skip
        else:
            logger.info("leaderships handed over: stopping")

    def _handing_over(self) -> list[str]:
        """Partitions this broker still leads that an in-sync follower could lead."""
        view = self.view
        return sorted(
            f"{name}-{p}"
            for (name, p), v in view.partitions.items()
            if v.record.leader == self.broker_id
            and any(r != self.broker_id and r in view.brokers for r in v.record.isr)
        )

    async def stop(self) -> None:
        """Leave the cluster (the lease is revoked: others notice at once)."""
        tasks = [
            t for t in (self._task, self._deposition, *self._creating.values()) if t is not None
        ]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.replicas.stop()
        if self.member is not None:
            await self.member.stop()
        await self.etcd.close()

    async def _follow(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            try:
                await self._reconcile(self.view)
            except BrokerError as exc:
                logger.error("could not bring the local logs in line with the cluster: %s", exc)
                await asyncio.sleep(0.5)
                self._dirty.set()
                continue
            self.replicas.apply(self._assignments(self.view))
            self._drop_unhosted(self.view)
            for name in INTERNAL_TOPICS:
                self._follow_internal(self.view, name)

    async def _create_internal_topic(self, name: str) -> None:
        """Make sure the cluster has coordinator topic ``name`` (the first broker to look
        creates it; later ones find it). Retried until etcd takes it."""
        config = self.config
        if name == OFFSETS_TOPIC:
            partitions = config.offsets_topic_partitions
            settings = offsets_topic_config(config.offsets_topic_segment_bytes)
        else:
            partitions, settings = SHARE_STATE_PARTITIONS, share_state_topic_config()
        configs = {k: str(v) for k, v in settings.items()}
        while name not in self.view.topics:
            try:
                await self.create_topic(name, partitions, -1, configs)
            except (TopicAlreadyExistsError, RequestTimedOutError):
                return  # another broker made it; or it is made, only not placed yet
            except (BrokerError, EtcdError) as exc:
                logger.warning("could not create %s yet: %s", name, exc)
                await asyncio.sleep(1.0)

    def _follow_internal(self, view: ClusterView, name: str) -> None:
        topic = view.topics.get(name)
        if topic is None:
            return
        topic_id = topic.record.topic_id
        local = self._logs().topics().get(name)
        led: set[int] = set()
        if local is not None and local.topic_id == topic_id and not self.leaving:
            led = {
                p
                for p, state in view.partitions_of(name).items()
                if state.record.leader == self.broker_id and state.record.topic_id == topic_id
            }
        self._on_internal_leadership(name, topic.record.partitions, led)

    async def _reconcile(self, view: ClusterView) -> None:
        manager = self._logs()
        local = manager.topics()
        me = self.broker_id
        for name, topic in list(view.topics.items()):
            record = topic.record
            info = local.get(name)
            if info is not None and not info.topic_id:
                if name not in self._unserved:
                    self._unserved.add(name)
                    logger.warning(
                        "topic %s in %s belongs to no cluster (it was made by a single broker): "
                        "it is not served; move its directories away to let the cluster's "
                        "topic of that name be served here",
                        name,
                        manager.data_dir,
                    )
                continue
            if info is not None and info.topic_id != record.topic_id:
                self._delete_local(manager, name, "it was deleted and created again")
                info = None
            states = view.partitions_of(name)
            hosted = any(me in s.record.replicas for s in states.values())
            overrides = parse_topic_configs(record.configs)
            if info is None:
                if hosted:
                    await manager.create_topic_async(
                        name, record.partitions, overrides, topic_id=record.topic_id
                    )
                    for p in range(record.partitions):
                        self._on_partition_change((name, p))
            elif dict(info.overrides) != overrides:
                deletes = [k for k in info.overrides if k not in overrides]
                manager.alter_topic_config(name, overrides, deletes)
        for name, info in list(local.items()):
            if not info.topic_id:
                continue
            current = view.topics.get(name)
            if current is None or current.record.topic_id != info.topic_id:
                self._delete_local(manager, name, "the cluster deleted it")

    def _drop_unhosted(self, view: ClusterView) -> None:
        """Remove what a reassignment took away from this broker: a local topic of which it
        holds no replica any more is deleted, a partition it no longer holds is emptied."""
        manager = self._logs()
        me = self.broker_id
        for name, info in list(manager.topics().items()):
            topic = view.topics.get(name)
            if name.startswith("__") or topic is None or topic.record.topic_id != info.topic_id:
                continue  # internal topics are never reassigned
            states = view.partitions_of(name)
            if len(states) < topic.record.partitions or any(
                s.record.topic_id != info.topic_id for s in states.values()
            ):
                continue  # still being placed
            hosted = {p for p, s in states.items() if me in s.record.replicas}
            if not hosted:
                self._delete_local(manager, name, "its replicas moved to other brokers")
                continue
            for p in range(topic.record.partitions):
                if p not in hosted:
                    self.replicas.discard(TopicPartition(name, p))

    def _assignments(self, view: ClusterView) -> dict[TopicPartition, Assignment]:
        """The partitions with a replica here and a local log of the cluster's topic id."""
        local = self._logs().topics()
        me = self.broker_id
        out: dict[TopicPartition, Assignment] = {}
        for (name, p), versioned in view.partitions.items():
            s = versioned.record
            info = local.get(name)
            if me not in s.replicas or info is None or info.topic_id != s.topic_id:
                continue
            if s.leader == me and self.fenced is not None:
                continue  # resigned (a partition left out is dropped by the replica manager)
            address = None
            broker = view.brokers.get(s.leader)
            if s.leader != me and broker is not None:
                address = (broker.record.host, broker.record.port)
            out[TopicPartition(name, p)] = Assignment(
                s.leader, s.leader_epoch, s.replicas, s.isr, versioned.mod_revision, address
            )
        return out

    async def _propose_isr(
        self, tp: TopicPartition, leader: PartitionLeader, isr: tuple[int, ...]
    ) -> int:
        """Write ``isr`` for ``tp`` if its state is still the one this leader leads by
        (compare-and-set on its revision); the new revision, 0 when refused. A broker that
        is not registered (the cluster counts it dead: its lease ran out) never joins an
        ISR, however well it keeps up (Kafka's KIP-841): the controller takes dead brokers
        out of every ISR, and the two would undo each other's writes without end."""
        view = self.view
        current = view.partitions.get((tp.topic, tp.partition))
        if current is None:
            return 0
        s = current.record
        if s.leader != self.broker_id or s.leader_epoch != leader.epoch:
            return 0
        if any(b not in s.isr and b not in view.brokers for b in isr):
            return 0
        ordered = tuple(r for r in s.replicas if r in isr)
        state = msgspec.structs.replace(s, isr=ordered)
        key = self.keys.partition(tp.topic, tp.partition)
        result = await self.etcd.txn(
            [Compare.modified_at(key, current.mod_revision)], [Put(key, encode(state))]
        )
        return result.revision if result.succeeded else 0

    def _delete_local(self, manager: LogManager, name: str, why: str) -> None:
        count = manager.partition_count(name) or 0
        manager.delete_topic(name)
        logger.info("deleted the local log of topic %s: %s", name, why)
        for p in range(count):
            self._on_partition_change((name, p))

    def not_ready(self) -> str | None:
        """Why this broker does not serve its part of the cluster yet (``/ready``): not
        registered, or the view names it leader of partitions it does not lead yet (their
        local logs are being set up). ``None`` when ready."""
        member = self.member
        if self.fenced is not None:
            return f"fenced: {self._out()}"
        if member is None or self.broker_id not in member.view.brokers:
            return "not registered in the cluster"
        view = member.view
        waiting = sorted(
            f"{name}-{p}"
            for (name, p), v in view.partitions.items()
            if v.record.leader == self.broker_id
            and TopicPartition(name, p) not in self.replicas.leaders
            and (topic := view.topics.get(name)) is not None
            and topic.record.topic_id == v.record.topic_id  # not a deleted topic's leftover
        )
        if waiting:
            return f"not yet leading {len(waiting)} partition(s) it leads: {', '.join(waiting[:5])}"
        return None

    # --- what the request core asks ------------------------------------------------------

    def check_leader(self, topic: str, partition: int) -> None:
        """Raise unless this broker leads ``topic``/``partition`` and its log is ready."""
        if self.leaving:
            raise NotLeaderError(f"{topic}[{partition}]: {self._out()}; others lead it now")
        view = self.view
        found = view.topics.get(topic)
        if found is None or not 0 <= partition < found.record.partitions:
            raise UnknownTopicOrPartitionError(f"{topic}-{partition} does not exist")
        state = view.partitions.get((topic, partition))
        if state is None or state.record.leader == NO_LEADER:
            holders = "" if state is None else f" (its replicas: {list(state.record.replicas)})"
            raise LeaderNotAvailableError(f"{topic}[{partition}] has no leader now{holders}")
        leader = state.record.leader
        if leader != self.broker_id:
            raise NotLeaderError(f"{topic}[{partition}] is led by broker {leader}, not this one")
        info = self._logs().topics().get(topic)
        if info is None or info.topic_id != state.record.topic_id:
            raise LeaderNotAvailableError(f"{topic}[{partition}] is being set up on this broker")

    def brokers(self) -> tuple[m.BrokerInfo, ...]:
        return tuple(
            m.BrokerInfo(b, v.record.host, v.record.port, v.record.rack)
            for b, v in sorted(self.view.brokers.items())
            if not (self.leaving and b == self.broker_id)  # its view is frozen: not itself
        )

    def topic_counts(self) -> dict[str, int]:
        """Every topic of the cluster and its partition count."""
        return {name: t.record.partitions for name, t in self.view.topics.items()}

    def topic_names(self) -> list[str]:
        return sorted(self.view.topics)

    def topic_metadata(self, names: Iterable[str]) -> list[m.TopicMetadata]:
        view = self.view
        out = []
        for name in names:
            topic = view.topics.get(name)
            if topic is None:
                out.append(m.TopicMetadata(name, error_code=ErrorCode.UNKNOWN_TOPIC_OR_PARTITION))
                continue
            partitions = []
            for p in range(topic.record.partitions):
                state = view.partitions.get((name, p))
                if state is None or state.record.topic_id != topic.record.topic_id:
                    code = ErrorCode.LEADER_NOT_AVAILABLE
                    partitions.append(m.PartitionMetadata(p, error_code=code))
                    continue
                s = state.record
                if self.leaving and s.leader == self.broker_id:  # others elect a leader now
                    s = msgspec.structs.replace(s, leader=NO_LEADER)
                code = ErrorCode.LEADER_NOT_AVAILABLE if s.leader == NO_LEADER else ErrorCode.NONE
                partitions.append(
                    m.PartitionMetadata(p, code, s.leader, s.leader_epoch, s.replicas, s.isr)
                )
            out.append(m.TopicMetadata(name, partitions=tuple(partitions)))
        return out

    async def create_topic(
        self, name: str, partitions: int, replication_factor: int, configs: dict[str, str]
    ) -> None:
        """Create a topic through etcd; ``replication_factor`` -1: the cluster's default
        (``replication_factor``, cut to the live broker count)."""
        member = self.member
        if member is None:
            raise LeaderNotAvailableError("this broker has not joined its cluster yet")
        if replication_factor == -1:
            replication_factor = max(1, min(self.config.replication_factor, len(self.view.brokers)))
        await member.create_topic(name, partitions, replication_factor, configs, PLACE_WITHIN)

    async def reserve_producer_ids(self, size: int, at_least: int) -> int:
        """A block of producer ids no other broker is given (see ``ClusterMember``)."""
        if self.leaving:
            raise CoordinatorNotAvailableError(f"{self._out()}: ask another broker")
        if self.member is None:
            raise LeaderNotAvailableError("this broker has not joined its cluster yet")
        try:
            return await self.member.reserve_producer_ids(size, at_least)
        except EtcdError as exc:
            raise CoordinatorNotAvailableError(
                f"no producer id could be reserved: etcd cannot be reached ({exc})"
            ) from exc

    async def delete_topic(self, name: str) -> None:
        if self.member is None:
            raise LeaderNotAvailableError("this broker has not joined its cluster yet")
        await self.member.delete_topic(name)

    async def alter_topic_configs(self, name: str, configs: dict[str, str]) -> None:
        if self.member is None:
            raise LeaderNotAvailableError("this broker has not joined its cluster yet")
        await self.member.alter_topic_configs(name, configs)

    async def reassign(
        self, topic: str, partition: int, replicas: tuple[int, ...], validate_only: bool
    ) -> list[int]:
        """Move partition ``partition`` of ``topic`` (-1: every partition) to ``replicas``;
        the partitions whose target was set. Raises for an unknown topic or partition, an
        internal topic, and a replica list with an unknown or repeated broker or of another
        length than the topic's replication factor."""
        member = self.member
        if member is None:
            raise LeaderNotAvailableError("this broker has not joined its cluster yet")
        view = self.view
        found = view.topics.get(topic)
        if found is None:
            raise UnknownTopicOrPartitionError(f"topic {topic!r} does not exist")
        if topic.startswith("__"):
            raise InvalidRequestError(f"internal topic {topic} is not reassigned in this version")
        count = found.record.partitions
        if not -1 <= partition < count:
            raise UnknownTopicOrPartitionError(f"{topic} has partitions 0-{count - 1} only")
        factor = found.record.replication_factor
        twice = sorted({b for b in replicas if replicas.count(b) > 1})
        if twice:
            raise InvalidReplicaAssignmentError(f"broker(s) {twice} named more than once")
        if len(replicas) != factor:
            raise InvalidReplicaAssignmentError(
                f"{topic} has replication factor {factor}: name {factor} broker(s), "
                f"not {len(replicas)}"
            )
        unknown = [b for b in replicas if b not in view.brokers]
        if unknown:
            raise InvalidReplicaAssignmentError(
                f"broker(s) {unknown} are not live brokers of the cluster "
                f"(live: {view.live_brokers()})"
            )
        chosen = list(range(count)) if partition == -1 else [partition]
        if not validate_only:
            for p in chosen:
                await member.reassign(topic, p, replicas)
        return chosen

    async def rebalance(self, validate_only: bool) -> dict[tuple[str, int], tuple[int, ...]]:
        """Spread the replicas of every non-internal topic over the live brokers
        (:func:`~.decisions.spread`); the targets set (empty: nothing to move)."""
        member = self.member
        if member is None:
            raise LeaderNotAvailableError("this broker has not joined its cluster yet")
        targets = spread(self.view)
        if not validate_only:
            for (topic, p), replicas in targets.items():
                await member.reassign(topic, p, replicas)
        return targets

    def leader_of(self, topic: str, partition: int) -> BrokerRecord | None:
        """The live broker leading ``topic``/``partition``, if any."""
        view = self.view
        state = view.partitions.get((topic, partition))
        if state is None or state.record.leader == NO_LEADER:
            return None
        broker = view.brokers.get(state.record.leader)
        return None if broker is None else broker.record

    def check_replica(self, topic: str, partition: int) -> None:
        """Raise unless this broker holds a replica of ``topic``/``partition`` with its local
        log set up (what the share coordinator reads a queue from, up to its high
        watermark)."""
        view = self.view
        state = view.partitions.get((topic, partition))
        if state is None:
            raise UnknownTopicOrPartitionError(f"{topic}-{partition} does not exist")
        if self.broker_id not in state.record.replicas:
            raise InvalidRequestError(
                f"{topic}[{partition}] has no replica on broker {self.broker_id}, which "
                "coordinates this share group: in this version a queue's topic needs a replica "
                "on every broker (replication factor = broker count; docs/QUEUES.md)"
            )
        info = self._logs().topics().get(topic)
        if info is None or info.topic_id != state.record.topic_id:
            raise LeaderNotAvailableError(f"{topic}[{partition}] is being set up on this broker")
