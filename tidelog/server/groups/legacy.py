"""Reading the committed offsets of the old offsets store, to migrate them once.

Before ``__consumer_offsets`` became a topic, a broker kept committed offsets in a log of its
own with snapshots::

    <data_dir>/__consumer_offsets/
      log/                 a PartitionLog; record key [group, topic, partition] (msgpack),
                           value {offset, metadata, leader_epoch, commit_timestamp} or null
      snapshot             the whole table as of log offset N: magic "TLOS", version 1,
                           CRC-32C of the body, then the body (msgpack)
      snapshot.previous    the one before, as of log offset M <= N

:func:`read_legacy` rebuilds the table the way that store did at start-up (newest usable
snapshot, then the log after it) without writing anything of its own: a damaged snapshot is
skipped (logged), not moved aside. The migration itself is in :mod:`.coordinator`.
"""

from __future__ import annotations

import logging
import os
import struct
from typing import Final

import msgspec
from crc32c import crc32c

from tidelog.server.log import PartitionLog, TopicConfig, TopicPartition
from tidelog.server.log.files import Files
from tidelog.wire.errors import StorageError, UnreadableRangeError
from tidelog.wire.records import iter_batches

from .store import OffsetValue

logger = logging.getLogger("tidelog.server.groups")

LEGACY_DIR: Final = "__consumer_offsets"
MIGRATED_PREFIX: Final = "__consumer_offsets.migrated-"
"""Followed by a UTC time like ``20250102T030405Z``: never digits only, so the log manager
never takes the directory for a partition (``<topic>-<n>``)."""
_SNAPSHOTS: Final = ("snapshot", "snapshot.previous")
_MAGIC: Final = b"TLOS"
_VERSION: Final = 1
_HEADER: Final = struct.Struct(">4sHI")  # magic, version, CRC-32C of the body
_READ_CHUNK: Final = 1024 * 1024
_LOG_CONFIG: Final = TopicConfig(segment_bytes=16 * 1024 * 1024, retention_ms=-1)


class _Snapshot(msgspec.Struct):
    log_offset: int
    groups: dict[str, list[tuple[str, int, OffsetValue]]]


_KEY = msgspec.msgpack.Decoder(tuple[str, str, int])
_VALUE = msgspec.msgpack.Decoder(OffsetValue)
_SNAPSHOT = msgspec.msgpack.Decoder(_Snapshot)

Table = dict[str, dict[TopicPartition, OffsetValue]]


def read_legacy(directory: str) -> Table:
    """Every group's committed offsets in the old store at ``directory``. Raises
    :class:`StorageError` if they cannot be rebuilt (no usable snapshot and a log that no
    longer starts at 0), naming the files."""
    files = Files()
    snapshots = [_read_snapshot(files, os.path.join(directory, n)) for n in _SNAPSHOTS]
    log = PartitionLog.open(
        os.path.join(directory, "log"), _LOG_CONFIG, recovery_point=0, name=LEGACY_DIR
    )
    try:
        base = next(
            (s for s in snapshots if s is not None and s.log_offset >= log.log_start_offset),
            None,
        )
        if base is None and log.log_start_offset > 0:
            raise StorageError(
                f"{directory}: no usable snapshot of the old committed offsets and its log "
                f"starts at {log.log_start_offset}: they cannot be migrated. Restore "
                f"{os.path.join(directory, 'snapshot')} from a backup, or move {directory} "
                "away to start with no committed offsets"
            )
        table: Table = {}
        if base is not None:
            for group, rows in base.groups.items():
                table[group] = {TopicPartition(t, p): v for t, p, v in rows}
        _replay(log, base.log_offset if base else 0, table, directory)
        return {g: t for g, t in table.items() if t}
    finally:
        log.close()


def _read_snapshot(files: Files, path: str) -> _Snapshot | None:
    if not files.exists(path):
        return None
    data = files.read_file(path) or b""
    try:
        magic, version, crc = _HEADER.unpack_from(data)
        body = data[_HEADER.size :]
        if magic != _MAGIC or version != _VERSION or crc32c(body) != crc:
            raise ValueError("bad magic, version or checksum")
        return _SNAPSHOT.decode(body)
    except (struct.error, ValueError, msgspec.DecodeError) as exc:
        logger.error("old offsets snapshot %s is damaged (%s); not using it", path, exc)
        return None


def _replay(log: PartitionLog, offset: int, table: Table, directory: str) -> None:
    while offset < log.log_end_offset:
        try:
            read = log.read(offset, _READ_CHUNK)
        except UnreadableRangeError as exc:
            logger.error("%s: commits in it are lost: %s", directory, exc.message)
            offset = exc.next_offset
            continue
        if read.size == 0:
            break
        for batch in iter_batches(read.records):
            for record in batch.records():
                if record.offset < offset or record.key is None:
                    continue
                try:
                    group, topic, partition = _KEY.decode(record.key)
                    value = None if record.value is None else _VALUE.decode(record.value)
                except msgspec.DecodeError as exc:
                    logger.error("skipping a bad old offsets record at %d: %s", record.offset, exc)
                    continue
                tp = TopicPartition(topic, partition)
                if value is None:
                    table.get(group, {}).pop(tp, None)
                else:
                    table.setdefault(group, {})[tp] = value
        offset = read.next_offset
