"""One log segment: a ``.log`` file of record batches back to back, and its two indexes.

Files are named by the segment's base offset on 20 digits, like Kafka's:
``00000000000000000000.log``, ``.index``, ``.timeindex``. The segment stores batches verbatim;
it reads only their 65-byte headers, except in :meth:`LogSegment.recover`, which checks every
batch's CRC, and :meth:`LogSegment.find_timestamp`, which decodes the one batch it lands in.

Every lookup guided by an index goes through one repair loop (:meth:`LogSegment._repairing`):
an index entry that does not match the log gets both indexes rebuilt from the log, and the
lookup runs once more.

The active segment keeps a read-write descriptor open. Inactive segments open theirs (and load
their indexes) on demand and register with a :class:`HandleCache`, which closes the least
recently used ones so that open files stay bounded however many segments there are.

Synchronous by design: no asyncio here.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import suppress
from typing import Final, ParamSpec, TypeVar

from tidelog.wire.errors import DamagedRangeError, OffsetOutOfRangeError, StorageError
from tidelog.wire.layouts import (
    BATCH_HEADER_SIZE,
    BATCH_MAX_TIMESTAMP_OFFSET,
    BATCH_MAX_TIMESTAMP_STRUCT,
)
from tidelog.wire.records import Buffer

from .cache import HandleCache
from .check import CheckJob, SegmentCheck
from .config import INT32_MAX
from .damage import Damage, damage_at, merge_damage, next_damage
from .files import CREATE, READ_ONLY, Files, Handle
from .index import OffsetIndex, SegmentIndexes, TimeIndex
from .logfile import LogFile
from .results import FetchData
from .scan import BatchInfo, StaleIndexError, find_timestamp, largest_timestamp

START_HINTS: Final = 1024
"""Batch positions a segment remembers for the next reads (a hint each: 2 ints)."""
LOG_SUFFIX: Final = ".log"
DELETED_SUFFIX: Final = ".deleted"

P = ParamSpec("P")
T = TypeVar("T")


class LogSegment:
    """A segment of a partition's log. Not thread-safe: one owner (the partition) drives it."""

    __slots__ = (
        "_cache",
        "_files",
        "_starts",
        "_writeback_from",
        "active",
        "base_offset",
        "damage",
        "index_synced_version",
        "indexes",
        "log",
        "log_path",
        "next_offset",
        "offset_index",
        "rolling_base_ms",
        "size",
        "time_index",
    )

    def __init__(
        self,
        directory: str,
        base_offset: int,
        files: Files,
        cache: HandleCache,
        index_interval_bytes: int,
    ) -> None:
        stem = os.path.join(directory, f"{base_offset:020d}")
        self.base_offset = base_offset
        self.log_path = stem + LOG_SUFFIX
        self.log = LogFile(self.log_path, files)
        self.indexes = SegmentIndexes(stem, base_offset, index_interval_bytes)
        self.offset_index: OffsetIndex = self.indexes.offset_index
        self.time_index: TimeIndex = self.indexes.time_index
        self._files = files
        self._cache = cache
        self.size = 0
        self.next_offset = base_offset
        self._writeback_from = 0
        self.rolling_base_ms: int | None = None
        self.active = False
        self.index_synced_version = 0
        self.damage: list[Damage] = []
        """Known damaged ranges, by position: reads stop before them (:mod:`.damage`)."""
        self._starts: dict[int, int] = {}
        """Where recent batches start, by base offset: the batches just appended and those
        after the last read ones, where consumers fetch next. A hint, checked against the
        header it names before use; the oldest goes beyond :data:`START_HINTS`."""

    def __repr__(self) -> str:
        return f"LogSegment({self.log_path!r}, size={self.size}, next={self.next_offset})"

    # --- lifecycle ----------------------------------------------------------------------

    @classmethod
    def create(
        cls, directory: str, base_offset: int, files: Files, cache: HandleCache, interval: int
    ) -> LogSegment:
        """A new, empty, active segment; its three files are created (and nothing else is
        left behind if that fails)."""
        segment = cls(directory, base_offset, files, cache, interval)
        created: list[str] = []
        try:
            segment.log.create()
            created.append(segment.log_path)
            for index in (segment.offset_index, segment.time_index):
                files.open(index.path, CREATE).close()
                created.append(index.path)
                index.reset()
        except StorageError:
            segment.log.close_quietly()
            for path in created:
                with suppress(StorageError):
                    files.remove(path, missing_ok=True)
            raise
        segment.active = True
        return segment

    @classmethod
    def existing(
        cls,
        directory: str,
        base_offset: int,
        files: Files,
        cache: HandleCache,
        interval: int,
        size: int,
    ) -> LogSegment:
        """A segment found on disk; nothing is opened or read until it is needed."""
        segment = cls(directory, base_offset, files, cache, interval)
        segment.size = size
        return segment

    @property
    def deleted(self) -> bool:
        return self.log.deleted

    def _file(self) -> LogFile:
        """The log file, about to be used: an inactive segment's counts as recently used."""
        if not self.active and not self.log.deleted:
            self._cache.touch(self)
        return self.log

    def _ensure_indexes(self) -> None:
        """Load both indexes (sanity-checked); rebuild them from the log if either is missing
        or damaged."""
        self._file().handle()
        if self.indexes.loaded:
            return
        max_rel = INT32_MAX if self.active else max(self.next_offset - self.base_offset - 1, 0)
        if not self.indexes.load(self._files, self.size, max_rel, sealed=not self.active):
            self.rebuild_indexes()

    def release(self) -> None:
        """Close the descriptor and drop loaded indexes (evicted from the cache)."""
        if self.active:
            return
        self.log.close_quietly()
        self.indexes.unload()

    def make_writable(self) -> None:
        """Open the read-write descriptor and leave the cache: the first step of becoming the
        active segment (at open, or when truncation makes an older segment the newest)."""
        self._cache.discard(self)
        self.log.open_writable()
        self.active = True

    def restore_writer_state(self, now: int) -> None:
        """Recover what appends need from the files: max timestamp, bytes since the last index
        entry, and the time the segment started (for ``segment_ms``)."""
        self._ensure_indexes()
        if self.indexes.max_timestamp is None and self.size > 0:
            self._establish_max_timestamp()
        self.indexes.resume(self.size)
        if self.size > 0 and self.rolling_base_ms is None:
            header = self._file().handle().pread(BATCH_HEADER_SIZE, 0)
            (first_max_ts,) = BATCH_MAX_TIMESTAMP_STRUCT.unpack_from(
                header, BATCH_MAX_TIMESTAMP_OFFSET
            )
            self.rolling_base_ms = min(first_max_ts, now)

    def make_active(self, now: int) -> None:
        self.make_writable()
        self.restore_writer_state(now)

    def seal(self) -> None:
        """Stop being active (the log rolled): record the max timestamp in the time index and
        write both indexes. The descriptor stays open in the cache until evicted."""
        self.persist_indexes()
        self.active = False
        self._cache.touch(self)

    def persist_indexes(self) -> None:
        """Write the index entries the files lack, ending with the max timestamp entry."""
        self.indexes.persist(self._files)

    @property
    def index_version(self) -> int:
        return self.indexes.version

    def close(self) -> None:
        self._cache.discard(self)
        self.log.close()
        self.active = False

    def rename_for_deletion(self) -> list[str]:
        """First step of a crash-safe delete: close, then rename each file to ``*.deleted``
        (leftovers are removed when the log is next opened). The ``.log`` goes first: once it
        is renamed the segment is gone. Returns the new paths."""
        self._cache.discard(self)
        self.log.close_quietly()
        self.active = False
        renamed = []
        for path in (self.log_path, *self.indexes.paths):
            if self._files.exists(path):
                self._files.rename(path, path + DELETED_SUFFIX)
                renamed.append(path + DELETED_SUFFIX)
            self.log.deleted = True  # once the .log is renamed, whatever happens next
        return renamed

    def sync_handles(self, with_indexes: bool) -> list[Handle]:
        """Fresh descriptors (dups) to fsync this segment's log, and its index files."""
        handles = [self._file().dup()]
        if with_indexes:
            try:
                for path in self.indexes.paths:
                    handles.append(self._files.open(path, READ_ONLY))
            except StorageError:
                for handle in handles:
                    handle.close_quietly()
                raise
        return handles

    # --- appends ------------------------------------------------------------------------

    def append(
        self,
        data: list[Buffer],
        size: int,
        base_offset: int,
        next_offset: int,
        max_timestamp: int,
        now: int,
    ) -> None:
        """Write one stamped batch of ``size`` bytes at the end. On failure the file is cut
        back to its old size; if even that fails, :class:`LogOfflineError` (the batch is never
        counted)."""
        position = self.size
        self.log.append(data, position, size)
        self.indexes.track(position, size, base_offset, max_timestamp)
        self._remember(base_offset, position)
        self.size = position + size
        self.next_offset = next_offset
        if self.rolling_base_ms is None:
            self.rolling_base_ms = now

    @property
    def unwritten_back(self) -> int:
        """Bytes appended since the last :meth:`start_writeback` (negative after a cut)."""
        return self.size - self._writeback_from

    def start_writeback(self) -> None:
        """Have the kernel start writing the bytes appended since the last call to disk,
        without waiting (see ``TopicConfig.writeback_bytes``)."""
        start = min(self._writeback_from, self.size)
        self._writeback_from = self.size  # first: a failing call is not retried every append
        self.log.start_writeback(start, self.size - start)

    # --- reads --------------------------------------------------------------------------

    def read(
        self,
        start_offset: int,
        max_bytes: int,
        max_position: int | None = None,
        min_one_batch: bool = True,
    ) -> FetchData | None:
        """Whole batches from the one holding ``start_offset``, as Kafka's
        ``LogSegment.read``: at most ``max_bytes`` of them -- but with ``min_one_batch`` at
        least the first, whatever its size -- and none that ends past ``max_position`` (the
        end of the segment by default). ``None`` if ``start_offset`` is past the segment.

        Costs an index lookup and a few header reads, never a parse, and one copy. Raises
        :class:`StorageError` if the log is damaged (a stale index is rebuilt once first).
        """
        if max_bytes < 0:
            raise ValueError(f"max_bytes must not be negative, not {max_bytes}")
        if start_offset >= self.next_offset:
            return None
        end = self.size if max_position is None else min(max_position, self.size)
        if self.damage:
            self._refuse_damaged(start_offset)
        span = self._repairing(self._span, start_offset, max_bytes, end, min_one_batch)
        if span is None:
            return FetchData(b"", start_offset, start_offset)
        first, stop, next_offset = span
        data = self.read_bytes(first.position, stop - first.position)
        return FetchData(data, first.base_offset, next_offset)

    def _span(
        self, start_offset: int, max_bytes: int, end: int, min_one_batch: bool
    ) -> tuple[BatchInfo, int, int] | None:
        """The first batch to read, and the position and offset just past the last one:
        found through the offset index, at ``start_offset`` and near ``first + max_bytes``."""
        first = self._batch_at(start_offset)
        first_end = first.position + first.size
        if self.damage:
            region = next_damage(self.damage, first_end)
            if region is not None:
                end = min(end, region.position)  # stop before it: the next read is refused
        if first_end > end or (first.size > max_bytes and not min_one_batch):
            return None
        limit = min(first.position + max_bytes, end)
        if limit <= first_end:
            self._remember(first.next_offset, first_end)
            return first, first_end, first.next_offset
        if limit >= self.size:
            return first, self.size, self.next_offset
        entry_offset, position = self.offset_index.lookup_position(limit)
        from_index = position > first_end
        if not from_index:
            entry_offset, position = first.next_offset, first_end
        stop, next_offset = position, entry_offset
        for info in self._walk(position, entry_offset, at_index_entry=from_index):
            if info.position + info.size > limit:
                break
            stop, next_offset = info.position + info.size, info.next_offset
        self._remember(next_offset, stop)
        return first, stop, next_offset

    def translate_offset(self, offset: int) -> BatchInfo:
        """The batch holding ``offset``, found through the offset index (Kafka's
        ``translateOffset``). Raises :class:`OffsetOutOfRangeError` if no batch holds it,
        :class:`DamagedRangeError` if a damaged range does."""
        if self.damage:
            self._refuse_damaged(offset)
        return self._repairing(self._batch_at, offset)

    def position_of(self, offset: int) -> int:
        """Where the batch (or damaged range) holding ``offset`` starts."""
        region = damage_at(self.damage, offset) if self.damage else None
        return region.position if region is not None else self.translate_offset(offset).position

    def _refuse_damaged(self, offset: int) -> None:
        region = damage_at(self.damage, offset)
        if region is not None:
            raise DamagedRangeError(
                f"offset {offset} is in damaged {region.describe(self.log_path)}; "
                f"the next data starts at offset {region.next_offset}",
                start_offset=region.first_offset,
                next_offset=region.next_offset,
            )

    def _remember(self, offset: int, position: int) -> None:
        """Note that a batch starts ``offset`` at ``position`` (see :attr:`_starts`)."""
        starts = self._starts
        starts[offset] = position
        if len(starts) > START_HINTS:
            del starts[next(iter(starts))]

    def _batch_at(self, offset: int) -> BatchInfo:
        starts = self._starts
        if offset in starts and not self.damage:  # where a read ended or an append began
            info = self._file().header_at(starts[offset], offset, self.size)
            if info is not None:
                return info
            del starts[offset]  # no longer so: the index knows
        entry_offset, position = self.offset_index.lookup(offset)
        for info in self._walk(position, entry_offset, at_index_entry=position > 0):
            if info.next_offset > offset:
                return info
        raise OffsetOutOfRangeError(f"offset {offset} is not in {self.log_path}")

    def _repairing(self, lookup: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``lookup``, a walk of the log guided by the indexes, with the indexes loaded.
        If it finds an entry that does not match the log (:class:`StaleIndexError`), rebuild
        both indexes from the log and run it once more: the one repair-and-retry loop."""
        self._ensure_indexes()
        try:
            return lookup(*args, **kwargs)
        except StaleIndexError:
            self.rebuild_indexes()
        try:
            return lookup(*args, **kwargs)
        except StaleIndexError as exc:
            raise StorageError(f"{self.log_path} does not match its rebuilt index: {exc}") from exc

    def _walk(
        self,
        position: int,
        offset: int,
        *,
        end: int | None = None,
        at_index_entry: bool = False,
        why: str = "reading",
    ) -> Iterator[BatchInfo]:
        """Batch headers from ``position`` to ``end`` (default: the end of the segment),
        stepping over known damage."""
        end = self.size if end is None else end
        return self._file().walk(
            position, offset, end, at_index_entry=at_index_entry, why=why, skips=self.damage
        )

    def read_bytes(self, position: int, length: int) -> bytes:
        return self._file().read(position, length)

    def find_timestamp(self, timestamp: int) -> tuple[int, int] | None:
        """(offset, timestamp) of the first record at or after ``timestamp`` in this segment,
        or ``None``. The time index gives where to start, the batch headers where to stop."""
        start = self._repairing(self._time_start, timestamp)
        infos = self._walk(start.position, start.base_offset, why="searching")
        return find_timestamp(infos, self.read_bytes, timestamp, self.log_path)

    def _time_start(self, timestamp: int) -> BatchInfo:
        """The batch to start a timestamp search at: the time index entry below
        ``timestamp``, checked against the log."""
        entry = self.time_index.lookup_below(timestamp)
        if entry is None:
            return self._batch_at(self.base_offset)
        start = self._time_entry_batch(entry, self._batch_at)
        if start is None:
            raise StaleIndexError(f"time index entry {entry} does not match the log")
        return start

    def _time_entry_batch(
        self, entry: tuple[int, int], find: Callable[[int], BatchInfo]
    ) -> BatchInfo | None:
        """The batch a time index entry (timestamp, offset) names, if it matches the log (an
        entry a flipped bit sent past the segment, or into damage, does not)."""
        try:
            info = find(entry[1])
        except (OffsetOutOfRangeError, DamagedRangeError):
            return None
        return info if (info.base_offset, info.max_timestamp) == (entry[1], entry[0]) else None

    @property
    def max_timestamp(self) -> int | None:
        """The largest batch timestamp in the segment (``None`` when empty). For an inactive
        segment it is the time index's last entry, checked against the log once."""
        if self.indexes.max_timestamp is None and self.size > 0:
            self._establish_max_timestamp()
        return self.indexes.max_timestamp

    def _establish_max_timestamp(self) -> None:
        self._ensure_indexes()
        last = self.time_index.last()
        info = None if last is None else self._time_entry_batch(last, self.translate_offset)
        if last is not None and info is not None:
            if self.active:
                self._max_timestamp_from(last, info)
            else:
                self.indexes.set_max_timestamp(last)
            return
        self.rebuild_indexes()  # sets the max timestamp as it goes

    def _max_timestamp_from(self, last: tuple[int, int], info: BatchInfo) -> None:
        # The active segment may have batches after its last time index entry.
        infos = self._walk(info.position, info.base_offset, why="loading")
        self.indexes.set_max_timestamp(largest_timestamp(infos, last))

    # --- maintenance ----------------------------------------------------------------------

    def find_end(self) -> bool:
        """Set ``next_offset`` by walking headers from the last index entry to the end of the
        file (a clean start). ``False`` if the tail is not whole batches: recover instead."""
        self._ensure_indexes()
        entry_offset, position = self.offset_index.last()
        next_offset = self._file().end_offset(position, entry_offset, self.size, self.damage)
        if next_offset is None:
            return False
        self.next_offset = next_offset
        return True

    def find_sealed_end(self) -> bool:
        """Set a sealed segment's ``next_offset`` by a header walk from its last offset index
        entry (read alone, the index is not loaded) to the end of the file -- or from the
        start if that fails. ``False`` if neither walk is whole batches: check it instead."""
        entry = self.offset_index.last_on_disk(self._files, self.size)
        starts = [(self.base_offset, 0)] if entry is None else [entry, (self.base_offset, 0)]
        log = self._file()
        for offset, position in starts:
            end = log.end_offset(position, offset, self.size, self.damage)
            if end is not None:
                self.next_offset = end
                return True
        return False

    def rebuild_indexes(self) -> None:
        """Rebuild both indexes from the batch headers and rewrite their files."""
        self._reindex(list(self._walk(0, self.base_offset, why="rebuilding its indexes")))

    def _reindex(self, infos: list[BatchInfo]) -> None:
        """Index ``infos``, the good batches of the whole file; the segment ends after the last
        of them or of its damaged ranges."""
        indexes = self.indexes
        indexes.reset()
        self._starts.clear()
        for info in infos:
            indexes.track(info.position, info.size, info.base_offset, info.max_timestamp)
        size, next_offset = 0, self.base_offset
        if infos:
            size, next_offset = infos[-1].position + infos[-1].size, infos[-1].next_offset
        if self.damage:
            size = max(size, self.damage[-1].end)
            next_offset = max(next_offset, self.damage[-1].next_offset)
        self.size, self.next_offset = size, next_offset
        indexes.rewrite(self._files, sealed=not self.active)

    def check(self, end_offset: int | None) -> SegmentCheck:
        """Check every batch of the file (:func:`~.check.check_segment`); ``end_offset`` is
        the offset the next segment starts at, if there is one. Changes nothing."""
        size = self._file().handle().size()
        return self.log.check(0, size, self.base_offset, end_offset)

    def check_job(self, generation: int, start_offset: int | None, max_bytes: int) -> CheckJob:
        """A check of the whole file, or of what a read of ``max_bytes`` from
        ``start_offset`` returns, for a worker thread (``generation``: the log's, now)."""
        start, first, end, end_offset = 0, self.base_offset, self.size, self.next_offset
        if start_offset is not None:
            fetched = self.read(start_offset, max_bytes, None, True)
            if fetched is not None and fetched.records:
                start = self.position_of(fetched.first_offset)
                first, end_offset = fetched.first_offset, fetched.next_offset
                end = start + len(fetched.records)
        return CheckJob(self, self.log_path, start, end, first, end_offset, generation)

    def apply_check(self, check: SegmentCheck, *, reindex: bool = True) -> list[Damage]:
        """Write a check's repairs and record its damaged ranges (those it found in its byte
        range replace what was known there); with ``reindex``, a check of the whole file also
        rebuilds both indexes from its batches. Returns the damaged ranges that are new."""
        self.log.repair(check.repairs)
        self._starts.clear()
        new = [r for r in check.damage if r not in self.damage]
        self.damage = merge_damage(self.damage, check.damage, check.start, check.end)
        if reindex and check.start == 0 and check.end >= self.size:
            self.size = check.end
            self._reindex(check.batches)
        return new

    def cut_tail(self, position: int) -> int:
        """Cut the file at ``position`` (recovery: a torn write at the end of the newest
        segment); returns the bytes cut. Indexes are rebuilt by the caller."""
        removed = self._file().handle().size() - position
        self._starts.clear()
        if removed > 0:
            self.log.truncate(position)
        self.damage = [r for r in self.damage if r.end <= position]
        self.size = min(self.size, position)
        return max(removed, 0)

    def truncate_to(self, offset: int) -> int:
        """Remove the batch holding ``offset`` and everything after it; returns bytes cut.
        The segment must be active (the partition activates it first)."""
        if offset >= self.next_offset:
            return 0
        assert self.active and self.log.writable, "truncate an inactive segment"
        region = damage_at(self.damage, offset) if self.damage else None
        if region is not None:
            position, new_next = region.position, region.first_offset
        else:
            cut = self.translate_offset(offset) if offset > self.base_offset else None
            position = cut.position if cut is not None else 0
            new_next = cut.base_offset if cut is not None else self.base_offset
        self.damage = [r for r in self.damage if r.end <= position]
        removed = self.size - position
        self._starts.clear()
        self.log.truncate(position)
        self.indexes.truncate_to(new_next, self._files)
        self.size = position
        self.next_offset = new_next
        last = self.time_index.last()
        info = None if last is None else self._time_entry_batch(last, self.translate_offset)
        if last is not None and info is not None:
            self._max_timestamp_from(last, info)
        elif position > 0:
            infos = self._walk(0, self.base_offset, end=position, why="truncating")
            self.indexes.set_max_timestamp(largest_timestamp(infos, None))
        self.indexes.resume(self.size)
        if self.size == 0:
            self.rolling_base_ms = None
        return removed
