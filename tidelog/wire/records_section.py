"""Reading a batch's records section: the one check of its lengths, the decoded arrays
(:class:`Columns`) records are built from, and :func:`check_records` (what the broker checks).

The section is columnar (see :mod:`.records`): arrays of timestamp deltas, key lengths, value
lengths (and header-block lengths), then -- only in a batch the log cleaner rewrote
(``COMPACTED``) -- the records' offset deltas, then the keys, the values and the header blocks.
"""

from __future__ import annotations

import struct
from bisect import bisect_left
from collections.abc import Iterator
from functools import lru_cache
from itertools import accumulate, pairwise, repeat
from typing import TYPE_CHECKING, Final, TypeVar

from .batch_format import (
    CODEC_MASK,
    COMPACTED,
    HAS_HEADERS,
    INT64_MAX,
    LOG_APPEND_TIME,
    Buffer,
    Headers,
    decode_header_blocks,
)
from .compression import decompress
from .errors import CorruptBatchError
from .layouts import BATCH_HEADER_SIZE

if TYPE_CHECKING:
    from .records import RecordBatch

Row = TypeVar("Row", bound=tuple[object, ...])
"""A record type built straight from a batch (a NamedTuple): see ``RecordBatch.records_as``."""


class Columns:
    """The decoded arrays of a records section, for reading records out of it."""

    __slots__ = (
        "deltas",
        "header_lengths",
        "key_lengths",
        "offset_deltas",
        "section",
        "start",
        "value_lengths",
    )

    def __init__(
        self,
        section: bytes,
        deltas: tuple[int, ...],
        key_lengths: tuple[int, ...],
        value_lengths: tuple[int, ...],
        header_lengths: tuple[int, ...] | None,
        start: int,
        offset_deltas: tuple[int, ...] | None = None,
    ) -> None:
        self.section = section
        self.deltas = deltas
        self.key_lengths = key_lengths
        self.value_lengths = value_lengths
        self.header_lengths = header_lengths
        self.start = start
        self.offset_deltas = offset_deltas
        """Each record's offset minus the base offset (``None``: 0, 1, 2, ...)."""

    @classmethod
    def parse(cls, batch: RecordBatch) -> Columns:
        """The arrays of ``batch``'s section, once :func:`_check_lengths` says they add up."""
        n = batch.record_count
        section, base = _records_section(batch)
        if type(section) is not bytes:
            section = bytes(section)
        header_lengths, _ = _check_lengths(section, base, n, batch.records_size, batch.attributes)
        deltas = _array("q", n).unpack_from(section, base)
        key_lengths = _array("i", n).unpack_from(section, base + 8 * n)
        value_lengths = _array("i", n).unpack_from(section, base + 12 * n)
        arrays = 20 * n if header_lengths is not None else 16 * n
        offset_deltas = None
        if batch.attributes & COMPACTED:
            offset_deltas = _array("i", n).unpack_from(section, base + arrays)
            arrays += 4 * n
        return cls(
            section,
            deltas,
            key_lengths,
            value_lengths,
            header_lengths,
            base + arrays,
            offset_deltas,
        )

    def rows(
        self,
        batch: RecordBatch,
        into: type[Row],
        prefix: tuple[object, ...],
        since: int | None,
        limit: int | None = None,
    ) -> list[Row]:
        section = self.section
        n = batch.record_count
        skip = 0 if since is None else since - batch.base_offset
        if self.offset_deltas is not None:
            skip = bisect_left(self.offset_deltas, skip)  # records, not offsets, to skip
        # only the window [lo, hi) is sliced and built: a reader that wants a few records of
        # a large batch (a share fetch, one record looked up) does not pay for all of them
        lo = min(max(skip, 0), n)
        hi = n if limit is None else min(n, lo + max(limit, 0))
        keys, pos = _slices(section, self.start, self.key_lengths, lo, hi)
        values, pos = _slices(section, pos, self.value_lengths, lo, hi)
        if batch.attributes & LOG_APPEND_TIME:
            timestamps: Iterator[int] | list[int] = [batch.max_timestamp] * (hi - lo)
        else:
            deltas = self.deltas if lo == 0 and hi == n else self.deltas[lo:hi]
            timestamps = map(batch.base_timestamp.__add__, deltas)
        if self.offset_deltas is None:
            offsets: range | map[int] = range(batch.base_offset + lo, batch.base_offset + hi)
        else:
            offsets = map(batch.base_offset.__add__, self.offset_deltas[lo:hi])
        if self.header_lengths is None:
            headers: Iterator[Headers] | list[Headers] = repeat(())
        else:
            lengths = self.header_lengths
            if lo or hi < n:
                pos += sum(lengths[:lo])
                lengths = lengths[lo:hi]
            headers = decode_header_blocks(section, pos, lengths)
        # tuple.__new__ straight from C: a NamedTuple's own __new__ is Python and costs 3x.
        rows: Iterator[tuple[object, ...]] = zip(
            offsets, timestamps, keys, values, headers, strict=False
        )
        if prefix:
            rows = map(prefix.__add__, rows)
        return list(map(tuple.__new__, repeat(into), rows))


_NULL_LENGTH: Final = 0xFFFFFFFF
"""A key or value length of -1 (no key, no value), read as an unsigned int32."""
_NO_KEYS: Final = b"\xff\xff\xff\xff"
"""One record's key length when it has no key (-1), as stored."""
_ARRAY_LAYOUTS: Final = 256
"""Compiled array layouts kept (by code and count: batches of one producer share a few counts)."""


@lru_cache(maxsize=_ARRAY_LAYOUTS)
def _array(code: str, count: int) -> struct.Struct:
    """The layout of ``count`` big-endian ``code`` integers: a records section array."""
    return struct.Struct(f">{count}{code}")


def _records_section(batch: RecordBatch) -> tuple[Buffer, int]:
    """The uncompressed records section and the position of its arrays in it: the batch's own
    buffer (no copy) when uncompressed, else the decompressed bytes."""
    buffer = batch.buffer
    size = batch.records_size
    codec = batch.attributes & CODEC_MASK
    if codec:
        return decompress(codec, memoryview(buffer)[BATCH_HEADER_SIZE:], size), 0
    if len(buffer) - BATCH_HEADER_SIZE != size:
        raise CorruptBatchError("records section does not match its declared size")
    return buffer, BATCH_HEADER_SIZE


def _check_lengths(
    section: Buffer, base: int, n: int, size: int, attributes: int
) -> tuple[tuple[int, ...] | None, int]:
    """Check that the arrays of the records section at ``base`` fit in its ``size`` bytes and
    that the keys, values and header blocks fill the rest exactly, with no key or value length
    below -1 and no header block length below 0: the one check every reader of a section
    runs. Returns the header block lengths (``None`` without headers) and their sum."""
    has_headers = attributes & HAS_HEADERS
    arrays = 20 * n if has_headers else 16 * n
    if attributes & COMPACTED:
        arrays += 4 * n  # the offset deltas
        if n == 0:
            if size:
                raise CorruptBatchError(f"an empty batch has a records section of {size} bytes")
            return (() if has_headers else None), 0
    if arrays > size:
        raise CorruptBatchError(f"records section too short for {n} records")
    # All lengths are read unsigned: a length below -1 then reads as 2**31 or more, above any
    # section's size (an int32), and so does a -1 (0xFFFFFFFF) header block length, so the
    # total catches them with no min(). Key and value lengths are adjacent: one read of both,
    # or of the values alone when no record has a key (common, and costly read unsigned).
    keys_at = base + 8 * n
    if section[keys_at] == 0xFF and section[keys_at : keys_at + 4 * n] == _NO_KEYS * n:
        lengths = _array("I", n).unpack_from(section, keys_at + 4 * n)
    else:
        lengths = _array("I", 2 * n).unpack_from(section, keys_at)
    total = arrays + sum(lengths)
    header_lengths = None
    header_total = 0
    if has_headers:
        header_lengths = _array("I", n).unpack_from(section, base + 16 * n)
        header_total = sum(header_lengths)
        total += header_total
    if total != size:
        # Absent keys and values (-1, read as 0xFFFFFFFF) add no bytes. Only now are they
        # counted: a total that matches without them had none.
        total -= lengths.count(_NULL_LENGTH) * _NULL_LENGTH
        if total != size:
            raise _lengths_error(section, base, n, size, arrays)
    return header_lengths, header_total


def _lengths_error(section: Buffer, base: int, n: int, size: int, arrays: int) -> CorruptBatchError:
    """Why the lengths of a section do not add up, read again signed (the error path only)."""
    lengths = _array("i", 2 * n).unpack_from(section, base + 8 * n)
    if min(lengths) < -1:
        return CorruptBatchError("negative key or value length")
    total = arrays + sum(lengths) + lengths.count(-1)
    if arrays > 16 * n:
        header_lengths = _array("i", n).unpack_from(section, base + 16 * n)
        if min(header_lengths) < 0:
            return CorruptBatchError("negative header block length")
        total += sum(header_lengths)
    return CorruptBatchError(f"records add up to {total} bytes, section has {size}")


def check_records(batch: RecordBatch) -> None:
    """What ``verify_records`` checks, building no records: the lengths add up
    (:func:`_check_lengths`), every timestamp delta lies in [0, max_timestamp -
    base_timestamp], and every header block decodes and fills its length exactly. The broker
    runs this on every batch it appends."""
    n = batch.record_count
    size = batch.records_size
    section, base = _records_section(batch)
    header_lengths, header_total = _check_lengths(section, base, n, size, batch.attributes)
    if batch.attributes & COMPACTED:
        if n == 0:
            return
        _check_offset_deltas(
            section, base + (20 * n if header_lengths is not None else 16 * n), batch
        )
    span = batch.max_timestamp - batch.base_timestamp
    if span == 0:
        # Every record in one millisecond (a busy producer's batch): every delta is 0.
        outside = section[base : base + 8 * n] != bytes(8 * n)
    else:
        # Deltas read unsigned: a negative one reads as 2**63 or more, above any limit, so
        # one max() checks both ends of the range.
        outside = max(_array("Q", n).unpack_from(section, base)) > min(span, INT64_MAX)
    if outside:
        raise CorruptBatchError("a record timestamp lies outside the batch's range")
    if header_lengths is not None and header_total:
        # The header blocks sit at the end of the section.
        end = base + size
        decode_header_blocks(bytes(section[end - header_total : end]), 0, header_lengths)


def _check_offset_deltas(section: Buffer, at: int, batch: RecordBatch) -> None:
    """A cleaned batch's offset deltas rise strictly within [0, last_offset_delta]."""
    deltas = _array("i", batch.record_count).unpack_from(section, at)
    if deltas[0] < 0 or deltas[-1] > batch.last_offset_delta:
        raise CorruptBatchError("a record offset lies outside the batch's range")
    if any(a >= b for a, b in pairwise(deltas)):
        raise CorruptBatchError("record offsets do not rise within the batch")


def _slices(
    section: bytes, pos: int, lengths: tuple[int, ...], lo: int, hi: int
) -> tuple[list[bytes | None], int]:
    """The fields ``lo`` to ``hi`` of the back-to-back fields of ``lengths`` from ``pos``
    (-1: ``None``, no bytes), and the position after the last of all of them."""
    nulls = lengths.count(-1)
    if nulls == len(lengths):
        return [None] * (hi - lo), pos
    if not nulls:
        ends = list(accumulate(lengths, initial=pos))
        window = ends if lo == 0 and hi == len(lengths) else ends[lo : hi + 1]
        return [section[a:b] for a, b in pairwise(window)], ends[-1]
    out: list[bytes | None] = []
    append = out.append
    for i, length in enumerate(lengths):
        if length < 0:
            if lo <= i < hi:
                append(None)
        else:
            end = pos + length
            if lo <= i < hi:
                append(section[pos:end])
            pos = end
    return out, pos
