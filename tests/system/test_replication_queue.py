"""Queue workers through broker SIGKILLs in a replicated cluster (issue 18: "queue workers, where
queues exist, run through the kill loop"), the cluster form of :mod:`.test_queue_crash`.

Three brokers, replication factor 3, min ISR 2; 200 messages in a one-partition topic, 4 queue
workers that ack what they get. The partition's leader is SIGKILLed
(``TIDELOG_REPLICATION_QUEUE_KILLS`` times, once in ``make test``) while the workers hold
messages, and started again. Checked: a message whose ack was answered is never delivered
again, and in the end every message is acked.

Today this fails, so it is marked xfail (strict: it must be unmarked once it passes). Seen
after the SIGKILL of the topic partition's leader: in one run acked messages were delivered
again (m0, m5, m10, ...: the share state written before the kill was not on the new leader);
in another, the workers got nothing at all any more (each ``anext`` timed out for 40 s), even
once the killed broker was back. The likely cause (not confirmed here): share-group state,
like consumer-group state, is written outside the acks=all replication path (docs/CLUSTER.md,
"Limits of this version").
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from pathlib import Path

import pytest

from tidelog.client import AdminClient, Producer, QueueConsumer
from tidelog.wire.errors import TidelogError

from .cluster import Cluster, cluster
from .history import settled

KILLS = int(os.environ.get("TIDELOG_REPLICATION_QUEUE_KILLS", "0"))  # make soak: 3
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


async def run(c: Cluster) -> tuple[Counter[bytes], list[str]]:
    async with AdminClient(live(c)) as admin:
        await admin.create_topic("jobs", 1, 3)
    async with Producer(live(c), acks="all", enable_idempotence=True) as producer:
        for i in range(MESSAGES):
            await producer.send("jobs", f"m{i}".encode())
        await producer.flush()
    acked: Counter[bytes] = Counter()
    bad: list[str] = []
    for _ in range(KILLS):
        await asyncio.to_thread(
            c.wait_until, "every replica in sync", lambda: settled(c, 3, "jobs", 1), 60
        )
        bad += await work(live(c), acked, 5)
        victim = (await asyncio.to_thread(c.partitions, "jobs"))[0].leader
        await asyncio.to_thread(c.kill, victim)
        bad += await work(live(c, victim), acked, 5)
        await asyncio.to_thread(c.start, victim)
    bad += await work(live(c), acked, 0)
    return acked, bad


@pytest.mark.skipif(
    KILLS < 1, reason="a known gap (xfail), run by make soak: TIDELOG_REPLICATION_QUEUE_KILLS=3"
)
@pytest.mark.xfail(
    reason="share state is not replicated before it is answered: after a partition leader's "
    "SIGKILL acked messages come again, or nothing is delivered (docs/CLUSTER.md, limits)",
    strict=True,
)
def test_queue_workers_through_broker_sigkills_keep_acks(tmp_path: Path) -> None:
    with cluster(tmp_path, 3, options=OPTIONS) as c:
        acked, bad = asyncio.run(asyncio.wait_for(run(c), 120 + 60 * KILLS))
    print(f"\n{KILLS} broker kills: {sum(acked.values())} acks, {len(bad)} violations")
    assert not bad, bad[:10]
    assert sorted(acked) == sorted(f"m{i}".encode() for i in range(MESSAGES))
