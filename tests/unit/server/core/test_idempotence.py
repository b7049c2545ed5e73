"""The broker's idempotence across partitions (server/core/idempotence.py): producer ids that
are never handed out twice, and each partition's producer table loaded from snapshot and log,
snapshotted at a clean close, and dropped with the partition."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from tidelog.server.core import WritePath
from tidelog.server.core.idempotence import ID_BLOCK, IDS_FILE, ProducerIds, ProducerStates
from tidelog.server.log import LogManager, TopicPartition
from tidelog.server.log.producers import (
    SNAPSHOT_SUFFIX,
    ProducerBatch,
    ProducerStateTable,
    snapshot_name,
)
from tidelog.wire.errors import OutOfOrderSequenceError, StorageError
from tidelog.wire.messages import Acks
from tidelog.wire.records import RecordBatchBuilder

TP = TopicPartition("events", 0)
HOUR_MS = 3_600_000


def idempotent(pid: int, seq: int, *values: bytes, epoch: int = 0) -> bytes:
    builder = RecordBatchBuilder(producer_id=pid, producer_epoch=epoch, base_sequence=seq)
    for value in values:
        builder.append(value, timestamp=1)
    return builder.build()


def open_logs(data: Path) -> LogManager:
    logs = LogManager(data).open()
    if logs.partition_count(TP.topic) is None:
        logs.create_topic(TP.topic, 1, {})
    return logs


def write_path(logs: LogManager) -> WritePath:
    return WritePath(logs, lambda tp: None, ProducerStates(logs, HOUR_MS))


def snapshots(logs: LogManager) -> list[str]:
    directory = logs.get_log(TP).directory
    return sorted(n for n in os.listdir(directory) if n.endswith(SNAPSHOT_SUFFIX))


# --- producer ids ---------------------------------------------------------------------------


def test_producer_ids_are_never_handed_out_twice_across_restarts(tmp_path: Path) -> None:
    logs = open_logs(tmp_path)
    first = [asyncio.run(ProducerIds(logs).allocate()) for _ in range(3)]  # three lives
    assert first == [0, ID_BLOCK, 2 * ID_BLOCK]
    ids = ProducerIds(logs)

    async def many() -> list[int]:
        return [await ids.allocate() for _ in range(ID_BLOCK + 1)]

    assert asyncio.run(many()) == [*range(3 * ID_BLOCK, 4 * ID_BLOCK), 4 * ID_BLOCK]
    logs.close()


def test_cluster_blocks_come_from_the_shared_counter_never_below_local_ones(
    tmp_path: Path,
) -> None:
    """In a cluster each block is reserved through ``shared`` (etcd's counter), asked for at
    least the local file's next id, so ids handed out before joining are not handed out again;
    concurrent callers share one reservation."""
    logs = open_logs(tmp_path)
    asyncio.run(ProducerIds(logs).allocate())  # a standalone life: block [0, ID_BLOCK)
    asked: list[tuple[int, int]] = []
    counter = [5 * ID_BLOCK]  # other brokers reserved up to here

    async def shared(size: int, at_least: int) -> int:
        asked.append((size, at_least))
        await asyncio.sleep(0)  # let the other callers arrive meanwhile
        start = max(counter[0], at_least)
        counter[0] = start + size
        return start

    async def concurrently() -> list[int]:
        ids = ProducerIds(logs)
        return sorted(await asyncio.gather(*(ids.allocate(shared) for _ in range(3))))

    assert asyncio.run(concurrently()) == [5 * ID_BLOCK, 5 * ID_BLOCK + 1, 5 * ID_BLOCK + 2]
    assert asked == [(ID_BLOCK, ID_BLOCK)]
    assert (tmp_path / IDS_FILE).read_text().strip() == str(6 * ID_BLOCK)
    logs.close()


def test_a_damaged_ids_file_is_refused_naming_it(tmp_path: Path) -> None:
    logs = open_logs(tmp_path)
    (tmp_path / IDS_FILE).write_text("garbage")
    with pytest.raises(StorageError, match=IDS_FILE):
        asyncio.run(ProducerIds(logs).allocate())
    logs.close()


# --- tables: loaded from the log, snapshotted, dropped -----------------------------------


def test_a_restart_rebuilds_the_table_from_the_log_and_a_retry_is_not_written_twice(
    tmp_path: Path,
) -> None:
    logs = open_logs(tmp_path)
    writes = write_path(logs)
    first = writes.append(TP, [idempotent(7, 0, b"a", b"b")], Acks.LEADER)
    writes.append(TP, [idempotent(7, 2, b"c")], Acks.LEADER)
    logs.close()  # no snapshot: as after a SIGKILL, the table comes from the log alone

    logs = open_logs(tmp_path)
    writes = write_path(logs)
    again = writes.append(TP, [idempotent(7, 0, b"a", b"b")], Acks.LEADER)
    assert (again.base_offset, logs.get_log(TP).log_end_offset) == (first.base_offset, 3)
    with pytest.raises(OutOfOrderSequenceError):
        writes.append(TP, [idempotent(7, 5, b"gap")], Acks.LEADER)
    assert writes.append(TP, [idempotent(7, 3, b"d")], Acks.LEADER).base_offset == 3
    logs.close()


def test_a_clean_close_snapshots_and_the_next_start_uses_the_snapshot(tmp_path: Path) -> None:
    logs = open_logs(tmp_path)
    writes = write_path(logs)
    writes.append(TP, [idempotent(7, 0, b"a")], Acks.LEADER)
    writes.producers.snapshot()
    assert snapshots(logs) == [f"{1:020d}{SNAPSHOT_SUFFIX}"]
    writes.append(TP, [idempotent(7, 1, b"b")], Acks.LEADER)
    writes.producers.snapshot()
    assert snapshots(logs) == [f"{2:020d}{SNAPSHOT_SUFFIX}"]  # the older one removed
    logs.close()

    logs = open_logs(tmp_path)
    table = ProducerStates(logs, HOUR_MS).table(TP, logs.get_log(TP))
    assert (table.offset, table.epoch_of(7)) == (2, 0)
    logs.close()


@pytest.mark.parametrize(
    ("snapshot", "epoch"),
    [
        (lambda good: good, 3),  # used: it says epoch 3, the log says 0
        (lambda good: good[:-3], 0),  # damaged: the log is replayed instead
        (lambda good: b"", 0),
    ],
    ids=["used", "damaged", "empty"],
)
def test_the_newest_usable_snapshot_is_loaded_and_a_damaged_one_ignored(
    tmp_path: Path, snapshot: Any, epoch: int
) -> None:
    logs = open_logs(tmp_path)
    write_path(logs).append(TP, [idempotent(7, 0, b"a", b"b")], Acks.LEADER)
    told = ProducerStateTable(HOUR_MS)
    told.update(ProducerBatch(7, 3, 0, 0), 0, 1, 1)
    directory = logs.get_log(TP).directory
    with open(os.path.join(directory, snapshot_name(2)), "wb") as f:
        f.write(snapshot(told.to_bytes()))
    beyond = ProducerStateTable(HOUR_MS, offset=99)  # past the log end: not this log's
    with open(os.path.join(directory, snapshot_name(99)), "wb") as f:
        f.write(beyond.to_bytes())
    table = ProducerStates(logs, HOUR_MS).table(TP, logs.get_log(TP))
    assert (table.offset, table.epoch_of(7)) == (2, epoch)
    logs.close()


def test_a_deleted_topic_takes_its_tables_along(tmp_path: Path) -> None:
    """A table outlived its partition: a clean close then failed on the deleted topic (and
    left the logs unclosed), and a topic created again under the name got the old table."""
    logs = open_logs(tmp_path)
    writes = write_path(logs)
    writes.append(TP, [idempotent(7, 0, b"a", b"b", b"c")], Acks.LEADER)
    logs.delete_topic(TP.topic)
    writes.producers.snapshot()  # raised UnknownTopicOrPartitionError

    logs.create_topic(TP.topic, 1, {})
    again = writes.append(TP, [idempotent(7, 0, b"a", b"b", b"c")], Acks.LEADER)
    assert again.base_offset == 0
    assert logs.get_log(TP).log_end_offset == 3  # written: the new log never held it
    logs.close()
