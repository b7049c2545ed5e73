"""Recovery: a torn tail is cut to exactly the whole batches, damage before it is isolated
(never cut), framing the CRC proves intact is restored, damaged or missing indexes are rebuilt,
and a corrupt batch is never served."""

from __future__ import annotations

import logging
import os
import random
import tempfile

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidelog.server.log import PartitionLog, TopicConfig
from tidelog.server.log.index import OFFSET_ENTRY, TIME_ENTRY
from tidelog.wire.layouts import BATCH_CRC_OFFSET, BATCH_LEADER_EPOCH_OFFSET

from .helpers import (
    PROPERTY,
    FakeClock,
    Written,
    append_all,
    disk_batches,
    make_batch,
    read_all,
    read_around_damage,
    segment_files,
    snapshot,
)

CONFIG = TopicConfig(segment_bytes=3000, index_interval_bytes=150, retention_ms=-1)


def crashed_log(directory: str, batches: int = 30, seed: int = 0) -> list[Written]:
    """A log whose process "died": files as written, nothing flushed or closed cleanly."""
    rng = random.Random(seed)
    log = PartitionLog.open(directory, CONFIG, clock=FakeClock())
    written = append_all(
        log,
        [
            make_batch(rng.randint(1, 4), size=rng.randint(10, 300), tag=i, timestamp=i)
            for i in range(batches)
        ],
    )
    log.abandon()
    return written


def reopen(directory: str, **kwargs: object) -> PartitionLog:
    return PartitionLog.open(directory, CONFIG, clock=FakeClock(), **kwargs)  # type: ignore[arg-type]


def assert_valid_prefix(log: PartitionLog, written: list[Written], keep: int) -> None:
    """The log holds exactly the first ``keep`` batches, byte for byte, ends on a batch
    boundary, and appends continue right after them."""
    expected = b"".join(w.data for w in written[:keep])
    on_disk = [bytes(b.buffer) for batches in disk_batches(log.directory) for b in batches]
    assert b"".join(on_disk) == expected  # disk_batches checks every CRC and boundary
    assert read_all(log) == expected
    end = written[keep - 1].next_offset if keep else 0
    assert log.log_end_offset == end
    assert log.append(make_batch(1, tag=999)).base_offset == end


def active_batches(written: list[Written], directory: str) -> tuple[str, int, list[int]]:
    """The active segment's path, the index in ``written`` of its first batch, and the
    positions of its batches."""
    path = segment_files(directory)[-1]
    base = int(os.path.basename(path)[:20])
    first = next(i for i, w in enumerate(written) if w.base_offset == base)
    positions, pos = [], 0
    for w in written[first:]:
        positions.append(pos)
        pos += len(w.data)
    return path, first, positions


@PROPERTY
@given(seed=st.integers(0, 2**16), cut=st.floats(0, 1))
def test_torn_tail_keeps_exactly_the_whole_batches(seed: int, cut: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        written = crashed_log(tmp, seed=seed)
        path, first, positions = active_batches(written, tmp)
        size = os.path.getsize(path)
        at = int(cut * size)
        os.truncate(path, at)
        whole = sum(1 for i, p in enumerate(positions) if p + len(written[first + i].data) <= at)
        log = reopen(tmp)
        boundary = positions[whole] if whole < len(positions) else size
        assert log.load_report.truncated_bytes == at - boundary
        assert_valid_prefix(log, written, first + whole)
        log.close()


@PROPERTY
@given(seed=st.integers(0, 2**16), start=st.floats(0, 1), extra=st.integers(0, 500))
def test_garbage_over_the_tail_is_cut(seed: int, start: float, extra: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        written = crashed_log(tmp, seed=seed)
        path, first, positions = active_batches(written, tmp)
        size = os.path.getsize(path)
        at = int(start * size)
        rng = random.Random(seed)
        garbage = rng.randbytes(size - at + extra)
        with open(path, "r+b") as f:
            f.seek(at)
            f.write(garbage)
        whole = sum(1 for i, p in enumerate(positions) if p + len(written[first + i].data) <= at)
        log = reopen(tmp)
        assert log.load_report.truncated_bytes > 0 or (at == size and extra == 0)
        assert_valid_prefix(log, written, first + whole)
        log.close()


@PROPERTY
@given(seed=st.integers(0, 2**16), last=st.integers(1, 8), flips=st.integers(1, 4))
def test_bit_flips_in_the_last_batches_lose_only_the_damaged_ones(
    seed: int, last: int, flips: int
) -> None:
    """One flipped bit in each of some batches that are not next to each other (closer
    faults can leave a batch's offsets undecidable: see ``check.py``). A flip in what the CRC
    covers (or in the CRC) damages a batch: isolated if a good batch follows, cut if none
    does (a torn tail). A flip in the framing before the CRC (base offset, length, magic) is
    restored: the CRC proves the batch intact."""
    with tempfile.TemporaryDirectory() as tmp:
        written = crashed_log(tmp, seed=seed)
        path, first, positions = active_batches(written, tmp)
        rng = random.Random(seed)
        count = len(positions)
        candidates = list(range(max(count - last, 0), count))
        targets: list[int] = []
        for i in rng.sample(candidates, min(flips, len(candidates))):
            if all(abs(i - j) > 1 for j in targets):
                targets.append(i)
        damaged = set()
        with open(path, "r+b") as f:
            for i in targets:
                size = len(written[first + i].data)
                # The leader epoch sits outside the CRC by design (stamped in place); its
                # damage is covered by test_damaged_leader_epoch_is_restored_when_implausible.
                byte = rng.choice(
                    [b for b in range(size) if not 12 <= b < BATCH_LEADER_EPOCH_OFFSET + 4]
                )
                f.seek(positions[i] + byte)
                value = f.read(1)[0]
                f.seek(positions[i] + byte)
                f.write(bytes([value ^ (1 << rng.randrange(8))]))
                if byte >= BATCH_CRC_OFFSET:
                    damaged.add(first + i)
        log = reopen(tmp)
        kept = len(written)
        while kept > 0 and kept - 1 in damaged:
            kept -= 1  # a damaged tail: cut
        data, refused = read_around_damage(log)
        assert data == b"".join(w.data for i, w in enumerate(written[:kept]) if i not in damaged)
        expected_refused = []
        for i in sorted(damaged):
            if i >= kept:
                continue
            if expected_refused and expected_refused[-1][1] == written[i].base_offset:
                expected_refused[-1] = (expected_refused[-1][0], written[i].next_offset)
            else:
                expected_refused.append((written[i].base_offset, written[i].next_offset))
        assert [(a, b) for a, b, _ in refused] == expected_refused
        end = written[kept - 1].next_offset if kept else 0
        assert log.log_end_offset == end
        assert log.append(make_batch(1, tag=999)).base_offset == end
        log.close()


@pytest.mark.parametrize(
    ("epoch", "batch", "restored"),
    [
        (-5, -2, True),  # below -1: impossible
        (-(2**31), -1, True),
        (3, -2, True),  # above the next batch's epoch (-1): restored to the one before
        (3, -1, False),  # a rise on the last batch is plausible: not detectable, kept
    ],
)
def test_damaged_leader_epoch_is_restored_when_implausible(
    tmp_path: object, epoch: int, batch: int, restored: bool
) -> None:
    directory = str(tmp_path)
    written = crashed_log(directory, batches=12)
    path, _first, positions = active_batches(written, directory)
    with open(path, "r+b") as f:
        f.seek(positions[batch] + BATCH_LEADER_EPOCH_OFFSET)
        f.write(epoch.to_bytes(4, "big", signed=True))
    if not restored:
        w = written[batch]
        stamped = w.data[:BATCH_LEADER_EPOCH_OFFSET] + epoch.to_bytes(4, "big", signed=True)
        written[batch] = Written(
            w.base_offset, w.next_offset, stamped + w.data[16:], w.max_timestamp
        )
    log = reopen(directory)
    assert_valid_prefix(log, written, len(written))
    assert log.load_report.repaired == (1 if restored else 0)
    log.close()


def test_recovery_log_line_says_how_much_was_cut(
    tmp_path: object, caplog: pytest.LogCaptureFixture
) -> None:
    directory = str(tmp_path)
    written = crashed_log(directory, batches=10)
    path = segment_files(directory)[-1]
    size = os.path.getsize(path)
    os.truncate(path, size - 7)
    caplog.set_level(logging.WARNING, logger="tidelog.server.log")
    log = reopen(directory)
    last = len(written[-1].data)
    assert log.load_report.truncated_bytes == last - 7
    (record,) = [r for r in caplog.records if "recovery cut" in r.getMessage()]
    assert f"recovery cut {last - 7} bytes from {os.path.basename(path)}" in record.getMessage()
    assert "torn write" in record.getMessage()
    log.close()


def test_only_segments_from_the_recovery_point_are_scanned(tmp_path: object) -> None:
    directory = str(tmp_path)
    log = PartitionLog.open(directory, CONFIG, clock=FakeClock())
    append_all(log, [make_batch(2, size=200, tag=i) for i in range(30)])
    log.flush()
    point = log.recovery_point
    assert point == log.log_end_offset
    log.abandon()
    again = reopen(directory, recovery_point=point)
    assert again.load_report.recovered_segments == 1
    assert again.load_report.rebuilt_from == again.active_segment.base_offset
    again.close()


@pytest.mark.parametrize(
    "damage",
    ["delete", "garbage", "partial-entry", "plausible-but-wrong", "empty-timeindex"],
)
def test_damaged_or_missing_indexes_are_rebuilt(tmp_path: object, damage: str) -> None:
    directory = str(tmp_path)
    log = PartitionLog.open(directory, CONFIG, clock=FakeClock())
    written = append_all(
        log, [make_batch(2, size=120, tag=i, timestamp=1000 + 10 * i) for i in range(40)]
    )
    end = log.log_end_offset
    log.close()
    original = snapshot(directory)
    second = segment_files(directory)[1][: -len(".log")]
    index, time_index = second + ".index", second + ".timeindex"
    if damage == "delete":
        os.remove(index)
        os.remove(time_index)
    elif damage == "garbage":
        with open(index, "wb") as f:
            f.write(random.Random(1).randbytes(64))
        with open(time_index, "wb") as f:
            f.write(random.Random(2).randbytes(36))
    elif damage == "partial-entry":
        with open(index, "ab") as f:
            f.write(b"\x01\x02\x03")
    elif damage == "plausible-but-wrong":
        with open(index, "wb") as f:
            f.write(OFFSET_ENTRY.pack(1, 7) + OFFSET_ENTRY.pack(2, 9))
        with open(time_index, "wb") as f:
            f.write(TIME_ENTRY.pack(1005, 1) + TIME_ENTRY.pack(999_999, 2))
    else:
        open(time_index, "wb").close()
    log = reopen(directory, clean_shutdown=True, recovery_point=end)
    assert log.load_report.recovered_segments == 0
    assert read_all(log, max_bytes=300) == b"".join(w.data for w in written)
    for offset in range(end):
        first = log.read(offset, 0)
        assert first.first_offset <= offset < first.next_offset
    for i, w in enumerate(written):
        found = log.offset_for_timestamp(1000 + 10 * i)
        assert found is not None
        assert found.offset == w.base_offset
    assert log.segments[1].max_timestamp == max(
        w.max_timestamp for w in written if w.base_offset < log.segments[2].base_offset
    )
    log.close()
    assert snapshot(directory) == original  # rebuilt byte-identical
