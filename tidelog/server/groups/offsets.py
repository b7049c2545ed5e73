"""Committed offsets: an in-memory table backed by an internal log and a snapshot.

Layout, inside the data directory (hidden from clients: it is no topic, so nobody can produce
to it, fetch it or delete it)::

    <data_dir>/__consumer_offsets/
      log/                 a PartitionLog: one record batch per commit, fsynced before the
                           commit is acknowledged
      snapshot             every group's offsets as of log offset N (written atomically)
      snapshot.previous    the snapshot before it, as of log offset M <= N

A record's key is ``[group, topic, partition]`` (msgpack); its value the committed offset,
metadata, leader epoch and commit time (msgpack), or nothing: a tombstone (group deleted).

**Snapshots keep start-up short.** After ``snapshot_records`` records (and at every clean
shutdown) the store rolls the log (the new segment starts at N, the log end), keeps the current
snapshot as ``snapshot.previous`` (at M), writes the whole table with N atomically, and then
deletes the log's segments below M. Opening reads the snapshot and replays only the log from N
on. A crash at any point leaves either the old snapshot with the log it needs, or the new one;
a SIGKILL loses no acknowledged commit because each was fsynced before its answer.

**A damaged snapshot is an optimisation that failed**, not lost data: opening moves it aside
(``snapshot.damaged``, logged) and starts from the previous snapshot and the log from M, which
is still there; without a usable snapshot it replays the whole log. Only when that cannot be
done -- no usable snapshot and a log that no longer starts at 0 -- does opening refuse, naming
the files and the fix. Damaged or missing ranges of the offsets log are skipped, loudly: the
commits in them are lost, later commits of the same partitions still apply.
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
from collections.abc import Iterator, Mapping, Sequence
from typing import Final

import msgspec
from crc32c import crc32c

from tidelog.server.log import (
    FlushPolicy,
    GroupCommitter,
    PartitionLog,
    TopicConfig,
    TopicPartition,
)
from tidelog.server.log.files import Files
from tidelog.wire.errors import StorageError, UnreadableRangeError
from tidelog.wire.records import RecordBatchBuilder, iter_batches, now_ms

logger = logging.getLogger("tidelog.server.groups")

OFFSETS_DIR: Final = "__consumer_offsets"
SNAPSHOT_FILE: Final = "snapshot"
PREVIOUS_FILE: Final = "snapshot.previous"
DAMAGED_SUFFIX: Final = ".damaged"
CLEAN_FILE: Final = ".clean_shutdown"
"""Written after a clean close: the next open skips the log's recovery scan."""
SNAPSHOT_MAGIC: Final = b"TLOS"
SNAPSHOT_VERSION: Final = 1
_SNAPSHOT_HEADER: Final = struct.Struct(">4sHI")  # magic, version, CRC-32C of the body
READ_CHUNK: Final = 1024 * 1024

LOG_CONFIG: Final = TopicConfig(
    segment_bytes=16 * 1024 * 1024,
    retention_ms=-1,
    retention_bytes=0,  # with the high watermark at the snapshot: drop what it covers
    flush_policy=FlushPolicy.OS,  # commits flush explicitly
)


class OffsetValue(msgspec.Struct, frozen=True):
    """A committed offset as stored (and as OffsetFetch reports it)."""

    offset: int
    metadata: str = ""
    leader_epoch: int = -1
    commit_timestamp: int = -1


class _Snapshot(msgspec.Struct):
    log_offset: int
    groups: dict[str, list[tuple[str, int, OffsetValue]]]


_KEY = msgspec.msgpack.Decoder(tuple[str, str, int])
_VALUE = msgspec.msgpack.Decoder(OffsetValue)
_SNAPSHOT = msgspec.msgpack.Decoder(_Snapshot)
_ENCODE = msgspec.msgpack.Encoder().encode


class OffsetStore:
    """Every group's committed offsets. Synchronous except :meth:`commit`, :meth:`delete` and
    :meth:`snapshot`, which wait for the disk."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        snapshot_records: int = 10_000,
        files: Files | None = None,
    ) -> None:
        """``files``: the logs' file layer (in-memory storage keeps the offsets there too)."""
        self.directory = os.path.join(os.fspath(data_dir), OFFSETS_DIR)
        self.snapshot_records = snapshot_records
        self._files = Files() if files is None else files
        self._table: dict[str, dict[TopicPartition, OffsetValue]] = {}
        self._log: PartitionLog | None = None
        self._committer: GroupCommitter | None = None
        self._snapshot_offset = 0
        self._previous_offset = 0
        """The log must keep what is above this: the previous snapshot's offset."""
        self._has_snapshot = False
        self._snapshotting = False
        self.replayed = 0
        """Records read from the log at the last open (what the snapshot did not cover)."""

    # --- lifecycle --------------------------------------------------------------------------

    def open(self) -> None:
        """Load the newest usable snapshot and replay the log after it. Raises StorageError
        only if committed offsets cannot be rebuilt (see the module docstring)."""
        self._files.makedirs(self.directory)
        for name in self._files.listdir(self.directory):
            if name.endswith(".tmp"):
                self._files.remove(os.path.join(self.directory, name), missing_ok=True)
        current = self._read_snapshot(SNAPSHOT_FILE)
        previous = self._read_snapshot(PREVIOUS_FILE)
        marker = os.path.join(self.directory, CLEAN_FILE)
        clean = self._files.exists(marker)
        if clean:
            self._files.remove(marker)  # durably gone before the first append
            self._files.sync_dir(self.directory)
        base = current or previous
        log = PartitionLog.open(
            os.path.join(self.directory, "log"),
            LOG_CONFIG,
            recovery_point=base.log_offset if base else 0,
            clean_shutdown=clean,
            name=OFFSETS_DIR,
            files=self._files,
        )
        snapshot = self._usable(log, current, previous)
        self._has_snapshot = snapshot is current and current is not None
        if snapshot is not None:
            self._snapshot_offset = snapshot.log_offset
            for group, rows in snapshot.groups.items():
                self._table[group] = {TopicPartition(t, p): v for t, p, v in rows}
        self._previous_offset = min(
            (s.log_offset for s in (previous, snapshot) if s is not None), default=0
        )
        self.replayed = 0
        for key, value in self._records(log, self._snapshot_offset):
            self._apply(key, value)
            self.replayed += 1
        log.update_high_watermark(self._previous_offset)
        self._log = log
        self._committer = GroupCommitter(log)
        logger.info(
            "loaded committed offsets of %d group(s): snapshot at %d, %d record(s) replayed",
            len(self._table),
            self._snapshot_offset,
            self.replayed,
        )

    def _usable(
        self, log: PartitionLog, current: _Snapshot | None, previous: _Snapshot | None
    ) -> _Snapshot | None:
        """The newest snapshot the log still holds everything after; ``None``: replay the
        whole log. Raises StorageError if neither works."""
        for snapshot in (current, previous):
            if snapshot is not None and snapshot.log_offset >= log.log_start_offset:
                if snapshot is not current and current is not None:
                    logger.error(
                        "%s: the offsets log no longer holds what follows the newest snapshot; "
                        "starting from the previous one",
                        self.directory,
                    )
                return snapshot
        if log.log_start_offset == 0:
            if current or previous:
                logger.error(
                    "%s: no usable snapshot; replaying the whole offsets log", self.directory
                )
            return None
        log.abandon()
        raise StorageError(
            f"{self.directory}: no usable snapshot of the committed offsets (files "
            f"{SNAPSHOT_FILE}, {PREVIOUS_FILE}) and the offsets log starts at "
            f"{log.log_start_offset}, so the commits before it cannot be rebuilt. Restore "
            f"{os.path.join(self.directory, SNAPSHOT_FILE)} from a backup, or remove "
            f"{self.directory} to start with no committed offsets (every group then starts "
            "per its auto_offset_reset)"
        )

    def _read_snapshot(self, name: str) -> _Snapshot | None:
        """A snapshot file, or ``None`` if it is missing or damaged (moved aside, logged)."""
        path = os.path.join(self.directory, name)
        if not self._files.exists(path):
            return None
        data = self._files.read_file(path) or b""
        try:
            magic, version, crc = _SNAPSHOT_HEADER.unpack_from(data)
            body = data[_SNAPSHOT_HEADER.size :]
            if magic != SNAPSHOT_MAGIC or version != SNAPSHOT_VERSION or crc32c(body) != crc:
                raise ValueError("bad magic, version or checksum")
            return _SNAPSHOT.decode(body)
        except (struct.error, ValueError, msgspec.DecodeError) as exc:
            aside = path + DAMAGED_SUFFIX
            logger.error(
                "offsets snapshot %s is damaged (%s); moved it to %s and starting from the "
                "previous snapshot and the offsets log",
                path,
                exc,
                aside,
            )
            self._files.rename(path, aside)
            return None

    def _records(
        self, log: PartitionLog, start: int
    ) -> Iterator[tuple[tuple[str, str, int], OffsetValue | None]]:
        offset = start
        while offset < log.log_end_offset:
            try:
                read = log.read(offset, READ_CHUNK)
            except UnreadableRangeError as exc:
                logger.error("%s: commits in it are lost: %s", self.directory, exc.message)
                offset = exc.next_offset
                continue
            if read.size == 0:
                break
            for batch in iter_batches(read.records):
                for record in batch.records():
                    if record.offset < offset or record.key is None:
                        continue
                    try:
                        key = _KEY.decode(record.key)
                        value = None if record.value is None else _VALUE.decode(record.value)
                    except msgspec.DecodeError as exc:
                        logger.error("skipping a bad offsets record at %d: %s", record.offset, exc)
                        continue
                    yield key, value
            offset = read.next_offset

    async def close(self) -> None:
        """Snapshot (so the next start replays nothing), close the log and mark the shutdown
        clean (so the next start skips the recovery scan)."""
        log = self._log
        if log is None:
            return
        clean = True
        try:
            if log.offline is None and log.log_end_offset > self._snapshot_offset:
                await self.snapshot()
        except StorageError as exc:
            clean = False
            logger.error("could not snapshot committed offsets at shutdown: %s", exc)
        finally:
            if self._committer is not None:
                await self._committer.wait_idle()
            self._log = None
            clean = clean and log.offline is None
            await asyncio.to_thread(self._close_log, log, clean)

    def _close_log(self, log: PartitionLog, clean: bool) -> None:
        log.close()
        if clean:
            self._files.write_atomically(os.path.join(self.directory, CLEAN_FILE), b"")

    # --- reads ------------------------------------------------------------------------------

    def groups(self) -> list[str]:
        """Groups with committed offsets."""
        return [g for g, table in self._table.items() if table]

    def committed(self, group: str) -> dict[TopicPartition, OffsetValue]:
        return dict(self._table.get(group, {}))

    def get(self, group: str, tp: TopicPartition) -> OffsetValue | None:
        return self._table.get(group, {}).get(tp)

    # --- writes -----------------------------------------------------------------------------

    async def commit(self, group: str, offsets: Mapping[TopicPartition, OffsetValue]) -> None:
        """Store offsets durably: one batch, fsynced before this returns. The table is updated
        at once (before the fsync), so the next snapshot includes them. Raises StorageError."""
        stamp = now_ms()
        rows = [
            (
                (group, tp.topic, tp.partition),
                v if v.commit_timestamp >= 0 else _stamped(v, stamp),
            )
            for tp, v in offsets.items()
        ]
        await self._write(rows)

    async def delete(self, group: str) -> None:
        """Forget every offset of ``group`` (tombstones, fsynced). Raises StorageError."""
        rows = [((group, tp.topic, tp.partition), None) for tp in self._table.get(group, {})]
        await self._write(rows)
        self._table.pop(group, None)

    async def _write(self, rows: Sequence[tuple[tuple[str, str, int], OffsetValue | None]]) -> None:
        if not rows:
            return
        log, committer = self._require()
        builder = RecordBatchBuilder()
        for key, value in rows:
            builder.append(None if value is None else _ENCODE(value), key=_ENCODE(key))
        info = log.append(builder.build())
        for key, value in rows:
            self._apply(key, value)
        await committer.flush_until(info.next_offset)

    def _apply(self, key: tuple[str, str, int], value: OffsetValue | None) -> None:
        group, topic, partition = key
        tp = TopicPartition(topic, partition)
        if value is None:
            table = self._table.get(group)
            if table is not None:
                table.pop(tp, None)
                if not table:
                    del self._table[group]
        else:
            self._table.setdefault(group, {})[tp] = value

    def _require(self) -> tuple[PartitionLog, GroupCommitter]:
        if self._log is None or self._committer is None:
            raise StorageError("the offset store is closed")
        return self._log, self._committer

    # --- snapshots --------------------------------------------------------------------------

    def _write_snapshot(self, data: bytes) -> None:
        """Keep the current snapshot as the previous one, then write the new one (a crash in
        between leaves the previous one and the log it needs)."""
        path = os.path.join(self.directory, SNAPSHOT_FILE)
        if self._has_snapshot and self._files.exists(path):
            self._files.rename(path, os.path.join(self.directory, PREVIOUS_FILE))
        self._files.write_atomically(path, data)

    @property
    def records_since_snapshot(self) -> int:
        return 0 if self._log is None else self._log.log_end_offset - self._snapshot_offset

    def snapshot_due(self) -> bool:
        return not self._snapshotting and self.records_since_snapshot >= self.snapshot_records

    async def snapshot(self) -> None:
        """Write the table as of the log end, then drop the log segments it covers."""
        log, _ = self._require()
        if self._snapshotting:
            return
        self._snapshotting = True
        try:
            log.roll()
            offset = log.log_end_offset
            body = _ENCODE(
                _Snapshot(
                    offset,
                    {
                        g: [(tp.topic, tp.partition, v) for tp, v in sorted(table.items())]
                        for g, table in self._table.items()
                    },
                )
            )
            data = _SNAPSHOT_HEADER.pack(SNAPSHOT_MAGIC, SNAPSHOT_VERSION, crc32c(body)) + body
            await asyncio.to_thread(self._write_snapshot, data)
            self._previous_offset = (
                self._snapshot_offset if self._has_snapshot else (self._previous_offset)
            )
            self._snapshot_offset = offset
            self._has_snapshot = True
            if self._log is log and log.offline is None:
                log.update_high_watermark(self._previous_offset)
                log.delete_old_segments()
            logger.debug("offsets snapshot at log offset %d", offset)
        finally:
            self._snapshotting = False


def _stamped(value: OffsetValue, stamp: int) -> OffsetValue:
    return OffsetValue(value.offset, value.metadata, value.leader_epoch, stamp)
