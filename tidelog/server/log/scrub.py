"""The scrubber: verifies segments batch by batch in the background, off the event loop and
bounded in I/O, so damage that no start-up scan saw (the disk flipped bits after a clean
shutdown, or under a running broker) is isolated before a consumer meets it.

Each check (:class:`~.check.CheckJob`) runs in a worker thread on a descriptor of its own and
reads at most ``bytes_per_second`` (``scrub_bytes_per_second``); its result is applied on the
event loop (:meth:`PartitionLog.finish_check`): repairs written, damage isolated, logged and
counted. A pass visits every segment of every log, oldest first -- sealed segments whole, the
active one from where the last pass stopped -- and a segment is checked again only after
``interval_ms``. Two kinds of check jump the queue and run unpaced, because someone waits:

* a read that met damage no check had isolated (:meth:`suspect`; the read answered a retriable
  ``STORAGE_ERROR`` meanwhile), and
* a consumer's report that a batch failed its CRC on arrival (:meth:`verify`: the fetch that
  asked waits for it).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from contextlib import suppress
from dataclasses import dataclass
from typing import Final

from tidelog.wire.errors import StorageError, UnreadableRangeError

from .check import CheckJob, SegmentCheck
from .config import Clock
from .damage import Damage
from .files import Files
from .logfile import SuspectedDamageError
from .partition import PartitionLog
from .segment import LogSegment

logger = logging.getLogger("tidelog.server.log")

DEFAULT_SCRUB_BYTES_PER_SECOND: Final = 8 * 1024 * 1024
DEFAULT_SCRUB_INTERVAL_MS: Final = 7 * 24 * 60 * 60 * 1000
SUSPECT_COOLDOWN_MS: Final = 60_000
"""A segment a read suspected is not checked again for this long (one check answers it)."""
RETRY_AFTER_MS: Final = 60_000
"""A check that failed (a read error: the disk, or the segment deleted under it) is tried
again after this long."""
IDLE_WAIT_S: Final = 60.0
"""How long an idle scrubber sleeps before it looks for work again (new segments)."""


class ScrubStopped(Exception):
    """The scrubber is stopping: the running check gives up."""


@dataclass(slots=True)
class ScrubStats:
    """What the scrubber has done since the broker started (for operators and metrics)."""

    checks: int = 0
    bytes_checked: int = 0
    damage_found: int = 0
    repairs: int = 0


class Pacer:
    """Holds a check's reads to ``bytes_per_second``: after every read, wait as long as those
    bytes take at that rate (on the worker thread; ``stop`` cuts the wait and the check)."""

    def __init__(self, bytes_per_second: int, stop: threading.Event) -> None:
        self.bytes_per_second = bytes_per_second
        self._stop = stop

    def __call__(self, size: int) -> None:
        if self._stop.is_set():
            raise ScrubStopped
        if self.bytes_per_second > 0 and self._stop.wait(size / self.bytes_per_second):
            raise ScrubStopped


class Scrubber:
    """Verifies the segments of the logs ``logs()`` returns (see the module docstring). One
    background loop (:meth:`run`); :meth:`scrub_once` and :meth:`verify` serve callers."""

    def __init__(
        self,
        logs: Callable[[], Iterable[PartitionLog]],
        files: Files,
        *,
        bytes_per_second: int = DEFAULT_SCRUB_BYTES_PER_SECOND,
        interval_ms: int = DEFAULT_SCRUB_INTERVAL_MS,
        clock: Clock,
        executor: Executor | None = None,
    ) -> None:
        self._logs = logs
        self._files = files
        self.bytes_per_second = bytes_per_second
        self.interval_ms = interval_ms
        self._clock = clock
        self._executor = executor
        self._stop = threading.Event()
        self._wake = asyncio.Event()
        self._urgent: deque[tuple[PartitionLog, LogSegment]] = deque()
        self._suspected: dict[str, int] = {}
        self._done: dict[str, tuple[int, int, int]] = {}
        """Per segment file: (position, offset) checked up to, and when it started."""
        self._failed: dict[str, int] = {}
        """Per segment file whose check failed: when to try again."""
        self.stats = ScrubStats()

    # --- what callers ask -------------------------------------------------------------------

    def suspect(self, log: PartitionLog, segment: LogSegment) -> None:
        """A read met damage in ``segment`` that no check isolated: check it soon."""
        now = self._clock()
        if now < self._suspected.get(segment.log_path, now):
            return
        self._suspected[segment.log_path] = now + SUSPECT_COOLDOWN_MS
        logger.warning("%s: a read met damage in %s; checking it", log.name, segment.log_path)
        self._urgent.append((log, segment))
        self._wake.set()

    async def verify(self, log: PartitionLog, offset: int, max_bytes: int) -> list[Damage]:
        """Check what a read of ``max_bytes`` from ``offset`` returns (a consumer found a batch
        there that failed its CRC); returns the damage that is new. Unpaced: a fetch waits."""
        segment = log.segment_for(offset)
        try:
            job = log.check_job(segment, start_offset=offset, max_bytes=max_bytes)
        except UnreadableRangeError:
            return []  # known already: the fetch gets its specific error
        except SuspectedDamageError:
            job = log.check_job(segment)
        logger.warning(
            "%s: a client found a batch at offset %d that failed its CRC; checking bytes "
            "[%d, %d) of %s",
            log.name,
            offset,
            job.start,
            job.end,
            segment.log_path,
        )
        return await self._run(log, job, paced=False)

    async def check_suspects(self) -> int:
        """Check now, unpaced, the segments reads suspected; returns how many."""
        count = 0
        while self._urgent:
            log, segment = self._urgent.popleft()
            await self._run_urgent(log, segment)
            count += 1
        return count

    async def scrub_once(self) -> int:
        """Check, unpaced, every segment not checked within ``interval_ms`` (tests, tools);
        returns how many checks ran."""
        count = 0
        while (due := self._next_due()) is not None:
            await self._run(*due, paced=False)
            count += 1
        return count

    # --- the loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Scrub until cancelled or :meth:`stop`: urgent checks first, then the next due
        segment; idle for a while when nothing is due."""
        while not self._stop.is_set():
            self._wake.clear()
            if await self.check_suspects():
                continue
            due = self._next_due()
            if due is not None:
                await self._run(*due, paced=True)
                continue
            with suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), IDLE_WAIT_S)

    def stop(self) -> None:
        """Make a running check give up (its thread returns at its next read)."""
        self._stop.set()
        self._wake.set()

    async def _run_urgent(self, log: PartitionLog, segment: LogSegment) -> None:
        if log.closed or log.offline is not None or segment.deleted:
            return
        try:
            job = log.check_job(segment)
        except StorageError as exc:
            logger.error("%s: cannot check %s: %s", log.name, segment.log_path, exc)
            return
        await self._run(log, job, paced=False)

    def _next_due(self) -> tuple[PartitionLog, CheckJob] | None:
        """The next check a pass runs: the oldest segment not checked within ``interval_ms``
        (or the active one, from where it was checked up to, once it grew). ``None`` when
        every segment is fresh; forgets the segments that are gone then."""
        now = self._clock()
        live: set[str] = set()
        for log in list(self._logs()):
            if log.closed or log.offline is not None:
                continue
            for segment in log.segments:
                live.add(segment.log_path)
                if now < self._failed.get(segment.log_path, now):
                    continue
                position, offset, started = self._done.get(segment.log_path, (0, -1, 0))
                fresh = offset >= 0 and now - started < self.interval_ms
                if fresh and position >= segment.size:
                    continue
                try:
                    job = log.check_job(segment)
                except StorageError:
                    continue
                if fresh:  # the active segment grew: check what is new
                    job = CheckJob(
                        segment, job.path, position, job.end, offset, job.end_offset, job.generation
                    )
                return log, job
        for known in (self._done, self._failed):
            for path in [p for p in known if p not in live]:
                del known[path]
        return None

    async def _run(self, log: PartitionLog, job: CheckJob, *, paced: bool) -> list[Damage]:
        """Run ``job`` in a worker thread, then apply it on the loop."""
        pace = Pacer(self.bytes_per_second if paced else 0, self._stop)
        started = self._clock()
        loop = asyncio.get_running_loop()
        try:
            result: SegmentCheck = await loop.run_in_executor(
                self._executor, job.run, self._files, pace
            )
        except ScrubStopped:
            return []
        except StorageError as exc:  # a failing disk, or the segment deleted under the check
            logger.warning("%s: check of %s stopped: %s", log.name, job.path, exc)
            self._failed[job.path] = self._clock() + RETRY_AFTER_MS
            return []
        self.stats.checks += 1
        self.stats.bytes_checked += job.size
        new = log.finish_check(job, result)
        self.stats.damage_found += len(new)
        self.stats.repairs += len(result.repairs)
        previous = self._done.get(job.path)
        begun = started if job.start == 0 or previous is None else previous[2]
        self._done[job.path] = (job.end, result.next_offset, begun)
        return new
