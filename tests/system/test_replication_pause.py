"""A leader paused (SIGSTOP) past its lease, then resumed (SIGCONT): the zombie leader of the
reliability note's F4 (issue 18: "a deposed leader acknowledges nothing").

Three brokers, replication factor 3, min ISR 2, the load and checker of :mod:`.history`. The
leader of a partition is stopped; its etcd lease runs out (it cannot keep it alive while
stopped) and the controller elects another in-sync replica in etcd. Only then is the old
leader resumed: it still holds the producer's and the consumer's requests that reached it
while stopped, and it believes it leads. Every one of them must fail or stay unknown: the
checker's I1 (every ok send is in the final log at its offset) and I4 (one value per offset)
would see an acknowledgement from the deposed leader of a write the new leader never had, and
I5 a read from it that later vanished.
``TIDELOG_REPLICATION_PAUSES`` rounds (2 in ``make test``, one per partition).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

from .cluster import Cluster, cluster
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

PAUSES = int(os.environ.get("TIDELOG_REPLICATION_PAUSES", "2"))
RESUME_WITHIN_S = 40.0
"""The producer's in-flight requests to the stopped leader get no answer until it resumes (or
its 30 s request timeout): the partition's acknowledgements wait for that."""
OPTIONS = ("--replication-factor", "3", "--min-insync-replicas", "2")


async def pause_loop(c: Cluster, history: History) -> list[float]:
    """Pause the leader of a partition until the controller has elected another, then resume
    it; the seconds from each pause to the partition's next acknowledgement."""
    gaps = []
    for i in range(PAUSES):
        await asyncio.to_thread(c.wait_until, "every replica in sync", lambda: settled(c, 3), 60)
        partition = i % PARTITIONS
        victim = (await asyncio.to_thread(c.partitions, TOPIC))[partition].leader
        paused = time.monotonic()
        os.kill(c.brokers[victim].pid, signal.SIGSTOP)
        try:
            await asyncio.to_thread(
                c.wait_until,
                f"another leader of partition {partition}",
                lambda p=partition, v=victim: c.partitions(TOPIC)[p].leader not in (v, -1),
            )
        finally:
            os.kill(c.brokers[victim].pid, signal.SIGCONT)
        async with asyncio.timeout(RESUME_WITHIN_S), history.acked:
            await history.acked.wait_for(
                lambda p=partition, t=paused: history.last_ack(p) > t  # type: ignore[misc]
            )
        gaps.append(history.last_ack(partition) - paused)
    return gaps


def test_a_leader_paused_past_its_lease_acknowledges_nothing_once_deposed(
    tmp_path: Path,
) -> None:
    with cluster(tmp_path, 3, options=OPTIONS) as c:
        history, gaps, final, elapsed = asyncio.run(under_load(c, 3, 2, lambda h: pause_loop(c, h)))
        print(
            f"\n{PAUSES} leader pauses in {elapsed:.1f}s: {summary(history, elapsed)}, acks "
            f"resumed on the new leader after {max(gaps):.2f}s at most"
        )
        violations = check(history, final)
        assert not violations, "\n".join(violations[:20])
        assert_replicas_agree(c, final)
