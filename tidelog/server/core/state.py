"""What every part of the request core shares: config, clock, logs, and the topic lookups."""

from __future__ import annotations

import logging

from tidelog.wire.errors import BrokerShuttingDownError, UnknownTopicOrPartitionError

from ..config import BrokerConfig
from ..log import LogManager, PartitionLog, TopicPartition, validate_topic_name
from .durability import WritePath
from .notifier import AppendNotifier
from .types import DeadlineClock

log = logging.getLogger("tidelog.server.core")


class CoreState:
    """The broker's running state as the request handlers see it."""

    def __init__(self, config: BrokerConfig, clock: DeadlineClock) -> None:
        self.config = config
        self.clock = clock
        self.notifier = AppendNotifier()
        self.logs: LogManager | None = None
        self.writes: WritePath | None = None
        self.port = config.port
        """The advertised port (the bound one once the broker listens)."""
        self.shutting_down = False

    def attach(self, logs: LogManager | None) -> None:
        self.logs = logs
        self.writes = None if logs is None else WritePath(logs, self.notifier.notify)

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

    def log(self, topic: str, partition: int) -> PartitionLog:
        """An existing partition's log; :class:`UnknownTopicOrPartitionError` otherwise."""
        count = self.manager.partition_count(topic)
        if count is None or not 0 <= partition < count:
            raise UnknownTopicOrPartitionError(f"{topic}-{partition} does not exist")
        return self.manager.get_log(TopicPartition(topic, partition))

    def partition_count(self, name: str, *, create: bool) -> int | None:
        """A topic's partition count; with ``create``, an unknown topic is auto-created when
        the broker allows it. Raises for an invalid name."""
        validate_topic_name(name)
        count = self.manager.partition_count(name)
        if count is None and create and self.config.auto_create_topics:
            count = self.config.default_partitions
            self.manager.create_topic(name, count)
            log.info("auto-created topic %s with %d partitions", name, count)
        return count
