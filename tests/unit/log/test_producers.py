"""The producer-state table of one partition (server/log/producers.py): duplicates answered
with their offsets, gaps and fenced epochs refused, idle producers expired, the table rebuilt
from the log (a torn tail ignored) and snapshotted."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidelog.server.log.producers import (
    MAX_BATCHES_PER_PRODUCER,
    BatchMeta,
    ProducerBatch,
    ProducerStateTable,
    next_sequence,
    producer_batch,
)
from tidelog.wire.errors import InvalidProducerEpochError, OutOfOrderSequenceError
from tidelog.wire.records import RecordBatchBuilder, stamp_batch

from .helpers import PROPERTY

EXPIRY_MS = 60_000
NOW = 1_000_000
PID = 7


def pb(first: int, count: int = 1, *, pid: int = PID, epoch: int = 0) -> ProducerBatch:
    return ProducerBatch(pid, epoch, first, (first + count - 1) % 2**31)


def table_with(*batches: ProducerBatch, base: int = 0) -> ProducerStateTable:
    """A table that has appended ``batches`` back to back from offset ``base``."""
    table = ProducerStateTable(EXPIRY_MS)
    offset = base
    for b in batches:
        assert table.check(b) is None
        count = (b.last_seq - b.first_seq) % 2**31 + 1
        table.update(b, offset, offset + count - 1, NOW)
        offset += count
    return table


def log_bytes(specs: list[tuple[int, int, int, int]], base: int = 0) -> bytes:
    """Batches as the log stores them: (producer id, epoch, base sequence, records) each, base
    offsets stamped; producer id -1 is a batch without idempotence."""
    out = bytearray()
    offset = base
    for pid, epoch, seq, count in specs:
        builder = RecordBatchBuilder(producer_id=pid, producer_epoch=epoch, base_sequence=seq)
        for i in range(count):
            builder.append(b"v%d" % i, timestamp=1)
        raw = bytearray(builder.build())
        stamp_batch(raw, offset)
        out += raw
        offset += count
    return bytes(out)


# --- checks -----------------------------------------------------------------------------------


def test_a_producer_the_table_does_not_know_may_start_at_any_sequence() -> None:
    table = ProducerStateTable(EXPIRY_MS)
    assert table.check(pb(42, 3)) is None
    assert PID not in table and len(table) == 0


def test_the_next_sequence_is_accepted_and_recorded() -> None:
    table = table_with(pb(0, 3), pb(3, 2))
    assert table.check(pb(5, 4)) is None
    assert table.epoch_of(PID) == 0 and table.offset == 5


def test_a_retry_of_each_of_the_last_five_batches_is_answered_with_its_original_offsets() -> None:
    batches = [pb(i * 2, 2) for i in range(MAX_BATCHES_PER_PRODUCER)]
    table = table_with(*batches, base=100)
    for i, b in enumerate(batches):
        assert table.check(b) == BatchMeta(b.first_seq, b.last_seq, 100 + 2 * i, 101 + 2 * i)


def test_a_batch_older_than_the_last_five_is_out_of_order() -> None:
    batches = [pb(i) for i in range(MAX_BATCHES_PER_PRODUCER + 1)]
    table = table_with(*batches)
    assert table.check(batches[1]) is not None
    with pytest.raises(OutOfOrderSequenceError, match="expected sequence 6, got 0"):
        table.check(batches[0])


@pytest.mark.parametrize(
    ("batch", "why"),
    [
        (pb(7), "a gap: 5 and 6 are missing"),
        (pb(3), "behind the last batch, and not one of them"),
        (pb(2, 2), "a batch that overlaps a known one without being it"),
    ],
)
def test_a_sequence_that_is_neither_next_nor_a_known_batch_is_out_of_order(
    batch: ProducerBatch, why: str
) -> None:
    table = table_with(pb(0, 3), pb(3, 2))
    with pytest.raises(OutOfOrderSequenceError):
        table.check(batch)


def test_an_older_epoch_is_fenced_and_a_new_epoch_starts_at_sequence_zero() -> None:
    table = table_with(pb(0, 2, epoch=1))
    with pytest.raises(InvalidProducerEpochError, match="epoch 0 is fenced by epoch 1"):
        table.check(pb(2, epoch=0))
    with pytest.raises(OutOfOrderSequenceError, match="starts at sequence 0"):
        table.check(pb(2, epoch=2))
    assert table.check(pb(0, epoch=2)) is None
    table.update(pb(0, epoch=2), 2, 2, NOW)
    assert table.epoch_of(PID) == 2
    with pytest.raises(InvalidProducerEpochError):
        table.check(pb(0, 2, epoch=1))  # the old epoch's retry: fenced now


def test_producers_are_independent() -> None:
    table = table_with(pb(0, 2), pb(0, 5, pid=8))
    assert table.check(pb(0, 2)) == BatchMeta(0, 1, 0, 1)
    assert table.check(pb(2)) is None
    assert table.check(pb(5, pid=8)) is None
    for gap in (pb(4), pb(3, pid=8)):
        with pytest.raises(OutOfOrderSequenceError):
            table.check(gap)


def test_sequences_wrap_after_the_largest_int32() -> None:
    top = 2**31 - 1
    assert next_sequence(top) == 0 and next_sequence(5) == 6
    table = table_with(pb(top - 1, 2))
    assert table.check(pb(0, 3)) is None
    table.update(pb(0, 3), 2, 4, NOW)
    assert table.check(pb(top - 1, 2)) == BatchMeta(top - 1, top, 0, 1)
    assert table.check(pb(3)) is None


# --- expiry -----------------------------------------------------------------------------------


def test_idle_producers_expire_and_may_then_start_anywhere() -> None:
    table = table_with(pb(0, 2))
    table.update(pb(0, pid=8), 2, 2, NOW + 10)
    assert table.expire(NOW + EXPIRY_MS - 1) == 0
    assert table.expire(NOW + EXPIRY_MS) == 1
    assert PID not in table and 8 in table
    assert table.check(pb(99)) is None  # forgotten: its next batch is not a gap any more


# --- rebuilt from the log ---------------------------------------------------------------------

SPECS = [(PID, 0, 0, 3), (-1, -1, -1, 2), (8, 0, 10, 1), (PID, 0, 3, 2), (PID, 1, 0, 4)]


def test_replay_rebuilds_the_table_that_the_appends_built() -> None:
    data = log_bytes(SPECS, base=50)
    table = ProducerStateTable(EXPIRY_MS)
    assert table.replay(data, NOW) == 50 + 12
    expected = table_with(pb(0, 3), base=50)
    expected.update(pb(10, pid=8), 55, 55, NOW)
    expected.update(pb(3, 2), 56, 57, NOW)
    expected.update(pb(0, 4, epoch=1), 58, 61, NOW)
    assert table.to_bytes() == expected.to_bytes()
    assert table.check(pb(0, 4, epoch=1)) == BatchMeta(0, 3, 58, 61)  # a retry after restart


def test_replay_ignores_a_torn_tail_wherever_the_log_was_cut() -> None:
    data = log_bytes(SPECS)
    ends = []
    pos = 0
    for spec in SPECS:
        pos += len(log_bytes([spec]))
        ends.append(pos)
    for cut in range(len(data) + 1):
        whole = [e for e in ends if e <= cut]
        table = ProducerStateTable(EXPIRY_MS)
        end = table.replay(data[:cut], NOW)
        reference = ProducerStateTable(EXPIRY_MS)
        reference.replay(data[: whole[-1]] if whole else b"", NOW)
        assert end == reference.offset == sum(s[3] for s in SPECS[: len(whole)])
        assert table.to_bytes() == reference.to_bytes(), f"cut at byte {cut}"


def test_replay_keeps_only_the_last_five_batches_of_a_producer() -> None:
    table = ProducerStateTable(EXPIRY_MS)
    table.replay(log_bytes([(PID, 0, i, 1) for i in range(8)]), NOW)
    with pytest.raises(OutOfOrderSequenceError):
        table.check(pb(2))
    assert table.check(pb(3)) == BatchMeta(3, 3, 3, 3)
    assert table.check(pb(8)) is None


def test_producer_batch_reads_the_header_fields() -> None:
    assert producer_batch(log_bytes([(PID, 3, 40, 5)])) == ProducerBatch(PID, 3, 40, 44)
    assert producer_batch(log_bytes([(-1, -1, -1, 5)])) is None


# --- snapshots --------------------------------------------------------------------------------


def test_a_snapshot_round_trip_keeps_everything_the_checks_need() -> None:
    table = table_with(*(pb(i) for i in range(7)), base=10)
    table.update(pb(0, 2, pid=9, epoch=4), 17, 18, NOW + 5)
    loaded = ProducerStateTable.from_bytes(table.to_bytes(), EXPIRY_MS)
    assert loaded.offset == table.offset == 19
    assert loaded.to_bytes() == table.to_bytes()
    assert loaded.check(pb(6)) == BatchMeta(6, 6, 16, 16)
    with pytest.raises(OutOfOrderSequenceError):
        loaded.check(pb(1))
    with pytest.raises(InvalidProducerEpochError):
        loaded.check(pb(2, pid=9, epoch=3))
    assert loaded.expire(NOW + EXPIRY_MS) == 1  # the last-seen times came along


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[: len(data) // 2],
        lambda data: b"",
        lambda data: b"\xff" + data[1:],
        lambda data: data.replace(b"\x01", b"\x02", 1),  # another version
    ],
    ids=["truncated", "empty", "garbage", "version"],
)
def test_a_damaged_snapshot_raises_value_error(damage: object) -> None:
    data = table_with(pb(0, 2), pb(2)).to_bytes()
    assert data[1:2] == b"\x01"  # msgpack array, then the version
    with pytest.raises(ValueError, match="snapshot"):
        ProducerStateTable.from_bytes(damage(data), EXPIRY_MS)  # type: ignore[operator]


@PROPERTY
@given(st.lists(st.integers(1, 4), min_size=1, max_size=12), st.integers(0, 2**31 - 1))
def test_every_appended_batch_of_the_last_five_is_a_duplicate_and_the_next_one_is_new(
    counts: list[int], start: int
) -> None:
    batches = []
    seq = start
    for n in counts:
        batches.append(pb(seq, n))
        seq = (seq + n) % 2**31
    table = ProducerStateTable.from_bytes(table_with(*batches).to_bytes(), EXPIRY_MS)
    for i, b in enumerate(batches):
        if i >= len(batches) - MAX_BATCHES_PER_PRODUCER:
            assert table.check(b) is not None
        else:
            with pytest.raises(OutOfOrderSequenceError):
                table.check(b)
    assert table.check(pb(seq)) is None
