"""Consuming whole batches (``Consumer.batches()``, ``getbatch()``) against a real broker, side
by side with the per-record iterator: the same records at the same offsets, the same positions,
and the same commits (a batch counts as consumed once handed out, a record once yielded)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import pytest

from tidelog.client import (
    Consumer,
    ConsumerBatch,
    ConsumerRecord,
    Producer,
    RecordDeserializationError,
    TopicPartition,
)

from ..groups.helpers import group_broker
from .helpers import broker, create_topic, run

Api = Literal["records", "batches"]
APIS: tuple[Api, ...] = ("records", "batches")
T = "t"
TP0 = TopicPartition(T, 0)
TP1 = TopicPartition(T, 1)
Row = tuple[int, int, int, Any, Any, Any]  # partition, offset, timestamp, key, value, headers


def from_columns(batch: ConsumerBatch) -> list[ConsumerRecord[Any, Any]]:
    """The batch's records rebuilt from its columns, checked against its ``records()``."""
    rows = [
        ConsumerRecord(batch.topic, batch.partition, o, t, k, v, h)
        for o, t, k, v, h in zip(
            batch.offsets, batch.timestamps, batch.keys, batch.values, batch.headers, strict=True
        )
    ]
    assert len(rows) == len(batch) > 0
    assert batch.records() == rows == list(batch)
    return rows


async def read(consumer: Consumer, api: Api, at_least: int) -> list[ConsumerRecord[Any, Any]]:
    """At least ``at_least`` records through ``api`` (``records``: exactly that many)."""
    out: list[ConsumerRecord[Any, Any]] = []
    if api == "records":
        async for record in consumer:
            out.append(record)
            if len(out) >= at_least:
                break
    else:
        async for batch in consumer.batches():
            out.extend(from_columns(batch))
            if len(out) >= at_least:
                break
    return out


async def produce(address: str, count: int, partitions: int = 1) -> list[Row]:
    """``count`` records per partition with keys, some headers and some null values, in
    batches of a few hundred; returns them as the broker stored them."""
    sent = []
    async with Producer(address, linger=0.005, batch_size=16 * 1024) as producer:
        for p in range(partitions):
            for i in range(count):
                key = None if i % 5 == 0 else b"k%d" % i
                value = None if i % 11 == 0 else b"v%d-%d" % (p, i)
                headers = [("n", b"%d" % i)] if i % 3 == 0 else None
                future = await producer.send(T, value, key=key, headers=headers, partition=p)
                sent.append((future, p, key, value, tuple(headers or ())))
        await producer.flush()
        return [(p, (m := await f).offset, m.timestamp, k, v, h) for f, p, k, v, h in sent]


def rows(records: list[ConsumerRecord[Any, Any]]) -> list[Row]:
    return sorted((r.partition, r.offset, r.timestamp, r.key, r.value, r.headers) for r in records)


@pytest.mark.parametrize("api", APIS)
def test_both_apis_hand_out_the_same_records_and_positions(tmp_path: Path, api: Api) -> None:
    async def main() -> None:
        async with broker(tmp_path) as b:
            await create_topic(b.address, T, partitions=2)
            sent = await produce(b.address, 1500, partitions=2)
            async with Consumer(b.address, auto_offset_reset="earliest") as consumer:
                consumer.assign([TP0, TP1])
                got = await read(consumer, api, 3000)
                assert rows(got) == sorted(sent)
                for tp in (TP0, TP1):
                    offsets = [r.offset for r in got if r.partition == tp.partition]
                    assert offsets == list(range(1500))  # in order within a partition
                    assert await consumer.position(tp) == 1500
                    assert consumer.lag(tp) == 0

    run(main())


@pytest.mark.parametrize("api", APIS)
def test_a_seek_into_a_batch_starts_at_that_offset(tmp_path: Path, api: Api) -> None:
    async def main() -> None:
        async with broker(tmp_path) as b:
            await create_topic(b.address, T)
            sent = await produce(b.address, 1000)
            async with Consumer(b.address, auto_offset_reset="earliest") as consumer:
                consumer.assign([TP0])
                consumer.seek(TP0, 777)
                got = await read(consumer, api, 1000 - 777)
                assert rows(got) == sorted(sent)[777:]

    run(main())


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("auto_commit", [False, True])
def test_commits_count_what_was_handed_out(tmp_path: Path, api: Api, auto_commit: bool) -> None:
    """A member reads part of the partition and stops: by hand (``commit()``) or by closing
    (auto-commit), what is committed is the offset after the last record handed out, and the
    next member of the group goes on from there: no record twice, none missed."""

    async def main() -> None:
        async with group_broker(tmp_path) as b:
            await create_topic(b.address, T)
            sent = await produce(b.address, 2000)
            options: dict[str, Any] = {
                "group_id": "g",
                "auto_offset_reset": "earliest",
                "auto_commit": auto_commit,
                "auto_commit_interval": 3600.0,  # only on close: the test knows when
            }
            async with Consumer(b.address, **options) as first:
                first.subscribe([T])
                taken = await read(first, api, 700)
                handed_out = taken[-1].offset + 1
                assert handed_out >= 700
                if not auto_commit:
                    await first.commit()
                    assert await first.committed(TP0) == handed_out
            async with Consumer(b.address, **options) as second:
                second.subscribe([T])
                assert await second.committed(TP0) == handed_out
                rest = await read(second, api, 2000 - handed_out)
                await second.commit()
                assert await second.committed(TP0) == 2000
            assert rows(taken + rest) == sorted(sent)

    run(main())


def test_batches_go_on_where_getmany_and_async_for_stopped(tmp_path: Path) -> None:
    async def main() -> None:
        async with broker(tmp_path) as b:
            await create_topic(b.address, T)
            sent = await produce(b.address, 1000)
            async with Consumer(b.address, auto_offset_reset="earliest") as consumer:
                consumer.assign([TP0])
                got = (await consumer.getmany(timeout=10, max_records=5))[TP0]
                assert [r.offset for r in got] == [0, 1, 2, 3, 4]
                batch = await consumer.getbatch(timeout=10)
                assert batch is not None and batch.offsets[0] == 5  # the rest of that batch
                got += from_columns(batch)
                async for record in consumer:  # takes a chunk, yields one
                    got.append(record)
                    break
                got += await read(consumer, "batches", 1000 - len(got))
                assert rows(got) == sorted(sent)
                assert await consumer.position(TP0) == 1000
                assert await consumer.getbatch(timeout=0) is None

    run(main())


def test_a_batch_deserializes_when_read_and_names_a_bad_record(tmp_path: Path) -> None:
    async def main() -> None:
        async with broker(tmp_path) as b:
            await create_topic(b.address, T)
            async with Producer(b.address, linger=0.05) as producer:
                for i in range(10):
                    await producer.send(T, b"not json" if i == 6 else b"%d" % i, partition=0)
            options: dict[str, Any] = {"auto_offset_reset": "earliest", "key_deserializer": "str"}
            async with Consumer(b.address, value_deserializer=json.loads, **options) as consumer:
                consumer.assign([TP0])
                seen: list[int] = []
                while len(seen) < 10:
                    batch = await consumer.getbatch(timeout=10)
                    assert batch is not None
                    seen.extend(batch.offsets)
                    assert batch.keys == [None] * len(batch)
                    if 6 not in batch.offsets:
                        assert batch.values == list(batch.offsets)
                        continue
                    with pytest.raises(RecordDeserializationError) as caught:
                        _ = batch.values
                    assert (caught.value.partition, caught.value.offset) == (0, 6)
                    # Handed out, so consumed: the position is past the batch.
                    assert await consumer.position(TP0) == batch.next_offset
                assert seen == list(range(10))

    run(main())
