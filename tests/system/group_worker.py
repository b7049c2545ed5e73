"""A consumer-group member as a process, for ``test_group_crash.py`` to SIGKILL.

Usage: ``python group_worker.py ADDRESS TOPIC GROUP NAME``. At-least-once: it takes a batch,
processes it (prints it, and takes a little time), then commits. Output lines::

    assigned P [P ...] | revoked P [P ...]
    fetched P FIRST LAST        a batch handed to the application
    processed P OFFSET          one record done
    committed P NEXT            the commit after a batch succeeded: NEXT is the next offset
"""

from __future__ import annotations

import asyncio
import sys

from tidelog.client import Consumer, TopicPartition

BATCH = 10
WORK_S = 0.005
"""Processing time per record (the workload, not a synchronisation)."""


def say(*words: object) -> None:
    print(*words, flush=True)


def partitions(tps: frozenset[TopicPartition]) -> str:
    return " ".join(str(tp.partition) for tp in sorted(tps))


async def main(address: str, topic: str, group: str, name: str) -> None:
    consumer = Consumer(
        address,
        group_id=group,
        client_id=name,
        auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout=1.0,
        max_poll_records=BATCH,
    )
    async with consumer:
        consumer.subscribe(
            [topic],
            on_assigned=lambda tps: say("assigned", partitions(tps)),
            on_revoked=lambda tps: say("revoked", partitions(tps)),
        )
        while True:
            batch = await consumer.getmany(timeout=1.0)
            if not batch:
                continue
            for tp, records in batch.items():
                say("fetched", tp.partition, records[0].offset, records[-1].offset)
            for tp, records in batch.items():
                for record in records:
                    await asyncio.sleep(WORK_S)
                    say("processed", tp.partition, record.offset)
            await consumer.commit()
            for tp, records in batch.items():
                say("committed", tp.partition, records[-1].offset + 1)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
