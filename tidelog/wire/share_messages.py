"""Share-group (queue) messages: ShareFetch, ShareAcknowledge, AlterShareGroup and
DescribeShareGroup (docs/PROTOCOL.md, "Share groups"; docs/QUEUES.md).

A share group reads topics as a queue: the broker *acquires* records for a member under a
time-limited lock, and the member settles each one with an acknowledgement (:class:`AckType`).
Records travel in the message body (msgpack), not as batches in the data section: each carries
its own delivery count, and redelivered records are not contiguous.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Final

Header = tuple[str, bytes | None]

DEFAULT_SHARE_MAX_RECORDS: Final = 500
DEFAULT_SHARE_MAX_WAIT_MS: Final = 500
DLQ_HEADER_PREFIX: Final = "tidelog.dlq."
"""Every header the broker adds to a dead letter starts with this (docs/QUEUES.md)."""
REDRIVE_COUNT_HEADER: Final = "tidelog.redrive_count"
"""How many times a record was redriven from a dead-letter topic: outside the dead-letter
prefix, so a record dead-lettered again keeps it and the next redrive counts on."""


class AckType(IntEnum):
    """How a member settles an acquired record (KIP-932's values; RENEW is KIP-1222's)."""

    ACCEPT = 1  # done: never delivered again
    RELEASE = 2  # available again, now or after a delay (``delay_ms``; -1: the backoff policy)
    REJECT = 3  # to the dead-letter topic, with ``error`` as the reason
    RENEW = 4  # extend the lock by the group's lock duration; not terminal


@dataclass(frozen=True, slots=True)
class ShareAck:
    topic: str
    partition: int
    offset: int
    type: int = AckType.ACCEPT
    delay_ms: int = -1
    """RELEASE only: ms until the record is available again; -1: the group's backoff policy."""
    error: str = ""
    """RELEASE: the worker's error text; REJECT: the reason. Kept for the dead-letter headers."""


@dataclass(frozen=True, slots=True)
class ShareAckResult:
    """A failed acknowledgement (only failures are answered; the others succeeded)."""

    topic: str
    partition: int
    offset: int
    error_code: int
    error_message: str | None = None


@dataclass(frozen=True, slots=True)
class ShareRecord:
    """A record acquired for the member, locked until it settles or the lock expires."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[Header, ...] = ()
    delivery_count: int = 1


@dataclass(frozen=True, slots=True)
class ShareFetchRequest:
    """Acquire up to ``max_records`` records of ``topics`` for ``member_id`` (any string the
    member picks, unique in the group), waiting up to ``max_wait_ms`` for one. The group is
    created with its default settings on first use."""

    group_id: str
    member_id: str
    topics: tuple[str, ...]
    max_records: int = DEFAULT_SHARE_MAX_RECORDS
    max_wait_ms: int = DEFAULT_SHARE_MAX_WAIT_MS
    max_bytes: int = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ShareFetchResponse:
    error_code: int = 0
    error_message: str | None = None
    records: tuple[ShareRecord, ...] = ()
    lock_duration_ms: int = 0


@dataclass(frozen=True, slots=True)
class ShareAcknowledgeRequest:
    """Settle records the member holds. ``leave``: after these, release everything else the
    member holds (a graceful close)."""

    group_id: str
    member_id: str
    acknowledgements: tuple[ShareAck, ...] = ()
    leave: bool = False


@dataclass(frozen=True, slots=True)
class ShareAcknowledgeResponse:
    error_code: int = 0
    error_message: str | None = None
    failed: tuple[ShareAckResult, ...] = ()


@dataclass(frozen=True, slots=True)
class AlterShareGroupRequest:
    """Set a group's settings (docs/QUEUES.md, "Settings"); the group is created if missing.
    Values are strings, as topic configs; an empty ``configs`` only creates the group."""

    group_id: str
    configs: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class AlterShareGroupResponse:
    error_code: int = 0
    error_message: str | None = None


@dataclass(frozen=True, slots=True)
class DescribeShareGroupRequest:
    group_id: str


@dataclass(frozen=True, slots=True)
class SharePartitionStatus:
    topic: str
    partition: int
    start_offset: int
    end_offset: int
    """Next offset never acquired; records from here to the log end are available."""
    log_end_offset: int
    in_flight: int
    delayed: int
    redeliverable: int
    dead_lettering: int
    acked: int
    dead_lettered: int
    oldest_acquired_ms: int = -1
    """Wall-clock time of the first delivery of the oldest unsettled record; -1: none."""
    redelivered: int = 0
    """Unsettled records delivered more than once."""
    max_delivery_count: int = 0
    """The most deliveries an unsettled record had."""

    @property
    def available(self) -> int:
        """Records a fetch could take now: never acquired (to the log end), or released and
        past their delay."""
        return max(self.log_end_offset - self.end_offset, 0) + self.redeliverable


@dataclass(frozen=True, slots=True)
class DescribeShareGroupResponse:
    error_code: int = 0
    error_message: str | None = None
    configs: tuple[tuple[str, str], ...] = ()
    members: tuple[str, ...] = ()
    partitions: tuple[SharePartitionStatus, ...] = ()
    handled: int = 0
    """Records acked since the broker started, and their handling time (first delivery to
    ack), for ``queue status``."""
    handling_ms_total: int = 0
    handling_ms_max: int = 0


ShareRequest = (
    ShareFetchRequest | ShareAcknowledgeRequest | AlterShareGroupRequest | DescribeShareGroupRequest
)
ShareResponse = (
    ShareFetchResponse
    | ShareAcknowledgeResponse
    | AlterShareGroupResponse
    | DescribeShareGroupResponse
)
