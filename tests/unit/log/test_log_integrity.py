"""Damage stays local (issue 12): a corrupt batch in flushed data is isolated and reported,
never a reason to delete what follows it; a missing segment is a reported gap with a specific
error that says where data resumes; framing the CRC proves intact is restored."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest

from tidelog.server.log import PartitionLog, TopicConfig
from tidelog.server.log.damage import DAMAGE_FILE
from tidelog.wire.errors import DamagedRangeError, MissingRangeError, StorageError
from tidelog.wire.layouts import (
    BATCH_BASE_OFFSET_OFFSET,
    BATCH_HEADER,
    BATCH_LENGTH_OFFSET,
    BATCH_MAGIC_OFFSET,
)

from .helpers import (
    FakeClock,
    Written,
    append_all,
    make_batch,
    read_all,
    read_around_damage,
    segment_files,
)

CONFIG = TopicConfig(segment_bytes=3000, index_interval_bytes=150, retention_ms=-1)
BATCH_LAST_DELTA_OFFSET = BATCH_HEADER.subcons[0].sizeof() + sum(
    f.sizeof() for f in BATCH_HEADER.subcons[1:6]
)  # base offset, length, leader epoch, magic, crc, attributes: then last_offset_delta


def written_log(directory: str, batches: int = 40, *, clean: bool) -> list[Written]:
    """A log of several segments; closed cleanly, or abandoned as by a crash."""
    log = PartitionLog.open(directory, CONFIG, clock=FakeClock(), name="events-0")
    written = append_all(log, [make_batch(1 + i % 3, size=150, tag=i) for i in range(batches)])
    if clean:
        log.close()
    else:
        log.abandon()
    return written


def reopen(directory: str, *, clean: bool, **kwargs: object) -> PartitionLog:
    return PartitionLog.open(
        directory,
        CONFIG,
        clock=FakeClock(),
        name="events-0",
        clean_shutdown=clean,
        **kwargs,  # type: ignore[arg-type]
    )


def base_of(path: str) -> int:
    return int(os.path.basename(path)[:20])


def batches_of(written: list[Written], path: str, files: list[str]) -> list[int]:
    """Indexes in ``written`` of the batches stored in segment file ``path``."""
    start = base_of(path)
    later = [base_of(f) for f in files if base_of(f) > start]
    end = min(later) if later else written[-1].next_offset
    return [i for i, w in enumerate(written) if start <= w.base_offset < end]


# --- point 1: a corrupt batch in older data is isolated -----------------------------------------


def test_a_corrupt_batch_in_an_older_segment_is_isolated_and_nothing_after_it_is_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = str(tmp_path)
    written = written_log(directory, clean=False)
    files = segment_files(directory)
    assert len(files) >= 5
    victim = files[1]
    index = batches_of(written, victim, files)[1]  # the segment's second batch
    bad = written[index]
    with open(victim, "r+b") as f:
        f.seek(len(written[index - 1].data) + 70)  # inside the second batch's records
        f.write(b"\xff\xff\xff")
    caplog.set_level(logging.WARNING, logger="tidelog.server.log")

    log = reopen(directory, clean=False)

    assert segment_files(directory) == files  # nothing deleted
    data, refused = read_around_damage(log)
    assert data == b"".join(w.data for i, w in enumerate(written) if i != index)
    assert refused == [(bad.base_offset, bad.next_offset, "DamagedRangeError")]
    with pytest.raises(DamagedRangeError) as caught:
        log.read(bad.base_offset, 1 << 20)
    message = caught.value.message
    assert "events-0" in message
    assert f"[{bad.base_offset}, {bad.next_offset})" in message
    assert f"the next data starts at offset {bad.next_offset}" in message
    assert [(d.first_offset, d.next_offset) for d in log.load_report.damaged] == [
        (bad.base_offset, bad.next_offset)
    ]
    assert log.damage_found == 1
    assert any(
        "isolated damaged" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records
    )
    assert log.log_end_offset == written[-1].next_offset
    assert log.append(make_batch(1, tag=999)).base_offset == written[-1].next_offset
    log.close()


def test_isolated_damage_is_still_refused_and_reported_after_a_clean_restart(
    tmp_path: Path,
) -> None:
    directory = str(tmp_path)
    written = written_log(directory, clean=False)
    files = segment_files(directory)
    index = batches_of(written, files[2], files)[0]
    with open(files[2], "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01\x02")
    reopen(directory, clean=False).close()
    assert os.path.exists(os.path.join(directory, DAMAGE_FILE))

    log = reopen(directory, clean=True, recovery_point=written[-1].next_offset)

    assert log.load_report.recovered_segments == 0
    with pytest.raises(DamagedRangeError):
        log.read(written[index].base_offset, 1 << 20)
    (unreadable,) = log.unreadable()
    w = written[index]
    assert (unreadable.start_offset, unreadable.end_offset, unreadable.kind) == (
        w.base_offset,
        w.next_offset,
        "damaged",
    )
    assert read_around_damage(log)[0] == b"".join(
        x.data for i, x in enumerate(written) if i != index
    )
    log.close()


@pytest.mark.parametrize(
    ("field", "byte", "mask"),
    [
        ("base offset", BATCH_BASE_OFFSET_OFFSET + 6, 0x40),
        ("length", BATCH_LENGTH_OFFSET + 1, 0x08),
        ("magic", BATCH_MAGIC_OFFSET, 0x80),
    ],
)
def test_framing_that_the_crc_proves_intact_is_restored(
    tmp_path: Path, field: str, byte: int, mask: int
) -> None:
    directory = str(tmp_path)
    written = written_log(directory, clean=False)
    files = segment_files(directory)
    original = Path(files[1]).read_bytes()
    index = batches_of(written, files[1], files)[1]
    position = len(written[index - 1].data)
    damaged = bytearray(original)
    damaged[position + byte] ^= mask
    Path(files[1]).write_bytes(bytes(damaged))

    log = reopen(directory, clean=False)

    assert log.load_report.repaired == 1
    assert log.load_report.damaged == ()
    assert read_all(log) == b"".join(w.data for w in written)
    assert Path(files[1]).read_bytes() == original  # written back
    log.close()


# --- point 2: a missing segment is a gap, reported, with a specific error ----------------------


@pytest.mark.parametrize("clean", [True, False], ids=["clean", "unclean"])
def test_a_missing_middle_segment_is_a_reported_gap_and_nothing_else_is_lost(
    tmp_path: Path, clean: bool, caplog: pytest.LogCaptureFixture
) -> None:
    directory = str(tmp_path)
    written = written_log(directory, clean=clean)
    files = segment_files(directory)
    victim = files[2]
    lost = batches_of(written, victim, files)
    os.remove(victim)
    start, end = written[lost[0]].base_offset, written[lost[-1]].next_offset
    caplog.set_level(logging.ERROR, logger="tidelog.server.log")

    log = reopen(directory, clean=clean)

    assert segment_files(directory) == [f for f in files if f != victim]
    assert log.load_report.missing == ((start, end),)
    assert any(f"offsets [{start}, {end}) are missing" in r.getMessage() for r in caplog.records)
    for offset in (start, (start + end) // 2, end - 1):
        with pytest.raises(MissingRangeError) as caught:
            log.read(offset, 1 << 20)
        assert (caught.value.start_offset, caught.value.next_offset) == (start, end)
        assert "events-0" in caught.value.message
        assert f"the next data starts at offset {end}" in caught.value.message
    data, refused = read_around_damage(log)
    assert data == b"".join(w.data for i, w in enumerate(written) if i not in lost)
    assert refused == [(start, end, "MissingRangeError")]
    assert [(u.start_offset, u.end_offset, u.kind) for u in log.unreadable()] == [
        (start, end, "missing")
    ]
    assert log.log_end_offset == written[-1].next_offset
    assert log.append(make_batch(1, tag=999)).base_offset == written[-1].next_offset
    log.close()


def test_a_segment_cut_short_in_the_middle_leaves_a_gap(tmp_path: Path) -> None:
    directory = str(tmp_path)
    written = written_log(directory, clean=True)
    files = segment_files(directory)
    inside = batches_of(written, files[1], files)
    keep = len(written[inside[0]].data)
    os.truncate(files[1], keep)  # only its first batch is left

    log = reopen(directory, clean=True)

    gap = (written[inside[1]].base_offset, written[inside[-1]].next_offset)
    assert log.load_report.missing == (gap,)
    with pytest.raises(MissingRangeError):
        log.read(gap[0], 1 << 20)
    log.close()


def test_overlapping_segments_are_refused_with_the_files_and_the_fix(tmp_path: Path) -> None:
    directory = str(tmp_path)
    written = written_log(directory, clean=True)
    files = segment_files(directory)
    inside = batches_of(written, files[1], files)
    copy = os.path.join(directory, f"{written[inside[1]].base_offset:020d}.log")
    shutil.copy(files[2], copy)  # a second copy, named as if it started inside files[1]

    with pytest.raises(StorageError) as caught:
        reopen(directory, clean=True)

    message = caught.value.message
    assert os.path.basename(files[1]) in message and os.path.basename(copy) in message
    assert "overlap" in message and "Move one of them out of" in message


def test_a_clean_start_checks_an_active_segment_whose_damage_only_a_later_walk_meets(
    tmp_path: Path,
) -> None:
    """The end is found from the last index entry, but the largest timestamp is walked from
    the first batch (every batch has the same one): that walk meets the damage."""
    directory = str(tmp_path)
    config = TopicConfig(index_interval_bytes=150, retention_ms=-1)
    log = PartitionLog.open(directory, config, clock=FakeClock(), name="events-0")
    written = append_all(log, [make_batch(2, size=150, tag=i) for i in range(12)])
    log.close()
    (path,) = segment_files(directory)
    position = sum(len(w.data) for w in written[:5])
    raw = bytearray(Path(path).read_bytes())
    raw[position : position + 12] = b"\xee" * 12  # the base offset and length of batch 5
    raw[position + 100] ^= 0x01  # and its records: not restorable
    Path(path).write_bytes(bytes(raw))

    end = written[-1].next_offset
    log = PartitionLog.open(
        directory, config, clock=FakeClock(), clean_shutdown=True, recovery_point=end
    )

    with pytest.raises(DamagedRangeError):
        log.read(written[5].base_offset, 1 << 20)
    assert read_around_damage(log)[0] == b"".join(w.data for i, w in enumerate(written) if i != 5)
    log.close()


@pytest.mark.parametrize("segment", [0, -1], ids=["sealed", "active"])
def test_a_time_index_entry_sent_past_its_segment_is_rebuilt(tmp_path: Path, segment: int) -> None:
    directory = str(tmp_path)
    written = written_log(directory, clean=True)
    index = Path(segment_files(directory)[segment]).with_suffix(".timeindex")
    raw = bytearray(index.read_bytes())
    raw[-4] ^= 0x01  # the last entry's relative offset, plus 2**24
    index.write_bytes(bytes(raw))

    log = reopen(directory, clean=True)

    assert log.segments[segment].max_timestamp == max(
        w.max_timestamp
        for w in written
        if log.segments[segment].base_offset <= w.base_offset
        and w.base_offset < log.segments[segment].next_offset
    )
    assert log.offset_for_timestamp(written[-1].max_timestamp) is not None
    assert read_all(log) == b"".join(w.data for w in written)
    log.close()


@pytest.mark.parametrize("segment", [1, -1], ids=["sealed", "active"])
def test_a_damaged_record_count_does_not_move_where_a_segment_ends(
    tmp_path: Path, segment: int
) -> None:
    """The last batch's last offset delta (under the CRC) says 2**20 more records: a header
    walk believes it, the CRC does not. (In the newest segment the damaged batch is a bad
    tail: cut, and its offsets, below the recovery point, a missing range.)"""
    directory = str(tmp_path)
    written = written_log(directory, clean=True)
    files = segment_files(directory)
    last = batches_of(written, files[segment], files)[-1]
    position = Path(files[segment]).stat().st_size - len(written[last].data)
    raw = bytearray(Path(files[segment]).read_bytes())
    raw[position + BATCH_LAST_DELTA_OFFSET + 1] ^= 0x10
    Path(files[segment]).write_bytes(bytes(raw))

    log = reopen(directory, clean=True, recovery_point=written[-1].next_offset)

    bad = (written[last].base_offset, written[last].next_offset)
    assert log.load_report.missing == (() if segment == 1 else (bad,))
    assert log.log_end_offset == written[-1].next_offset
    _, refused = read_around_damage(log)
    kind = "DamagedRangeError" if segment == 1 else "MissingRangeError"
    assert refused == [(*bad, kind)]
    log.close()
