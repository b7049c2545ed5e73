"""The log cleaner: compaction of the logs whose ``cleanup_policy`` compacts (Kafka's
``LogCleaner``). See docs/STORAGE.md (Compaction).

A cleaning of one log has three steps:

1. :func:`plan_cleaning`, on the event loop: is the log due (its dirty ratio at least
   ``min_cleanable_dirty_ratio``), and what is cleanable -- sealed segments only, below the
   active segment, the high watermark and any segment newer than ``min_compaction_lag_ms``.
2. :func:`run_cleaning`, in a worker thread: the key map of the dirty part (bounded by the
   key-map budget: a dirty part with more keys is cleaned in several passes), the cleaned
   segments written beside the old ones and renamed ``.swap`` (:mod:`.cleaning`); every byte
   read and written goes through the I/O :class:`~.throttle.Throttler`.
3. :func:`swap_in`, on the event loop: each group of old segments is replaced by its cleaned
   segment, if the log did not change under the cleaning (else the new files are dropped);
   then, in the thread again, the directory is fsynced, the old files removed and the
   cleaner checkpoint (:mod:`.cleanerstate`) written.

:class:`LogCleaner` runs this in the background for every compacted log, the dirtiest first.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Final
from weakref import WeakKeyDictionary

from tidelog.wire.errors import StorageError

from .cleanerstate import CleanerState, read_cleaner_state, write_cleaner_state
from .cleaning import (
    CLEANED_SUFFIX,
    SWAP_SUFFIX,
    CleanPlan,
    CleanResult,
    SegmentFile,
    build_offset_map,
    clean_segments,
    group_segments,
    last_producer_batches,
    swap_names,
)
from .config import Clock
from .files import Files
from .offsetmap import OffsetMap
from .partition import PartitionLog
from .segment import LogSegment
from .throttle import Throttler, ThrottleStopped

logger = logging.getLogger("tidelog.server.log")

DEFAULT_DEDUPE_BUFFER_BYTES: Final = 128 * 1024 * 1024
DEFAULT_IO_BYTES_PER_SECOND: Final = 64 * 1024 * 1024
DEFAULT_BACKOFF_MS: Final = 15_000


@dataclass(frozen=True, slots=True)
class CleanerSettings:
    """The broker's bounds on the cleaner (``log_cleaner_*`` settings)."""

    dedupe_buffer_bytes: int = DEFAULT_DEDUPE_BUFFER_BYTES
    io_bytes_per_second: int = DEFAULT_IO_BYTES_PER_SECOND
    """Bytes read plus written per second; 0: unbounded."""
    backoff_ms: int = DEFAULT_BACKOFF_MS
    """How long the cleaner waits when no log is due."""


def dirty_ratio(log: PartitionLog, cleaned_to: int, first_uncleanable: int) -> float:
    """Bytes of the cleanable part not yet cleaned, over all bytes below the uncleanable part
    (Kafka's ``cleanableRatio``); a segment holding ``cleaned_to`` counts pro rata."""
    clean = dirty = 0.0
    for segment in log.segments:
        if segment.base_offset >= first_uncleanable:
            break
        if segment.next_offset <= cleaned_to:
            clean += segment.size
        elif segment.base_offset >= cleaned_to:
            dirty += segment.size
        else:
            span = segment.next_offset - segment.base_offset
            share = segment.size * (cleaned_to - segment.base_offset) / span
            clean, dirty = clean + share, dirty + segment.size - share
    total = clean + dirty
    return dirty / total if total else 0.0


def first_uncleanable_offset(log: PartitionLog, now: int) -> int:
    """Below the active segment and the high watermark, and below any segment holding a
    record newer than ``min_compaction_lag_ms`` (KIP-58)."""
    limit = min(log.active_segment.base_offset, log.high_watermark)
    lag = log.config.min_compaction_lag_ms
    if lag > 0:
        for segment in log.segments[:-1]:
            largest = segment.max_timestamp
            if largest is not None and now - largest < lag:
                return min(limit, segment.base_offset)
    return limit


def _ref(segment: LogSegment, size: int | None = None) -> SegmentFile:
    return SegmentFile(
        segment.base_offset,
        segment.next_offset,
        segment.size if size is None else size,
        segment.log_path,
    )


def plan_cleaning(
    log: PartitionLog, state: CleanerState, now: int, *, force: bool = False
) -> CleanPlan | None:
    """What cleaning ``log`` now would work on, or ``None`` if it is not due (``force``:
    whatever its dirty ratio). On the event loop: it reads only what the log holds."""
    if log.closed or log.offline is not None or not log.config.cleanup_policy.compacts:
        return None
    state.clamp(log.log_end_offset)
    first_dirty = max(state.cleaned_to, log.log_start_offset)
    uncleanable = first_uncleanable_offset(log, now)
    if uncleanable <= first_dirty:
        return None
    if (
        not force
        and dirty_ratio(log, first_dirty, uncleanable) < log.config.min_cleanable_dirty_ratio
    ):
        return None
    below = [s for s in log.segments if s.base_offset < uncleanable]
    if any(s.damage for s in log.segments):
        logger.warning("%s: not cleaning a log with damaged ranges", log.name)
        return None
    later = [_ref(s) for s in log.segments if s.base_offset >= uncleanable]
    config = log.config
    return CleanPlan(
        directory=log.directory,
        segments=tuple(_ref(s) for s in below),
        later=tuple(later),
        first_dirty=first_dirty,
        first_uncleanable=uncleanable,
        delete_below=state.deletable_below(now, config.delete_retention_ms),
        segment_bytes=config.segment_bytes,
        index_interval_bytes=config.index_interval_bytes,
        generation=log.generation,
    )


def run_cleaning(
    files: Files, plan: CleanPlan, offset_map: OffsetMap, throttle: Throttler
) -> CleanResult:
    """Steps 2 (see the module docstring): anywhere but the event loop. On failure nothing of
    the cleaning stays on disk."""
    offset_map.clear()
    end, _ = build_offset_map(files, plan, offset_map, throttle)
    result = CleanResult(end)
    last_of_producer = last_producer_batches(files, plan.segments + plan.later, throttle)
    written: list[str] = []
    try:
        for group in group_segments(plan.segments, end, plan.segment_bytes):
            path = clean_segments(
                files, plan, group, offset_map, last_of_producer, throttle, result
            )
            written.append(path)
            result.groups.append((group, path, files.size(path)))
        for _, path, _ in result.groups:
            for old, new in swap_names(path, CLEANED_SUFFIX, SWAP_SUFFIX):
                files.rename(old, new)
        files.sync_dir(plan.directory)
    except BaseException:
        for path in written:
            discard_cleaned(files, path)
        raise
    result.groups = [(g, p[: -len(CLEANED_SUFFIX)] + SWAP_SUFFIX, s) for g, p, s in result.groups]
    return result


def discard_cleaned(files: Files, path: str) -> None:
    """Remove a cleaned (or swap) segment and its index files."""
    state = CLEANED_SUFFIX if path.endswith(CLEANED_SUFFIX) else SWAP_SUFFIX
    for victim, _ in swap_names(path, state, ""):
        try:
            files.remove(victim, missing_ok=True)
        except StorageError as exc:
            logger.warning("could not remove %s: %s", victim, exc)


def swap_in(files: Files, log: PartitionLog, plan: CleanPlan, result: CleanResult) -> list[str]:
    """Step 3 on the event loop: replace each group of old segments by its cleaned one, if
    they are all still there and the log was not truncated meanwhile; a group that cannot be
    swapped is discarded. Returns the renamed old files to remove."""
    doomed: list[str] = []
    for group, swap_path, size in result.groups:
        current = {s.log_path: s for s in log.segments}
        old = [current.get(ref.path) for ref in group]
        usable = (
            not log.closed
            and log.offline is None
            and log.generation == plan.generation
            and all(
                s is not None and s.base_offset == r.base_offset
                for s, r in zip(old, group, strict=True)
            )
        )
        if not usable:
            discard_cleaned(files, swap_path)
            continue
        doomed.extend(log.replace_segments([s for s in old if s is not None], swap_path, size))
    return doomed


def finish_cleaning(
    files: Files,
    log: PartitionLog,
    state: CleanerState,
    result: CleanResult,
    doomed: list[str],
    now: int,
) -> None:
    """After the swap, anywhere: make it durable, remove the old files, checkpoint."""
    files.sync_dir(log.directory)
    for path in doomed:
        files.remove(path, missing_ok=True)
    state.record_pass(result.end_offset, now)
    write_cleaner_state(files, log.directory, state)


class LogCleaner:
    """Cleans the compacted logs ``logs()`` returns, one at a time, in a worker thread: the
    one background loop (:meth:`run`); :meth:`clean` cleans one log now (tests, tools)."""

    def __init__(
        self,
        logs: Callable[[], Iterable[PartitionLog]],
        files: Files,
        clock: Clock,
        settings: CleanerSettings | None = None,
        *,
        executor: Executor | None = None,
        throttle: Throttler | None = None,
    ) -> None:
        """``throttle``: the I/O bound to use (tests inject one on a manual clock); by
        default one of ``settings.io_bytes_per_second`` on ``clock``."""
        self._logs = logs
        self._files = files
        self._clock = clock
        self.settings = CleanerSettings() if settings is None else settings
        self._executor = executor
        self._stop = threading.Event()
        self._states: WeakKeyDictionary[PartitionLog, CleanerState] = WeakKeyDictionary()
        """Per open log (a topic deleted and made again is a new log, with a new state)."""
        self._map: OffsetMap | None = None
        self.throttle = throttle or Throttler(
            self.settings.io_bytes_per_second, clock, stop=self._stop
        )
        self.cleanings = 0

    def state(self, log: PartitionLog) -> CleanerState:
        state = self._states.get(log)
        if state is None:
            state = self._states[log] = read_cleaner_state(self._files, log.directory)
        return state

    def _offset_map(self) -> OffsetMap:
        if self._map is None:
            self._map = OffsetMap(self.settings.dedupe_buffer_bytes)
        return self._map

    def clean_now(self, log: PartitionLog, *, force: bool = True) -> CleanResult | None:
        """Clean ``log`` on the calling thread (tests, tools, the crash soak)."""
        state = self.state(log)
        plan = plan_cleaning(log, state, self._clock(), force=force)
        if plan is None:
            return None
        result = run_cleaning(self._files, plan, self._offset_map(), self.throttle)
        doomed = swap_in(self._files, log, plan, result)
        finish_cleaning(self._files, log, state, result, doomed, self._clock())
        self.cleanings += 1
        return result

    async def clean(self, log: PartitionLog, *, force: bool = False) -> CleanResult | None:
        """Clean ``log`` if it is due (``force``: anyway), the file work in a worker thread."""
        state = self.state(log)
        now = self._clock()
        plan = plan_cleaning(log, state, now, force=force)
        if plan is None:
            return None
        loop = asyncio.get_running_loop()
        offset_map = self._offset_map()
        result = await loop.run_in_executor(
            self._executor, run_cleaning, self._files, plan, offset_map, self.throttle
        )
        doomed = swap_in(self._files, log, plan, result)
        await loop.run_in_executor(
            self._executor, finish_cleaning, self._files, log, state, result, doomed, now
        )
        self.cleanings += 1
        logger.info(
            "%s: cleaned up to offset %d: kept %d of %d records",
            log.name,
            result.end_offset,
            result.records_kept,
            result.records_read,
        )
        return result

    async def clean_once(self) -> int:
        """One round: every due log, the dirtiest first; returns how many were cleaned."""
        now = self._clock()
        due: list[tuple[float, PartitionLog]] = []
        for log in list(self._logs()):
            if log.closed or log.offline is not None or not log.config.cleanup_policy.compacts:
                continue
            state = self.state(log)
            uncleanable = first_uncleanable_offset(log, now)
            first_dirty = max(state.cleaned_to, log.log_start_offset)
            if uncleanable <= first_dirty:
                continue
            ratio = dirty_ratio(log, first_dirty, uncleanable)
            if ratio >= log.config.min_cleanable_dirty_ratio:
                due.append((ratio, log))
        cleaned = 0
        for _, log in sorted(due, key=lambda item: -item[0]):
            try:
                if await self.clean(log) is not None:
                    cleaned += 1
            except StorageError as exc:
                logger.error("%s: cleaning failed: %s", log.name, exc)
        return cleaned

    async def run(self) -> None:
        """Clean due logs until cancelled or :meth:`stop`; back off when none is due."""
        while not self._stop.is_set():
            try:
                cleaned = await self.clean_once()
            except ThrottleStopped:
                return
            if not cleaned:
                await asyncio.sleep(self.settings.backoff_ms / 1000)

    def stop(self) -> None:
        """Make a running cleaning give up at its next read or write."""
        self._stop.set()
