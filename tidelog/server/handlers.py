"""The broker's request core: one method per API, no sockets.

:class:`BrokerCore` turns a decoded request (and its data section) into a response (and its
data section). Produce appends synchronously, before the handler's first ``await``: requests
are started in arrival order, so pipelined produces to one partition land in order.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any, Final

from tidelog import __version__
from tidelog.wire import messages as m
from tidelog.wire.api import split_data, supported_versions
from tidelog.wire.errors import (
    BrokerError,
    BrokerShuttingDownError,
    CorruptBatchError,
    CorruptMessageError,
    ErrorCode,
    InvalidConfigError,
    InvalidPartitionsError,
    InvalidReplicationFactorError,
    InvalidRequestError,
    UnknownApiError,
    UnknownTopicOrPartitionError,
)
from tidelog.wire.records import Buffer, batch_size_at

from .config import BrokerConfig
from .connection import Reply, Session
from .fetch import AppendNotifier
from .groups import GroupCoordinator
from .log import (
    FlushPolicy,
    GroupCommitter,
    LogManager,
    PartitionLog,
    TopicConfig,
    TopicPartition,
    validate_topic_name,
)

log = logging.getLogger("tidelog.server.handlers")

MAX_PARTITIONS: Final = 10_000
_INT64_MAX: Final = 2**63 - 1


def _error(exc: BrokerError) -> tuple[int, str]:
    return int(exc.code), exc.message


class BrokerCore:
    """Serves every API of a single broker from its :class:`LogManager`."""

    def __init__(self, config: BrokerConfig) -> None:
        self.config = config
        self.notifier = AppendNotifier()
        self.logs: LogManager | None = None
        self.groups: GroupCoordinator | None = None
        self._port = config.port
        self._shutting_down = False

    # --- lifecycle ------------------------------------------------------------------------

    async def open(self) -> None:
        defaults = TopicConfig().with_overrides(parse_topic_configs(self.config.topic_defaults))
        manager = LogManager(
            self.config.data_dir,
            defaults=defaults,
            retention_check_interval_ms=self.config.retention_check_interval_ms,
        )
        manager.open()
        self.logs = manager
        await manager.start()
        groups = GroupCoordinator.from_config(self.config, manager)
        try:
            await groups.start()
        except BaseException:
            self.logs = None
            await manager.stop()
            raise
        self.groups = groups

    def set_advertised_port(self, port: int) -> None:
        self._port = port

    def begin_shutdown(self) -> None:
        self._shutting_down = True
        self.notifier.notify_all()
        if self.groups is not None:
            self.groups.begin_shutdown()

    async def shutdown(self) -> None:
        """Stop housekeeping, let fsyncs finish, close every log cleanly."""
        groups, self.groups = self.groups, None
        if groups is not None:
            await groups.stop()
        manager, self.logs = self.logs, None
        if manager is not None:
            await manager.stop()

    @property
    def manager(self) -> LogManager:
        if self.logs is None:
            raise BrokerShuttingDownError("the broker is not running")
        return self.logs

    # --- dispatch -------------------------------------------------------------------------

    def handshake(self, request: m.HandshakeRequest, session: Session) -> m.HandshakeResponse:
        return m.HandshakeResponse(
            api_versions=supported_versions(),
            broker_id=self.config.broker_id,
            cluster_id=self.config.cluster_id,
            server_version=__version__,
            max_frame_size=self.config.max_frame_size,
        )

    async def handle(self, request: m.Request, data: bytearray, session: Session) -> Reply:
        match request:
            case m.ProduceRequest():
                return await self.produce(request, data)
            case m.FetchRequest():
                return await self.fetch(request)
            case m.MetadataRequest():
                return self.metadata(request), ()
            case m.ListOffsetsRequest():
                return self.list_offsets(request), ()
            case m.CreateTopicsRequest():
                return self.create_topics(request), ()
            case m.DeleteTopicsRequest():
                return self.delete_topics(request), ()
            case m.DescribeConfigsRequest():
                return self.describe_configs(request), ()
            case m.AlterConfigsRequest():
                return self.alter_configs(request), ()
            case m.DescribeLogDirsRequest():
                return self.describe_log_dirs(request), ()
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
                host = session.peer_host
                return await self.groups.handle(request, host), ()
            case _:
                raise UnknownApiError(f"{type(request).__name__} is not served by this broker yet")

    # --- metadata and topics ----------------------------------------------------------------

    def metadata(self, request: m.MetadataRequest) -> m.MetadataResponse:
        manager = self.manager
        names = sorted(manager.topics()) if request.topics is None else request.topics
        topics = []
        for name in names:
            try:
                validate_topic_name(name)
                count = manager.partition_count(name)
                if count is None and request.allow_auto_create and self.config.auto_create_topics:
                    count = self._auto_create(name)
            except BrokerError as exc:
                topics.append(m.TopicMetadata(name, error_code=exc.code))
                continue
            if count is None:
                topics.append(
                    m.TopicMetadata(name, error_code=ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
                )
                continue
            broker = self.config.broker_id
            partitions = tuple(
                m.PartitionMetadata(p, leader=broker, replicas=(broker,), isr=(broker,))
                for p in range(count)
            )
            topics.append(m.TopicMetadata(name, partitions=partitions))
        return m.MetadataResponse(
            brokers=(m.BrokerInfo(self.config.broker_id, self.config.advertised, self._port),),
            controller_id=self.config.broker_id,
            cluster_id=self.config.cluster_id,
            topics=tuple(topics),
        )

    def _auto_create(self, name: str) -> int:
        partitions = self.config.default_partitions
        self.manager.create_topic(name, partitions)
        log.info("auto-created topic %s with %d partitions", name, partitions)
        return partitions

    def create_topics(self, request: m.CreateTopicsRequest) -> m.CreateTopicsResponse:
        results = []
        for topic in request.topics:
            try:
                partitions = (
                    self.config.default_partitions if topic.partitions == -1 else topic.partitions
                )
                if not 1 <= partitions <= MAX_PARTITIONS:
                    raise InvalidPartitionsError(
                        f"partitions must be between 1 and {MAX_PARTITIONS}, not {partitions}"
                    )
                if topic.replication_factor not in (-1, 1):
                    raise InvalidReplicationFactorError(
                        f"replication factor {topic.replication_factor} needs more brokers; "
                        "a single broker supports 1"
                    )
                overrides = parse_topic_configs(topic.configs)
                if request.validate_only:
                    validate_topic_name(topic.name)
                    self.manager.default_config.with_overrides(overrides)
                    if self.manager.partition_count(topic.name) is not None:
                        self.manager.create_topic(topic.name, partitions, overrides)  # raises
                else:
                    self.manager.create_topic(topic.name, partitions, overrides)
            except BrokerError as exc:
                results.append(m.TopicResult(topic.name, *_error(exc)))
            else:
                results.append(m.TopicResult(topic.name))
        return m.CreateTopicsResponse(tuple(results))

    def delete_topics(self, request: m.DeleteTopicsRequest) -> m.DeleteTopicsResponse:
        results = []
        for name in request.names:
            try:
                count = self.manager.partition_count(name)
                self.manager.delete_topic(name)
                for p in range(count or 0):
                    self.notifier.notify((name, p))
            except BrokerError as exc:
                results.append(m.TopicResult(name, *_error(exc)))
            else:
                results.append(m.TopicResult(name))
        return m.DeleteTopicsResponse(tuple(results))

    def describe_configs(self, request: m.DescribeConfigsRequest) -> m.DescribeConfigsResponse:
        results = []
        for resource in request.resources:
            try:
                entries = self._config_entries(resource)
                if request.keys is not None:
                    entries = [e for e in entries if e.name in request.keys]
            except BrokerError as exc:
                results.append(m.ConfigResult(resource.type, resource.name, *_error(exc)))
            else:
                results.append(m.ConfigResult(resource.type, resource.name, entries=tuple(entries)))
        return m.DescribeConfigsResponse(tuple(results))

    def _config_entries(self, resource: m.ConfigResource) -> list[m.ConfigEntry]:
        if resource.type == m.ConfigResourceType.BROKER:
            return [
                m.ConfigEntry(name, _text(getattr(self.config, name)), m.ConfigSource.BROKER, True)
                for name in _BROKER_KEYS
            ]
        if resource.type != m.ConfigResourceType.TOPIC:
            raise InvalidRequestError(f"unknown config resource type {resource.type}")
        config = self.manager.topic_config(resource.name)
        overrides = config.overrides_from(self.manager.default_config)
        return [
            m.ConfigEntry(
                key,
                _text(value),
                m.ConfigSource.TOPIC if key in overrides else m.ConfigSource.DEFAULT,
            )
            for key, value in config.to_dict().items()
        ]

    def alter_configs(self, request: m.AlterConfigsRequest) -> m.AlterConfigsResponse:
        results = []
        for resource in request.resources:
            try:
                if resource.type != m.ConfigResourceType.TOPIC:
                    raise InvalidRequestError("only topic configs can be altered at run time")
                updates = parse_topic_configs(resource.set)
                unknown = [k for k in resource.delete if _normalise(k) not in _TOPIC_KEYS]
                if unknown:
                    raise InvalidConfigError(f"unknown topic config {unknown[0]!r}")
                deletes = [_normalise(k) for k in resource.delete]
                self.manager.alter_topic_config(
                    resource.name, updates, deletes, validate_only=request.validate_only
                )
            except BrokerError as exc:
                results.append(m.ConfigResult(resource.type, resource.name, *_error(exc)))
            else:
                results.append(m.ConfigResult(resource.type, resource.name))
        return m.AlterConfigsResponse(tuple(results))

    def describe_log_dirs(self, request: m.DescribeLogDirsRequest) -> m.DescribeLogDirsResponse:
        manager = self.manager
        names = sorted(manager.topics()) if request.topics is None else request.topics
        out = []
        for name in names:
            count = manager.partition_count(name)
            if count is None:
                code = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
                out.append(m.LogDirPartition(name, -1, error_code=code))
                continue
            for p in range(count):
                plog = manager.get_log(TopicPartition(name, p))
                out.append(
                    m.LogDirPartition(
                        name,
                        p,
                        size_bytes=plog.size_in_bytes,
                        segments=len(plog.segments),
                        log_start_offset=plog.log_start_offset,
                        log_end_offset=plog.log_end_offset,
                    )
                )
        return m.DescribeLogDirsResponse(str(self.config.data_dir), tuple(out))

    # --- produce, fetch, offsets ------------------------------------------------------------

    async def produce(self, request: m.ProduceRequest, data: bytearray) -> Reply:
        if self._shutting_down:
            raise BrokerShuttingDownError()
        if request.acks not in (m.Acks.NONE, m.Acks.LEADER, m.Acks.ALL):
            raise InvalidRequestError(f"acks must be 0, 1 or -1, not {request.acks}")
        sections = split_data([p.size for p in request.partitions], data)
        results: list[m.ProducePartitionResult] = []
        to_sync: list[tuple[int, PartitionLog, GroupCommitter, int]] = []
        for index, (target, section) in enumerate(zip(request.partitions, sections, strict=True)):
            try:
                tp = TopicPartition(target.topic, target.partition)
                plog = self._log_for_produce(tp)
                batches = _split_batches(section)
                base = plog.log_end_offset
                try:
                    for batch in batches:
                        plog.append(batch)
                except BrokerError:
                    if plog.log_end_offset > base and plog.offline is None:
                        plog.truncate_to(base)  # all of a partition's batches, or none
                    raise
                end = plog.log_end_offset
                if request.acks == m.Acks.ALL or plog.config.flush_policy is FlushPolicy.ACK:
                    # Durable first, visible after: consumers never see what a crash could take.
                    to_sync.append((index, plog, self.manager.committer(tp), end))
                else:
                    self._advance(tp, plog, end)
                results.append(
                    m.ProducePartitionResult(
                        target.topic,
                        target.partition,
                        base_offset=base,
                        log_start_offset=plog.log_start_offset,
                    )
                )
            except BrokerError as exc:
                log.debug("produce to %s-%d failed: %s", target.topic, target.partition, exc)
                results.append(
                    m.ProducePartitionResult(target.topic, target.partition, *_error(exc))
                )
        for index, plog, committer, offset in to_sync:
            try:
                await committer.flush_until(offset)
            except BrokerError as exc:
                r = results[index]
                results[index] = m.ProducePartitionResult(r.topic, r.partition, *_error(exc))
            else:
                target = request.partitions[index]
                tp = TopicPartition(target.topic, target.partition)
                self._advance(tp, plog, offset)
        if request.acks == m.Acks.NONE:
            return None
        return m.ProduceResponse(tuple(results)), ()

    def _advance(self, tp: TopicPartition, plog: PartitionLog, offset: int) -> None:
        """Move the high watermark (single broker: the log end) and wake waiting fetches."""
        if offset > plog.high_watermark:
            plog.update_high_watermark(offset)
            self.notifier.notify(tp)

    def _log_for_produce(self, tp: TopicPartition) -> PartitionLog:
        manager = self.manager
        validate_topic_name(tp.topic)
        count = manager.partition_count(tp.topic)
        if count is None and self.config.auto_create_topics:
            count = self._auto_create(tp.topic)
        if count is None or not 0 <= tp.partition < count:
            raise UnknownTopicOrPartitionError(f"{tp} does not exist")
        return manager.get_log(tp)

    def _log(self, topic: str, partition: int) -> PartitionLog:
        count = self.manager.partition_count(topic)
        if count is None or not 0 <= partition < count:
            raise UnknownTopicOrPartitionError(f"{topic}-{partition} does not exist")
        return self.manager.get_log(TopicPartition(topic, partition))

    async def fetch(self, request: m.FetchRequest) -> Reply:
        max_wait = min(max(request.max_wait_ms, 0), self.config.max_fetch_wait_ms) / 1000
        deadline = time.monotonic() + max_wait
        min_bytes = max(request.min_bytes, 0)
        max_bytes = self.config.fetch_budget(request.max_bytes)
        tps = [(p.topic, p.partition) for p in request.partitions]
        while True:
            results, chunks, total = self._read(request.partitions, max_bytes)
            remaining = deadline - time.monotonic()
            if total >= min_bytes or remaining <= 0 or self._shutting_down:
                return m.FetchResponse(tuple(results)), chunks
            if any(r.error_code for r in results):
                return m.FetchResponse(tuple(results)), chunks
            await self.notifier.wait(tps, remaining)

    def _read(
        self, partitions: Sequence[m.FetchPartition], max_bytes: int
    ) -> tuple[list[m.FetchPartitionResult], list[Buffer], int]:
        results: list[m.FetchPartitionResult] = []
        chunks: list[Buffer] = []
        total = 0
        for p in partitions:
            try:
                plog = self._log(p.topic, p.partition)
                # The first partition with data always gets at least one whole batch (so a
                # consumer never stalls on a large batch); the rest share what is left.
                budget = min(max(p.max_bytes, 0), max_bytes - total)
                payload = b""
                if total == 0 or budget > 0:
                    read = plog.read(p.offset, budget, max_offset=plog.high_watermark)
                    if total == 0 or read.size <= budget:
                        payload = read.read_bytes()
            except BrokerError as exc:
                results.append(m.FetchPartitionResult(p.topic, p.partition, *_error(exc)))
                continue
            chunks.append(payload)
            total += len(payload)
            results.append(
                m.FetchPartitionResult(
                    p.topic,
                    p.partition,
                    high_watermark=plog.high_watermark,
                    last_stable_offset=plog.high_watermark,
                    log_start_offset=plog.log_start_offset,
                    size=len(payload),
                )
            )
        return results, chunks, total

    def list_offsets(self, request: m.ListOffsetsRequest) -> m.ListOffsetsResponse:
        results = []
        for p in request.partitions:
            try:
                plog = self._log(p.topic, p.partition)
                if p.timestamp == m.OffsetSpec.LATEST:
                    offset, ts = plog.high_watermark, -1
                elif p.timestamp == m.OffsetSpec.EARLIEST:
                    offset, ts = plog.log_start_offset, -1
                elif p.timestamp < 0:
                    raise InvalidRequestError(f"bad ListOffsets timestamp {p.timestamp}")
                else:
                    found = plog.offset_for_timestamp(p.timestamp)
                    offset, ts = (-1, -1) if found is None else (found.offset, found.timestamp)
            except BrokerError as exc:
                results.append(m.ListOffsetsPartitionResult(p.topic, p.partition, *_error(exc)))
            else:
                results.append(
                    m.ListOffsetsPartitionResult(p.topic, p.partition, offset=offset, timestamp=ts)
                )
        return m.ListOffsetsResponse(tuple(results))


def _split_batches(section: memoryview) -> list[memoryview]:
    """The batches of one partition's section; the log validates each one fully."""
    out = []
    pos = 0
    end = len(section)
    if end == 0:
        raise InvalidRequestError("no record batch for this partition")
    try:
        while pos < end:
            size = batch_size_at(section, pos)
            if size is None or pos + size > end:
                raise CorruptBatchError(f"data ends inside a batch at byte {pos}")
            out.append(section[pos : pos + size])
            pos += size
    except CorruptBatchError as exc:
        raise CorruptMessageError(str(exc)) from None
    return out


# --- topic configs from strings ---------------------------------------------------------------

_TOPIC_KEYS: Final = frozenset(TopicConfig().to_dict())
_BROKER_KEYS: Final = (
    "broker_id",
    "host",
    "port",
    "data_dir",
    "max_frame_size",
    "auto_create_topics",
    "default_partitions",
)


def _normalise(key: str) -> str:
    """Accept Kafka-style dotted keys too: ``retention.ms`` means ``retention_ms``."""
    return key.strip().replace(".", "_").replace("-", "_")


def parse_topic_configs(raw: dict[str, str]) -> dict[str, Any]:
    """Topic config strings (from the wire, a CLI or a TOML file) as typed values.

    Raises :class:`InvalidConfigError` naming the bad key.
    """
    defaults = TopicConfig().to_dict()
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = _normalise(key)
        if name not in defaults:
            raise InvalidConfigError(
                f"unknown topic config {key!r}; known: {', '.join(sorted(defaults))}"
            )
        if isinstance(defaults[name], int):
            try:
                number = int(str(value).strip().replace("_", ""))
            except ValueError:
                raise InvalidConfigError(f"{key} must be an integer, not {value!r}") from None
            if not -_INT64_MAX <= number <= _INT64_MAX:
                raise InvalidConfigError(f"{key} is out of range")
            out[name] = number
        else:
            out[name] = str(value).strip()
    return out


def _text(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return str(getattr(value, "value", value))
