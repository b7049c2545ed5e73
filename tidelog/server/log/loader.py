"""Opening a partition directory: find the segments, clean up leftovers, recover what a crash
may have damaged, and find what is missing -- without ever giving up intact data.

* Every segment's end is found. Segments that may hold unflushed data (unclean start: from the
  one holding the recovery point) are checked batch by batch (:mod:`.check`); the others by a
  short header walk from their last offset index entry (a failing walk checks the segment).
* A check isolates damage (``damaged-ranges.json``) and restores the stamped fields its CRC
  proves; only a bad *tail* of the newest segment -- bytes with no good batch after them, a
  torn write -- is cut. Nothing after a bad batch is ever deleted.
* Segments must follow on: a gap between two is a *missing* range, reported and kept (a fetch
  inside it gets ``MISSING_RANGE``); overlapping segments are ambiguous and refused, naming
  the files and the fix.
* What the checkpoints knew is kept: a log shorter than its recovery point (flushed data lost)
  continues at the recovery point, a first segment above the checkpointed log start keeps the
  start; an empty placeholder segment marks each such missing range on disk.
"""

from __future__ import annotations

import logging
import os
from bisect import bisect_right
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Final

from tidelog.wire.errors import StorageError

from .cache import HandleCache
from .check import report_check
from .cleanerstate import CLEANER_CHECKPOINT_FILE
from .cleaning import CLEANING_LEFTOVERS, finish_interrupted_swaps
from .damage import DAMAGE_FILE, Damage, read_damage
from .files import Files, Handle
from .index import INDEX_SUFFIX, TIME_INDEX_SUFFIX
from .producers import SNAPSHOT_SUFFIX
from .segment import DELETED_SUFFIX, LOG_SUFFIX, LogSegment
from .segments import delete_segments

logger = logging.getLogger("tidelog.server.log")

LEFTOVER_SUFFIXES: Final = (DELETED_SUFFIX, ".tmp", ".cleaned", ".swap")
"""Files of an interrupted delete (or write): removed on open (after a cleaning's swap was
finished: :func:`~.cleaning.finish_interrupted_swaps`)."""
KNOWN_FILES: Final = frozenset(
    {DAMAGE_FILE, "partition.metadata", CLEANER_CHECKPOINT_FILE, "leader-epoch-checkpoint"}
)
"""Files of a partition directory that are not segments."""


@dataclass(frozen=True, slots=True)
class LoadReport:
    """What opening a partition found: how it was opened, what recovery cut, isolated and
    restored, and which offset ranges no segment holds."""

    clean: bool
    segments: int
    recovered_segments: int = 0
    truncated_bytes: int = 0
    rebuilt_from: int | None = None
    """Base offset of the first segment that recovery checked, if any."""
    damaged: tuple[Damage, ...] = ()
    """Damaged ranges found by this open's checks."""
    repaired: int = 0
    """Batches whose stamped fields (offset, length, epoch, magic) were restored."""
    missing: tuple[tuple[int, int], ...] = field(default=())
    """Offset ranges ``[start, end)`` no segment holds."""


def _parse(name: str) -> tuple[int, str] | None:
    stem, dot, suffix = name.partition(".")
    if not dot or len(stem) != 20 or not stem.isdigit():
        return None
    return int(stem), "." + suffix


class _Loader:
    """One open of one partition directory (see the module docstring)."""

    def __init__(
        self,
        directory: str,
        files: Files,
        cache: HandleCache,
        interval: int,
        name: str,
        now: int,
    ) -> None:
        self.directory = directory
        self.files = files
        self.cache = cache
        self.interval = interval
        self.name = name
        self.now = now
        self.segments: list[LogSegment] = []
        self.checked: list[LogSegment] = []
        self.created: list[LogSegment] = []
        self.truncated = 0
        self.damaged: list[Damage] = []
        self.repaired = 0

    def list_segments(self) -> list[int]:
        bases: list[int] = []
        indexes: list[tuple[int, str]] = []
        entries = self.files.listdir(self.directory)
        if any(entry.endswith(CLEANING_LEFTOVERS) for entry in entries):
            finish_interrupted_swaps(self.files, self.directory, self.name)
            entries = self.files.listdir(self.directory)
        for entry in entries:
            path = os.path.join(self.directory, entry)
            if entry.endswith(LEFTOVER_SUFFIXES):
                logger.info("%s: removing leftover file %s", self.name, entry)
                self.files.remove(path, missing_ok=True)
                continue
            parsed = _parse(entry)
            if parsed is not None and parsed[1] == LOG_SUFFIX:
                bases.append(parsed[0])
            elif parsed is not None and parsed[1] in (INDEX_SUFFIX, TIME_INDEX_SUFFIX):
                indexes.append((parsed[0], path))
            elif parsed is not None and parsed[1] == SNAPSHOT_SUFFIX:
                continue  # a producer-state snapshot (core/idempotence.py)
            elif entry not in KNOWN_FILES:
                logger.warning("%s: ignoring unexpected file %s", self.name, entry)
        known = set(bases)
        for base, path in indexes:
            if base not in known:
                logger.info("%s: removing index without a segment: %s", self.name, path)
                self.files.remove(path, missing_ok=True)
        return sorted(bases)

    def check(self, segment: LogSegment, end_offset: int | None) -> Damage | None:
        """Check a whole segment, write its repairs, record its damage; returns a bad tail."""
        result = segment.check(end_offset)
        new = segment.apply_check(result)
        self.damaged.extend(new)
        self.repaired += len(result.repairs)
        report_check(self.name, segment.log_path, result, new)
        self.checked.append(segment)
        return result.tail

    def placeholder(self, base: int, *, active: bool) -> LogSegment:
        """An empty segment at ``base``: it marks on disk where a missing range ends."""
        segment = LogSegment.create(self.directory, base, self.files, self.cache, self.interval)
        if not active:
            segment.seal()
        self.created.append(segment)
        return segment


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
    log_start: int | None = None,
) -> tuple[list[LogSegment], LoadReport]:
    """The segments of ``directory``, oldest first, the last one active and ready to append.
    ``log_start`` is the checkpointed log start offset, if known. Raises
    :class:`StorageError` if segments overlap (which copy is right cannot be told)."""
    loader = _Loader(directory, files, cache, index_interval_bytes, name, now)
    bases = loader.list_segments()
    known_damage = read_damage(files, directory, name)
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
    for segment in segments:
        found = known_damage.get(segment.base_offset, [])
        segment.damage = [r for r in found if r.end <= segment.size]
    start = len(segments) - 1 if clean_shutdown else max(bisect_right(bases, recovery_point) - 1, 0)
    tail: Damage | None = None
    for i, segment in enumerate(segments):
        # A header walk trusts the record counts in the headers (the CRC is not checked):
        # where its end disagrees with what should follow, the segment is checked.
        if i + 1 < len(segments):
            later = segments[i + 1].base_offset
            walked = i < start and _find_end(segment, loader, now)
            if not walked or segment.next_offset != later:
                loader.check(segment, later)
            continue
        segment.make_writable()  # the newest segment: active from now on
        walked = clean_shutdown and _find_end(segment, loader, now)
        if not walked or segment.next_offset != recovery_point:  # a clean close left them equal
            tail = loader.check(segment, None)
    if tail is not None:
        _cut_tail(segments[-1], tail, loader)
    for older, newer in pairwise(segments):
        if older.next_offset > newer.base_offset:
            raise StorageError(
                f"{name}: {os.path.basename(older.log_path)} holds offsets up to "
                f"{older.next_offset - 1}, but {os.path.basename(newer.log_path)} starts at "
                f"{newer.base_offset}: the segments overlap (files restored from a backup?) "
                f"and which copy is right cannot be told. Move one of them out of "
                f"{directory} and start the broker again"
            )
    segments = _keep_checkpointed(segments, loader, recovery_point, log_start)
    missing = tuple(
        (older.next_offset, newer.base_offset)
        for older, newer in pairwise(segments)
        if older.next_offset < newer.base_offset
    )
    for first, end in missing:
        logger.error(
            "%s: offsets [%d, %d) are missing: no segment holds them (a deleted or cut "
            "segment file); a fetch there gets MISSING_RANGE",
            name,
            first,
            end,
        )
    last = segments[-1]
    if not last.active:
        last.make_writable()
    last.restore_writer_state(now)
    _sync([*loader.checked, *loader.created], files, directory)
    checked = len(loader.checked)
    if checked:
        logger.info(
            "%s: checked %d segment(s) batch by batch; the log ends at offset %d (%d bytes cut)",
            name,
            checked,
            last.next_offset,
            loader.truncated,
        )
    return segments, LoadReport(
        clean=clean_shutdown,
        segments=len(segments),
        recovered_segments=checked,
        truncated_bytes=loader.truncated,
        rebuilt_from=min((s.base_offset for s in loader.checked), default=None),
        damaged=tuple(loader.damaged),
        repaired=loader.repaired,
        missing=missing,
    )


def _find_end(segment: LogSegment, loader: _Loader, now: int) -> bool:
    """Find a segment's end by a header walk (cheap; for the active one, also what appends
    need: its largest timestamp); ``False`` if it must be checked."""
    try:
        if not segment.active:
            return segment.find_sealed_end()
        if not segment.find_end():
            return False
        segment.restore_writer_state(now)
        return True
    except StorageError as exc:
        logger.warning("%s: %s is unreadable as it stands: %s", loader.name, segment.log_path, exc)
        return False


def _cut_tail(segment: LogSegment, tail: Damage, loader: _Loader) -> None:
    """Cut a bad tail off the newest segment: bytes after its last good batch that hold no
    batch (a torn write); everything before them stays."""
    cut = segment.cut_tail(tail.position)
    loader.truncated += cut
    logger.warning(
        "%s: recovery cut %d bytes from %s at byte %d (offset %d): %s",
        loader.name,
        cut,
        os.path.basename(segment.log_path),
        tail.position,
        tail.first_offset,
        tail.reason,
    )


def _keep_checkpointed(
    segments: list[LogSegment], loader: _Loader, recovery_point: int, log_start: int | None
) -> list[LogSegment]:
    """Keep the offsets the checkpoints knew: a log that ends below its recovery point lost
    flushed data (it continues at the recovery point, after a missing range); a log that
    starts above the checkpointed start lost its first segments (the start stays). A
    checkpointed start above the first segment finishes a retention a crash cut short."""
    name = loader.name
    if not segments:
        base = max(recovery_point, log_start or 0)
        if not base:  # a new log: its first flush makes the files durable
            files, cache, interval = loader.files, loader.cache, loader.interval
            return [LogSegment.create(loader.directory, 0, files, cache, interval)]
        logger.error("%s: every segment is gone; offsets below %d are missing", name, base)
        if log_start is not None and log_start < base:
            segments.append(loader.placeholder(log_start, active=False))
        segments.append(loader.placeholder(base, active=True))
        return segments
    end = segments[-1].next_offset
    if recovery_point > end:
        logger.error(
            "%s: the log ends at offset %d, below its recovery point %d: flushed data is "
            "gone; appends continue at %d",
            name,
            end,
            recovery_point,
            recovery_point,
        )
        if segments[-1].active:
            segments[-1].seal()
        segments.append(loader.placeholder(recovery_point, active=True))
    first = segments[0].base_offset
    if log_start is None or log_start == first:
        return segments
    if log_start < first:
        segments.insert(0, loader.placeholder(log_start, active=False))
        return segments
    doomed = [s for s in segments[:-1] if s.next_offset <= log_start]
    if not doomed or segments[len(doomed)].base_offset != log_start:
        logger.warning(
            "%s: ignoring the checkpointed log start %d: it is not where a segment starts",
            name,
            log_start,
        )
        return segments
    logger.info("%s: finishing a retention cut short: the log starts at %d", name, log_start)
    delete_segments(doomed, loader.files, loader.directory)
    return segments[len(doomed) :]


def _sync(segments: list[LogSegment], files: Files, directory: str) -> None:
    """Make recovery's cuts, repairs and rebuilt indexes durable before anything is appended."""
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
