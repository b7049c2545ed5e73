"""Confluent's wire framing of a serialized key or value: magic byte 0, the schema id as a
4-byte big-endian integer, then the payload (Avro binary or JSON text)."""

from __future__ import annotations

import struct
from typing import Final

MAGIC: Final = 0
HEADER: Final = struct.Struct(">bI")
"""magic byte (0), schema id (unsigned 32-bit, big-endian)."""
HEADER_SIZE: Final = HEADER.size


def frame(schema_id: int, payload: bytes) -> bytes:
    """``payload`` with the header naming ``schema_id``."""
    return HEADER.pack(MAGIC, schema_id) + payload


def schema_id_of(data: bytes | bytearray | memoryview | None) -> int | None:
    """The schema id in ``data``'s header, ``None`` if it has no (valid) header."""
    if data is None or len(data) < HEADER_SIZE or data[0] != MAGIC:
        return None
    return int.from_bytes(data[1:HEADER_SIZE], "big")
