"""Batches the log cleaner writes: a batch with some of its records left out, and an empty
batch that only holds an offset range.

Both keep the offset range ``[base_offset, base_offset + last_offset_delta]`` of what they
replace, so the log stays contiguous and every surviving record keeps its offset: they set
``COMPACTED``, and their records section carries an array of offset deltas after the other
arrays (docs/PROTOCOL.md §6). The header's other fields (timestamps, producer fields, leader
epoch) are the original's; the CRC is computed afresh. Pure: no I/O.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Final

from crc32c import crc32c

from .batch_format import CODEC_MASK, COMPACTED, HAS_HEADERS, NO_PRODUCER_ID, NO_SEQUENCE
from .compression import Compression, compress
from .layouts import (
    BATCH_CRC_OFFSET,
    BATCH_CRC_START,
    BATCH_HEADER_SIZE,
    BATCH_HEADER_STRUCT,
    BATCH_LOG_OVERHEAD,
    BATCH_MAGIC,
)
from .records import RecordBatch
from .records_section import Columns

_NULL: Final = -1


class BatchRows:
    """The pieces of each record of a batch a cleaner decides on: offsets, keys, and which
    records are tombstones (a null value)."""

    __slots__ = ("_columns", "keys", "offsets", "values")

    def __init__(self, batch: RecordBatch) -> None:
        columns = Columns.parse(batch)
        section = columns.section
        pos = columns.start
        keys: list[bytes | None] = []
        for length in columns.key_lengths:
            if length < 0:
                keys.append(None)
            else:
                keys.append(section[pos : pos + length])
                pos += length
        self.keys = keys
        self.values: tuple[int, ...] = columns.value_lengths
        """Value lengths: -1 for a tombstone."""
        base = batch.base_offset
        deltas = columns.offset_deltas
        self.offsets = (
            list(range(base, base + batch.record_count))
            if deltas is None
            else [base + d for d in deltas]
        )
        self._columns = columns

    def is_tombstone(self, index: int) -> bool:
        return self.values[index] == _NULL


def filter_batch(batch: RecordBatch, rows: BatchRows, keep: Sequence[int]) -> bytes:
    """``batch`` with only the records at indexes ``keep`` (ascending), each at its own
    offset, compressed with the batch's codec. ``keep`` may be empty."""
    columns = rows._columns
    section = columns.section
    n = batch.record_count
    key_lengths, value_lengths = columns.key_lengths, columns.value_lengths
    header_lengths = columns.header_lengths
    pos = columns.start
    key_at: list[int] = []
    for length in key_lengths:
        key_at.append(pos)
        pos += max(length, 0)
    value_at: list[int] = []
    for length in value_lengths:
        value_at.append(pos)
        pos += max(length, 0)
    header_at: list[int] = []
    if header_lengths is not None:
        for length in header_lengths:
            header_at.append(pos)
            pos += length
    base = batch.base_offset
    m = len(keep)
    fmt = f">{m}"
    arrays = [
        struct.pack(fmt + "q", *(columns.deltas[i] for i in keep)),
        struct.pack(fmt + "i", *(key_lengths[i] for i in keep)),
        struct.pack(fmt + "i", *(value_lengths[i] for i in keep)),
    ]
    if header_lengths is not None:
        arrays.append(struct.pack(fmt + "i", *(header_lengths[i] for i in keep)))
    arrays.append(struct.pack(fmt + "i", *(rows.offsets[i] - base for i in keep)))
    data = [section[key_at[i] : key_at[i] + max(key_lengths[i], 0)] for i in keep]
    data += [section[value_at[i] : value_at[i] + max(value_lengths[i], 0)] for i in keep]
    if header_lengths is not None:
        data += [section[header_at[i] : header_at[i] + header_lengths[i]] for i in keep]
    assert m <= n
    body = b"".join(arrays) + b"".join(data)
    attributes = batch.attributes | COMPACTED
    if not m:
        attributes &= ~(CODEC_MASK | HAS_HEADERS)
    return _seal(batch, attributes, m, body)


def empty_batch(
    base_offset: int,
    last_offset_delta: int,
    *,
    base_timestamp: int,
    max_timestamp: int,
    leader_epoch: int = -1,
    producer_id: int = NO_PRODUCER_ID,
    producer_epoch: int = -1,
    base_sequence: int = NO_SEQUENCE,
) -> bytes:
    """A batch of no records holding the offsets ``[base_offset, base_offset +
    last_offset_delta]``: what is left where every record of one or more batches was
    cleaned away (a producer's last batch keeps its producer fields so its state survives)."""
    header = BATCH_HEADER_STRUCT.pack(
        base_offset,
        BATCH_HEADER_SIZE - BATCH_LOG_OVERHEAD,
        leader_epoch,
        BATCH_MAGIC,
        0,
        COMPACTED,
        last_offset_delta,
        base_timestamp,
        max_timestamp,
        producer_id,
        producer_epoch,
        base_sequence,
        0,
        0,
    )
    return _with_crc(header, b"")


def _seal(batch: RecordBatch, attributes: int, count: int, section: bytes) -> bytes:
    codec = attributes & CODEC_MASK
    body = compress(Compression(codec), section) if codec else section
    header = BATCH_HEADER_STRUCT.pack(
        batch.base_offset,
        BATCH_HEADER_SIZE - BATCH_LOG_OVERHEAD + len(body),
        batch.leader_epoch,
        BATCH_MAGIC,
        0,
        attributes,
        batch.last_offset_delta,
        batch.base_timestamp,
        batch.max_timestamp,
        batch.producer_id,
        batch.producer_epoch,
        batch.base_sequence,
        count,
        len(section),
    )
    return _with_crc(header, body)


def _with_crc(header: bytes, body: bytes) -> bytes:
    crc = crc32c(body, crc32c(memoryview(header)[BATCH_CRC_START:]))
    return b"".join(
        (header[:BATCH_CRC_OFFSET], crc.to_bytes(4, "big"), header[BATCH_CRC_START:], body)
    )
