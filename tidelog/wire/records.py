"""Record batches: the unit of storage, replication and transfer.

A batch is a fixed 65-byte header (``layouts.BATCH_HEADER``) followed by a records section,
compressed as a whole when the batch says so. The records section is *columnar*: one array of
timestamp deltas, one of key lengths, one of value lengths (and one of header-block lengths when
any record has headers), then the keys, the values and the header blocks back to back. Reading
a batch is a handful of ``struct`` calls and slices, never a per-field parse: this is what lets
Python build a million records a second and read two.

The broker never decodes records: it checks a batch once (:meth:`RecordBatch.parse` with
``verify_records=True``), stamps the base offset and leader epoch in place
(:func:`stamp_batch`, outside the CRC's coverage) and stores the bytes as they came.
"""

from __future__ import annotations

import gc
import struct
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from enum import IntFlag
from functools import lru_cache
from itertools import accumulate, islice, pairwise, repeat
from typing import Final, NamedTuple, TypeAlias, TypeVar

from crc32c import crc32c

from .compression import Compression, compress, decompress
from .errors import CorruptBatchError, UnsupportedCompressionError
from .layouts import (
    BATCH_CRC_START,
    BATCH_HEADER_SIZE,
    BATCH_HEADER_STRUCT,
    BATCH_LOG_OVERHEAD,
    BATCH_MAGIC,
    HEADER_COUNT_STRUCT,
    HEADER_KEY_LEN_STRUCT,
    HEADER_VALUE_LEN_STRUCT,
)

Buffer: TypeAlias = bytes | bytearray | memoryview
Headers: TypeAlias = tuple[tuple[str, bytes | None], ...]
_Row = TypeVar("_Row", bound=tuple[object, ...])
HeadersInput: TypeAlias = Mapping[str, bytes | None] | Sequence[tuple[str, bytes | None]]

MAX_RECORDS_SIZE: Final = 64 * 1024 * 1024
"""Largest uncompressed records section a reader accepts (bounds decompression memory)."""
MAX_HEADER_KEY_SIZE: Final = 0xFFFF
MAX_HEADERS: Final = 0xFFFF
BYTES_LIKE: Final = (bytes, bytearray, memoryview)
"""What a record key or value may be (anything else is refused before it enters a batch)."""
NO_PRODUCER_ID: Final = -1
NO_SEQUENCE: Final = -1
_INT32_MAX: Final = 2**31 - 1
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1


class BatchAttributes(IntFlag):
    """Bits of a batch's ``attributes`` field. Bits 0-2 hold the :class:`Compression` id."""

    COMPRESSION_MASK = 0x07
    LOG_APPEND_TIME = 0x08  # record timestamps are the broker's append time (max_timestamp)
    TRANSACTIONAL = 0x10
    CONTROL = 0x20
    HAS_HEADERS = 0x40  # the records section has a header-length array and header blocks


KNOWN_ATTRIBUTES: Final = 0x7F
# Plain ints for the hot path: IntFlag arithmetic goes through Python-level enum code.
_CODEC_MASK: Final = int(BatchAttributes.COMPRESSION_MASK)
_HAS_HEADERS: Final = int(BatchAttributes.HAS_HEADERS)
_LOG_APPEND_TIME: Final = int(BatchAttributes.LOG_APPEND_TIME)
_MAX_CODEC: Final = max(Compression)


class Record(NamedTuple):
    """One record as a consumer sees it."""

    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: Headers = ()


def now_ms() -> int:
    """Wall-clock milliseconds since the epoch: the default record timestamp."""
    return time.time_ns() // 1_000_000


def _encode_headers(headers: HeadersInput) -> bytes:
    items = headers.items() if isinstance(headers, Mapping) else headers
    if len(items) > MAX_HEADERS:
        raise ValueError(f"a record holds at most {MAX_HEADERS} headers, got {len(items)}")
    parts = [HEADER_COUNT_STRUCT.pack(len(items))]
    for name, value in items:
        if not isinstance(name, str):
            raise TypeError(f"header keys are str, not {type(name).__name__}")
        raw = name.encode()
        if len(raw) > MAX_HEADER_KEY_SIZE:
            raise ValueError(f"header key of {len(raw)} bytes is longer than {MAX_HEADER_KEY_SIZE}")
        parts.append(HEADER_KEY_LEN_STRUCT.pack(len(raw)))
        parts.append(raw)
        if value is None:
            parts.append(HEADER_VALUE_LEN_STRUCT.pack(-1))
        else:
            parts.append(HEADER_VALUE_LEN_STRUCT.pack(len(value)))
            parts.append(bytes(value))
    return b"".join(parts)


class RecordBatchBuilder:
    """Collects records and closes them into one batch's bytes.

    ``append`` is cheap (a few list appends); the encoding work happens once, in ``build``.
    ``size_in_bytes`` is the size the batch will have uncompressed, so a producer can close a
    batch when it reaches ``batch_size``.
    """

    __slots__ = (
        "_clock",
        "_header_blocks",
        "_keys",
        "_size",
        "_timestamps",
        "_values",
        "base_sequence",
        "compression",
        "producer_epoch",
        "producer_id",
    )

    def __init__(
        self,
        compression: Compression = Compression.NONE,
        *,
        clock: Callable[[], int] = now_ms,
        producer_id: int = NO_PRODUCER_ID,
        producer_epoch: int = -1,
        base_sequence: int = NO_SEQUENCE,
    ) -> None:
        self.compression = Compression(compression)
        self.producer_id = producer_id
        self.producer_epoch = producer_epoch
        self.base_sequence = base_sequence
        self._clock = clock
        self._timestamps: list[int] = []
        self._keys: list[bytes | None] = []
        self._values: list[bytes | None] = []
        self._header_blocks: list[bytes] | None = None
        self._size = BATCH_HEADER_SIZE

    def append(
        self,
        value: bytes | None,
        key: bytes | None = None,
        headers: HeadersInput | None = None,
        timestamp: int | None = None,
    ) -> int:
        """Add a record; returns its offset delta within the batch."""
        # The producer's hot path: one branch per field for the common bytes-or-None case.
        size = 16
        if value is not None:
            if type(value) is not bytes and not isinstance(value, BYTES_LIKE):
                raise TypeError(f"record values are bytes, not {type(value).__name__}")
            size += len(value)
        if key is not None:
            if type(key) is not bytes and not isinstance(key, BYTES_LIKE):
                raise TypeError(f"record keys are bytes, not {type(key).__name__}")
            size += len(key)
        values = self._values
        index = len(values)
        values.append(value)
        self._keys.append(key)
        self._timestamps.append(self._clock() if timestamp is None else timestamp)
        if headers:
            block = _encode_headers(headers)
            if self._header_blocks is None:
                self._header_blocks = [b""] * index
                self._size += 4 * index
            self._header_blocks.append(block)
            size += 4 + len(block)
        elif self._header_blocks is not None:
            self._header_blocks.append(b"")
            size += 4
        self._size += size
        return index

    def append_sized(
        self, value: Buffer | None, key: Buffer | None, timestamp: int, size: int
    ) -> int:
        """:meth:`append` of a record without headers, for a caller that has already checked
        that ``value`` and ``key`` are bytes-like or None and counted ``size`` (16 plus their
        lengths): the producer's hot path, which would otherwise pay for both twice."""
        values = self._values
        index = len(values)
        values.append(value)  # type: ignore[arg-type]  # bytes-like: joined as bytes by build()
        self._keys.append(key)  # type: ignore[arg-type]
        self._timestamps.append(timestamp)
        if self._header_blocks is not None:
            self._header_blocks.append(b"")
            size += 4
        self._size += size
        return index

    def __len__(self) -> int:
        return len(self._values)

    @property
    def size_in_bytes(self) -> int:
        """Size of the batch built now, before compression."""
        return self._size

    def build(self, base_offset: int = 0) -> bytes:
        """Close the records into a batch. The builder may be appended to and built again."""
        n = len(self._values)
        if n == 0:
            raise ValueError("cannot build an empty batch")
        if n > _INT32_MAX:
            raise ValueError("a batch holds at most 2**31 - 1 records")
        timestamps = self._timestamps
        base_ts = min(timestamps)
        max_ts = max(timestamps)
        if base_ts < _INT64_MIN or max_ts > _INT64_MAX:
            raise ValueError("record timestamps must fit in a signed 64-bit integer")
        keys = self._keys
        values = self._values
        blocks = self._header_blocks
        count = f">{n}"
        parts: list[Buffer] = [
            _pack(count + "q", [t - base_ts for t in timestamps]),
            _lengths(count, keys),
            _lengths(count, values),
        ]
        attributes = int(self.compression)
        if blocks is not None:
            attributes |= BatchAttributes.HAS_HEADERS
            parts.append(_pack(count + "i", [len(b) for b in blocks]))
        # filter(None, ...) drops both None and b"", neither of which adds bytes.
        parts.append(b"".join(filter(None, keys)))
        parts.append(b"".join(filter(None, values)))
        if blocks is not None:
            parts.append(b"".join(blocks))
        section = b"".join(parts)
        body = compress(self.compression, section)
        if len(body) >= len(section) and self.compression is not Compression.NONE:
            # Incompressible records: store them raw rather than let the batch grow past
            # the size the producer budgeted for (the codec is chosen per batch).
            body = section
            attributes &= ~_CODEC_MASK
        header = _pack_header(
            base_offset,
            BATCH_HEADER_SIZE - BATCH_LOG_OVERHEAD + len(body),
            -1,
            BATCH_MAGIC,
            0,
            attributes,
            n - 1,
            base_ts,
            max_ts,
            self.producer_id,
            self.producer_epoch,
            self.base_sequence,
            n,
            len(section),
        )
        crc = crc32c(body, crc32c(memoryview(header)[BATCH_CRC_START:]))
        return b"".join((header[:17], crc.to_bytes(4, "big"), header[BATCH_CRC_START:], body))


def _pack_header(*fields: int) -> bytes:
    try:
        return BATCH_HEADER_STRUCT.pack(*fields)
    except struct.error as exc:
        raise ValueError(f"a batch header field is out of range: {exc}") from None


def _pack(fmt: str, items: list[int]) -> bytes:

    try:
        packed: bytes = struct.pack(fmt, *items)
        return packed
    except struct.error as exc:
        raise ValueError(f"a record field is out of range: {exc}") from None


def _lengths(count: str, items: list[bytes | None]) -> bytes:
    return _pack(count + "i", [-1 if x is None else len(x) for x in items])


def build_batch(
    records: Sequence[tuple[bytes | None, bytes | None]],
    compression: Compression = Compression.NONE,
    *,
    timestamp: int | None = None,
) -> bytes:
    """Build a batch from ``(key, value)`` pairs in one call (tests, tools)."""
    builder = RecordBatchBuilder(compression)
    for key, value in records:
        builder.append(value, key=key, timestamp=timestamp)
    return builder.build()


_FIELDS: Final = (
    "base_offset",
    "leader_epoch",
    "attributes",
    "last_offset_delta",
    "base_timestamp",
    "max_timestamp",
    "producer_id",
    "producer_epoch",
    "base_sequence",
    "record_count",
    "records_size",
    "buffer",
)


class RecordBatch:
    """One batch, its header decoded and its CRC checked; records are decoded on demand.

    Read-only by convention. A plain slotted class, not a frozen dataclass: the broker builds
    one per appended batch, and a frozen dataclass's ``__init__`` costs three times as much.
    ``buffer`` is the whole batch, header included, exactly as it travels and is stored.
    """

    __slots__ = _FIELDS

    def __init__(
        self,
        base_offset: int,
        leader_epoch: int,
        attributes: int,
        last_offset_delta: int,
        base_timestamp: int,
        max_timestamp: int,
        producer_id: int,
        producer_epoch: int,
        base_sequence: int,
        record_count: int,
        records_size: int,
        buffer: Buffer,
    ) -> None:
        self.base_offset = base_offset
        self.leader_epoch = leader_epoch
        self.attributes = attributes
        self.last_offset_delta = last_offset_delta
        self.base_timestamp = base_timestamp
        self.max_timestamp = max_timestamp
        self.producer_id = producer_id
        self.producer_epoch = producer_epoch
        self.base_sequence = base_sequence
        self.record_count = record_count
        self.records_size = records_size
        self.buffer = buffer

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in _FIELDS[:-1])
        return f"RecordBatch({fields}, size={len(self.buffer)})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RecordBatch):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in _FIELDS)

    __hash__ = None  # type: ignore[assignment]

    @classmethod
    def parse(
        cls,
        buffer: Buffer,
        *,
        verify_crc: bool = True,
        verify_records: bool = False,
        max_records_size: int = MAX_RECORDS_SIZE,
    ) -> RecordBatch:
        """Decode and check the batch that fills ``buffer`` exactly.

        ``verify_records`` also decompresses the records section and checks that its arrays
        and lengths add up, that record timestamps lie in the batch's range and that header
        blocks decode, without building records: what a broker does once before storing.
        Raises :class:`CorruptBatchError` (or its subclass for an unknown codec).
        """
        size = len(buffer)
        if size < BATCH_HEADER_SIZE:
            raise CorruptBatchError(f"batch of {size} bytes is shorter than its header")
        (
            base_offset,
            length,
            leader_epoch,
            magic,
            crc,
            attributes,
            last_offset_delta,
            base_timestamp,
            max_timestamp,
            producer_id,
            producer_epoch,
            base_sequence,
            record_count,
            records_size,
        ) = BATCH_HEADER_STRUCT.unpack_from(buffer)
        if magic != BATCH_MAGIC:
            raise CorruptBatchError(f"unknown batch format {magic} (this side reads {BATCH_MAGIC})")
        if length + BATCH_LOG_OVERHEAD != size:
            raise CorruptBatchError(f"batch header says {length + 12} bytes, buffer has {size}")
        if verify_crc:
            actual = crc32c(memoryview(buffer)[BATCH_CRC_START:])
            if actual != crc:
                raise CorruptBatchError(
                    f"batch CRC mismatch: header {crc:#010x}, data {actual:#010x}"
                )
        if record_count < 1 or last_offset_delta != record_count - 1:
            raise CorruptBatchError(
                f"bad record count {record_count} / last offset delta {last_offset_delta}"
            )
        if attributes & ~KNOWN_ATTRIBUTES:
            raise CorruptBatchError(f"unknown batch attribute bits {attributes:#06x}")
        if attributes & _CODEC_MASK > _MAX_CODEC:
            raise UnsupportedCompressionError(f"unknown compression codec {attributes & 7}")
        if not 0 <= records_size <= max_records_size:
            raise CorruptBatchError(f"records section of {records_size} bytes is out of bounds")
        if base_timestamp > max_timestamp:
            raise CorruptBatchError("batch base timestamp is after its max timestamp")
        if record_count * 16 > records_size:
            raise CorruptBatchError(f"{record_count} records cannot fit in {records_size} bytes")
        batch = cls(
            base_offset,
            leader_epoch,
            attributes,
            last_offset_delta,
            base_timestamp,
            max_timestamp,
            producer_id,
            producer_epoch,
            base_sequence,
            record_count,
            records_size,
            buffer,
        )
        if verify_records:
            _verify_records(batch)
        return batch

    @property
    def size(self) -> int:
        return len(self.buffer)

    @property
    def compression(self) -> Compression:
        return Compression(self.attributes & BatchAttributes.COMPRESSION_MASK)

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def next_offset(self) -> int:
        return self.base_offset + self.last_offset_delta + 1

    def records(self) -> list[Record]:
        """Decode every record. Raises :class:`CorruptBatchError` if the section is damaged."""
        return self.records_as(Record)

    def records_as(
        self, into: type[_Row], prefix: tuple[object, ...] = (), since: int | None = None
    ) -> list[_Row]:
        """Decode records straight into ``into``, a tuple type (a NamedTuple) whose fields are
        ``prefix`` followed by offset, timestamp, key, value, headers: a consumer builds its
        own record type in one pass, e.g. ``records_as(ConsumerRecord, (topic, partition))``.
        Records below offset ``since`` are left out.
        """
        columns = _Columns.parse(self)
        if not gc.isenabled():
            return columns.rows(self, into, prefix, since)
        # A batch's records trip the cyclic GC once per ~700 tuples, and they cannot form
        # cycles (ints, bytes, None): pausing it while they are built saves a third of a read.
        gc.disable()
        try:
            return columns.rows(self, into, prefix, since)
        finally:
            gc.enable()

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records())


class _Columns:
    """The decoded arrays of a records section, for reading records out of it."""

    __slots__ = ("deltas", "header_lengths", "key_lengths", "section", "start", "value_lengths")

    def __init__(
        self,
        section: bytes,
        deltas: tuple[int, ...],
        key_lengths: tuple[int, ...],
        value_lengths: tuple[int, ...],
        header_lengths: tuple[int, ...] | None,
        start: int,
    ) -> None:
        self.section = section
        self.deltas = deltas
        self.key_lengths = key_lengths
        self.value_lengths = value_lengths
        self.header_lengths = header_lengths
        self.start = start

    @classmethod
    def parse(cls, batch: RecordBatch) -> _Columns:
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
        return cls(section, deltas, key_lengths, value_lengths, header_lengths, base + arrays)

    def rows(
        self,
        batch: RecordBatch,
        into: type[_Row],
        prefix: tuple[object, ...],
        since: int | None,
    ) -> list[_Row]:
        section = self.section
        n = batch.record_count
        keys, pos = _slices(section, self.start, self.key_lengths)
        values, pos = _slices(section, pos, self.value_lengths)
        if batch.attributes & _LOG_APPEND_TIME:
            timestamps: Iterator[int] | list[int] = [batch.max_timestamp] * n
        else:
            timestamps = map(batch.base_timestamp.__add__, self.deltas)
        offsets = range(batch.base_offset, batch.base_offset + n)
        if self.header_lengths is None:
            headers: Iterator[Headers] | list[Headers] = repeat(())
        else:
            headers = _decode_header_blocks(section, pos, self.header_lengths)
        # tuple.__new__ straight from C: a NamedTuple's own __new__ is Python and costs 3x.
        rows: Iterator[tuple[object, ...]] = zip(
            offsets, timestamps, keys, values, headers, strict=False
        )
        if prefix:
            rows = map(prefix.__add__, rows)
        skip = 0 if since is None else since - batch.base_offset
        if skip > 0:
            rows = islice(rows, skip, None)
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
    codec = batch.attributes & _CODEC_MASK
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
    has_headers = attributes & _HAS_HEADERS
    arrays = 20 * n if has_headers else 16 * n
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


def _verify_records(batch: RecordBatch) -> None:
    """What ``verify_records`` checks, building no records: the lengths add up
    (:func:`_check_lengths`), every timestamp delta lies in [0, max_timestamp -
    base_timestamp], and every header block decodes and fills its length exactly. The broker
    runs this on every batch it appends."""
    n = batch.record_count
    size = batch.records_size
    section, base = _records_section(batch)
    header_lengths, header_total = _check_lengths(section, base, n, size, batch.attributes)
    span = batch.max_timestamp - batch.base_timestamp
    if span == 0:
        # Every record in one millisecond (a busy producer's batch): every delta is 0.
        outside = section[base : base + 8 * n] != bytes(8 * n)
    else:
        # Deltas read unsigned: a negative one reads as 2**63 or more, above any limit, so
        # one max() checks both ends of the range.
        outside = max(_array("Q", n).unpack_from(section, base)) > min(span, _INT64_MAX)
    if outside:
        raise CorruptBatchError("a record timestamp lies outside the batch's range")
    if header_lengths is not None and header_total:
        # The header blocks sit at the end of the section.
        end = base + size
        _decode_header_blocks(bytes(section[end - header_total : end]), 0, header_lengths)


def _slices(section: bytes, pos: int, lengths: tuple[int, ...]) -> tuple[list[bytes | None], int]:
    nulls = lengths.count(-1)
    if nulls == len(lengths):
        return [None] * nulls, pos
    if not nulls:
        ends = list(accumulate(lengths, initial=pos))
        return [section[a:b] for a, b in pairwise(ends)], ends[-1]
    out: list[bytes | None] = []
    append = out.append
    for length in lengths:
        if length < 0:
            append(None)
        else:
            end = pos + length
            append(section[pos:end])
            pos = end
    return out, pos


def _decode_header_blocks(section: bytes, pos: int, lengths: tuple[int, ...]) -> list[Headers]:
    out: list[Headers] = []
    for length in lengths:
        end = pos + length
        out.append(_decode_header_block(section, pos, end) if length else ())
        pos = end
    return out


def _decode_header_block(section: bytes, pos: int, end: int) -> Headers:

    try:
        (count,) = HEADER_COUNT_STRUCT.unpack_from(section, pos)
        pos += 2
        items: list[tuple[str, bytes | None]] = []
        for _ in range(count):
            (klen,) = HEADER_KEY_LEN_STRUCT.unpack_from(section, pos)
            pos += 2
            name = section[pos : pos + klen].decode()
            pos += klen
            (vlen,) = HEADER_VALUE_LEN_STRUCT.unpack_from(section, pos)
            pos += 4
            if vlen < -1:
                raise CorruptBatchError("negative header value length")
            value = None if vlen < 0 else section[pos : pos + vlen]
            pos += max(vlen, 0)
            if pos > end:
                break
            items.append((name, value))
    except (struct.error, UnicodeDecodeError) as exc:
        raise CorruptBatchError(f"damaged record headers: {exc}") from None
    if pos != end:
        raise CorruptBatchError("record header block does not match its length")
    return tuple(items)


def iter_batches(buffer: Buffer, *, verify_crc: bool = True) -> Iterator[RecordBatch]:
    """Split back-to-back batches (a fetch's data, a log segment) and check each one.

    A buffer that ends inside a batch raises :class:`CorruptBatchError`.
    """
    view = memoryview(buffer)
    pos = 0
    end = len(view)
    while pos < end:
        size = batch_size_at(view, pos)
        if size is None or pos + size > end:
            raise CorruptBatchError(f"data ends inside a batch at byte {pos}")
        yield RecordBatch.parse(view[pos : pos + size], verify_crc=verify_crc)
        pos += size


def batch_size_at(buffer: Buffer, pos: int) -> int | None:
    """Total size of the batch starting at ``pos`` per its length field, or ``None`` if the
    buffer is too short to tell. Raises :class:`CorruptBatchError` for an impossible length."""
    if len(buffer) - pos < BATCH_LOG_OVERHEAD:
        return None
    length = int.from_bytes(buffer[pos + 8 : pos + 12], "big", signed=True)
    if length < BATCH_HEADER_SIZE - BATCH_LOG_OVERHEAD:
        raise CorruptBatchError(f"impossible batch length {length} at byte {pos}")
    return length + BATCH_LOG_OVERHEAD


def stamp_batch(buffer: bytearray | memoryview, base_offset: int, leader_epoch: int = -1) -> None:
    """Write the broker-assigned base offset and leader epoch into a batch, in place.

    Both fields lie outside the CRC's coverage, so the checksum stays valid.
    """
    buffer[0:8] = base_offset.to_bytes(8, "big", signed=True)
    buffer[12:16] = leader_epoch.to_bytes(4, "big", signed=True)


def read_records(buffer: Buffer) -> list[Record]:
    """Every record of back-to-back batches, in order (tests, tools)."""
    out: list[Record] = []
    for batch in iter_batches(buffer):
        out.extend(batch.records())
    return out
