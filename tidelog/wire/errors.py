"""One error taxonomy for broker and client.

Every error the broker can report travels as an :class:`ErrorCode`. Each code has one entry in
:data:`ERRORS` (name, ``retriable`` flag, default message) and exactly one exception class, so
the client raises the same class whatever API reported the code.

Two families of exceptions are kept apart on purpose:

* :class:`ProtocolError` -- the bytes from the peer violate the protocol. After a
  :class:`FramingError` (bad magic, checksum mismatch, oversized or truncated frame) the stream
  cannot be trusted and the connection is closed, never "resynchronised". A malformed body or a
  corrupt batch inside an intact frame is answered with an error and the connection goes on.
* :class:`BrokerError` -- the peer understood the request and refused it with an error code.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar, Final


class ErrorCode(IntEnum):
    """Error codes carried in response bodies. Values are part of the wire format: never reuse."""

    NONE = 0
    UNKNOWN_SERVER_ERROR = 1
    CORRUPT_MESSAGE = 2
    UNKNOWN_TOPIC_OR_PARTITION = 3
    INVALID_TOPIC_NAME = 4
    OFFSET_OUT_OF_RANGE = 5
    MESSAGE_TOO_LARGE = 6
    NOT_LEADER = 7
    LEADER_NOT_AVAILABLE = 8
    REQUEST_TIMED_OUT = 9
    TOPIC_ALREADY_EXISTS = 10
    INVALID_PARTITIONS = 11
    INVALID_REPLICATION_FACTOR = 12
    INVALID_CONFIG = 13
    INVALID_REQUEST = 14
    UNSUPPORTED_VERSION = 15
    UNKNOWN_API = 16
    NOT_ENOUGH_REPLICAS = 17
    NOT_ENOUGH_REPLICAS_AFTER_APPEND = 18
    STORAGE_ERROR = 19
    BROKER_SHUTTING_DOWN = 20
    UNSUPPORTED_COMPRESSION = 21
    INVALID_TIMESTAMP = 22
    INVALID_RECORD = 23
    POLICY_VIOLATION = 24
    TOPIC_DELETION_IN_PROGRESS = 25
    HANDSHAKE_REQUIRED = 26
    COORDINATOR_LOAD_IN_PROGRESS = 29
    COORDINATOR_NOT_AVAILABLE = 30
    NOT_COORDINATOR = 31
    INVALID_GROUP_ID = 32
    GROUP_ID_NOT_FOUND = 33
    UNKNOWN_MEMBER_ID = 34
    FENCED_MEMBER_EPOCH = 35
    UNRELEASED_INSTANCE_ID = 36
    NON_EMPTY_GROUP = 37
    GROUP_MAX_SIZE_REACHED = 38
    INVALID_SESSION_TIMEOUT = 39
    UNSUPPORTED_ASSIGNOR = 40
    INVALID_COMMIT_OFFSET = 41
    OFFSET_METADATA_TOO_LARGE = 42
    INVALID_REPLICA_ASSIGNMENT = 43
    OUT_OF_ORDER_SEQUENCE = 50
    DUPLICATE_SEQUENCE = 51
    INVALID_PRODUCER_EPOCH = 52
    DAMAGED_RANGE = 60
    MISSING_RANGE = 61
    INVALID_RECORD_STATE = 70
    QUEUE_FULL = 71
    FENCED_LEADER_EPOCH = 74
    UNKNOWN_LEADER_EPOCH = 75


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """What a code means: its ``retriable`` flag tells a client whether the same request may
    succeed later (after a metadata refresh, a reconnect or a backoff) without any change."""

    code: ErrorCode
    retriable: bool
    message: str


def _info(code: ErrorCode, retriable: bool, message: str) -> tuple[ErrorCode, ErrorInfo]:
    return code, ErrorInfo(code, retriable, message)


ERRORS: Final[dict[ErrorCode, ErrorInfo]] = dict(
    [
        _info(ErrorCode.NONE, False, "no error"),
        _info(ErrorCode.UNKNOWN_SERVER_ERROR, False, "the broker hit an unexpected error"),
        _info(ErrorCode.CORRUPT_MESSAGE, True, "a record batch failed its checksum or sizes"),
        _info(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, True, "this topic or partition does not exist"),
        _info(ErrorCode.INVALID_TOPIC_NAME, False, "the topic name is not valid"),
        _info(ErrorCode.OFFSET_OUT_OF_RANGE, False, "the offset is outside the partition's log"),
        _info(ErrorCode.MESSAGE_TOO_LARGE, False, "the batch is larger than the topic allows"),
        _info(ErrorCode.NOT_LEADER, True, "this broker is not the partition's leader"),
        _info(ErrorCode.LEADER_NOT_AVAILABLE, True, "the partition has no leader right now"),
        _info(ErrorCode.REQUEST_TIMED_OUT, True, "the request timed out on the broker"),
        _info(ErrorCode.TOPIC_ALREADY_EXISTS, False, "a topic with this name already exists"),
        _info(ErrorCode.INVALID_PARTITIONS, False, "the partition count is not valid"),
        _info(ErrorCode.INVALID_REPLICATION_FACTOR, False, "the replication factor is not valid"),
        _info(ErrorCode.INVALID_CONFIG, False, "a config key or value is not valid"),
        _info(ErrorCode.INVALID_REQUEST, False, "the request is not valid"),
        _info(ErrorCode.UNSUPPORTED_VERSION, False, "the broker does not support this version"),
        _info(ErrorCode.UNKNOWN_API, False, "the broker does not know this API"),
        _info(ErrorCode.NOT_ENOUGH_REPLICAS, True, "fewer in-sync replicas than required"),
        _info(
            ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
            True,
            "written, but fewer in-sync replicas than required acknowledged it",
        ),
        _info(ErrorCode.STORAGE_ERROR, True, "the broker could not read or write its disk"),
        _info(ErrorCode.BROKER_SHUTTING_DOWN, True, "the broker is shutting down"),
        _info(ErrorCode.UNSUPPORTED_COMPRESSION, False, "unknown compression codec"),
        _info(ErrorCode.INVALID_TIMESTAMP, False, "a record timestamp is out of range"),
        _info(ErrorCode.INVALID_RECORD, False, "a record is not valid"),
        _info(ErrorCode.POLICY_VIOLATION, False, "the request violates a broker policy"),
        _info(ErrorCode.TOPIC_DELETION_IN_PROGRESS, True, "the topic is being deleted"),
        _info(ErrorCode.HANDSHAKE_REQUIRED, False, "the connection must start with a handshake"),
        _info(
            ErrorCode.COORDINATOR_LOAD_IN_PROGRESS,
            True,
            "the coordinator is still loading the group's state",
        ),
        _info(ErrorCode.COORDINATOR_NOT_AVAILABLE, True, "the group coordinator is not available"),
        _info(ErrorCode.NOT_COORDINATOR, True, "this broker does not coordinate the group"),
        _info(ErrorCode.INVALID_GROUP_ID, False, "the group id is not valid"),
        _info(ErrorCode.GROUP_ID_NOT_FOUND, False, "no such group"),
        _info(ErrorCode.UNKNOWN_MEMBER_ID, False, "the group does not know this member"),
        _info(ErrorCode.FENCED_MEMBER_EPOCH, False, "the member epoch is stale; rejoin the group"),
        _info(
            ErrorCode.UNRELEASED_INSTANCE_ID,
            False,
            "another member still holds this static instance id",
        ),
        _info(ErrorCode.NON_EMPTY_GROUP, False, "the group still has members"),
        _info(ErrorCode.GROUP_MAX_SIZE_REACHED, False, "the group has reached its maximum size"),
        _info(ErrorCode.INVALID_SESSION_TIMEOUT, False, "the session timeout is out of range"),
        _info(ErrorCode.UNSUPPORTED_ASSIGNOR, False, "the broker does not know this assignor"),
        _info(ErrorCode.INVALID_COMMIT_OFFSET, False, "the committed offset is not valid"),
        _info(ErrorCode.OFFSET_METADATA_TOO_LARGE, False, "the commit metadata is too large"),
        _info(
            ErrorCode.INVALID_REPLICA_ASSIGNMENT,
            False,
            "the replica list names an unknown broker, a broker twice, or a wrong count",
        ),
        _info(ErrorCode.OUT_OF_ORDER_SEQUENCE, False, "the producer sequence is out of order"),
        _info(ErrorCode.DUPLICATE_SEQUENCE, False, "the batch was already written"),
        _info(ErrorCode.INVALID_PRODUCER_EPOCH, False, "the producer epoch is fenced"),
        _info(
            ErrorCode.DAMAGED_RANGE,
            False,
            "these offsets are in a batch that failed its checksum on the broker's disk",
        ),
        _info(
            ErrorCode.MISSING_RANGE,
            False,
            "these offsets are missing from the broker's disk (a lost or cut segment)",
        ),
        _info(
            ErrorCode.INVALID_RECORD_STATE,
            False,
            "the record is not held by this member (settled, lock expired, or never acquired)",
        ),
        _info(ErrorCode.QUEUE_FULL, True, "the queue's backlog limit is reached"),
        _info(
            ErrorCode.FENCED_LEADER_EPOCH,
            True,
            "the leader epoch in the request is older than the broker's: refresh the metadata",
        ),
        _info(
            ErrorCode.UNKNOWN_LEADER_EPOCH,
            True,
            "the leader epoch in the request is newer than the broker knows yet",
        ),
    ]
)


class TidelogError(Exception):
    """Base of every error tidelog raises on purpose."""


# --- protocol violations: the peer's bytes cannot be trusted --------------------------------


class ProtocolError(TidelogError):
    """The peer sent bytes that violate the protocol."""


class FramingError(ProtocolError):
    """A frame could not be delimited or verified: the connection must be closed."""


class BadMagicError(FramingError):
    """The first byte of a frame is not the protocol's magic byte (not a tidelog peer?)."""


class UnsupportedProtocolVersionError(FramingError):
    """The frame header names a protocol version this side does not speak."""


class FrameTooLargeError(FramingError):
    """A frame's declared length is above the configured maximum; its body is never buffered."""


class ChecksumMismatchError(FramingError):
    """The CRC-32C in the frame header does not match the header and metadata bytes."""


class TruncatedFrameError(FramingError):
    """The stream ended inside a frame."""


class MalformedMessageError(ProtocolError):
    """A frame is intact but its body does not decode to the message its header names."""


class CorruptBatchError(ProtocolError):
    """A record batch failed its checksum or its sizes and counts do not add up."""


class UnsupportedCompressionError(CorruptBatchError):
    """A record batch names a compression codec this side does not know."""


# --- errors reported by the broker as codes -------------------------------------------------


_BY_CODE: dict[ErrorCode, type[BrokerError]] = {}


class BrokerError(TidelogError):
    """The broker refused a request with an error code.

    ``retriable`` says whether retrying the same request (after a backoff, a metadata refresh
    or a reconnect) may succeed.
    """

    code: ClassVar[ErrorCode] = ErrorCode.UNKNOWN_SERVER_ERROR
    retriable: ClassVar[bool] = False

    def __init__(self, message: str | None = None) -> None:
        info = ERRORS[self.code]
        self.message = message or info.message
        super().__init__(f"{info.code.name}: {self.message}")

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        code = cls.__dict__.get("code")
        if code is None:
            return
        if code in _BY_CODE:
            raise TypeError(f"{code!r} already maps to {_BY_CODE[code].__name__}")
        cls.retriable = ERRORS[code].retriable
        _BY_CODE[code] = cls


def error_class(code: int) -> type[BrokerError]:
    """The exception class for a wire error code; unknown codes map to UnknownServerError."""
    try:
        return _BY_CODE[ErrorCode(code)]
    except (ValueError, KeyError):
        return UnknownServerError


def error_for(code: int, message: str | None = None) -> BrokerError | None:
    """The exception for ``code``, not raised (an answer that lists failures keeps each as a
    value), or ``None`` for ``ErrorCode.NONE``."""
    if code == ErrorCode.NONE:
        return None
    cls = error_class(code)
    if cls is UnknownServerError and code != ErrorCode.UNKNOWN_SERVER_ERROR:
        message = f"unknown error code {code}" + (f": {message}" if message else "")
    return cls(message)


def raise_for_code(code: int, message: str | None = None) -> None:
    """Raise the exception for ``code``, or return when it is ``ErrorCode.NONE``."""
    error = error_for(code, message)
    if error is not None:
        raise error


class UnknownServerError(BrokerError):
    code = ErrorCode.UNKNOWN_SERVER_ERROR


class CorruptMessageError(BrokerError):
    code = ErrorCode.CORRUPT_MESSAGE


class UnknownTopicOrPartitionError(BrokerError):
    code = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION


class InvalidTopicNameError(BrokerError):
    code = ErrorCode.INVALID_TOPIC_NAME


class OffsetOutOfRangeError(BrokerError):
    code = ErrorCode.OFFSET_OUT_OF_RANGE


class MessageTooLargeError(BrokerError):
    code = ErrorCode.MESSAGE_TOO_LARGE


class NotLeaderError(BrokerError):
    code = ErrorCode.NOT_LEADER


class LeaderNotAvailableError(BrokerError):
    code = ErrorCode.LEADER_NOT_AVAILABLE


class RequestTimedOutError(BrokerError):
    code = ErrorCode.REQUEST_TIMED_OUT


class TopicAlreadyExistsError(BrokerError):
    code = ErrorCode.TOPIC_ALREADY_EXISTS


class InvalidPartitionsError(BrokerError):
    code = ErrorCode.INVALID_PARTITIONS


class InvalidReplicationFactorError(BrokerError):
    code = ErrorCode.INVALID_REPLICATION_FACTOR


class InvalidReplicaAssignmentError(BrokerError):
    code = ErrorCode.INVALID_REPLICA_ASSIGNMENT


class InvalidConfigError(BrokerError):
    code = ErrorCode.INVALID_CONFIG


class InvalidRequestError(BrokerError):
    code = ErrorCode.INVALID_REQUEST


class UnsupportedVersionError(BrokerError):
    code = ErrorCode.UNSUPPORTED_VERSION


class UnknownApiError(BrokerError):
    code = ErrorCode.UNKNOWN_API


class NotEnoughReplicasError(BrokerError):
    code = ErrorCode.NOT_ENOUGH_REPLICAS


class NotEnoughReplicasAfterAppendError(BrokerError):
    code = ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND


class StorageError(BrokerError):
    code = ErrorCode.STORAGE_ERROR


class BrokerShuttingDownError(BrokerError):
    code = ErrorCode.BROKER_SHUTTING_DOWN


class UnsupportedCompressionCodeError(BrokerError):
    code = ErrorCode.UNSUPPORTED_COMPRESSION


class InvalidTimestampError(BrokerError):
    code = ErrorCode.INVALID_TIMESTAMP


class InvalidRecordError(BrokerError):
    code = ErrorCode.INVALID_RECORD


class PolicyViolationError(BrokerError):
    code = ErrorCode.POLICY_VIOLATION


class TopicDeletionInProgressError(BrokerError):
    code = ErrorCode.TOPIC_DELETION_IN_PROGRESS


class HandshakeRequiredError(BrokerError):
    code = ErrorCode.HANDSHAKE_REQUIRED


class CoordinatorLoadInProgressError(BrokerError):
    code = ErrorCode.COORDINATOR_LOAD_IN_PROGRESS


class CoordinatorNotAvailableError(BrokerError):
    code = ErrorCode.COORDINATOR_NOT_AVAILABLE


class NotCoordinatorError(BrokerError):
    code = ErrorCode.NOT_COORDINATOR


class InvalidGroupIdError(BrokerError):
    code = ErrorCode.INVALID_GROUP_ID


class GroupIdNotFoundError(BrokerError):
    code = ErrorCode.GROUP_ID_NOT_FOUND


class UnknownMemberIdError(BrokerError):
    code = ErrorCode.UNKNOWN_MEMBER_ID


class FencedMemberEpochError(BrokerError):
    code = ErrorCode.FENCED_MEMBER_EPOCH


class UnreleasedInstanceIdError(BrokerError):
    code = ErrorCode.UNRELEASED_INSTANCE_ID


class NonEmptyGroupError(BrokerError):
    code = ErrorCode.NON_EMPTY_GROUP


class GroupMaxSizeReachedError(BrokerError):
    code = ErrorCode.GROUP_MAX_SIZE_REACHED


class InvalidSessionTimeoutError(BrokerError):
    code = ErrorCode.INVALID_SESSION_TIMEOUT


class UnsupportedAssignorError(BrokerError):
    code = ErrorCode.UNSUPPORTED_ASSIGNOR


class InvalidCommitOffsetError(BrokerError):
    code = ErrorCode.INVALID_COMMIT_OFFSET


class OffsetMetadataTooLargeError(BrokerError):
    code = ErrorCode.OFFSET_METADATA_TOO_LARGE


class OutOfOrderSequenceError(BrokerError):
    code = ErrorCode.OUT_OF_ORDER_SEQUENCE


class DuplicateSequenceError(BrokerError):
    code = ErrorCode.DUPLICATE_SEQUENCE


class InvalidProducerEpochError(BrokerError):
    code = ErrorCode.INVALID_PRODUCER_EPOCH


class UnreadableRangeError(BrokerError):
    """A range of a partition's log cannot be read: the broker found it damaged on disk
    (:class:`DamagedRangeError`) or missing (:class:`MissingRangeError`). Never retriable as
    is: a consumer skips it only by choice, with ``seek(tp, error.next_offset)`` or its
    ``skip_unreadable`` option. ``start_offset`` and ``next_offset`` bound the range
    (``next_offset`` is where data can be read again); -1 when unknown (an old broker)."""

    def __init__(
        self,
        message: str | None = None,
        *,
        topic: str = "",
        partition: int = -1,
        start_offset: int = -1,
        next_offset: int = -1,
    ) -> None:
        super().__init__(message)
        self.topic = topic
        self.partition = partition
        self.start_offset = start_offset
        self.next_offset = next_offset


class DamagedRangeError(UnreadableRangeError):
    code = ErrorCode.DAMAGED_RANGE


class MissingRangeError(UnreadableRangeError):
    code = ErrorCode.MISSING_RANGE


class InvalidRecordStateError(BrokerError):
    """A share-group acknowledgement of a record the member does not hold: already settled,
    its lock expired (it is or will be redelivered), held by another member, never acquired."""

    code = ErrorCode.INVALID_RECORD_STATE


class QueueFullError(BrokerError):
    code = ErrorCode.QUEUE_FULL


class FencedLeaderEpochError(BrokerError):
    """A replica fetch named a leader epoch older than the leader's (KIP-320): the sender
    follows a deposed leader and must read the cluster's metadata again."""

    code = ErrorCode.FENCED_LEADER_EPOCH


class UnknownLeaderEpochError(BrokerError):
    """A replica fetch named a leader epoch newer than this broker has seen: it is behind the
    cluster's metadata; retry shortly."""

    code = ErrorCode.UNKNOWN_LEADER_EPOCH
