"""Compression codecs for a batch's records section.

The records section is compressed as a whole. The batch header carries its uncompressed size
(``records_size``), so decompression is bounded by it (a small batch cannot inflate to
gigabytes) and its result is checked against it exactly.

* ``LZ4``: the LZ4 *block* format, no frame and no stored size (the header has it).
* ``ZSTD``: exactly one Zstandard frame, with its content size in the frame header.
"""

from __future__ import annotations

import threading
from enum import IntEnum

import lz4.block
import zstandard

from .errors import CorruptBatchError, UnsupportedCompressionError


class Compression(IntEnum):
    """Codec ids, stored in the low three bits of a batch's attributes."""

    NONE = 0
    LZ4 = 1
    ZSTD = 2

    @classmethod
    def parse(cls, name: str | int | Compression | None) -> Compression:
        """Accept a codec by name (``"zstd"``), id or member; ``None`` means no compression."""
        if name is None:
            return cls.NONE
        if isinstance(name, str):
            try:
                return cls[name.upper()]
            except KeyError:
                known = ", ".join(c.name.lower() for c in cls)
                raise ValueError(f"unknown compression {name!r}; use one of {known}") from None
        return cls(name)


ZSTD_LEVEL = 3

_local = threading.local()


def _zstd_compressor() -> zstandard.ZstdCompressor:
    # zstandard objects are not safe to share between threads; keep one per thread.
    c: zstandard.ZstdCompressor | None = getattr(_local, "zc", None)
    if c is None:
        c = _local.zc = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    return c


def _zstd_decompressor() -> zstandard.ZstdDecompressor:
    d: zstandard.ZstdDecompressor | None = getattr(_local, "zd", None)
    if d is None:
        d = _local.zd = zstandard.ZstdDecompressor()
    return d


def compress(codec: Compression, data: bytes) -> bytes:
    """Compress a records section with ``codec`` (``NONE`` returns ``data`` itself)."""
    if codec is Compression.NONE:
        return data
    if codec is Compression.LZ4:
        return bytes(lz4.block.compress(data, store_size=False))
    if codec is Compression.ZSTD:
        return _zstd_compressor().compress(data)
    raise UnsupportedCompressionError(f"unknown compression codec {int(codec)}")


def decompress(codec: int, data: bytes | memoryview, size: int) -> bytes | memoryview:
    """Decompress a records section that must come out exactly ``size`` bytes long.

    Raises :class:`CorruptBatchError` for damaged input or a size mismatch and
    :class:`UnsupportedCompressionError` for an unknown codec.
    """
    if codec == Compression.NONE:
        if len(data) != size:
            raise CorruptBatchError(f"records section is {len(data)} bytes, header says {size}")
        return data
    try:
        out: bytes
        if codec == Compression.LZ4:
            out = bytes(lz4.block.decompress(data, uncompressed_size=size))
        elif codec == Compression.ZSTD:
            # Exactly one frame that declares its size, and the size the header says: zstd
            # checks the output against the declaration, so memory is bounded by ``size``.
            declared = zstandard.frame_content_size(data)
            if declared != size:
                raise CorruptBatchError(f"zstd frame declares {declared} bytes, expected {size}")
            stream = _zstd_decompressor().decompressobj()
            out = stream.decompress(data)
            if not stream.eof or stream.unused_data:
                raise CorruptBatchError("records section is not exactly one whole zstd frame")
        else:
            raise UnsupportedCompressionError(f"unknown compression codec {codec}")
    except (lz4.block.LZ4BlockError, zstandard.ZstdError, ValueError, OverflowError) as exc:
        raise CorruptBatchError(f"cannot decompress records section: {exc}") from exc
    if len(out) != size:
        raise CorruptBatchError(f"records section inflated to {len(out)} bytes, expected {size}")
    return out
