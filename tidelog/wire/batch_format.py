"""What the batch builder and the batch reader share: the record and header types, the bits of
a batch's ``attributes``, the limits, and the codec of one record's header block.

A header block is a 2-byte header count, then per header a 2-byte key length, the UTF-8 key,
a 4-byte value length (-1: no value) and the value (``layouts.HEADER_*_STRUCT``).
"""

from __future__ import annotations

import struct
import time
from collections.abc import Mapping, Sequence
from enum import IntFlag
from typing import Final, NamedTuple, TypeAlias

from .compression import Compression
from .errors import CorruptBatchError
from .layouts import HEADER_COUNT_STRUCT, HEADER_KEY_LEN_STRUCT, HEADER_VALUE_LEN_STRUCT

Buffer: TypeAlias = bytes | bytearray | memoryview
Headers: TypeAlias = tuple[tuple[str, bytes | None], ...]
HeadersInput: TypeAlias = Mapping[str, bytes | None] | Sequence[tuple[str, bytes | None]]

MAX_RECORDS_SIZE: Final = 64 * 1024 * 1024
"""Largest uncompressed records section a reader accepts (bounds decompression memory)."""
MAX_HEADER_KEY_SIZE: Final = 0xFFFF
MAX_HEADERS: Final = 0xFFFF
BYTES_LIKE: Final = (bytes, bytearray, memoryview)
"""What a record key or value may be (anything else is refused before it enters a batch)."""
NO_PRODUCER_ID: Final = -1
NO_SEQUENCE: Final = -1
INT32_MAX: Final = 2**31 - 1
INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1


class BatchAttributes(IntFlag):
    """Bits of a batch's ``attributes`` field. Bits 0-2 hold the :class:`Compression` id."""

    COMPRESSION_MASK = 0x07
    LOG_APPEND_TIME = 0x08  # record timestamps are the broker's append time (max_timestamp)
    TRANSACTIONAL = 0x10
    CONTROL = 0x20
    HAS_HEADERS = 0x40  # the records section has a header-length array and header blocks
    COMPACTED = 0x100  # written by the log cleaner: records carry offset deltas (see records)


KNOWN_ATTRIBUTES: Final = 0x17F
# Plain ints for the hot path: IntFlag arithmetic goes through Python-level enum code.
CODEC_MASK: Final = int(BatchAttributes.COMPRESSION_MASK)
HAS_HEADERS: Final = int(BatchAttributes.HAS_HEADERS)
LOG_APPEND_TIME: Final = int(BatchAttributes.LOG_APPEND_TIME)
COMPACTED: Final = int(BatchAttributes.COMPACTED)
MAX_CODEC: Final = max(Compression)


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


def encode_headers(headers: HeadersInput) -> bytes:
    """One record's header block. Raises ``ValueError`` or ``TypeError`` for headers that
    cannot be encoded (too many, a key too long or not a str)."""
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


def decode_header_blocks(section: bytes, pos: int, lengths: tuple[int, ...]) -> list[Headers]:
    """The header blocks of ``lengths`` bytes each that follow one another from ``pos``.
    Raises :class:`CorruptBatchError` for a block that does not decode to its length."""
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
