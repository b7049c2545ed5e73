"""The data directory's background work, by the injected clock: retention, the background
flushes (rolled segments under every policy, the ``interval`` policy's), and the checkpoints
of every log's recovery point and log start (docs/STORAGE.md §11).

:class:`Housekeeping` works on the :class:`~.manager.LogManager`'s own maps of logs and
committers; its one loop (:meth:`Housekeeping.run`) runs a round every ``interval_ms``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping

from tidelog.wire.errors import StorageError

from .checkpoint import LOG_START_FILE, RECOVERY_POINT_FILE, write_offsets
from .config import Clock, FlushPolicy, TopicPartition
from .files import Files
from .flush import GroupCommitter
from .partition import PartitionLog

logger = logging.getLogger("tidelog.server.log")


class Housekeeping:
    """Retention, background flushes and checkpoints of the logs in ``logs``."""

    def __init__(
        self,
        data_dir: str,
        files: Files,
        logs: Mapping[TopicPartition, PartitionLog],
        committers: Mapping[TopicPartition, GroupCommitter],
        clock: Clock,
        *,
        retention_interval_ms: int,
        checkpoint_interval_ms: int,
        interval_ms: int,
    ) -> None:
        self._data_dir = data_dir
        self._files = files
        self._logs = logs
        self._committers = committers
        self._clock = clock
        self._retention_interval = retention_interval_ms
        self._checkpoint_interval = checkpoint_interval_ms
        self._interval = interval_ms
        self._next_retention = 0
        self._next_checkpoint = 0

    def schedule(self, now: int) -> None:
        """The first retention and checkpoint are one interval from ``now``."""
        self._next_retention = now + self._retention_interval
        self._next_checkpoint = now + self._checkpoint_interval

    def run_retention(self) -> int:
        """Apply every topic's retention now; returns how many segments were deleted."""
        deleted = 0
        for tp, log in list(self._logs.items()):
            if log.offline is not None or log.closed:
                continue
            try:
                deleted += log.delete_old_segments()
            except StorageError as exc:
                logger.error("%s: retention failed: %s", tp, exc)
        return deleted

    def checkpoint(self) -> None:
        """Persist every log's recovery point and log start offset (atomically)."""
        points, starts = self._points({})
        write_offsets(self._files, os.path.join(self._data_dir, RECOVERY_POINT_FILE), points)
        write_offsets(self._files, os.path.join(self._data_dir, LOG_START_FILE), starts)

    def _points(
        self, moving: Mapping[TopicPartition, int]
    ) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
        points = {tp: log.recovery_point for tp, log in self._logs.items()}
        starts = {tp: moving.get(tp, log.log_start_offset) for tp, log in self._logs.items()}
        return points, starts

    def start_moving(self, log: PartitionLog, start: int) -> None:
        """Checkpoint a log's new start before retention deletes the segments below it, so
        the next open tells a deleted segment from a lost one."""
        for tp, candidate in self._logs.items():
            if candidate is log:
                _, starts = self._points({tp: start})
                path = os.path.join(self._data_dir, LOG_START_FILE)
                write_offsets(self._files, path, starts)
                return

    async def run_once(self) -> None:
        """One round: retention when it is due, ``interval`` flushes when due, fsyncs of
        rolled segments, the checkpoints when due and after rolled segments were fsynced (so
        recovery after a crash rarely checks more than the active segment)."""
        now = self._clock()
        if now >= self._next_retention:
            self._next_retention = now + self._retention_interval
            self.run_retention()
        flushes = []
        sealed = False
        for tp, log in self._logs.items():
            if log.offline is not None or log.closed:
                continue
            committer = self._committers[tp]
            config = log.config
            due = (
                config.flush_policy is FlushPolicy.INTERVAL
                and log.recovery_point < log.log_end_offset
                and now - log.last_flush_ms >= config.flush_ms
            )
            if log.needs_background_flush:
                sealed = True
                flushes.append(committer.flush_now())
            elif due:
                flushes.append(committer.flush())
        if flushes:
            for result in await asyncio.gather(*flushes, return_exceptions=True):
                if isinstance(result, StorageError):
                    logger.error("background flush failed: %s", result)
                elif isinstance(result, BaseException):
                    raise result
        if sealed or now >= self._next_checkpoint:
            self._next_checkpoint = now + self._checkpoint_interval
            points, starts = self._points({})
            files, directory = self._files, self._data_dir
            await asyncio.to_thread(
                write_offsets, files, os.path.join(directory, RECOVERY_POINT_FILE), points
            )
            await asyncio.to_thread(
                write_offsets, files, os.path.join(directory, LOG_START_FILE), starts
            )

    async def run(self) -> None:
        """A round every ``interval_ms``, until cancelled."""
        while True:
            await asyncio.sleep(self._interval / 1000)
            try:
                await self.run_once()
            except StorageError as exc:
                logger.error("log housekeeping failed: %s", exc)
            except Exception:
                # A bug, not a disk error: say so loudly, and keep retention and checkpoints
                # running rather than let them stop silently while the broker serves on.
                logger.exception("log housekeeping failed unexpectedly")
