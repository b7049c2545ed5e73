"""A segment's ``.log`` file (Kafka's ``FileRecords``): its descriptor, opened on demand --
read-only for a sealed segment, read-write for the active one -- and every read, write, cut and
header walk of the file. Knows nothing of indexes or offsets beyond what the headers say.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from tidelog.wire.errors import OffsetOutOfRangeError, StorageError
from tidelog.wire.records import Buffer

from .check import Repair, SegmentCheck, check_segment
from .damage import Damage
from .files import CREATE_NEW, READ_ONLY, READ_WRITE, Files, Handle
from .scan import BatchInfo, SegmentDamage, StaleIndexError
from .scan import header_at as _header_at
from .scan import scan_headers as _scan_headers


class SuspectedDamageError(StorageError):
    """A header walk met damage that no check has isolated yet: reported as a (retriable)
    ``STORAGE_ERROR`` while the segment is checked; ``path`` is the segment file and
    ``position`` where the walk stopped."""

    def __init__(self, message: str, path: str, position: int) -> None:
        super().__init__(message)
        self.path = path
        self.position = position


class LogOfflineError(StorageError):
    """The log hit an I/O error it could not undo (or an fsync failed) and refuses reads and
    writes until it is reopened, which runs recovery. Reported as ``STORAGE_ERROR``."""


class LogFile:
    """One ``.log`` file. Not thread-safe: its segment drives it."""

    __slots__ = ("_files", "_handle", "_writable", "deleted", "path")

    def __init__(self, path: str, files: Files) -> None:
        self.path = path
        self._files = files
        self._handle: Handle | None = None
        self._writable = False
        self.deleted = False
        """Renamed for deletion: reads raise :class:`OffsetOutOfRangeError`."""

    def create(self) -> None:
        """Create the file (it must not exist yet), open for appends."""
        self._handle = self._files.open(self.path, CREATE_NEW)
        self._writable = True

    def handle(self) -> Handle:
        """The descriptor, opened read-only if it is not open."""
        if self.deleted:
            raise OffsetOutOfRangeError(f"segment {self.path} was deleted")
        handle = self._handle
        if handle is None:
            handle = self._handle = self._files.open(self.path, READ_ONLY)
            self._writable = False
        return handle

    def open_writable(self) -> Handle:
        """The read-write descriptor (reopening a read-only one)."""
        handle = self._handle
        if handle is not None and self._writable:
            return handle
        if handle is not None:
            handle.close_quietly()
            self._handle = None
        handle = self._handle = self._files.open(self.path, READ_WRITE)
        self._writable = True
        return handle

    @property
    def writable(self) -> bool:
        return self._handle is not None and self._writable

    def close(self) -> None:
        handle, self._handle = self._handle, None
        self._writable = False
        if handle is not None:
            handle.close()

    def close_quietly(self) -> None:
        """Close on a path that must not fail (eviction, deletion)."""
        handle, self._handle = self._handle, None
        self._writable = False
        if handle is not None:
            handle.close_quietly()

    def dup(self) -> Handle:
        """A second descriptor, for an fsync off the event loop."""
        return self.handle().dup()

    # --- data -----------------------------------------------------------------------------

    def read(self, position: int, length: int) -> bytes:
        """``length`` bytes at ``position``, all of them or :class:`OffsetOutOfRangeError`."""
        data = self.handle().pread(length, position)
        if len(data) != length:
            raise OffsetOutOfRangeError(f"{self.path} was truncated under a read")
        return data

    def append(self, data: list[Buffer], position: int, size: int) -> None:
        """Write ``size`` bytes at ``position`` (the end). On failure the file is cut back to
        ``position``; if even that fails, :class:`LogOfflineError`."""
        handle = self._handle
        assert handle is not None and self._writable, "append to a read-only log file"
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

    def truncate(self, size: int) -> None:
        self.open_writable().truncate(size)

    def start_writeback(self, position: int, length: int) -> None:
        handle = self._handle
        assert handle is not None, "writeback of a closed log file"
        handle.start_writeback(position, length)

    # --- walks ----------------------------------------------------------------------------

    def walk(
        self,
        position: int,
        offset: int,
        end: int,
        *,
        at_index_entry: bool = False,
        why: str = "reading",
        skips: Sequence[Damage] = (),
    ) -> Iterator[BatchInfo]:
        """Batch headers from ``position``, where ``offset`` starts, up to ``end``, stepping
        over the damaged ranges ``skips``. Damage at the first header, where an index entry
        pointed (``at_index_entry``), is a stale index (:class:`StaleIndexError`); any other
        is :class:`SuspectedDamageError`: damage nobody has isolated yet."""
        handle = self.handle()
        try:
            yield from _scan_headers(handle, position, end, offset, skips)
        except SegmentDamage as exc:
            if exc.at_start and at_index_entry:
                raise StaleIndexError(f"index entry ({offset}, {position}): {exc}") from exc
            raise SuspectedDamageError(
                f"{self.path} is damaged ({exc}) while {why}; it is being checked",
                self.path,
                exc.position,
            ) from exc

    def header_at(self, position: int, offset: int, end: int) -> BatchInfo | None:
        """The batch starting ``offset`` at ``position``, if it is there (a hint checked)."""
        return _header_at(self.handle(), position, end, offset)

    def end_offset(
        self, position: int, offset: int, end: int, skips: Sequence[Damage] = ()
    ) -> int | None:
        """The offset after the last batch, walking headers from ``position`` (where
        ``offset`` starts) to ``end``; ``None`` if that is not whole batches."""
        try:
            for info in _scan_headers(self.handle(), position, end, offset, skips):
                offset = info.next_offset
        except SegmentDamage:
            return None
        return offset

    def check(
        self, start: int, end: int, start_offset: int, end_offset: int | None
    ) -> SegmentCheck:
        """Check every batch of bytes ``[start, end)`` (:func:`~.check.check_segment`)."""
        return check_segment(
            self.handle().pread,
            start=start,
            end=end,
            start_offset=start_offset,
            end_offset=end_offset,
        )

    def repair(self, repairs: Sequence[Repair], *, durable: bool = False) -> None:
        """Write the restored prefixes of batches whose CRC proved them intact (or whole
        batches fetched from another replica); ``durable``: fsynced before this returns."""
        if not repairs:
            return
        writable = self._writable and self._handle is not None
        handle = self._handle if writable else self._files.open(self.path, READ_WRITE)
        assert handle is not None
        try:
            for repair in repairs:
                handle.write_at([repair.prefix], repair.position)
            if durable:
                handle.sync()
        finally:
            if not writable:
                handle.close_quietly()
