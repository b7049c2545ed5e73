"""Queues and SIGKILL: the broker is killed again and again while 4 workers hold messages and a
poison message circulates. Every ack that was answered stays acked (never delivered again),
every message is acked in the end, and the poison message reaches the dead-letter topic with
exactly ``max_delivery_attempts`` deliveries counted."""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from pathlib import Path

from tidelog.client import (
    AdminClient,
    Consumer,
    Producer,
    QueueConsumer,
    TopicPartition,
    alter_queue,
)
from tidelog.wire.errors import BrokerError

from .procs import BrokerProcess

KILLS = int(os.environ.get("TIDELOG_QUEUE_KILLS", "10"))
MESSAGES = 200
MAX_ATTEMPTS = 5


def test_sigkill_loop_keeps_acks_and_counts(tmp_path: Path) -> None:
    asyncio.run(asyncio.wait_for(_main(tmp_path), 60 + 6 * KILLS))


async def _main(data_dir: Path) -> None:
    acked: Counter[bytes] = Counter()
    poison_deliveries: list[int] = []
    kills = 0
    held_at_kills = 0
    while True:
        broker = await asyncio.to_thread(BrokerProcess(data_dir).start)
        try:
            address = broker.address
            if kills == 0:
                async with AdminClient(address) as admin:
                    await admin.create_topic("jobs", 1)
                await alter_queue(address, "g", max_delivery_attempts=MAX_ATTEMPTS)
                async with Producer(address, acks="all") as producer:
                    await producer.send("jobs", b"poison")
                    for i in range(MESSAGES):
                        await producer.send("jobs", f"m{i}".encode())
                    await producer.flush()
            final = kills >= KILLS
            queues = [QueueConsumer(address, "g", "jobs", max_records=5) for _ in range(4)]
            for q in queues:
                await q.start()
            # each worker: ack a few, nack the poison, and (unless final) keep the last ones held
            for _ in range(3 if not final else 10_000):
                progressed = False
                for q in queues:
                    q.max_wait_ms = 50
                    try:
                        async with asyncio.timeout(0.3 if final else 1):
                            message = await anext(q)
                    except TimeoutError:
                        continue
                    progressed = True
                    assert message.value is not None
                    if message.value == b"poison":
                        poison_deliveries.append(message.delivery_count)
                        await message.nack(delay=0, error="poison")
                        continue
                    assert acked[message.value] == 0, f"{message.value!r} redelivered after its ack"
                    try:
                        await message.ack()
                    except BrokerError:
                        continue
                    acked[message.value] += 1
                if final and not progressed:
                    break
            if final:
                for q in queues:
                    await q.close()
                break
            held_at_kills += sum(len(q._held) for q in queues)
            broker.close()  # SIGKILL while the workers hold messages
            kills += 1
            for q in queues:
                await q._link.close()
                await q._cluster.close()
        except BaseException:
            broker.close()
            raise
    try:
        assert sorted(acked) == sorted(f"m{i}".encode() for i in range(MESSAGES))
        assert set(acked.values()) == {1}
        assert len(poison_deliveries) <= MAX_ATTEMPTS
        async with Consumer(broker.address, auto_offset_reset="earliest") as consumer:
            consumer.assign([TopicPartition("jobs.dlq", 0)])
            async with asyncio.timeout(20):
                async for record in consumer:
                    headers = dict(record.headers)
                    assert record.value == b"poison"
                    assert headers["tidelog.dlq.delivery_count"] == str(MAX_ATTEMPTS).encode()
                    break
        print(f"{kills} kills, {held_at_kills} message(s) held at a kill, redelivered")
    finally:
        broker.close()
