"""Opening a partition directory: find the segments, clean up leftovers, recover what a crash
may have damaged.

After a clean shutdown only the active segment's end is located (from its last index entry).
Otherwise every segment from the one holding the recovery point onwards is checked batch by
batch (:meth:`LogSegment.recover`); the log is cut at the first torn or corrupt batch, later
segments are deleted, the indexes of every checked segment are rebuilt and the result is
fsynced before the log accepts appends. One log line says what was cut.
"""

from __future__ import annotations

import logging
import os
from bisect import bisect_right
from dataclasses import dataclass
from itertools import pairwise
from typing import Final

from tidelog.wire.errors import StorageError

from .cache import HandleCache
from .files import Files, Handle
from .index import INDEX_SUFFIX, TIME_INDEX_SUFFIX
from .producers import SNAPSHOT_SUFFIX
from .segment import DELETED_SUFFIX, LOG_SUFFIX, LogSegment
from .segments import delete_segments

logger = logging.getLogger("tidelog.server.log")

LEFTOVER_SUFFIXES: Final = (DELETED_SUFFIX, ".tmp", ".cleaned", ".swap")
"""Files of an interrupted delete (or write, or a future compaction): removed on open."""


@dataclass(frozen=True, slots=True)
class LoadReport:
    """What opening a partition found: how it was opened and what recovery cut."""

    clean: bool
    segments: int
    recovered_segments: int = 0
    truncated_bytes: int = 0
    removed_segments: int = 0
    rebuilt_from: int | None = None
    """Base offset of the first segment that recovery checked, if any."""


def _parse(name: str) -> tuple[int, str] | None:
    stem, dot, suffix = name.partition(".")
    if not dot or len(stem) != 20 or not stem.isdigit():
        return None
    return int(stem), "." + suffix


def load_segments(
    directory: str,
    files: Files,
    cache: HandleCache,
    *,
    index_interval_bytes: int,
    recovery_point: int,
    clean_shutdown: bool,
    now: int,
    name: str,
) -> tuple[list[LogSegment], LoadReport]:
    """The segments of ``directory``, oldest first, the last one active and ready to append."""
    bases: list[int] = []
    indexes: list[tuple[int, str]] = []
    for entry in files.listdir(directory):
        path = os.path.join(directory, entry)
        if entry.endswith(LEFTOVER_SUFFIXES):
            logger.info("%s: removing leftover file %s", name, entry)
            files.remove(path, missing_ok=True)
            continue
        parsed = _parse(entry)
        if parsed is not None and parsed[1] == LOG_SUFFIX:
            bases.append(parsed[0])
        elif parsed is not None and parsed[1] in (INDEX_SUFFIX, TIME_INDEX_SUFFIX):
            indexes.append((parsed[0], path))
        elif parsed is not None and parsed[1] == SNAPSHOT_SUFFIX:
            continue  # a producer-state snapshot (core/idempotence.py)
        else:
            logger.warning("%s: ignoring unexpected file %s", name, entry)
    known = set(bases)
    for base, path in indexes:
        if base not in known:
            logger.info("%s: removing index without a segment: %s", name, path)
            files.remove(path, missing_ok=True)
    bases.sort()

    if not bases:
        segment = LogSegment.create(directory, 0, files, cache, index_interval_bytes)
        segment.restore_writer_state(now)
        return [segment], LoadReport(clean=clean_shutdown, segments=1)

    segments = [
        LogSegment.existing(
            directory,
            base,
            files,
            cache,
            index_interval_bytes,
            files.size(os.path.join(directory, f"{base:020d}{LOG_SUFFIX}")),
        )
        for base in bases
    ]
    for older, newer in pairwise(segments):
        older.next_offset = newer.base_offset
    last = segments[-1]
    last.make_writable()

    if clean_shutdown:
        try:
            if last.find_end():
                last.restore_writer_state(now)
                return segments, LoadReport(clean=True, segments=len(segments))
        except StorageError as exc:
            logger.warning("%s: active segment unreadable after a clean shutdown: %s", name, exc)
        logger.warning("%s: the active segment does not end on a batch boundary; recovering", name)
        start = len(segments) - 1
    else:
        start = max(bisect_right(bases, recovery_point) - 1, 0)
    return _recover(segments, start, files, directory, now, name, clean_shutdown)


def _recover(
    segments: list[LogSegment],
    start: int,
    files: Files,
    directory: str,
    now: int,
    name: str,
    clean: bool,
) -> tuple[list[LogSegment], LoadReport]:
    truncated = removed = 0
    checked = 0
    for i in range(start, len(segments)):
        segment = segments[i]
        if i > start and segment.base_offset != segments[i - 1].next_offset:
            previous = segments[i - 1]
            logger.error(
                "%s: segment %s starts at offset %d but the log before it ends at %d; "
                "removing it and every later segment",
                name,
                os.path.basename(segment.log_path),
                segment.base_offset,
                previous.next_offset,
            )
            truncated += _drop(segments, i, files, directory)
            removed = len(segments) - i
            del segments[i:]
            break
        report = segment.recover()
        checked += 1
        if report.truncated_bytes:
            truncated += report.truncated_bytes
            later = len(segments) - i - 1
            later_bytes = _drop(segments, i + 1, files, directory)
            truncated += later_bytes
            removed = later
            del segments[i + 1 :]
            logger.warning(
                "%s: recovery cut %d bytes from %s at byte %d (offset %d): %s; "
                "removed %d later segment(s) holding %d bytes",
                name,
                report.truncated_bytes,
                os.path.basename(segment.log_path),
                report.valid_bytes,
                report.next_offset,
                report.reason,
                later,
                later_bytes,
            )
            break
    last = segments[-1]
    last.make_writable()
    last.restore_writer_state(now)
    _sync(segments[start:], files, directory)
    logger.info(
        "%s: recovered %d segment(s) from offset %d; the log ends at offset %d (%d bytes cut)",
        name,
        checked,
        segments[start].base_offset,
        last.next_offset,
        truncated,
    )
    return segments, LoadReport(
        clean=clean,
        segments=len(segments),
        recovered_segments=checked,
        truncated_bytes=truncated,
        removed_segments=removed,
        rebuilt_from=segments[start].base_offset,
    )


def _drop(segments: list[LogSegment], first: int, files: Files, directory: str) -> int:
    # Newest first, so that a crash half-way leaves a log without a gap.
    return delete_segments(list(reversed(segments[first:])), files, directory)


def _sync(segments: list[LogSegment], files: Files, directory: str) -> None:
    """Make recovery's cuts and rebuilt indexes durable before anything is appended."""
    handles: list[Handle] = []
    try:
        for segment in segments:
            handles.extend(segment.sync_handles(with_indexes=True))
        for handle in handles:
            handle.sync()
        for segment in segments:
            segment.index_synced_version = segment.index_version
    finally:
        for handle in handles:
            handle.close_quietly()
    files.sync_dir(directory)
