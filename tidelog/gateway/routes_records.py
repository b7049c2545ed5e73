"""Produce to a topic and read a partition from an offset."""

from __future__ import annotations

from typing import Annotated, Final

from fastapi import APIRouter, Path, Query, Response

from tidelog.client import OffsetSpec, TopicPartition

from . import models as mo
from .errors import GatewayError
from .formats import Format, encode_frame, render
from .producing import enqueue, settle
from .routes_admin import ERRORS, State, TopicPath

router = APIRouter(tags=["records"])
DEFAULT_MAX_RECORDS: Final = 500
DEFAULT_MAX_BYTES: Final = 1024 * 1024
RECORD_ERRORS = {
    **ERRORS,
    406: {"model": mo.ErrorBody, "description": "a record does not decode in this format"},
    413: {"model": mo.ErrorBody, "description": "body, record count or record too large"},
}


@router.post(
    "/v1/topics/{topic}/records", response_model=mo.ProduceResponse, responses=RECORD_ERRORS
)
async def produce(
    topic: TopicPath,
    body: mo.ProduceRequest,
    gw: State,
    acks: Annotated[
        mo.AcksParam,
        Query(description="none: no answer from the broker (offsets -1); leader; all"),
    ] = "all",
) -> mo.ProduceResponse:
    """Produce one record or a batch. Each record's answer is its partition and offset, or
    its error (the others are still written); a bad key, value or header fails the whole
    request before anything is sent."""
    return await settle(await enqueue(gw, topic, body, acks))


@router.get(
    "/v1/topics/{topic}/partitions/{partition}/records",
    response_model=mo.FetchResponse,
    responses=RECORD_ERRORS,
)
async def fetch(
    topic: TopicPath,
    partition: Annotated[int, Path(ge=0, le=mo.INT32_MAX)],
    gw: State,
    offset: Annotated[
        str,
        Query(
            pattern=r"^([0-9]{1,19}|earliest|latest)$",
            description="the first offset to read, or earliest / latest",
        ),
    ] = "earliest",
    max_records: Annotated[int | None, Query(ge=1, description="default 500")] = None,
    max_bytes: Annotated[int | None, Query(ge=1, description="default 1 MiB")] = None,
    wait_ms: Annotated[int, Query(ge=0, description="long-poll for records this long")] = 0,
    format: Annotated[Format, Query()] = Format.JSON,
) -> Response:
    """Records of one partition from an offset: at most ``max_records``, about ``max_bytes``
    (at least one record if there is one), waiting up to ``wait_ms`` for some to arrive. 400
    for an offset outside the log."""
    s = gw.settings
    max_records = max_records or min(DEFAULT_MAX_RECORDS, s.max_fetch_records)
    max_bytes = max_bytes or min(DEFAULT_MAX_BYTES, s.max_fetch_bytes)
    for name, value, limit in (
        ("max_records", max_records, s.max_fetch_records),
        ("max_bytes", max_bytes, s.max_fetch_bytes),
        ("wait_ms", wait_ms, s.max_fetch_wait_ms),
    ):
        if value > limit:
            raise GatewayError(422, "invalid_request", f"{name} is at most {limit}, not {value}")
    tp = TopicPartition(topic, partition)
    admin = await gw.clients.admin()
    (described,) = await admin.describe_topics([topic])
    if partition >= len(described.partitions):
        raise GatewayError(
            404, "unknown_topic_or_partition", f"topic {topic!r} has no partition {partition}"
        )
    if offset in ("earliest", "latest"):
        spec = OffsetSpec.EARLIEST if offset == "earliest" else OffsetSpec.LATEST
        start = (await admin.list_offsets({tp: spec}))[tp].offset
    else:
        start = int(offset)
    read = await gw.clients.fetch(tp, start, max_bytes, wait_ms)
    rendered = render(topic, partition, read.records[:max_records], format)
    body = {
        "topic": topic,
        "partition": partition,
        "records": rendered,
        "next_offset": rendered[-1].offset + 1 if rendered else start,
        "high_watermark": read.high_watermark,
        "log_start_offset": read.log_start_offset,
    }
    # Encoded by msgspec, not validated again: the shape is FetchResponse's.
    return Response(encode_frame(body), media_type="application/json")
