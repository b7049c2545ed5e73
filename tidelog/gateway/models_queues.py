"""Request and response bodies of the queue endpoints (docs/HTTP.md, "Queues")."""

from __future__ import annotations

from typing import Annotated, Final

from pydantic import ConfigDict, Field, JsonValue, StrictFloat, StrictInt, StrictStr

from .formats import Format
from .models import INT32_MAX, ConfigModel, Header, Strict, TopicName
from .queues import MAX_RECEIPT_LENGTH

MAX_NACK_DELAY_MS: Final = 86_400_000
MAX_ERROR_TEXT: Final = 4096
MAX_QUEUE_TOPICS: Final = 100
BROKER_MAX_RECORDS: Final = 10_000
"""The broker's cap on one ShareFetch."""

ReceiptText = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_RECEIPT_LENGTH,
        description="the opaque receipt a lease handed out with the message",
        examples=["WzEsImpvYnMiLCJnd3EtMWEyYiIsImVtYWlscyIsMCw0MiwxXQ"],
    ),
]
ErrorText = Annotated[str, Field(max_length=MAX_ERROR_TEXT)]


class LeaseRequest(Strict):
    """Take up to ``max_records`` messages of ``topics`` for share group ``group``, waiting up
    to ``wait_ms`` for the first (both clamped to the gateway's fetch limits)."""

    topics: list[TopicName] = Field(min_length=1, max_length=MAX_QUEUE_TOPICS)
    max_records: StrictInt = Field(default=1, ge=1, le=INT32_MAX)
    wait_ms: StrictInt = Field(default=0, ge=0, le=INT32_MAX)
    format: Format = Field(
        default=Format.JSON,
        description="how keys, values and header values are written; a message that is not "
        "valid in it comes in base64 (its own `format` says so)",
    )

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"topics": ["emails"], "max_records": 10, "wait_ms": 5000}]
        },
    )


class LeasedMessage(Strict):
    """A message held for the caller until ``lock_duration_ms`` after the lease (or a
    renew): settle it by its receipt."""

    receipt: str
    topic: str
    partition: int
    offset: int
    timestamp: int
    delivery_count: int
    """1 on the first delivery; each redelivery adds one."""
    format: Format
    key: JsonValue
    value: JsonValue
    headers: list[Header]


class LeaseResponse(Strict):
    messages: list[LeasedMessage]
    lock_duration_ms: int
    """The group's lock (visibility timeout): settle or renew each message before it ends."""


class AckRequest(Strict):
    receipts: list[ReceiptText] = Field(min_length=1, max_length=BROKER_MAX_RECORDS)


class ReceiptFailure(Strict):
    receipt: str
    error_code: str = Field(examples=["receipt_expired"])
    message: str


class AckResponse(Strict):
    """Which receipts were acked, and why the others were not (those messages are not acked)."""

    acked: list[str]
    failed: list[ReceiptFailure]


class NackRequest(Strict):
    """Release the message: delivered again after ``delay_ms`` (omitted: the group's backoff
    policy), ``error`` kept for the dead-letter headers."""

    receipt: ReceiptText
    delay_ms: StrictInt | None = Field(default=None, ge=0, le=MAX_NACK_DELAY_MS)
    error: ErrorText | None = None


class RejectRequest(Strict):
    """Send the message to the dead-letter topic now, with ``reason``."""

    receipt: ReceiptText
    reason: ErrorText = ""


class RenewRequest(Strict):
    receipt: ReceiptText


class Renewed(Strict):
    lock_duration_ms: int
    """The lock now ends this long after the renew."""


class QueuePartitionStatus(Strict):
    topic: str
    partition: int
    start_offset: int
    """Every record before it is settled."""
    end_offset: int
    """The next offset never acquired: from here to the log end, records are available."""
    log_end_offset: int
    available: int
    """Never delivered, plus released and ready again."""
    in_flight: int
    delayed: int
    dead_lettering: int
    acked: int
    dead_lettered: int
    oldest_acquired_ms: int | None
    """When the oldest unsettled record was first delivered (ms since the epoch)."""


class QueueStatus(Strict):
    group: str
    settings: list[ConfigModel]
    members: list[str]
    partitions: list[QueuePartitionStatus]
    handled: int
    """Records acked since the broker started."""
    handling_ms_avg: float | None
    handling_ms_max: int
    gateway_leases: int
    """Messages this gateway holds leased for the group (all its members), not settled."""


ConfigValue = StrictStr | StrictInt | StrictFloat


class AlterQueueSettings(Strict):
    """Set share-group settings (docs/QUEUES.md, "Settings"); the group is created if
    missing. 400 ``invalid_config`` for an unknown name or a value out of range."""

    set: dict[Annotated[str, Field(min_length=1, max_length=100)], ConfigValue] = Field(
        min_length=1, examples=[{"lock_duration_ms": 60000, "max_delivery_attempts": 3}]
    )


class DeadLetter(Strict):
    """A dead-lettered record: where it came from and why, its key, value and own headers."""

    dlq_topic: str
    dlq_partition: int
    dlq_offset: int
    timestamp: int
    source_topic: str
    source_partition: int
    source_offset: int
    group: str
    delivery_count: int
    reason: str = Field(examples=["rejected", "max_attempts", "lock_expired"])
    error: str
    """The last error a worker gave, or the reject reason."""
    first_delivery_ms: int
    last_delivery_ms: int
    format: Format
    key: JsonValue
    value: JsonValue
    headers: list[Header]
    """The record's own headers (the ``tidelog.dlq.*`` ones are the fields above)."""


class DeadLetterList(Strict):
    dlq_topic: str
    dlq_partition: int
    dead_letters: list[DeadLetter]
    """This group's dead letters among the records read (others' are skipped)."""
    next_offset: int
    """Where the next page starts."""
    high_watermark: int


MAX_REDRIVE_RATE: Final = 10_000.0
"""Records per second a redrive over HTTP may ask for at most."""


class RedriveRequest(Strict):
    """Which dead letters to send back to their source (all of them when no filter is given:
    then the redrive resumes where the last unfiltered one stopped)."""

    topic: TopicName | None = Field(default=None, description="the source topic, as for /dlq")
    rate: float = Field(default=100.0, gt=0, le=MAX_REDRIVE_RATE, description="records/s")
    reasons: list[StrictStr] | None = Field(default=None, examples=[["max_attempts"]])
    partition: StrictInt | None = Field(default=None, ge=0, le=INT32_MAX)
    offset: StrictInt | None = Field(
        default=None, ge=0, description="one dead letter: its partition and offset"
    )
    start: StrictInt | None = Field(default=None, ge=0)
    end: StrictInt | None = Field(default=None, ge=0)


class RedriveResponse(Strict):
    dlq_topic: str
    redriven: int
    skipped: int
    next_offsets: dict[str, int]


class PurgeRequest(Strict):
    topic: TopicName | None = None
    before: StrictInt | None = Field(default=None, ge=0, description="default: everything now")
    partitions: list[Annotated[int, Field(ge=0, le=INT32_MAX)]] | None = None


class PurgeResponse(Strict):
    dlq_topic: str
    purged_to: dict[str, int]
    """Per partition, the offset below which dead letters are purged (hidden; the bytes go
    with the topic's retention)."""
