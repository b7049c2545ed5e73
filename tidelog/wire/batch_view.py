"""One batch's records as columns: offsets, timestamps, keys, values, headers, each decoded on
first use and none of them as one tuple per record.

A :class:`BatchView` is what a batch-level reader hands an application: ``len()`` and the
offsets cost nothing beyond the batch's one check of its arrays (done when the view is made,
so a damaged section is refused before anything is handed out); ``keys`` or ``values`` cost a
slice per record and only when asked for. The view reads the records from an offset on (a
position inside the batch), by offset in a batch the log cleaner rewrote. It holds its own
batch's bytes, never the larger buffer (a fetch response) the batch was read from. Pure: no
I/O.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from copy import copy

from .batch_format import CODEC_MASK, LOG_APPEND_TIME, Headers, decode_header_blocks
from .gcpause import gc_paused
from .records import RecordBatch
from .records_section import Columns, Row, _slices


class BatchView:
    """The records of ``batch`` at offsets ``since`` and above, as columns. Raises
    :class:`~tidelog.wire.errors.CorruptBatchError` if the records section does not add up."""

    __slots__ = ("batch", "columns", "first")

    def __init__(self, batch: RecordBatch, since: int = -1) -> None:
        columns = Columns.parse(batch)
        if type(batch.buffer) is not bytes:
            # A view into a larger buffer (a whole fetch response): hold this batch's own
            # bytes only -- the uncompressed section is already a copy of the whole batch.
            batch = copy(batch)
            batch.buffer = bytes(batch.buffer) if batch.attributes & CODEC_MASK else columns.section
        self.batch = batch
        self.columns = columns
        skip = since - batch.base_offset
        deltas = columns.offset_deltas
        self.first = (
            0
            if skip <= 0
            else min(skip, batch.record_count)
            if deltas is None
            else bisect_left(deltas, skip)
        )
        """The index of the first record in the view (records before ``since`` are left out)."""

    def __len__(self) -> int:
        return self.batch.record_count - self.first

    def __repr__(self) -> str:
        return f"{type(self).__name__}(offsets={self.offsets!r})"

    @property
    def next_offset(self) -> int:
        """The offset after the batch (past offsets the log cleaner removed): where a reader
        goes on once it has this view."""
        return self.batch.next_offset

    @property
    def offsets(self) -> Sequence[int]:
        """Each record's offset (a ``range`` unless the log cleaner left gaps)."""
        batch = self.batch
        base = batch.base_offset
        deltas = self.columns.offset_deltas
        if deltas is None:
            return range(base + self.first, base + batch.record_count)
        return [base + d for d in deltas[self.first :]]

    @property
    def timestamps(self) -> list[int]:
        """Each record's timestamp (the broker's append time on a log-append-time topic)."""
        batch = self.batch
        if batch.attributes & LOG_APPEND_TIME:
            return [batch.max_timestamp] * len(self)
        deltas = self.columns.deltas
        return list(
            map(batch.base_timestamp.__add__, deltas[self.first :] if self.first else deltas)
        )

    def raw_keys(self) -> list[bytes | None]:
        """Each record's key as stored (``None``: no key)."""
        columns = self.columns
        lengths = columns.key_lengths
        return _slices(columns.section, columns.start, lengths, self.first, len(lengths))[0]

    def raw_values(self) -> list[bytes | None]:
        """Each record's value as stored (``None``: a tombstone)."""
        columns = self.columns
        start = columns.start + _span(columns.key_lengths)
        lengths = columns.value_lengths
        return _slices(columns.section, start, lengths, self.first, len(lengths))[0]

    @property
    def headers(self) -> list[Headers]:
        """Each record's headers (``()`` when it has none)."""
        columns = self.columns
        if columns.header_lengths is None:
            return [()] * len(self)
        pos = columns.start + _span(columns.key_lengths) + _span(columns.value_lengths)
        blocks = decode_header_blocks(columns.section, pos, columns.header_lengths)
        return blocks[self.first :] if self.first else blocks

    def rows(self, into: type[Row], prefix: tuple[object, ...] = ()) -> list[Row]:
        """The records as ``into`` tuples (see ``RecordBatch.records_as``): the per-record
        form, when the application wants it after all."""
        if not len(self):
            return []
        since = self.offsets[0]
        with gc_paused():  # thousands of tuples that cannot form cycles: see gcpause
            return self.columns.rows(self.batch, into, prefix, since)


def _span(lengths: tuple[int, ...]) -> int:
    """The bytes of the keys or values of ``lengths`` (-1, no key or value, takes none)."""
    return sum(lengths) + lengths.count(-1)
