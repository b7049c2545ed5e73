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
  clients find the new leader. Healed, it rejoins the ISR, and the cuts cost only a handful
  of etcd writes each. ``TIDELOG_NETCUT_ETCD_CUTS`` blackholes (4 in ``make test``, the
  partitions in turn), and 2 resets (every connection reset, new ones refused).
* **A follower cut off from its leader only.** Each broker sits behind a proxy that it
  advertises (``advertised_port``), and the proxy tells a replica fetcher's connections by
  the client id of their handshake (``replica-<id>``): exactly the fetches of one follower
  from the leader are blackholed, everything else passes. The leader shrinks the ISR after
  ``replica_lag_time_max_ms`` and goes on acknowledging with the other follower; healed, the
  follower catches up and rejoins the ISR. Then both followers are cut: acks=all stops with
  NOT_ENOUGH_REPLICAS, and nothing acknowledged is lost. ``TIDELOG_NETCUT_FOLLOWER_ROUNDS``
  rounds (1 in ``make test``).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tidelog.client import Producer
from tidelog.server.cluster.records import NO_LEADER

from .cluster import LEASE_TTL_S, Cluster, cluster
from .history import (
    PARTITIONS,
    TOPIC,
    History,
    Op,
    assert_replicas_agree,
    check,
    settle,
    settled,
    summary,
    under_load,
)
from .netproxy import FaultProxy, client_id

ETCD_CUTS = int(os.environ.get("TIDELOG_NETCUT_ETCD_CUTS", "4"))
FOLLOWER_ROUNDS = int(os.environ.get("TIDELOG_NETCUT_FOLLOWER_ROUNDS", "1"))
RESUME_WITHIN_S = 3 * LEASE_TTL_S + 5.0
"""From a new leader's election to the partition's first acknowledgement on it: the old
leader notices its lease lost (a TTL), then its followers' silence (another), and resigns;
its clients then find the new leader. (Before the old leader resigned on its own, they
waited more than 40 s.)"""
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
    c.start(broker, "--admin-port", "-1", endpoint=proxies[broker].address)


def readiness(c: Cluster, broker: int) -> str:
    """The broker's /ready answer: "ready", or why not."""
    answer = httpx.get(f"http://{c.brokers[broker].admin_address}/ready", timeout=5)
    return "ready" if answer.status_code == 200 else answer.text


def etcd_revision(c: Cluster) -> int:
    return c.etcd_call(lambda e: e.range(c.keys.prefix, prefix=True))[1]


def blackhole(proxy: FaultProxy) -> None:
    proxy.blackhole()


def reset(proxy: FaultProxy) -> None:
    """Every connection reset and new ones refused: the kinder cut (the broker hears of it)."""
    proxy.block()
    proxy.cut()


async def etcd_cut_loop(
    c: Cluster,
    proxies: dict[int, FaultProxy],
    history: History,
    cuts: int,
    fault: Callable[[FaultProxy], None],
) -> tuple[list[tuple[float, float]], int]:
    """Cut a partition's leader from etcd (``fault`` on its proxy) until another leads the
    partition and acknowledges a write, then heal; per round, the seconds from the cut to the
    election and to the first acknowledgement after it; and the etcd writes of all rounds."""
    rounds = []
    before = await asyncio.to_thread(etcd_revision, c)
    for i in range(cuts):
        await asyncio.to_thread(c.wait_until, "every replica in sync", lambda: settled(c, 3), 60)
        partition = i % PARTITIONS
        victim = await asyncio.to_thread(leader, c, partition)
        cut = time.monotonic()
        fault(proxies[victim])
        try:
            await asyncio.to_thread(
                c.wait_until,
                f"another leader of partition {partition}",
                lambda p=partition, v=victim: leader(c, p) not in (v, NO_LEADER),
            )
            elected = time.monotonic()
            acked = await ack_after(history, partition, elected, RESUME_WITHIN_S)
            await asyncio.to_thread(
                c.wait_until,
                f"broker {victim} fenced",
                lambda v=victim: "fenced" in readiness(c, v),
                RESUME_WITHIN_S,
            )
        finally:
            proxies[victim].heal()
        rounds.append((elected - cut, acked - cut))
    await asyncio.to_thread(c.wait_until, "every replica in sync", lambda: settled(c, 3), 60)
    return rounds, await asyncio.to_thread(etcd_revision, c) - before


@pytest.mark.parametrize(
    ("fault", "cuts"), [(blackhole, ETCD_CUTS), (reset, 2)], ids=["blackhole", "reset"]
)
def test_a_leader_cut_off_from_etcd_is_deposed_and_acknowledges_nothing(
    tmp_path: Path, fault: Callable[[FaultProxy], None], cuts: int
) -> None:
    with proxied(tmp_path, etcd_behind_proxy) as (c, proxies):
        history, (rounds, writes), final, elapsed = asyncio.run(
            under_load(c, 3, 2, lambda h: etcd_cut_loop(c, proxies, h, cuts, fault))
        )
        print(
            f"\n{cuts} leaders cut from etcd ({fault.__name__}) in {elapsed:.1f}s: "
            f"{summary(history, elapsed)}; new leader elected after "
            f"{max(e for e, _ in rounds):.2f}s at most, first ack on it "
            f"{max(a for _, a in rounds):.2f}s after the cut at most; {writes} etcd writes"
        )
        # A cut costs a handful of writes (the lease's keys, an election, the ISR out and back
        # in, a registration); a leader re-adding a broker the controller takes out, hundreds.
        assert writes <= WRITES_PER_CUT * cuts
        violations = check(history, final)
        assert not violations, "\n".join(violations[:20])
        assert_replicas_agree(c, final)


def test_brokers_keep_serving_while_etcd_is_out_of_everyones_reach(tmp_path: Path) -> None:
    """etcd blackholed for every broker at once, for several lease TTLs: every lease is lost,
    but no controller can elect anyone, the followers keep fetching, and so nobody is fenced:
    acknowledgements go on throughout. Healed, the brokers register again."""
    with proxied(tmp_path, etcd_behind_proxy) as (c, proxies):

        async def outage(history: History) -> float:
            await asyncio.to_thread(c.wait_until, "every replica in sync", lambda: settled(c, 3))
            for proxy in proxies.values():
                proxy.blackhole()
            try:
                cut = time.monotonic()
                lost = cut + 2 * LEASE_TTL_S + 1  # every lease lost (and seen lost) by now
                for p in range(PARTITIONS):
                    await ack_after(history, p, lost, 4 * LEASE_TTL_S + 10)
                answers = [await asyncio.to_thread(readiness, c, b) for b in sorted(c.brokers)]
                assert not any("fenced" in a for a in answers), answers
                return time.monotonic() - cut
            finally:
                for proxy in proxies.values():
                    proxy.heal()

        history, lasted, final, elapsed = asyncio.run(under_load(c, 3, 2, outage))
        try:
            back = c.wait_until("every broker registered", lambda: c.live_brokers() == [1, 2, 3])
        except AssertionError:
            for b, proc in c.brokers.items():
                print("BROKER", b, "".join(proc.stderr_lines[-30:]))
            raise
        print(
            f"\netcd out of reach for {lasted:.1f}s: {summary(history, elapsed)}; every "
            f"broker registered again {back:.1f}s after the final read"
        )
        violations = check(history, final)
        assert not violations, "\n".join(violations[:20])


# --- a follower cut off from its leader -----------------------------------------------------


def behind_proxy(proxies: dict[int, FaultProxy], c: Cluster, broker: int) -> None:
    """The broker behind a proxy it advertises: every client and replica fetcher reaches it
    through the proxy, which names each connection by its handshake's client id."""
    proxy = proxies[broker] = FaultProxy(tagger=client_id).start()
    c.start(broker, "--advertised-port", str(proxy.port))
    host, port = c.address(broker).rsplit(":", 1)
    proxy.set_upstream(host, int(port))


def isr(c: Cluster, partition: int) -> tuple[int, ...]:
    return c.partitions(TOPIC)[partition].isr


async def probe(address: str, history: History, partition: int) -> Op:
    """One acks=all send without retries, in the history: its outcome."""
    op = history.invoke(partition)
    async with Producer(address, acks="all", retries=0, delivery_timeout=10.0) as producer:
        future = await producer.send(TOPIC, op.value.encode(), partition=partition)
        await settle(history, op, future)
    return op


async def follower_cut_round(
    c: Cluster, proxies: dict[int, FaultProxy], history: History, partition: int
) -> tuple[dict[str, float], list[Op]]:
    """Cut one follower of ``partition`` from its leader, then heal; then cut both. The
    seconds each step took, and the probe sends made while both were cut."""
    took: dict[str, float] = {}
    await asyncio.to_thread(c.wait_until, "every replica in sync", lambda: settled(c, 3), 60)
    state = (await asyncio.to_thread(c.partitions, TOPIC))[partition]
    lead = state.leader
    first, second = (r for r in state.replicas if r != lead)
    proxy = proxies[lead]

    cut = time.monotonic()
    proxy.blackhole(lambda tag: tag == f"replica-{first}")
    try:
        took["shrink"] = await asyncio.to_thread(
            c.wait_until, f"broker {first} out of the ISR", lambda: first not in isr(c, partition)
        )
        took["ack"] = await ack_after(history, partition, time.monotonic(), 10) - cut
    finally:
        proxy.heal()
    took["rejoin"] = await asyncio.to_thread(
        c.wait_until, f"broker {first} back in the ISR", lambda: first in isr(c, partition)
    )

    proxy.blackhole(lambda tag: tag in (f"replica-{first}", f"replica-{second}"))
    probes = []
    try:
        took["shrink to the leader"] = await asyncio.to_thread(
            c.wait_until, "an ISR of the leader alone", lambda: isr(c, partition) == (lead,)
        )
        alone = time.monotonic()
        for _ in range(2):
            probes.append(await probe(c.address(lead), history, partition))
        assert history.last_ack(partition) < alone, "acknowledged by a leader alone in its ISR"
    finally:
        proxy.heal()
    took["both rejoin"] = await asyncio.to_thread(
        c.wait_until, "every replica in sync", lambda: settled(c, 3)
    )
    return took, probes


async def follower_cut_loop(
    c: Cluster, proxies: dict[int, FaultProxy], history: History
) -> tuple[dict[str, float], list[Op]]:
    """``FOLLOWER_ROUNDS`` rounds, over the partitions in turn; the longest time each step
    took, and every probe."""
    took: dict[str, float] = {}
    probes = []
    for i in range(FOLLOWER_ROUNDS):
        steps, sent = await follower_cut_round(c, proxies, history, i % PARTITIONS)
        took = {k: max(v, took.get(k, 0.0)) for k, v in steps.items()}
        probes += sent
    return took, probes


def test_a_follower_cut_off_from_its_leader_leaves_the_isr_and_returns(tmp_path: Path) -> None:
    with proxied(tmp_path, behind_proxy) as (c, proxies):
        history, (took, probes), final, elapsed = asyncio.run(
            under_load(c, 3, 2, lambda h: follower_cut_loop(c, proxies, h))
        )
        steps = ", ".join(f"{k} {v:.2f}s" for k, v in took.items())
        print(
            f"\n{FOLLOWER_ROUNDS} round(s) of followers cut from their leader in {elapsed:.1f}s: "
            f"{summary(history, elapsed)}; at most: {steps}; "
            f"{len(probes)} probes while the leader was alone: {probes[0].error}"
        )
        for op in probes:
            assert op.outcome != "ok" and "NOT_ENOUGH_REPLICAS" in op.error, op
        violations = check(history, final)
        assert not violations, "\n".join(violations[:20])
        assert_replicas_agree(c, final)
