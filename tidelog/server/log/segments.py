"""The segments of one partition directory, oldest first (Kafka's ``LogSegments``): finding the
one holding an offset, rolling, retention's choice, truncation, and deleting whole segments
crash-safely. Offsets beyond the segments' own (high watermark, recovery point) belong to
:class:`~.partition.PartitionLog`, which drives this. Not thread-safe.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator
from contextlib import suppress

from tidelog.wire.errors import StorageError

from .cache import HandleCache
from .cleaning import SWAP_SUFFIX, swap_names
from .config import TopicConfig
from .files import Files, Handle
from .segment import LogSegment


def delete_segments(
    segments: Iterable[LogSegment],
    files: Files,
    directory: str,
    *,
    on_gone: Callable[[LogSegment], None] | None = None,
) -> int:
    """Delete whole segments crash-safely: rename every file to ``*.deleted`` (a segment is
    gone once its ``.log`` is renamed; ``on_gone`` hears of each), fsync the directory, then
    remove the files. Returns the bytes of log data deleted. A crash in between leaves
    ``*.deleted`` files, which opening the log removes."""
    renamed: list[str] = []
    size = 0
    try:
        for segment in segments:
            renamed.extend(segment.rename_for_deletion())
            if on_gone is not None:
                on_gone(segment)
            size += segment.size
    finally:
        if renamed:
            files.sync_dir(directory)
            for path in renamed:
                files.remove(path, missing_ok=True)
    return size


class LogSegments:
    """A partition's segments, oldest first and never none; the last one is active."""

    __slots__ = ("_bases", "_cache", "_files", "_segments", "active", "directory", "first")

    def __init__(
        self, directory: str, segments: list[LogSegment], files: Files, cache: HandleCache
    ) -> None:
        assert segments, "a log has at least one segment"
        self.directory = directory
        self._files = files
        self._cache = cache
        self._segments = segments
        self._changed()

    def _changed(self) -> None:
        segments = self._segments
        self._bases = [s.base_offset for s in segments]
        if segments:
            # Plain attributes, not properties: every append reads them.
            self.first: LogSegment = segments[0]
            self.active: LogSegment = segments[-1]

    def __iter__(self) -> Iterator[LogSegment]:
        return iter(self._segments)

    def __reversed__(self) -> Iterator[LogSegment]:
        return reversed(self._segments)

    def __len__(self) -> int:
        return len(self._segments)

    @property
    def size_in_bytes(self) -> int:
        return sum(s.size for s in self._segments)

    def floor(self, offset: int) -> LogSegment:
        """The segment holding ``offset``: the last one starting at or before it."""
        return self._segments[max(bisect_right(self._bases, offset) - 1, 0)]

    def higher(self, offset: int) -> LogSegment | None:
        """The first segment that starts after ``offset``, if any."""
        i = bisect_right(self._bases, offset)
        return self._segments[i] if i < len(self._segments) else None

    def _create(self, base_offset: int, index_interval_bytes: int) -> LogSegment:
        return LogSegment.create(
            self.directory, base_offset, self._files, self._cache, index_interval_bytes
        )

    def roll(self, base_offset: int, index_interval_bytes: int) -> LogSegment:
        """Seal the active segment and start a new one at ``base_offset``. If sealing fails
        the new segment is deleted again and the old one stays active."""
        old = self._segments[-1]
        new = self._create(base_offset, index_interval_bytes)
        try:
            old.seal()
        except StorageError:
            with suppress(StorageError):  # the first error is the one to report
                delete_segments([new], self._files, self.directory)
            old.make_writable()
            raise
        self._segments.append(new)
        self._changed()
        return new

    def delete(self, doomed: list[LogSegment]) -> int:
        """Delete whole segments crash-safely, each leaving the list once its ``.log`` is
        renamed: a failure leaves every segment either in the log or gone from it. Returns
        the bytes deleted. The caller puts a segment back if it deleted them all."""
        try:
            return delete_segments(doomed, self._files, self.directory, on_gone=self._drop)
        finally:
            self._changed()

    def swap_in(
        self, old: list[LogSegment], swap_path: str, size: int, index_interval_bytes: int
    ) -> tuple[LogSegment, list[str]]:
        """Put the cleaned segment ``swap_path`` where the consecutive sealed segments ``old``
        were: their files renamed ``*.deleted`` first (returned, to remove), then the swap
        files renamed to the segment's names. Returns the new segment."""
        first = self._segments.index(old[0])
        assert self._segments[first : first + len(old)] == old and self.active not in old
        doomed: list[str] = []
        for segment in old:
            doomed.extend(segment.rename_for_deletion())
        for src, dst in swap_names(swap_path, SWAP_SUFFIX, ""):
            self._files.rename(src, dst)
        new = LogSegment.existing(
            self.directory, old[0].base_offset, self._files, self._cache, index_interval_bytes, size
        )
        new.next_offset = old[-1].next_offset
        self._segments[first : first + len(old)] = [new]
        self._changed()
        return new, doomed

    def _drop(self, segment: LogSegment) -> None:
        self._segments.remove(segment)

    def expired(self, config: TopicConfig, now: int, high_watermark: int) -> list[LogSegment]:
        """The oldest segments that ``retention_ms`` or ``retention_bytes`` condemn; never
        the active one nor one holding data at or above the high watermark."""
        candidates = [s for s in self._segments[:-1] if s.next_offset <= high_watermark]
        by_time = by_size = 0
        if config.retention_ms >= 0:
            for segment in candidates:
                largest = segment.max_timestamp
                if largest is not None and now - largest <= config.retention_ms:
                    break
                by_time += 1
        if config.retention_bytes >= 0:
            excess = self.size_in_bytes - config.retention_bytes
            for segment in candidates:
                if excess - segment.size < 0:
                    break
                excess -= segment.size
                by_size += 1
        return self._segments[: max(by_time, by_size)]

    def truncate_to(self, offset: int, now: int) -> tuple[int, int]:
        """Delete the segments starting at or after ``offset`` (newest first, so a crash
        half-way leaves no gap) and cut the one holding it, which becomes active. ``offset``
        must be above the first segment's base offset. Returns (segments deleted, bytes cut
        from the last one)."""
        later = [s for s in self._segments if s.base_offset >= offset]
        self.delete(list(reversed(later)))
        segment = self._segments[-1]
        if not segment.active:
            segment.make_active(now)
        return len(later), segment.truncate_to(offset)

    def restart_at(self, offset: int, index_interval_bytes: int) -> None:
        """Delete every segment (newest first) and start an empty one at ``offset``."""
        self.delete(list(reversed(self._segments)))
        segment = self._create(offset, index_interval_bytes)
        self._segments = [segment]
        self._changed()

    def sync_handles(
        self, recovery_point: int, sealed: list[LogSegment], *, all_indexes: bool, directory: bool
    ) -> tuple[list[Handle], list[tuple[object, int]]]:
        """Fresh descriptors to fsync what may not be durable yet: the log data of every
        segment above ``recovery_point``, the index files of the ``sealed`` segments not
        synced yet (of every segment, with ``all_indexes``), the directory if asked; and the
        index versions they cover. Looks only at the newest segments."""
        if all_indexes:
            candidates = list(self._segments)
        else:
            candidates = []
            for segment in reversed(self._segments):
                if segment.size and segment.next_offset <= recovery_point:
                    break  # this one and every older one are durable
                candidates.append(segment)
            candidates.extend(s for s in sealed if s not in candidates and not s.deleted)
        handles: list[Handle] = []
        versions: list[tuple[object, int]] = []
        try:
            for segment in candidates:
                needs_data = segment.size > 0 and segment.next_offset > recovery_point
                version = segment.index_version
                needs_index = (all_indexes or not segment.active) and (
                    version != segment.index_synced_version
                )
                if needs_data or needs_index:
                    handles.extend(segment.sync_handles(with_indexes=needs_index))
                if needs_index:
                    versions.append((segment, version))
            if directory:
                handles.append(self._files.open_dir(self.directory))
        except StorageError:
            for handle in handles:
                handle.close_quietly()
            raise
        return handles, versions
