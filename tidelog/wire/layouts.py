"""Every fixed byte layout of the protocol, declared once.

The ``construct`` declarations are the readable source of truth (docs/PROTOCOL.md and the tests
read them); the ``struct.Struct`` twins are what hot paths use. ``tests/unit/test_layouts.py``
proves each pair produces identical bytes. All integers are big-endian (network order).
"""

from __future__ import annotations

import struct
from typing import Final

import construct as cs

# --- frames -----------------------------------------------------------------------------------

FRAME_MAGIC: Final = 0xD1
"""First byte of every frame; an HTTP or TLS client talking to a broker fails on it at once."""

FRAME_HEADER = cs.Struct(
    "magic" / cs.Int8ub,  # FRAME_MAGIC
    "version" / cs.Int8ub,  # frame protocol version (negotiated by the handshake)
    "api_key" / cs.Int16ub,  # ApiKey
    "api_version" / cs.Int16ub,  # version of that API's body schema
    "flags" / cs.Int16ub,  # FrameFlags bits
    "correlation_id" / cs.Int32ub,  # chosen by the requester, echoed in the response
    "meta_length" / cs.Int32ub,  # bytes of the msgpack metadata section
    "data_length" / cs.Int32ub,  # bytes of the raw data section (record batches)
    "crc" / cs.Int32ub,  # CRC-32C of header bytes [0, CRC_OFFSET) followed by the metadata
)
FRAME_HEADER_STRUCT: Final = struct.Struct(">BBHHHIIII")
FRAME_HEADER_SIZE: Final[int] = FRAME_HEADER.sizeof()
FRAME_CRC_OFFSET: Final[int] = FRAME_HEADER_SIZE - 4
"""The CRC covers the header up to this byte, then the metadata section; not the data section,
whose record batches carry their own CRC (so a fetch can send them straight from disk)."""

FRAME_PREFIX_STRUCT: Final = struct.Struct(">BBHHHIII")
"""The header without its CRC: the bytes the CRC starts with."""

# --- record batches ---------------------------------------------------------------------------

BATCH_MAGIC: Final = 1
"""Record batch format version, byte 16 of every batch."""

BATCH_HEADER = cs.Struct(
    "base_offset" / cs.Int64sb,  # offset of the first record; stamped by the broker on append
    "length" / cs.Int32sb,  # bytes of the batch after this field (batch size - 12)
    "leader_epoch" / cs.Int32sb,  # stamped by the partition leader on append
    "magic" / cs.Int8sb,  # BATCH_MAGIC
    "crc" / cs.Int32ub,  # CRC-32C of every byte from `attributes` to the end of the batch
    "attributes" / cs.Int16ub,  # BatchAttributes bits: codec, timestamp type, headers, ...
    "last_offset_delta" / cs.Int32sb,  # offset of the last record minus base_offset
    "base_timestamp" / cs.Int64sb,  # smallest record timestamp, ms since the epoch
    "max_timestamp" / cs.Int64sb,  # largest record timestamp (log-append time if so flagged)
    "producer_id" / cs.Int64sb,  # idempotent producer id, -1 when none
    "producer_epoch" / cs.Int16sb,  # idempotent producer epoch, -1 when none
    "base_sequence" / cs.Int32sb,  # sequence number of the first record, -1 when none
    "record_count" / cs.Int32sb,  # number of records, >= 1
    "records_size" / cs.Int32sb,  # bytes of the records section before compression
)
BATCH_HEADER_STRUCT: Final = struct.Struct(">qiibIHiqqqhiii")
BATCH_HEADER_SIZE: Final[int] = BATCH_HEADER.sizeof()


def _field_at(layout: cs.Struct, name: str) -> tuple[int, int]:
    """(byte offset, size) of field ``name`` in a fixed-size ``layout``."""
    offset = 0
    for field in layout.subcons:
        if field.name == name:
            return offset, field.sizeof()
        offset += field.sizeof()
    raise KeyError(name)


# Byte offsets into a batch, derived from BATCH_HEADER (Kafka's names, with a BATCH_ prefix).
BATCH_BASE_OFFSET_OFFSET: Final = _field_at(BATCH_HEADER, "base_offset")[0]
BATCH_LENGTH_OFFSET: Final = _field_at(BATCH_HEADER, "length")[0]
BATCH_LOG_OVERHEAD: Final = sum(_field_at(BATCH_HEADER, "length"))
"""Bytes before the ``length`` field's coverage starts (base_offset + length): a batch's size
is its length field plus this."""
BATCH_LEADER_EPOCH_OFFSET: Final = _field_at(BATCH_HEADER, "leader_epoch")[0]
BATCH_STAMPED_SIZE: Final = sum(_field_at(BATCH_HEADER, "leader_epoch"))
"""The prefix the broker stamps on append (base offset, length, leader epoch)."""
BATCH_MAGIC_OFFSET: Final = _field_at(BATCH_HEADER, "magic")[0]
BATCH_CRC_OFFSET: Final = _field_at(BATCH_HEADER, "crc")[0]
BATCH_CRC_START: Final = _field_at(BATCH_HEADER, "attributes")[0]
"""The CRC covers [BATCH_CRC_START, end): base offset and leader epoch are outside it, so the
broker stamps them in place without recomputing a checksum."""
BATCH_MAX_TIMESTAMP_OFFSET: Final = _field_at(BATCH_HEADER, "max_timestamp")[0]
BATCH_PRODUCER_OFFSET: Final = _field_at(BATCH_HEADER, "producer_id")[0]
"""Where the idempotence fields start: producer_id, producer_epoch, base_sequence, then
record_count, back to back."""
BATCH_LAST_OFFSET_DELTA_OFFSET: Final = _field_at(BATCH_HEADER, "last_offset_delta")[0]

BATCH_STAMP_STRUCT: Final = struct.Struct(">qii")
"""Twin of the stamped prefix: base_offset, length, leader_epoch."""
BATCH_LENGTH_STRUCT: Final = struct.Struct(">i")
"""Twin of the ``length`` field."""
BATCH_MAX_TIMESTAMP_STRUCT: Final = struct.Struct(">q")
"""Twin of the ``max_timestamp`` field."""
BATCH_PRODUCER_STRUCT: Final = struct.Struct(">qhii")
"""Twin of producer_id, producer_epoch, base_sequence and record_count."""

# Per-record arrays of the (uncompressed) records section; see docs/PROTOCOL.md.
TIMESTAMP_DELTA_SIZE: Final = 8  # int64 per record
LENGTH_SIZE: Final = 4  # int32 per record and per array

# A header block: u16 count, then per header: u16 key length, key, i32 value length, value.
HEADER_COUNT_STRUCT: Final = struct.Struct(">H")
HEADER_KEY_LEN_STRUCT: Final = struct.Struct(">H")
HEADER_VALUE_LEN_STRUCT: Final = struct.Struct(">i")

# Sanity checks at import: the declarations and their twins agree on size.
assert FRAME_HEADER_STRUCT.size == FRAME_HEADER_SIZE == 24
assert FRAME_PREFIX_STRUCT.size == FRAME_CRC_OFFSET
assert BATCH_HEADER_STRUCT.size == BATCH_HEADER_SIZE == 65
assert BATCH_STAMP_STRUCT.size == BATCH_STAMPED_SIZE <= BATCH_CRC_START
assert BATCH_LENGTH_STRUCT.size == BATCH_LOG_OVERHEAD - BATCH_LENGTH_OFFSET
assert BATCH_MAX_TIMESTAMP_STRUCT.size == _field_at(BATCH_HEADER, "max_timestamp")[1]
assert BATCH_PRODUCER_OFFSET + BATCH_PRODUCER_STRUCT.size == sum(
    _field_at(BATCH_HEADER, "record_count")
)
