"""Queues (share groups) over HTTP: lease messages with receipts, settle them by receipt
(ack, nack, reject, renew), the queue's status and settings, and its dead letters: list,
show, redrive (through the client's :class:`~tidelog.client.QueueAdmin`, at a bounded rate)
and purge."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Final

from fastapi import APIRouter, Path, Query, Response

from tidelog.client import (
    OffsetSpec,
    QueueAdmin,
    QueueMessage,
    TopicPartition,
    alter_queue,
    describe_queue,
)
from tidelog.wire.errors import OffsetOutOfRangeError, UnknownTopicOrPartitionError

from . import models as mo
from . import models_queues as mq
from .deadletters import dead_letter, dead_letters, dlq_topic, rendered
from .errors import GatewayError, describe
from .formats import Format, encode_frame
from .queues import Receipt
from .routes_admin import ERRORS, GroupPath, State
from .state import Gateway

router = APIRouter(tags=["queues"])
BASE: Final = "/v1/queues/{group}"
DEFAULT_DLQ_RECORDS: Final = 100
DLQ_READ_BYTES: Final = 1024 * 1024
RECEIPT_ERRORS: Final = {
    **ERRORS,
    404: {"model": mo.ErrorBody, "description": "unknown receipt (or topic, or group)"},
    409: {"model": mo.ErrorBody, "description": "receipt_expired: its lock ended"},
    503: {"model": mo.ErrorBody, "description": "the brokers cannot be reached"},
}
LEASE_ERRORS: Final = {
    **ERRORS,
    429: {"model": mo.ErrorBody, "description": "max_queue_members or max_queue_leases reached"},
}
TopicQuery = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=mo.MAX_TOPIC_NAME_LENGTH,
        description="the source topic (needed when the group reads several and has no "
        "dead_letter_topic)",
    ),
]


@router.post(BASE + "/lease", response_model=mq.LeaseResponse, responses=LEASE_ERRORS)
async def lease(group: GroupPath, body: mq.LeaseRequest, gw: State) -> Response:
    """Take up to ``max_records`` messages, each locked for the caller for the group's
    ``lock_duration_ms`` and given a receipt; waits up to ``wait_ms`` for the first. A message
    not settled or renewed before its lock ends is delivered again (its ``delivery_count`` goes
    up) and its receipt no longer works."""
    s = gw.settings
    topics = tuple(sorted(set(body.topics)))
    limit = min(body.max_records, s.max_fetch_records, mq.BROKER_MAX_RECORDS)
    wait = min(body.wait_ms, s.max_fetch_wait_ms) / 1000
    taken, lock_ms = await gw.queues.lease(group, topics, limit, wait)
    body_out = {"messages": leased(taken, body.format), "lock_duration_ms": lock_ms}
    return Response(encode_frame(body_out), media_type="application/json")


def leased(taken: list[tuple[Receipt, QueueMessage]], fmt: Format) -> list[dict[str, Any]]:
    """Leased messages as the answer writes them (:class:`~.models_queues.LeasedMessage`)."""
    messages = []
    for receipt, message in taken:
        used, out = rendered(message.topic, message.partition, _row(message), fmt)
        messages.append(
            {
                "receipt": receipt.encode(),
                "topic": message.topic,
                "partition": message.partition,
                "offset": message.offset,
                "timestamp": message.timestamp,
                "delivery_count": message.delivery_count,
                "format": used.value,
                "key": out.key,
                "value": out.value,
                "headers": out.headers,
            }
        )
    return messages


def _row(m: QueueMessage) -> tuple[int, int, bytes | None, bytes | None, Any]:
    return m.offset, m.timestamp, m.key, m.value, m.headers


@router.post(BASE + "/ack", response_model=mq.AckResponse, responses=ERRORS)
async def ack(group: GroupPath, body: mq.AckRequest, gw: State) -> mq.AckResponse:
    """Ack a batch of receipts: those messages are done. 200 whatever each one's outcome: the
    answer says which were acked and why the others were not."""
    return await ack_receipts(gw, group, body.receipts)


async def ack_receipts(gw: Gateway, group: str, receipts: list[str]) -> mq.AckResponse:
    """Ack each receipt (duplicates once); which were acked, and why the others were not."""

    async def one(receipt: str) -> None:
        await gw.queues.settle(group, receipt, QueueMessage.ack)

    unique = list(dict.fromkeys(receipts))
    results = await asyncio.gather(*(one(r) for r in unique), return_exceptions=True)
    acked, failed = [], []
    for receipt, result in zip(unique, results, strict=True):
        if isinstance(result, BaseException):
            if not isinstance(result, Exception):
                raise result
            status, code, message = describe(result)
            if status == 500:
                raise result
            failed.append(mq.ReceiptFailure(receipt=receipt, error_code=code, message=message))
        else:
            acked.append(receipt)
    return mq.AckResponse(acked=acked, failed=failed)


@router.post(BASE + "/nack", status_code=204, responses=RECEIPT_ERRORS)
async def nack(group: GroupPath, body: mq.NackRequest, gw: State) -> Response:
    """Release the message: it is delivered again after ``delay_ms`` (omitted: the group's
    backoff policy), or dead-lettered if it used its last delivery attempt."""
    await nack_receipt(gw, group, body)
    return Response(status_code=204)


async def nack_receipt(gw: Gateway, group: str, body: mq.NackRequest) -> None:
    delay = None if body.delay_ms is None else body.delay_ms / 1000

    async def how(message: QueueMessage) -> None:
        await message.nack(delay, body.error)

    await gw.queues.settle(group, body.receipt, how)


@router.post(BASE + "/reject", status_code=204, responses=RECEIPT_ERRORS)
async def reject(group: GroupPath, body: mq.RejectRequest, gw: State) -> Response:
    """Send the message to the dead-letter topic now, with ``reason`` in its headers."""
    await reject_receipt(gw, group, body)
    return Response(status_code=204)


async def reject_receipt(gw: Gateway, group: str, body: mq.RejectRequest) -> None:
    async def how(message: QueueMessage) -> None:
        await message.reject(body.reason)

    await gw.queues.settle(group, body.receipt, how)


@router.post(BASE + "/renew", response_model=mq.Renewed, responses=RECEIPT_ERRORS)
async def renew(group: GroupPath, body: mq.RenewRequest, gw: State) -> mq.Renewed:
    """Extend the message's lock by the group's lock duration (for long jobs)."""
    return mq.Renewed(lock_duration_ms=await gw.queues.renew(group, body.receipt))


@router.get(BASE, response_model=mq.QueueStatus, responses=ERRORS)
async def status(group: GroupPath, gw: State) -> mq.QueueStatus:
    """The group's settings, members and per-partition counts (404 for an unknown group)."""
    d = await describe_queue(gw.settings.bootstrap, group)
    return mq.QueueStatus(
        group=group,
        settings=[
            mo.ConfigModel(name=k, value=v, source="default", read_only=False, sensitive=False)
            for k, v in d.configs
        ],
        members=list(d.members),
        partitions=[
            mq.QueuePartitionStatus(
                topic=p.topic,
                partition=p.partition,
                start_offset=p.start_offset,
                end_offset=p.end_offset,
                log_end_offset=p.log_end_offset,
                available=max(p.log_end_offset - p.end_offset, 0) + p.redeliverable,
                in_flight=p.in_flight,
                delayed=p.delayed,
                dead_lettering=p.dead_lettering,
                acked=p.acked,
                dead_lettered=p.dead_lettered,
                oldest_acquired_ms=p.oldest_acquired_ms if p.oldest_acquired_ms >= 0 else None,
            )
            for p in d.partitions
        ],
        handled=d.handled,
        handling_ms_avg=d.handling_ms_total / d.handled if d.handled else None,
        handling_ms_max=d.handling_ms_max,
        gateway_leases=gw.queues.held(group),
    )


@router.patch(BASE + "/settings", response_model=mq.QueueStatus, responses=ERRORS)
async def alter(group: GroupPath, body: mq.AlterQueueSettings, gw: State) -> mq.QueueStatus:
    """Set the group's settings (created with the defaults if missing); the status after."""
    await alter_queue(gw.settings.bootstrap, group, **{k: str(v) for k, v in body.set.items()})
    return await status(group, gw)


@router.get(BASE + "/dlq", response_model=mq.DeadLetterList, responses=ERRORS)
async def list_dead_letters(
    group: GroupPath,
    gw: State,
    topic: TopicQuery = None,
    partition: Annotated[int, Query(ge=0, le=mo.INT32_MAX)] = 0,
    offset: Annotated[
        str,
        Query(pattern=r"^([0-9]{1,18}|earliest)$", description="the first offset to read"),
    ] = "earliest",
    max_records: Annotated[int, Query(ge=1, le=mo.INT32_MAX, description="default 100")] = (
        DEFAULT_DLQ_RECORDS
    ),
    format: Annotated[Format, Query()] = Format.JSON,
) -> Response:
    """The group's dead letters in one partition of its dead-letter topic, from ``offset``:
    their source, reason, error, delivery count and times, key, value and own headers. Page on
    with ``offset=next_offset``; empty while nothing was dead-lettered."""
    dlq = await dlq_topic(gw.settings.bootstrap, group, topic)
    tp = TopicPartition(dlq, partition)
    admin = await gw.clients.admin()
    try:
        (described,) = await admin.describe_topics([dlq])
    except UnknownTopicOrPartitionError:
        body = {"dlq_topic": dlq, "dlq_partition": partition, "dead_letters": []}
        return _json({**body, "next_offset": 0, "high_watermark": 0})
    if partition >= len(described.partitions):
        raise GatewayError(
            404, "unknown_topic_or_partition", f"{dlq!r} has no partition {partition}"
        )
    if offset == "earliest":  # past the purged ones
        start = (await admin.list_offsets({tp: OffsetSpec.EARLIEST}))[tp].offset
        marks = await QueueAdmin(gw.settings.bootstrap).partitions(dlq)
        start = max([start] + [p.purged_to for p in marks if p.partition == partition])
    else:
        start = int(offset)
    limit = min(max_records, gw.settings.max_fetch_records)
    read = await gw.clients.fetch(tp, start, min(DLQ_READ_BYTES, gw.settings.max_fetch_bytes), 0)
    letters, after = dead_letters(dlq, partition, read.records, group, format, limit)
    body = {"dlq_topic": dlq, "dlq_partition": partition, "dead_letters": letters}
    return _json({**body, "next_offset": after or start, "high_watermark": read.high_watermark})


@router.get(BASE + "/dlq/{partition}/{offset}", response_model=mq.DeadLetter, responses=ERRORS)
async def show_dead_letter(
    group: GroupPath,
    partition: Annotated[int, Path(ge=0, le=mo.INT32_MAX)],
    offset: Annotated[int, Path(ge=0, le=mo.INT64_MAX)],
    gw: State,
    topic: TopicQuery = None,
    format: Annotated[Format, Query()] = Format.JSON,
) -> Response:
    """One dead letter of the group, by its offset in the dead-letter topic (404
    ``dead_letter_not_found`` if there is none of this group there)."""
    dlq = await dlq_topic(gw.settings.bootstrap, group, topic)
    try:
        read = await gw.clients.fetch(TopicPartition(dlq, partition), offset, DLQ_READ_BYTES, 0)
    except (UnknownTopicOrPartitionError, OffsetOutOfRangeError):
        read = None
    found = [r for r in (read.records[:1] if read else []) if r.offset == offset]
    letter = dead_letter(dlq, partition, found[0], group, format) if found else None
    if letter is None:
        raise GatewayError(
            404,
            "dead_letter_not_found",
            f"no dead letter of group {group!r} at {dlq}[{partition}]@{offset}",
        )
    return _json(letter)


@router.post(BASE + "/dlq/redrive", response_model=mq.RedriveResponse, responses=ERRORS)
async def redrive_dead_letters(
    group: GroupPath, body: mq.RedriveRequest, gw: State
) -> mq.RedriveResponse:
    """Send dead letters back to their source topic and partition, at most ``rate`` a second,
    their own headers kept and ``tidelog.redrive_count`` one more (idempotent, acks=all).
    ``partition`` and ``offset`` pick one; ``reasons``, ``start`` and ``end`` filter. The
    answer comes once they are all acknowledged: keep ``rate`` high enough for the request's
    timeout, or page with ``start``/``end``."""
    if (body.partition is None) != (body.offset is None):
        raise GatewayError(400, "invalid_request", "partition and offset go together")
    dlq = await dlq_topic(gw.settings.bootstrap, group, body.topic)
    one = None if body.offset is None else [(body.partition or 0, body.offset)]
    result = await QueueAdmin(gw.settings.bootstrap).redrive(
        dlq, rate=body.rate, reasons=body.reasons, offsets=one, start=body.start, end=body.end
    )
    return mq.RedriveResponse(
        dlq_topic=dlq,
        redriven=result.redriven,
        skipped=result.skipped,
        next_offsets={str(p): o for p, o in result.next_offsets.items()},
    )


@router.post(BASE + "/dlq/purge", response_model=mq.PurgeResponse, responses=ERRORS)
async def purge_dead_letters(
    group: GroupPath, body: mq.PurgeRequest, gw: State
) -> mq.PurgeResponse:
    """Purge the dead letters below ``before`` (default: all there are now): they are no
    longer listed or redriven; the bytes go with the dead-letter topic's retention."""
    dlq = await dlq_topic(gw.settings.bootstrap, group, body.topic)
    marks = await QueueAdmin(gw.settings.bootstrap).purge(
        dlq, before=body.before, partitions=body.partitions
    )
    return mq.PurgeResponse(dlq_topic=dlq, purged_to={str(p): o for p, o in marks.items()})


def _json(body: dict[str, Any]) -> Response:
    return Response(encode_frame(body), media_type="application/json")
