"""Cluster membership against a real etcd, several members in one process: registration and
incarnations, one controller at a time, fenced controller writes, topic placement."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest

from tests.integration.client.helpers import run
from tests.system.netproxy import FaultProxy
from tidelog.etcd import EtcdClient, EtcdProcess, Put
from tidelog.server.cluster.decisions import Change
from tidelog.server.cluster.member import BrokerIdInUseError, ClusterMember
from tidelog.server.cluster.records import (
    NO_LEADER,
    BrokerRecord,
    ClusterKeys,
    PartitionState,
    encode,
)
from tidelog.wire.errors import TopicAlreadyExistsError

WITHIN = 15.0
TTL = 2


@pytest.fixture
def cluster_name(prefix: bytes) -> str:
    return prefix.decode().strip("/").replace("/", "-")


@asynccontextmanager
async def member(endpoint: str, name: str, broker_id: int) -> AsyncIterator[ClusterMember]:
    async with EtcdClient([endpoint]) as etcd:
        record = BrokerRecord(broker_id, "127.0.0.1", 7000 + broker_id)
        m = ClusterMember(etcd, ClusterKeys(name), record, lease_ttl=TTL)
        await m.start(register_within=WITHIN)
        try:
            yield m
        finally:
            await m.stop()


def in_cluster(
    etcd_server: EtcdProcess, name: str, count: int
) -> Callable[[Callable[[list[ClusterMember]], Coroutine[Any, Any, None]]], None]:
    def go(body: Callable[[list[ClusterMember]], Coroutine[Any, Any, None]]) -> None:
        async def main() -> None:
            async with AsyncExitStack() as stack:
                members = [
                    await stack.enter_async_context(member(etcd_server.endpoint, name, b))
                    for b in range(1, count + 1)
                ]
                await body(members)

        run(main())

    return go


async def settled(members: list[ClusterMember], check: Callable[[ClusterMember], bool]) -> None:
    for m in members:
        seen = await m.wait_for(lambda _, m=m: check(m), WITHIN)  # type: ignore[misc]
        assert seen, f"broker {m.broker_id} never saw it"


def test_members_register_and_exactly_one_becomes_controller(
    etcd_server: EtcdProcess, cluster_name: str
) -> None:
    async def body(members: list[ClusterMember]) -> None:
        await settled(members, lambda m: len(m.view.brokers) == 3 and m.view.controller_id > 0)
        assert sum(m.is_controller for m in members) == 1
        assert len({m.view.controller_id for m in members}) == 1
        assert len({m.incarnation for m in members}) == 3

    in_cluster(etcd_server, cluster_name, 3)(body)


def test_topic_partitions_are_placed_evenly_and_seen_by_every_member(
    etcd_server: EtcdProcess, cluster_name: str
) -> None:
    async def body(members: list[ClusterMember]) -> None:
        await settled(members, lambda m: len(m.view.brokers) == 5)
        record = await members[3].create_topic("orders", 10, 1, {}, place_within=WITHIN)
        await settled(members, lambda m: m.view.topic_ready("orders"))
        states = members[0].view.partitions_of("orders")
        assert {s.record.topic_id for s in states.values()} == {record.topic_id}
        assert Counter(s.record.leader for s in states.values()) == {b: 2 for b in range(1, 6)}
        with pytest.raises(TopicAlreadyExistsError):
            await members[1].create_topic("orders", 3, 1, {}, place_within=WITHIN)
        await members[2].delete_topic("orders")
        await settled(members, lambda m: not m.view.partitions_of("orders"))

    in_cluster(etcd_server, cluster_name, 5)(body)


def test_a_dead_controller_is_replaced_and_its_partitions_lose_their_leader(
    etcd_server: EtcdProcess, cluster_name: str
) -> None:
    async def body(members: list[ClusterMember]) -> None:
        await settled(members, lambda m: len(m.view.brokers) == 3 and m.view.controller_id > 0)
        await members[0].create_topic("t", 3, 1, {}, place_within=WITHIN)
        controller = next(m for m in members if m.is_controller)
        rest = [m for m in members if m is not controller]
        await controller.stop()  # its lease is revoked: registration and controller key go
        await settled(
            rest,
            lambda m: (
                m.view.controller_id not in (-1, controller.broker_id)
                and controller.broker_id not in m.view.brokers
            ),
        )
        await settled(
            rest,
            lambda m: all(
                (s.record.leader == NO_LEADER) == (s.record.replicas == (controller.broker_id,))
                for s in m.view.partitions_of("t").values()
            ),
        )
        assert sum(m.is_controller for m in rest) == 1

    in_cluster(etcd_server, cluster_name, 3)(body)


def test_an_ex_controller_can_write_nothing(etcd_server: EtcdProcess, cluster_name: str) -> None:
    """A controller paused past its lease comes back believing it still leads: every write it
    tries is refused, because the controller key it won is gone."""

    async def body(members: list[ClusterMember]) -> None:
        await settled(members, lambda m: len(m.view.brokers) == 2 and m.view.controller_id > 0)
        await members[0].create_topic("t", 1, 1, {}, place_within=WITHIN)
        old = next(m for m in members if m.is_controller)
        other = next(m for m in members if m is not old)
        # The old controller stops seeing anything (as if paused) and its key goes (as if its
        # lease had run out): another broker takes over.
        for task in list(old._tasks):
            task.cancel()
        await asyncio.gather(*old._tasks, return_exceptions=True)
        async with EtcdClient(old.etcd.endpoints) as etcd:
            await etcd.delete(old.keys.controller)
        await settled([other], lambda m: m.is_controller)
        state = other.view.partitions[("t", 0)]
        assert old.is_controller  # it still believes
        refused = await old.controller_write(
            Change("t", 0, PartitionState("x", (9,), 9, 99, (9,)), state.mod_revision)
        )
        assert not refused
        assert other.view.partitions[("t", 0)].record.leader != 9

    in_cluster(etcd_server, cluster_name, 2)(body)


def test_a_live_broker_id_is_refused_and_a_dead_ones_is_waited_for(
    etcd_server: EtcdProcess, cluster_name: str
) -> None:
    async def body() -> None:
        async with member(etcd_server.endpoint, cluster_name, 1) as first:
            with pytest.raises(BrokerIdInUseError, match="another live process"):
                async with member(etcd_server.endpoint, cluster_name, 1):
                    pass
            incarnation = first.incarnation
        # A registration left by a process that died (a lease nobody keeps alive any more).
        async with EtcdClient([etcd_server.endpoint]) as etcd:
            lease = await etcd.grant(TTL)
            key = ClusterKeys(cluster_name).broker(2)
            await etcd.put(key, encode(BrokerRecord(2, "127.0.0.1", 1)), lease=lease.id)
        async with member(etcd_server.endpoint, cluster_name, 2) as second:
            assert second.incarnation > incarnation
            assert second.view.brokers[2].record.port == 7002

    run(body())


def test_garbage_under_the_prefix_is_ignored(etcd_server: EtcdProcess, cluster_name: str) -> None:
    async def body(members: list[ClusterMember]) -> None:
        keys = members[0].keys
        async with EtcdClient([etcd_server.endpoint]) as etcd:
            await etcd.txn([], [Put(keys.topic("bad"), b"not json")])
        await members[0].create_topic("good", 1, 1, {}, place_within=WITHIN)
        assert "bad" not in members[0].view.topics

    in_cluster(etcd_server, cluster_name, 1)(body)


def test_a_member_blackholed_from_etcd_is_told_and_reads_the_cluster_afresh_on_return(
    etcd_server: EtcdProcess, cluster_name: str
) -> None:
    """Broker 2 reaches etcd through a proxy that blackholes it (nothing closed: its watch
    hangs, and stays hung after the heal, as a half-open connection does). It is told when
    its lease is lost; once it is back, it registers again (a new incarnation) and its view
    has what changed meanwhile, which the hung watch would never bring."""
    proxy = FaultProxy(("127.0.0.1", etcd_server.client_port)).start()
    lost, rejoined = asyncio.Event(), asyncio.Event()

    async def body() -> None:
        async with (
            member(etcd_server.endpoint, cluster_name, 1) as other,
            EtcdClient([proxy.address]) as etcd,
        ):
            cut = ClusterMember(
                etcd, ClusterKeys(cluster_name), BrokerRecord(2, "127.0.0.1", 7002),
                lease_ttl=TTL, on_lease_lost=lambda _: lost.set(), on_rejoined=rejoined.set,
            )  # fmt: skip
            await cut.start(register_within=WITHIN)
            try:
                await settled([other, cut], lambda m: len(m.view.brokers) == 2)
                incarnation = cut.incarnation
                proxy.blackhole()
                assert await other.wait_for(lambda v: list(v.brokers) == [1], WITHIN)
                await other.create_topic("while-cut", 1, 1, {}, place_within=WITHIN)
                async with asyncio.timeout(WITHIN):
                    await lost.wait()
                proxy.heal()
                async with asyncio.timeout(WITHIN):
                    await rejoined.wait()
                assert "while-cut" in cut.view.topics
                assert cut.incarnation > incarnation
                assert await cut.wait_for(lambda v: len(v.brokers) == 2, WITHIN)
            finally:
                await cut.stop()

    try:
        run(body())
    finally:
        proxy.stop()
