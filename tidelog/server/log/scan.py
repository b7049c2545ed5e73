"""Walking the batch headers of a segment file (lookups), and timestamp helpers over a walk.

A walk reads in chunks and never parses records: it trusts the CRC to have been checked
before (at append, by recovery or by the scrubber: :mod:`.check`) and checks that each header
is plausible and that offsets follow on, stepping over known damaged ranges.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Final, NamedTuple

from tidelog.wire.errors import CorruptBatchError, StorageError
from tidelog.wire.layouts import (
    BATCH_HEADER_SIZE,
    BATCH_HEADER_STRUCT,
    BATCH_LOG_OVERHEAD,
    BATCH_MAGIC,
)
from tidelog.wire.records import RecordBatch

from .damage import Damage
from .files import Handle

SCAN_CHUNK: Final = 16 * 1024
"""Bytes read at a time when walking batch headers (between two index entries)."""
RECOVERY_CHUNK: Final = 1024 * 1024
"""Bytes read at a time when a segment is checked batch by batch (:mod:`.check`)."""

_HEADER: Final = BATCH_HEADER_STRUCT
_HEADER_SIZE: Final = BATCH_HEADER_SIZE


class BatchInfo(NamedTuple):
    """What the log keeps of a batch header while walking a segment."""

    position: int
    size: int
    base_offset: int
    next_offset: int
    max_timestamp: int


class SegmentDamage(Exception):
    """A segment is not what its size and indexes say, found at ``position``. ``at_start``:
    at the first header of the walk (where an index entry pointed)."""

    def __init__(self, position: int, reason: str, at_start: bool) -> None:
        super().__init__(f"{reason} at byte {position}")
        self.position = position
        self.reason = reason
        self.at_start = at_start


class StaleIndexError(Exception):
    """An index entry does not match the log (rebuilding the indexes from the log fixes it)."""


def scan_headers(
    handle: Handle,
    start: int,
    end: int,
    expected: int | None,
    skips: Sequence[Damage] = (),
) -> Iterator[BatchInfo]:
    """Walk batch headers from ``start`` (a batch boundary) up to ``end``, checking that each
    is plausible and that offsets follow on from ``expected``; raise :class:`SegmentDamage`
    if not. Known damaged ranges (``skips``, sorted) are stepped over: the walk goes on after
    one at the offset it ends at."""
    buf = b""
    buf_start = pos = start
    chunk = SCAN_CHUNK
    unpack = _HEADER.unpack_from
    skip_i, skip_at = 0, -1
    if skips:
        while skip_i < len(skips) and skips[skip_i].end <= start:
            skip_i += 1
        if skip_i < len(skips):
            skip_at = skips[skip_i].position
            if skip_at < start:
                raise SegmentDamage(start, "inside a damaged range", True)
    while pos < end:
        if pos == skip_at:
            region = skips[skip_i]
            pos, expected = region.end, region.next_offset
            skip_i += 1
            skip_at = skips[skip_i].position if skip_i < len(skips) else -1
            continue
        rel = pos - buf_start
        if rel < 0 or rel + _HEADER_SIZE > len(buf):
            if end - pos < _HEADER_SIZE:
                raise SegmentDamage(pos, "the data ends inside a batch header", pos == start)
            buf = handle.pread(min(chunk, end - pos), pos)
            buf_start, rel = pos, 0
            if len(buf) < _HEADER_SIZE:
                raise SegmentDamage(pos, "the file is shorter than expected", pos == start)
        base, length, _epoch, magic, _crc, _attrs, delta, _ts, max_ts, *_ = unpack(buf, rel)
        size = length + BATCH_LOG_OVERHEAD
        if size < _HEADER_SIZE or magic != BATCH_MAGIC or delta < 0:
            raise SegmentDamage(pos, "no valid batch header", pos == start)
        if pos + size > end or (skip_at >= 0 and pos + size > skip_at):
            raise SegmentDamage(pos, "a batch runs past the end of the data", pos == start)
        if expected is not None and base != expected:
            raise SegmentDamage(pos, f"found offset {base} where {expected} belongs", pos == start)
        expected = base + delta + 1
        yield BatchInfo(pos, size, base, expected, max_ts)
        pos += size
        # Past a large batch, read just the next header rather than a chunk of its data.
        chunk = SCAN_CHUNK if size < SCAN_CHUNK else _HEADER_SIZE


def header_at(handle: Handle, position: int, end: int, expected: int) -> BatchInfo | None:
    """The batch at ``position`` if a plausible header starting ``expected`` is there and the
    batch ends by ``end``; ``None`` otherwise (a lookup hint that no longer holds)."""
    buf = handle.pread(_HEADER_SIZE, position)
    if len(buf) < _HEADER_SIZE:
        return None
    base, length, _epoch, magic, _crc, _attrs, delta, _ts, max_ts, *_ = _HEADER.unpack_from(buf)
    size = length + BATCH_LOG_OVERHEAD
    if magic != BATCH_MAGIC or base != expected or delta < 0 or size < _HEADER_SIZE:
        return None
    if position + size > end:
        return None
    return BatchInfo(position, size, base, base + delta + 1, max_ts)


def largest_timestamp(
    infos: Iterable[BatchInfo], start: tuple[int, int] | None
) -> tuple[int, int] | None:
    """(max timestamp, base offset of its batch) over ``start`` and the walked batches; the
    first batch to reach a timestamp wins a tie."""
    best = start
    for info in infos:
        if best is None or info.max_timestamp > best[0]:
            best = (info.max_timestamp, info.base_offset)
    return best


def find_timestamp(
    infos: Iterable[BatchInfo], read: Callable[[int, int], bytes], timestamp: int, path: str
) -> tuple[int, int] | None:
    """(offset, timestamp) of the first record at or after ``timestamp``: the walk stops at
    the first batch whose max timestamp reaches it, and ``read`` fetches that batch alone to
    decode its records. ``None`` if no walked batch reaches it."""
    for info in infos:
        if info.max_timestamp >= timestamp:
            data = read(info.position, info.size)
            try:
                records = RecordBatch.parse(data).records()
            except CorruptBatchError as exc:
                raise StorageError(f"corrupt batch in {path} at {info.position}: {exc}") from exc
            for record in records:
                if record.timestamp >= timestamp:
                    return record.offset, record.timestamp
    return None
