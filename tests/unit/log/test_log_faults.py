"""Disk faults (ENOSPC, EIO) through the injectable file layer: each surfaces as a
StorageError with a clear message, and the log is left consistent -- or offline until it is
reopened, never serving a half-written batch."""

from __future__ import annotations

import errno
import os
import sys

import pytest

from tidelog.server.log import (
    FaultyFileSystem,
    Files,
    LogOfflineError,
    OsFileSystem,
    PartitionLog,
    TopicConfig,
    storage_error,
)
from tidelog.wire.errors import StorageError

from .helpers import FakeClock, append_all, disk_batches, make_batch, read_all, segment_files

CONFIG = TopicConfig(segment_bytes=2048, index_interval_bytes=200, retention_ms=-1)


def open_log(directory: str, files: Files | None = None) -> PartitionLog:
    return PartitionLog.open(directory, CONFIG, clock=FakeClock(), files=files)


def test_storage_error_names_the_action_the_file_and_the_errno() -> None:
    error = storage_error(OSError(errno.ENOSPC, "No space left on device"), "write", "/d/x.log")
    assert error.retriable
    assert "cannot write /d/x.log: No space left on device [ENOSPC] (the disk is full)" in str(
        error
    )
    eio = storage_error(OSError(errno.EIO, "Input/output error"), "fsync", "/d/x.log")
    assert "[EIO]" in str(eio)
    assert "I/O error" in str(eio)


@pytest.mark.parametrize("partial", [0, 1, 30, 64])
def test_disk_full_mid_batch_is_an_error_and_the_batch_is_not_visible(
    log_dir: str, faulty: FaultyFileSystem, faulty_files: Files, partial: int
) -> None:
    log = open_log(log_dir, faulty_files)
    written = append_all(log, [make_batch(2, tag=i) for i in range(3)])
    size = log.active_segment.size
    faulty.inject("write", errno.ENOSPC, path_contains=".log", partial=partial)
    with pytest.raises(StorageError, match="disk is full"):
        log.append(make_batch(2, tag=99))
    assert log.offline is None
    assert log.log_end_offset == 6
    assert os.path.getsize(segment_files(log_dir)[-1]) == size  # the partial bytes are cut
    assert read_all(log) == b"".join(w.data for w in written)
    assert log.append(make_batch(1)).base_offset == 6  # the disk has room again
    log.close()
    again = open_log(log_dir)
    assert again.log_end_offset == 7
    assert again.load_report.truncated_bytes == 0
    again.close()


def test_when_cutting_a_partial_batch_fails_too_the_log_goes_offline(
    log_dir: str, faulty: FaultyFileSystem, faulty_files: Files
) -> None:
    log = open_log(log_dir, faulty_files)
    written = append_all(log, [make_batch(2, tag=i) for i in range(3)])
    faulty.inject("write", errno.EIO, path_contains=".log", partial=40)
    faulty.inject("truncate", errno.EIO, path_contains=".log")
    with pytest.raises(LogOfflineError, match="cutting the partial batch failed"):
        log.append(make_batch(2, tag=99))
    assert log.offline is not None
    for attempt in (lambda: log.append(make_batch()), lambda: log.read(0, 100), log.flush):
        with pytest.raises(LogOfflineError, match="offline"):
            attempt()
    log.abandon()
    # The 40 bytes are on disk; reopening recovers exactly the acknowledged batches.
    again = open_log(log_dir)
    assert again.load_report.truncated_bytes == 40
    assert read_all(again) == b"".join(w.data for w in written)
    assert again.append(make_batch()).base_offset == 6
    again.close()


def test_failed_fsync_takes_the_log_offline(
    log_dir: str, faulty: FaultyFileSystem, faulty_files: Files
) -> None:
    log = open_log(log_dir, faulty_files)
    append_all(log, [make_batch(2, tag=i) for i in range(3)])
    faulty.inject("fsync", errno.EIO, path_contains=".log")
    with pytest.raises(LogOfflineError, match=r"flush of .* failed"):
        log.flush()
    assert log.recovery_point == 0
    with pytest.raises(LogOfflineError):
        log.append(make_batch())
    log.abandon()
    again = open_log(log_dir)
    assert again.log_end_offset == 6
    again.close()


def test_failed_roll_leaves_the_log_usable(
    log_dir: str, faulty: FaultyFileSystem, faulty_files: Files
) -> None:
    log = open_log(log_dir, faulty_files)
    written = append_all(log, [make_batch(1, size=900, tag=i) for i in range(2)])
    next_segment = f"{log.log_end_offset:020d}"
    faulty.inject("open", errno.ENOSPC, path_contains=next_segment + ".index")
    with pytest.raises(StorageError, match="disk is full"):
        log.append(make_batch(1, size=900, tag=2))
    assert len(log.segments) == 1
    assert not any(next_segment in name for name in os.listdir(log_dir))
    written += append_all(log, [make_batch(1, size=900, tag=3)])
    assert len(log.segments) == 2
    assert read_all(log) == b"".join(w.data for w in written)
    log.close()


def test_failed_index_write_at_roll_leaves_the_log_usable(
    log_dir: str, faulty: FaultyFileSystem, faulty_files: Files
) -> None:
    log = open_log(log_dir, faulty_files)
    written = append_all(log, [make_batch(1, size=900, tag=i) for i in range(2)])
    faulty.inject("write", errno.ENOSPC, path_contains=".timeindex")
    with pytest.raises(StorageError, match="disk is full"):
        log.append(make_batch(1, size=900, tag=2))
    assert len(os.listdir(log_dir)) == 3  # the next segment's files are gone again
    assert log.offline is None
    assert len(log.segments) == 1
    written += append_all(log, [make_batch(1, size=900, tag=3)])
    assert read_all(log) == b"".join(w.data for w in written)
    log.close()
    again = open_log(log_dir)
    assert read_all(again) == b"".join(w.data for w in written)
    again.close()


def test_read_error_is_reported_and_the_log_stays_online(
    log_dir: str, faulty: FaultyFileSystem, faulty_files: Files
) -> None:
    log = open_log(log_dir, faulty_files)
    written = append_all(log, [make_batch(2, tag=i) for i in range(3)])
    faulty.inject("pread", errno.EIO, path_contains=".log")
    with pytest.raises(StorageError, match=r"cannot read .*\[EIO\]"):
        log.read(2, 1000)
    assert log.offline is None
    assert read_all(log) == b"".join(w.data for w in written)
    log.close()


def test_failed_close_reports_the_error(
    log_dir: str, faulty: FaultyFileSystem, faulty_files: Files
) -> None:
    log = open_log(log_dir, faulty_files)
    append_all(log, [make_batch(2, tag=i) for i in range(3)])
    faulty.inject("fsync", errno.EIO)
    with pytest.raises(StorageError):
        log.close()
    assert log.closed


def test_failed_retention_delete_keeps_the_segment(
    log_dir: str, faulty: FaultyFileSystem, faulty_files: Files, clock: FakeClock
) -> None:
    config = TopicConfig(segment_bytes=2048, retention_ms=-1, retention_bytes=0)
    log = PartitionLog.open(log_dir, config, clock=clock, files=faulty_files)
    written = append_all(log, [make_batch(1, size=900, tag=i) for i in range(6)])
    log.update_high_watermark(log.log_end_offset)
    faulty.inject("rename", errno.EIO, path_contains="00000000000000000002.log")
    with pytest.raises(StorageError, match="cannot rename"):
        log.delete_old_segments()
    assert log.log_start_offset == 2  # the first segment went, the second stayed
    assert read_all(log) == b"".join(w.data for w in written[2:])
    assert len(disk_batches(log_dir)) == len(log.segments)
    assert log.delete_old_segments() == 1
    log.close()


def test_fault_rules_skip_and_count(faulty: FaultyFileSystem, tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "f")
    fault = faulty.inject("open", errno.EIO, path_contains="f", after=1, times=2)
    faulty.close(faulty.open(path, os.O_RDWR | os.O_CREAT))
    for _ in range(2):
        with pytest.raises(OSError, match="Input/output"):
            faulty.open(path, os.O_RDONLY)
    faulty.close(faulty.open(path, os.O_RDONLY))
    assert fault.hits == 2
    with pytest.raises(ValueError, match="unknown operation"):
        faulty.inject("explode")


class RecordingFileSystem(FaultyFileSystem):
    """Records every writeback request as (path, offset, length)."""

    def __init__(self) -> None:
        super().__init__()
        self.writebacks: list[tuple[str, int, int]] = []

    def start_writeback(self, fd: int, offset: int, length: int) -> None:
        self.writebacks.append((self._path(fd), offset, length))
        super().start_writeback(fd, offset, length)


@pytest.mark.parametrize("writeback_bytes", [1000, 2500])
def test_writeback_starts_every_writeback_bytes_over_contiguous_ranges(
    log_dir: str, writeback_bytes: int
) -> None:
    fs = RecordingFileSystem()
    config = TopicConfig(segment_bytes=8000, writeback_bytes=writeback_bytes, retention_ms=-1)
    log = PartitionLog.open(log_dir, config, clock=FakeClock(), files=Files(fs))
    append_all(log, [make_batch(2, size=100, tag=i) for i in range(60)])
    assert fs.writebacks, "no writeback was started"
    by_file: dict[str, list[tuple[int, int]]] = {}
    for path, offset, length in fs.writebacks:
        assert path.endswith(".log")
        by_file.setdefault(path, []).append((offset, length))
    for path, ranges in by_file.items():
        position = 0
        for offset, length in ranges:
            assert offset == position, f"{path}: a gap or overlap before {offset}"
            assert length >= writeback_bytes
            position += length
        assert position <= os.path.getsize(path)
    log.close()


def test_writeback_zero_leaves_it_to_the_kernel(log_dir: str) -> None:
    fs = RecordingFileSystem()
    config = TopicConfig(writeback_bytes=0)
    log = PartitionLog.open(log_dir, config, clock=FakeClock(), files=Files(fs))
    append_all(log, [make_batch(2, size=1000, tag=i) for i in range(20)])
    assert fs.writebacks == []
    log.close()


def test_a_failed_writeback_loses_nothing_and_is_reported_in_the_log(
    log_dir: str, faulty: FaultyFileSystem, faulty_files: Files, caplog: pytest.LogCaptureFixture
) -> None:
    config = TopicConfig(writeback_bytes=500, retention_ms=-1)
    log = PartitionLog.open(log_dir, config, clock=FakeClock(), files=faulty_files)
    faulty.inject("writeback", errno.EIO, path_contains=".log", times=None)
    with caplog.at_level("WARNING", logger="tidelog.server.log"):
        written = append_all(log, [make_batch(2, size=200, tag=i) for i in range(10)])
    assert "cannot start writeback of" in caplog.text
    assert log.offline is None
    assert read_all(log) == b"".join(w.data for w in written)
    log.close()
    again = PartitionLog.open(log_dir, config, clock=FakeClock())
    assert again.log_end_offset == 20
    again.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sync_file_range is Linux's")
def test_the_real_writeback_request_reports_its_errno() -> None:
    with pytest.raises(OSError, match="Bad file descriptor") as raised:
        OsFileSystem().start_writeback(-1, 0, 4096)
    assert raised.value.errno == errno.EBADF
    error = storage_error(raised.value, "start writeback of", "/d/x.log")
    assert "cannot start writeback of /d/x.log" in str(error)
    assert "[EBADF]" in str(error)
