"""Walking the batches of a segment file: headers only (lookups), or every byte (recovery).

Both read in chunks and never parse records. ``scan_headers`` trusts the CRC to have been
checked before (at append or by recovery) and checks that each header is plausible and that
offsets follow on; ``check_batches`` verifies every batch's CRC, sizes and counts. The
timestamp helpers at the end consume a header walk.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Final, NamedTuple

from tidelog.wire.errors import CorruptBatchError, StorageError
from tidelog.wire.layouts import (
    BATCH_HEADER_SIZE,
    BATCH_HEADER_STRUCT,
    BATCH_LENGTH_OFFSET,
    BATCH_LENGTH_STRUCT,
    BATCH_LOG_OVERHEAD,
    BATCH_MAGIC,
)
from tidelog.wire.records import RecordBatch

from .files import Handle

SCAN_CHUNK: Final = 16 * 1024
"""Bytes read at a time when walking batch headers (between two index entries)."""
RECOVERY_CHUNK: Final = 1024 * 1024
"""Bytes read at a time when recovery checks a segment batch by batch."""

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


def scan_headers(handle: Handle, start: int, end: int, expected: int | None) -> Iterator[BatchInfo]:
    """Walk batch headers from ``start`` (a batch boundary) up to ``end``, checking that each
    is plausible and that offsets follow on from ``expected``; raise :class:`SegmentDamage`
    if not."""
    buf = b""
    buf_start = pos = start
    chunk = SCAN_CHUNK
    unpack = _HEADER.unpack_from
    while pos < end:
        rel = pos - buf_start
        if rel + _HEADER_SIZE > len(buf):
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
        if pos + size > end:
            raise SegmentDamage(pos, "a batch runs past the end of the data", pos == start)
        if expected is not None and base != expected:
            raise SegmentDamage(pos, f"found offset {base} where {expected} belongs", pos == start)
        expected = base + delta + 1
        yield BatchInfo(pos, size, base, expected, max_ts)
        pos += size
        # Past a large batch, read just the next header rather than a chunk of its data.
        chunk = SCAN_CHUNK if size < SCAN_CHUNK else _HEADER_SIZE


@dataclass(frozen=True, slots=True)
class CheckedPrefix:
    """The valid batches at the start of a segment file, and why the rest (if any) is not."""

    batches: list[BatchInfo]
    valid_bytes: int
    file_size: int
    reason: str


def check_batches(handle: Handle, base_offset: int) -> CheckedPrefix:
    """Check every batch of a segment file: whole (not torn), CRC, sizes and counts
    (``RecordBatch.parse``), offsets following on from ``base_offset``, leader epochs never
    going down (the epoch is outside the CRC: this catches most damage to it)."""
    file_size = handle.size()
    batches: list[BatchInfo] = []
    pos, expected, epoch = 0, base_offset, -1
    buf, buf_start = b"", 0
    reason = ""
    while pos < file_size:
        rel = pos - buf_start
        if len(buf) - rel < BATCH_LOG_OVERHEAD:
            buf, buf_start, rel = handle.pread(RECOVERY_CHUNK, pos), pos, 0
        if len(buf) - rel < BATCH_LOG_OVERHEAD:
            reason = "the file ends inside a batch header"
            break
        (length,) = BATCH_LENGTH_STRUCT.unpack_from(buf, rel + BATCH_LENGTH_OFFSET)
        size = length + BATCH_LOG_OVERHEAD
        if size < _HEADER_SIZE:
            reason = f"impossible batch length {size}"
            break
        if pos + size > file_size:
            reason = f"the file ends inside a batch of {size} bytes (torn write)"
            break
        if len(buf) - rel < size:
            buf, buf_start, rel = handle.pread(max(RECOVERY_CHUNK, size), pos), pos, 0
            if len(buf) < size:
                reason = "short read"
                break
        try:
            batch = RecordBatch.parse(memoryview(buf)[rel : rel + size])
        except CorruptBatchError as exc:
            reason = f"corrupt batch: {exc}"
            break
        if batch.base_offset != expected:
            reason = f"batch has offset {batch.base_offset} where {expected} belongs"
            break
        if batch.leader_epoch < epoch:
            reason = f"leader epoch {batch.leader_epoch} after {epoch}"
            break
        epoch = batch.leader_epoch
        expected = batch.next_offset
        batches.append(BatchInfo(pos, size, batch.base_offset, expected, batch.max_timestamp))
        pos += size
    return CheckedPrefix(batches, pos, file_size, reason)


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
