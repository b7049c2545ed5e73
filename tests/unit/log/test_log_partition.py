"""PartitionLog: appends, reads, rolls, timestamps, retention, truncation, reopening."""

from __future__ import annotations

import os
import struct

import pytest
from crc32c import crc32c

from tidelog.server.log import PartitionLog, TopicConfig
from tidelog.wire.errors import (
    CorruptMessageError,
    InvalidRecordError,
    MessageTooLargeError,
    OffsetOutOfRangeError,
    StorageError,
)
from tidelog.wire.layouts import BATCH_CRC_OFFSET, BATCH_CRC_START, BATCH_HEADER_SIZE
from tidelog.wire.records import RecordBatch, build_batch, iter_batches

from .helpers import DAY, FakeClock, append_all, disk_batches, make_batch, read_all, snapshot

# --- appends --------------------------------------------------------------------------------


def test_append_assigns_consecutive_offsets(log: PartitionLog) -> None:
    infos = [log.append(make_batch(n)) for n in (1, 3, 2)]
    assert [(i.base_offset, i.last_offset) for i in infos] == [(0, 0), (1, 3), (4, 5)]
    assert log.log_end_offset == log.next_offset == 6
    assert infos[1].record_count == 3
    assert infos[1].next_offset == 4


def test_append_stamps_base_offset_and_epoch_in_place_keeping_the_crc(log: PartitionLog) -> None:
    raw = make_batch(2)
    log.append(make_batch(3))
    log.append(raw, leader_epoch=7)
    stored = log.read(3, 1 << 20).records
    batch = RecordBatch.parse(stored, verify_records=True)
    assert (batch.base_offset, batch.leader_epoch) == (3, 7)
    assert stored[16:] == raw[16:]  # everything after the stamped fields is byte-identical
    assert [r.offset for r in batch.records()] == [3, 4]


def test_corrupt_batch_is_refused_and_nothing_written(log: PartitionLog) -> None:
    log.append(make_batch())
    bad = bytearray(make_batch(2))
    bad[-1] ^= 0x01
    with pytest.raises(CorruptMessageError, match="CRC"):
        log.append(bytes(bad))
    with pytest.raises(CorruptMessageError):
        log.append(b"\x00" * 10)
    assert log.log_end_offset == 1
    assert log.active_segment.size == len(make_batch())


def _with_arrays(batch: bytes, arrays: tuple[int, ...]) -> bytearray:
    """A two-record batch with its records arrays (2 timestamp deltas, 2 key lengths, 2 value
    lengths) replaced and its CRC recomputed: only the records checks can catch it."""
    out = bytearray(batch)
    struct.pack_into(">2q2i2i", out, BATCH_HEADER_SIZE, *arrays)
    out[BATCH_CRC_OFFSET:BATCH_CRC_START] = crc32c(bytes(out[BATCH_CRC_START:])).to_bytes(4, "big")
    return out


@pytest.mark.parametrize("as_view", [False, True], ids=["bytes", "memoryview"])
@pytest.mark.parametrize(
    ("arrays", "match"),
    [  # make_batch(2) has (0, 0, 1, 1, 10, 10), and a timestamp span of 0
        ((0, 0, -2, 1, 13, 10), "negative key or value length"),  # the same sum as before
        ((0, 0, 1, 1, 10, 11), "add up"),
        ((0, 1, 1, 1, 10, 10), "outside"),
        ((-1, 0, 1, 1, 10, 10), "outside"),
    ],
)
def test_a_batch_with_damaged_records_arrays_and_a_valid_crc_is_refused(
    log: PartitionLog, arrays: tuple[int, ...], match: str, as_view: bool
) -> None:
    log.append(make_batch())
    damaged = _with_arrays(make_batch(2), arrays)
    with pytest.raises(CorruptMessageError, match=match):
        log.append(memoryview(damaged) if as_view else bytes(damaged))
    assert log.log_end_offset == 1
    assert log.active_segment.size == len(make_batch())


def test_batch_larger_than_max_message_bytes_is_refused(log_dir: str, clock: FakeClock) -> None:
    log = PartitionLog.open(log_dir, TopicConfig(max_message_bytes=200), clock=clock)
    log.append(make_batch(1, size=50))
    with pytest.raises(MessageTooLargeError, match="max_message_bytes"):
        log.append(make_batch(1, size=500))
    assert log.log_end_offset == 1
    log.close()


def test_follower_append_keeps_offsets_and_must_follow_on(log: PartitionLog) -> None:
    leader = bytearray(make_batch(2))
    leader[0:8] = (0).to_bytes(8, "big")
    leader[12:16] = (5).to_bytes(4, "big")
    info = log.append(bytes(leader), assign_offsets=False)
    assert (info.base_offset, info.next_offset) == (0, 2)
    assert RecordBatch.parse(log.read(0, 100).records).leader_epoch == 5
    with pytest.raises(InvalidRecordError, match="starts at offset 0"):
        log.append(bytes(leader), assign_offsets=False)


# --- rolls ----------------------------------------------------------------------------------


def test_segment_rolls_by_size_and_files_are_named_by_base_offset(
    log: PartitionLog, log_dir: str
) -> None:
    written = append_all(log, [make_batch(2, size=300, tag=i) for i in range(12)])
    assert len(log.segments) > 1
    for segment in log.segments[:-1]:
        assert segment.size <= 2048
    names = sorted(n for n in os.listdir(log_dir) if n.endswith(".log"))
    assert names == [f"{s.base_offset:020d}.log" for s in log.segments]
    for segment in log.segments:
        for suffix in (".index", ".timeindex"):
            assert os.path.exists(os.path.join(log_dir, f"{segment.base_offset:020d}{suffix}"))
    assert read_all(log) == b"".join(w.data for w in written)


def test_a_batch_larger_than_a_segment_gets_a_segment_of_its_own(log: PartitionLog) -> None:
    log.append(make_batch(1, size=100))
    log.append(make_batch(1, size=5000))
    log.append(make_batch(1, size=100))
    assert [s.next_offset - s.base_offset for s in log.segments] == [1, 1, 1]


def test_segment_rolls_by_age_with_the_clock(log_dir: str, clock: FakeClock) -> None:
    config = TopicConfig(segment_ms=1000)
    log = PartitionLog.open(log_dir, config, clock=clock)
    log.append(make_batch(timestamp=clock.now))
    clock.advance(999)
    log.append(make_batch(timestamp=clock.now))
    assert len(log.segments) == 1
    clock.advance(1)
    log.append(make_batch(timestamp=clock.now))
    assert [s.base_offset for s in log.segments] == [0, 2]
    log.close()


def test_roll_of_an_empty_segment_is_a_no_op(log: PartitionLog) -> None:
    first = log.roll()
    assert log.roll() is first
    log.append(make_batch())
    second = log.roll()
    assert second.base_offset == 1
    assert len(log.segments) == 2


# --- reads ----------------------------------------------------------------------------------


def test_read_returns_whole_batches_within_max_bytes(log: PartitionLog) -> None:
    written = append_all(log, [make_batch(2, size=40, tag=i) for i in range(4)])
    size = len(written[0].data)
    result = log.read(0, 2 * size + size // 2)
    assert result.records == written[0].data + written[1].data
    assert (result.first_offset, result.next_offset) == (0, 4)
    assert result.size == 2 * size


def test_read_inside_a_batch_starts_at_that_batch(log: PartitionLog) -> None:
    written = append_all(log, [make_batch(3, tag=i) for i in range(3)])
    result = log.read(4, 10_000)
    assert result.first_offset == 3
    assert next(iter(iter_batches(result.records))).base_offset == 3
    assert result.records == written[1].data + written[2].data


def test_read_returns_at_least_one_batch(log: PartitionLog) -> None:
    written = append_all(log, [make_batch(1, size=500), make_batch(1)])
    assert log.read(0, 1).records == written[0].data
    assert log.read(0, 0).records == written[0].data


def test_read_stays_within_one_segment(log: PartitionLog) -> None:
    append_all(log, [make_batch(1, size=700, tag=i) for i in range(6)])
    first = log.segments[0]
    result = log.read(0, 1 << 20)
    assert result.next_offset == first.next_offset
    assert result.size == first.size


def test_read_at_log_end_is_empty_and_beyond_is_out_of_range(log: PartitionLog) -> None:
    log.append(make_batch(2))
    empty = log.read(2, 100)
    assert empty.records == b""
    assert empty.size == 0
    assert (empty.first_offset, empty.next_offset, empty.log_end_offset) == (2, 2, 2)
    with pytest.raises(OffsetOutOfRangeError, match="outside the log"):
        log.read(3, 100)
    with pytest.raises(OffsetOutOfRangeError):
        log.read(-1, 100)
    with pytest.raises(ValueError, match="max_bytes"):
        log.read(0, -1)


def test_read_below_log_start_is_out_of_range(log: PartitionLog) -> None:
    append_all(log, [make_batch(1, size=700, tag=i) for i in range(6)])
    log.update_high_watermark(log.log_end_offset)
    log.truncate_fully_and_start_at(100)
    with pytest.raises(OffsetOutOfRangeError, match=r"\[100, 100\)"):
        log.read(99, 100)
    assert log.read(100, 100).records == b""


def test_read_up_to_max_offset(log: PartitionLog) -> None:
    written = append_all(log, [make_batch(2, tag=i) for i in range(3)])
    log.update_high_watermark(4)
    result = log.read(0, 1 << 20, max_offset=log.high_watermark)
    assert result.records == written[0].data + written[1].data
    assert result.high_watermark == 4
    assert result.log_end_offset == 6
    assert log.read(4, 100, max_offset=4).records == b""
    assert log.read(2, 100, max_offset=3).records == b""  # that batch ends past 3


def test_a_read_outlives_the_retention_of_its_segment(log: PartitionLog) -> None:
    written = append_all(log, [make_batch(1, size=700, tag=i) for i in range(6)])
    result = log.read(0, 100)
    log.update_high_watermark(log.log_end_offset)
    log.update_config(TopicConfig(retention_bytes=0, retention_ms=-1))
    assert log.delete_old_segments() > 0
    assert result.records == written[0].data
    with pytest.raises(OffsetOutOfRangeError):
        log.read(0, 100)


def test_high_watermark_is_clamped(log: PartitionLog) -> None:
    log.append(make_batch(3))
    assert log.update_high_watermark(10) == 3
    assert log.update_high_watermark(-5) == 0


# --- timestamps -----------------------------------------------------------------------------


def test_offset_for_timestamp_finds_first_record_at_or_after(log: PartitionLog) -> None:
    t = 1_000_000
    for i in range(20):
        log.append(make_batch(3, size=100, timestamp=t + 100 * i, ts_step=10, tag=i))
    assert len(log.segments) > 2
    found = log.offset_for_timestamp(t + 505)
    assert found is not None
    assert (found.offset, found.timestamp) == (16, t + 510)
    assert log.offset_for_timestamp(t - 1) == log.offset_for_timestamp(t)
    assert log.offset_for_timestamp(t + 100 * 19 + 21) is None


def test_offset_for_timestamp_with_unordered_timestamps(log: PartitionLog) -> None:
    stamps = [50, 10, 70, 20, 90, 30]
    for i, ts in enumerate(stamps):
        log.append(make_batch(1, timestamp=ts, tag=i))
    found = log.offset_for_timestamp(60)
    assert found is not None
    assert (found.offset, found.timestamp) == (2, 70)
    found = log.offset_for_timestamp(15)
    assert found is not None
    assert (found.offset, found.timestamp) == (0, 50)


# --- retention ------------------------------------------------------------------------------


def _aged_log(log_dir: str, clock: FakeClock, config: TopicConfig) -> PartitionLog:
    log = PartitionLog.open(log_dir, config, clock=clock)
    for i in range(10):
        log.append(make_batch(1, size=900, timestamp=clock.now, tag=i))
        clock.advance(1000)
    log.update_high_watermark(log.log_end_offset)
    return log


def test_retention_by_time_deletes_old_segments_never_the_active(
    log_dir: str, clock: FakeClock
) -> None:
    config = TopicConfig(segment_bytes=2048, retention_ms=DAY)
    log = _aged_log(log_dir, clock, config)
    assert len(log.segments) == 5
    assert log.delete_old_segments() == 0
    clock.advance(DAY - 9000 + 1)  # the first segment's newest batch (t0 + 1 s) is now older
    assert log.delete_old_segments() == 1
    assert log.log_start_offset == 2
    with pytest.raises(OffsetOutOfRangeError):
        log.read(0, 100)
    clock.advance(100 * DAY)
    assert log.delete_old_segments() == 3
    assert len(log.segments) == 1
    assert log.log_start_offset == 8
    assert sorted(os.listdir(log_dir)) == [
        "00000000000000000008.index",
        "00000000000000000008.log",
        "00000000000000000008.timeindex",
    ]
    log.close()


def test_retention_by_size(log_dir: str, clock: FakeClock) -> None:
    config = TopicConfig(segment_bytes=2048, retention_ms=-1, retention_bytes=4000)
    log = _aged_log(log_dir, clock, config)
    sizes = [s.size for s in log.segments]
    deleted = log.delete_old_segments()
    assert deleted > 0
    assert log.size_in_bytes >= 4000
    assert log.size_in_bytes - log.segments[0].size < 4000
    assert sum(sizes[deleted:]) == log.size_in_bytes
    log.close()


def test_retention_never_deletes_above_the_high_watermark(log_dir: str, clock: FakeClock) -> None:
    config = TopicConfig(segment_bytes=2048, retention_ms=0)
    log = _aged_log(log_dir, clock, config)
    log.update_high_watermark(3)
    assert log.delete_old_segments() == 1  # [0, 2) is below 3; [2, 4) is not
    assert log.log_start_offset == 2
    log.close()


def test_unlimited_retention_keeps_everything(log_dir: str, clock: FakeClock) -> None:
    config = TopicConfig(segment_bytes=2048, retention_ms=-1, retention_bytes=-1)
    log = _aged_log(log_dir, clock, config)
    clock.advance(1000 * DAY)
    assert log.delete_old_segments() == 0
    log.close()


# --- truncation -----------------------------------------------------------------------------


def test_truncate_to_removes_the_batch_holding_the_offset_and_after(log: PartitionLog) -> None:
    written = append_all(log, [make_batch(3, size=200, tag=i) for i in range(12)])
    log.update_high_watermark(log.log_end_offset)
    assert len(log.segments) > 2
    log.truncate_to(16)  # inside the batch [15, 18)
    assert log.log_end_offset == 15
    assert log.high_watermark == 15
    assert log.recovery_point <= 15
    assert read_all(log) == b"".join(w.data for w in written[:5])
    info = log.append(make_batch(1))
    assert info.base_offset == 15
    log.truncate_to(1000)  # past the end: nothing to do
    assert log.log_end_offset == 16


def test_truncate_to_a_segment_boundary_reactivates_the_previous_segment(
    log: PartitionLog,
) -> None:
    append_all(log, [make_batch(1, size=700, tag=i) for i in range(6)])
    boundary = log.segments[1].base_offset
    log.truncate_to(boundary)
    assert log.log_end_offset == boundary
    assert len(log.segments) == 1
    assert log.active_segment.active
    log.append(make_batch(1, size=700))
    assert [b.base_offset for b in disk_batches(log.directory)[0]] == list(range(boundary))
    assert [s.base_offset for s in log.segments] == [0, boundary]


def test_truncate_below_log_start_restarts_the_log_there(log: PartitionLog) -> None:
    append_all(log, [make_batch(1, size=700, tag=i) for i in range(3)])
    log.truncate_to(0)
    assert (log.log_start_offset, log.log_end_offset) == (0, 0)
    log.truncate_fully_and_start_at(42)
    assert (log.log_start_offset, log.log_end_offset, log.high_watermark) == (42, 42, 42)
    assert log.append(make_batch()).base_offset == 42


def test_truncate_to_negative_offset_is_refused(log: PartitionLog) -> None:
    with pytest.raises(ValueError, match="negative"):
        log.truncate_to(-1)


# --- reopening ------------------------------------------------------------------------------


@pytest.mark.parametrize("clean", [True, False])
def test_reopen_keeps_everything(log_dir: str, clock: FakeClock, clean: bool) -> None:
    config = TopicConfig(segment_bytes=2048, index_interval_bytes=100)
    log = PartitionLog.open(log_dir, config, clock=clock)
    written = append_all(log, [make_batch(2, size=150, tag=i, timestamp=i) for i in range(20)])
    end = log.log_end_offset
    log.close()
    again = PartitionLog.open(
        log_dir, config, clock=clock, clean_shutdown=clean, recovery_point=end if clean else 0
    )
    assert again.load_report.clean is clean
    assert again.load_report.recovered_segments == (0 if clean else len(again.segments))
    assert (again.log_start_offset, again.log_end_offset) == (0, end)
    assert read_all(again) == b"".join(w.data for w in written)
    found = again.offset_for_timestamp(7)
    assert found is not None
    assert found.offset == 14
    assert again.append(make_batch()).base_offset == end
    again.close()


def test_clean_reopen_gives_identical_indexes(log_dir: str, clock: FakeClock) -> None:
    config = TopicConfig(segment_bytes=2048, index_interval_bytes=100)
    log = PartitionLog.open(log_dir, config, clock=clock)
    append_all(log, [make_batch(2, size=150, tag=i, timestamp=i % 7) for i in range(20)])
    log.close()
    before = snapshot(log_dir)
    PartitionLog.open(log_dir, config, clock=clock).close()  # unclean: rebuilds every index
    assert snapshot(log_dir) == before


def test_reopen_restores_time_roll_and_retention_state(log_dir: str, clock: FakeClock) -> None:
    config = TopicConfig(segment_bytes=2048, segment_ms=10_000, retention_ms=50_000)
    log = PartitionLog.open(log_dir, config, clock=clock)
    for i in range(6):
        log.append(make_batch(1, size=700, timestamp=clock.now, tag=i))
        clock.advance(1000)
    log.close()
    log = PartitionLog.open(log_dir, config, clock=clock, clean_shutdown=True, recovery_point=6)
    log.update_high_watermark(log.log_end_offset)
    t0 = clock.now - 6000
    assert log.segments[0].max_timestamp == t0 + 1000
    clock.now = t0 + 4000 + 9999  # the active segment started with the batch at t0 + 4 s
    log.append(make_batch(1, timestamp=clock.now))
    assert log.active_segment.base_offset == 4
    clock.now = t0 + 4000 + 10_000
    log.append(make_batch(1, timestamp=clock.now))
    assert log.active_segment.base_offset == 7
    clock.now = t0 + 1000 + 50_001  # only the first segment's newest batch is too old
    assert log.delete_old_segments() == 1
    log.close()


def test_closed_log_refuses_work(log: PartitionLog) -> None:
    log.append(make_batch())
    log.close()
    log.close()  # idempotent
    with pytest.raises(StorageError, match="closed"):
        log.append(make_batch())
    with pytest.raises(StorageError, match="closed"):
        log.read(0, 10)


def test_open_ignores_and_cleans_stray_files(log_dir: str, clock: FakeClock) -> None:
    log = PartitionLog.open(log_dir, clock=clock)
    log.append(build_batch([(None, b"x")]))
    log.close()
    for name in ("00000000000000000005.index", "x.log.deleted", "junk.txt", "a.tmp"):
        with open(os.path.join(log_dir, name), "wb") as f:
            f.write(b"??")
    again = PartitionLog.open(log_dir, clock=clock)
    assert sorted(os.listdir(log_dir)) == [
        "00000000000000000000.index",
        "00000000000000000000.log",
        "00000000000000000000.timeindex",
        "junk.txt",
    ]
    assert again.log_end_offset == 1
    again.close()


def test_flush_moves_the_recovery_point_and_covers_rolled_segments(log: PartitionLog) -> None:
    assert not log.needs_background_flush
    append_all(log, [make_batch(1, size=700, tag=i) for i in range(4)])
    assert len(log.segments) == 2
    assert log.needs_background_flush  # a rolled segment is not on disk yet
    assert log.recovery_point == 0
    log.flush()
    assert log.recovery_point == log.log_end_offset == 4
    assert not log.needs_background_flush
    log.append(make_batch())
    assert not log.needs_background_flush  # only the active segment has unflushed data
    assert log.recovery_point == 4
