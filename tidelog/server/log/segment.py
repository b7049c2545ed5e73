"""One log segment: a ``.log`` file of record batches back to back, and its two indexes.

Files are named by the segment's base offset on 20 digits, like Kafka's:
``00000000000000000000.log``, ``.index``, ``.timeindex``. The segment stores batches verbatim;
it reads only their 65-byte headers, except in :meth:`LogSegment.recover`, which checks every
batch's CRC, and :meth:`LogSegment.find_timestamp`, which decodes the one batch it lands in.

The active segment keeps a read-write descriptor open. Inactive segments open theirs (and load
their indexes) on demand and register with a :class:`HandleCache`, which closes the least
recently used ones so that open files stay bounded however many segments there are.

Synchronous by design: no asyncio here.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Final

from tidelog.wire.errors import CorruptBatchError, OffsetOutOfRangeError, StorageError
from tidelog.wire.layouts import BATCH_HEADER_SIZE
from tidelog.wire.records import Buffer, RecordBatch

from .cache import HandleCache
from .config import INT32_MAX
from .files import CREATE, CREATE_NEW, READ_ONLY, READ_WRITE, Files, Handle
from .index import OffsetIndex, TimeIndex
from .scan import BatchInfo, SegmentDamage, check_batches, scan_headers

LOG_SUFFIX: Final = ".log"
INDEX_SUFFIX: Final = ".index"
TIME_INDEX_SUFFIX: Final = ".timeindex"
DELETED_SUFFIX: Final = ".deleted"

_HEADER_SIZE: Final = BATCH_HEADER_SIZE
_MAX_TS: Final = struct.Struct(">q")
_MAX_TS_AT: Final = 35
"""Byte position of ``max_timestamp`` in a batch header (see ``layouts.BATCH_HEADER``)."""
# ``LogSegment._track`` takes a BatchInfo's fields, in this order, as plain arguments.
assert BatchInfo._fields == ("position", "size", "base_offset", "next_offset", "max_timestamp")


class LogOfflineError(StorageError):
    """The log hit an I/O error it could not undo (or an fsync failed) and refuses reads and
    writes until it is reopened, which runs recovery. Reported as ``STORAGE_ERROR``."""


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    """The outcome of checking one segment: ``truncated_bytes`` were cut after the first
    ``valid_bytes``; ``reason`` says what was wrong with the first batch cut."""

    valid_bytes: int
    truncated_bytes: int
    next_offset: int
    reason: str = ""


@dataclass(frozen=True, slots=True)
class FileSlice:
    """A byte range of a segment file holding whole batches: what a fetch sends.

    ``path``, ``position`` and ``length`` are enough to ``sendfile``; :meth:`read_bytes` copies
    the bytes. Both must happen before retention deletes the segment (the read raises
    :class:`OffsetOutOfRangeError` if it did).
    """

    path: str
    position: int
    length: int
    segment: LogSegment = field(repr=False, compare=False)

    def read_bytes(self) -> bytes:
        return self.segment.read_bytes(self.position, self.length)


class LogSegment:
    """A segment of a partition's log. Not thread-safe: one owner (the partition) drives it."""

    __slots__ = (
        "_bytes_since_entry",
        "_cache",
        "_files",
        "_handle",
        "_max_ts",
        "_max_ts_offset",
        "_writable",
        "_writeback_from",
        "active",
        "base_offset",
        "deleted",
        "index_interval_bytes",
        "index_synced_version",
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
        self.offset_index = OffsetIndex(stem + INDEX_SUFFIX, base_offset)
        self.time_index = TimeIndex(stem + TIME_INDEX_SUFFIX, base_offset)
        self.index_interval_bytes = index_interval_bytes
        self._files = files
        self._cache = cache
        self._handle: Handle | None = None
        self._writable = False
        self.size = 0
        self.next_offset = base_offset
        self._max_ts: int | None = None
        self._max_ts_offset = base_offset
        self._bytes_since_entry = 0
        self._writeback_from = 0
        self.rolling_base_ms: int | None = None
        self.active = False
        self.deleted = False
        self.index_synced_version = 0

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
            segment._handle = files.open(segment.log_path, CREATE_NEW)
            created.append(segment.log_path)
            for index in (segment.offset_index, segment.time_index):
                files.open(index.path, CREATE).close()
                created.append(index.path)
                index.reset()
        except StorageError:
            if segment._handle is not None:
                segment._handle.close_quietly()
            for path in created:
                with suppress(StorageError):
                    files.remove(path, missing_ok=True)
            raise
        segment._writable = True
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

    def _ensure_handle(self) -> Handle:
        if self.deleted:
            raise OffsetOutOfRangeError(f"segment {self.log_path} was deleted")
        handle = self._handle
        if handle is None:
            handle = self._handle = self._files.open(self.log_path, READ_ONLY)
            self._writable = False
        if not self.active:
            self._cache.touch(self)
        return handle

    def _ensure_indexes(self) -> None:
        """Load both indexes (sanity-checked); rebuild them from the log if either is missing
        or damaged."""
        self._ensure_handle()
        if self.offset_index.loaded and self.time_index.loaded:
            return
        max_rel = INT32_MAX if self.active else max(self.next_offset - self.base_offset - 1, 0)
        ok = self.offset_index.load(self._files, self.size, max_rel)
        ok = self.time_index.load(self._files, self.size, max_rel) and ok
        if ok and self.size > 0 and not len(self.time_index) and not self.active:
            ok = False  # a sealed segment with data always has its max timestamp entry
        if not ok:
            self.rebuild_indexes()

    def release(self) -> None:
        """Close the descriptor and drop loaded indexes (evicted from the cache)."""
        if self.active:
            return
        if self._handle is not None:
            self._handle.close_quietly()
            self._handle = None
        self.offset_index.unload()
        self.time_index.unload()

    def make_writable(self) -> None:
        """Open the read-write descriptor and leave the cache: the first step of becoming the
        active segment (at open, or when truncation makes an older segment the newest)."""
        self._cache.discard(self)
        if self._handle is not None and not self._writable:
            self._handle.close_quietly()
            self._handle = None
        if self._handle is None:
            self._handle = self._files.open(self.log_path, READ_WRITE)
            self._writable = True
        self.active = True

    def restore_writer_state(self, now: int) -> None:
        """Recover what appends need from the files: max timestamp, bytes since the last index
        entry, and the time the segment started (for ``segment_ms``)."""
        self._ensure_indexes()
        if self._max_ts is None and self.size > 0:
            self._establish_max_timestamp()
        _, last_position = self.offset_index.last()
        self._bytes_since_entry = self.size - last_position
        if self.size > 0 and self.rolling_base_ms is None:
            header = self._ensure_handle().pread(_HEADER_SIZE, 0)
            (first_max_ts,) = _MAX_TS.unpack_from(header, _MAX_TS_AT)
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
        self._append_max_timestamp()
        self.offset_index.persist(self._files)
        self.time_index.persist(self._files)

    def _append_max_timestamp(self) -> None:
        # A sealed segment's last time index entry is its max timestamp (for retention).
        if self._max_ts is not None:
            self.time_index.maybe_append(self._max_ts, self._max_ts_offset)

    @property
    def index_version(self) -> int:
        return self.offset_index.version + self.time_index.version

    def close(self) -> None:
        self._cache.discard(self)
        if self._handle is not None:
            handle, self._handle = self._handle, None
            handle.close()
        self.active = False

    def rename_for_deletion(self) -> list[str]:
        """First step of a crash-safe delete: close, then rename each file to ``*.deleted``
        (leftovers are removed when the log is next opened). The ``.log`` goes first: once it
        is renamed the segment is gone. Returns the new paths."""
        self._cache.discard(self)
        if self._handle is not None:
            self._handle.close_quietly()
            self._handle = None
            self._writable = False
        self.active = False
        renamed = []
        for path in (self.log_path, self.offset_index.path, self.time_index.path):
            if self._files.exists(path):
                self._files.rename(path, path + DELETED_SUFFIX)
                renamed.append(path + DELETED_SUFFIX)
            self.deleted = True  # once the .log is renamed, whatever happens next
        return renamed

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
        handle = self._handle
        assert handle is not None, "append to a closed segment"
        assert self._writable, "append to an inactive segment"
        position = self.size
        try:
            handle.write_at(data, position, size)
        except StorageError as exc:
            try:
                handle.truncate(position)
            except StorageError as undo:
                raise LogOfflineError(
                    f"{exc.message}; cutting the partial batch failed too: {undo.message}"
                ) from exc
            raise
        self._track(position, size, base_offset, next_offset, max_timestamp)
        if self.rolling_base_ms is None:
            self.rolling_base_ms = now

    def _track(
        self, position: int, size: int, base_offset: int, next_offset: int, max_timestamp: int
    ) -> None:
        """Index bookkeeping for a batch at ``position`` (the fields of a :class:`BatchInfo`,
        in its order), shared by append and rebuilds so a rebuilt index is identical to the
        one appends produced."""
        max_ts = self._max_ts
        if max_ts is None or max_timestamp > max_ts:
            self._max_ts = max_ts = max_timestamp
            self._max_ts_offset = base_offset
        if self._bytes_since_entry > self.index_interval_bytes:
            self.offset_index.append(base_offset, position)
            self.time_index.maybe_append(max_ts, self._max_ts_offset)
            self._bytes_since_entry = size
        else:
            self._bytes_since_entry += size
        self.size = position + size
        self.next_offset = next_offset

    @property
    def unwritten_back(self) -> int:
        """Bytes appended since the last :meth:`start_writeback` (negative after a cut)."""
        return self.size - self._writeback_from

    def start_writeback(self) -> None:
        """Have the kernel start writing the bytes appended since the last call to disk,
        without waiting (see ``TopicConfig.writeback_bytes``)."""
        handle = self._handle
        assert handle is not None, "writeback of a closed segment"
        start = min(self._writeback_from, self.size)
        self._writeback_from = self.size  # first: a failing call is not retried every append
        handle.start_writeback(start, self.size - start)

    # --- reads --------------------------------------------------------------------------

    def read_bytes(self, position: int, length: int) -> bytes:
        data = self._ensure_handle().pread(length, position)
        if len(data) != length:
            raise OffsetOutOfRangeError(f"{self.log_path} was truncated under a read")
        return data

    def _scan(self, start: int, end: int, expected: int | None) -> Iterator[BatchInfo]:
        return scan_headers(self._ensure_handle(), start, end, expected)

    def _walk(self, why: str, start: int, end: int, expected: int | None) -> Iterator[BatchInfo]:
        """``_scan`` for paths that cannot repair anything: damage is a ``StorageError``."""
        try:
            yield from self._scan(start, end, expected)
        except SegmentDamage as exc:
            raise StorageError(f"{self.log_path} is damaged ({exc}) while {why}") from exc

    def locate(self, offset: int) -> BatchInfo:
        """The batch holding ``offset`` (which must be in this segment), found through the
        offset index; an index entry that does not match the log triggers a rebuild."""
        for attempt in (1, 2):
            self._ensure_indexes()
            entry_offset, position = self.offset_index.lookup(offset)
            try:
                for info in self._scan(position, self.size, entry_offset):
                    if info.next_offset > offset:
                        return info
            except SegmentDamage as exc:
                if not exc.at_start or position == 0 or attempt == 2:
                    raise StorageError(
                        f"{self.log_path} is damaged ({exc}) looking for offset {offset}"
                    ) from exc
                self.rebuild_indexes()
                continue
            break
        raise OffsetOutOfRangeError(f"offset {offset} is not in {self.log_path}")

    def fit(self, first: BatchInfo, limit: int, end: int, end_offset: int) -> tuple[int, int]:
        """(position, offset) of the end of the last whole batch from ``first`` that ends at
        or before ``limit`` -- but at least ``first`` -- and never past ``end`` (a batch
        boundary holding ``end_offset``). The index finds the batch near ``limit``."""
        if limit >= end:
            return end, end_offset
        for attempt in (1, 2):
            entry_offset, position = self.offset_index.lookup_position(limit)
            if position <= first.position:
                entry_offset, position = first.base_offset, first.position
            stop, stop_offset = position, entry_offset
            try:
                for info in self._scan(position, end, entry_offset):
                    if info.position + info.size > limit:
                        break
                    stop, stop_offset = info.position + info.size, info.next_offset
            except SegmentDamage as exc:
                if not exc.at_start or position == first.position or attempt == 2:
                    raise StorageError(f"{self.log_path} is damaged ({exc}) reading") from exc
                self.rebuild_indexes()
                continue
            break
        if stop <= first.position:
            return first.position + first.size, first.next_offset
        return stop, stop_offset

    def find_timestamp(self, timestamp: int) -> tuple[int, int] | None:
        """(offset, timestamp) of the first record at or after ``timestamp`` in this segment,
        or ``None``. The time index gives where to start, the batch headers where to stop."""
        start = self._time_start(timestamp)
        for info in self._walk("searching", start.position, self.size, start.base_offset):
            if info.max_timestamp >= timestamp:
                for record in self._read_batch(info).records():
                    if record.timestamp >= timestamp:
                        return record.offset, record.timestamp
        return None

    def _time_start(self, timestamp: int) -> BatchInfo:
        """The batch to start a timestamp search at: the time index entry below
        ``timestamp``, checked against the log (and the indexes rebuilt if it does not match)."""
        start = self._time_entry(timestamp)
        if start is None:
            self.rebuild_indexes()
            start = self._time_entry(timestamp)
            if start is None:
                raise StorageError(f"{self.time_index.path} does not match {self.log_path}")
        return start

    def _time_entry(self, timestamp: int) -> BatchInfo | None:
        self._ensure_indexes()
        entry = self.time_index.lookup_below(timestamp)
        if entry is None:
            return self.locate(self.base_offset)
        start = self.locate(entry[1])
        if (start.base_offset, start.max_timestamp) != (entry[1], entry[0]):
            return None
        return start

    def _read_batch(self, info: BatchInfo) -> RecordBatch:
        data = self.read_bytes(info.position, info.size)
        try:
            return RecordBatch.parse(data)
        except CorruptBatchError as exc:
            raise StorageError(
                f"corrupt batch in {self.log_path} at {info.position}: {exc}"
            ) from exc

    @property
    def max_timestamp(self) -> int | None:
        """The largest batch timestamp in the segment (``None`` when empty). For an inactive
        segment it is the time index's last entry, checked against the log once."""
        if self._max_ts is None and self.size > 0:
            self._establish_max_timestamp()
        return self._max_ts

    def _establish_max_timestamp(self) -> None:
        self._ensure_indexes()
        last = self.time_index.last()
        if last is not None:
            info = self.locate(last[1])
            if (info.base_offset, info.max_timestamp) == (last[1], last[0]):
                if self.active:
                    self._max_ts, self._max_ts_offset = self._max_ts_from_tail(last, info)
                else:
                    self._max_ts, self._max_ts_offset = last
                return
        self.rebuild_indexes()  # sets the max timestamp as it goes

    def _max_ts_from_tail(self, last: tuple[int, int], info: BatchInfo) -> tuple[int, int]:
        # The active segment may have batches after its last time index entry.
        best_ts, best_offset = last
        for tail in self._walk("loading", info.position, self.size, info.base_offset):
            if tail.max_timestamp > best_ts:
                best_ts, best_offset = tail.max_timestamp, tail.base_offset
        return best_ts, best_offset

    # --- maintenance ----------------------------------------------------------------------

    def find_end(self) -> bool:
        """Set ``next_offset`` by walking headers from the last index entry to the end of the
        file (a clean start). ``False`` if the tail is not whole batches: recover instead."""
        self._ensure_indexes()
        entry_offset, position = self.offset_index.last()
        next_offset = entry_offset
        try:
            for info in self._scan(position, self.size, entry_offset):
                next_offset = info.next_offset
        except SegmentDamage:
            return False
        self.next_offset = next_offset
        return True

    def rebuild_indexes(self) -> None:
        """Rebuild both indexes from the batch headers and rewrite their files."""
        infos = list(self._walk("rebuilding its indexes", 0, self.size, self.base_offset))
        self._reindex(infos)

    def _reindex(self, infos: list[BatchInfo]) -> None:
        self.offset_index.reset()
        self.time_index.reset()
        self._max_ts = None
        self._max_ts_offset = self.base_offset
        self._bytes_since_entry = 0
        self.next_offset = self.base_offset
        self.size = 0
        for info in infos:
            self._track(*info)
        if not self.active:
            self._append_max_timestamp()
        self.offset_index.rewrite(self._files)
        self.time_index.rewrite(self._files)

    def recover(self) -> RecoveryReport:
        """Check every batch (CRC, sizes, counts, offsets following on); cut the file at the
        first torn or corrupt one and rebuild the indexes from the valid prefix."""
        handle = self._ensure_handle()
        checked = check_batches(handle, self.base_offset)
        truncated = checked.file_size - checked.valid_bytes
        if truncated:
            if not self._writable:
                handle.close_quietly()
                self._handle = handle = self._files.open(self.log_path, READ_WRITE)
                self._writable = True
            handle.truncate(checked.valid_bytes)
        self._reindex(checked.batches)
        return RecoveryReport(
            checked.valid_bytes, truncated, self.next_offset, checked.reason if truncated else ""
        )

    def truncate_to(self, offset: int) -> int:
        """Remove the batch holding ``offset`` and everything after it; returns bytes cut.
        The segment must be active (the partition activates it first)."""
        if offset >= self.next_offset:
            return 0
        handle = self._handle
        assert handle is not None, "truncate a closed segment"
        assert self._writable, "truncate an inactive segment"
        cut = self.locate(offset) if offset > self.base_offset else None
        position = cut.position if cut is not None else 0
        new_next = cut.base_offset if cut is not None else self.base_offset
        removed = self.size - position
        handle.truncate(position)
        self.offset_index.truncate_to(new_next, self._files)
        self.time_index.truncate_to(new_next, self._files)
        self.size = position
        self.next_offset = new_next
        self._max_ts, self._max_ts_offset = None, self.base_offset
        last = self.time_index.last()
        start = self.locate(last[1]) if last is not None else None
        if start is not None and last is not None:
            self._max_ts, self._max_ts_offset = self._max_ts_from_tail(last, start)
        elif position > 0:
            for info in self._walk("truncating", 0, position, self.base_offset):
                if self._max_ts is None or info.max_timestamp > self._max_ts:
                    self._max_ts, self._max_ts_offset = info.max_timestamp, info.base_offset
        _, last_position = self.offset_index.last()
        self._bytes_since_entry = self.size - last_position
        if self.size == 0:
            self.rolling_base_ms = None
        return removed

    def sync_handles(self, with_indexes: bool) -> list[Handle]:
        """Fresh descriptors (dups) to fsync this segment's log, and its index files."""
        handles = [self._ensure_handle().dup()]
        if with_indexes:
            try:
                for index in (self.offset_index, self.time_index):
                    handles.append(self._files.open(index.path, READ_ONLY))
            except StorageError:
                for handle in handles:
                    handle.close_quietly()
                raise
        return handles


def delete_segments(segments: list[LogSegment], files: Files, directory: str) -> int:
    """Delete whole segments crash-safely: rename every file to ``*.deleted``, fsync the
    directory, then remove them. Returns the bytes of log data deleted. A crash in between
    leaves ``*.deleted`` files, which opening the log removes."""
    if not segments:
        return 0
    renamed: list[str] = []
    size = 0
    for segment in segments:
        renamed.extend(segment.rename_for_deletion())
        size += segment.size
    files.sync_dir(directory)
    for path in renamed:
        files.remove(path, missing_ok=True)
    return size
