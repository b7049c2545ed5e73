"""Stateful consumer instances in a group (REST Proxy v2 style): create, subscribe, poll,
commit, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response

from tidelog.client import TopicPartition

from . import models as mo
from .formats import encode_frame
from .instances import Instance
from .polling import poll
from .routes_admin import ERRORS, GroupPath, State
from .routes_records import RECORD_ERRORS

router = APIRouter(tags=["consumers"])
NamePath = Annotated[str, Path(min_length=1, max_length=200, pattern=mo.INSTANCE_NAME_PATTERN)]
BASE = "/v1/consumers/{group}/instances/{name}"
CONSUMER_ERRORS = {
    **RECORD_ERRORS,
    429: {"model": mo.ErrorBody, "description": "max_consumer_instances reached"},
}


@router.post(
    "/v1/consumers/{group}",
    response_model=mo.ConsumerCreated,
    status_code=201,
    responses=CONSUMER_ERRORS,
)
async def create(
    group: GroupPath, body: mo.CreateConsumer, gw: State, request: Request
) -> mo.ConsumerCreated:
    """A consumer instance in ``group``: its records are rendered in ``format``; partitions
    without a committed offset start per ``auto_offset_reset``. It is closed after
    ``consumer_idle_timeout_s`` unused."""
    instance = await gw.instances.create(
        group, body.name, body.format, body.auto_offset_reset, body.auto_commit
    )
    path = BASE.format(group=group, name=instance.name)
    return mo.ConsumerCreated(
        instance_id=instance.name, base_uri=str(request.base_url).rstrip("/") + path
    )


@router.delete(BASE, status_code=204, responses=ERRORS)
async def delete(group: GroupPath, name: NamePath, gw: State) -> Response:
    """Close the instance: it leaves the group (auto-commit first, if on)."""
    await gw.instances.delete(group, name)
    return Response(status_code=204)


@router.post(BASE + "/subscription", status_code=204, responses=ERRORS)
async def subscribe(group: GroupPath, name: NamePath, body: mo.Subscription, gw: State) -> Response:
    """Subscribe to topics (404 for one that does not exist); replaces the subscription."""
    instance = await gw.instances.get(group, name)
    admin = await gw.clients.admin()
    await admin.describe_topics(body.topics)
    async with instance.lock:
        instance.consumer.subscribe(body.topics)
        instance.topics = list(body.topics)
    return Response(status_code=204)


@router.get(BASE + "/subscription", response_model=mo.Assignment, responses=ERRORS)
async def subscription(group: GroupPath, name: NamePath, gw: State) -> mo.Assignment:
    """The subscribed topics and the partitions assigned now."""
    instance = await gw.instances.get(group, name)
    return _assignment(instance)


def _assignment(instance: Instance) -> mo.Assignment:
    return mo.Assignment(
        topics=instance.topics,
        partitions=[
            mo.TopicPartitionModel(topic=tp.topic, partition=tp.partition)
            for tp in sorted(instance.consumer.assignment())
        ],
    )


@router.get(BASE + "/records", response_model=mo.RecordList, responses=CONSUMER_ERRORS)
async def records(
    group: GroupPath,
    name: NamePath,
    gw: State,
    timeout_ms: Annotated[int, Query(ge=0, description="wait this long for records")] = 0,
    max_records: Annotated[int, Query(ge=1)] = 500,
) -> Response:
    """The next records of the subscription (waiting up to ``timeout_ms``). Records handed
    out count as consumed: commit them with ``POST .../offsets``."""
    instance = await gw.instances.get(group, name)
    s = gw.settings
    timeout_ms = min(timeout_ms, s.max_fetch_wait_ms)
    max_records = min(max_records, s.max_fetch_records)
    async with instance.lock:
        out = await poll(instance.consumer, instance.format, timeout_ms / 1000, max_records)
    instance.last_used = gw.instances.clock()
    return Response(encode_frame({"records": out}), media_type="application/json")


@router.post(BASE + "/offsets", response_model=mo.Committed, responses=CONSUMER_ERRORS)
async def commit(
    group: GroupPath, name: NamePath, body: mo.CommitRequest, gw: State
) -> mo.Committed:
    """Commit the given offsets, or (no ``offsets``) the positions of everything handed out."""
    instance = await gw.instances.get(group, name)
    consumer = instance.consumer
    async with instance.lock:
        if body.offsets is None:
            positions = {tp: await consumer.position(tp) for tp in sorted(consumer.assignment())}
            await consumer.commit(positions)
            done = [
                mo.OffsetIn(topic=tp.topic, partition=tp.partition, offset=o)
                for tp, o in positions.items()
            ]
        else:
            await consumer.commit(
                {TopicPartition(o.topic, o.partition): o.offset for o in body.offsets}
            )
            done = body.offsets
    return mo.Committed(offsets=done)


@router.get(BASE + "/offsets", response_model=mo.Committed, responses=ERRORS)
async def committed(group: GroupPath, name: NamePath, gw: State) -> mo.Committed:
    """The group's committed offsets of the partitions assigned to this instance."""
    instance = await gw.instances.get(group, name)
    out = []
    async with instance.lock:
        for tp in sorted(instance.consumer.assignment()):
            offset = await instance.consumer.committed(tp)
            if offset is not None:
                out.append(mo.OffsetIn(topic=tp.topic, partition=tp.partition, offset=offset))
    return mo.Committed(offsets=out)
