"""The batch builder: records collected, then closed into one batch's bytes.

The layout it writes (header, columnar records section) is described in :mod:`.records`; the
reader that takes it apart again is :mod:`.records_section`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Sequence
from itertools import repeat
from operator import sub
from typing import Final

from crc32c import crc32c

from .batch_format import (
    BYTES_LIKE,
    CODEC_MASK,
    INT32_MAX,
    INT64_MAX,
    INT64_MIN,
    NO_PRODUCER_ID,
    NO_SEQUENCE,
    BatchAttributes,
    Buffer,
    HeadersInput,
    encode_headers,
    now_ms,
)
from .compression import Compression, compress
from .layouts import (
    BATCH_CRC_OFFSET,
    BATCH_CRC_START,
    BATCH_HEADER_SIZE,
    BATCH_HEADER_STRUCT,
    BATCH_LOG_OVERHEAD,
    BATCH_MAGIC,
)


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
            block = encode_headers(headers)
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

    def extend(
        self,
        values: Sequence[Buffer | None],
        keys: Sequence[Buffer | None] | None,
        timestamp: int,
        size: int,
    ) -> int:
        """Add records without headers, all with ``timestamp``, in one go (the producer's
        ``send_many()``): like :meth:`append_sized`, the caller has checked the types and
        counted ``size`` (16 per record plus the keys' and values' lengths). Returns the
        first one's offset delta."""
        n = len(values)
        index = len(self._values)
        self._values.extend(values)  # type: ignore[arg-type]  # bytes-like: joined by build()
        if keys is None:
            self._keys.extend(repeat(None, n))
        else:
            if len(keys) != n:
                raise ValueError(f"{len(keys)} keys for {n} values")
            self._keys.extend(keys)  # type: ignore[arg-type]
        self._timestamps.extend(repeat(timestamp, n))
        if self._header_blocks is not None:
            self._header_blocks.extend(repeat(b"", n))
            size += 4 * n
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
        if n > INT32_MAX:
            raise ValueError("a batch holds at most 2**31 - 1 records")
        timestamps = self._timestamps
        base_ts = min(timestamps)
        max_ts = max(timestamps)
        if base_ts < INT64_MIN or max_ts > INT64_MAX:
            raise ValueError("record timestamps must fit in a signed 64-bit integer")
        keys = self._keys
        values = self._values
        blocks = self._header_blocks
        parts: list[Buffer] = [
            bytes(8 * n)
            if base_ts == max_ts
            else _int64s(map(sub, timestamps, repeat(base_ts, n))),
            _lengths(keys),
            _lengths(values),
        ]
        attributes = int(self.compression)
        if blocks is not None:
            attributes |= BatchAttributes.HAS_HEADERS
            parts.append(_int32s(map(len, blocks)))
        if self.compression is Compression.NONE and self._size >= n * _LARGE_RECORD:
            return self._build_large(base_offset, parts, base_ts, max_ts)
        parts.append(_joined(keys))
        parts.append(_joined(values))
        if blocks is not None:
            parts.append(b"".join(blocks))
        section = b"".join(parts)
        body = compress(self.compression, section)
        if len(body) >= len(section) and self.compression is not Compression.NONE:
            # Incompressible records: store them raw rather than let the batch grow past
            # the size the producer budgeted for (the codec is chosen per batch).
            body = section
            attributes &= ~CODEC_MASK
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
        return b"".join(
            (header[:BATCH_CRC_OFFSET], crc.to_bytes(4, "big"), header[BATCH_CRC_START:], body)
        )

    def _build_large(
        self, base_offset: int, arrays: list[Buffer], base_ts: int, max_ts: int
    ) -> bytes:
        """:meth:`build` of uncompressed records of ``_LARGE_RECORD`` bytes or more on average:
        the keys and values are copied once, into the batch, not into a records section and
        then again into the batch (the checksum goes over them piece by piece)."""
        pieces = [*arrays, *filter(None, self._keys), *filter(None, self._values)]
        if self._header_blocks is not None:
            pieces += self._header_blocks
        n = len(self._values)
        section_size = sum(map(len, pieces))
        header = _pack_header(
            base_offset,
            BATCH_HEADER_SIZE - BATCH_LOG_OVERHEAD + section_size,
            -1,
            BATCH_MAGIC,
            0,
            0 if self._header_blocks is None else BatchAttributes.HAS_HEADERS,
            n - 1,
            base_ts,
            max_ts,
            self.producer_id,
            self.producer_epoch,
            self.base_sequence,
            n,
            section_size,
        )
        crc = crc32c(memoryview(header)[BATCH_CRC_START:])
        for piece in pieces:
            crc = crc32c(piece, crc)
        return b"".join(
            (header[:BATCH_CRC_OFFSET], crc.to_bytes(4, "big"), header[BATCH_CRC_START:], *pieces)
        )


_LARGE_RECORD: Final = 4096
"""Records this large on average are built with one copy (``_build_large``): a checksum call
per key and value costs less than copying them twice."""


def _pack_header(*fields: int) -> bytes:
    try:
        return BATCH_HEADER_STRUCT.pack(*fields)
    except struct.error as exc:
        raise ValueError(f"a batch header field is out of range: {exc}") from None


def _int32s(items: Iterable[int]) -> bytes:
    """Big-endian int32s (``struct.pack`` over an iterator: no list built per batch)."""
    return _packed("i", items)


def _int64s(items: Iterable[int]) -> bytes:
    return _packed("q", items)


def _packed(code: str, items: Iterable[int]) -> bytes:
    values = tuple(items)
    try:
        packed: bytes = struct.pack(f">{len(values)}{code}", *values)
        return packed
    except struct.error as exc:
        raise ValueError(f"a record field is out of range: {exc}") from None


def _lengths(items: list[bytes | None]) -> bytes:
    try:
        return _int32s(map(len, items))  # type: ignore[arg-type]  # a None: TypeError
    except TypeError:
        return _int32s([-1 if x is None else len(x) for x in items])


def _joined(items: list[bytes | None]) -> bytes:
    try:
        return b"".join(items)  # type: ignore[arg-type]  # a None: TypeError
    except TypeError:
        return b"".join(filter(None, items))  # drops None (and b"", which adds nothing)


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
