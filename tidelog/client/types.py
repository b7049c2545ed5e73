"""Plain data the client hands out: partitions, delivery reports, consumed records.

All of them are ``NamedTuple``: immutable, cheap to build in bulk (a consumer builds a million
a second) and easy to unpack.
"""

from __future__ import annotations

from typing import Any, Generic, NamedTuple, TypeVar

K = TypeVar("K")
V = TypeVar("V")

Headers = tuple[tuple[str, bytes | None], ...]


class TopicPartition(NamedTuple):
    """One partition of one topic."""

    topic: str
    partition: int


class RecordMetadata(NamedTuple):
    """Where a produced record was stored.

    ``offset`` is -1 when the producer used ``acks="none"`` (the broker does not answer).
    ``timestamp`` is the broker's append time when the topic uses log-append time, else the
    record's create time.
    """

    topic: str
    partition: int
    offset: int
    timestamp: int


class ConsumerRecord(NamedTuple, Generic[K, V]):
    """One record as a consumer returns it, key and value deserialized."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: K
    value: V
    headers: Headers = ()


class OffsetAndTimestamp(NamedTuple):
    """An answer of :meth:`AdminClient.list_offsets`: ``offset`` is -1 when no record is at or
    after the requested timestamp."""

    offset: int
    timestamp: int


AnyRecord = ConsumerRecord[Any, Any]
