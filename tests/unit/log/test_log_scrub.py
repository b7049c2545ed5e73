"""The scrubber and the checks it runs for others (issue 12, point 3): damage no start-up scan
saw -- bits flipped after a clean shutdown -- is found in the background, off the event loop
and at a bounded rate, or when a read or a client meets it; it is then isolated, logged and
counted, never served again."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path

import pytest

from tidelog.server.log import Files, LogManager, OsFileSystem, PartitionLog, TopicPartition
from tidelog.server.log.faults import FaultyFileSystem
from tidelog.server.log.scrub import Pacer, Scrubber, ScrubStopped
from tidelog.wire.errors import CorruptBatchError, DamagedRangeError, StorageError
from tidelog.wire.records import iter_batches, stamp_batch

from .helpers import FakeClock, async_test, make_batch

TP = TopicPartition("events", 0)
CONFIG = {"segment_bytes": 3000, "index_interval_bytes": 150, "retention_ms": -1}


def filled(data: Path, batches: int = 40) -> list[tuple[int, int]]:
    """A cleanly closed topic of several segments; (base offset, next offset) per batch."""
    out = []
    with LogManager(data, clock=FakeClock(), scrub_bytes_per_second=0).open() as logs:
        logs.create_topic("events", 1, CONFIG)
        log = logs.get_log(TP)
        for i in range(batches):
            info = log.append(make_batch(1 + i % 3, size=150, tag=i))
            out.append((info.base_offset, info.next_offset))
    return out


def position_in(data: Path, offset: int) -> tuple[Path, int]:
    """The segment file holding ``offset`` and a byte inside that batch's records."""
    files = sorted((data / "events-0").glob("*.log"))
    path = [f for f in files if int(f.name[:20]) <= offset][-1]
    raw = path.read_bytes()
    for batch in iter_batches(raw):
        if batch.base_offset <= offset < batch.next_offset:
            start = raw.index(bytes(batch.buffer))
            return path, start + batch.size - 5
    raise AssertionError(offset)


def flip(path: Path, position: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[position] ^= 0x10
    path.write_bytes(bytes(raw))


def opened(data: Path, **kwargs: object) -> LogManager:
    return LogManager(data, clock=FakeClock(), scrub_bytes_per_second=0, **kwargs).open()  # type: ignore[arg-type]


@async_test
async def test_the_scrubber_isolates_a_bit_flip_made_after_a_clean_shutdown(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    batches = filled(tmp_path)
    base, end = batches[12]
    path, position = position_in(tmp_path, base)
    flip(path, position)
    caplog.set_level(logging.ERROR, logger="tidelog.server.log")
    logs = opened(tmp_path)
    log = logs.get_log(TP)
    # The read path does no per-batch check: before the scrub the corrupt batch is served
    # (the client's CRC check is the last line).
    with pytest.raises(CorruptBatchError):
        list(iter_batches(log.read(base, 1 << 20).records))

    assert await logs.scrubber.scrub_once() == len(log.segments)

    assert logs.scrubber.stats.damage_found == 1
    assert log.damage_found == 1
    with pytest.raises(DamagedRangeError) as caught:
        log.read(base, 1 << 20)
    assert (caught.value.start_offset, caught.value.next_offset) == (base, end)
    assert any("isolated damaged" in r.getMessage() for r in caplog.records)
    assert len(list(iter_batches(log.read(end, 1 << 20).records))) >= 1
    assert await logs.scrubber.scrub_once() == 0  # every segment is fresh now
    logs.close()


@async_test
async def test_a_scrub_reads_through_the_file_layer_on_a_worker_thread(tmp_path: Path) -> None:
    batches = filled(tmp_path)
    base, _ = batches[20]
    path, position = position_in(tmp_path, base)
    loop_thread = threading.get_ident()
    reader_threads: set[int] = set()

    class Recording(FaultyFileSystem):
        def pread(self, fd: int, size: int, offset: int) -> bytes:
            if path.name in self._path(fd):
                reader_threads.add(threading.get_ident())
            return super().pread(fd, size, offset)

    fs = Recording()
    fs.corrupt(path.name, position)  # the disk returns that byte wrong: only a CRC sees it
    logs = opened(tmp_path, fs=fs)
    reader_threads.clear()  # opening read on this thread; the scrub must not

    await logs.scrubber.scrub_once()

    assert reader_threads and loop_thread not in reader_threads
    with pytest.raises(DamagedRangeError):
        logs.get_log(TP).read(base, 1 << 20)
    logs.close()


def test_the_pacer_holds_reads_to_the_rate_and_stops_on_request() -> None:
    waits: list[float] = []

    class Stop(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            waits.append(timeout or 0.0)
            return self.is_set()

    stop = Stop()
    pace = Pacer(1_000_000, stop)
    pace(500_000)
    pace(250_000)
    assert waits == [0.5, 0.25]
    Pacer(0, stop)(10**9)  # unpaced: no wait
    assert waits == [0.5, 0.25]
    stop.set()
    with pytest.raises(ScrubStopped):
        pace(1)
    with pytest.raises(ScrubStopped):  # an unpaced check stops too
        Pacer(0, stop)(1)


@async_test
async def test_the_background_loop_scrubs_at_the_configured_rate(tmp_path: Path) -> None:
    batches = filled(tmp_path)
    base, _ = batches[5]
    path, position = position_in(tmp_path, base)
    flip(path, position)
    logs = LogManager(tmp_path, clock=FakeClock(), scrub_bytes_per_second=1 << 30).open()
    assert logs.scrubber.bytes_per_second == 1 << 30
    await logs.start()
    deadline = time.monotonic() + 30
    while logs.scrubber.stats.damage_found == 0:  # a condition polled with a deadline
        assert time.monotonic() < deadline, "the scrubber never found the damage"
        await asyncio.sleep(0.01)
    with pytest.raises(DamagedRangeError):
        logs.get_log(TP).read(base, 1 << 20)
    await logs.stop()


def read_from(log: PartitionLog, offset: int, end: int) -> None:
    """Read every offset in ``[offset, end)``."""
    for at in range(offset, end):
        log.read(at, 1 << 20)


@async_test
async def test_a_read_that_meets_damage_no_check_saw_is_retriable_and_gets_it_checked(
    tmp_path: Path,
) -> None:
    batches = filled(tmp_path)
    base, end = batches[1]  # in the first segment, before its last index entry
    path, inside = position_in(tmp_path, base)
    position = len(next(iter(iter_batches(path.read_bytes()))).buffer)
    raw = bytearray(path.read_bytes())
    raw[position : position + 12] = b"\xee" * 12  # its base offset and length
    raw[inside] ^= 0x10  # and its records: damaged for good
    path.write_bytes(bytes(raw))
    logs = opened(tmp_path)
    log = logs.get_log(TP)
    assert log.load_report.recovered_segments == 0  # a clean start did not see it

    with pytest.raises(StorageError) as caught:  # STORAGE_ERROR: the client retries
        read_from(log, base, end)
    assert caught.value.retriable

    assert await logs.scrubber.check_suspects() == 1
    with pytest.raises(DamagedRangeError) as refused:
        log.read(base, 1 << 20)
    assert (refused.value.start_offset, refused.value.next_offset) == (base, end)
    assert log.read(end, 1 << 20).first_offset == end
    logs.close()


@async_test
async def test_a_client_report_checks_those_bytes_and_isolates_damage_in_the_active_segment(
    tmp_path: Path,
) -> None:
    batches = filled(tmp_path)
    base, end = batches[-2]  # in the active segment
    path, position = position_in(tmp_path, base)
    flip(path, position)
    logs = opened(tmp_path)
    log = logs.get_log(TP)
    assert log.segment_for(base) is log.active_segment

    assert await logs.verify(TP, batches[0][0], 1 << 20) == []  # nothing wrong there
    (found,) = await logs.verify(TP, base, 1 << 20)

    assert (found.first_offset, found.next_offset) == (base, end)
    with pytest.raises(DamagedRangeError):
        log.read(base, 1 << 20)
    assert log.append(make_batch(1, tag=99)).base_offset == batches[-1][1]
    logs.close()


@async_test
async def test_a_disk_error_during_a_scrub_isolates_nothing(tmp_path: Path) -> None:
    filled(tmp_path)
    fs = FaultyFileSystem()
    logs = opened(tmp_path, fs=fs)
    fs.inject("pread", path_contains="events-0", times=None)

    await logs.scrubber.scrub_once()

    fs.clear()
    log = logs.get_log(TP)
    assert log.offline is None
    assert log.unreadable() == []
    assert logs.scrubber.stats.damage_found == 0
    logs.close()


@async_test
async def test_stopping_makes_a_running_check_give_up(tmp_path: Path) -> None:
    filled(tmp_path)
    logs = opened(tmp_path)
    entered = threading.Event()

    class Slow(OsFileSystem):
        def pread(self, fd: int, size: int, offset: int) -> bytes:
            entered.set()
            return super().pread(fd, size, offset)

    scrubber = Scrubber(
        lambda: logs.logs().values(),
        Files(Slow()),
        bytes_per_second=1,  # one byte a second: a check would take hours
        clock=FakeClock(),
    )
    task = asyncio.create_task(scrubber.run())
    assert await asyncio.to_thread(entered.wait, 30)
    scrubber.stop()
    await asyncio.wait_for(task, 30)
    assert scrubber.stats.checks == 0
    logs.close()


@async_test
async def test_a_damaged_range_is_restored_from_another_replicas_batches(tmp_path: Path) -> None:
    batches = filled(tmp_path)
    base, end = batches[12]
    path, position = position_in(tmp_path, base)
    before = path.read_bytes()
    flip(path, position)
    logs = opened(tmp_path)
    log = logs.get_log(TP)
    await logs.scrubber.scrub_once()
    assert log.damaged_ranges() == [(base, end)]
    # what another replica sends for those offsets: the batch before, them, and the one after
    replica = tmp_path / "replica"
    filled(replica)
    with opened(replica) as other:
        good = other.get_log(TP).read(batches[11][0], 1 << 20).records

    assert log.restore_range(base, end, good)

    assert path.read_bytes() == before
    assert log.damaged_ranges() == []
    assert not (tmp_path / "events-0" / "damaged-ranges.json").exists()
    assert next(b.base_offset for b in iter_batches(log.read(base, 1 << 20).records)) == base
    logs.close()


@async_test
async def test_batches_that_do_not_fit_a_damaged_range_leave_it_damaged(tmp_path: Path) -> None:
    batches = filled(tmp_path)
    base, end = batches[12]
    path, position = position_in(tmp_path, base)
    flip(path, position)
    logs = opened(tmp_path)
    log = logs.get_log(TP)
    await logs.scrubber.scrub_once()
    damaged = path.read_bytes()
    other = make_batch(end - base, size=40, tag=99)  # the right offsets, other bytes

    assert not log.restore_range(base, end, stamped(other, base))
    assert not log.restore_range(base, end, b"")

    assert path.read_bytes() == damaged
    assert log.damaged_ranges() == [(base, end)]
    logs.close()


def stamped(batch: bytes, base_offset: int) -> bytes:
    out = bytearray(batch)
    stamp_batch(out, base_offset)
    return bytes(out)
