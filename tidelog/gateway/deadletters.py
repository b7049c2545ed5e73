"""Reading a share group's dead letters: which topic holds them (the group's
``dead_letter_topic``, else ``<topic>.dlq``) and a dead-lettered record as its
``tidelog.dlq.*`` headers say (docs/QUEUES.md, "Dead letters")."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from tidelog.client import describe_queue
from tidelog.wire.records import Record

from .errors import GatewayError
from .formats import Format, Rendered, UndecodableError, render

HEADER_PREFIX: Final = "tidelog.dlq."
DLQ_SUFFIX: Final = ".dlq"
_INTS: Final = (
    "source_partition",
    "source_offset",
    "delivery_count",
    "first_delivery_ms",
    "last_delivery_ms",
)
_TEXTS: Final = ("source_topic", "group", "reason", "error")


async def dlq_topic(bootstrap: str, group: str, topic: str | None) -> str:
    """The dead-letter topic of ``group`` for source ``topic`` (404 for an unknown group; 400
    when the group reads several topics and none is named)."""
    status = await describe_queue(bootstrap, group)
    configured = dict(status.configs).get("dead_letter_topic", "")
    if configured:
        return configured
    if topic is None:
        topics = sorted({p.topic for p in status.partitions})
        if len(topics) != 1:
            raise GatewayError(
                400,
                "topic_required",
                f"group {group!r} reads {len(topics)} topics: name the source topic (?topic=)",
            )
        topic = topics[0]
    return topic + DLQ_SUFFIX


def rendered(
    topic: str, partition: int, row: tuple[int, int, bytes | None, bytes | None, Any], fmt: Format
) -> tuple[Format, Rendered]:
    """One record in ``fmt``, or in base64 when it is not valid in ``fmt`` (never skipped:
    it is already taken)."""
    try:
        (out,) = render(topic, partition, [row], fmt)
        return fmt, out
    except UndecodableError:
        (out,) = render(topic, partition, [row], Format.BASE64)
        return Format.BASE64, out


def dead_letter(
    topic: str, partition: int, record: Record, group: str, fmt: Format
) -> dict[str, Any] | None:
    """The record as a ``DeadLetter`` body, or ``None`` if it is not a dead letter of
    ``group``."""
    fields: dict[str, Any] = {}
    own: list[tuple[str, bytes | None]] = []
    for name, value in record.headers:
        if name.startswith(HEADER_PREFIX):
            fields[name[len(HEADER_PREFIX) :]] = value
        else:
            own.append((name, value))
    if fields.get("group") != group.encode():
        return None
    try:
        info: dict[str, Any] = {k: int(fields[k]) for k in _INTS}
        info |= {k: bytes(fields[k] or b"").decode() for k in _TEXTS}
    except (KeyError, ValueError, TypeError):
        return None  # not written by a broker's dead-lettering
    row = (record.offset, record.timestamp, record.key, record.value, own)
    used, out = rendered(topic, partition, row, fmt)
    return {
        "dlq_topic": topic,
        "dlq_partition": partition,
        "dlq_offset": record.offset,
        "timestamp": record.timestamp,
        **info,
        "format": used.value,
        "key": out.key,
        "value": out.value,
        "headers": out.headers,
    }


def dead_letters(
    topic: str, partition: int, records: Sequence[Record], group: str, fmt: Format, limit: int
) -> tuple[list[dict[str, Any]], int | None]:
    """Up to ``limit`` of ``group``'s dead letters among ``records``, and the offset after the
    last record looked at (``None`` if none was)."""
    out: list[dict[str, Any]] = []
    after = None
    for record in records:
        if len(out) >= limit:
            break
        letter = dead_letter(topic, partition, record, group, fmt)
        if letter is not None:
            out.append(letter)
        after = record.offset + 1
    return out, after
