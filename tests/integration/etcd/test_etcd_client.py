"""The etcd client against a real etcd: reads and writes, transactions (the fencing and
compare-and-set the controller relies on), leases kept alive from a thread, watches."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from tests.integration.client.helpers import run
from tidelog.etcd import (
    Compare,
    Delete,
    EtcdClient,
    EtcdCompactedError,
    EtcdProcess,
    EtcdUnavailableError,
    EventType,
    Get,
    LeaseKeeper,
    Put,
    WatchBatch,
    free_port,
)

DEADLINE = 15.0


Body = Callable[[EtcdClient], Coroutine[Any, Any, None]]


@pytest.fixture
def etcd(etcd_server: EtcdProcess) -> Callable[[Body], None]:
    """Runs a test body with a client of the test server, on a fresh loop, bounded in time."""

    def run_body(body: Body) -> None:
        async def main() -> None:
            async with EtcdClient([etcd_server.endpoint]) as client:
                await body(client)

        run(main())

    return run_body


def test_put_get_range_delete(etcd: Callable[[Body], None], prefix: bytes) -> None:
    async def body(etcd: EtcdClient) -> None:
        assert await etcd.get(prefix + b"a") is None
        first = await etcd.put(prefix + b"a", b"1")
        second = await etcd.put(prefix + b"b", b"2")
        assert second > first
        kv = await etcd.get(prefix + b"a")
        assert kv is not None and kv.value == b"1" and kv.create_revision == first
        kvs, revision = await etcd.range(prefix, prefix=True)
        assert [(kv.key, kv.value) for kv in kvs] == [(prefix + b"a", b"1"), (prefix + b"b", b"2")]
        assert revision >= second
        assert await etcd.delete(prefix, prefix=True) == 2
        assert (await etcd.range(prefix, prefix=True))[0] == []

    etcd(body)


def test_txn_create_if_absent_and_compare_and_set(
    etcd: Callable[[Body], None], prefix: bytes
) -> None:
    async def body(etcd: EtcdClient) -> None:
        key = prefix + b"controller"
        won = await etcd.txn([Compare.absent(key)], [Put(key, b"broker-1")], [Get(key)])
        lost = await etcd.txn([Compare.absent(key)], [Put(key, b"broker-2")], [Get(key)])
        assert won.succeeded and not lost.succeeded
        assert [kv.value for kv in lost.reads[0]] == [b"broker-1"]
        kv = await etcd.get(key)
        assert kv is not None
        # compare-and-set on the revision read: the second writer with the same read loses
        ok = await etcd.txn([Compare.modified_at(key, kv.mod_revision)], [Put(key, b"v2")])
        stale = await etcd.txn([Compare.modified_at(key, kv.mod_revision)], [Put(key, b"v3")])
        assert ok.succeeded and not stale.succeeded
        assert (await etcd.get(key)) is not None

    etcd(body)


def test_creation_revision_fences_an_old_incarnation(
    etcd: Callable[[Body], None], prefix: bytes
) -> None:
    """A controller that read the key before it was deleted and created again decides nothing,
    even though the value is the same."""

    async def body(etcd: EtcdClient) -> None:
        key, decision = prefix + b"controller", prefix + b"decision"
        await etcd.put(key, b"broker-1")
        old = await etcd.get(key)
        assert old is not None
        await etcd.delete(key)
        await etcd.put(key, b"broker-1")
        fenced = await etcd.txn(
            [Compare.created_at(key, old.create_revision)],
            [Put(decision, b"x")],
            [Delete(decision)],
        )
        assert not fenced.succeeded
        assert await etcd.get(decision) is None

    etcd(body)


def test_a_kept_lease_outlives_its_ttl_even_with_the_event_loop_blocked(
    etcd: Callable[[Body], None], etcd_server: EtcdProcess, prefix: bytes
) -> None:
    async def body(etcd: EtcdClient) -> None:
        lease = await etcd.grant(2)
        key = prefix + b"broker"
        await etcd.put(key, b"alive", lease=lease.id)
        lost = threading.Event()
        keeper = LeaseKeeper([etcd_server.endpoint], lease, lambda _: lost.set()).start()
        try:
            # The loop stalls past the TTL on purpose: the keeper's thread keeps the lease.
            time.sleep(lease.ttl * 1.5)  # noqa: ASYNC251
            assert await etcd.get(key) is not None
            assert keeper.keepalives >= 2 and not lost.is_set()
        finally:
            keeper.stop()
        assert await etcd.time_to_live(lease.id) > 0  # stopping does not revoke
        await etcd.revoke(lease.id)
        assert await etcd.get(key) is None

    etcd(body)


def test_a_lease_etcd_forgot_is_reported_lost_once(
    etcd: Callable[[Body], None], etcd_server: EtcdProcess
) -> None:
    async def body(etcd: EtcdClient) -> None:
        lease = await etcd.grant(3)
        reasons: list[str] = []
        lost = threading.Event()

        def on_lost(reason: str) -> None:
            reasons.append(reason)
            lost.set()

        keeper = LeaseKeeper([etcd_server.endpoint], lease, on_lost).start()
        await etcd.revoke(lease.id)
        assert await asyncio.to_thread(lost.wait, DEADLINE)
        await asyncio.to_thread(keeper.stop)
        assert not keeper.alive
        assert len(reasons) == 1 and "expired" in reasons[0]

    etcd(body)


def test_an_unreachable_etcd_makes_the_keeper_report_the_lease_lost(
    etcd: Callable[[Body], None],
) -> None:
    """When no keepalive gets through for a whole TTL the lease may be gone: assume it is."""

    async def body(etcd: EtcdClient) -> None:
        lease = await etcd.grant(2)
        lost = threading.Event()
        keeper = LeaseKeeper([f"127.0.0.1:{free_port()}"], lease, lambda _: lost.set()).start()
        assert await asyncio.to_thread(lost.wait, DEADLINE)
        assert keeper.lost_reason is not None and "no keepalive reached etcd" in keeper.lost_reason
        await etcd.revoke(lease.id)

    etcd(body)


def test_watch_sees_every_change_in_order(etcd: Callable[[Body], None], prefix: bytes) -> None:
    async def body(etcd: EtcdClient) -> None:
        start = await etcd.put(prefix + b"x", b"0")
        for i in range(1, 20):
            await etcd.put(prefix + b"x", str(i).encode())
        await etcd.delete(prefix + b"x")
        seen: list[tuple[EventType, bytes]] = []
        last = 0
        async with asyncio.timeout(DEADLINE):
            async for batch in etcd.watch(prefix, start_revision=start):
                seen += [(e.type, e.kv.value) for e in batch.events]
                last = batch.revision
                if len(seen) == 21:
                    break
        assert seen == [(EventType.PUT, str(i).encode()) for i in range(20)] + [
            (EventType.DELETE, b"")
        ]
        assert last >= start + 20

    etcd(body)


def test_a_watch_from_compacted_history_says_so(
    etcd: Callable[[Body], None], prefix: bytes
) -> None:
    async def body(etcd: EtcdClient) -> None:
        first = await etcd.put(prefix + b"k", b"1")
        latest = await etcd.put(prefix + b"k", b"2")
        await etcd.compact(latest)
        batches: list[WatchBatch] = []

        async def watch() -> None:
            async with asyncio.timeout(DEADLINE):
                async for batch in etcd.watch(prefix, start_revision=first):
                    batches.append(batch)

        with pytest.raises(EtcdCompactedError) as caught:
            await watch()
        assert caught.value.compact_revision >= latest and batches == []

    etcd(body)


def test_a_dead_endpoint_is_skipped_and_no_endpoint_is_a_clear_error(
    etcd_server: EtcdProcess, prefix: bytes
) -> None:
    async def body() -> None:
        dead = f"127.0.0.1:{free_port()}"
        async with EtcdClient([dead, etcd_server.endpoint]) as client:
            await client.put(prefix + b"k", b"v")
            assert client.endpoints[client._current] == etcd_server.endpoint
        async with EtcdClient([dead]) as client:
            with pytest.raises(EtcdUnavailableError, match="no etcd endpoint answered"):
                await client.get(prefix + b"k")

    run(body())


def test_a_missing_etcd_binary_names_the_package(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tidelog.etcd import EtcdNotInstalledError

    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(EtcdNotInstalledError, match="apt-get install etcd-server"):
        EtcdProcess(tmp_path).start()  # type: ignore[arg-type]
