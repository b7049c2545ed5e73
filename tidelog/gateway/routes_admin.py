"""Health, readiness, cluster metadata, gateway stats, topics and consumer groups."""

from __future__ import annotations

from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, Path, Response

from tidelog.client import (
    ConfigEntry,
    ConfigSource,
    OffsetAndMetadata,
    OffsetSpec,
    TopicPartition,
)

from . import models as mo
from .errors import GatewayError, describe
from .state import Gateway, gateway

router = APIRouter()
State = Annotated[Gateway, Depends(gateway)]
TopicPath = Annotated[
    str,
    Path(
        min_length=1,
        max_length=mo.MAX_TOPIC_NAME_LENGTH,
        json_schema_extra={"pattern": mo.TOPIC_PATTERN},
    ),
]
GroupPath = Annotated[str, Path(min_length=1, max_length=255, description="printable characters")]
ERRORS: Final[dict[int | str, dict[str, Any]]] = {
    code: {"model": mo.ErrorBody, "description": text}
    for code, text in (
        (400, "bad input (e.g. an invalid config)"),
        (404, "unknown topic, partition or group"),
        (409, "already exists / not empty"),
        (422, "the request does not match its schema"),
        (503, "the brokers cannot be reached"),
    )
}
_SOURCES: Final = {
    ConfigSource.DEFAULT: "default",
    ConfigSource.TOPIC: "topic",
    ConfigSource.BROKER: "broker",
}


@router.get("/health", response_model=mo.Health, tags=["health"])
async def health() -> mo.Health:
    """The gateway process is up (it does not ask the brokers)."""
    return mo.Health(status="ok")


@router.get(
    "/ready",
    response_model=mo.Readiness,
    tags=["health"],
    responses={503: {"model": mo.ErrorBody, "description": "the brokers cannot be reached"}},
)
async def ready(gw: State) -> mo.Readiness:
    """The gateway can reach the cluster (503 otherwise)."""
    try:
        brokers = await gw.clients.ready()
    except Exception as exc:
        status, code, message = describe(exc)
        raise GatewayError(503, code if status == 503 else "not_ready", message) from exc
    return mo.Readiness(status="ready", brokers=brokers)


@router.get("/v1/cluster", response_model=mo.ClusterModel, tags=["cluster"], responses=ERRORS)
async def cluster(gw: State) -> mo.ClusterModel:
    """Brokers, the controller, and every topic's partitions with leaders and replicas."""
    admin = await gw.clients.admin()
    described = await admin.describe_cluster()
    topics = await admin.describe_topics()
    return mo.ClusterModel(
        cluster_id=described.cluster_id,
        controller_id=described.controller_id,
        brokers=[
            mo.BrokerModel(node_id=b.node_id, host=b.host, port=b.port, rack=b.rack)
            for b in described.brokers
        ],
        topics=[
            mo.TopicMetadataModel(
                name=t.name,
                internal=t.internal,
                partitions=[
                    mo.PartitionModel(
                        partition=p.partition,
                        leader=p.leader,
                        replicas=list(p.replicas),
                        isr=list(p.isr),
                    )
                    for p in t.partitions
                ],
            )
            for t in topics
        ],
    )


@router.get("/v1/gateway", response_model=mo.GatewayStats, tags=["cluster"])
async def stats(gw: State) -> mo.GatewayStats:
    """What the gateway holds now: sockets, queued bytes, consumer instances, queue members."""
    s = gw.sockets
    return mo.GatewayStats(
        ws_connections=s.connections,
        ws_subscriptions=s.subscriptions,
        ws_buffered_bytes=s.buffered_bytes,
        ws_send_queue_bytes=gw.settings.ws_send_queue_bytes,
        ws_stalled=s.stalled,
        consumer_instances=len(gw.instances),
        queue_members=len(gw.queues),
    )


# --- topics ---------------------------------------------------------------------------------


@router.get("/v1/topics", response_model=mo.TopicList, tags=["topics"], responses=ERRORS)
async def list_topics(gw: State) -> mo.TopicList:
    """Every topic's name, sorted (internal topics left out)."""
    admin = await gw.clients.admin()
    return mo.TopicList(topics=await admin.list_topics())


@router.post(
    "/v1/topics",
    response_model=mo.TopicDetail,
    status_code=201,
    tags=["topics"],
    responses=ERRORS,
)
async def create_topic(body: mo.CreateTopic, gw: State) -> mo.TopicDetail:
    """Create a topic (409 if it exists) and describe it."""
    admin = await gw.clients.admin()
    await admin.create_topic(body.name, body.partitions, body.replication_factor, body.configs)
    return await _describe(gw, body.name)


@router.get("/v1/topics/{topic}", response_model=mo.TopicDetail, tags=["topics"], responses=ERRORS)
async def describe_topic(topic: TopicPath, gw: State) -> mo.TopicDetail:
    """Partitions (leader, replicas, offsets, bytes on disk) and configs of a topic."""
    return await _describe(gw, topic)


async def _describe(gw: Gateway, name: str) -> mo.TopicDetail:
    admin = await gw.clients.admin()
    (topic,) = await admin.describe_topics([name])
    tps = [TopicPartition(name, p.partition) for p in topic.partitions]
    earliest = await admin.list_offsets(dict.fromkeys(tps, OffsetSpec.EARLIEST))
    latest = await admin.list_offsets(dict.fromkeys(tps, OffsetSpec.LATEST))
    sizes: dict[int, tuple[int, int]] = {}
    for broker in await admin.describe_log_dirs([name]):
        for d in broker.partitions:
            size, segs = sizes.get(d.partition, (0, 0))
            sizes[d.partition] = (max(size, d.size_bytes), max(segs, d.segments))
    configs = (await admin.describe_configs([name])).get(name, {})
    return mo.TopicDetail(
        name=name,
        internal=topic.internal,
        partitions=[
            mo.PartitionDetail(
                partition=p.partition,
                leader=p.leader,
                replicas=list(p.replicas),
                isr=list(p.isr),
                earliest_offset=earliest[tp].offset,
                latest_offset=latest[tp].offset,
                size_bytes=sizes.get(p.partition, (0, 0))[0],
                segments=sizes.get(p.partition, (0, 0))[1],
            )
            for p, tp in zip(topic.partitions, tps, strict=True)
        ],
        configs=_configs(configs),
    )


def _configs(entries: dict[str, ConfigEntry]) -> list[mo.ConfigModel]:
    return [
        mo.ConfigModel(
            name=e.name,
            value=None if e.sensitive else e.value,
            source=_SOURCES.get(ConfigSource(e.source), "default"),  # type: ignore[arg-type]
            read_only=e.read_only,
            sensitive=e.sensitive,
        )
        for e in sorted(entries.values(), key=lambda e: e.name)
    ]


@router.get(
    "/v1/topics/{topic}/configs",
    response_model=mo.TopicConfigs,
    tags=["topics"],
    responses=ERRORS,
)
async def topic_configs(topic: TopicPath, gw: State) -> mo.TopicConfigs:
    """A topic's config entries."""
    admin = await gw.clients.admin()
    await admin.describe_topics([topic])  # 404 for an unknown topic
    configs = (await admin.describe_configs([topic])).get(topic, {})
    return mo.TopicConfigs(name=topic, configs=_configs(configs))


@router.patch(
    "/v1/topics/{topic}/configs",
    response_model=mo.TopicConfigs,
    tags=["topics"],
    responses=ERRORS,
)
async def alter_configs(topic: TopicPath, body: mo.AlterConfigs, gw: State) -> mo.TopicConfigs:
    """Set some config keys and reset others to their defaults; answers the new configs."""
    admin = await gw.clients.admin()
    await admin.describe_topics([topic])
    await admin.alter_configs(topic, body.set, body.delete)
    configs = (await admin.describe_configs([topic])).get(topic, {})
    return mo.TopicConfigs(name=topic, configs=_configs(configs))


@router.delete("/v1/topics/{topic}", status_code=204, tags=["topics"], responses=ERRORS)
async def delete_topic(topic: TopicPath, gw: State) -> Response:
    """Delete a topic and its data (404 if it does not exist)."""
    admin = await gw.clients.admin()
    await admin.delete_topics([topic])
    return Response(status_code=204)


# --- groups ---------------------------------------------------------------------------------


@router.get("/v1/groups", response_model=mo.GroupList, tags=["groups"], responses=ERRORS)
async def list_groups(gw: State) -> mo.GroupList:
    """Every consumer group with members or committed offsets."""
    admin = await gw.clients.admin()
    return mo.GroupList(
        groups=[
            mo.GroupSummary(group_id=g.group_id, state=g.state, members=g.member_count)
            for g in await admin.list_groups()
        ]
    )


@router.get("/v1/groups/{group}", response_model=mo.GroupDetail, tags=["groups"], responses=ERRORS)
async def describe_group(group: GroupPath, gw: State) -> mo.GroupDetail:
    """A group's state, members and, per partition, committed offset, end offset and lag."""
    admin = await gw.clients.admin()
    (d,) = await admin.describe_groups([group])
    return mo.GroupDetail(
        group_id=d.group_id,
        state=d.state,
        epoch=d.group_epoch,
        assignor=d.assignor,
        members=[
            mo.GroupMember(
                member_id=mb.member_id,
                client_id=mb.client_id,
                client_host=mb.client_host,
                topics=list(mb.subscribed_topics),
                assignment=[
                    mo.TopicPartitionModel(topic=tp.topic, partition=tp.partition)
                    for tp in sorted(mb.assignment)
                ],
            )
            for mb in d.members
        ],
        offsets=[
            mo.GroupPartitionLag(
                topic=o.topic,
                partition=o.partition,
                committed=o.committed,
                end_offset=o.end_offset,
                lag=o.lag,
                member_id=o.member_id,
            )
            for o in d.offsets
        ],
        lag=d.lag,
    )


@router.post(
    "/v1/groups/{group}/offsets",
    response_model=mo.Committed,
    tags=["groups"],
    responses=ERRORS,
)
async def commit_group_offsets(group: GroupPath, body: mo.CommitOffsets, gw: State) -> mo.Committed:
    """Commit these offsets for the group (the next offset to consume per partition): only
    while the group has no members (409 otherwise)."""
    admin = await gw.clients.admin()
    for o in body.offsets:
        parts = await admin.describe_topics([o.topic])
        if o.partition not in {p.partition for p in parts[0].partitions}:
            raise GatewayError(
                404, "unknown_topic_or_partition", f"{o.topic}[{o.partition}] does not exist"
            )
    await admin.commit_offsets(
        group,
        {
            TopicPartition(o.topic, o.partition): OffsetAndMetadata(o.offset, o.metadata)
            for o in body.offsets
        },
    )
    return mo.Committed(offsets=body.offsets)


@router.delete("/v1/groups/{group}", status_code=204, tags=["groups"], responses=ERRORS)
async def delete_group(group: GroupPath, gw: State) -> Response:
    """Delete an empty group and its committed offsets (409 while it has members)."""
    admin = await gw.clients.admin()
    await admin.delete_groups([group])
    return Response(status_code=204)
