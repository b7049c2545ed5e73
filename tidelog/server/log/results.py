"""What the log's operations return: where an append landed, what a read found."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple


class AppendInfo(NamedTuple):
    """Where an appended batch landed. (A named tuple: it is built on every append, and a
    frozen dataclass costs four times as much to create.)"""

    base_offset: int
    last_offset: int
    record_count: int
    max_timestamp: int
    size: int
    log_start_offset: int

    @property
    def next_offset(self) -> int:
        return self.last_offset + 1


@dataclass(frozen=True, slots=True)
class LogReadResult:
    """Whole batches from one segment, and the partition's offsets at the time of the read."""

    records: bytes
    """The batches, copied from the segment file; empty when there is nothing to read yet."""
    first_offset: int
    """Base offset of the first batch returned (at or before the offset asked for)."""
    next_offset: int
    """The offset to fetch next: just after the last batch returned."""
    log_start_offset: int
    high_watermark: int
    log_end_offset: int

    @property
    def size(self) -> int:
        return len(self.records)


@dataclass(frozen=True, slots=True)
class TimestampOffset:
    """The first record at or after a timestamp."""

    offset: int
    timestamp: int


@dataclass(frozen=True, slots=True)
class Unreadable:
    """Offsets ``[start_offset, end_offset)`` a read is refused: ``kind`` is ``"damaged"``
    (they failed their checks) or ``"missing"`` (no segment holds them)."""

    start_offset: int
    end_offset: int
    kind: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class FetchData:
    """What :meth:`LogSegment.read` returns (Kafka's ``FetchDataInfo``)."""

    records: bytes
    """Whole batches, copied from the file; empty when none may be returned."""
    first_offset: int
    """Base offset of the first batch (at or before the offset asked for); the offset asked
    for when ``records`` is empty."""
    next_offset: int
    """Just after the last batch; the offset asked for when ``records`` is empty."""
