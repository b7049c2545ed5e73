"""Group commit: the asyncio edge of the log.

Producers that want durability ``await committer.flush_until(offset)``. One fsync runs at a
time, in a worker thread, and covers every batch appended before it *started* (its target is
the log end offset when it was prepared). A caller whose data was appended while an fsync was
already running is not released by that fsync: it waits for the next one, which starts as soon
as the running one ends and covers everyone who arrived meanwhile. So under load one fsync
serves many appends, and no acknowledgement ever rests on an fsync that missed its data.

Each caller waits on a future of its own: cancelling one caller never cancels the fsync the
others share.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Executor

from tidelog.wire.errors import StorageError

from ..metrics import COUNT_BUCKETS, Histogram
from .partition import PartitionLog

logger = logging.getLogger("tidelog.server.log")

_ANY_JOB = -1
"""A waiter's offset meaning "released by any fsync that starts after I asked" (flush_now)."""


class GroupCommitter:
    """Shares fsyncs of one :class:`PartitionLog` between concurrent callers."""

    def __init__(self, log: PartitionLog, executor: Executor | None = None) -> None:
        self._log = log
        self._executor = executor
        self._waiting: list[tuple[int, asyncio.Future[None]]] = []
        """Callers not covered by the fsync running now (if any): the next one is theirs."""
        self._task: asyncio.Task[None] | None = None
        self.fsyncs = 0
        """How many flushes this committer has run (the group commit's denominator)."""
        self.fsync_seconds = Histogram()
        """How long each flush's worker-thread job took (``tidelog_fsync_duration_seconds``)."""
        self.waiters_per_fsync = Histogram(COUNT_BUCKETS)
        """How many appends waiting for durability each flush released
        (``tidelog_batches_per_fsync``): the group commit at work."""

    @property
    def log(self) -> PartitionLog:
        return self._log

    @property
    def busy(self) -> bool:
        return self._task is not None

    async def flush_until(self, offset: int) -> None:
        """Return once every offset below ``offset`` is on disk (``recovery_point >=
        offset``). Raises :class:`StorageError` if the fsync fails (the log goes offline) or
        if the log was truncated below ``offset`` before it was flushed."""
        durable = self.until(offset)
        if durable is not None:
            await durable

    def until(self, offset: int) -> asyncio.Future[None] | None:
        """A future resolved once every offset below ``offset`` is on disk, or ``None`` if
        that is already so. Unlike :meth:`flush_until` it can outlive its caller's wait: a
        request that times out leaves the fsync, and what follows it, running. Raises
        :class:`StorageError` at once if the log was truncated below ``offset``."""
        log = self._log
        if log.recovery_point >= offset:
            return None
        if offset > log.log_end_offset:
            raise _truncated(log, offset)
        return self._enqueue(offset)

    async def flush(self) -> None:
        """Flush everything appended so far."""
        await self.flush_until(self._log.log_end_offset)

    async def flush_now(self) -> None:
        """Run a flush that starts after this call, even if the recovery point is already at
        the log end: the background flush uses it to cover the index files of rolled
        segments too."""
        await self._enqueue(_ANY_JOB)

    def _enqueue(self, offset: int) -> asyncio.Future[None]:
        """A future of the caller's own, resolved by the first fsync that starts after now."""
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((offset, future))
        if self._task is None:
            # Started on the next loop iteration: callers that append in this one join it.
            self._task = asyncio.create_task(self._run(), name=f"group-commit {self._log.name}")
        return future

    async def _run(self) -> None:
        log = self._log
        loop = asyncio.get_running_loop()
        batch: list[tuple[int, asyncio.Future[None]]] = []
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                job = log.begin_flush()
                began = time.perf_counter()
                try:
                    done = loop.run_in_executor(self._executor, job.run)
                except BaseException:
                    job.discard()
                    raise
                # If this task is cancelled, the thread still finishes the job and closes its
                # handles; the waiters are cancelled below.
                await done
                self.fsyncs += 1
                self.fsync_seconds.observe(time.perf_counter() - began)
                self.waiters_per_fsync.observe(len(batch))
                log.complete_flush(job)
                point, end = log.recovery_point, log.log_end_offset
                for offset, future in batch:
                    if future.done():
                        continue  # its caller was cancelled
                    if offset <= point:
                        future.set_result(None)
                    elif offset > end:
                        future.set_exception(_truncated(log, offset))
                    else:  # truncated and re-appended while the fsync ran: go again
                        self._waiting.append((offset, future))
                batch = []
        except BaseException as exc:
            if isinstance(exc, Exception):
                logger.error("%s: flush failed: %s", log.name, exc)
            for _, future in batch + self._waiting:
                if not future.done():
                    if isinstance(exc, asyncio.CancelledError):
                        future.cancel()
                    else:
                        future.set_exception(exc)
            self._waiting = []
            if not isinstance(exc, Exception):
                raise
        finally:
            self._task = None

    async def wait_idle(self) -> None:
        """Wait for the running fsyncs to end, whatever their outcome (their callers see
        errors)."""
        task = self._task
        if task is not None:
            await asyncio.wait([task])


def _truncated(log: PartitionLog, offset: int) -> StorageError:
    return StorageError(f"offsets up to {offset} of {log.name} were truncated before being flushed")
