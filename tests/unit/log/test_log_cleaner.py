"""The log cleaner: compaction against a reference model (Hypothesis), the key-map budget, the
I/O rate on an injected clock, producer state across a cleaning, policies, and what the
produce path refuses."""

from __future__ import annotations

import os
from collections.abc import Sequence

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tidelog.server.log import PartitionLog, TopicConfig
from tidelog.server.log.cleaner import CleanerSettings, LogCleaner
from tidelog.server.log.files import Files
from tidelog.server.log.offsetmap import ENTRY_BYTES
from tidelog.server.log.producers import ProducerStateTable
from tidelog.server.log.throttle import Throttler
from tidelog.wire.compaction import BatchRows, empty_batch, filter_batch
from tidelog.wire.compression import Compression
from tidelog.wire.errors import InvalidRecordError
from tidelog.wire.records import RecordBatch, RecordBatchBuilder, iter_batches

from .helpers import PROPERTY, FakeClock, read_all

RETENTION = 1000
KEYS = [b"a", b"b", b"c"]

Entry = tuple[int, bytes, bytes | None]


def compact_config(**overrides: object) -> TopicConfig:
    base: dict[str, object] = {
        "segment_bytes": 400,
        "index_interval_bytes": 100,
        "cleanup_policy": "compact",
        "delete_retention_ms": RETENTION,
        "min_cleanable_dirty_ratio": 0.0,
    }
    return TopicConfig(**(base | overrides))  # type: ignore[arg-type]


def append(log: PartitionLog, pairs: Sequence[tuple[bytes | None, bytes | None]], **kw: int) -> int:
    builder = RecordBatchBuilder(**kw)  # type: ignore[arg-type]
    for key, value in pairs:
        builder.append(value, key=key, timestamp=1)
    info = log.append(builder.build())
    log.update_high_watermark(log.log_end_offset)
    return info.base_offset


def entries(log: PartitionLog) -> list[Entry]:
    return [
        (r.offset, r.key, r.value)
        for batch in iter_batches(read_all(log))
        for r in batch.records()
        if r.key is not None
    ]


class Model:
    """Every record appended, and when a cleaning first passed each tombstone."""

    def __init__(self) -> None:
        self.appended: dict[int, tuple[bytes, bytes | None]] = {}
        self.passed: dict[int, int] = {}
        self.gone: set[int] = set()
        self.cleaned_to = 0

    def latest(self) -> dict[bytes, int]:
        out: dict[bytes, int] = {}
        for offset, (key, _) in sorted(self.appended.items()):
            out[key] = offset
        return out

    def cleaned(self, end: int, now: int) -> None:
        """A cleaning ran at ``now`` and covered the log up to ``end``."""
        for offset in self.passed:
            if now - self.passed[offset] >= RETENTION:
                self.gone.add(offset)
        for offset, (_, value) in self.appended.items():
            if value is None and offset < end and offset not in self.passed:
                self.passed[offset] = now
        self.cleaned_to = max(self.cleaned_to, end)

    def check(self, found: list[Entry]) -> None:
        offsets = [offset for offset, _, _ in found]
        assert offsets == sorted(set(offsets))
        for offset, key, value in found:
            assert self.appended[offset] == (key, value), f"offset {offset} changed"
        present = {offset for offset, _, _ in found}
        for key, offset in self.latest().items():
            is_tombstone = self.appended[offset][1] is None
            if is_tombstone and offset in self.gone:
                assert all(k != key for _, k, _ in found), f"{key!r} outlived its tombstone"
            else:
                assert offset in present, f"the latest record of {key!r} ({offset}) is gone"
        clean_keys = [key for offset, key, _ in found if offset < self.cleaned_to]
        assert len(clean_keys) == len(set(clean_keys)), "a key twice in the cleaned part"


operation = st.one_of(
    st.tuples(
        st.just("append"),
        st.lists(
            st.tuples(st.sampled_from(KEYS), st.one_of(st.none(), st.binary(max_size=30))),
            min_size=1,
            max_size=3,
        ),
    ),
    st.tuples(st.just("clean"), st.just([])),
    st.tuples(st.just("wait"), st.sampled_from([400, 1500])),
)


@PROPERTY
@given(ops=st.lists(operation, max_size=60), slots=st.integers(3, 12))
@example(  # a tombstone's whole life: passed, kept while its retention runs, then gone
    ops=[
        ("append", [(b"a", b"1"), (b"a", None)]),
        ("clean", []),
        ("wait", 400),
        ("append", [(b"b", b"2")]),
        ("clean", []),
        ("wait", 1500),
        ("append", [(b"c", b"3")]),
        ("clean", []),
    ],
    slots=3,
)
def test_compaction_matches_the_model(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[str, object]], slots: int
) -> None:
    clock = FakeClock()
    directory = str(tmp_path_factory.mktemp("c") / "t-0")
    log = PartitionLog.open(directory, compact_config(), clock=clock)
    cleaner = LogCleaner(lambda: [log], Files(), clock, CleanerSettings(slots * ENTRY_BYTES, 0))
    model = Model()
    try:
        for kind, arg in ops:
            if kind == "append":
                pairs = arg
                assert isinstance(pairs, list)
                first = append(log, pairs)
                for i, (key, value) in enumerate(pairs):
                    model.appended[first + i] = (key, value)
            elif kind == "wait":
                assert isinstance(arg, int)
                clock.advance(arg)
            else:
                log.roll()  # so what was appended is cleanable
                log.update_high_watermark(log.log_end_offset)
                result = cleaner.clean_now(log)
                if result is not None:
                    model.cleaned(result.end_offset, clock.now)
                model.check(entries(log))
        model.check(entries(log))
        log.close()
        reopened = PartitionLog.open(directory, compact_config(), clock=clock)
        assert reopened.load_report.damaged == ()
        model.check(entries(reopened))
        reopened.close()
    finally:
        log.abandon()


def test_a_dirty_part_with_more_keys_than_the_map_holds_is_cleaned_in_passes(
    log_dir: str, clock: FakeClock
) -> None:
    log = PartitionLog.open(log_dir, compact_config(segment_bytes=400), clock=clock)
    for round_ in range(4):
        for i in range(0, 40, 2):
            append(log, [(b"k%d" % i, b"%d" % round_), (b"k%d" % (i + 1), b"%d" % round_)])
    append(log, [(b"tail", b"x")])
    log.roll()
    log.update_high_watermark(log.log_end_offset)
    cleaner = LogCleaner(lambda: [log], Files(), clock, CleanerSettings(16 * ENTRY_BYTES, 0))
    ends = []
    while (result := cleaner.clean_now(log)) is not None:
        ends.append(result.end_offset)
    assert len(ends) > 2, "16 keys of 41 cannot be cleaned in one pass"
    assert ends == sorted(ends) and ends[-1] == log.log_end_offset
    found = entries(log)
    assert sorted(k for _, k, _ in found) == sorted({b"k%d" % i for i in range(40)} | {b"tail"})
    assert all(v == b"3" for _, k, v in found if k != b"tail")
    log.abandon()


def test_a_segment_of_thousands_of_small_batches_is_cleaned(log_dir: str, clock: FakeClock) -> None:
    """More kept batches in one write than a ``pwritev`` takes (IOV_MAX, 1,024): the share
    state and the group offsets write a small batch per change. The cleaning failed with
    EINVAL here, for ever, and the internal topic grew without bound."""
    log = PartitionLog.open(log_dir, compact_config(segment_bytes=1 << 20), clock=clock)
    for i in range(3000):
        append(log, [(b"k%d" % (i % 1500), b"%d" % i)])
    append(log, [(b"tail", b"x")])
    log.roll()
    log.update_high_watermark(log.log_end_offset)
    cleaner = LogCleaner(lambda: [log], Files(), clock)
    assert cleaner.clean_now(log) is not None
    found = entries(log)
    assert len(found) == 1501
    assert all(v == b"%d" % (int(k[1:]) + 1500) for _, k, v in found if k != b"tail")
    log.abandon()


def test_the_io_rate_holds_on_the_injected_clock(log_dir: str, clock: FakeClock) -> None:
    rate = 20_000
    moments: list[tuple[int, int]] = []

    def sleep(seconds: float) -> bool:
        clock.advance(max(int(seconds * 1000), 1))
        return False

    class Recording(Throttler):
        def take(self, size: int) -> None:
            super().take(size)
            moments.append((clock.now, size))  # when the bytes may move: after any wait

    log = PartitionLog.open(log_dir, compact_config(segment_bytes=4000), clock=clock)
    for i in range(300):
        append(log, [(b"k%d" % (i % 20), b"v" * 100)])
    log.roll()
    log.update_high_watermark(log.log_end_offset)
    throttle = Recording(rate, clock, sleep=sleep)
    cleaner = LogCleaner(lambda: [log], Files(), clock, throttle=throttle)
    start = clock.now
    assert cleaner.clean_now(log) is not None
    total = throttle.bytes_read + throttle.bytes_written
    assert throttle.bytes_read > 30_000 and throttle.bytes_written > 0
    assert total == sum(size for _, size in moments)
    # Per second of the clock: the rate, plus the bucket's burst, plus the one read or write
    # whose bytes were paid for before the second began.
    bound = rate + rate // 10 + max(size for _, size in moments)
    for window_start in range(start, clock.now, 250):
        window = sum(s for t, s in moments if window_start <= t < window_start + 1000)
        assert window <= bound, f"{window} bytes in the second from {window_start}"
    burst = rate // 10
    assert clock.now - start >= (total - burst) * 1000 // rate
    log.abandon()


def test_a_producers_last_batch_stays_so_its_state_survives(log_dir: str, clock: FakeClock) -> None:
    log = PartitionLog.open(log_dir, compact_config(), clock=clock)
    append(log, [(b"a", b"1"), (b"b", b"1")], producer_id=7, producer_epoch=0, base_sequence=0)
    append(log, [(b"a", b"2"), (b"b", b"2")], producer_id=8, producer_epoch=0, base_sequence=0)
    append(log, [(b"a", b"3"), (b"b", b"3")], producer_id=8, producer_epoch=0, base_sequence=2)
    append(log, [(b"a", b"4"), (b"b", b"4")])
    log.roll()
    log.update_high_watermark(log.log_end_offset)
    before = ProducerStateTable(60_000)
    before.replay(read_all(log), 0)
    assert LogCleaner(lambda: [log], Files(), clock).clean_now(log) is not None
    after = ProducerStateTable(60_000)
    after.replay(read_all(log), 0)
    last = {pid: entry.batches[-1] for pid, entry in after.entries()}
    assert last == {pid: entry.batches[-1] for pid, entry in before.entries()}
    batches = list(iter_batches(read_all(log)))
    # pid 7's last batch and pid 8's last stay (empty); pid 8's first is only a filler.
    assert [(b.base_offset, b.next_offset, b.record_count) for b in batches] == [
        (0, 2, 0),
        (2, 4, 0),
        (4, 6, 0),
        (6, 8, 2),
    ]
    assert [b.producer_id for b in batches] == [7, -1, 8, -1]
    log.abandon()


def test_compact_alone_keeps_old_segments_and_compact_delete_applies_retention(
    log_dir: str, clock: FakeClock
) -> None:
    for policy, kept in (("compact", True), ("compact,delete", False)):
        directory = f"{log_dir}-{policy}"
        log = PartitionLog.open(
            directory, compact_config(cleanup_policy=policy, retention_ms=10), clock=clock
        )
        for i in range(30):
            append(log, [(b"k%d" % i, b"v" * 50)])
        clock.advance(100)
        deleted = log.delete_old_segments()
        assert (deleted == 0) is kept
        log.abandon()


def test_a_compacted_topic_refuses_records_without_a_key(log_dir: str, clock: FakeClock) -> None:
    log = PartitionLog.open(log_dir, compact_config(), clock=clock)
    with pytest.raises(InvalidRecordError, match="needs a key"):
        append(log, [(b"a", b"1"), (None, b"2")])
    assert log.log_end_offset == 0
    compressed = RecordBatchBuilder(Compression.ZSTD)
    compressed.append(b"x" * 100)
    with pytest.raises(InvalidRecordError, match="needs a key"):
        log.append(compressed.build())
    plain = PartitionLog.open(log_dir + "-plain", TopicConfig(), clock=clock)
    append(plain, [(None, b"fine")])
    assert plain.log_end_offset == 1
    log.abandon()
    plain.abandon()


def test_a_producer_cannot_send_a_cleaned_batch(log_dir: str, clock: FakeClock) -> None:
    log = PartitionLog.open(log_dir, TopicConfig(), clock=clock)
    with pytest.raises(InvalidRecordError, match="compacted"):
        log.append(empty_batch(0, 3, base_timestamp=1, max_timestamp=1))
    log.abandon()


@pytest.mark.parametrize("codec", [Compression.NONE, Compression.ZSTD, Compression.LZ4])
def test_filtered_batches_keep_offsets_headers_codec_and_producer(codec: Compression) -> None:
    builder = RecordBatchBuilder(codec, producer_id=3, producer_epoch=1, base_sequence=40)
    for i in range(6):
        headers = {"h": b"%d" % i} if i % 2 else None
        builder.append(b"v%d" % i * 20, key=b"k%d" % i, headers=headers, timestamp=100 + i)
    raw = bytearray(builder.build())
    raw[:8] = (500).to_bytes(8, "big")
    batch = RecordBatch.parse(bytes(raw), verify_records=True)
    kept = RecordBatch.parse(filter_batch(batch, BatchRows(batch), [1, 4, 5]), verify_records=True)
    assert [(r.offset, r.key, r.headers, r.timestamp) for r in kept.records()] == [
        (501, b"k1", (("h", b"1"),), 101),
        (504, b"k4", (), 104),
        (505, b"k5", (("h", b"5"),), 105),
    ]
    assert (kept.base_offset, kept.next_offset, kept.compression) == (500, 506, batch.compression)
    assert (kept.producer_id, kept.producer_epoch, kept.base_sequence) == (3, 1, 40)
    again = RecordBatch.parse(filter_batch(kept, BatchRows(kept), [1]), verify_records=True)
    assert [r.offset for r in again.records()] == [504]
    assert [r.offset for r in again.records_as(type(again.records()[0]), (), 505)] == []
    assert [r.offset for r in kept.records_as(type(kept.records()[0]), (), 502)] == [504, 505]


def test_a_half_done_swap_is_finished_or_discarded_on_open(log_dir: str, clock: FakeClock) -> None:
    log = PartitionLog.open(log_dir, compact_config(), clock=clock)
    for i in range(60):
        append(log, [(b"k%d" % (i % 4), b"v%d" % i)])
    log.roll()
    log.update_high_watermark(log.log_end_offset)
    expected_before = entries(log)
    cleaner = LogCleaner(lambda: [log], Files(), clock)
    from tidelog.server.log.cleaner import plan_cleaning, run_cleaning
    from tidelog.server.log.offsetmap import OffsetMap

    plan = plan_cleaning(log, cleaner.state(log), clock.now, force=True)
    assert plan is not None
    result = run_cleaning(Files(), plan, OffsetMap(1 << 20), Throttler(0, clock))
    # A crash here: old segments all there, plus .swap files. Rename one old segment away
    # too, as a crash in the middle of the swap would.
    log.abandon()
    group, _, _ = result.groups[0]
    os.rename(group[-1].path, group[-1].path + ".deleted")
    reopened = PartitionLog.open(log_dir, compact_config(), clock=clock)
    assert not [n for n in os.listdir(log_dir) if n.endswith((".swap", ".cleaned", ".deleted"))]
    found = entries(reopened)
    latest = {k: (o, v) for o, k, v in expected_before}
    assert {k: (o, v) for o, k, v in found} == latest
    assert len(found) == 4
    assert reopened.load_report.missing == () and reopened.load_report.damaged == ()
    reopened.abandon()


def test_a_tombstone_goes_delete_retention_ms_after_the_cleaning_that_passed_it(
    log_dir: str, clock: FakeClock
) -> None:
    log = PartitionLog.open(log_dir, compact_config(), clock=clock)
    cleaner = LogCleaner(lambda: [log], Files(), clock, CleanerSettings(io_bytes_per_second=0))

    def clean_with_more_data(tag: bytes) -> list[Entry]:
        append(log, [(b"other", tag)])
        log.roll()
        log.update_high_watermark(log.log_end_offset)
        assert cleaner.clean_now(log) is not None
        return [e for e in entries(log) if e[1] == b"a"]

    append(log, [(b"a", b"1")])
    append(log, [(b"a", None)])
    assert clean_with_more_data(b"x") == [(1, b"a", None)]  # passed now: stays
    clock.advance(RETENTION - 1)
    assert clean_with_more_data(b"y") == [(1, b"a", None)]  # not yet
    clock.advance(1)
    assert clean_with_more_data(b"z") == []  # its retention is over
    log.abandon()


def test_a_log_is_cleaned_only_once_its_dirty_ratio_reaches_the_minimum(
    log_dir: str, clock: FakeClock
) -> None:
    log = PartitionLog.open(log_dir, compact_config(min_cleanable_dirty_ratio=0.5), clock=clock)
    cleaner = LogCleaner(lambda: [log], Files(), clock, CleanerSettings(io_bytes_per_second=0))

    def sealed(values: range) -> None:
        for i in values:
            append(log, [(b"k%d" % i, b"v" * 50)])  # distinct keys: cleaning keeps them all
        log.roll()
        log.update_high_watermark(log.log_end_offset)

    sealed(range(40))
    assert cleaner.clean_now(log, force=False) is not None  # all dirty: ratio 1.0
    sealed(range(40, 45))  # a little dirty data beside a lot of clean data
    assert cleaner.clean_now(log, force=False) is None, "cleaned below the minimum ratio"
    sealed(range(45, 120))  # now more dirty bytes than clean ones
    assert cleaner.clean_now(log, force=False) is not None
    assert [key for _, key, _ in entries(log)] == [b"k%d" % i for i in range(120)]
    log.abandon()


def test_segments_with_records_newer_than_min_compaction_lag_ms_are_not_cleaned(
    log_dir: str, clock: FakeClock
) -> None:
    lag = 5_000
    log = PartitionLog.open(log_dir, compact_config(min_compaction_lag_ms=lag), clock=clock)
    cleaner = LogCleaner(lambda: [log], Files(), clock, CleanerSettings(io_bytes_per_second=0))
    for i in range(20):
        builder = RecordBatchBuilder()
        builder.append(b"%d" % i, key=b"same", timestamp=clock.now)
        log.append(builder.build())
    log.roll()
    log.update_high_watermark(log.log_end_offset)
    assert cleaner.clean_now(log) is None  # forced, but every sealed segment is too young
    assert len(entries(log)) == 20
    clock.advance(lag - 1)
    assert cleaner.clean_now(log) is None
    assert len(entries(log)) == 20
    clock.advance(1)
    assert cleaner.clean_now(log) is not None
    assert entries(log) == [(19, b"same", b"19")]
    log.abandon()
