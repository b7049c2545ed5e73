"""Queues (share groups) through the real client against a real broker. Time that matters
(locks, backoff) is the share coordinator's injected clock, driven by hand."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tidelog.client import (
    ClientUsageError,
    Consumer,
    Producer,
    QueueConsumer,
    QueueMessage,
    TopicPartition,
    alter_queue,
    describe_queue,
)
from tidelog.server import Broker
from tidelog.server.shares import ShareCoordinator, ShareSettings
from tidelog.server.shares.partition import RecordState
from tidelog.server.shares.records import (
    EntryRecord,
    PartitionRecord,
    decode_partition,
    partition_key,
    sort_rows,
)
from tidelog.wire.errors import (
    GroupIdNotFoundError,
    InvalidConfigError,
    InvalidRecordStateError,
    NotCoordinatorError,
    QueueFullError,
)

from ..groups.helpers import wait_until
from .helpers import broker, create_topic, run


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000

    def __call__(self) -> int:
        return self.now


def shares(b: Broker, clock: FakeClock) -> ShareCoordinator:
    coordinator = b.core.shares
    assert coordinator is not None
    coordinator.clock = clock
    return coordinator


async def produce(address: str, topic: str, count: int, prefix: str = "m") -> None:
    async with Producer(address, acks="all") as producer:
        for i in range(count):
            await producer.send(topic, f"{prefix}{i}".encode(), key=f"{prefix}{i}".encode())
        await producer.flush()


async def take(queue: QueueConsumer) -> QueueMessage:
    return await asyncio.wait_for(anext(queue), 10)


async def nothing(queue: QueueConsumer) -> None:
    """The queue has nothing for this member now (one short long-poll)."""
    queue.max_wait_ms = 0
    async with queue._fetching:
        await queue._fetch()
    assert not queue._buffer, [repr(m) for m in queue._buffer]


def test_eight_workers_ack_every_message_exactly_once(tmp_path: Path) -> None:
    async def main() -> None:
        async with broker(tmp_path) as b:
            shares(b, FakeClock())  # the lock never expires
            await create_topic(b.address, "jobs", 1)
            await produce(b.address, "jobs", 10_000)
            acked: Counter[bytes] = Counter()
            held: set[bytes] = set()
            per_worker: Counter[int] = Counter()
            done = asyncio.Event()

            async def worker(n: int) -> None:
                async with QueueConsumer(b.address, "g", "jobs", max_records=25) as q:
                    async for message in q:
                        assert message.value is not None
                        assert message.value not in held, "held by two workers at once"
                        held.add(message.value)
                        await asyncio.sleep(0)  # let the others run while this one holds it
                        held.discard(message.value)
                        await message.ack()
                        acked[message.value] += 1
                        per_worker[n] += 1
                        if sum(acked.values()) == 10_000:
                            done.set()
                        if done.is_set():
                            break

            tasks = [asyncio.create_task(worker(n)) for n in range(8)]
            await asyncio.wait_for(done.wait(), 50)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            assert len(acked) == 10_000
            assert set(acked.values()) == {1}
            assert len(per_worker) == 8, per_worker

    run(main())


def test_ack_many_acknowledges_a_batch_in_one_call_and_names_what_failed(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        async with broker(tmp_path) as b:
            clock = FakeClock()
            coordinator = shares(b, clock)
            await create_topic(b.address, "jobs", 1)
            await produce(b.address, "jobs", 300)
            async with (
                QueueConsumer(b.address, "g", "jobs") as q,
                QueueConsumer(b.address, "g", "jobs") as other,
            ):
                batch = await q.take(200, 5)
                assert len(batch) == 200
                assert await q.ack_many(batch[:150]) == {}
                with pytest.raises(ClientUsageError, match="settled"):  # nothing sent
                    await q.ack_many([batch[150], batch[0]])
                with pytest.raises(ClientUsageError, match="another queue consumer"):
                    await other.ack_many([batch[150]])
                clock.now += 30_000  # the other 50 locks expire and go to the other member
                await coordinator.tick()
                redelivered = await other.take(100, 5)  # those 50, then 50 never delivered
                late = batch[150:]
                refused = await q.ack_many(late)
                assert set(refused) == set(late)
                assert all(isinstance(e, InvalidRecordStateError) for e in refused.values())
                assert "expired" in str(next(iter(refused.values())))
                assert await other.ack_many(redelivered) == {}
                rest = await other.take(100, 5)
                assert await other.ack_many(rest) == {}
                assert await q.ack_many([]) == {}
            status = await describe_queue(b.address, "g")
            assert status.partitions[0].acked == 300
            counts = Counter(m.delivery_count for m in redelivered + rest)
            assert counts == {2: 50, 1: 100}

    run(main())


def test_a_closed_connection_releases_what_the_member_held(tmp_path: Path) -> None:
    async def main() -> None:
        async with broker(tmp_path) as b:
            shares(b, FakeClock())
            await create_topic(b.address, "jobs", 1)
            await produce(b.address, "jobs", 1)
            dying = QueueConsumer(b.address, "g", "jobs")
            await dying.start()
            first = await take(dying)
            assert first.delivery_count == 1
            await dying._link.close()  # dies: no release, no leave
            await dying._cluster.close()
            async with QueueConsumer(b.address, "g", "jobs", max_wait=10) as other:
                again = await take(other)
                assert (again.value, again.delivery_count) == (first.value, 2)
                await again.ack()

    run(main())


def test_an_expired_lock_redelivers_and_the_late_ack_fails(tmp_path: Path) -> None:
    async def main() -> None:
        async with broker(tmp_path) as b:
            clock = FakeClock()
            coordinator = shares(b, clock)
            await create_topic(b.address, "jobs", 1)
            await produce(b.address, "jobs", 1)
            async with (
                QueueConsumer(b.address, "g", "jobs") as slow,
                QueueConsumer(b.address, "g", "jobs") as other,
            ):
                first = await take(slow)
                await nothing(other)
                clock.now += 30_000
                await coordinator.tick()
                again = await take(other)
                assert (again.value, again.delivery_count) == (first.value, 2)
                with pytest.raises(InvalidRecordStateError, match="expired"):
                    await first.ack()
                await again.ack()
                await nothing(other)

    run(main())


def test_nack_backoff_delay_renew_and_reject(tmp_path: Path) -> None:
    async def main() -> None:
        async with broker(tmp_path) as b:
            clock = FakeClock()
            coordinator = shares(b, clock)
            await create_topic(b.address, "jobs", 1)
            await produce(b.address, "jobs", 1)
            async with QueueConsumer(b.address, "g", "jobs") as q:
                m = await take(q)
                await m.nack(error="boom")  # backoff: 1 s after the first delivery
                await nothing(q)
                clock.now += 999
                await nothing(q)
                clock.now += 1
                m = await take(q)
                assert m.delivery_count == 2
                await m.nack()  # 2 s after the second
                clock.now += 1_999
                await nothing(q)
                clock.now += 1
                m = await take(q)
                await m.nack(delay=0)  # explicit: at once
                m = await take(q)
                assert m.delivery_count == 4
                await m.nack(delay=5)
                clock.now += 4_999
                await nothing(q)
                clock.now += 1
                m = await take(q)
                assert m.delivery_count == 5
                # renew: 20 s + 20 s is past the 30 s lock, yet still held
                clock.now += 20_000
                await m.renew()
                clock.now += 20_000
                await coordinator.tick()
                await m.reject("bad input")
            dlq = await read_dlq(b.address, "jobs.dlq", 1)
            headers = dict(dlq[0].headers)
            assert headers["tidelog.dlq.reason"] == b"rejected"
            assert headers["tidelog.dlq.error"] == b"bad input"
            assert headers["tidelog.dlq.delivery_count"] == b"5"

    run(main())


def test_a_released_record_outlives_the_reading_of_later_batches(tmp_path: Path) -> None:
    """Acquiring from a later batch moves the window's end; a record released before it (in
    its delay) stays in the window and comes back."""

    async def main() -> None:
        async with broker(tmp_path) as b:
            clock = FakeClock()
            shares(b, clock)
            await create_topic(b.address, "jobs", 1)
            await produce(b.address, "jobs", 2)  # one batch per record
            async with QueueConsumer(b.address, "g", "jobs", max_records=1) as q:
                first = await take(q)
                await first.nack(delay=10)
                second = await take(q)
                assert second.offset == 1
                await second.ack()
                clock.now += 10_000
                again = await take(q)
                assert (again.offset, again.delivery_count) == (0, 2)

    run(main())


async def read_dlq(address: str, topic: str, count: int) -> list[Any]:
    out = []
    async with Consumer(address, auto_offset_reset="earliest") as consumer:
        consumer.assign([TopicPartition(topic, 0)])
        async for record in consumer:
            out.append(record)
            if len(out) == count:
                break
    return out


def test_a_poison_message_is_dead_lettered_after_max_attempts(tmp_path: Path) -> None:
    async def main() -> None:
        async with broker(tmp_path) as b:
            shares(b, FakeClock())
            await create_topic(b.address, "jobs", 1)
            await alter_queue(b.address, "g", max_delivery_attempts=3)
            async with Producer(b.address, acks="all") as producer:
                await producer.send("jobs", b"poison", key=b"k", headers=[("trace", b"t1")])
                await producer.flush()
            async with QueueConsumer(b.address, "g", "jobs") as q:
                for attempt in (1, 2, 3):
                    m = await take(q)
                    assert m.delivery_count == attempt
                    await m.nack(delay=0, error=f"failure {attempt}")
                await nothing(q)
            [dead] = await read_dlq(b.address, "jobs.dlq", 1)
            assert (dead.key, dead.value) == (b"k", b"poison")
            h = dict(dead.headers)
            assert h["trace"] == b"t1"
            assert h["tidelog.dlq.source_topic"] == b"jobs"
            assert h["tidelog.dlq.source_partition"] == b"0"
            assert h["tidelog.dlq.source_offset"] == b"0"
            assert h["tidelog.dlq.group"] == b"g"
            assert h["tidelog.dlq.delivery_count"] == b"3"
            assert h["tidelog.dlq.reason"] == b"max_attempts"
            assert h["tidelog.dlq.error"] == b"failure 3"
            assert int(h["tidelog.dlq.first_delivery_ms"]) <= int(h["tidelog.dlq.last_delivery_ms"])
            status = await describe_queue(b.address, "g")
            assert status.partitions[0].dead_lettered == 1

    run(main())


def test_bad_input_gets_clear_errors_and_changes_nothing(tmp_path: Path) -> None:
    async def main() -> None:
        async with broker(tmp_path) as b:
            shares(b, FakeClock())
            await create_topic(b.address, "jobs", 1)
            await produce(b.address, "jobs", 1)
            with pytest.raises(InvalidConfigError, match="lock_duration_ms"):
                await alter_queue(b.address, "g", lock_duration_ms=-1)
            with pytest.raises(InvalidConfigError, match="max_delivery_attempts"):
                await alter_queue(b.address, "g", max_delivery_attempts=0)
            with pytest.raises(InvalidConfigError, match="unknown"):
                await alter_queue(b.address, "g", colour="blue")
            with pytest.raises(GroupIdNotFoundError):
                await describe_queue(b.address, "nope")
            async with (
                QueueConsumer(b.address, "g", "jobs") as q,
                QueueConsumer(b.address, "g", "jobs") as thief,
            ):
                m = await take(q)
                forged = QueueMessage(thief, _record(m))
                with pytest.raises(InvalidRecordStateError, match="another member"):
                    await forged.ack()
                never = QueueMessage(thief, _record(m, offset=5))
                with pytest.raises(InvalidRecordStateError, match="never acquired"):
                    await never.ack()
                await m.ack()
                again = QueueMessage(q, _record(m))
                with pytest.raises(InvalidRecordStateError, match="settled"):
                    await again.ack()
            status = await describe_queue(b.address, "g")
            assert status.partitions[0].acked == 1
            assert dict(status.configs)["max_delivery_attempts"] == "5"

    run(main())


def _record(m: QueueMessage, offset: int | None = None) -> Any:
    from tidelog.wire.share_messages import ShareRecord

    return ShareRecord(m.topic, m.partition, m.offset if offset is None else offset, 0, None, None)


@pytest.mark.storage_bound  # a restart: memory keeps nothing across it
def test_acks_and_delivery_counts_survive_a_restart(tmp_path: Path) -> None:
    async def main() -> None:
        async with broker(tmp_path) as b:
            shares(b, FakeClock())
            await create_topic(b.address, "jobs", 1)
            await produce(b.address, "jobs", 3)
            async with QueueConsumer(b.address, "g", "jobs", max_records=3) as q:
                got = [await take(q) for _ in range(3)]
                await got[0].ack()
                q._held.clear()  # hold the rest across the restart
        async with broker(tmp_path) as b:
            shares(b, FakeClock())
            async with QueueConsumer(b.address, "g", "jobs", max_records=3) as q:
                again = [await take(q) for _ in range(2)]
                assert sorted((m.value, m.delivery_count) for m in again) == [
                    (b"m1", 2),
                    (b"m2", 2),
                ]
                for m in again:
                    await m.ack()
                await nothing(q)

    run(main())


@pytest.mark.storage_bound  # restarts: memory keeps nothing across them
def test_a_whole_state_record_of_an_older_tidelog_is_resumed(tmp_path: Path) -> None:
    """A version 1 partition record (the whole window, as tidelog wrote before the deltas):
    read at start, its counts kept, and rewritten as entry records with the next change."""
    tp = TopicPartition("jobs", 0)
    entries = [
        EntryRecord(1, int(RecordState.ACQUIRED), 2, 10, 20, "boom"),
        EntryRecord(2, int(RecordState.AVAILABLE), 1, 10, 10),
    ]
    old = msgspec.msgpack.encode(PartitionRecord(1, 1, 3, entries, acked=1))

    async def main() -> None:
        async with broker(tmp_path) as b:
            store = shares(b, FakeClock()).store
            await create_topic(b.address, "jobs", 1)
            await produce(b.address, "jobs", 3)
            partition = store.partition_for("g")
            await store.durable(partition, store.append(partition, [(partition_key("g", tp), old)]))
        async with broker(tmp_path) as b:
            shares(b, FakeClock())
            async with QueueConsumer(b.address, "g", "jobs", max_records=1) as q:
                first = await take(q)  # m2 is left alone: only the old record holds it
                assert (first.value, first.delivery_count) == (b"m1", 3)
                await first.ack()
        async with broker(tmp_path) as b:
            coordinator = shares(b, FakeClock())
            rows = await coordinator.store.read(coordinator.store.partition_for("g"))
            stored = sort_rows(rows).partitions["g", tp]
            assert sorted(stored.entries) == [2]  # m1's tombstone, m2's entry record
            assert decode_partition(stored, ShareSettings()).acked == 2
            async with QueueConsumer(b.address, "g", "jobs", max_records=3) as q:
                second = await take(q)
                assert (second.value, second.delivery_count) == (b"m2", 2)
                await second.ack()
                await nothing(q)

    run(main())


def test_an_acquisition_is_stored_before_it_is_delivered(tmp_path: Path) -> None:
    async def main() -> None:
        async with broker(tmp_path) as b:
            coordinator = shares(b, FakeClock())
            await create_topic(b.address, "jobs", 1)
            await produce(b.address, "jobs", 1)
            async with QueueConsumer(b.address, "g", "jobs") as q:
                await take(q)
                store = coordinator.store
                rows = await store.read(store.partition_for("g"))
                records = sort_rows(rows).partitions["g", TopicPartition("jobs", 0)]
                stored = decode_partition(records, ShareSettings())
                assert stored.records[0].delivery_count == 1
                assert stored.end == 1

    run(main())


def test_a_full_queue_refuses_producers_with_queue_full(tmp_path: Path) -> None:
    async def main() -> None:
        async with broker(tmp_path) as b:
            shares(b, FakeClock())
            await create_topic(b.address, "jobs", 1)
            await create_topic(b.address, "logs", 1)
            with pytest.raises(InvalidConfigError, match="max_backlog_records"):
                await alter_queue(b.address, "g", max_backlog_records=-1)
            await alter_queue(b.address, "g", max_backlog_records=3)
            await produce(b.address, "jobs", 3)
            async with (
                QueueConsumer(b.address, "g", "jobs", max_records=1) as q,
                Producer(b.address, acks="all", retries=0) as producer,
            ):
                held = await take(q)  # the group reads jobs now: 3 records not settled
                with pytest.raises(QueueFullError, match="max_backlog_records"):
                    await producer.send_and_wait("jobs", b"one too many")
                await producer.send_and_wait("logs", b"another topic")
                await held.ack()  # 2 left: room for one
                await producer.send_and_wait("jobs", b"fits")
                with pytest.raises(QueueFullError):
                    await producer.send_and_wait("jobs", b"full again")
                await alter_queue(b.address, "g", max_backlog_records=0)  # no limit
                await producer.send_and_wait("jobs", b"unbounded")

    run(main())


def test_a_coordinator_serves_only_the_groups_of_the_partitions_it_leads(tmp_path: Path) -> None:
    """What a broker of a cluster does as the leadership of ``__share_group_state`` moves
    (driven by hand here: ``follow`` is what the cluster calls)."""

    async def main() -> None:
        async with broker(tmp_path) as b:
            coordinator = shares(b, FakeClock())
            await create_topic(b.address, "jobs", 1)
            await produce(b.address, "jobs", 2)
            async with QueueConsumer(b.address, "g", "jobs", max_wait=10) as q:
                [first] = await q.take(1, 0)
                await first.ack()
                coordinator.follow(4, set())  # another broker leads the group's partition
                assert "g" not in coordinator.groups
                with pytest.raises(NotCoordinatorError):
                    await q.take(1, 0)
                coordinator.follow(4, {0, 1, 2, 3})  # and back: loaded from the log
                second = await anext(q)  # retried until the load is done
                assert (second.value, second.delivery_count) == (b"m1", 1)
                polling = asyncio.ensure_future(q.take(1, 30))
                await wait_until(lambda: bool(coordinator.groups["g"].waiters), "a long poll")
                coordinator.follow(4, set())  # a long poll answers at once
                with pytest.raises(NotCoordinatorError):
                    await asyncio.wait_for(polling, 10)

    run(main())
