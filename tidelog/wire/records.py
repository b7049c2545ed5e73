"""Record batches: the unit of storage, replication and transfer.

A batch is a fixed 65-byte header (``layouts.BATCH_HEADER``) followed by a records section,
compressed as a whole when the batch says so. The records section is *columnar*: one array of
timestamp deltas, one of key lengths, one of value lengths (and one of header-block lengths when
any record has headers), then the keys, the values and the header blocks back to back. A batch
the log cleaner rewrote (``COMPACTED``) keeps its offset range with fewer records, maybe none:
an array of offset deltas follows the other arrays, so every record keeps its offset. Reading
a batch is a handful of ``struct`` calls and slices, never a per-field parse: this is what lets
Python build a million records a second and read two.

The broker never decodes records: it checks a batch once (:meth:`RecordBatch.parse` with
``verify_records=True``), stamps the base offset and leader epoch in place
(:func:`stamp_batch`, outside the CRC's coverage) and stores the bytes as they came.

Here: :class:`RecordBatch` and the functions over back-to-back batches. The builder is in
:mod:`.batch_builder`, the records section reader in :mod:`.records_section`, the shared types
and the header block codec in :mod:`.batch_format`; their public names are importable from here.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from crc32c import crc32c

from .batch_builder import RecordBatchBuilder, build_batch
from .batch_format import (
    BYTES_LIKE,
    CODEC_MASK,
    COMPACTED,
    KNOWN_ATTRIBUTES,
    MAX_CODEC,
    MAX_HEADER_KEY_SIZE,
    MAX_HEADERS,
    MAX_RECORDS_SIZE,
    NO_PRODUCER_ID,
    NO_SEQUENCE,
    BatchAttributes,
    Buffer,
    Headers,
    HeadersInput,
    Record,
    now_ms,
)
from .compression import Compression
from .errors import CorruptBatchError, UnsupportedCompressionError
from .gcpause import gc_paused
from .layouts import (
    BATCH_BASE_OFFSET_OFFSET,
    BATCH_CRC_START,
    BATCH_HEADER_SIZE,
    BATCH_HEADER_STRUCT,
    BATCH_LEADER_EPOCH_OFFSET,
    BATCH_LENGTH_OFFSET,
    BATCH_LOG_OVERHEAD,
    BATCH_MAGIC,
)
from .records_section import Columns, Row, check_records

__all__ = [
    "BYTES_LIKE",
    "KNOWN_ATTRIBUTES",
    "MAX_HEADERS",
    "MAX_HEADER_KEY_SIZE",
    "MAX_RECORDS_SIZE",
    "NO_PRODUCER_ID",
    "NO_SEQUENCE",
    "BatchAttributes",
    "Buffer",
    "Headers",
    "HeadersInput",
    "Record",
    "RecordBatch",
    "RecordBatchBuilder",
    "batch_size_at",
    "build_batch",
    "iter_batches",
    "now_ms",
    "read_records",
    "stamp_batch",
]


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
            raise CorruptBatchError(
                f"batch header says {length + BATCH_LOG_OVERHEAD} bytes, buffer has {size}"
            )
        if verify_crc:
            actual = crc32c(memoryview(buffer)[BATCH_CRC_START:])
            if actual != crc:
                raise CorruptBatchError(
                    f"batch CRC mismatch: header {crc:#010x}, data {actual:#010x}"
                )
        if (record_count < 1 or last_offset_delta != record_count - 1) and not (
            # A cleaned batch keeps its offset range, with fewer records (maybe none) in it.
            attributes & COMPACTED and 0 <= record_count <= last_offset_delta + 1
        ):
            raise CorruptBatchError(
                f"bad record count {record_count} / last offset delta {last_offset_delta}"
            )
        if attributes & ~KNOWN_ATTRIBUTES:
            raise CorruptBatchError(f"unknown batch attribute bits {attributes:#06x}")
        if attributes & CODEC_MASK > MAX_CODEC:
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
            check_records(batch)
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
        self,
        into: type[Row],
        prefix: tuple[object, ...] = (),
        since: int | None = None,
        limit: int | None = None,
    ) -> list[Row]:
        """Decode records straight into ``into``, a tuple type (a NamedTuple) whose fields are
        ``prefix`` followed by offset, timestamp, key, value, headers: a consumer builds its
        own record type in one pass, e.g. ``records_as(ConsumerRecord, (topic, partition))``.
        Records below offset ``since`` are left out, and at most ``limit`` are decoded: only
        those are sliced out of the section, however large the batch.
        """
        columns = Columns.parse(self)
        with gc_paused():  # thousands of tuples that cannot form cycles: see gcpause
            return columns.rows(self, into, prefix, since, limit)

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records())


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
    start = pos + BATCH_LENGTH_OFFSET
    length = int.from_bytes(buffer[start : start + 4], "big", signed=True)
    if length < BATCH_HEADER_SIZE - BATCH_LOG_OVERHEAD:
        raise CorruptBatchError(f"impossible batch length {length} at byte {pos}")
    return length + BATCH_LOG_OVERHEAD


def stamp_batch(buffer: bytearray | memoryview, base_offset: int, leader_epoch: int = -1) -> None:
    """Write the broker-assigned base offset and leader epoch into a batch, in place.

    Both fields lie outside the CRC's coverage, so the checksum stays valid.
    """
    epoch = BATCH_LEADER_EPOCH_OFFSET
    buffer[BATCH_BASE_OFFSET_OFFSET:BATCH_LENGTH_OFFSET] = base_offset.to_bytes(
        8, "big", signed=True
    )
    buffer[epoch : epoch + 4] = leader_epoch.to_bytes(4, "big", signed=True)


def read_records(buffer: Buffer) -> list[Record]:
    """Every record of back-to-back batches, in order (tests, tools)."""
    out: list[Record] = []
    for batch in iter_batches(buffer):
        out.extend(batch.records())
    return out
