"""One cleaning of one log, the part that runs in a worker thread (Kafka's ``Cleaner``): build
the key map of the dirty part, then rewrite every segment below its end into new files.

It works on a :class:`CleanPlan` made on the event loop (paths, sizes and offsets of the
segments, nothing live) and on descriptors of its own, and changes nothing the log serves: the
cleaned segments are written as ``<base>.log.cleaned`` (with ``<base>.cleaned.index`` and
``.cleaned.timeindex``), fsynced, then renamed to ``.log.swap``. :mod:`.cleaner` swaps them in
on the event loop; :mod:`.loader` finishes or discards a swap a crash interrupted.

The rules, Kafka's: a record survives unless the map holds a later offset of its key; a
tombstone also goes once a cleaning before this one passed it ``delete_retention_ms`` ago
(:mod:`.cleanerstate`); records without a key stay. A batch keeps its offset range: survivors
keep their offsets, a batch left with none becomes part of an empty filler batch -- unless it
is its producer's last batch, which stays (empty) so the producer's state survives. Batches
failing their CRC stop the cleaning: a fresh CRC must never launder damage.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

from tidelog.wire.batch_format import COMPACTED
from tidelog.wire.compaction import BatchRows, empty_batch, filter_batch
from tidelog.wire.errors import CorruptBatchError, InvalidRecordError, StorageError
from tidelog.wire.layouts import BATCH_HEADER_SIZE, BATCH_HEADER_STRUCT, BATCH_LOG_OVERHEAD
from tidelog.wire.records import NO_PRODUCER_ID, RecordBatch
from tidelog.wire.records_section import Columns

from .files import CREATE, Files, Handle
from .index import INDEX_SUFFIX, TIME_INDEX_SUFFIX, SegmentIndexes
from .offsetmap import OffsetMap, key_digest
from .segment import LOG_SUFFIX
from .throttle import Throttler

logger = logging.getLogger("tidelog.server.log")

CLEANED_SUFFIX: Final = ".cleaned"
SWAP_SUFFIX: Final = ".swap"
READ_CHUNK: Final = 256 * 1024
"""Bytes read at a time (a larger batch is read whole)."""
WRITE_CHUNK: Final = 256 * 1024
COMPACT_POLICIES: Final = "compact or compact,delete"


@dataclass(frozen=True, slots=True)
class SegmentFile:
    """A sealed segment as the plan saw it."""

    base_offset: int
    next_offset: int
    size: int
    path: str


@dataclass(frozen=True, slots=True)
class CleanPlan:
    """What one cleaning works on, taken on the event loop."""

    directory: str
    segments: tuple[SegmentFile, ...]
    """Every segment from the log start to the first uncleanable offset."""
    later: tuple[SegmentFile, ...]
    """The rest of the log (sizes as of the plan): read only for producer ids."""
    first_dirty: int
    first_uncleanable: int
    delete_below: int
    """Tombstones below this offset have been passed long enough to go."""
    segment_bytes: int
    index_interval_bytes: int
    generation: int


@dataclass(slots=True)
class CleanResult:
    """What a cleaning wrote: per group of old segments, one new one (``.swap`` on disk)."""

    end_offset: int
    """The map covered the dirty part up to here: the log is clean below it now."""
    groups: list[tuple[tuple[SegmentFile, ...], str, int]] = field(default_factory=list)
    """(old segments, the new ``.log.swap`` path, its size)."""
    records_read: int = 0
    records_kept: int = 0


def check_compactable(
    batch: RecordBatch, name: str, compacted_topic: bool, assign_offsets: bool
) -> None:
    """Refuse what the cleaner cannot keep: a record without a key in a compacted topic
    (Kafka refuses it too), and a cleaned batch sent by a producer (only a follower copying
    its leader's log appends those). Raises :class:`InvalidRecordError`."""
    if batch.attributes & COMPACTED and assign_offsets:
        raise InvalidRecordError(f"{name}: a producer cannot send a batch marked compacted")
    if compacted_topic and -1 in Columns.parse(batch).key_lengths:
        raise InvalidRecordError(
            f"{name} is a compacted topic (cleanup_policy={COMPACT_POLICIES}): every record "
            "needs a key"
        )


def swap_names(log_path: str, state: str, new_state: str) -> list[tuple[str, str]]:
    """A cleaned segment's files in ``state`` (``.cleaned``, ``.swap``) and their names in
    ``new_state`` (``""``: the segment's own names), index files first, the log last (the
    log's rename is what makes a state complete): ``<base>.log.cleaned`` goes with
    ``<base>.cleaned.index`` and ``<base>.cleaned.timeindex``."""
    stem = log_path[: log_path.rindex(LOG_SUFFIX)]
    return [
        (stem + state + suffix, stem + new_state + suffix)
        for suffix in (INDEX_SUFFIX, TIME_INDEX_SUFFIX)
    ] + [(stem + LOG_SUFFIX + state, stem + LOG_SUFFIX + new_state)]


def _batches(
    files: Files, segment: SegmentFile, throttle: Throttler
) -> Iterator[tuple[memoryview, int]]:
    """Every batch of a segment (bytes, base offset), read in chunks, CRC checked."""
    handle = files.open(segment.path)
    try:
        pos, buf, buf_start = 0, b"", 0
        while pos < segment.size:
            rel = pos - buf_start
            if rel + BATCH_LOG_OVERHEAD > len(buf):
                buf = _read(handle, min(READ_CHUNK, segment.size - pos), pos, throttle)
                buf_start, rel = pos, 0
            size = int.from_bytes(buf[rel + 8 : rel + 12], "big", signed=True) + BATCH_LOG_OVERHEAD
            if size < BATCH_HEADER_SIZE or pos + size > segment.size:
                raise StorageError(f"{segment.path}: no whole batch at byte {pos}")
            if rel + size > len(buf):
                buf = _read(handle, max(size, min(READ_CHUNK, segment.size - pos)), pos, throttle)
                buf_start, rel = pos, 0
            view = memoryview(buf)[rel : rel + size]
            yield view, int.from_bytes(view[:8], "big", signed=True)
            pos += size
    finally:
        handle.close_quietly()


def _read(handle: Handle, size: int, pos: int, throttle: Throttler) -> bytes:
    throttle.read(size)
    data = handle.pread(size, pos)
    if len(data) < size:
        raise StorageError(f"{handle.path} is shorter than the cleaner expected")
    return data


def _parse(view: memoryview, path: str) -> RecordBatch:
    try:
        return RecordBatch.parse(view)
    except CorruptBatchError as exc:
        raise StorageError(f"{path}: the cleaner met a damaged batch: {exc}") from exc


def last_producer_batches(
    files: Files, segments: tuple[SegmentFile, ...], throttle: Throttler
) -> dict[int, int]:
    """Per producer id, the base offset of its last batch in ``segments`` (headers only)."""
    last: dict[int, int] = {}
    for segment in segments:
        handle = files.open(segment.path)
        try:
            pos = 0
            while pos + BATCH_HEADER_SIZE <= segment.size:
                header = _read(handle, BATCH_HEADER_SIZE, pos, throttle)
                base, length, *_rest = BATCH_HEADER_STRUCT.unpack(header)
                pid = _rest[7]
                if pid != NO_PRODUCER_ID:
                    last[pid] = base
                pos += length + BATCH_LOG_OVERHEAD
        finally:
            handle.close_quietly()
    return last


def build_offset_map(
    files: Files, plan: CleanPlan, offset_map: OffsetMap, throttle: Throttler
) -> tuple[int, int]:
    """Fill ``offset_map`` from the dirty part, whole batches, until it is full; returns the
    offset the map covers up to and how many records it read."""
    end, records = plan.first_dirty, 0
    for segment in plan.segments:
        if segment.next_offset <= plan.first_dirty:
            continue
        for view, base in _batches(files, segment, throttle):
            if base >= plan.first_uncleanable:
                return end, records
            batch = _parse(view, segment.path)
            if batch.next_offset <= plan.first_dirty:
                continue
            rows = BatchRows(batch)
            keys = [(k, o) for k, o in zip(rows.keys, rows.offsets, strict=True) if k is not None]
            if not offset_map.room_for(len(keys)):
                if end == plan.first_dirty:
                    raise StorageError(
                        f"{segment.path}: a batch of {len(keys)} keys does not fit the cleaner's "
                        f"key map of {offset_map.slots}: raise log_cleaner_dedupe_buffer_bytes"
                    )
                return end, records
            for key, offset in keys:
                offset_map.put(key_digest(key), offset)
            records += batch.record_count
            end = batch.next_offset
    return end, records


def group_segments(
    segments: tuple[SegmentFile, ...], end_offset: int, max_bytes: int
) -> list[tuple[SegmentFile, ...]]:
    """The segments below ``end_offset`` in runs of at most ``max_bytes`` (and fewer than
    2**31 offsets): each run becomes one cleaned segment (Kafka's ``groupSegmentsBySize``)."""
    groups: list[tuple[SegmentFile, ...]] = []
    run: list[SegmentFile] = []
    size = 0
    for segment in segments:
        if segment.base_offset >= end_offset:
            break
        if run and (
            size + segment.size > max_bytes or segment.next_offset - run[0].base_offset > 2**31 - 1
        ):
            groups.append(tuple(run))
            run, size = [], 0
        run.append(segment)
        size += segment.size
    if run:
        groups.append(tuple(run))
    return groups


class _Writer:
    """One cleaned segment being written: batches buffered, a filler for batches that lost
    every record, and the indexes tracked as it goes."""

    def __init__(self, files: Files, path: str, plan: CleanPlan, base: int, throttle: Throttler):
        self.path = path
        self.handle = files.open(path, CREATE)
        self.handle.truncate(0)
        stem = path[: -len(LOG_SUFFIX + CLEANED_SUFFIX)] + CLEANED_SUFFIX
        self.indexes = SegmentIndexes(stem, base, plan.index_interval_bytes)
        self._throttle = throttle
        self._buffer: list[bytes | memoryview] = []
        self._buffered = 0
        self.size = 0
        self._filler: list[int] | None = None  # base, next, min ts, max ts, epoch

    def add(self, data: bytes | memoryview, base: int, next_offset: int, max_ts: int) -> None:
        self._flush_filler()
        self._put(data, base, max_ts)

    def drop(self, batch: RecordBatch) -> None:
        """A batch that lost every record: its offsets join the filler."""
        filler = self._filler
        if filler is None:
            self._filler = [
                batch.base_offset,
                batch.next_offset,
                batch.base_timestamp,
                batch.max_timestamp,
                batch.leader_epoch,
            ]
        else:
            filler[1] = batch.next_offset
            filler[2] = min(filler[2], batch.base_timestamp)
            filler[3] = max(filler[3], batch.max_timestamp)
            filler[4] = max(filler[4], batch.leader_epoch)

    def _flush_filler(self) -> None:
        filler, self._filler = self._filler, None
        if filler is not None:
            base, next_offset, low, high, epoch = filler
            data = empty_batch(
                base, next_offset - base - 1, base_timestamp=low, max_timestamp=high,
                leader_epoch=epoch,
            )  # fmt: skip
            self._put(data, base, high)

    def _put(self, data: bytes | memoryview, base: int, max_ts: int) -> None:
        self.indexes.track(self.size, len(data), base, max_ts)
        self._buffer.append(data)
        self._buffered += len(data)
        self.size += len(data)
        if self._buffered >= WRITE_CHUNK:
            self._write()

    def _write(self) -> None:
        if self._buffered:
            self._throttle.written(self._buffered)
            self.handle.write_at(self._buffer, self.size - self._buffered, self._buffered)
            self._buffer, self._buffered = [], 0

    def finish(self, files: Files) -> None:
        self._flush_filler()
        self._write()
        self.handle.sync()
        self.handle.close()
        self.indexes.rewrite(files, sealed=True)

    def abandon(self) -> None:
        self.handle.close_quietly()


def clean_segments(
    files: Files,
    plan: CleanPlan,
    group: tuple[SegmentFile, ...],
    offset_map: OffsetMap,
    last_of_producer: dict[int, int],
    throttle: Throttler,
    result: CleanResult,
) -> str:
    """Write the cleaned copy of ``group`` as ``<base>.log.cleaned``; returns its path."""
    base = group[0].base_offset
    path = os.path.join(plan.directory, f"{base:020d}{LOG_SUFFIX}{CLEANED_SUFFIX}")
    writer = _Writer(files, path, plan, base, throttle)
    try:
        for segment in group:
            for view, _ in _batches(files, segment, throttle):
                batch = _parse(view, segment.path)
                _clean_batch(batch, view, plan, offset_map, last_of_producer, writer, result)
        writer.finish(files)
    except BaseException:
        writer.abandon()
        raise
    return path


def _clean_batch(
    batch: RecordBatch,
    view: memoryview,
    plan: CleanPlan,
    offset_map: OffsetMap,
    last_of_producer: dict[int, int],
    writer: _Writer,
    result: CleanResult,
) -> None:
    rows = BatchRows(batch)
    keep: list[int] = []
    get = offset_map.get
    for i, (key, offset) in enumerate(zip(rows.keys, rows.offsets, strict=True)):
        if key is not None:
            latest = get(key_digest(key))
            if latest is not None and offset < latest:
                continue
            if offset < plan.delete_below and rows.is_tombstone(i):
                continue
        keep.append(i)
    result.records_read += batch.record_count
    result.records_kept += len(keep)
    pid = batch.producer_id
    if len(keep) == batch.record_count:
        writer.add(view, batch.base_offset, batch.next_offset, batch.max_timestamp)
    elif keep or (pid != NO_PRODUCER_ID and last_of_producer.get(pid) == batch.base_offset):
        data = filter_batch(batch, rows, keep)
        writer.add(data, batch.base_offset, batch.next_offset, batch.max_timestamp)
    else:
        writer.drop(batch)


def finish_interrupted_swaps(files: Files, directory: str, name: str) -> None:
    """What opening a partition does first: finish each swap a crash interrupted and drop
    what a cleaning left half-written. A ``<base>.log.swap`` is whole (it was fsynced before
    its rename), so the old segments its offsets cover are removed and it takes their place;
    its index files are dropped (rebuilt on first use). ``.cleaned`` files, and index files
    of either state, are removed."""
    entries = files.listdir(directory)
    bases = {}
    for entry in entries:
        stem, _, suffix = entry.partition(".")
        if suffix == "log" and len(stem) == 20 and stem.isdigit():
            bases[int(stem)] = entry
    changed = False
    for entry in entries:
        if not entry.endswith(LOG_SUFFIX + SWAP_SUFFIX) or not entry[:20].isdigit():
            continue
        base = int(entry[:20])
        path = os.path.join(directory, entry)
        end = _end_offset(files, path, base)
        for old_base, old in bases.items():
            if base <= old_base < end:
                stem = os.path.join(directory, old[:20])
                for suffix in (LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX):
                    files.remove(stem + suffix, missing_ok=True)
        stem = os.path.join(directory, entry[:20])
        for suffix in (INDEX_SUFFIX, TIME_INDEX_SUFFIX):
            files.remove(stem + suffix, missing_ok=True)
        files.rename(path, stem + LOG_SUFFIX)
        logger.info("%s: finished swapping in the cleaned segment %s", name, entry)
        changed = True
    for entry in entries:
        if entry.endswith(_HALF_DONE_INDEXES):
            files.remove(os.path.join(directory, entry), missing_ok=True)
            changed = True
    if changed:
        files.sync_dir(directory)


_HALF_DONE_INDEXES: Final = tuple(
    state + suffix
    for state in (CLEANED_SUFFIX, SWAP_SUFFIX)
    for suffix in (INDEX_SUFFIX, TIME_INDEX_SUFFIX)
)
CLEANING_LEFTOVERS: Final = (*_HALF_DONE_INDEXES, CLEANED_SUFFIX, SWAP_SUFFIX)
"""Names a cleaning leaves behind: opening a partition finishes or removes them first."""


def _end_offset(files: Files, path: str, base: int) -> int:
    """The offset after the last batch of a (whole) segment file, by its headers."""
    handle = files.open(path)
    try:
        size, pos, end = handle.size(), 0, base
        while pos + BATCH_HEADER_SIZE <= size:
            header = handle.pread(BATCH_HEADER_SIZE, pos)
            fields = BATCH_HEADER_STRUCT.unpack(header)
            end = fields[0] + fields[6] + 1
            pos += fields[1] + BATCH_LOG_OVERHEAD
        return end
    finally:
        handle.close_quietly()
