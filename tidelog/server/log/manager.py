"""The data directory: topics, their partitions' logs, and the housekeeping they need.

Layout (see docs/STORAGE.md)::

    <data_dir>/
      .lock                               held (flock) while a process owns the directory
      .tidelog_clean_shutdown             only between a clean close and the next open
      recovery-point-offset-checkpoint
      log-start-offset-checkpoint
      topics/<topic>.json                 partitions and config overrides: the commit record
      <topic>-<partition>/                one PartitionLog each (with a copy of the topic file)

Creating a topic makes its partition directories first and writes ``topics/<topic>.json``
last: a crash in between leaves empty directories without a topic file, removed at the next
open. Deleting renames the topic file to ``<topic>.json.deleted`` first (the commit), then
renames each partition directory to ``<random>-delete`` and removes it; the next open finishes
whatever a crash interrupted. A damaged topic file is rebuilt from its copies
(:mod:`.topicfiles`); a :class:`~.scrub.Scrubber` verifies the segments in the background.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import Iterable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Final

from tidelog.wire.errors import (
    InvalidConfigError,
    InvalidPartitionsError,
    StorageError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)

from .cache import HandleCache
from .checkpoint import (
    CLEAN_SHUTDOWN_FILE,
    LOG_START_FILE,
    RECOVERY_POINT_FILE,
    read_offsets,
)
from .cleaner import CleanerSettings, LogCleaner
from .config import (
    Clock,
    TopicConfig,
    TopicPartition,
    system_clock,
    validate_topic_name,
)
from .damage import Damage
from .files import DirectoryLock, Files, FileSystem, lock_directory
from .flush import GroupCommitter
from .housekeeping import Housekeeping
from .memfs import MemoryFileSystem
from .partition import PartitionLog
from .scrub import DEFAULT_SCRUB_BYTES_PER_SECOND, DEFAULT_SCRUB_INTERVAL_MS, Scrubber
from .topicfiles import TOPICS_DIR, TopicFiles, TopicRecord

logger = logging.getLogger("tidelog.server.log")

LOCK_FILE: Final = ".lock"
DELETE_SUFFIX: Final = "-delete"
TOMBSTONE_SUFFIX: Final = ".json.deleted"
MAX_PARTITIONS: Final = 10_000
MAX_OPEN_SEGMENTS: Final = 256
"""Default bound on the descriptors held by inactive segments, across all logs."""


@dataclass(frozen=True, slots=True)
class TopicInfo:
    """A topic as stored: its partition count, effective config and the overrides it keeps."""

    name: str
    partitions: int
    config: TopicConfig
    overrides: Mapping[str, Any] = field(default_factory=dict)
    topic_id: str = ""
    """The cluster's id of the topic; empty for a topic of a single broker."""


class LogManager:
    """Owns a data directory: one :class:`PartitionLog` and :class:`GroupCommitter` per
    partition, topic creation and deletion, persisted configs, the recovery point checkpoint,
    retention and background flushes (:meth:`run_housekeeping`, on a schedule after
    :meth:`start`), and a clean shutdown (:meth:`close`)."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        defaults: TopicConfig | None = None,
        clock: Clock = system_clock,
        fs: FileSystem | None = None,
        max_open_segments: int = MAX_OPEN_SEGMENTS,
        retention_check_interval_ms: int = 5 * 60 * 1000,
        checkpoint_interval_ms: int = 60 * 1000,
        housekeeping_interval_ms: int = 100,
        flush_executor: Executor | None = None,
        scrub_bytes_per_second: int = DEFAULT_SCRUB_BYTES_PER_SECOND,
        scrub_interval_ms: int = DEFAULT_SCRUB_INTERVAL_MS,
        cleaner: CleanerSettings | None = None,
    ) -> None:
        """Configure; nothing touches the disk until :meth:`open`.

        ``defaults`` are the topic config defaults (a topic persists only its overrides).
        ``max_open_segments`` bounds the descriptors of inactive segments across all logs.
        ``housekeeping_interval_ms`` is how often the loop started by :meth:`start` wakes;
        retention and checkpoints run at their own intervals, by the injected ``clock``.
        ``flush_executor`` runs the fsyncs (default: the event loop's thread pool).
        ``scrub_bytes_per_second`` bounds the background scrubber's reads (0: no scrubbing);
        ``scrub_interval_ms`` is how often it checks each segment again. ``cleaner`` bounds
        the log cleaner of compacted topics (:mod:`.cleaner`).
        """
        self.data_dir = os.fspath(data_dir)
        self.default_config = TopicConfig() if defaults is None else defaults
        self._files = Files(fs)
        self._clock = clock
        self._cache = HandleCache(max_open_segments)
        self._topics: dict[str, TopicInfo] = {}
        self._logs: dict[TopicPartition, PartitionLog] = {}
        self._committers: dict[TopicPartition, GroupCommitter] = {}
        self._creating: set[str] = set()
        self._flush_executor = flush_executor
        self._housekeeping = Housekeeping(
            self.data_dir,
            self._files,
            self._logs,
            self._committers,
            clock,
            retention_interval_ms=retention_check_interval_ms,
            checkpoint_interval_ms=checkpoint_interval_ms,
            interval_ms=housekeeping_interval_ms,
        )
        self._dir_lock: DirectoryLock | None = None
        self._task: asyncio.Task[None] | None = None
        self._topic_files = TopicFiles(self._files, self.data_dir)
        self.scrubber = Scrubber(
            self._logs.values,
            self._files,
            bytes_per_second=scrub_bytes_per_second,
            interval_ms=scrub_interval_ms,
            clock=clock,
        )
        self._scrub_task: asyncio.Task[None] | None = None
        self.cleaner = LogCleaner(self._logs.values, self._files, clock, cleaner)
        self._clean_task: asyncio.Task[None] | None = None
        self._opened = False
        self._closed = False
        self.had_clean_shutdown = False

    def open(self) -> LogManager:
        """Lock the data directory (created if missing), finish interrupted creates and
        deletes, and open every partition -- recovering them unless the last shutdown was
        clean. Returns ``self``. Raises :class:`StorageError` (the directory is then
        unlocked again)."""
        if self._opened:
            raise StorageError(f"the log manager of {self.data_dir} is already open")
        self._opened = True
        self._files.makedirs(os.path.join(self.data_dir, TOPICS_DIR))
        self._lock()
        try:
            self._load()
        except BaseException:
            self._abandon()
            raise
        now = self._clock()
        self._housekeeping.schedule(now)
        return self

    def _lock(self) -> None:
        if isinstance(self._files.fs, MemoryFileSystem):
            return  # its files belong to this process alone: there is nothing to share
        self._dir_lock = lock_directory(self.data_dir, LOCK_FILE)

    def _unlock(self) -> None:
        lock, self._dir_lock = self._dir_lock, None
        if lock is not None:
            lock.release()

    def _load(self) -> None:
        files = self._files
        marker = os.path.join(self.data_dir, CLEAN_SHUTDOWN_FILE)
        self.had_clean_shutdown = files.exists(marker)
        if self.had_clean_shutdown:
            files.remove(marker)  # durably gone before the first append can happen
            files.sync_dir(self.data_dir)
        points = read_offsets(files, os.path.join(self.data_dir, RECOVERY_POINT_FILE))
        starts = read_offsets(files, os.path.join(self.data_dir, LOG_START_FILE))
        topics_dir = os.path.join(self.data_dir, TOPICS_DIR)
        for entry in files.listdir(topics_dir):
            path = os.path.join(topics_dir, entry)
            if entry.endswith(TOMBSTONE_SUFFIX):
                self._finish_delete(entry[: -len(TOMBSTONE_SUFFIX)])
            elif entry.endswith(".json"):
                self._add_topic(self._topic_files.read(entry[: -len(".json")]))
            elif entry.endswith(".tmp"):
                files.remove(path, missing_ok=True)
        orphans: dict[str, list[str]] = {}
        for entry in files.listdir(self.data_dir):
            path = os.path.join(self.data_dir, entry)
            if entry.endswith(".tmp"):
                files.remove(path, missing_ok=True)  # an atomic write cut short
                continue
            if entry.endswith(DELETE_SUFFIX) and files.isdir(path):
                logger.info("removing %s left by an interrupted topic deletion", entry)
                files.remove_tree(path)
                continue
            tp = TopicPartition.parse_dir_name(entry)
            if tp is None or not files.isdir(path):
                continue
            owner = self._topics.get(tp.topic)
            unclaimed = owner is None or tp.partition >= owner.partitions
            if unclaimed and self._topic_files.holds_data(path) and owner is None:
                orphans.setdefault(tp.topic, []).append(path)
        for name, paths in orphans.items():
            record = self._topic_files.adopt(name, paths)
            if record is not None:
                self._add_topic(record)
        for info in self._topics.values():
            for partition in range(info.partitions):
                tp = TopicPartition(info.name, partition)
                self._open_log(
                    tp,
                    info.config,
                    points.get(tp, 0),
                    self.had_clean_shutdown,
                    log_start=starts.get(tp),
                )
        self.checkpoint()

    def _add_topic(self, record: TopicRecord) -> None:
        try:
            validate_topic_name(record.name)
            config = self.default_config.with_overrides(record.overrides)
        except (InvalidConfigError, ValueError) as exc:
            path = self._topic_files.path(record.name)
            raise StorageError(
                f"topic file {path} holds an invalid config ({exc}): correct it by hand and "
                "start the broker again"
            ) from exc
        self._topics[record.name] = TopicInfo(
            record.name, record.partitions, config, record.overrides, record.topic_id
        )

    def _open_log(
        self,
        tp: TopicPartition,
        config: TopicConfig,
        recovery_point: int,
        clean: bool,
        *,
        log_start: int | None = None,
    ) -> PartitionLog:
        return self._add_log(tp, self._new_log(tp, config, recovery_point, clean, log_start))

    def _new_log(
        self,
        tp: TopicPartition,
        config: TopicConfig,
        recovery_point: int = 0,
        clean: bool = False,
        log_start: int | None = None,
    ) -> PartitionLog:
        return PartitionLog.open(
            os.path.join(self.data_dir, tp.dir_name),
            config,
            clock=self._clock,
            files=self._files,
            cache=self._cache,
            recovery_point=recovery_point,
            clean_shutdown=clean,
            name=str(tp),
            log_start=log_start,
        )

    def _add_log(self, tp: TopicPartition, log: PartitionLog) -> PartitionLog:
        log.on_suspect = self.scrubber.suspect
        log.on_start_moving = self._housekeeping.start_moving
        self._logs[tp] = log
        self._committers[tp] = GroupCommitter(log, self._flush_executor)
        return log

    def _write_topic(self, info: TopicInfo) -> None:
        self._topic_files.write(
            TopicRecord(info.name, info.partitions, dict(info.overrides), info.topic_id)
        )

    # --- topics -----------------------------------------------------------------------------

    def topics(self) -> dict[str, TopicInfo]:
        """Every topic by name."""
        return dict(self._topics)

    def topic(self, name: str) -> TopicInfo:
        """A topic; :class:`UnknownTopicOrPartitionError` if there is none."""
        try:
            return self._topics[name]
        except KeyError:
            raise UnknownTopicOrPartitionError(f"unknown topic {name!r}") from None

    def topic_config(self, name: str) -> TopicConfig:
        """A topic's effective config (defaults with its overrides)."""
        return self.topic(name).config

    def partition_count(self, name: str) -> int | None:
        """How many partitions a topic has, or ``None`` if it does not exist."""
        info = self._topics.get(name)
        return None if info is None else info.partitions

    def create_topic(
        self,
        name: str,
        partitions: int = 1,
        config: Mapping[str, Any] | None = None,
        topic_id: str = "",
    ) -> TopicInfo:
        """Create a topic with ``partitions`` empty logs and ``config`` overrides of the
        defaults. Raises InvalidTopicNameError, InvalidPartitionsError, InvalidConfigError,
        TopicAlreadyExistsError or StorageError (nothing is left behind then)."""
        info = self._new_topic(name, partitions, config, topic_id)
        return self._register_topic(info, self._make_logs(info))

    async def create_topic_async(
        self,
        name: str,
        partitions: int = 1,
        config: Mapping[str, Any] | None = None,
        topic_id: str = "",
    ) -> TopicInfo:
        """:meth:`create_topic` with the file work in a worker thread, so that creating
        thousands of partitions never stalls the event loop. The topic is invisible until
        all its logs exist; a second create of the same name meanwhile is refused."""
        info = self._new_topic(name, partitions, config, topic_id)
        self._creating.add(name)
        try:
            logs = await asyncio.to_thread(self._make_logs, info)
        finally:
            self._creating.discard(name)
        return self._register_topic(info, logs)

    def _new_topic(
        self, name: str, partitions: int, config: Mapping[str, Any] | None, topic_id: str = ""
    ) -> TopicInfo:
        self._check_open()
        validate_topic_name(name)
        if isinstance(partitions, bool) or not isinstance(partitions, int):
            raise InvalidPartitionsError(f"partitions must be an integer, not {partitions!r}")
        if not 1 <= partitions <= MAX_PARTITIONS:
            raise InvalidPartitionsError(f"partitions must be between 1 and {MAX_PARTITIONS}")
        effective = self.default_config.with_overrides(config or {})
        if name in self._topics or name in self._creating:
            raise TopicAlreadyExistsError(f"topic {name!r} already exists")
        for p in range(partitions):
            dir_name = TopicPartition(name, p).dir_name
            if self._files.exists(os.path.join(self.data_dir, dir_name)):
                raise TopicAlreadyExistsError(f"directory {dir_name} already exists")
        overrides = effective.overrides_from(self.default_config)
        return TopicInfo(name, partitions, effective, overrides, topic_id)

    def _make_logs(self, info: TopicInfo) -> list[PartitionLog]:
        """Create a new topic's logs and its topic file; on failure remove what was made.
        Touches no shared state of the manager: it may run in a worker thread."""
        logs: list[PartitionLog] = []
        try:
            for p in range(info.partitions):
                tp = TopicPartition(info.name, p)
                logs.append(self._new_log(tp, info.config))
            self._files.sync_dir(self.data_dir)
            self._write_topic(info)
        except StorageError:
            for log in logs:
                log.abandon()
            for p in range(info.partitions):
                self._remove_quietly(
                    os.path.join(self.data_dir, TopicPartition(info.name, p).dir_name)
                )
            raise
        return logs

    def _register_topic(self, info: TopicInfo, logs: list[PartitionLog]) -> TopicInfo:
        if self._closed:  # stopped while a worker thread made the logs
            for log in logs:
                log.close()
            raise StorageError(f"the log manager of {self.data_dir} is closed")
        for p, log in enumerate(logs):
            self._add_log(TopicPartition(info.name, p), log)
        self._topics[info.name] = info
        logger.info("created topic %s with %d partition(s)", info.name, info.partitions)
        return info

    def alter_topic_config(
        self,
        name: str,
        updates: Mapping[str, Any],
        deletes: Iterable[str] = (),
        *,
        validate_only: bool = False,
    ) -> TopicInfo:
        """Set some config keys of a topic and reset others (``deletes``) to the defaults.
        The result is validated (:class:`InvalidConfigError`), persisted, then applied to the
        topic's logs; with ``validate_only`` nothing changes."""
        self._check_open()
        info = self.topic(name)
        overrides = dict(info.overrides)
        for key in deletes:
            overrides.pop(key, None)
        overrides.update(updates)
        config = self.default_config.with_overrides(overrides)
        updated = TopicInfo(
            name, info.partitions, config, config.overrides_from(self.default_config), info.topic_id
        )
        if validate_only:
            return updated
        self._write_topic(updated)
        self._topics[name] = updated
        for partition in range(info.partitions):
            self._logs[TopicPartition(name, partition)].update_config(config)
        return updated

    def delete_topic(self, name: str) -> None:
        """Delete a topic and its data, crash-safely (see the module docstring)."""
        self._check_open()
        info = self.topic(name)
        topic_file = os.path.join(self.data_dir, TOPICS_DIR, name + ".json")
        for partition in range(info.partitions):
            log = self._logs.get(TopicPartition(name, partition))
            if log is not None:
                log.abandon()
        self._files.rename(topic_file, topic_file[: -len(".json")] + TOMBSTONE_SUFFIX)
        self._files.sync_dir(os.path.join(self.data_dir, TOPICS_DIR))
        del self._topics[name]
        self._finish_delete(name)
        self.checkpoint()  # a topic created with this name later starts afresh
        logger.info("deleted topic %s", name)

    def _finish_delete(self, name: str) -> None:
        """Remove every partition directory of a topic whose tombstone exists, then the
        tombstone (also what opening the data directory does for a delete a crash cut)."""
        files = self._files
        doomed = []
        for entry in files.listdir(self.data_dir):
            tp = TopicPartition.parse_dir_name(entry)
            if tp is not None and tp.topic == name:
                self._drop_partition(tp, remove=False)
                path = os.path.join(self.data_dir, f"{uuid.uuid4().hex}{DELETE_SUFFIX}")
                files.rename(os.path.join(self.data_dir, entry), path)
                doomed.append(path)
        files.sync_dir(self.data_dir)
        for path in doomed:
            files.remove_tree(path)
        tombstone = os.path.join(self.data_dir, TOPICS_DIR, name + TOMBSTONE_SUFFIX)
        files.remove(tombstone, missing_ok=True)

    def _drop_partition(self, tp: TopicPartition, *, remove: bool) -> None:
        log = self._logs.pop(tp, None)
        self._committers.pop(tp, None)
        if log is not None:
            log.abandon()
        if remove:
            self._remove_quietly(os.path.join(self.data_dir, tp.dir_name))

    def _remove_quietly(self, path: str) -> None:
        if self._files.exists(path):
            try:
                self._files.remove_tree(path)
            except StorageError as exc:
                logger.error("could not remove %s: %s", path, exc)

    # --- partitions -------------------------------------------------------------------------

    def get_log(self, tp: TopicPartition) -> PartitionLog:
        """The log of a partition; :class:`UnknownTopicOrPartitionError` if there is none."""
        try:
            return self._logs[tp]
        except KeyError:
            raise UnknownTopicOrPartitionError(f"unknown partition {tp}") from None

    def committer(self, tp: TopicPartition) -> GroupCommitter:
        """The group committer of a partition (the one the manager's own flushes use)."""
        self.get_log(tp)
        return self._committers[tp]

    @property
    def files(self) -> Files:
        """The file layer every log of this manager uses."""
        return self._files

    @property
    def descriptors(self) -> tuple[int, int]:
        """What the logs may hold open: one per partition (its active segment), and at most
        this many more for older segments being read."""
        return len(self._logs), self._cache.capacity

    def logs(self) -> dict[TopicPartition, PartitionLog]:
        return dict(self._logs)

    async def flush(self, tp: TopicPartition) -> None:
        """fsync everything appended to a partition so far."""
        await self.committer(tp).flush()

    # --- housekeeping -----------------------------------------------------------------------

    async def run_cleaner(self) -> int:
        """Clean every compacted log that is due now; returns how many were cleaned."""
        return await self.cleaner.clean_once()

    def run_retention(self) -> int:
        """Apply every topic's retention now; returns how many segments were deleted."""
        return self._housekeeping.run_retention()

    def checkpoint(self) -> None:
        """Persist every log's recovery point and log start offset (atomically)."""
        self._housekeeping.checkpoint()

    async def run_housekeeping(self) -> None:
        """One round of the background work, by the injected clock
        (:meth:`Housekeeping.run_once`)."""
        await self._housekeeping.run_once()

    # --- integrity --------------------------------------------------------------------------

    async def verify(self, tp: TopicPartition, offset: int, max_bytes: int) -> list[Damage]:
        """Check on disk what a fetch of ``max_bytes`` from ``offset`` returns: a client found
        a batch there that failed its CRC. Damage found is isolated (the fetch then gets
        ``DAMAGED_RANGE``); returns what is new."""
        return await self.scrubber.verify(self.get_log(tp), offset, max_bytes)

    async def start(self) -> None:
        """Run :meth:`run_housekeeping` every ``housekeeping_interval_ms`` until :meth:`stop`."""
        self._check_open()
        if self._task is None:
            self._task = asyncio.create_task(self._housekeeping.run(), name="log-housekeeping")
        if self._scrub_task is None and self.scrubber.bytes_per_second > 0:
            self._scrub_task = asyncio.create_task(self.scrubber.run(), name="log-scrubber")
        if self._clean_task is None:
            self._clean_task = asyncio.create_task(self.cleaner.run(), name="log-cleaner")

    async def stop(self) -> None:
        """Stop housekeeping, let running fsyncs end, then :meth:`close` off the loop."""
        self.scrubber.stop()
        self.cleaner.stop()
        tasks = [t for t in (self._task, self._scrub_task, self._clean_task) if t is not None]
        self._task = self._scrub_task = self._clean_task = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for committer in list(self._committers.values()):
            await committer.wait_idle()
        await asyncio.to_thread(self.close)

    # --- shutdown ---------------------------------------------------------------------------

    def close(self) -> None:
        """Flush and close every log, write the checkpoint and -- only if all of that worked
        -- the clean shutdown marker, so the next open can skip recovery."""
        if self._closed:
            return
        self._closed = True
        clean = True
        try:
            for tp, log in self._logs.items():
                if log.offline is not None:
                    clean = False
                try:
                    log.close()
                except StorageError as exc:
                    clean = False
                    logger.error("%s: could not close cleanly: %s", tp, exc)
            self.checkpoint()
            if clean:
                marker = os.path.join(self.data_dir, CLEAN_SHUTDOWN_FILE)
                self._files.write_atomically(marker, b"")
        finally:
            self._unlock()

    def _abandon(self) -> None:
        self._closed = True
        for log in self._logs.values():
            log.abandon()
        self._unlock()

    def _check_open(self) -> None:
        if not self._opened or self._closed:
            raise StorageError(f"the log manager of {self.data_dir} is closed")

    def __enter__(self) -> LogManager:
        return self if self._opened else self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()
