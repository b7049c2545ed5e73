"""Replication under leader SIGKILLs, checked Jepsen-style (docs/CLUSTER.md, "Replication";
the invariants of the reliability note; the history and checker are :mod:`.history`).

Three brokers. An idempotent acks=all producer (30 s delivery timeout) writes unique values
while a consumer reads; the leader of a partition is SIGKILLed and started again:
``TIDELOG_REPLICATION_KILLS`` times (20 in ``make test``) at replication factor 3, min ISR 2,
and ``TIDELOG_REPLICATION_F2_KILLS`` times (6 in ``make test``) at the specification's factor
2, min ISR 1. The checker finds no violation of I1-I6, and after the run each partition's
replicas hold the same batches up to the high watermark.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from .cluster import LEASE_TTL_S, Cluster, cluster
from .history import (
    PARTITIONS,
    TOPIC,
    History,
    assert_replicas_agree,
    check,
    settled,
    summary,
    under_load,
)

KILLS = int(os.environ.get("TIDELOG_REPLICATION_KILLS", "20"))
F2_KILLS = int(os.environ.get("TIDELOG_REPLICATION_F2_KILLS", "6"))
RESUME_WITHIN_S = LEASE_TTL_S + 5.0
OPTIONS = ("--replication-factor", "3", "--min-insync-replicas", "2")


async def kill_loop(c: Cluster, history: History, kills: int, factor: int) -> list[float]:
    """SIGKILL the leader of a partition and start it again, ``kills`` times; the seconds until
    the first acknowledgement of that partition after each kill."""
    gaps = []
    for i in range(kills):
        await asyncio.to_thread(
            c.wait_until, "every replica in sync", lambda: settled(c, factor), 60
        )
        partition = i % PARTITIONS
        victim = (await asyncio.to_thread(c.partitions, TOPIC))[partition].leader
        killed = time.monotonic()
        await asyncio.to_thread(c.kill, victim)
        async with asyncio.timeout(RESUME_WITHIN_S), history.acked:
            await history.acked.wait_for(
                lambda p=partition, t=killed: history.last_ack(p) > t  # type: ignore[misc]
            )
        gaps.append(history.last_ack(partition) - killed)
        await asyncio.to_thread(c.start, victim)
    return gaps


@pytest.mark.parametrize(
    ("factor", "min_isr", "kills"),
    [(3, 2, KILLS), (2, 1, F2_KILLS)],
    ids=["factor3-min2", "factor2-min1"],
)
def test_leader_sigkills_lose_no_acknowledged_write_and_replicas_agree(
    tmp_path: Path, factor: int, min_isr: int, kills: int
) -> None:
    with cluster(tmp_path, 3, options=OPTIONS) as c:
        history, gaps, final, elapsed = asyncio.run(
            under_load(c, factor, min_isr, lambda h: kill_loop(c, h, kills, factor))
        )
        print(
            f"\nfactor {factor}, min ISR {min_isr}: {kills} leader kills in {elapsed:.1f}s: "
            f"{summary(history, elapsed)}, acks resumed after {max(gaps):.2f}s at most "
            f"(median {sorted(gaps)[len(gaps) // 2]:.2f}s)"
        )
        violations = check(history, final)
        assert not violations, "\n".join(violations[:20])
        assert sum(o.outcome == "ok" for o in history.ops) > kills * 10
        assert_replicas_agree(c, final)


def test_controlled_shutdown_of_each_broker_in_turn_fails_no_send(tmp_path: Path) -> None:
    """SIGTERM each broker in turn under load (and start it again): its leaderships move to
    in-sync followers while it still serves (it says so before it stops), so every send
    succeeds, and the checker finds nothing."""
    with cluster(tmp_path, 3, options=OPTIONS) as c:

        async def shutdowns(history: History) -> None:
            for broker in (1, 2, 3):
                await asyncio.to_thread(
                    c.wait_until, "every replica in sync", lambda: settled(c, 3), 60
                )
                before = len(history.ops)
                assert await asyncio.to_thread(c.brokers[broker].terminate) == 0
                lines = c.brokers[broker].stderr_lines  # read by a thread: it may lag
                await asyncio.to_thread(
                    c.wait_until, "its leaderships handed over",
                    lambda ls=lines: any("leaderships handed over: stopping" in x for x in ls), 10,
                )  # fmt: skip
                c.brokers[broker].close()  # its pipes
                async with asyncio.timeout(30), history.acked:  # sends go on meanwhile
                    await history.acked.wait_for(
                        lambda b=before: sum(o.outcome == "ok" for o in history.ops[b:]) >= 50
                    )
                await asyncio.to_thread(c.start, broker)

        history, _, final, elapsed = asyncio.run(under_load(c, 3, 2, shutdowns))
    failed = [o for o in history.ops if o.outcome != "ok"]
    print(f"\n3 controlled shutdowns: {summary(history, elapsed)}")
    assert not failed, [(o.value, o.outcome, o.error) for o in failed[:5]]
    violations = check(history, final)
    assert not violations, "\n".join(violations[:20])
