"""LogSegment.read, Kafka's LogSegment.read(startOffset, maxSize, maxPosition, minOneMessage):
where a read starts, where max_bytes and max_position stop it, and the one repair of a stale
index (rebuilt once, the read retried once)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tidelog.server.log import (
    FetchData,
    Files,
    LogSegment,
    OsFileSystem,
    PartitionLog,
    TopicConfig,
)
from tidelog.server.log.index import OFFSET_ENTRY
from tidelog.wire.errors import StorageError
from tidelog.wire.layouts import BATCH_HEADER_SIZE

from .helpers import FakeClock, Written, append_all, make_batch

CONFIG = TopicConfig(segment_bytes=1 << 20, index_interval_bytes=300, retention_ms=-1)


class CorruptingFileSystem(OsFileSystem):
    """The real file system, except that a read of a ``.log`` file starting exactly at
    ``position`` returns zeros: a header walk started there finds no batch, as it does when an
    index entry points into the middle of one. ``hits`` counts those reads."""

    def __init__(self) -> None:
        self.position: int | None = None
        self.hits = 0
        self._logs: set[int] = set()

    def open(self, path: str, flags: int) -> int:
        fd = super().open(path, flags)
        if path.endswith(".log"):
            self._logs.add(fd)
        else:
            self._logs.discard(fd)
        return fd

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        data = super().pread(fd, size, offset)
        if fd in self._logs and offset == self.position:
            self.hits += 1
            return bytes(len(data))
        return data


@dataclass
class Segment:
    log: PartitionLog
    segment: LogSegment
    written: list[Written]

    def data(self, first: int, last: int) -> bytes:
        """The bytes of batches ``first`` to ``last`` (inclusive) as stored."""
        return b"".join(w.data for w in self.written[first : last + 1])

    def position(self, batch: int) -> int:
        return sum(len(w.data) for w in self.written[:batch])


def open_segment(directory: str, files: Files | None = None) -> Segment:
    """A log of one segment holding six batches of two records each (offsets 0..11), batch
    ``i`` holding ``10 * (i + 1)``-byte values, so no two batches have the same size."""
    log = PartitionLog.open(directory, CONFIG, clock=FakeClock(), files=files)
    batches = [make_batch(2, size=10 * (i + 1), tag=i) for i in range(6)]
    written = append_all(log, batches)
    assert len(log.segments) == 1
    return Segment(log, log.active_segment, written)


@pytest.fixture
def seg(log_dir: str) -> Iterator[Segment]:
    s = open_segment(log_dir)
    yield s
    s.log.abandon()


# --- where a read starts --------------------------------------------------------------------


def test_read_at_the_segment_base_starts_with_the_first_batch(seg: Segment) -> None:
    assert seg.segment.read(0, len(seg.written[0].data)) == FetchData(seg.data(0, 0), 0, 2)


def test_read_at_a_batch_boundary_starts_with_that_batch(seg: Segment) -> None:
    fetched = seg.segment.read(4, 1 << 20)
    assert fetched == FetchData(seg.data(2, 5), 4, 12)


def test_read_inside_a_batch_starts_with_the_batch_holding_the_offset(seg: Segment) -> None:
    fetched = seg.segment.read(5, 1 << 20)
    assert fetched == FetchData(seg.data(2, 5), 4, 12)


def test_read_at_or_after_the_segment_end_is_none(seg: Segment) -> None:
    assert seg.segment.read(12, 1 << 20) is None
    assert seg.segment.read(100, 1 << 20) is None


# --- where max_bytes stops it ---------------------------------------------------------------


def test_max_bytes_takes_the_whole_batches_that_fit(seg: Segment) -> None:
    exact = seg.position(4) - seg.position(1)  # batches 1, 2 and 3 exactly
    assert seg.segment.read(2, exact) == FetchData(seg.data(1, 3), 2, 8)
    assert seg.segment.read(2, exact - 1) == FetchData(seg.data(1, 2), 2, 6)


def test_max_bytes_below_the_first_batch_returns_it_with_min_one_batch(seg: Segment) -> None:
    first = seg.written[3]
    for max_bytes in (0, 1, len(first.data) - 1):
        fetched = seg.segment.read(6, max_bytes, min_one_batch=True)
        assert fetched == FetchData(first.data, 6, 8)


def test_max_bytes_below_the_first_batch_returns_nothing_without_min_one_batch(
    seg: Segment,
) -> None:
    first = seg.written[3]
    for max_bytes in (0, 1, len(first.data) - 1):
        fetched = seg.segment.read(7, max_bytes, min_one_batch=False)
        assert fetched == FetchData(b"", 7, 7)
    assert seg.segment.read(7, len(first.data), min_one_batch=False) == FetchData(first.data, 6, 8)


def test_negative_max_bytes_is_refused(seg: Segment) -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        seg.segment.read(0, -1)


# --- where max_position stops it ------------------------------------------------------------


def test_max_position_at_a_batch_boundary_ends_the_read_there(seg: Segment) -> None:
    fetched = seg.segment.read(0, 1 << 20, max_position=seg.position(3))
    assert fetched == FetchData(seg.data(0, 2), 0, 6)


def test_max_position_inside_a_batch_leaves_that_batch_out(seg: Segment) -> None:
    fetched = seg.segment.read(2, 1 << 20, max_position=seg.position(4) - 1)
    assert fetched == FetchData(seg.data(1, 2), 2, 6)


def test_max_position_before_the_first_batch_ends_returns_nothing(seg: Segment) -> None:
    # Even with min_one_batch: data past max_position (the high watermark) is never exposed.
    for max_position in (seg.position(2), seg.position(3) - 1):
        fetched = seg.segment.read(4, 1 << 20, max_position=max_position, min_one_batch=True)
        assert fetched == FetchData(b"", 4, 4)


def test_max_bytes_and_max_position_the_smaller_wins(seg: Segment) -> None:
    small = seg.position(2)  # batches 0 and 1
    assert seg.segment.read(0, small, max_position=seg.position(4)) == FetchData(
        seg.data(0, 1), 0, 4
    )
    assert seg.segment.read(0, 1 << 20, max_position=small) == FetchData(seg.data(0, 1), 0, 4)


# --- a stale index is rebuilt once, and the read retried once -------------------------------


def sealed_with_wrong_index(directory: str) -> tuple[Segment, bytes]:
    """A closed log whose first (sealed) segment's offset index file has a plausible entry
    pointing into the middle of batch 1; returns the log reopened, and the right index."""
    seg = open_segment(directory)
    seg.log.roll()
    index_path = seg.segment.offset_index.path
    seg.log.close()
    with open(index_path, "rb") as f:
        right = f.read()
    with open(index_path, "wb") as f:
        f.write(OFFSET_ENTRY.pack(2, seg.position(1) + 5))
    log = PartitionLog.open(directory, CONFIG, clock=FakeClock(), clean_shutdown=True)
    return Segment(log, log.segments[0], seg.written), right


def test_a_stale_offset_index_is_rebuilt_and_the_read_retried(log_dir: str) -> None:
    seg, right = sealed_with_wrong_index(log_dir)
    assert not seg.segment.active

    assert seg.segment.read(3, 1 << 20) == FetchData(seg.data(1, 5), 2, 12)
    with open(seg.segment.offset_index.path, "rb") as f:
        assert f.read() == right  # rebuilt from the log
    seg.log.close()


def test_a_lookup_that_stays_stale_is_retried_once_then_a_storage_error(log_dir: str) -> None:
    fs = CorruptingFileSystem()
    seg = open_segment(log_dir, Files(fs))
    entries = seg.segment.offset_index.entries()
    assert entries, "the test needs an index entry"
    relative, position = entries[0]
    fs.position = position  # every walk started at that entry finds zeros

    with pytest.raises(StorageError, match="does not match its rebuilt index"):
        seg.segment.read(seg.segment.base_offset + relative, 1 << 20)
    # The append's hint of where that batch starts (checked: zeros, so dropped), the first
    # walk, then one retry after the rebuild.
    assert fs.hits == 3
    seg.log.abandon()


# --- where the last read ended and the last append began: a hint, checked -------------------


class CountingFileSystem(OsFileSystem):
    """The real file system, noting the size of each read of a ``.log`` file."""

    def __init__(self) -> None:
        self.reads: list[int] = []
        self._logs: set[int] = set()

    def open(self, path: str, flags: int) -> int:
        fd = super().open(path, flags)
        if path.endswith(".log"):
            self._logs.add(fd)
        return fd

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        if fd in self._logs:
            self.reads.append(size)
        return super().pread(fd, size, offset)


def test_a_read_that_goes_on_where_the_last_ended_reads_one_header_not_a_walk(
    log_dir: str,
) -> None:
    fs = CountingFileSystem()
    seg = open_segment(log_dir, Files(fs))
    first = seg.segment.read(0, 1)  # one batch: offsets 0 and 1
    assert first == FetchData(seg.data(0, 0), 0, 2)
    for batch in range(1, 6):
        fs.reads.clear()
        fetched = seg.segment.read(2 * batch, 1)
        assert fetched == FetchData(seg.data(batch, batch), 2 * batch, 2 * batch + 2)
        # The hinted header alone (no chunk of headers walked from an index entry), then
        # the batch.
        assert fs.reads == [BATCH_HEADER_SIZE, len(seg.written[batch].data)]
    seg.log.abandon()


def test_hints_never_outlive_a_truncation(log_dir: str) -> None:
    seg = open_segment(log_dir)
    log = seg.log
    assert seg.segment.read(4, 1) == FetchData(seg.data(2, 2), 4, 6)  # hints for 4 and 6
    log.truncate_to(4)
    # Offsets 4 and 6 again, in batches of other sizes: where they start has moved.
    again = append_all(log, [make_batch(2, size=500 + 7 * i, tag=10 + i) for i in range(2)])
    assert seg.segment.read(4, 1).records == again[0].data
    assert seg.segment.read(6, 1).records == again[1].data
    assert seg.segment.read(2, 1 << 20).records == seg.data(1, 1) + again[0].data + again[1].data
    log.abandon()
