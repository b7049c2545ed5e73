"""Idempotent producers across the broker: producer ids handed out durably, and each
partition's :class:`ProducerStateTable` loaded from its snapshot and log on first use.

Producer ids come in blocks of :data:`ID_BLOCK`: before the first id of a block is handed out,
the end of the block is written (atomically, fsynced) to ``producer-ids`` in the data dir, so
an id is never handed out twice, across restarts and SIGKILLs alike. In a cluster the block is
first reserved in etcd (a compare-and-set on one counter, as Kafka's controller hands out
blocks, KIP-730), so no two brokers ever hand out the same id: two producers with one id
would have each other's batches taken for duplicates and acknowledged without being written.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Final, TypeAlias

from tidelog.wire.errors import StorageError, UnreadableRangeError
from tidelog.wire.records import now_ms

from ..log import LogManager, PartitionLog, TopicPartition
from ..log.producers import SNAPSHOT_SUFFIX, ProducerStateTable, snapshot_name

log = logging.getLogger("tidelog.server.core")

ID_BLOCK: Final = 1000
DAY_MS: Final = 24 * 60 * 60 * 1000
IDS_FILE: Final = "producer-ids"
MAX_EPOCH: Final = 2**15 - 1
REPLAY_CHUNK: Final = 1 << 20
"""Bytes read at a time while rebuilding a table from the log."""


SharedBlocks: TypeAlias = Callable[[int, int], Awaitable[int]]
"""``reserve(size, at_least)``: the start of a block of ``size`` ids no other broker of the
cluster is given, at or above ``at_least`` (the cluster's etcd counter)."""


class ProducerIds:
    """Hands out producer ids, unique for the life of the data directory (and, given
    ``shared`` blocks, across the cluster)."""

    def __init__(self, logs: LogManager) -> None:
        self._logs = logs
        self._path = os.path.join(logs.data_dir, IDS_FILE)
        self._next = -1
        self._end = -1
        self._lock = asyncio.Lock()

    async def allocate(self, shared: SharedBlocks | None = None) -> int:
        """A producer id never handed out before. Raises :class:`StorageError`, or what
        ``shared`` raises (etcd unreachable)."""
        if self._next >= self._end:
            async with self._lock:  # one reservation for concurrent callers
                if self._next >= self._end:
                    start = self._local_start()
                    if shared is not None:
                        start = await shared(ID_BLOCK, start)
                    self._logs.files.write_atomically(self._path, b"%d\n" % (start + ID_BLOCK))
                    self._next, self._end = start, start + ID_BLOCK
        pid = self._next
        self._next += 1
        return pid

    def _local_start(self) -> int:
        """The first id after every block this data directory has handed out."""
        data = self._logs.files.read_file(self._path)
        if data is None:
            return 0
        text = data.decode("ascii", "replace").strip()
        try:
            return int(text)
        except ValueError:
            raise StorageError(
                f"{self._path} is damaged ({text[:40]!r}): it holds the next free "
                "producer id; write a number above every id in use (or delete it only "
                "if no producer's batches remain in any log)"
            ) from None


class ProducerStates:
    """Every partition's producer table, loaded lazily: start-up stays fast.

    A table belongs to one :class:`PartitionLog` object: once that log is closed (its topic
    deleted) the table goes too, and a topic created again under the name starts empty."""

    def __init__(self, logs: LogManager, expiration_ms: int) -> None:
        self._logs = logs
        self._expiration_ms = expiration_ms
        self._tables: dict[TopicPartition, tuple[PartitionLog, ProducerStateTable]] = {}

    def table(self, tp: TopicPartition, plog: PartitionLog) -> ProducerStateTable:
        entry = self._tables.get(tp)
        if entry is not None and entry[0] is plog:
            return entry[1]
        table = self._load(plog)
        self._tables[tp] = (plog, table)
        return table

    def forget(self, tp: TopicPartition) -> None:
        """Drop a partition's table (its log was truncated): rebuilt on next use."""
        self._tables.pop(tp, None)

    def expire(self) -> int:
        """Forget idle producers, and the tables of logs closed since (deleted topics)."""
        now = now_ms()
        for tp in [tp for tp, (plog, _) in self._tables.items() if plog.closed]:
            del self._tables[tp]
        return sum(table.expire(now) for _, table in self._tables.values())

    def snapshot(self) -> None:
        """Write each loaded table as ``<offset>.snapshot`` beside its log (at a clean close),
        removing the older ones; a failure is logged, the log replays at the next start."""
        for tp, (plog, table) in self._tables.items():
            if plog.closed or plog.offline is not None:
                continue  # deleted, or the log replays at the next start anyway
            try:
                self._write(plog, table)
            except StorageError as exc:
                log.warning("%s: could not write the producer snapshot: %s", tp, exc)

    def _write(self, plog: PartitionLog, table: ProducerStateTable) -> None:
        files = self._logs.files
        name = snapshot_name(table.offset)
        files.write_atomically(os.path.join(plog.directory, name), table.to_bytes())
        for old in self._snapshots(plog):
            if old != name:
                files.remove(os.path.join(plog.directory, old), missing_ok=True)

    def _snapshots(self, plog: PartitionLog) -> list[str]:
        names = self._logs.files.listdir(plog.directory)
        return sorted(n for n in names if n.endswith(SNAPSHOT_SUFFIX))

    def _load(self, plog: PartitionLog) -> ProducerStateTable:
        """The newest usable snapshot, then the batches after it in the log."""
        table = ProducerStateTable(self._expiration_ms)
        for name in reversed(self._snapshots(plog)):
            try:
                data = self._logs.files.read_file(os.path.join(plog.directory, name))
                loaded = ProducerStateTable.from_bytes(data or b"", self._expiration_ms)
            except (ValueError, StorageError) as exc:
                log.warning("%s: ignoring producer snapshot %s: %s", plog.name, name, exc)
                continue
            if loaded.offset <= plog.log_end_offset:
                table = loaded
                break
        offset = max(table.offset, plog.log_start_offset)
        now = now_ms()
        while offset < plog.log_end_offset:
            try:
                read = plog.read(offset, REPLAY_CHUNK, max_offset=plog.log_end_offset)
            except UnreadableRangeError as exc:  # damaged or missing: its batches are gone
                log.warning("%s: producer state skips %s", plog.name, exc.message)
                offset = exc.next_offset
                continue
            if not read.records:
                break
            offset = max(offset + 1, table.replay(read.records, now))
        table.offset = max(table.offset, plog.log_end_offset)
        return table
