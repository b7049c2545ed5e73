"""Clusters of broker processes over a real etcd: placement and routing, a broker or the
controller killed, a controller paused past its lease, a topic re-created while a broker was
away, a watch cut past etcd's compaction, and bad starts (etcd down, a live broker's id, two
clusters on one etcd)."""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from tidelog.client import (
    AdminClient,
    Consumer,
    DeliveryTimeoutError,
    Producer,
    TopicPartition,
)
from tidelog.etcd import EtcdProcess
from tidelog.server.cluster.records import NO_LEADER

from .cluster import LEASE_TTL_S, Cluster, cluster, need_etcd
from .netproxy import FaultProxy
from .procs import BrokerProcess

WITHIN_S = 60.0


async def produce(address: str, topic: str, count: int, *, prefix: str = "") -> None:
    async with Producer(address, linger=0.005) as producer:
        for i in range(count):
            await producer.send(topic, f"{prefix}v{i}".encode(), key=f"k{i % 1000}".encode())
        await producer.flush()


async def consume_all(
    address: str, topic: str, expected: int
) -> dict[int, list[tuple[int, bytes]]]:
    """Every record of ``topic`` from the beginning, by partition: (offset, value)."""
    out: dict[int, list[tuple[int, bytes]]] = defaultdict(list)
    async with AdminClient(address) as admin:
        (description,) = await admin.describe_topics([topic])
    async with Consumer(address, auto_offset_reset="earliest") as consumer:
        consumer.assign([TopicPartition(topic, p) for p in range(len(description.partitions))])
        got = 0
        async with asyncio.timeout(WITHIN_S):
            while got < expected:
                batch = await consumer.getmany(timeout=1.0)
                for tp, records in batch.items():
                    for record in records:
                        out[tp.partition].append((record.offset, record.value))
                        got += 1
    return out


def test_ten_partitions_over_five_brokers_carry_100k_keyed_records_exactly_once(
    tmp_path: Path,
) -> None:
    with cluster(tmp_path, 5) as c:
        one = c.address(3)  # the client knows this broker only

        async def body() -> dict[int, list[tuple[int, bytes]]]:
            async with AdminClient(one) as admin:
                await admin.create_topic("orders", 10)
            await produce(one, "orders", 100_000)
            return await consume_all(one, "orders", 100_000)

        by_partition = asyncio.run(body())
        leaders = Counter(s.leader for s in c.partitions("orders").values())
        assert leaders == {b: 2 for b in range(1, 6)}
        values = [v for records in by_partition.values() for _, v in records]
        assert len(values) == len(set(values)) == 100_000  # exactly once
        for records in by_partition.values():
            offsets = [o for o, _ in records]
            assert offsets == list(range(len(offsets)))  # in order, nothing skipped
            sent = [int(v[1:]) for _, v in records]
            assert sent == sorted(sent)  # per-partition order of send()


def test_producers_bootstrapping_from_different_brokers_never_share_a_producer_id(
    tmp_path: Path,
) -> None:
    """Each broker hands out producer ids from blocks reserved in etcd. With ids from a
    per-broker counter, two producers got the same id and epoch, the second one's batches
    were taken for retries of the first one's and acknowledged without being written."""
    with cluster(tmp_path, 3) as c:

        async def body() -> dict[int, list[tuple[int, bytes]]]:
            async with AdminClient(c.address(1)) as admin:
                await admin.create_topic("shared", 1)
            for b in (1, 2, 3):
                await produce(c.address(b), "shared", 200, prefix=f"b{b}")
            return await consume_all(c.address(1), "shared", 600)

        values = [v for _, v in asyncio.run(body())[0]]
        assert sorted(values) == sorted(f"b{b}v{i}".encode() for b in (1, 2, 3) for i in range(200))


def test_a_killed_broker_stops_only_its_partitions_and_serves_them_again(tmp_path: Path) -> None:
    with cluster(tmp_path, 3) as c:
        controller = c.controller()
        assert controller is not None
        victim = next(b for b in (1, 2, 3) if b != controller.broker_id)
        survivor = next(b for b in (1, 2, 3) if b not in (victim, controller.broker_id))

        async def create_and_fill() -> None:
            async with AdminClient(c.address(survivor)) as admin:
                await admin.create_topic("t", 6)
            await produce(c.address(survivor), "t", 3000)

        asyncio.run(create_and_fill())
        theirs = [p for p, s in c.partitions("t").items() if s.leader == victim]
        ours = [p for p, s in c.partitions("t").items() if s.leader != victim]
        assert theirs and ours
        c.kill(victim)
        c.wait_until(
            "the victim's partitions lose their leader",
            lambda: all(c.partitions("t")[p].leader == NO_LEADER for p in theirs),
        )

        async def during() -> None:
            async with Producer(c.address(survivor), delivery_timeout=3.0) as producer:
                for p in ours:  # the others keep serving
                    await (await producer.send("t", b"during", partition=p))
                future = await producer.send("t", b"lost", partition=theirs[0])
                with pytest.raises(DeliveryTimeoutError, match="has no leader"):
                    await future

        asyncio.run(during())
        c.start(victim)
        c.wait_until(
            "the victim leads its partitions again",
            lambda: all(c.partitions("t")[p].leader == victim for p in theirs),
        )
        by_partition = asyncio.run(consume_all(c.address(victim), "t", 3000 + len(ours)))
        assert sum(len(r) for r in by_partition.values()) == 3000 + len(ours)

        # The controller dies: another broker takes over within the lease TTL and a bit.
        old = c.controller()
        assert old is not None
        c.kill(old.broker_id)
        took = c.wait_until(
            "a new controller",
            lambda: (new := c.controller()) is not None and new.broker_id != old.broker_id,
        )
        print(f"\na new controller took over {took:.2f}s after the old one was killed")


def test_a_controller_paused_past_its_lease_changes_nothing_when_it_resumes(
    tmp_path: Path,
) -> None:
    with cluster(tmp_path, 3) as c:
        old = c.controller()
        assert old is not None
        paused = c.brokers[old.broker_id]
        other = next(b for b in (1, 2, 3) if b != old.broker_id)
        os.kill(paused.pid, signal.SIGSTOP)
        try:
            c.wait_until(
                "another controller",
                lambda: (new := c.controller()) is not None and new.broker_id != old.broker_id,
            )
            asyncio.run(_create(c.address(other), "after-pause", 3))
            c.wait_until("the new topic placed", lambda: len(c.partitions("after-pause")) == 3)
            settled = c.partitions("after-pause")
            mark = len(paused.stderr_lines)
        finally:
            os.kill(paused.pid, signal.SIGCONT)
        c.wait_until(
            "the paused broker re-registers",
            lambda: any("registering again" in line for line in paused.stderr_lines[mark:]),
        )
        c.wait_until("it is back", lambda: old.broker_id in c.live_brokers())
        after = c.partitions("after-pause")
        # The paused controller was gone, so the new one moved nothing of it back
        assert {p: s.topic_id for p, s in after.items()} == {
            p: s.topic_id for p, s in settled.items()
        }
        written = [line for line in paused.stderr_lines[mark:] if "controller: " in line]
        assert written == [], f"the ex-controller wrote: {written}"


async def _create(address: str, topic: str, partitions: int) -> None:
    async with AdminClient(address) as admin:
        await admin.create_topic(topic, partitions)


def test_a_topic_recreated_while_a_broker_was_down_never_serves_the_old_log(
    tmp_path: Path,
) -> None:
    with cluster(tmp_path, 2) as c:
        asyncio.run(_create(c.address(1), "t", 2))
        asyncio.run(produce(c.address(1), "t", 200, prefix="old-"))
        away = 2
        old_dirs = sorted(p.name for p in (tmp_path / f"broker-{away}").glob("t-*"))
        assert old_dirs
        c.kill(away)
        c.wait_until("broker 2 gone", lambda: c.live_brokers() == [1])

        async def recreate() -> None:
            async with AdminClient(c.address(1)) as admin:
                await admin.delete_topics(["t"])
            # The controller removes the old partition states; then the name is free again.
            await asyncio.to_thread(c.wait_until, "old states gone", lambda: not c.partitions("t"))
            async with AdminClient(c.address(1)) as admin:
                await admin.create_topic("t", 2)
            await produce(c.address(1), "t", 10, prefix="new-")

        asyncio.run(recreate())
        c.start(away)
        c.wait_until("broker 2 back", lambda: c.live_brokers() == [1, 2])
        by_partition = asyncio.run(consume_all(c.address(away), "t", 10))
        values = [v for records in by_partition.values() for _, v in records]
        assert sorted(values) == sorted(f"new-v{i}".encode() for i in range(10))
        c.wait_until(
            "the old log is deleted from broker 2's disk",
            lambda: (
                not any(
                    (tmp_path / f"broker-{away}" / d / "00000000000000000000.log").exists()
                    and (tmp_path / f"broker-{away}" / d / "00000000000000000000.log")
                    .stat()
                    .st_size
                    for d in old_dirs
                )
            ),
        )


def test_a_broker_whose_watch_was_cut_past_a_compaction_catches_up(tmp_path: Path) -> None:
    with cluster(tmp_path, 1) as c:
        proxy = FaultProxy(("127.0.0.1", c.etcd.client_port)).start()
        try:
            c.start(2, endpoint=proxy.address)
            c.wait_until("broker 2 registered", lambda: c.live_brokers() == [1, 2])
            proxy.block()
            proxy.cut()  # broker 2 sees nothing from here on
            asyncio.run(_create(c.address(1), "while-cut", 4))
            revision = c.etcd_call(lambda e: e.put(b"/unrelated", b"x"))
            c.etcd_call(lambda e: e.compact(revision))
            proxy.unblock()
            # Broker 2 learns about the topic (it holds two of its partitions) only by reading
            # everything again: the history it missed is gone.
            lines = c.brokers[2].stderr_lines
            c.wait_until("broker 2 reads again", lambda: any("compaction" in x for x in lines))
            c.wait_until(
                "broker 2 knows the topic",
                lambda: "while-cut" in asyncio.run(_topics(c.address(2))),
            )
            asyncio.run(produce(c.address(2), "while-cut", 100))
            got = asyncio.run(consume_all(c.address(2), "while-cut", 100))
            assert sum(len(r) for r in got.values()) == 100
        finally:
            proxy.stop()


def test_bad_starts_are_refused_with_a_clear_message(tmp_path: Path) -> None:
    need_etcd()
    # etcd down: the broker keeps trying for cluster_join_timeout_s, then gives up, saying why.
    dead = f"127.0.0.1:{_free_port()}"
    proc = BrokerProcess(tmp_path / "lonely", "--etcd", dead, "--cluster-join-timeout-s", "1")
    with pytest.raises(AssertionError, match="etcd could not be reached"):
        proc.start()
    with EtcdProcess(tmp_path / "etcd") as etcd:
        a = Cluster(tmp_path / "a", etcd, "alpha")
        b = Cluster(tmp_path / "b", etcd, "beta")
        try:
            a.start(1)
            b.start(1)  # the same id in another cluster: separate prefixes, no conflict
            asyncio.run(_create(a.address(1), "only-in-alpha", 1))
            assert "only-in-alpha" not in asyncio.run(_topics(b.address(1)))
            twin = BrokerProcess(
                tmp_path / "twin", "--broker-id", "1", "--etcd", etcd.endpoint,
                "--cluster-id", "alpha", "--etcd-lease-ttl-s", str(LEASE_TTL_S),
            )  # fmt: skip
            with pytest.raises(AssertionError, match="registered by another live process"):
                twin.start()
        finally:
            a.stop_all()
            b.stop_all()


async def _topics(address: str) -> list[str]:
    async with AdminClient(address) as admin:
        return sorted(await admin.list_topics())


def _free_port() -> int:
    from tidelog.etcd import free_port

    return free_port()


def test_a_group_across_the_cluster_survives_its_coordinator_being_killed(
    tmp_path: Path,
) -> None:
    """Three members, each bootstrapping from another broker, find the group's coordinator
    (the leader of its __consumer_offsets partition). It is SIGKILLed and started again:
    no partition ever has two owners and committed offsets never move backwards."""
    from tidelog.server.groups.records import OFFSETS_TOPIC, partition_for

    from .test_coordinator_crash import (
        PARTITIONS,
        TOPIC,
        Ledger,
        check_committed,
        member,
        settled,
        wait_until,
    )
    from .test_coordinator_crash import produce as fill

    ledger = Ledger()
    with cluster(tmp_path, 3) as c:

        async def main() -> None:
            stop = asyncio.Event()
            members: list[asyncio.Task[None]] = []
            try:
                await _create(c.address(1), TOPIC, PARTITIONS)
                await fill(c.address(2))
                members = [
                    asyncio.create_task(member(n, c.address(b), ledger, stop))
                    for n, b in zip("abc", (1, 2, 3), strict=True)
                ]
                await wait_until(lambda: settled(ledger), "3 members own the 6 partitions", ledger)
                offsets = await asyncio.to_thread(c.partitions, OFFSETS_TOPIC)
                coordinator = offsets[partition_for("g", len(offsets))].leader
                others = [b for b in (1, 2, 3) if b != coordinator]
                before = ledger.acks
                await wait_until(lambda: ledger.acks >= before + 10, "commits", ledger)
                c.kill(coordinator)
                acked = dict(ledger.acked)
                await asyncio.to_thread(c.start, coordinator)
                await check_committed(c.address(others[0]), acked)
                await fill(c.address(others[1]))  # more work, in case they had done it all
                after = ledger.acks
                await wait_until(
                    lambda: settled(ledger) and ledger.acks >= after + 10,
                    "the group consuming again",
                    ledger,
                )
                stop.set()
                await asyncio.gather(*members)
                await check_committed(c.address(coordinator), ledger.acked)
            finally:
                stop.set()
                for task in members:
                    task.cancel()
                await asyncio.gather(*members, return_exceptions=True)

        asyncio.run(asyncio.wait_for(main(), 4 * WITHIN_S))
    assert not ledger.violations, ledger.violations
