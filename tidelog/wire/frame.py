"""Frames: how messages are delimited and verified on a byte stream. No I/O here.

A frame is a 24-byte header (``layouts.FRAME_HEADER``), a msgpack *metadata* section and an
optional raw *data* section of record batches::

    header (24) | meta (meta_length) | data (data_length)

The CRC-32C in the header covers the header bytes before it and the metadata section. It does
not cover the data section: record batches carry their own CRC, checked by the broker before it
stores them and by the client before it hands records out, so a fetch response sends batches
from disk without the broker reading them to checksum them.

:class:`FrameDecoder` is fed bytes in chunks of any size and hands out whole frames. It checks
magic, version and lengths on the header alone, *before* buffering a body, and the CRC once the
metadata has arrived. Any failure raises a :class:`~tidelog.wire.errors.FramingError`; the
decoder is then dead, because a stream that lied once cannot be resynchronised.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Final, NamedTuple

from crc32c import crc32c

from .errors import (
    BadMagicError,
    ChecksumMismatchError,
    FrameTooLargeError,
    FramingError,
    TruncatedFrameError,
    UnsupportedProtocolVersionError,
)
from .layouts import (
    FRAME_CRC_OFFSET,
    FRAME_HEADER_SIZE,
    FRAME_HEADER_STRUCT,
    FRAME_MAGIC,
    FRAME_PREFIX_STRUCT,
)
from .records import Buffer

PROTOCOL_VERSION: Final = 1
"""The frame protocol version this code writes."""
SUPPORTED_PROTOCOL_VERSIONS: Final = frozenset({1})
DEFAULT_MAX_FRAME_SIZE: Final = 64 * 1024 * 1024
"""Default bound on meta + data bytes of one frame; brokers and clients may configure it."""
MAX_HANDSHAKE_FRAME_SIZE: Final = 8 * 1024
"""Bound on meta + data bytes of a frame a broker takes before a handshake has succeeded: a
handshake is well under 1 KiB (its API list and two names), so a client that has not said who
it is cannot make the broker buffer more than this."""
_U16: Final = 0xFFFF
_U32: Final = 0xFFFFFFFF


class FrameFlags:
    """Bits of the header's ``flags`` field: plain ints, because every frame tests them and
    ``int & IntFlag`` runs Python-level enum code (microseconds per test)."""

    NONE: Final = 0
    RESPONSE: Final = 0x01  # set on every response; clear on requests
    NO_RESPONSE: Final = 0x02  # request: the sender expects no response (produce with acks=none)
    ERROR: Final = 0x04  # response: the body is an ErrorResponse, not the API's response


_HANDOVER_SIZE: Final = 64 * 1024


class FrameHeader(NamedTuple):
    """The decoded fixed header of a frame (a tuple: built for every frame, and a frozen
    dataclass's ``__init__`` costs several times as much)."""

    version: int
    api_key: int
    api_version: int
    flags: int
    correlation_id: int
    meta_length: int
    data_length: int
    crc: int

    @property
    def is_response(self) -> bool:
        return bool(self.flags & FrameFlags.RESPONSE)

    @property
    def body_length(self) -> int:
        return self.meta_length + self.data_length


class Frame(NamedTuple):
    """One whole, verified frame. ``data`` is writable so a broker can stamp batches in place."""

    header: FrameHeader
    meta: bytes
    data: bytearray


def encode_frame_prefix(
    *,
    api_key: int,
    api_version: int,
    flags: int,
    correlation_id: int,
    meta: Buffer,
    data_length: int = 0,
    version: int = PROTOCOL_VERSION,
) -> bytes:
    """Header plus metadata: what precedes the data section on the wire.

    Writers send this and then the data buffers as they are (``writelines``), so batches read
    from disk are never copied into a frame buffer.
    """
    if not (0 <= api_key <= _U16 and 0 <= api_version <= _U16 and 0 <= flags <= _U16):
        raise ValueError("api_key, api_version and flags must fit in 16 bits")
    if not 0 <= version <= 0xFF:
        raise ValueError("the protocol version must fit in 8 bits")
    if not (0 <= correlation_id <= _U32 and 0 <= data_length <= _U32 and len(meta) <= _U32):
        raise ValueError("correlation_id and section lengths must fit in 32 bits")
    prefix = FRAME_PREFIX_STRUCT.pack(
        FRAME_MAGIC, version, api_key, api_version, flags, correlation_id, len(meta), data_length
    )
    crc = crc32c(meta, crc32c(prefix))
    return b"".join((prefix, crc.to_bytes(4, "big"), meta))


def encode_frame(
    *,
    api_key: int,
    api_version: int,
    flags: int,
    correlation_id: int,
    meta: Buffer,
    data: Iterable[Buffer] = (),
    version: int = PROTOCOL_VERSION,
) -> bytes:
    """A whole frame as one ``bytes`` (tests, small messages)."""
    chunks = list(data)
    prefix = encode_frame_prefix(
        api_key=api_key,
        api_version=api_version,
        flags=flags,
        correlation_id=correlation_id,
        meta=meta,
        data_length=sum(len(c) for c in chunks),
        version=version,
    )
    return b"".join((prefix, *chunks))


class FrameDecoder:
    """Turns a byte stream into whole frames, one layer at a time.

    ``feed()`` buffers bytes; ``next_frame()`` returns the next whole frame or ``None`` when
    more bytes are needed; iterating yields every frame available now. ``close()`` says the
    stream has ended and raises :class:`TruncatedFrameError` if it ended inside a frame.
    ``buffered`` tells how many bytes are held, so an owner can stop reading above a limit.
    :meth:`set_limit` changes the frame limit (a broker's before and after a handshake).

    A large frame that does not arrive in one piece is received into a buffer of exactly its
    size, allocated once its header is checked: it costs its size and no more (no growth by
    reallocation, no copy when it is handed over).
    """

    __slots__ = (
        "_buf",
        "_error",
        "_fill",
        "_frame",
        "_header",
        "_limit_name",
        "_pos",
        "max_frame_size",
        "versions",
    )

    def __init__(
        self,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        versions: frozenset[int] = SUPPORTED_PROTOCOL_VERSIONS,
    ) -> None:
        self.max_frame_size = max_frame_size
        self._limit_name = "the limit"
        self.versions = versions
        self._buf = bytearray()
        self._pos = 0
        self._header: FrameHeader | None = None
        self._error: FramingError | None = None
        self._frame: bytearray | None = None  # a large frame being received, at its size
        self._fill = 0  # bytes of it received

    @property
    def buffered(self) -> int:
        """Bytes received but not yet handed out as frames."""
        return len(self._buf) - self._pos + self._fill

    @property
    def pending_frame_size(self) -> int:
        """Total size of the frame being received (0 if its header has not arrived yet)."""
        h = self._header
        return 0 if h is None else FRAME_HEADER_SIZE + h.body_length

    def set_limit(self, max_frame_size: int, name: str = "the limit") -> None:
        """Take frames up to ``max_frame_size`` bytes from the next header on; ``name`` says
        which limit it is in the error for a frame above it."""
        self.max_frame_size = max_frame_size
        self._limit_name = name

    def discard(self) -> None:
        """Drop every byte held, at once: the stream is abandoned (its connection is gone)."""
        self._buf = bytearray()
        self._pos = 0
        self._header = None
        self._frame = None
        self._fill = 0

    def feed(self, data: Buffer) -> None:
        if self._error is not None:
            raise self._error
        frame = self._frame
        if frame is not None:
            # Into the large frame's own buffer; what follows it goes to the stream buffer.
            fill = self._fill
            room = len(frame) - fill
            if len(data) <= room:
                frame[fill : fill + len(data)] = data
                self._fill = fill + len(data)
                return
            view = memoryview(data)
            frame[fill:] = view[:room]
            self._fill = len(frame)
            data = view[room:]
        elif (header := self._header) is not None and header.data_length > _HANDOVER_SIZE:
            self._receive_large(header)
            self.feed(data)
            return
        if self._pos:
            # Drop what was handed out; what is left is at most one partial frame.
            if self._pos == len(self._buf):
                self._buf.clear()
            else:
                del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def next_frame(self) -> Frame | None:
        if self._error is not None:
            raise self._error
        try:
            return self._next()
        except FramingError as exc:
            self._error = exc
            raise

    def __iter__(self) -> Iterator[Frame]:
        while (frame := self.next_frame()) is not None:
            yield frame

    def close(self) -> None:
        """The peer closed the stream: fine between frames, an error inside one. Take every
        whole frame out first: bytes still buffered count as a frame cut short."""
        if self._error is None and self.buffered:
            self._error = TruncatedFrameError(
                f"stream ended inside a frame ({self.buffered} bytes of it received)"
            )
        if self._error is not None:
            raise self._error

    def _next(self) -> Frame | None:
        if self._frame is not None:
            return self._large()
        buf = self._buf
        pos = self._pos
        header = self._header
        if header is None:
            if len(buf) - pos < FRAME_HEADER_SIZE:
                if len(buf) > pos and buf[pos] != FRAME_MAGIC:
                    raise BadMagicError(
                        f"expected magic byte {FRAME_MAGIC:#04x}, got {buf[pos]:#04x}"
                    )
                return None
            header = self._header = self._parse_header(buf, pos)
        end = pos + FRAME_HEADER_SIZE + header.body_length
        if len(buf) < end:
            return None
        meta_end = pos + FRAME_HEADER_SIZE + header.meta_length
        view = memoryview(buf)
        actual = crc32c(
            view[pos + FRAME_HEADER_SIZE : meta_end], crc32c(view[pos : pos + FRAME_CRC_OFFSET])
        )
        view.release()
        if actual != header.crc:
            raise ChecksumMismatchError(
                f"frame checksum mismatch: header {header.crc:#010x}, bytes {actual:#010x}"
            )
        meta = bytes(buf[pos + FRAME_HEADER_SIZE : meta_end])
        self._header = None
        if end == len(buf) and header.data_length > _HANDOVER_SIZE:
            # The frame ends the buffer: hand the buffer itself over as the data section
            # (deleting a bytearray's prefix is O(1)) instead of copying a large body.
            del buf[:meta_end]
            self._buf = bytearray()
            self._pos = 0
            return Frame(header, meta, buf)
        self._pos = end
        return Frame(header, meta, buf[meta_end:end])

    def _receive_large(self, header: FrameHeader) -> None:
        """More of a large frame is coming: receive it into a buffer of the frame's size. Only
        now, not when its header was read: its owner may budget the size before it reads on."""
        buf = self._buf
        pos = self._pos
        frame = self._frame = bytearray(FRAME_HEADER_SIZE + header.body_length)
        have = len(buf) - pos
        frame[:have] = memoryview(buf)[pos:]
        self._fill = have
        self._buf = bytearray()
        self._pos = 0

    def _large(self) -> Frame | None:
        """The large frame being received into its own buffer, once it is whole."""
        frame = self._frame
        header = self._header
        assert frame is not None and header is not None
        if self._fill < len(frame):
            return None
        meta_end = FRAME_HEADER_SIZE + header.meta_length
        view = memoryview(frame)
        actual = crc32c(view[FRAME_HEADER_SIZE:meta_end], crc32c(view[:FRAME_CRC_OFFSET]))
        view.release()
        if actual != header.crc:
            raise ChecksumMismatchError(
                f"frame checksum mismatch: header {header.crc:#010x}, bytes {actual:#010x}"
            )
        meta = bytes(frame[FRAME_HEADER_SIZE:meta_end])
        del frame[:meta_end]  # O(1) for a bytearray's prefix: the data section, not copied
        self._frame = None
        self._fill = 0
        self._header = None
        return Frame(header, meta, frame)

    def _parse_header(self, buf: bytearray, pos: int) -> FrameHeader:
        (
            magic,
            version,
            api_key,
            api_version,
            flags,
            correlation_id,
            meta_length,
            data_length,
            crc,
        ) = FRAME_HEADER_STRUCT.unpack_from(buf, pos)
        if magic != FRAME_MAGIC:
            raise BadMagicError(f"expected magic byte {FRAME_MAGIC:#04x}, got {magic:#04x}")
        if version not in self.versions:
            raise UnsupportedProtocolVersionError(
                f"frame protocol version {version} is not supported "
                f"(supported: {sorted(self.versions)})"
            )
        if meta_length + data_length > self.max_frame_size:
            raise FrameTooLargeError(
                f"frame of {meta_length + data_length} bytes is above {self._limit_name} of "
                f"{self.max_frame_size} bytes"
            )
        return FrameHeader(
            version, api_key, api_version, flags, correlation_id, meta_length, data_length, crc
        )
