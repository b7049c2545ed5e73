"""Request and response bodies: one frozen, slotted dataclass per message kind.

Bodies travel as msgpack *maps* keyed by field name (the frame's metadata section). Fields with
defaults may be left out by a sender, and a receiver ignores keys it does not know; that, plus
the per-API version in every frame header, is how the protocol grows (docs/PROTOCOL.md,
"Versioning"). Record batches never appear here: messages that carry them say how many bytes of
the frame's data section belong to each partition (``size``), in message order.

Integer fields that hold enums (``acks``, ``error_code``, ...) are plain ``int`` on the wire so
an old peer never fails to decode a value it does not know; the enums below name the values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Final, TypeAlias

from .batch_format import NO_PRODUCER_ID
from .frame import PROTOCOL_VERSION
from .replica_messages import OffsetsForLeaderEpochRequest, OffsetsForLeaderEpochResponse
from .share_messages import ShareRequest, ShareResponse

# --- shared vocabulary --------------------------------------------------------------------------


class Acks(IntEnum):
    """How much durability a producer waits for before its request is answered."""

    NONE = 0  # no response at all
    LEADER = 1  # the leader appended the batch
    ALL = -1  # every in-sync replica has it (single broker: fsynced)


class IsolationLevel(IntEnum):
    READ_UNCOMMITTED = 0
    READ_COMMITTED = 1


class OffsetSpec(IntEnum):
    """Special ``timestamp`` values of a ListOffsets query."""

    LATEST = -1
    EARLIEST = -2


class ConfigResourceType(IntEnum):
    TOPIC = 2
    BROKER = 4


class ConfigSource(IntEnum):
    DEFAULT = 0  # the broker's built-in default
    TOPIC = 1  # set on the topic
    BROKER = 2  # set in the broker's configuration


NO_OFFSET: Final = -1
DEFAULT_TIMEOUT_MS: Final = 30_000


@dataclass(frozen=True, slots=True)
class TopicPartitions:
    """A topic and a set of its partitions (assignments, offset queries)."""

    topic: str
    partitions: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class ErrorResponse:
    """Sent instead of an API's response (frame flag ERROR) when the request as a whole failed:
    unknown API, unsupported version, undecodable body, handshake missing."""

    error_code: int
    message: str = ""


# --- handshake ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ApiVersionRange:
    api_key: int
    min_version: int
    max_version: int


@dataclass(frozen=True, slots=True)
class HandshakeRequest:
    """First request on every connection (ApiKey 0, version 0, frame protocol version 1, for
    ever): the client's protocol and API version ranges."""

    client_id: str = ""
    client_software: str = "tidelog-python"
    client_version: str = ""
    protocol_versions: tuple[int, ...] = (PROTOCOL_VERSION,)
    api_versions: tuple[ApiVersionRange, ...] = ()


@dataclass(frozen=True, slots=True)
class HandshakeResponse:
    """The broker's choice of protocol version and its own API version ranges; each side then
    uses, per API, the highest version both support."""

    error_code: int = 0
    error_message: str | None = None
    protocol_version: int = PROTOCOL_VERSION
    api_versions: tuple[ApiVersionRange, ...] = ()
    broker_id: int = 0
    cluster_id: str = ""
    server_software: str = "tidelog"
    server_version: str = ""
    max_frame_size: int = 0


# --- metadata and topics ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MetadataRequest:
    topics: tuple[str, ...] | None = None  # None: every topic
    allow_auto_create: bool = False


@dataclass(frozen=True, slots=True)
class BrokerInfo:
    node_id: int
    host: str
    port: int
    rack: str | None = None


@dataclass(frozen=True, slots=True)
class PartitionMetadata:
    partition: int
    error_code: int = 0
    leader: int = -1
    leader_epoch: int = 0
    replicas: tuple[int, ...] = ()
    isr: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class TopicMetadata:
    name: str
    error_code: int = 0
    internal: bool = False
    partitions: tuple[PartitionMetadata, ...] = ()


@dataclass(frozen=True, slots=True)
class MetadataResponse:
    brokers: tuple[BrokerInfo, ...] = ()
    controller_id: int = -1
    cluster_id: str = ""
    topics: tuple[TopicMetadata, ...] = ()


@dataclass(frozen=True, slots=True)
class NewTopic:
    name: str
    partitions: int = -1  # -1: the broker's default
    replication_factor: int = -1  # -1: the broker's default
    configs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CreateTopicsRequest:
    topics: tuple[NewTopic, ...]
    timeout_ms: int = DEFAULT_TIMEOUT_MS
    validate_only: bool = False


@dataclass(frozen=True, slots=True)
class TopicResult:
    name: str
    error_code: int = 0
    error_message: str | None = None


@dataclass(frozen=True, slots=True)
class CreateTopicsResponse:
    topics: tuple[TopicResult, ...] = ()


@dataclass(frozen=True, slots=True)
class DeleteTopicsRequest:
    names: tuple[str, ...]
    timeout_ms: int = DEFAULT_TIMEOUT_MS


@dataclass(frozen=True, slots=True)
class DeleteTopicsResponse:
    topics: tuple[TopicResult, ...] = ()


@dataclass(frozen=True, slots=True)
class ConfigResource:
    type: int  # ConfigResourceType
    name: str


@dataclass(frozen=True, slots=True)
class DescribeConfigsRequest:
    resources: tuple[ConfigResource, ...]
    keys: tuple[str, ...] | None = None  # None: every key


@dataclass(frozen=True, slots=True)
class ConfigEntry:
    name: str
    value: str | None
    source: int = ConfigSource.DEFAULT
    read_only: bool = False
    sensitive: bool = False
    doc: str = ""


@dataclass(frozen=True, slots=True)
class ConfigResult:
    type: int
    name: str
    error_code: int = 0
    error_message: str | None = None
    entries: tuple[ConfigEntry, ...] = ()


@dataclass(frozen=True, slots=True)
class DescribeConfigsResponse:
    results: tuple[ConfigResult, ...] = ()


@dataclass(frozen=True, slots=True)
class AlterConfigsResource:
    type: int
    name: str
    set: dict[str, str] = field(default_factory=dict)
    delete: tuple[str, ...] = ()  # keys reset to their default


@dataclass(frozen=True, slots=True)
class AlterConfigsRequest:
    resources: tuple[AlterConfigsResource, ...]
    validate_only: bool = False


@dataclass(frozen=True, slots=True)
class AlterConfigsResponse:
    results: tuple[ConfigResult, ...] = ()


@dataclass(frozen=True, slots=True)
class ReassignPartition:
    """Move ``topic``'s partition ``partition`` (-1: every partition) to ``replicas`` (the
    first of them is the preferred leader)."""

    topic: str
    partition: int
    replicas: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class AlterPartitionReassignmentsRequest:
    """Start reassignments (``partitions``), or, with ``rebalance``, spread the replicas of
    every non-internal topic over the live brokers (``partitions`` is then ignored)."""

    partitions: tuple[ReassignPartition, ...] = ()
    rebalance: bool = False
    validate_only: bool = False


@dataclass(frozen=True, slots=True)
class ReassignResult:
    """One partition's outcome: the target it is moving to, or why not."""

    topic: str
    partition: int
    replicas: tuple[int, ...] = ()
    error_code: int = 0
    error_message: str | None = None


@dataclass(frozen=True, slots=True)
class AlterPartitionReassignmentsResponse:
    results: tuple[ReassignResult, ...] = ()


# --- produce, fetch, list offsets -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProducePartition:
    """``size`` bytes of the data section (one or more whole batches) go to this partition."""

    topic: str
    partition: int
    size: int


@dataclass(frozen=True, slots=True)
class ProduceRequest:
    partitions: tuple[ProducePartition, ...]
    acks: int = Acks.LEADER
    timeout_ms: int = DEFAULT_TIMEOUT_MS
    transactional_id: str | None = None


@dataclass(frozen=True, slots=True)
class ProducePartitionResult:
    topic: str
    partition: int
    error_code: int = 0
    error_message: str | None = None
    base_offset: int = NO_OFFSET
    log_append_time: int = -1
    log_start_offset: int = NO_OFFSET


@dataclass(frozen=True, slots=True)
class ProduceResponse:
    partitions: tuple[ProducePartitionResult, ...] = ()


@dataclass(frozen=True, slots=True)
class FetchPartition:
    topic: str
    partition: int
    offset: int
    max_bytes: int = 1024 * 1024
    verify: bool = False
    """Check each returned batch's CRC on the broker first: a client asks this once after a
    batch failed its CRC on arrival, so the broker can tell damage on its disk (isolated and
    reported as DAMAGED_RANGE) from damage in transit."""
    current_leader_epoch: int = -1
    """A follower's fetch: the epoch of the leader it follows (KIP-320); an older one than the
    broker's is refused with FENCED_LEADER_EPOCH, a newer one with UNKNOWN_LEADER_EPOCH. -1
    (consumers): not checked."""


@dataclass(frozen=True, slots=True)
class FetchRequest:
    partitions: tuple[FetchPartition, ...]
    max_wait_ms: int = 500
    min_bytes: int = 1
    max_bytes: int = 50 * 1024 * 1024
    isolation_level: int = IsolationLevel.READ_UNCOMMITTED
    replica_id: int = -1  # -1 for consumers; a broker id for follower fetches


@dataclass(frozen=True, slots=True)
class FetchPartitionResult:
    """``size`` bytes of the data section (whole batches) belong to this partition."""

    topic: str
    partition: int
    error_code: int = 0
    error_message: str | None = None
    high_watermark: int = NO_OFFSET
    last_stable_offset: int = NO_OFFSET
    log_start_offset: int = NO_OFFSET
    size: int = 0
    next_offset: int = NO_OFFSET
    """With DAMAGED_RANGE or MISSING_RANGE: the offset where data can be read again."""


@dataclass(frozen=True, slots=True)
class FetchResponse:
    partitions: tuple[FetchPartitionResult, ...] = ()
    throttle_ms: int = 0


@dataclass(frozen=True, slots=True)
class ListOffsetsPartition:
    topic: str
    partition: int
    timestamp: int  # OffsetSpec.LATEST, OffsetSpec.EARLIEST, or ms since the epoch


@dataclass(frozen=True, slots=True)
class ListOffsetsRequest:
    partitions: tuple[ListOffsetsPartition, ...]
    isolation_level: int = IsolationLevel.READ_UNCOMMITTED


@dataclass(frozen=True, slots=True)
class ListOffsetsPartitionResult:
    topic: str
    partition: int
    error_code: int = 0
    error_message: str | None = None
    offset: int = NO_OFFSET  # -1 when no record is at or after the timestamp
    timestamp: int = -1


@dataclass(frozen=True, slots=True)
class ListOffsetsResponse:
    partitions: tuple[ListOffsetsPartitionResult, ...] = ()


# --- consumer groups (broker-side assignment) -----------------------------------------------


@dataclass(frozen=True, slots=True)
class JoinGroupRequest:
    """Join (or rejoin) a group; the broker computes the assignment. A static member names an
    ``instance_id`` and gets its partitions back if it returns within the session timeout."""

    group_id: str
    subscribed_topics: tuple[str, ...] = ()
    subscribed_pattern: str | None = None  # a regular expression over topic names
    member_id: str = ""  # empty on a first join; the old id when rejoining
    assignor: str = "sticky"  # "range", "round-robin" or "sticky"
    client_id: str = ""
    instance_id: str | None = None
    session_timeout_ms: int = 45_000
    rebalance_timeout_ms: int = 300_000


@dataclass(frozen=True, slots=True)
class JoinGroupResponse:
    error_code: int = 0
    error_message: str | None = None
    member_id: str = ""
    member_epoch: int = 0
    heartbeat_interval_ms: int = 3_000
    assignment: tuple[TopicPartitions, ...] = ()


@dataclass(frozen=True, slots=True)
class HeartbeatRequest:
    """Keeps a member alive and reports what it owns now. A member that was asked to give up
    partitions confirms by leaving them out of ``owned``; only then are they reassigned."""

    group_id: str
    member_id: str
    member_epoch: int
    owned: tuple[TopicPartitions, ...] | None = None  # None: unchanged since last heartbeat
    subscribed_topics: tuple[str, ...] | None = None  # None: unchanged


@dataclass(frozen=True, slots=True)
class HeartbeatResponse:
    error_code: int = 0
    error_message: str | None = None
    member_epoch: int = 0
    heartbeat_interval_ms: int = 3_000
    assignment: tuple[TopicPartitions, ...] | None = None  # None: unchanged; () means none


@dataclass(frozen=True, slots=True)
class LeaveGroupRequest:
    group_id: str
    member_id: str
    member_epoch: int = -1
    instance_id: str | None = None


@dataclass(frozen=True, slots=True)
class LeaveGroupResponse:
    error_code: int = 0
    error_message: str | None = None


@dataclass(frozen=True, slots=True)
class OffsetCommitPartition:
    topic: str
    partition: int
    offset: int  # the next offset to consume
    metadata: str = ""
    leader_epoch: int = -1


@dataclass(frozen=True, slots=True)
class OffsetCommitRequest:
    """A member commits with its id and epoch (stale epochs are fenced); an empty ``member_id``
    is an administrative commit, accepted only while the group has no members."""

    group_id: str
    offsets: tuple[OffsetCommitPartition, ...]
    member_id: str = ""
    member_epoch: int = -1


@dataclass(frozen=True, slots=True)
class OffsetCommitPartitionResult:
    topic: str
    partition: int
    error_code: int = 0
    error_message: str | None = None


@dataclass(frozen=True, slots=True)
class OffsetCommitResponse:
    error_code: int = 0
    error_message: str | None = None
    partitions: tuple[OffsetCommitPartitionResult, ...] = ()


@dataclass(frozen=True, slots=True)
class OffsetFetchRequest:
    group_id: str
    partitions: tuple[TopicPartitions, ...] | None = None  # None: every committed partition


@dataclass(frozen=True, slots=True)
class OffsetFetchPartitionResult:
    topic: str
    partition: int
    offset: int = NO_OFFSET  # -1: nothing committed
    metadata: str = ""
    leader_epoch: int = -1
    error_code: int = 0


@dataclass(frozen=True, slots=True)
class OffsetFetchResponse:
    error_code: int = 0
    error_message: str | None = None
    partitions: tuple[OffsetFetchPartitionResult, ...] = ()


@dataclass(frozen=True, slots=True)
class ListGroupsRequest:
    states: tuple[str, ...] = ()  # filter: "empty", "reconciling", "stable", "dead"; () = all


@dataclass(frozen=True, slots=True)
class GroupListing:
    group_id: str
    state: str
    member_count: int = 0


@dataclass(frozen=True, slots=True)
class ListGroupsResponse:
    error_code: int = 0
    groups: tuple[GroupListing, ...] = ()


@dataclass(frozen=True, slots=True)
class DescribeGroupsRequest:
    group_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class MemberDescription:
    member_id: str
    member_epoch: int = 0
    instance_id: str | None = None
    client_id: str = ""
    client_host: str = ""
    subscribed_topics: tuple[str, ...] = ()
    subscribed_pattern: str | None = None
    assignment: tuple[TopicPartitions, ...] = ()
    target_assignment: tuple[TopicPartitions, ...] = ()


@dataclass(frozen=True, slots=True)
class GroupDescription:
    group_id: str
    error_code: int = 0
    error_message: str | None = None
    state: str = ""
    group_epoch: int = 0
    assignor: str = ""
    members: tuple[MemberDescription, ...] = ()


@dataclass(frozen=True, slots=True)
class DescribeGroupsResponse:
    groups: tuple[GroupDescription, ...] = ()


@dataclass(frozen=True, slots=True)
class DeleteGroupsRequest:
    group_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class GroupResult:
    group_id: str
    error_code: int = 0
    error_message: str | None = None


@dataclass(frozen=True, slots=True)
class DeleteGroupsResponse:
    results: tuple[GroupResult, ...] = ()


@dataclass(frozen=True, slots=True)
class DescribeLogDirsRequest:
    """What each partition holds on the broker's disk (``tidelog topic describe``)."""

    topics: tuple[str, ...] | None = None  # None: every topic


@dataclass(frozen=True, slots=True)
class UnreadableRange:
    """Offsets of a partition's log the broker cannot serve (see DAMAGED_RANGE and
    MISSING_RANGE)."""

    start_offset: int
    end_offset: int  # exclusive: where data can be read again
    kind: str  # "damaged" (failed its checksum) or "missing" (no segment holds it)
    detail: str = ""


@dataclass(frozen=True, slots=True)
class LogDirPartition:
    topic: str
    partition: int
    error_code: int = 0
    size_bytes: int = 0
    segments: int = 0
    log_start_offset: int = NO_OFFSET
    log_end_offset: int = NO_OFFSET
    unreadable: tuple[UnreadableRange, ...] = ()


@dataclass(frozen=True, slots=True)
class DescribeLogDirsResponse:
    log_dir: str = ""
    partitions: tuple[LogDirPartition, ...] = ()


@dataclass(frozen=True, slots=True)
class InitProducerIdRequest:
    """Ask for an idempotent producer's id and epoch. A new producer sends ``producer_id``
    -1; one that lost track of its sequences sends its id and epoch to get the epoch bumped
    (KIP-360), which fences any older instance of itself."""

    transactional_id: str | None = None  # reserved for transactions; send nil
    transaction_timeout_ms: int = -1
    producer_id: int = NO_PRODUCER_ID
    producer_epoch: int = -1


@dataclass(frozen=True, slots=True)
class InitProducerIdResponse:
    error_code: int = 0
    error_message: str | None = None
    producer_id: int = NO_PRODUCER_ID
    producer_epoch: int = -1


KEY_TYPE_GROUP: Final = 0
KEY_TYPE_SHARE: Final = 2


@dataclass(frozen=True, slots=True)
class FindCoordinatorRequest:
    """Which broker coordinates group ``key``: the leader of the partition the group id hashes
    to, of ``__consumer_offsets`` (``key_type`` 0: a consumer group) or of
    ``__share_group_state`` (2: a share group, KIP-932's number)."""

    key: str
    key_type: int = 0


@dataclass(frozen=True, slots=True)
class FindCoordinatorResponse:
    error_code: int = 0
    error_message: str | None = None
    node_id: int = -1
    host: str = ""
    port: int = -1


Request: TypeAlias = (
    HandshakeRequest
    | MetadataRequest
    | CreateTopicsRequest
    | DeleteTopicsRequest
    | DescribeConfigsRequest
    | AlterConfigsRequest
    | AlterPartitionReassignmentsRequest
    | ProduceRequest
    | FetchRequest
    | ListOffsetsRequest
    | JoinGroupRequest
    | HeartbeatRequest
    | LeaveGroupRequest
    | OffsetCommitRequest
    | OffsetFetchRequest
    | ListGroupsRequest
    | DescribeGroupsRequest
    | DeleteGroupsRequest
    | DescribeLogDirsRequest
    | InitProducerIdRequest
    | FindCoordinatorRequest
    | ShareRequest
    | OffsetsForLeaderEpochRequest
)

Response: TypeAlias = (
    HandshakeResponse
    | MetadataResponse
    | CreateTopicsResponse
    | DeleteTopicsResponse
    | DescribeConfigsResponse
    | AlterConfigsResponse
    | AlterPartitionReassignmentsResponse
    | ProduceResponse
    | FetchResponse
    | ListOffsetsResponse
    | JoinGroupResponse
    | HeartbeatResponse
    | LeaveGroupResponse
    | OffsetCommitResponse
    | OffsetFetchResponse
    | ListGroupsResponse
    | DescribeGroupsResponse
    | DeleteGroupsResponse
    | DescribeLogDirsResponse
    | InitProducerIdResponse
    | FindCoordinatorResponse
    | ShareResponse
    | OffsetsForLeaderEpochResponse
)
