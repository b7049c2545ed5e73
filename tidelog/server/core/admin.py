"""Metadata, topic and config APIs: everything a request core answers without the data path."""

from __future__ import annotations

from tidelog.wire import messages as m
from tidelog.wire.errors import (
    BrokerError,
    ErrorCode,
    InvalidConfigError,
    InvalidPartitionsError,
    InvalidReplicationFactorError,
    InvalidRequestError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)

from ..log import TopicPartition, validate_topic_name
from ..log.manager import MAX_PARTITIONS
from .configs import BROKER_KEYS, TOPIC_KEYS, config_text, normalise_key, parse_topic_configs
from .state import CoreState, check_client_creatable, check_client_writable, is_internal


class AdminApis:
    """Serves Metadata, CreateTopics, DeleteTopics, Describe/AlterConfigs, DescribeLogDirs,
    AlterPartitionReassignments."""

    def __init__(self, state: CoreState) -> None:
        self._state = state

    async def metadata(self, request: m.MetadataRequest) -> m.MetadataResponse:
        state = self._state
        config = state.config
        cluster = state.cluster
        if cluster is not None:
            names = (
                [n for n in cluster.topic_names() if not is_internal(n)]
                if request.topics is None
                else request.topics
            )
            failed = await state.auto_create(names) if request.allow_auto_create else {}
            topics = [
                m.TopicMetadata(name, error_code=failed[name].code) if name in failed else meta
                for name, meta in zip(names, cluster.topic_metadata(names), strict=True)
            ]
            return m.MetadataResponse(
                brokers=cluster.brokers(),
                controller_id=cluster.view.controller_id,
                cluster_id=config.cluster_id,
                topics=tuple(topics),
            )
        names = _every_topic(state) if request.topics is None else request.topics
        failed = await state.auto_create(names) if request.allow_auto_create else {}
        topics = []
        for name in names:
            try:
                if name in failed:
                    raise failed[name]
                count = state.partition_count(name)
            except BrokerError as exc:
                topics.append(m.TopicMetadata(name, error_code=exc.code))
                continue
            if count is None:
                topics.append(
                    m.TopicMetadata(name, error_code=ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
                )
                continue
            broker = config.broker_id
            partitions = tuple(
                m.PartitionMetadata(p, leader=broker, replicas=(broker,), isr=(broker,))
                for p in range(count)
            )
            topics.append(m.TopicMetadata(name, internal=is_internal(name), partitions=partitions))
        return m.MetadataResponse(
            brokers=(m.BrokerInfo(config.broker_id, config.advertised, state.port),),
            controller_id=config.broker_id,
            cluster_id=config.cluster_id,
            topics=tuple(topics),
        )

    async def create_topics(self, request: m.CreateTopicsRequest) -> m.CreateTopicsResponse:
        """Each topic's files are made in a worker thread: a topic of 10,000 partitions takes
        seconds, and every other client is served meanwhile."""
        manager = self._state.manager
        results = []
        for topic in request.topics:
            try:
                partitions = (
                    self._state.config.default_partitions
                    if topic.partitions == -1
                    else topic.partitions
                )
                if not 1 <= partitions <= MAX_PARTITIONS:
                    raise InvalidPartitionsError(
                        f"partitions must be between 1 and {MAX_PARTITIONS}, not {partitions}"
                    )
                cluster = self._state.cluster
                if cluster is None and topic.replication_factor not in (-1, 1):
                    raise InvalidReplicationFactorError(
                        f"replication factor {topic.replication_factor}: a single broker "
                        "(no --etcd) holds one replica of each partition"
                    )
                overrides = parse_topic_configs(topic.configs)
                check_client_creatable(topic.name)
                if cluster is not None:
                    validate_topic_name(topic.name)
                    manager.default_config.with_overrides(overrides)
                    if topic.name in cluster.view.topics:
                        raise TopicAlreadyExistsError(f"topic {topic.name!r} already exists")
                    if not request.validate_only:
                        await cluster.create_topic(
                            topic.name, partitions, topic.replication_factor, dict(topic.configs)
                        )
                elif request.validate_only:
                    validate_topic_name(topic.name)
                    manager.default_config.with_overrides(overrides)
                    if manager.partition_count(topic.name) is not None:
                        manager.create_topic(topic.name, partitions, overrides)  # raises
                else:
                    await manager.create_topic_async(topic.name, partitions, overrides)
            except BrokerError as exc:
                results.append(m.TopicResult(topic.name, exc.code, exc.message))
            else:
                results.append(m.TopicResult(topic.name))
        return m.CreateTopicsResponse(tuple(results))

    async def delete_topics(self, request: m.DeleteTopicsRequest) -> m.DeleteTopicsResponse:
        manager = self._state.manager
        cluster = self._state.cluster
        results = []
        for name in request.names:
            try:
                if cluster is not None:
                    check_client_writable(name, "delete")
                    await cluster.delete_topic(name)  # the logs go as the brokers see it
                    results.append(m.TopicResult(name))
                    continue
                count = manager.partition_count(name)
                if count is not None:
                    check_client_writable(name, "delete")
                manager.delete_topic(name)
                for p in range(count or 0):
                    self._state.notifier.notify((name, p))
            except BrokerError as exc:
                results.append(m.TopicResult(name, exc.code, exc.message))
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
                results.append(m.ConfigResult(resource.type, resource.name, exc.code, exc.message))
            else:
                results.append(m.ConfigResult(resource.type, resource.name, entries=tuple(entries)))
        return m.DescribeConfigsResponse(tuple(results))

    def _config_entries(self, resource: m.ConfigResource) -> list[m.ConfigEntry]:
        if resource.type == m.ConfigResourceType.BROKER:
            config = self._state.config
            return [
                m.ConfigEntry(name, config_text(getattr(config, name)), m.ConfigSource.BROKER, True)
                for name in BROKER_KEYS
            ]
        if resource.type != m.ConfigResourceType.TOPIC:
            raise InvalidRequestError(f"unknown config resource type {resource.type}")
        manager = self._state.manager
        cluster = self._state.cluster
        if cluster is not None:
            found = cluster.view.topics.get(resource.name)
            if found is None:
                raise UnknownTopicOrPartitionError(f"unknown topic {resource.name!r}")
            parsed = parse_topic_configs(found.record.configs)
            topic_config = manager.default_config.with_overrides(parsed)
        else:
            topic_config = manager.topic_config(resource.name)
        overrides = topic_config.overrides_from(manager.default_config)
        return [
            m.ConfigEntry(
                key,
                config_text(value),
                m.ConfigSource.TOPIC if key in overrides else m.ConfigSource.DEFAULT,
            )
            for key, value in topic_config.to_dict().items()
        ]

    async def alter_configs(self, request: m.AlterConfigsRequest) -> m.AlterConfigsResponse:
        results = []
        cluster = self._state.cluster
        for resource in request.resources:
            try:
                if resource.type != m.ConfigResourceType.TOPIC:
                    raise InvalidRequestError("only topic configs can be altered at run time")
                updates = parse_topic_configs(resource.set)
                unknown = [k for k in resource.delete if normalise_key(k) not in TOPIC_KEYS]
                if unknown:
                    raise InvalidConfigError(f"unknown topic config {unknown[0]!r}")
                deletes = [normalise_key(k) for k in resource.delete]
                if cluster is not None:
                    await self._alter_in_cluster(resource, deletes, request.validate_only)
                    results.append(m.ConfigResult(resource.type, resource.name))
                    continue
                self._state.manager.alter_topic_config(
                    resource.name, updates, deletes, validate_only=request.validate_only
                )
            except BrokerError as exc:
                results.append(m.ConfigResult(resource.type, resource.name, exc.code, exc.message))
            else:
                results.append(m.ConfigResult(resource.type, resource.name))
        return m.AlterConfigsResponse(tuple(results))

    async def _alter_in_cluster(
        self, resource: m.AlterConfigsResource, deletes: list[str], validate_only: bool
    ) -> None:
        """The topic's config strings in etcd, updated and checked, written back."""
        cluster = self._state.cluster
        assert cluster is not None
        found = cluster.view.topics.get(resource.name)
        if found is None:
            raise UnknownTopicOrPartitionError(f"unknown topic {resource.name!r}")
        raw = {normalise_key(k): v for k, v in found.record.configs.items()}
        for key in deletes:
            raw.pop(key, None)
        raw.update({normalise_key(k): v for k, v in resource.set.items()})
        self._state.manager.default_config.with_overrides(parse_topic_configs(raw))
        if not validate_only:
            await cluster.alter_topic_configs(resource.name, raw)

    async def alter_partition_reassignments(
        self, request: m.AlterPartitionReassignmentsRequest
    ) -> m.AlterPartitionReassignmentsResponse:
        """Set reassignment targets through etcd (any broker of a cluster); the controller
        moves the partitions. Per entry, the partitions set or the error."""
        cluster = self._state.cluster
        if cluster is None:
            raise InvalidRequestError(
                "partition reassignment needs a cluster (brokers started with --etcd)"
            )
        if request.rebalance:
            targets = await cluster.rebalance(request.validate_only)
            return m.AlterPartitionReassignmentsResponse(
                tuple(m.ReassignResult(t, p, r) for (t, p), r in sorted(targets.items()))
            )
        results = []
        for entry in request.partitions:
            try:
                chosen = await cluster.reassign(
                    entry.topic, entry.partition, entry.replicas, request.validate_only
                )
            except BrokerError as exc:
                results.append(
                    m.ReassignResult(entry.topic, entry.partition, (), exc.code, exc.message)
                )
                continue
            results += [m.ReassignResult(entry.topic, p, entry.replicas) for p in chosen]
        return m.AlterPartitionReassignmentsResponse(tuple(results))

    def describe_log_dirs(self, request: m.DescribeLogDirsRequest) -> m.DescribeLogDirsResponse:
        manager = self._state.manager
        names = _every_topic(self._state) if request.topics is None else request.topics
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
                        unreadable=tuple(
                            m.UnreadableRange(u.start_offset, u.end_offset, u.kind, u.detail)
                            for u in plog.unreadable()
                        ),
                    )
                )
        return m.DescribeLogDirsResponse(str(self._state.config.data_dir), tuple(out))


def _every_topic(state: CoreState) -> list[str]:
    """What "every topic" means to a client: the internal ones only when named."""
    return sorted(name for name in state.manager.topics() if not is_internal(name))
