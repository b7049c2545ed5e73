"""A batch's columns (``BatchView``) against its records (``records_as``): same offsets,
timestamps, keys, values and headers from any offset on (and any number of them), in plain,
compressed and cleaned (compacted, with gaps) batches."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidelog.wire import Compression, RecordBatch, RecordBatchBuilder
from tidelog.wire.batch_view import BatchView
from tidelog.wire.compaction import BatchRows, empty_batch, filter_batch
from tidelog.wire.errors import CorruptBatchError
from tidelog.wire.records import Record, stamp_batch

from .strategies import PROPERTY

KEYS = st.none() | st.binary(max_size=8)
HEADERS = st.lists(st.tuples(st.text(max_size=4), st.none() | st.binary(max_size=4)), max_size=2)
RECORDS = st.lists(st.tuples(KEYS, KEYS, HEADERS, st.integers(0, 50)), min_size=1, max_size=30)


def batch_of(
    records: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]], int]],
    compression: Compression = Compression.NONE,
    base: int = 100,
) -> RecordBatch:
    builder = RecordBatchBuilder(compression)
    for key, value, headers, ts in records:
        builder.append(value, key=key, headers=headers or None, timestamp=1_000 + ts)
    data = bytearray(builder.build())
    stamp_batch(data, base)
    return RecordBatch.parse(bytes(data))


def columns(view: BatchView) -> list[Record]:
    return [
        Record(*row)
        for row in zip(
            view.offsets,
            view.timestamps,
            view.raw_keys(),
            view.raw_values(),
            view.headers,
            strict=True,
        )
    ]


@PROPERTY
@given(
    RECORDS,
    st.sampled_from(list(Compression)),
    st.data(),
)
def test_columns_hold_the_records_from_any_offset(
    records: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]], int]],
    compression: Compression,
    data: st.DataObject,
) -> None:
    batch = batch_of(records, compression)
    n = len(records)
    keep = sorted(data.draw(st.sets(st.integers(0, n - 1))))
    if data.draw(st.booleans()):  # a batch the log cleaner rewrote: records at their offsets
        batch = RecordBatch.parse(filter_batch(batch, BatchRows(batch), keep))
    since = data.draw(st.integers(90, 100 + n + 2))
    expected = [r for r in batch.records() if r.offset >= since]
    view = BatchView(batch, since)
    assert len(view) == len(expected)
    assert columns(view) == expected
    assert view.rows(Record) == expected
    assert view.next_offset == 100 + n
    limit = data.draw(st.integers(0, n + 1))  # a share fetch's window: only these decoded
    assert batch.records_as(Record, (), since, limit) == expected[:limit]


def test_an_emptied_batch_has_no_records_and_still_says_where_to_go_on() -> None:
    view = BatchView(RecordBatch.parse(empty_batch(6, 3, base_timestamp=0, max_timestamp=0)))
    assert len(view) == 0
    assert list(view.offsets) == []
    assert view.raw_values() == []
    assert view.headers == []
    assert view.next_offset == 10


def test_log_append_time_gives_every_record_the_brokers_time() -> None:
    batch = batch_of([(None, b"a", [], 1), (None, b"b", [], 7)])
    data = bytearray(batch.buffer)
    # Attributes are covered by the CRC: parse without checking it, as a test of the column.
    data[21:23] = (int.from_bytes(data[21:23], "big") | 0x08).to_bytes(2, "big")
    appended = RecordBatch.parse(bytes(data), verify_crc=False)
    assert BatchView(appended).timestamps == [appended.max_timestamp] * 2


def test_a_section_that_does_not_add_up_is_refused_when_the_view_is_made() -> None:
    batch = batch_of([(b"k", b"v", [], 0)])
    data = bytearray(batch.buffer)
    del data[-1]  # the section one byte short of what its lengths say
    with pytest.raises(CorruptBatchError):
        BatchView(
            RecordBatch(
                batch.base_offset,
                batch.leader_epoch,
                batch.attributes,
                batch.last_offset_delta,
                batch.base_timestamp,
                batch.max_timestamp,
                batch.producer_id,
                batch.producer_epoch,
                batch.base_sequence,
                batch.record_count,
                batch.records_size - 1,
                bytes(data),
            )
        )


@pytest.mark.parametrize("compression", [Compression.NONE, Compression.ZSTD])
def test_a_view_holds_its_own_bytes_not_the_buffer_it_was_read_from(
    compression: Compression,
) -> None:
    batch = batch_of([(b"k", b"v" * 100, [], 0)] * 3, compression)
    response = bytearray(b"x" * 64 + batch.buffer + b"y" * 64)  # a fetch response, say
    inside = RecordBatch.parse(memoryview(response)[64 : 64 + len(batch.buffer)])
    view = BatchView(inside, 101)
    assert type(view.batch.buffer) is bytes and view.batch.buffer == batch.buffer
    assert type(view.columns.section) is bytes
    response[:] = b"z" * len(response)  # the response's memory reused: the view is intact
    assert view.raw_values() == [b"v" * 100] * 2
    assert list(view.offsets) == [101, 102]
