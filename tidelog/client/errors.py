"""Errors the client raises.

Broker errors are the classes of :mod:`tidelog.wire.errors` (one per wire error code, each
with a ``retriable`` flag), re-exported here; :func:`broker_error` builds one with a message
that names the topic or partition concerned and says what to do. Errors that happen on this
side of the socket are the :class:`ClientError` family below. Local misuse (a bad argument, a
partition that is not assigned) raises :class:`ClientUsageError`, a ``ValueError``.
"""

from __future__ import annotations

from typing import Final

from tidelog.wire.api import MAX_TOPIC_NAME_LENGTH
from tidelog.wire.errors import (
    BrokerError,
    CorruptBatchError,
    DamagedRangeError,
    ErrorCode,
    MissingRangeError,
    OffsetOutOfRangeError,
    ProtocolError,
    TidelogError,
    UnreadableRangeError,
    error_class,
)

__all__ = [
    "BrokerError",
    "BrokerUnavailableError",
    "ClientClosedError",
    "ClientError",
    "ClientUsageError",
    "ConnectionClosedError",
    "CorruptBatchError",
    "DamagedRangeError",
    "DeliveryTimeoutError",
    "MissingRangeError",
    "NoOffsetForPartitionError",
    "OffsetOutOfRangeError",
    "ProducerBufferFullError",
    "ProducerFencedError",
    "ProtocolError",
    "RecordDeserializationError",
    "RequestTimeoutError",
    "TidelogConnectionError",
    "TidelogError",
    "UnreadableRangeError",
    "broker_error",
    "is_retriable",
]


class ClientError(TidelogError):
    """Something went wrong on the client's side of the socket."""

    retriable: bool = False


class TidelogConnectionError(ClientError):
    """A broker could not be reached, or the connection to it was lost. Retriable: the client
    reconnects with backoff; if it keeps happening, check that the broker is running and that
    ``bootstrap_servers`` and the broker's advertised address are reachable from here."""

    retriable = True


class ConnectionClosedError(TidelogConnectionError):
    """The connection closed while this request waited for its response. The request may or
    may not have been processed by the broker; ``__cause__`` says why the connection closed."""


class BrokerUnavailableError(TidelogConnectionError):
    """No broker of ``bootstrap_servers`` (or the broker a partition's leader lives on) could
    be connected to."""


class RequestTimeoutError(ClientError):
    """No response arrived within the request's deadline. Retriable; if it keeps happening the
    broker is overloaded or the network is slow: raise ``request_timeout``."""

    retriable = True


class DeliveryTimeoutError(ClientError):
    """A record was not acknowledged within ``delivery_timeout``. ``__cause__`` holds the last
    error seen, if any. The record may or may not have been written."""


class ProducerBufferFullError(ClientError):
    """``send()`` waited ``max_block`` seconds for room in ``buffer_memory``: records are
    produced faster than the brokers accept them. Slow down, or raise ``buffer_memory`` or
    ``max_block``."""


class ProducerFencedError(ClientError):
    """The broker refused this idempotent producer's batches with INVALID_PRODUCER_EPOCH:
    another producer holds a newer epoch of its producer id. Fatal: its pending records fail
    with this error and ``send()`` raises it; close the producer and create a new one."""


class NoOffsetForPartitionError(ClientError):
    """A partition has no position and ``auto_offset_reset="none"`` forbids choosing one:
    call ``seek()``, ``seek_to_beginning()`` or ``seek_to_end()`` first."""


class RecordDeserializationError(ClientError):
    """A record's key or value could not be deserialized. ``__cause__`` holds the
    deserializer's error; ``topic``, ``partition`` and ``offset`` name the record. From
    ``getmany()`` / ``async for`` the consumer's position stays on it: ``seek(tp, offset + 1)``
    to skip it. From a :class:`ConsumerBatch`'s ``keys`` / ``values`` the batch was already
    handed out, and counts as consumed."""

    def __init__(self, message: str, *, topic: str, partition: int, offset: int) -> None:
        super().__init__(message)
        self.topic = topic
        self.partition = partition
        self.offset = offset


class ClientClosedError(ClientError):
    """The producer, consumer or admin client is closed (or was never started): use it inside
    ``async with`` or after ``await start()``."""


class ClientUsageError(ClientError, ValueError):
    """The client was called with arguments or in a state that cannot work."""


def is_retriable(exc: BaseException) -> bool:
    """Whether retrying the same request may succeed (after backoff, reconnect or a metadata
    refresh)."""
    return bool(getattr(exc, "retriable", False))


_HINTS: Final[dict[ErrorCode, str]] = {
    ErrorCode.UNKNOWN_TOPIC_OR_PARTITION: "create the topic first, or check its name and "
    "partition count",
    ErrorCode.INVALID_TOPIC_NAME: f"use 1-{MAX_TOPIC_NAME_LENGTH} characters from [a-zA-Z0-9._-]",
    ErrorCode.OFFSET_OUT_OF_RANGE: "seek to an offset between the log start and the end, or "
    "set auto_offset_reset to 'earliest' or 'latest'",
    ErrorCode.MESSAGE_TOO_LARGE: "lower the producer's batch_size or raise the topic's "
    "max_message_bytes config",
    ErrorCode.NOT_LEADER: "the client refreshes its metadata and retries",
    ErrorCode.LEADER_NOT_AVAILABLE: "the client refreshes its metadata and retries",
    ErrorCode.TOPIC_ALREADY_EXISTS: "pick another name, or pass if_not_exists=True",
    ErrorCode.INVALID_PARTITIONS: "use a partition count of at least 1",
    ErrorCode.INVALID_REPLICATION_FACTOR: "use a replication factor between 1 and the number "
    "of brokers",
    ErrorCode.INVALID_CONFIG: "check the config key and value against the broker's "
    "describe_configs output",
    ErrorCode.UNSUPPORTED_VERSION: "upgrade the client or the broker",
    ErrorCode.UNKNOWN_API: "upgrade the broker",
    ErrorCode.NOT_ENOUGH_REPLICAS: "bring brokers back, or lower min.insync.replicas",
    ErrorCode.UNSUPPORTED_COMPRESSION: "use compression 'none', 'lz4' or 'zstd'",
    ErrorCode.INVALID_TIMESTAMP: "send timestamps in milliseconds since the epoch",
    ErrorCode.POLICY_VIOLATION: "ask the broker's operator what its policy allows",
    ErrorCode.HANDSHAKE_REQUIRED: "this is a client bug: report it",
    ErrorCode.OUT_OF_ORDER_SEQUENCE: "the broker did not write these records: it had lost "
    "track of an earlier batch of this producer, or one failed; the producer bumps its epoch "
    "and starts the partition's sequence again, so send them again if they must be written",
    ErrorCode.INVALID_PRODUCER_EPOCH: "another producer with this producer id has a newer "
    "epoch: this one is fenced; create a new producer",
    ErrorCode.DAMAGED_RANGE: "seek(tp, error.next_offset) to skip the damaged records, or "
    "create the consumer with skip_unreadable=True",
    ErrorCode.MISSING_RANGE: "seek(tp, error.next_offset) to skip the missing records, or "
    "create the consumer with skip_unreadable=True",
}


def broker_error(code: int, message: str | None = None, *, where: str = "") -> BrokerError:
    """The registry's exception for ``code``, its message naming ``where`` (a topic, a
    partition) and, for codes a user can act on, what to do."""
    cls = error_class(code)
    text = message or cls(None).message
    if where:
        text = f"{where}: {text}"
    try:
        hint = _HINTS.get(ErrorCode(code))
    except ValueError:
        hint = None
    if hint:
        text = f"{text} ({hint})"
    return cls(text)
