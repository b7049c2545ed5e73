"""Request and response bodies: one pydantic model each, so /openapi.json declares every
shape (strict: unknown request fields are refused; no free-form object where a shape is
known). Record keys and values are free-form only in the ``json`` format, where they are any
JSON value by nature.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, StrictBool, StrictInt

from tidelog.wire.api import MAX_TOPIC_NAME_LENGTH

from .formats import Format

INT32_MAX: Final = 2**31 - 1
INT64_MAX: Final = 2**63 - 1
TOPIC_PATTERN: Final = (
    r"^([A-Za-z0-9_-][A-Za-z0-9._-]*|\.[A-Za-z0-9_-][A-Za-z0-9._-]*|\.\.[A-Za-z0-9._-]+)$"
)
"""The broker's rule for a topic name: ``[A-Za-z0-9._-]``, not ``.`` or ``..`` (without a
look-ahead, so every JSON Schema tool reads it). Declared in the spec only: the broker checks
it and answers 400 ``invalid_topic_name``."""

TopicName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_TOPIC_NAME_LENGTH,
        examples=["events"],
        json_schema_extra={"pattern": TOPIC_PATTERN},
    ),
]
GroupId = Annotated[
    str,
    Field(min_length=1, max_length=255, examples=["billing"], description="printable characters"),
]
INSTANCE_NAME_PATTERN: Final = r"^[A-Za-z0-9._-]+$"
# Strict: a JSON ``false`` or ``"3"`` is not a number here (pydantic's lax mode would take it).
Offset = Annotated[StrictInt, Field(ge=0, le=INT64_MAX)]
Partition = Annotated[StrictInt, Field(ge=0, le=INT32_MAX)]
Timestamp = Annotated[StrictInt, Field(ge=0, le=INT64_MAX, description="ms since the epoch")]
AcksParam = Literal["none", "leader", "all"]
ResetPolicy = Literal["earliest", "latest", "none"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorBody(Strict):
    """Every error: a stable machine code and a sentence for people."""

    error_code: str = Field(examples=["unknown_topic_or_partition"])
    message: str


# --- health and cluster --------------------------------------------------------------------


class Health(Strict):
    status: Literal["ok"]


class Readiness(Strict):
    status: Literal["ready"]
    brokers: int


class BrokerModel(Strict):
    node_id: int
    host: str
    port: int
    rack: str | None


class PartitionModel(Strict):
    partition: int
    leader: int
    """-1 while the partition has no leader."""
    replicas: list[int]
    isr: list[int]


class TopicMetadataModel(Strict):
    name: str
    internal: bool
    partitions: list[PartitionModel]


class ClusterModel(Strict):
    cluster_id: str
    controller_id: int
    brokers: list[BrokerModel]
    topics: list[TopicMetadataModel]


class GatewayStats(Strict):
    """What the gateway holds now: for operators, and for the memory-bound tests."""

    ws_connections: int
    ws_subscriptions: int
    ws_buffered_bytes: int
    """Bytes of frames queued on every WebSocket, in all."""
    ws_send_queue_bytes: int
    """The per-socket bound of those bytes (a frame may pass it once when the queue is
    empty)."""
    ws_stalled: int
    """Subscriptions waiting for room in their socket's queue: not fetching."""
    consumer_instances: int
    queue_members: int
    """Share-group members this gateway holds for the queue endpoints."""


# --- topics ---------------------------------------------------------------------------------


class TopicList(Strict):
    topics: list[str]


class CreateTopic(Strict):
    name: TopicName
    partitions: StrictInt = Field(
        default=-1, ge=-1, le=INT32_MAX, description="-1: the broker's default"
    )
    replication_factor: StrictInt = Field(
        default=-1, ge=-1, le=INT32_MAX, description="-1: the broker's default"
    )
    configs: dict[str, str] = Field(default_factory=dict, examples=[{"retention_ms": "86400000"}])


class PartitionDetail(Strict):
    partition: int
    leader: int
    replicas: list[int]
    isr: list[int]
    earliest_offset: int
    latest_offset: int
    """The high watermark: the next offset to be written."""
    size_bytes: int
    segments: int


class ConfigModel(Strict):
    name: str
    value: str | None
    source: Literal["default", "topic", "broker"]
    read_only: bool
    sensitive: bool


class TopicDetail(Strict):
    name: str
    internal: bool
    partitions: list[PartitionDetail]
    configs: list[ConfigModel]


class AlterConfigs(Strict):
    set: dict[str, str] = Field(default_factory=dict, examples=[{"retention_ms": "3600000"}])
    delete: list[str] = Field(default_factory=list, description="keys reset to the default")


class TopicConfigs(Strict):
    name: str
    configs: list[ConfigModel]


# --- records --------------------------------------------------------------------------------


class HeaderIn(Strict):
    name: str = Field(min_length=1)
    value: str | None = Field(description="text, or base64 with format=base64")


class RecordIn(Strict):
    key: JsonValue = None
    value: JsonValue = None
    headers: list[HeaderIn] = Field(default_factory=list)
    partition: Partition | None = None
    timestamp: Timestamp | None = None


class ProduceRequest(Strict):
    format: Format = Field(
        default=Format.JSON, description="how key, value and header values are written"
    )
    records: list[RecordIn] = Field(min_length=1)


class ProduceResult(Strict):
    """One record's outcome: its partition and offset, or its error."""

    partition: int | None
    offset: int | None
    """-1 with acks=none (the broker does not answer)."""
    timestamp: int | None
    error_code: str | None = None
    message: str | None = None


class ProduceResponse(Strict):
    topic: str
    results: list[ProduceResult]
    failed: int


class Header(Strict):
    name: str
    value: str | None


class Record(Strict):
    topic: str
    partition: int
    offset: int
    timestamp: int
    key: JsonValue
    value: JsonValue
    headers: list[Header]


class FetchResponse(Strict):
    topic: str
    partition: int
    records: list[Record]
    next_offset: int
    """Where the next fetch starts."""
    high_watermark: int
    log_start_offset: int


# --- consumer instances and groups ----------------------------------------------------------


class CreateConsumer(Strict):
    name: str | None = Field(
        default=None, min_length=1, max_length=200, pattern=INSTANCE_NAME_PATTERN
    )
    format: Format = Format.JSON
    auto_offset_reset: ResetPolicy = "latest"
    auto_commit: StrictBool = False


class ConsumerCreated(Strict):
    instance_id: str
    base_uri: str


class Subscription(Strict):
    topics: list[TopicName] = Field(min_length=1)


class TopicPartitionModel(Strict):
    topic: str
    partition: int


class Assignment(Strict):
    topics: list[str]
    partitions: list[TopicPartitionModel]


class RecordList(Strict):
    records: list[Record]


class OffsetIn(Strict):
    topic: TopicName
    partition: Partition
    offset: Offset
    """The next offset to consume."""
    metadata: str = ""


class CommitRequest(Strict):
    offsets: list[OffsetIn] | None = Field(
        default=None, description="omitted: the positions of everything handed out"
    )


class CommitOffsets(Strict):
    offsets: list[OffsetIn] = Field(min_length=1)


class Committed(Strict):
    offsets: list[OffsetIn]


class GroupSummary(Strict):
    group_id: str
    state: str
    members: int


class GroupList(Strict):
    groups: list[GroupSummary]


class GroupMember(Strict):
    member_id: str
    client_id: str
    client_host: str
    topics: list[str]
    assignment: list[TopicPartitionModel]


class GroupPartitionLag(Strict):
    topic: str
    partition: int
    committed: int | None
    end_offset: int | None
    lag: int | None
    member_id: str | None


class GroupDetail(Strict):
    group_id: str
    state: str
    epoch: int
    assignor: str
    members: list[GroupMember]
    offsets: list[GroupPartitionLag]
    lag: int
