"""Queue workers through broker SIGKILLs in a replicated cluster (issue 18: "queue workers, where
queues exist, run through the kill loop"), the cluster form of :mod:`.test_queue_crash`.

Three brokers, replication factor 3, min ISR 2; 200 messages in a one-partition topic, 4 queue
workers that ack what they get. ``TIDELOG_REPLICATION_QUEUE_KILLS`` times (2 in ``make test``,
10 in ``make soak``) a broker is SIGKILLed while the workers hold messages, and started again:
the leader of the queue's partition, and every other time the group's share coordinator (the
leader of its ``__share_group_state`` partition). Checked: a message whose ack was answered is
never delivered again, and in the end every message is acked.

Before the share state went through the replication path (and share requests to the group's
coordinator), this failed: acked messages came again after a kill (the new leader's broker had
its own, older share state), or nothing was delivered at all.
"""

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
from tidelog.server.groups.records import partition_for
from tidelog.server.shares import SHARE_STATE_TOPIC
from tidelog.server.shares.store import SHARE_STATE_PARTITIONS
from tidelog.wire.errors import TidelogError

from .cluster import Cluster, cluster
from .history import settled

KILLS = int(os.environ.get("TIDELOG_REPLICATION_QUEUE_KILLS", "2"))  # make soak: 10
MESSAGES = 200
OPTIONS = ("--replication-factor", "3", "--min-insync-replicas", "2")


def live(c: Cluster, down: int = 0) -> str:
    return ",".join(c.address(b) for b in sorted(c.brokers) if b != down)


async def work(address: str, acked: Counter[bytes], rounds: int) -> list[str]:
    """4 workers take and ack for ``rounds`` rounds (until nothing comes, if ``rounds`` is 0);
    the violations seen: a message delivered again after its ack was answered."""
    bad: list[str] = []
    queues = [QueueConsumer(address, "g", "jobs", max_records=5) for _ in range(4)]
    try:
        for q in queues:
            q.max_wait_ms = 50
            await q.start()
        done = 0
        while rounds == 0 or done < rounds:
            done += 1
            progressed = False
            for q in queues:
                try:
                    async with asyncio.timeout(1):
                        message = await anext(q)
                except (TimeoutError, TidelogError):
                    continue
                progressed = True
                assert message.value is not None
                if acked[message.value]:
                    bad.append(f"{message.value!r} delivered again after its ack")
                try:
                    await message.ack()
                except TidelogError:
                    continue  # not answered: it may come again
                acked[message.value] += 1
            if rounds == 0 and not progressed:
                break
    finally:
        for q in queues:
            await q.close()
    return bad


def victim_of(c: Cluster, kill: int) -> int:
    """The leader of the queue's partition, and every other time the group's coordinator
    (the leader of its ``__share_group_state`` partition), if another broker."""
    if kill % 2:
        state = c.partitions(SHARE_STATE_TOPIC)[partition_for("g", SHARE_STATE_PARTITIONS)]
        return state.leader
    return c.partitions("jobs")[0].leader


async def run(c: Cluster) -> tuple[Counter[bytes], list[str]]:
    async with AdminClient(live(c)) as admin:
        await admin.create_topic("jobs", 1, 3)
    async with Producer(live(c), acks="all", enable_idempotence=True) as producer:
        for i in range(MESSAGES):
            await producer.send("jobs", f"m{i}".encode())
        await producer.flush()
    acked: Counter[bytes] = Counter()
    bad: list[str] = []
    for kill in range(KILLS):
        await asyncio.to_thread(
            c.wait_until, "every replica in sync", lambda: settled(c, 3, "jobs", 1), 60
        )
        bad += await work(live(c), acked, 5)
        victim = await asyncio.to_thread(victim_of, c, kill)
        await asyncio.to_thread(c.kill, victim)
        bad += await work(live(c, victim), acked, 5)
        await asyncio.to_thread(c.start, victim)
    bad += await work(live(c), acked, 0)
    return acked, bad


def test_queue_workers_through_broker_sigkills_keep_acks(tmp_path: Path) -> None:
    with cluster(tmp_path, 3, options=OPTIONS) as c:
        acked, bad = asyncio.run(asyncio.wait_for(run(c), 120 + 60 * KILLS))
    print(f"\n{KILLS} broker kills: {sum(acked.values())} acks, {len(bad)} violations")
    assert not bad, bad[:10]
    assert sorted(acked) == sorted(f"m{i}".encode() for i in range(MESSAGES))


async def dead_letter_everywhere(c: Cluster) -> dict[int, list[tuple[bytes, bytes]]]:
    """A 3-partition queue whose dead-letter topic has 3 partitions too (the dead letters of
    source partition p go to partition p), so their leaders are spread over the brokers: at
    least two are led by another broker than the group's coordinator. A message rejected in
    each partition, and one nacked until its attempts are spent; the dead-letter topic's
    records by partition, as (value, reason)."""
    async with AdminClient(live(c)) as admin:
        await admin.create_topic("jobs", 3, 3)
        await admin.create_topic("jobs.dlq", 3, 3)
    await alter_queue(live(c), "g", max_delivery_attempts=2)
    async with Producer(live(c), acks="all") as producer:
        for p in range(3):
            await producer.send("jobs", f"reject-{p}".encode(), partition=p)
        await producer.send("jobs", b"poison", partition=0)
        await producer.flush()
    async with QueueConsumer(live(c), "g", "jobs") as q:
        settled_ = 0
        while settled_ < 4:
            message = await asyncio.wait_for(anext(q), 30)
            if message.value == b"poison":
                await message.nack(delay=0, error="still broken")
                settled_ += message.delivery_count == 2
            else:
                await message.reject("bad input")
                settled_ += 1
    out: dict[int, list[tuple[bytes, bytes]]] = {}
    async with Consumer(live(c), auto_offset_reset="earliest") as consumer:
        consumer.assign([TopicPartition("jobs.dlq", p) for p in range(3)])
        async with asyncio.timeout(30):
            async for record in consumer:
                assert record.value is not None
                headers = dict(record.headers)
                out.setdefault(record.partition, []).append(
                    (record.value, headers["tidelog.dlq.reason"] or b"")
                )
                if sum(map(len, out.values())) == 4:
                    break
    return out


def test_dead_letters_reach_partitions_led_by_other_brokers(tmp_path: Path) -> None:
    with cluster(tmp_path, 3, options=OPTIONS) as c:
        dead = asyncio.run(asyncio.wait_for(dead_letter_everywhere(c), 120))
        coordinator = victim_of(c, 1)
        leaders = {p: s.leader for p, s in c.partitions("jobs.dlq").items()}
    assert any(leader != coordinator for leader in leaders.values()), leaders
    assert sorted(dead[0]) == [(b"poison", b"max_attempts"), (b"reject-0", b"rejected")]
    assert dead[1] == [(b"reject-1", b"rejected")]
    assert dead[2] == [(b"reject-2", b"rejected")]
