"""Network partitions in a replicated cluster (the reliability note's F5; issue 18: "a leader
cut off from etcd only; a follower cut off from the leader only: 0 violations; a deposed leader
acknowledges nothing").

Three brokers, replication factor 3, min ISR 2, the load and checker of :mod:`.history`. The
faults come from userspace proxies (:mod:`.netproxy`) that blackhole connections: bytes
dropped, nothing closed, the nastier case than a reset.

* **A leader cut off from etcd only.** Each broker reaches etcd through a proxy of its own.
  The leader of a partition is blackholed from etcd while clients and the other brokers still
  reach it: its lease runs out, the controller elects another in-sync replica, the followers
  move to it, and the deposed leader, which still believes it leads, must acknowledge nothing
  (the checker's I1 and I4: an acknowledgement of a write the new leader never had) while the
  clients find the new leader. Healed, it rejoins the ISR. ``TIDELOG_NETCUT_ETCD_CUTS`` rounds
  (2 in ``make test``, one per partition).
* **A follower cut off from its leader only.** Each broker sits behind a proxy that it
  advertises (``advertised_port``), and the proxy tells a replica fetcher's connections by
  the client id of their handshake (``replica-<id>``): exactly the fetches of one follower
  from the leader are blackholed, everything else passes. The leader shrinks the ISR after
  ``replica_lag_time_max_ms`` and goes on acknowledging with the other follower; healed, the
  follower catches up and rejoins the ISR. Then both followers are cut: acks=all stops with
  NOT_ENOUGH_REPLICAS, and nothing acknowledged is lost.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tidelog.server.cluster.records import NO_LEADER

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
from .netproxy import FaultProxy

ETCD_CUTS = int(os.environ.get("TIDELOG_NETCUT_ETCD_CUTS", "2"))
RESUME_WITHIN_S = 40.0
"""From a cut to the partition's first acknowledgement on its new leader."""
WRITES_PER_CUT = 15
LAG_MS = 2000
OPTIONS = (
    "--replication-factor", "3", "--min-insync-replicas", "2",
    "--replica-lag-time-max-ms", str(LAG_MS),
)  # fmt: skip


@contextmanager
def proxied(
    tmp_path: Path, start: Callable[[dict[int, FaultProxy], Cluster, int], None]
) -> Iterator[tuple[Cluster, dict[int, FaultProxy]]]:
    """Three brokers, each begun by ``start(proxies, cluster, id)``; every proxy stopped
    at the end."""
    proxies: dict[int, FaultProxy] = {}
    try:
        with cluster(tmp_path, 3, options=OPTIONS, start=lambda c, b: start(proxies, c, b)) as c:
            yield c, proxies
    finally:
        for proxy in proxies.values():
            proxy.stop()


def leader(c: Cluster, partition: int) -> int:
    return c.partitions(TOPIC)[partition].leader


async def ack_after(history: History, partition: int, since: float, within: float) -> float:
    """Wait for an acknowledgement of ``partition`` later than ``since``; its time."""
    async with asyncio.timeout(within), history.acked:
        await history.acked.wait_for(lambda: history.last_ack(partition) > since)
    return history.last_ack(partition)


# --- a leader cut off from etcd -------------------------------------------------------------


def etcd_behind_proxy(proxies: dict[int, FaultProxy], c: Cluster, broker: int) -> None:
    proxies[broker] = FaultProxy(("127.0.0.1", c.etcd.client_port)).start()
    c.start(broker, endpoint=proxies[broker].address)


def etcd_revision(c: Cluster) -> int:
    return c.etcd_call(lambda e: e.range(c.keys.prefix, prefix=True))[1]


async def etcd_cut_loop(
    c: Cluster, proxies: dict[int, FaultProxy], history: History
) -> tuple[list[tuple[float, float]], int]:
    """Blackhole the etcd connections of a partition's leader until another leads it and
    acknowledges a write, then heal; per round, the seconds from the cut to the election and
    to the first acknowledgement after it; and the etcd writes of all rounds."""
    rounds = []
    before = await asyncio.to_thread(etcd_revision, c)
    for i in range(ETCD_CUTS):
        await asyncio.to_thread(c.wait_until, "every replica in sync", lambda: settled(c, 3), 60)
        partition = i % PARTITIONS
        victim = await asyncio.to_thread(leader, c, partition)
        cut = time.monotonic()
        proxies[victim].blackhole()
        try:
            await asyncio.to_thread(
                c.wait_until,
                f"another leader of partition {partition}",
                lambda p=partition, v=victim: leader(c, p) not in (v, NO_LEADER),
            )
            elected = time.monotonic()
            acked = await ack_after(history, partition, elected, RESUME_WITHIN_S)
        finally:
            proxies[victim].heal()
        rounds.append((elected - cut, acked - cut))
    await asyncio.to_thread(c.wait_until, "every replica in sync", lambda: settled(c, 3), 60)
    return rounds, await asyncio.to_thread(etcd_revision, c) - before


def test_a_leader_cut_off_from_etcd_is_deposed_and_acknowledges_nothing(tmp_path: Path) -> None:
    with proxied(tmp_path, etcd_behind_proxy) as (c, proxies):
        history, (rounds, writes), final, elapsed = asyncio.run(
            under_load(c, 3, 2, lambda h: etcd_cut_loop(c, proxies, h))
        )
        print(
            f"\n{ETCD_CUTS} leaders blackholed from etcd in {elapsed:.1f}s: "
            f"{summary(history, elapsed)}; new leader elected after "
            f"{max(e for e, _ in rounds):.2f}s at most, first ack on it "
            f"{max(a for _, a in rounds):.2f}s after the cut at most; {writes} etcd writes"
        )
        # A cut costs a handful of writes (the lease's keys, an election, the ISR out and back
        # in, a registration); a leader re-adding a broker the controller takes out, hundreds.
        assert writes <= WRITES_PER_CUT * ETCD_CUTS
        violations = check(history, final)
        assert not violations, "\n".join(violations[:20])
        assert_replicas_agree(c, final)
