"""What every part of the request core shares: config, clock, logs, and the topic lookups."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from tidelog.wire.errors import (
    BrokerError,
    BrokerShuttingDownError,
    InvalidTopicNameError,
    PolicyViolationError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)

from ..config import BrokerConfig
from ..groups import INTERNAL_PREFIX
from ..log import LogManager, PartitionLog, TopicPartition, validate_topic_name
from .durability import WritePath
from .idempotence import ProducerIds, ProducerStates
from .notifier import AppendNotifier
from .types import DeadlineClock

if TYPE_CHECKING:
    from ..cluster.role import ClusterRole
    from ..replication.serving import LeaderApis

log = logging.getLogger("tidelog.server.core")


def is_internal(topic: str) -> bool:
    """Whether ``topic`` is one of the broker's internal topics (``__consumer_offsets``...):
    names starting with ``__`` are reserved for them."""
    return topic.startswith(INTERNAL_PREFIX)


def check_client_writable(topic: str, action: str) -> None:
    """Refuse a client's ``action`` (produce, delete) on an internal topic: only the broker
    writes them."""
    if is_internal(topic):
        raise PolicyViolationError(
            f"{topic} is an internal topic of the broker: clients cannot {action} it"
        )


def check_client_creatable(topic: str) -> None:
    """Refuse a client's creation of a topic with a reserved name."""
    if is_internal(topic):
        raise InvalidTopicNameError(
            f"topic names starting with {INTERNAL_PREFIX!r} are reserved for the broker's "
            f"internal topics: {topic!r}"
        )


class CoreState:
    """The broker's running state as the request handlers see it."""

    def __init__(self, config: BrokerConfig, clock: DeadlineClock) -> None:
        self.config = config
        self.clock = clock
        self.notifier = AppendNotifier()
        self.logs: LogManager | None = None
        self.writes: WritePath | None = None
        self.producer_ids: ProducerIds | None = None
        self.port = config.port
        """The advertised port (the bound one once the broker listens)."""
        self.shutting_down = False
        self.cluster: ClusterRole | None = None
        """This broker's part in a cluster; ``None`` for a single broker."""
        self.produce_guard: Callable[[str], None] | None = None
        """Raises ``QueueFullError`` for a topic whose queue is full (set by the share
        coordinator while a share group has a backlog limit; ``None``: no check)."""
        self.replication: LeaderApis | None = None
        """In a cluster: serves the fetches of followers and OffsetsForLeaderEpoch."""
        self._creating: dict[str, asyncio.Future[None]] = {}
        """Topics being auto-created, each with the future its creating request sets once it
        goes on: later requests naming the topic wait for it."""

    def attach(self, logs: LogManager | None) -> None:
        self.logs = logs
        self.writes = None
        self.producer_ids = None
        if logs is not None:
            producers = ProducerStates(logs, self.config.producer_id_expiration_ms)
            self.writes = WritePath(logs, self.notifier.notify, producers)
            self.producer_ids = ProducerIds(logs)

    @property
    def manager(self) -> LogManager:
        if self.logs is None:
            raise BrokerShuttingDownError("the broker is not running")
        return self.logs

    @property
    def write_path(self) -> WritePath:
        if self.writes is None:
            raise BrokerShuttingDownError("the broker is not running")
        return self.writes

    def serving(self, topic: str, partition: int) -> None:
        """Raise unless this broker serves ``topic``/``partition``: it exists and, in a
        cluster, this broker leads it (NOT_LEADER, LEADER_NOT_AVAILABLE otherwise)."""
        count = self.partition_count(topic)
        if count is None or not 0 <= partition < count:
            raise UnknownTopicOrPartitionError(f"{topic}-{partition} does not exist")
        if self.cluster is not None:
            self.cluster.check_leader(topic, partition)

    def log(self, topic: str, partition: int) -> PartitionLog:
        """The log of a partition this broker serves (see :meth:`serving`)."""
        self.serving(topic, partition)
        return self.manager.get_log(TopicPartition(topic, partition))

    def partition_count(self, name: str) -> int | None:
        """A topic's partition count (the cluster's, in a cluster), ``None`` if it does not
        exist. Raises for an invalid name."""
        if self.cluster is None and self.logs is not None and type(name) is str:
            count = self.logs.partition_count(name)
            if count is not None:
                return count  # a topic's name was checked when it was created
        validate_topic_name(name)
        if self.cluster is not None:
            topic = self.cluster.view.topics.get(name)
            return None if topic is None else topic.record.partitions
        return self.manager.partition_count(name)

    def creating(self, names: Iterable[str]) -> bool:
        """Whether any of ``names`` is unknown, or an earlier request is auto-creating topics
        (it appends once they exist: a later request waits its turn, whatever it names)."""
        if self._creating:
            return True
        return any(self._unknown(n) for n in names)

    def _unknown(self, name: str) -> bool:
        try:
            return self.partition_count(name) is None
        except BrokerError:
            return False  # an invalid name: the caller reports it

    async def auto_create(self, names: Iterable[str]) -> dict[str, BrokerError]:
        """Create the unknown topics among ``names`` with the default partition count, when
        the broker allows it, at most ``max_auto_create_per_request`` of them; the errors of
        those that could not be created, by name.

        The files are made in a worker thread. A request that comes while an earlier request
        is creating topics waits until that request has resumed (and appended), so pipelined
        produces still land in the order they were sent: to the new topic, and to the others
        the earlier request named."""
        errors: dict[str, BrokerError] = {}
        creating = self._creating
        wanted: list[str] = []
        earlier: set[asyncio.Future[None]] = set(creating.values())
        for name in dict.fromkeys(names):
            if name in creating:
                continue
            try:
                if self.partition_count(name) is None and self.config.auto_create_topics:
                    check_client_creatable(name)
                    wanted.append(name)
            except BrokerError as exc:
                errors[name] = exc  # an invalid or reserved name
                continue
        cap = self.config.max_auto_create_per_request
        for name in wanted[cap:]:
            errors[name] = PolicyViolationError(
                f"a request may auto-create at most {cap} topics (max_auto_create_per_request); "
                "create the others with CreateTopics"
            )
        wanted = wanted[:cap]
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for name in wanted:
            creating[name] = mine
        try:
            for future in earlier:
                await asyncio.shield(future)
            count = self.config.default_partitions
            for name in wanted:
                try:
                    if self.cluster is not None:
                        await self.cluster.create_topic(name, count, -1, {})
                    else:
                        await self.manager.create_topic_async(name, count)
                except TopicAlreadyExistsError:
                    pass  # another broker created it meanwhile
                except BrokerError as exc:
                    errors[name] = exc
                else:
                    log.info("auto-created topic %s with %d partitions", name, count)
        finally:
            for name in wanted:
                del creating[name]
            mine.set_result(None)
        return errors
