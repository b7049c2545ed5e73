"""Group commit: concurrent callers share one fsync, which runs off the event loop; nobody is
released by an fsync that started before their data was written."""

from __future__ import annotations

import asyncio
import errno
import os
import stat
import threading

import pytest

from tidelog.server.log import (
    Files,
    GroupCommitter,
    LogOfflineError,
    OsFileSystem,
    PartitionLog,
    TopicConfig,
)
from tidelog.wire.errors import StorageError

from .helpers import FakeClock, async_test, make_batch

WAIT = 10.0
"""Seconds a test waits for an event before failing (a bound, never a sleep)."""


class GatedFileSystem(OsFileSystem):
    """An fsync of a file announces itself and then waits until the test lets it through."""

    def __init__(self) -> None:
        self.entered = threading.Semaphore(0)
        self.gate = threading.Semaphore(0)
        self.threads: list[int] = []
        self.fail = False

    def fsync(self, fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            super().fsync(fd)  # directory entries are not what these tests are about
            return
        self.threads.append(threading.get_ident())
        self.entered.release()
        if not self.gate.acquire(timeout=WAIT):
            raise AssertionError("the test never released an fsync")
        if self.fail:
            raise OSError(errno.EIO, "Input/output error")
        super().fsync(fd)

    async def fsync_started(self) -> None:
        assert await asyncio.to_thread(self.entered.acquire, True, WAIT)

    def release(self, count: int = 1) -> None:
        for _ in range(count):
            self.gate.release()


def open_gated(directory: str) -> tuple[PartitionLog, GatedFileSystem, GroupCommitter]:
    fs = GatedFileSystem()
    log = PartitionLog.open(directory, TopicConfig(), clock=FakeClock(), files=Files(fs))
    return log, fs, GroupCommitter(log)


@async_test
async def test_callers_after_an_fsync_started_wait_for_the_next_one(log_dir: str) -> None:
    log, fs, committer = open_gated(log_dir)
    a = log.append(make_batch(1, tag=1))
    first = asyncio.create_task(committer.flush_until(a.next_offset))
    await fs.fsync_started()
    b = log.append(make_batch(1, tag=2))
    c = log.append(make_batch(1, tag=3))
    second = asyncio.create_task(committer.flush_until(b.next_offset))
    third = asyncio.create_task(committer.flush_until(c.next_offset))
    fs.release()
    await first
    assert log.recovery_point == a.next_offset
    assert not second.done()
    assert not third.done()
    await fs.fsync_started()
    fs.release()
    await asyncio.gather(second, third)
    assert log.recovery_point == c.next_offset
    assert committer.fsyncs == 2
    log.abandon()


@async_test
async def test_sixty_four_writers_share_two_fsyncs(log_dir: str) -> None:
    log, fs, committer = open_gated(log_dir)

    async def writer(tag: int) -> int:
        info = log.append(make_batch(1, tag=tag))
        await committer.flush_until(info.next_offset)
        assert log.recovery_point >= info.next_offset
        return info.base_offset

    first = asyncio.create_task(writer(0))
    await fs.fsync_started()
    others = [asyncio.create_task(writer(i)) for i in range(1, 64)]
    await asyncio.sleep(0)  # let every writer append (no timing: they run to their await)
    assert log.log_end_offset == 64
    fs.release()
    await fs.fsync_started()
    fs.release()
    offsets = await asyncio.gather(first, *others)
    assert sorted(offsets) == list(range(64))
    assert committer.fsyncs == 2
    log.abandon()


@async_test
async def test_fsync_runs_off_the_event_loop(log_dir: str) -> None:
    log, fs, committer = open_gated(log_dir)
    info = log.append(make_batch())
    fs.release()
    await committer.flush_until(info.next_offset)
    assert fs.threads
    assert threading.get_ident() not in fs.threads
    log.abandon()


@async_test
async def test_already_durable_offsets_need_no_fsync(log_dir: str) -> None:
    log, fs, committer = open_gated(log_dir)
    info = log.append(make_batch())
    fs.release()
    await committer.flush()
    await committer.flush_until(info.next_offset)
    await committer.flush_until(0)
    assert committer.fsyncs == 1
    log.abandon()


@async_test
async def test_failed_fsync_fails_every_waiter_and_takes_the_log_offline(log_dir: str) -> None:
    log, fs, committer = open_gated(log_dir)
    fs.fail = True
    offsets = [log.append(make_batch(1, tag=i)).next_offset for i in range(3)]
    waiters = [asyncio.create_task(committer.flush_until(o)) for o in offsets]
    await fs.fsync_started()
    fs.release()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(isinstance(r, LogOfflineError) for r in results)
    assert log.offline is not None
    assert log.recovery_point == 0
    with pytest.raises(LogOfflineError):
        await committer.flush_until(offsets[-1])
    log.abandon()


@async_test
async def test_a_cancelled_waiter_does_not_cancel_the_shared_fsync(log_dir: str) -> None:
    log, fs, committer = open_gated(log_dir)
    info = log.append(make_batch())
    impatient = asyncio.create_task(committer.flush_until(info.next_offset))
    patient = asyncio.create_task(committer.flush_until(info.next_offset))
    await fs.fsync_started()
    impatient.cancel()
    with pytest.raises(asyncio.CancelledError):
        await impatient
    fs.release()
    await patient
    assert log.recovery_point == info.next_offset
    log.abandon()


@async_test
async def test_truncation_during_a_flush_does_not_count_as_durable(log_dir: str) -> None:
    log, fs, committer = open_gated(log_dir)
    a = log.append(make_batch(1, tag=1))
    first = asyncio.create_task(committer.flush_until(a.next_offset))
    await fs.fsync_started()
    b = log.append(make_batch(1, tag=2))
    second = asyncio.create_task(committer.flush_until(b.next_offset))
    log.truncate_to(a.next_offset)  # b is gone before it was ever flushed
    fs.release()
    with pytest.raises(StorageError, match="truncated before being flushed"):
        await second
    await fs.fsync_started()  # the running fsync cannot vouch for a: a new one runs
    fs.release()
    await first
    assert log.recovery_point == a.next_offset
    log.abandon()


@async_test
async def test_flush_now_runs_even_when_everything_is_durable(log_dir: str) -> None:
    log, fs, committer = open_gated(log_dir)
    log.append(make_batch())
    fs.release()
    await committer.flush()
    fs.release()
    await committer.flush_now()  # nothing unflushed: the job has no files, no fsync
    assert committer.fsyncs == 2
    await committer.wait_idle()
    assert not committer.busy
    log.abandon()
