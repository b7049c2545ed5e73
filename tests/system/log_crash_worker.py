"""The process ``test_log_crash.py`` kills: it appends with flush-before-ack and prints a line
for every acknowledged batch, until it is SIGKILLed.

Usage: ``python log_crash_worker.py DATA_DIR WRITERS``. Batch ``seq`` has content that
depends only on ``seq`` (:func:`batch_for`), so the test can check every byte after a crash.
Output: ``ready <log end offset> <next seq>``, then ``ack <seq> <base offset> <next offset>``.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
from typing import Any

from tidelog.server.core import WritePath
from tidelog.server.log import LogManager, TopicPartition
from tidelog.wire.messages import Acks
from tidelog.wire.records import RecordBatch, RecordBatchBuilder

TOPIC = "crash"
TP = TopicPartition(TOPIC, 0)
CONFIG: dict[str, Any] = {
    "segment_bytes": 64 * 1024,
    "index_interval_bytes": 1024,
    "flush_policy": "ack",
    "retention_ms": -1,
}


def batch_for(seq: int) -> bytes:
    """The batch a worker appends as number ``seq``: 1-5 records of 0-2 KiB."""
    builder = RecordBatchBuilder()
    for j in range(1 + seq % 5):
        size = (seq * 7919 + j * 104729) % 2048
        value = (f"{seq}.{j}|".encode() * (size // 4 + 1))[:size]
        builder.append(value, key=f"{seq}:{j}".encode(), timestamp=1_700_000_000_000 + seq)
    return builder.build()


def seq_of(batch: RecordBatch) -> int:
    key = batch.records()[0].key
    assert key is not None
    return int(key.split(b":")[0])


async def main(data_dir: str, writers: int) -> None:
    manager = LogManager(data_dir).open()
    if manager.partition_count(TOPIC) is None:
        manager.create_topic(TOPIC, 1, CONFIG)
    log = manager.get_log(TP)
    next_seq = 0
    if log.log_end_offset > 0:
        last = log.read(log.log_end_offset - 1, 0).records
        next_seq = seq_of(RecordBatch.parse(last)) + 1
    print(f"ready {log.log_end_offset} {next_seq}", flush=True)
    await manager.start()
    sequence = itertools.count(next_seq)
    writes = WritePath(manager, lambda tp: None)

    async def writer() -> None:
        while True:
            seq = next(sequence)
            info = await writes.append_durably(TP, [batch_for(seq)], Acks.LEADER)
            sys.stdout.write(f"ack {seq} {info.base_offset} {info.next_offset}\n")
            sys.stdout.flush()

    await asyncio.gather(*(writer() for _ in range(writers)))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
