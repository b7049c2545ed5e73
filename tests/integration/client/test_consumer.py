"""The consumer against a real broker."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tidelog.client import (
    ClientUsageError,
    Consumer,
    NoOffsetForPartitionError,
    Producer,
    RecordDeserializationError,
    TopicPartition,
)
from tidelog.wire.errors import OffsetOutOfRangeError

from .helpers import broker, create_topic, run

TP0 = TopicPartition("t", 0)
TP1 = TopicPartition("t", 1)


async def produce(address: str, count: int, partition: int = 0, prefix: bytes = b"") -> None:
    async with Producer(address, linger=0) as producer:
        for i in range(count):
            await producer.send("t", prefix + b"%d" % i, partition=partition)


def test_async_iteration_reads_in_offset_order(tmp_path: Path) -> None:
    async def main() -> None:
        async with broker(tmp_path) as b:
            await create_topic(b.address, "t")
            await produce(b.address, 1000)
            seen: list[int] = []
            async with Consumer(b.address, auto_offset_reset="earliest") as consumer:
                consumer.assign([TP0])
                async for record in consumer:
                    seen.append(record.offset)
                    assert record.value == b"%d" % record.offset
                    if len(seen) == 1000:
                        break
                assert await consumer.position(TP0) == 1000
                assert consumer.highwater(TP0) == 1000
            assert seen == list(range(1000))

    run(main())


def test_getmany_respects_max_records_and_groups_by_partition(tmp_path: Path) -> None:
    async def main() -> None:
        async with broker(tmp_path) as b:
            await create_topic(b.address, "t", partitions=2)
            await produce(b.address, 30, partition=0)
            await produce(b.address, 30, partition=1)
            async with Consumer(b.address, auto_offset_reset="earliest") as consumer:
                consumer.assign([TP0, TP1])
                got: dict[TopicPartition, list[int]] = {TP0: [], TP1: []}
                while sum(map(len, got.values())) < 60:
                    batch = await consumer.getmany(timeout=10, max_records=7)
                    assert 0 < sum(map(len, batch.values())) <= 7
                    for tp, records in batch.items():
                        assert all(r.partition == tp.partition for r in records)
                        got[tp].extend(r.offset for r in records)
                assert got == {TP0: list(range(30)), TP1: list(range(30))}
                assert await consumer.getmany(timeout=0) == {}

    run(main())


def test_getmany_waits_for_a_record_produced_later(tmp_path: Path) -> None:
    async def main() -> None:
        async with broker(tmp_path) as b:
            await create_topic(b.address, "t")
            async with Consumer(b.address, auto_offset_reset="latest") as consumer:
                consumer.assign([TP0])
                assert await consumer.position(TP0) == 0
                waiting = asyncio.ensure_future(consumer.getmany(timeout=30))
                await produce(b.address, 1, prefix=b"late-")
                batch = await waiting
            assert [r.value for r in batch[TP0]] == [b"late-0"]

    run(main())


def test_seek_and_seek_to_beginning_and_end(tmp_path: Path) -> None:
    async def main() -> None:
        async with broker(tmp_path) as b:
            await create_topic(b.address, "t")
            await produce(b.address, 50)
            async with Consumer(b.address, auto_offset_reset="earliest") as consumer:
                consumer.assign([TP0])
                consumer.seek(TP0, 42)
                assert await consumer.position(TP0) == 42
                record = await consumer.getone()
                assert (record.offset, record.value) == (42, b"42")
                await consumer.seek_to_beginning(TP0)
                assert await consumer.position(TP0) == 0
                assert (await consumer.getone()).offset == 0
                await consumer.seek_to_end()
                assert await consumer.position(TP0) == 50
                assert await consumer.getmany(timeout=0.05) == {}
                # Seeking back into the middle of a batch skips its earlier records.
                consumer.seek(TP0, 7)
                batch = await consumer.getmany(timeout=10, max_records=3)
                assert [r.offset for r in batch[TP0]] == [7, 8, 9]

    run(main())


def test_auto_offset_reset_latest_starts_at_the_end(tmp_path: Path) -> None:
    async def main() -> None:
        async with broker(tmp_path) as b:
            await create_topic(b.address, "t")
            await produce(b.address, 5, prefix=b"old-")
            async with Consumer(b.address, auto_offset_reset="latest") as consumer:
                consumer.assign([TP0])
                assert await consumer.position(TP0) == 5
                await produce(b.address, 1, prefix=b"new-")
                record = await consumer.getone()
            assert record.value == b"new-0"

    run(main())


def test_auto_offset_reset_none_requires_a_seek(tmp_path: Path) -> None:
    async def main() -> None:
        async with broker(tmp_path) as b:
            await create_topic(b.address, "t")
            await produce(b.address, 3)
            async with Consumer(b.address, auto_offset_reset="none") as consumer:
                consumer.assign([TP0])
                with pytest.raises(NoOffsetForPartitionError, match="seek"):
                    await consumer.position(TP0)
                with pytest.raises(NoOffsetForPartitionError):
                    await consumer.getmany(timeout=10)
                consumer.seek(TP0, 1)
                assert [r.offset for r in (await consumer.getmany(timeout=10))[TP0]] == [1, 2]

    run(main())


def test_out_of_range_offset_raises_under_none_and_resets_otherwise(tmp_path: Path) -> None:
    async def main() -> None:
        async with broker(tmp_path) as b:
            await create_topic(b.address, "t")
            await produce(b.address, 3)
            async with Consumer(b.address, auto_offset_reset="none") as consumer:
                consumer.assign([TP0])
                consumer.seek(TP0, 100)
                with pytest.raises(OffsetOutOfRangeError, match="auto_offset_reset"):
                    await consumer.getmany(timeout=10)
            async with Consumer(b.address, auto_offset_reset="earliest") as consumer:
                consumer.assign([TP0])
                consumer.seek(TP0, 100)
                record = await consumer.getone()
                assert record.offset == 0

    run(main())


def test_pause_and_resume(tmp_path: Path) -> None:
    async def main() -> None:
        async with broker(tmp_path) as b:
            await create_topic(b.address, "t", partitions=2)
            await produce(b.address, 5, partition=0)
            await produce(b.address, 5, partition=1)
            async with Consumer(b.address, auto_offset_reset="earliest") as consumer:
                consumer.assign([TP0, TP1])
                consumer.pause(TP1)
                assert consumer.paused() == {TP1}
                seen: dict[TopicPartition, int] = {}
                while seen.get(TP0, 0) < 5:
                    for tp, records in (await consumer.getmany(timeout=10)).items():
                        seen[tp] = seen.get(tp, 0) + len(records)
                assert TP1 not in seen
                assert await consumer.position(TP1) == 0
                consumer.resume(TP1)
                batch = await consumer.getmany(TP1, timeout=10)
                assert [r.offset for r in batch[TP1]][:1] == [0]

    run(main())


def test_reassignment_keeps_positions_of_kept_partitions(tmp_path: Path) -> None:
    async def main() -> None:
        async with broker(tmp_path) as b:
            await create_topic(b.address, "t", partitions=2)
            await produce(b.address, 10, partition=0)
            async with Consumer(b.address, auto_offset_reset="earliest") as consumer:
                consumer.assign([TP0])
                consumer.seek(TP0, 4)
                consumer.assign([TP0, TP1])
                assert consumer.assignment() == {TP0, TP1}
                assert await consumer.position(TP0) == 4
                consumer.assign([TP1])
                with pytest.raises(ClientUsageError, match="not assigned"):
                    await consumer.position(TP0)

    run(main())


def test_a_bad_record_raises_and_can_be_skipped(tmp_path: Path) -> None:
    async def main() -> None:
        async with broker(tmp_path) as b:
            await create_topic(b.address, "t")
            async with Producer(b.address) as producer:
                for value in (b'{"ok": 1}', b"not json", b'{"ok": 3}'):
                    await producer.send("t", value)
            async with Consumer(
                b.address, auto_offset_reset="earliest", value_deserializer="json"
            ) as consumer:
                consumer.assign([TP0])
                # The records before the bad one come out first; then the error, again and
                # again, until a seek skips it.
                first = await consumer.getmany(timeout=10)
                assert [r.value for r in first[TP0]] == [{"ok": 1}]
                for _ in range(2):
                    with pytest.raises(RecordDeserializationError) as info:
                        await consumer.getmany(timeout=10)
                    assert info.value.offset == 1
                assert await consumer.position(TP0) == 1
                consumer.seek(TP0, info.value.offset + 1)
                assert (await consumer.getone()).value == {"ok": 3}

    run(main())


def test_iteration_ends_when_the_consumer_closes(tmp_path: Path) -> None:
    async def main() -> None:
        async with broker(tmp_path) as b:
            await create_topic(b.address, "t")
            consumer = Consumer(b.address)
            await consumer.start()
            consumer.assign([TP0])

            async def drain() -> int:
                return sum([1 async for _ in consumer])

            iterating = asyncio.ensure_future(drain())
            await consumer.position(TP0)  # the iteration is under way on the loop
            await consumer.close()
            assert await iterating == 0

    run(main())


@pytest.mark.storage_bound
def test_consumption_resumes_after_a_broker_restart(tmp_path: Path) -> None:
    async def main() -> None:
        async with broker(tmp_path) as b:
            await create_topic(b.address, "t")
            await produce(b.address, 3, prefix=b"a")
            port = b.port
            consumer = Consumer(
                b.address, auto_offset_reset="earliest", retry_backoff=0.01, retry_backoff_max=0.1
            )
            await consumer.start()
            consumer.assign([TP0])
            first = await consumer.getmany(timeout=10)
            assert [r.value for r in first[TP0]] == [b"a0", b"a1", b"a2"]
        async with broker(tmp_path, port=port) as b:
            await produce(b.address, 2, prefix=b"b")
            values: list[bytes | None] = []
            while len(values) < 2:
                batch = await consumer.getmany(timeout=10)
                values += [r.value for r in batch.get(TP0, [])]
            await consumer.close()
        assert values == [b"b0", b"b1"]

    run(main())


def test_records_buffered_for_iteration_are_not_lost_on_pause_or_reassign(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        async with broker(tmp_path) as b:
            await create_topic(b.address, "t")
            await produce(b.address, 10)
            async with Consumer(b.address, auto_offset_reset="earliest") as consumer:
                consumer.assign([TP0])
                iterator = aiter(consumer)
                assert (await anext(iterator)).offset == 0  # the rest wait in its buffer
                consumer.pause(TP0)
                assert await consumer.position(TP0) == 1
                consumer.resume(TP0)
                assert (await anext(iterator)).offset == 1
                consumer.assign([TP0])
                assert await consumer.position(TP0) == 2
                assert [(await anext(iterator)).offset for _ in range(8)] == list(range(2, 10))

    run(main())


def test_a_big_batch_is_not_starved_by_a_busy_partition(tmp_path: Path) -> None:
    """fetch_max_bytes shared by two partitions: one always has small batches, the other one
    batch bigger than what is left after them. The consumer must get to it before the busy
    partition runs dry (the broker fills the budget front to back; the client rotates)."""

    async def main() -> None:
        async with broker(tmp_path) as b:
            await create_topic(b.address, "t", 2)
            async with Producer(b.address, batch_size=1, linger=0) as producer:
                for _ in range(60):
                    await producer.send_and_wait("t", b"s" * 1500, partition=0)
                await producer.send_and_wait("t", b"B" * 1900, partition=1)
            async with Consumer(
                b.address,
                auto_offset_reset="earliest",
                fetch_max_bytes=2000,
                max_partition_fetch_bytes=2000,
                prefetch_bytes=1,
            ) as consumer:
                consumer.assign([TopicPartition("t", 0), TopicPartition("t", 1)])
                small_before_big = 0
                while True:
                    got = await consumer.getmany(timeout=10.0)
                    assert got, "the consumer stalled"
                    if got.get(TopicPartition("t", 1)):
                        break
                    small_before_big += len(got.get(TopicPartition("t", 0), []))
                assert small_before_big < 60

    run(main())
