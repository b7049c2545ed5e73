"""A consumer group of 3 through broker SIGKILLs in a replicated cluster (issue 18: "a consumer
group runs through the kill loop").

Three brokers, replication factor 3, min ISR 2 (``__consumer_offsets`` too). Three members in
one event loop share 6 partitions and commit by hand after every batch, with the ledger of
:mod:`.test_coordinator_crash`: an ownership map shared by the three (a partition assigned
while another member owns it, or a record handed out for a partition its member does not own,
is a violation), member epochs per member id, and every acknowledged commit. Brokers 1, 2, 3,
1, ... are SIGKILLed in turn (``TIDELOG_REPLICATION_GROUP_KILLS``, 3 in ``make test``: each
broker once, so the group's coordinator and the leaders of its partitions are among them) and
started again. After each kill, once the group consumes again, the coordinator (wherever it
now is) reports at least every offset acknowledged before the kill.

The coordinator's records go through the replication path of its ``__consumer_offsets``
partition (``replication/internal.py``) and are answered once every in-sync replica has them.
Before that they were appended directly and answered after the coordinator's own fsync: the
next leader of the partition loaded "0 record(s), 0 group(s) resumed", the first member to
heartbeat there rejoined a group of one and was assigned all 6 partitions while the other two
still owned theirs, and the offsets committed before the kill were gone.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from tidelog.client import AdminClient

from .cluster import Cluster, cluster
from .history import settled as in_sync
from .test_coordinator_crash import (
    FAST_GROUPS,
    PARTITIONS,
    TOPIC,
    Ledger,
    check_committed,
    member,
    produce,
    settled,
    wait_until,
)

KILLS = int(os.environ.get("TIDELOG_REPLICATION_GROUP_KILLS", "3"))
OPTIONS = ("--replication-factor", "3", "--min-insync-replicas", "2", *FAST_GROUPS)


def addresses(c: Cluster) -> str:
    return ",".join(c.address(b) for b in sorted(c.brokers))


async def run(c: Cluster, ledger: Ledger) -> None:
    async with AdminClient(addresses(c)) as admin:
        await admin.create_topic(TOPIC, PARTITIONS, 3)
    await produce(addresses(c))
    stop = asyncio.Event()
    members = [asyncio.create_task(member(n, addresses(c), ledger, stop)) for n in "abc"]
    try:
        await wait_until(lambda: settled(ledger), "3 members own the 6 partitions", ledger)
        for i in range(KILLS):
            await asyncio.to_thread(
                c.wait_until, "every replica in sync", lambda: in_sync(c, 3, TOPIC, PARTITIONS)
            )
            before = ledger.acks
            await wait_until(lambda b=before: ledger.acks >= b + 10, "commits", ledger)
            acked = dict(ledger.acked)
            victim = (i % 3) + 1
            port = c.address(victim).rsplit(":", 1)[1]
            await asyncio.to_thread(c.kill, victim)
            live = ",".join(c.address(b) for b in sorted(c.brokers) if b != victim)
            # More work: while commits could not be stored the members may have read to the end
            await produce(live)
            after = ledger.acks
            await wait_until(
                lambda a=after: settled(ledger) and ledger.acks >= a + 10,
                "the group consuming again",
                ledger,
            )
            await check_committed(live, acked)
            # Back on its port, as a real broker restarts: with a new port each time, a member
            # that had lost its partitions (so fetched nothing, refreshed no metadata) could
            # end up knowing only addresses nobody listens on any more.
            await asyncio.to_thread(c.start, victim, "--port", port)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*members), 60)
        await check_committed(addresses(c), ledger.acked)
    finally:
        stop.set()
        for task in members:
            task.cancel()
        await asyncio.gather(*members, return_exceptions=True)


def test_a_group_through_broker_sigkills_keeps_commits_and_owners(tmp_path: Path) -> None:
    ledger = Ledger()
    with cluster(tmp_path, 3, options=OPTIONS) as c:
        asyncio.run(asyncio.wait_for(run(c, ledger), 120 + 60 * KILLS))
    print(
        f"\n{KILLS} broker kills: {ledger.acks} commits acknowledged, member ids per member "
        f"{ {name: len(ids) for name, ids in ledger.member_ids.items()} }"
    )
    assert not ledger.violations, ledger.violations
