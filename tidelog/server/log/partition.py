"""A partition's log: an ordered list of segments, the newest one taking appends.

``PartitionLog`` is synchronous and single-threaded: the broker calls it from its event loop
(appends and reads go to the page cache). The only work that leaves the loop is the fsync of a
flush, which :meth:`begin_flush` prepares as a :class:`SyncJob` on duplicated descriptors and
:meth:`complete_flush` accounts for; :mod:`.flush` runs it in a thread (group commit).

Offsets: ``log_start_offset`` <= ``high_watermark`` <= ``log_end_offset`` (alias
``next_offset``); ``recovery_point`` is the offset below which everything is known fsynced.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from contextlib import suppress
from itertools import pairwise

from tidelog.wire.batch_format import COMPACTED
from tidelog.wire.errors import (
    CorruptBatchError,
    CorruptMessageError,
    DamagedRangeError,
    InvalidRecordError,
    MessageTooLargeError,
    OffsetOutOfRangeError,
    StorageError,
    UnsupportedCompressionCodeError,
    UnsupportedCompressionError,
)
from tidelog.wire.layouts import BATCH_LOG_OVERHEAD, BATCH_STAMP_STRUCT, BATCH_STAMPED_SIZE
from tidelog.wire.records import Buffer, RecordBatch, batch_size_at

from .cache import HandleCache
from .check import CheckJob, Repair, SegmentCheck, report_check
from .cleaning import check_compactable
from .config import INT32_MAX, CleanupPolicy, Clock, TopicConfig, system_clock
from .damage import Damage, missing_range, unreadable_ranges, write_damage
from .files import Files, SyncJob
from .loader import LoadReport, load_segments
from .logfile import LogOfflineError, SuspectedDamageError
from .results import AppendInfo as AppendInfo
from .results import LogReadResult as LogReadResult
from .results import TimestampOffset as TimestampOffset
from .results import Unreadable
from .segment import LogSegment
from .segments import LogSegments

logger = logging.getLogger("tidelog.server.log")

_new_tuple = tuple.__new__
"""Builds an :class:`AppendInfo` straight from C: its generated ``__new__`` costs 2x."""


class PartitionLog:
    """The log of one topic-partition in its own directory. Not thread-safe."""

    def __init__(
        self,
        directory: str,
        config: TopicConfig,
        segments: list[LogSegment],
        *,
        clock: Clock,
        files: Files,
        cache: HandleCache,
        name: str,
        load_report: LoadReport,
    ) -> None:
        """Use :meth:`open`."""
        self.directory = directory
        self.name = name
        self._config = config
        self._clock = clock
        self._files = files
        self._cache = cache
        self._segments = LogSegments(directory, segments, files, cache)
        self._leo = segments[-1].next_offset
        self._hw = self._leo
        self._rp = self._leo
        self._generation = 0
        self._sealed: list[LogSegment] = []
        """Segments rolled since their index files were last fsynced."""
        self._dir_dirty = True  # the first flush also makes the segment files' names durable
        self._offline: StorageError | None = None
        self._closed = False
        self.last_flush_ms = clock()
        self.load_report = load_report
        self.damage_found = len(load_report.damaged)
        """Damaged ranges found since the log was opened (by recovery, a scrub or a report)."""
        self.repairs_made = load_report.repaired
        """Batches whose stamped fields were restored since the log was opened."""
        self.on_suspect: Callable[[PartitionLog, LogSegment], None] | None = None
        """Told when a read meets damage no check has isolated yet (the scrubber checks it)."""
        self.on_start_moving: Callable[[PartitionLog, int], None] | None = None
        """Told the new log start before retention deletes (it checkpoints it first)."""
        if load_report.damaged or any(s.damage for s in segments):
            self._save_damage()

    @classmethod
    def open(
        cls,
        directory: str,
        config: TopicConfig | None = None,
        *,
        clock: Clock = system_clock,
        files: Files | None = None,
        cache: HandleCache | None = None,
        recovery_point: int = 0,
        clean_shutdown: bool = False,
        name: str | None = None,
        log_start: int | None = None,
    ) -> PartitionLog:
        """Open (or create) the log in ``directory``, recovering what needs it: after a clean
        shutdown only segment ends are found; otherwise every segment from the one holding
        ``recovery_point`` is checked batch by batch, its damage isolated and only a torn
        tail cut (see :mod:`.loader`). ``log_start``: the checkpointed log start offset."""
        config = TopicConfig() if config is None else config
        files = Files() if files is None else files
        cache = HandleCache() if cache is None else cache
        name = name or os.path.basename(os.path.normpath(directory))
        files.makedirs(directory)
        segments, report = load_segments(
            directory,
            files,
            cache,
            index_interval_bytes=config.index_interval_bytes,
            recovery_point=recovery_point,
            clean_shutdown=clean_shutdown,
            now=clock(),
            name=name,
            log_start=log_start,
        )
        return cls(
            directory,
            config,
            segments,
            clock=clock,
            files=files,
            cache=cache,
            name=name,
            load_report=report,
        )

    # --- state ------------------------------------------------------------------------------

    @property
    def config(self) -> TopicConfig:
        return self._config

    def update_config(self, config: TopicConfig) -> None:
        """New settings apply from the next append (index interval: from the next segment)."""
        self._config = config

    @property
    def log_start_offset(self) -> int:
        return self._segments.first.base_offset

    @property
    def log_end_offset(self) -> int:
        return self._leo

    next_offset = log_end_offset

    @property
    def high_watermark(self) -> int:
        return self._hw

    def update_high_watermark(self, offset: int) -> int:
        """Set the high watermark (replication advances it; a single broker sets it to the log
        end after each append). Clamped to [log start, log end]; returns the new value."""
        self._hw = min(max(offset, self.log_start_offset), self._leo)
        return self._hw

    @property
    def recovery_point(self) -> int:
        return self._rp

    @property
    def segments(self) -> tuple[LogSegment, ...]:
        return tuple(self._segments)

    def segment_for(self, offset: int) -> LogSegment:
        """The segment holding ``offset`` (the last one starting at or before it)."""
        return self._segments.floor(offset)

    @property
    def active_segment(self) -> LogSegment:
        return self._segments.active

    @property
    def size_in_bytes(self) -> int:
        return self._segments.size_in_bytes

    @property
    def offline(self) -> StorageError | None:
        """The error that took the log offline, or ``None`` while it is healthy."""
        return self._offline

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def generation(self) -> int:
        """Changes whenever the log is truncated: work planned before must not apply."""
        return self._generation

    def _check_usable(self) -> None:
        if self._closed:
            raise StorageError(f"log {self.name} is closed")
        if self._offline is not None:
            raise LogOfflineError(
                f"log {self.name} is offline after an I/O error ({self._offline.message}); "
                "it must be reopened"
            )

    def _go_offline(self, exc: StorageError) -> None:
        if self._offline is None:
            self._offline = exc
            logger.error("%s: taking the log offline: %s", self.name, exc)

    # --- appends ----------------------------------------------------------------------------

    def append(
        self, batch: Buffer, *, leader_epoch: int = -1, assign_offsets: bool = True
    ) -> AppendInfo:
        """Validate one batch (CRC, sizes, counts and the records arrays: what
        ``RecordBatch.parse(verify_records=True)`` checks), give it the next offsets, and
        append it. The base offset (and ``leader_epoch``) are stamped into the copy of the
        batch's 16-byte prefix that is written; the caller's buffer is left as it is.

        With ``assign_offsets=False`` (a follower copying its leader) the batch keeps its
        offsets and epoch, and must start at the log end offset. Raises
        :class:`CorruptMessageError`, :class:`MessageTooLargeError`, :class:`StorageError`
        (nothing of the batch is visible then) or :class:`LogOfflineError`.
        """
        if self._offline is not None or self._closed:
            self._check_usable()
        size = len(batch)
        config = self._config
        if size > config.max_message_bytes:
            raise MessageTooLargeError(
                f"batch of {size} bytes is larger than max_message_bytes "
                f"({config.max_message_bytes}) of {self.name}"
            )
        try:
            parsed = RecordBatch.parse(batch, verify_records=True)
        except UnsupportedCompressionError as exc:
            raise UnsupportedCompressionCodeError(str(exc)) from exc
        except CorruptBatchError as exc:
            raise CorruptMessageError(str(exc)) from exc
        leo = self._leo
        if assign_offsets:
            # Stamp base offset and leader epoch (what ``stamp_batch`` does, outside the CRC)
            # into a copy of the 16-byte prefix: the batch itself is written as it came.
            base = leo
            data: list[Buffer] = [
                BATCH_STAMP_STRUCT.pack(base, size - BATCH_LOG_OVERHEAD, leader_epoch),
                memoryview(batch)[BATCH_STAMPED_SIZE:],
            ]
        else:
            base = parsed.base_offset
            if base != leo:
                raise InvalidRecordError(
                    f"batch starts at offset {base}, the log of {self.name} ends at {leo}"
                )
            data = [batch]
        if config.cleanup_policy is not CleanupPolicy.DELETE or parsed.attributes & COMPACTED:
            check_compactable(parsed, self.name, config.cleanup_policy.compacts, assign_offsets)
        count = parsed.record_count
        max_timestamp = parsed.max_timestamp
        now = self._clock()
        segment = self._segments.active
        if segment.size and (
            segment.size + size > config.segment_bytes
            or (
                segment.rolling_base_ms is not None
                and now - segment.rolling_base_ms >= config.segment_ms
            )
            or base + count - 1 - segment.base_offset > INT32_MAX
        ):
            segment = self.roll()
        try:
            segment.append(data, size, base, base + count, max_timestamp, now)
        except LogOfflineError as exc:
            self._go_offline(exc)
            raise
        self._leo = base + count
        writeback = config.writeback_bytes
        if writeback and segment.unwritten_back >= writeback:
            try:
                segment.start_writeback()
            except StorageError as exc:
                # The batch is written and counted; a failing disk also fails the next
                # fsync, which is what reports it to whoever asked for durability.
                logger.warning("%s: %s", self.name, exc.message)
        return _new_tuple(
            AppendInfo,
            (base, base + count - 1, count, max_timestamp, size, self._segments.first.base_offset),
        )

    def roll(self) -> LogSegment:
        """Start a new active segment at the log end offset (no-op if the active segment is
        empty). The old one's indexes are written; a background flush fsyncs it."""
        self._check_usable()
        old = self._segments.active
        if old.size == 0:
            return old
        new = self._segments.roll(self._leo, self._config.index_interval_bytes)
        self._dir_dirty = True
        self._sealed.append(old)
        logger.debug("%s: rolled a new segment at offset %d", self.name, new.base_offset)
        return new

    # --- reads ------------------------------------------------------------------------------

    def read(
        self,
        offset: int,
        max_bytes: int,
        *,
        max_offset: int | None = None,
        min_one_batch: bool = True,
    ) -> LogReadResult:
        """Whole batches from the one holding ``offset``, from a single segment: at most
        ``max_bytes`` -- but with ``min_one_batch`` always at least one batch -- and only
        batches that end at or before ``max_offset`` (a consumer passes the high watermark).
        Costs an index lookup, a few header reads and one copy, never a parse
        (:meth:`LogSegment.read`).

        At the log end offset (or ``max_offset``) the result is empty: a consumer waiting for
        data. Below the log start or past the end: :class:`OffsetOutOfRangeError`.
        """
        self._check_usable()
        if max_bytes < 0:
            raise ValueError(f"max_bytes must not be negative, not {max_bytes}")
        leo = self._leo
        start = self.log_start_offset
        if offset < start or offset > leo:
            raise OffsetOutOfRangeError(
                f"offset {offset} is outside the log of {self.name}, which holds [{start}, {leo})"
            )
        upper = leo if max_offset is None else min(max_offset, leo)
        if offset >= upper:
            return self._result(b"", offset, offset)
        segment = self._segments.floor(offset)
        try:
            # Like Kafka's high watermark metadata: the position where the batch holding
            # ``upper`` starts, looked up only when ``upper`` is inside this segment.
            max_position = None
            if upper < segment.next_offset:
                max_position = segment.position_of(upper)
            fetched = segment.read(offset, max_bytes, max_position, min_one_batch)
        except DamagedRangeError as exc:
            raise DamagedRangeError(
                f"{self.name}: {exc.message}",
                start_offset=exc.start_offset,
                next_offset=exc.next_offset,
            ) from None
        except SuspectedDamageError as exc:
            self._suspect(exc)
            raise
        if fetched is None:  # in a gap between two segments
            after = self._segments.higher(offset)
            end = self._leo if after is None else after.base_offset
            raise missing_range(self.name, segment.next_offset, end, offset)
        return self._result(fetched.records, fetched.first_offset, fetched.next_offset)

    # --- integrity ----------------------------------------------------------------------

    def unreadable(self) -> list[Unreadable]:
        """Every offset range a read is refused: damaged ranges and gaps between segments."""
        return unreadable_ranges(self._segments)

    def check_job(
        self, segment: LogSegment, *, start_offset: int | None = None, max_bytes: int = 0
    ) -> CheckJob:
        """A check of ``segment`` -- all of it, or what a read of ``max_bytes`` from
        ``start_offset`` returns -- to run anywhere (a worker thread) on a descriptor of its
        own; :meth:`finish_check` applies its result. Raises what such a read raises."""
        self._check_usable()
        return segment.check_job(self._generation, start_offset, max_bytes)

    def finish_check(self, job: CheckJob, result: SegmentCheck) -> list[Damage]:
        """Apply a check's result (if the log did not change under it): write the repairs,
        record, log and count the damage. Returns the damaged ranges that are new."""
        segment = job.segment
        if job.generation != self._generation or segment.deleted or self._closed:
            return []
        if segment not in self._segments:
            return []
        if result.tail is not None:
            logger.error(
                "%s: %s holds more offsets than fit before %d; not applying its check (%s)",
                self.name,
                segment.log_path,
                job.end_offset,
                result.tail.reason,
            )
            return []
        new = segment.apply_check(result, reindex=result.start == 0 and bool(result.damage))
        report_check(self.name, segment.log_path, result, new)
        self.repairs_made += len(result.repairs)
        if new:
            self.damage_found += len(new)
            self._save_damage()
        return new

    def restore_range(self, first_offset: int, next_offset: int, data: Buffer) -> bool:
        """Write ``data`` -- batches fetched from another replica -- over the damaged range
        that stood for ``[first_offset, next_offset)``, if they fit it exactly (the same
        offsets in the same bytes, as a follower's verbatim copy of its leader does; a
        replica compacted on its own differs and is left alone), fsync, and check the
        segment again: the range is readable once more if its check finds it whole. Whether
        it was restored. Rare, and synchronous: the segment is read whole."""
        self._check_usable()
        segment = self._segments.floor(first_offset)
        region = next(
            (r for r in segment.damage
             if (r.first_offset, r.next_offset) == (first_offset, next_offset)),
            None,
        )  # fmt: skip
        if region is None or first_offset == next_offset:
            return False
        view = memoryview(data)
        position, chosen = 0, []
        while position < len(view):
            size = batch_size_at(view, position)
            if size is None or position + size > len(view):
                break
            batch = RecordBatch.parse(view[position : position + size])
            if batch.base_offset >= first_offset and batch.next_offset <= next_offset:
                chosen.append(batch)
            position += size
        fits = (
            chosen
            and chosen[0].base_offset == first_offset
            and chosen[-1].next_offset == next_offset
            and all(a.next_offset == b.base_offset for a, b in pairwise(chosen))
            and sum(b.size for b in chosen) == region.end - region.position
        )
        if not fits:
            logger.warning(
                "%s: the batches fetched for damaged offsets [%d, %d) do not fit its %d bytes; "
                "left damaged", self.name, first_offset, next_offset,
                region.end - region.position,
            )  # fmt: skip
            return False
        restored = b"".join(bytes(b.buffer) for b in chosen)
        repair = Repair(region.position, restored, "fetched from another replica")
        segment.log.repair([repair], durable=True)
        after = self._segments.higher(segment.base_offset)
        result = segment.check(None if after is None else after.base_offset)
        segment.apply_check(result, reindex=result.start == 0)
        self._save_damage()
        fixed = all(not r.holds(first_offset) for r in segment.damage)
        if fixed:
            logger.warning(
                "%s: damaged offsets [%d, %d) restored from another replica",
                self.name, first_offset, next_offset,
            )  # fmt: skip
        return fixed

    def damaged_ranges(self) -> list[tuple[int, int]]:
        """The offset ranges ``[first, next)`` of known damage that stood for records."""
        return [
            (r.first_offset, r.next_offset)
            for segment in self._segments
            for r in segment.damage
            if r.next_offset > r.first_offset
        ]

    def _save_damage(self) -> None:
        write_damage(self._files, self.directory, {s.base_offset: s.damage for s in self._segments})

    def _result(self, records: bytes, first: int, next_offset: int) -> LogReadResult:
        return LogReadResult(
            records, first, next_offset, self.log_start_offset, self._hw, self._leo
        )

    def offset_for_timestamp(self, timestamp: int) -> TimestampOffset | None:
        """The first record (in offset order) whose timestamp is at or after ``timestamp``,
        found through the segments' max timestamps and time indexes; ``None`` if none."""
        self._check_usable()
        try:
            for segment in self._segments:
                largest = segment.max_timestamp
                if largest is not None and largest >= timestamp:
                    found = segment.find_timestamp(timestamp)
                    if found is not None:
                        return TimestampOffset(*found)
        except SuspectedDamageError as exc:
            self._suspect(exc)
            raise
        return None

    def _suspect(self, exc: SuspectedDamageError) -> None:
        """Have the segment a walk met unknown damage in checked (see ``on_suspect``)."""
        for segment in self._segments:
            if segment.log_path == exc.path and self.on_suspect is not None:
                self.on_suspect(self, segment)

    # --- retention and truncation -------------------------------------------------------

    def delete_old_segments(self) -> int:
        """Apply ``retention_ms`` and ``retention_bytes``: delete the oldest whole segments
        that break either, never the active one nor data at or above the high watermark.
        Advances the log start offset; returns how many segments were deleted."""
        self._check_usable()
        if not self._config.cleanup_policy.deletes:
            return 0  # compact alone: the cleaner keeps the log small, not retention
        try:
            doomed = self._segments.expired(self._config, self._clock(), self._hw)
        except SuspectedDamageError as exc:  # a largest timestamp could not be read
            self._suspect(exc)
            raise
        count = len(doomed)
        if count:
            if self.on_start_moving is not None:
                self.on_start_moving(self, self.segments[count].base_offset)
            damaged = any(s.damage for s in doomed)
            deleted = self._segments.delete(doomed)
            if damaged:
                self._save_damage()
            self._rp = max(self._rp, self.log_start_offset)
            logger.info(
                "%s: retention deleted %d segment(s) (%d bytes); the log now starts at %d",
                self.name,
                count,
                deleted,
                self.log_start_offset,
            )
        return count

    def truncate_to(self, offset: int) -> None:
        """Remove every batch holding an offset >= ``offset``. A batch is never split: the log
        then ends at the base offset of the batch holding ``offset``. Below the log start the
        log is emptied and restarts at ``offset``. I/O errors take the log offline."""
        self._check_usable()
        if offset < 0:
            raise ValueError(f"cannot truncate to negative offset {offset}")
        if offset >= self._leo:
            return
        if offset <= self.log_start_offset:
            self.truncate_fully_and_start_at(offset)
            return
        try:
            deleted, removed = self._segments.truncate_to(offset, self._clock())
        except StorageError as exc:
            self._go_offline(exc)
            raise
        self._after_truncation(self._segments.active.next_offset)
        logger.info(
            "%s: truncated to offset %d (%d segment(s) and %d bytes removed)",
            self.name,
            self._leo,
            deleted,
            removed,
        )

    def truncate_fully_and_start_at(self, offset: int) -> None:
        """Delete every segment and start an empty log at ``offset`` (a follower that fell
        behind its leader's log start)."""
        self._check_usable()
        if offset < 0:
            raise ValueError(f"cannot start a log at negative offset {offset}")
        try:
            self._segments.restart_at(offset, self._config.index_interval_bytes)
        except StorageError as exc:
            self._go_offline(exc)
            raise
        self._dir_dirty = True
        self._after_truncation(offset)
        self._rp = self._hw = offset
        logger.info("%s: emptied; the log restarts at offset %d", self.name, offset)

    def _after_truncation(self, leo: int) -> None:
        self._leo = leo
        self._hw = min(self._hw, leo)
        self._rp = min(self._rp, leo)
        self._generation += 1  # a flush running now must not move the recovery point

    def replace_segments(self, old: list[LogSegment], swap_path: str, size: int) -> list[str]:
        """Swap in a cleaned segment for the sealed segments ``old`` it was made from
        (:meth:`LogSegments.swap_in`); returns their renamed files, to remove."""
        self._check_usable()
        new, doomed = self._segments.swap_in(
            old, swap_path, size, self._config.index_interval_bytes
        )
        self._sealed.append(new)  # the next background flush fsyncs its index files
        self._dir_dirty = True
        return doomed

    # --- flushing ---------------------------------------------------------------------------

    def begin_flush(self, *, all_indexes: bool = False) -> SyncJob:
        """Prepare one fsync of everything appended so far (group commit): the log data of
        every segment above the recovery point, the index files of rolled segments not yet
        synced (of every segment with ``all_indexes``), and the directory if segments were
        created. Cheap -- it looks only at the newest segments -- and runs on the loop."""
        self._check_usable()
        handles, versions = self._segments.sync_handles(
            self._rp, self._sealed, all_indexes=all_indexes, directory=self._dir_dirty
        )
        self._dir_dirty = False
        return SyncJob(self._leo, self._generation, handles, versions)

    def complete_flush(self, job: SyncJob) -> None:
        """Account for a job that has run: advance the recovery point to its target, or -- if
        an fsync failed -- take the log offline (after a failed fsync the page cache may have
        dropped the data: only a reopen, which recovers, can tell what is on disk)."""
        if job.error is not None:
            self._go_offline(job.error)
            raise LogOfflineError(
                f"flush of {self.name} failed: {job.error.message}"
            ) from job.error
        if self._closed:
            return
        if job.generation == self._generation:
            self._rp = max(self._rp, min(job.target_offset, self._leo))
        for segment, version in job.index_versions:
            assert isinstance(segment, LogSegment)
            segment.index_synced_version = max(segment.index_synced_version, version)
        self._sealed = [
            s
            for s in self._sealed
            if not (s.deleted or s.active) and s.index_version != s.index_synced_version
        ]
        self.last_flush_ms = self._clock()

    @property
    def needs_background_flush(self) -> bool:
        """Whether a rolled segment (its data or its indexes) has not been fsynced yet: the
        background flush that every policy gets, so recovery rarely rescans old segments."""
        return self._rp < self._segments.active.base_offset or bool(self._sealed)

    def flush(self, *, all_indexes: bool = False) -> None:
        """fsync everything appended so far, on the calling thread."""
        job = self.begin_flush(all_indexes=all_indexes)
        job.run()
        self.complete_flush(job)

    # --- closing ----------------------------------------------------------------------------

    def close(self) -> None:
        """Write the indexes, fsync everything and close the files. Raises
        :class:`StorageError` if that fails (the shutdown is then not clean)."""
        if self._closed:
            return
        try:
            if self._offline is None:
                self._segments.active.persist_indexes()
                self.flush(all_indexes=True)
        except StorageError as exc:
            self._go_offline(exc)
            raise
        finally:
            self._closed = True
            for segment in self._segments:
                with suppress(StorageError):
                    segment.close()

    def abandon(self) -> None:
        """Close the files without flushing (the log is about to be deleted)."""
        self._closed = True
        for segment in self._segments:
            with suppress(StorageError):
                segment.close()

    def __repr__(self) -> str:
        return (
            f"PartitionLog({self.name!r}, start={self.log_start_offset}, end={self._leo}, "
            f"segments={len(self._segments)})"
        )
