"""The two sparse indexes of a segment, in Kafka's fixed-size entry formats.

* :class:`OffsetIndex` (``.index``): 8-byte entries ``>iI`` -- the offset of a batch relative to
  the segment's base offset, and the byte position of that batch in the ``.log`` file.
* :class:`TimeIndex` (``.timeindex``): 12-byte entries ``>qi`` -- a timestamp and the relative
  base offset of the batch that first reached it. Timestamps strictly increase: an entry says
  "no batch before this one has a larger timestamp".

An entry is added every ``index_interval_bytes`` of batches, so both are small enough to hold
in memory (``array``, 8 or 12 bytes an entry) and binary-search with ``bisect``. They are
written to disk lazily -- when the segment rolls and when the log closes -- because recovery
rebuilds the indexes of every segment it scans anyway. :class:`SegmentIndexes` is the pair of a
segment, with the bookkeeping that adds their entries as batches are appended. No asyncio here.
"""

from __future__ import annotations

import struct
from array import array
from bisect import bisect_left, bisect_right
from typing import ClassVar, Final

from .files import CREATE, READ_ONLY, Files

INDEX_SUFFIX: Final = ".index"
TIME_INDEX_SUFFIX: Final = ".timeindex"
OFFSET_ENTRY: Final = struct.Struct(">iI")
TIME_ENTRY: Final = struct.Struct(">qi")


class _SparseIndex:
    """Entries as two parallel arrays (``keys`` sorted), mirrored to an append-only file."""

    ENTRY: ClassVar[struct.Struct]
    KEY_TYPE: ClassVar[str]
    VALUE_TYPE: ClassVar[str]

    __slots__ = ("_keys", "_persisted", "_values", "base_offset", "loaded", "path", "version")

    def __init__(self, path: str, base_offset: int) -> None:
        self.path = path
        self.base_offset = base_offset
        self._keys = array(self.KEY_TYPE)
        self._values = array(self.VALUE_TYPE)
        self._persisted = 0
        self.loaded = False
        self.version = 0
        """Bumped at every write to the file: tells a flush whether the file needs an fsync."""

    def __len__(self) -> int:
        return len(self._keys)

    def entries(self) -> list[tuple[int, int]]:
        """Every entry as stored: (key, value) with the relative offsets of the file."""
        return list(zip(self._keys, self._values, strict=True))

    def reset(self) -> None:
        """Forget every entry in memory (before a rebuild); the file is rewritten later."""
        self._keys = array(self.KEY_TYPE)
        self._values = array(self.VALUE_TYPE)
        self._persisted = 0
        self.loaded = True

    def unload(self) -> None:
        """Drop the entries from memory (an idle inactive segment); ``load`` brings them back."""
        self._keys = array(self.KEY_TYPE)
        self._values = array(self.VALUE_TYPE)
        self._persisted = 0
        self.loaded = False

    def load(self, files: Files, log_size: int, max_relative_offset: int) -> bool:
        """Read the file. Returns ``False`` -- entries left empty -- if it is missing or fails
        a sanity check; the caller then rebuilds it from the log."""
        self.reset()
        self.loaded = False
        data = files.read_file(self.path)
        if data is None or len(data) % self.ENTRY.size:
            return False
        keys = array(self.KEY_TYPE)
        values = array(self.VALUE_TYPE)
        try:
            for key, value in self.ENTRY.iter_unpack(data):
                keys.append(key)
                values.append(value)
        except OverflowError:
            return False
        if not self._sane(keys, values, log_size, max_relative_offset):
            return False
        self._keys, self._values = keys, values
        self._persisted = len(keys)
        self.loaded = True
        return True

    def _sane(self, keys: array[int], values: array[int], log_size: int, max_rel: int) -> bool:
        raise NotImplementedError

    def persist(self, files: Files) -> None:
        """Append the entries the file does not have yet."""
        count = len(self._keys)
        if self._persisted >= count:
            return
        start = self._persisted
        pack = self.ENTRY.pack
        data = b"".join(map(pack, self._keys[start:], self._values[start:]))
        handle = files.open(self.path, CREATE)
        try:
            handle.truncate(start * self.ENTRY.size)
            handle.write_at([data], start * self.ENTRY.size)
        finally:
            handle.close_quietly()
        self._persisted = count
        self.version += 1

    def rewrite(self, files: Files) -> None:
        """Replace the file with the entries in memory (after a rebuild or a truncation)."""
        self._persisted = 0
        handle = files.open(self.path, CREATE)
        try:
            handle.truncate(0)
        finally:
            handle.close_quietly()
        self.version += 1
        self.persist(files)

    def _cut(self, count: int, files: Files | None) -> None:
        if count >= len(self._keys):
            return
        del self._keys[count:]
        del self._values[count:]
        if self._persisted > count:
            self._persisted = count
            if files is not None:
                handle = files.open(self.path, CREATE)
                try:
                    handle.truncate(count * self.ENTRY.size)
                finally:
                    handle.close_quietly()
                self.version += 1


class OffsetIndex(_SparseIndex):
    """Relative offset -> file position of the batch that starts at that offset."""

    ENTRY = OFFSET_ENTRY
    KEY_TYPE = "i"
    VALUE_TYPE = "I"
    __slots__ = ()

    def append(self, offset: int, position: int) -> None:
        self._keys.append(offset - self.base_offset)
        self._values.append(position)

    def lookup(self, offset: int) -> tuple[int, int]:
        """The last entry at or before ``offset`` as (offset, position); (base, 0) if none."""
        i = bisect_right(self._keys, offset - self.base_offset) - 1
        if i < 0:
            return self.base_offset, 0
        return self.base_offset + self._keys[i], self._values[i]

    def lookup_position(self, position: int) -> tuple[int, int]:
        """The last entry at or before file ``position`` as (offset, position)."""
        i = bisect_right(self._values, position) - 1
        if i < 0:
            return self.base_offset, 0
        return self.base_offset + self._keys[i], self._values[i]

    def last(self) -> tuple[int, int]:
        if not self._keys:
            return self.base_offset, 0
        return self.base_offset + self._keys[-1], self._values[-1]

    def truncate_to(self, offset: int, files: Files | None = None) -> None:
        """Drop the entries for offsets >= ``offset``."""
        self._cut(bisect_left(self._keys, offset - self.base_offset), files)

    def last_on_disk(self, files: Files, log_size: int) -> tuple[int, int] | None:
        """The file's last entry as (offset, position), read alone (finding a sealed
        segment's end at start-up must not load every index); ``None`` if there is no
        plausible one. Whoever uses it checks it against the log."""
        if not files.exists(self.path):
            return None
        handle = files.open(self.path, READ_ONLY)
        try:
            size = handle.size()
            if size < OFFSET_ENTRY.size or size % OFFSET_ENTRY.size:
                return None
            last = handle.pread(OFFSET_ENTRY.size, size - OFFSET_ENTRY.size)
            rel, position = OFFSET_ENTRY.unpack(last)
        finally:
            handle.close_quietly()
        if rel < 0 or position >= log_size:
            return None
        return self.base_offset + rel, position

    def _sane(self, keys: array[int], values: array[int], log_size: int, max_rel: int) -> bool:
        previous_key, previous_value = -1, -1
        for key, value in zip(keys, values, strict=True):
            if key <= previous_key or value <= previous_value:
                return False
            previous_key, previous_value = key, value
        return previous_key <= max_rel and previous_value < max(log_size, 1)


class TimeIndex(_SparseIndex):
    """Timestamp -> relative base offset of the batch that first reached that timestamp."""

    ENTRY = TIME_ENTRY
    KEY_TYPE = "q"
    VALUE_TYPE = "i"
    __slots__ = ()

    def maybe_append(self, timestamp: int, offset: int) -> None:
        """Add an entry if ``timestamp`` is above the last one (the index only grows)."""
        if not self._keys or timestamp > self._keys[-1]:
            self._keys.append(timestamp)
            self._values.append(offset - self.base_offset)

    def lookup_below(self, timestamp: int) -> tuple[int, int] | None:
        """The last entry with a timestamp *below* ``timestamp``, as (timestamp, offset): every
        batch up to that offset is older than ``timestamp``. ``None`` if there is none."""
        i = bisect_left(self._keys, timestamp) - 1
        if i < 0:
            return None
        return self._keys[i], self.base_offset + self._values[i]

    def last(self) -> tuple[int, int] | None:
        """(largest timestamp, base offset of its batch), or ``None`` when empty."""
        if not self._keys:
            return None
        return self._keys[-1], self.base_offset + self._values[-1]

    def truncate_to(self, offset: int, files: Files | None = None) -> None:
        """Drop the entries for offsets >= ``offset``."""
        self._cut(bisect_left(self._values, offset - self.base_offset), files)

    def _sane(self, keys: array[int], values: array[int], log_size: int, max_rel: int) -> bool:
        previous_key, previous_value = None, -1
        for key, value in zip(keys, values, strict=True):
            if (previous_key is not None and key <= previous_key) or value <= previous_value:
                return False
            previous_key, previous_value = key, value
        return previous_value <= max_rel


class SegmentIndexes:
    """A segment's two indexes, kept in step with its log: an entry in each every ``interval``
    bytes of batches, and the largest timestamp so far, which a sealed segment's time index
    ends with (retention reads it there).

    Appends and rebuilds both go through :meth:`track`, so a rebuilt index is identical to the
    one appends produced.
    """

    __slots__ = (
        "_base_offset",
        "_bytes_since_entry",
        "interval",
        "max_timestamp",
        "max_timestamp_offset",
        "offset_index",
        "time_index",
    )

    def __init__(self, stem: str, base_offset: int, interval: int) -> None:
        self.offset_index = OffsetIndex(stem + INDEX_SUFFIX, base_offset)
        self.time_index = TimeIndex(stem + TIME_INDEX_SUFFIX, base_offset)
        self.interval = interval
        self._base_offset = base_offset
        self.max_timestamp: int | None = None
        """The largest batch timestamp tracked (``None``: none yet, or not established)."""
        self.max_timestamp_offset = base_offset
        self._bytes_since_entry = 0

    @property
    def paths(self) -> tuple[str, str]:
        return self.offset_index.path, self.time_index.path

    @property
    def loaded(self) -> bool:
        return self.offset_index.loaded and self.time_index.loaded

    @property
    def version(self) -> int:
        """Changes whenever either file is written: whether they need an fsync."""
        return self.offset_index.version + self.time_index.version

    def track(self, position: int, size: int, base_offset: int, max_timestamp: int) -> None:
        """Account for the batch of ``size`` bytes at ``position`` (per append: keep it cheap)."""
        max_ts = self.max_timestamp
        if max_ts is None or max_timestamp > max_ts:
            self.max_timestamp = max_ts = max_timestamp
            self.max_timestamp_offset = base_offset
        if self._bytes_since_entry > self.interval:
            self.offset_index.append(base_offset, position)
            self.time_index.maybe_append(max_ts, self.max_timestamp_offset)
            self._bytes_since_entry = size
        else:
            self._bytes_since_entry += size

    def load(self, files: Files, log_size: int, max_relative_offset: int, sealed: bool) -> bool:
        """Read both files; ``False`` if either is missing or fails a sanity check."""
        ok = self.offset_index.load(files, log_size, max_relative_offset)
        ok = self.time_index.load(files, log_size, max_relative_offset) and ok
        # A sealed segment with data always has its max timestamp entry.
        return ok and not (sealed and log_size > 0 and not len(self.time_index))

    def unload(self) -> None:
        self.offset_index.unload()
        self.time_index.unload()

    def resume(self, log_size: int) -> None:
        """Continue appending after a load or a truncation: count the bytes since the last
        offset index entry again."""
        _, last_position = self.offset_index.last()
        self._bytes_since_entry = log_size - last_position

    def reset(self) -> None:
        """Forget every entry and the max timestamp: a rebuild follows."""
        self.offset_index.reset()
        self.time_index.reset()
        self.set_max_timestamp(None)
        self._bytes_since_entry = 0

    def set_max_timestamp(self, entry: tuple[int, int] | None) -> None:
        """(timestamp, base offset of its batch), as found in the files; ``None``: unknown."""
        if entry is None:
            self.max_timestamp, self.max_timestamp_offset = None, self._base_offset
        else:
            self.max_timestamp, self.max_timestamp_offset = entry

    def append_max_timestamp(self) -> None:
        """End the time index with the max timestamp (a segment being sealed)."""
        if self.max_timestamp is not None:
            self.time_index.maybe_append(self.max_timestamp, self.max_timestamp_offset)

    def persist(self, files: Files) -> None:
        """Write the entries the files lack, ending with the max timestamp entry."""
        self.append_max_timestamp()
        self.offset_index.persist(files)
        self.time_index.persist(files)

    def rewrite(self, files: Files, *, sealed: bool) -> None:
        """Replace both files with the entries in memory (after a rebuild)."""
        if sealed:
            self.append_max_timestamp()
        self.offset_index.rewrite(files)
        self.time_index.rewrite(files)

    def truncate_to(self, offset: int, files: Files) -> None:
        """Drop the entries of offsets >= ``offset``; the max timestamp is unknown until the
        caller establishes it again."""
        self.offset_index.truncate_to(offset, files)
        self.time_index.truncate_to(offset, files)
        self.set_max_timestamp(None)
