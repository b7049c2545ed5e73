"""The producer against a real broker."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from tidelog.client import (
    ClientClosedError,
    ClientUsageError,
    DeliveryTimeoutError,
    OffsetRange,
    Producer,
    RecordMetadata,
    TidelogConnectionError,
    TopicPartition,
    partition_for_key,
)
from tidelog.wire.errors import MessageTooLargeError, UnknownTopicOrPartitionError

from .helpers import SEND_APIS, broker, consume_all, create_topic, run, send_records

apis = pytest.mark.parametrize("api", SEND_APIS)


def test_send_and_wait_returns_where_the_record_went(tmp_path: Path) -> None:
    async def main() -> None:
        async with broker(tmp_path) as b:
            await create_topic(b.address, "t")
            async with Producer(b.address) as producer:
                first = await producer.send_and_wait("t", b"a", timestamp=1_700_000_000_000)
                second = await producer.send_and_wait("t", b"b", key=b"k")
            assert first == RecordMetadata("t", 0, 0, 1_700_000_000_000)
            assert (second.topic, second.partition, second.offset) == ("t", 0, 1)
            records = await consume_all(b.address, [TopicPartition("t", 0)], 2)
            assert [(r.offset, r.key, r.value) for r in records] == [
                (0, None, b"a"),
                (1, b"k", b"b"),
            ]
            assert records[0].timestamp == 1_700_000_000_000

    run(main())


@apis
def test_many_records_keep_their_order_and_offsets(tmp_path: Path, api: str) -> None:
    async def main() -> None:
        async with broker(tmp_path) as b:
            await create_topic(b.address, "t")
            async with Producer(b.address, batch_size=1024, linger=0.001) as producer:
                values = [b"%05d" % i for i in range(3000)]
                metas = await send_records(producer, api, "t", values, partition=0)
                assert [m.offset for m in metas] == list(range(3000))
            records = await consume_all(b.address, [TopicPartition("t", 0)], 3000)
            assert [r.value for r in records] == [b"%05d" % i for i in range(3000)]

    run(main())


@apis
def test_keyed_records_land_on_the_key_hash_partition(tmp_path: Path, api: str) -> None:
    async def main() -> None:
        async with broker(tmp_path) as b:
            await create_topic(b.address, "t", partitions=5)
            keys = [f"user-{i}".encode() for i in range(500)]
            values = [b"v%d" % i for i in range(500)]
            async with Producer(b.address, batch_size=1024) as producer:
                metas = await send_records(producer, api, "t", values, keys, chunk=300)
            assert [m.partition for m in metas] == [partition_for_key(k, 5) for k in keys]
            records = await consume_all(b.address, [TopicPartition("t", p) for p in range(5)], 500)
            stored = {(r.partition, r.offset): (r.key, r.value) for r in records}
            assert [stored[m.partition, m.offset] for m in metas] == list(
                zip(keys, values, strict=True)
            ), "a record is not where its metadata says"

    run(main())


@apis
def test_keyed_and_keyless_records_mixed(tmp_path: Path, api: str) -> None:
    async def main() -> None:
        async with broker(tmp_path) as b:
            await create_topic(b.address, "t", partitions=3)
            keys = [None if i % 3 == 0 else b"k%d" % i for i in range(90)]
            values = [b"v%d" % i for i in range(90)]
            async with Producer(b.address) as producer:
                metas = await send_records(producer, api, "t", values, keys)
            for key, meta in zip(keys, metas, strict=True):
                if key is not None:
                    assert meta.partition == partition_for_key(key, 3)
            records = await consume_all(b.address, [TopicPartition("t", p) for p in range(3)], 90)
            assert sorted(r.value for r in records) == sorted(values)

    run(main())


@apis
def test_keyless_records_spread_over_partitions(tmp_path: Path, api: str) -> None:
    async def main() -> None:
        async with broker(tmp_path) as b:
            await create_topic(b.address, "t", partitions=3)
            async with Producer(b.address, batch_size=200) as producer:
                metas = await send_records(producer, api, "t", [b"x" * 50] * 60, chunk=60)
            assert {m.partition for m in metas} == {0, 1, 2}

    run(main())


def test_explicit_partition_and_a_custom_partitioner(tmp_path: Path) -> None:
    def last(key: bytes | None, all_partitions: Any, available: Any) -> int:
        return int(all_partitions[-1])

    async def main() -> None:
        async with broker(tmp_path) as b:
            await create_topic(b.address, "t", partitions=4)
            async with Producer(b.address) as producer:
                assert (await producer.send_and_wait("t", b"x", partition=2)).partition == 2
                with pytest.raises(ValueError, match="no partition 4"):
                    await producer.send("t", b"x", partition=4)
                assert await producer.partitions_for("t") == (0, 1, 2, 3)
            async with Producer(b.address, partitioner=last) as producer:
                assert (await producer.send_and_wait("t", b"x", key=b"k")).partition == 3
                # send_many() chooses as send() does.
                bulk = await producer.send_many("t", [b"x", b"y"], [b"k", None])
                assert [r.partition for r in await bulk] == [3]
            async with Producer(b.address) as producer:
                bulk = await producer.send_many("t", [b"x"] * 3, partition=1)
                assert {m.partition for m in (await bulk, bulk.metadata())[1]} == {1}
                with pytest.raises(ValueError, match="no partition 4"):
                    await producer.send_many("t", [b"x"], partition=4)

    run(main())


@apis
@pytest.mark.parametrize("compression", ["none", "lz4", "zstd"])
def test_compressed_batches_round_trip(tmp_path: Path, compression: Any, api: str) -> None:
    async def main() -> None:
        async with broker(tmp_path) as b:
            await create_topic(b.address, "t")
            values = [b"value-%d " % i * 20 for i in range(500)]
            keys = [b"%d" % i for i in range(500)]
            async with Producer(b.address, compression=compression) as producer:
                if api == "send":  # with headers, which only send() takes
                    for i, v in enumerate(values):
                        await producer.send("t", v, key=keys[i], headers={"n": b"%d" % i})
                    await producer.flush()
                else:
                    await send_records(producer, api, "t", values, keys)
            records = await consume_all(b.address, [TopicPartition("t", 0)], 500)
            assert [r.value for r in records] == values
            assert records[7].key == b"7"
            assert records[7].headers == ((("n", b"7"),) if api == "send" else ())

    run(main())


@apis
@pytest.mark.parametrize("acks", ["none", "leader", "all"])
def test_every_ack_level_delivers(tmp_path: Path, acks: Any, api: str) -> None:
    async def main() -> None:
        async with broker(tmp_path) as b:
            await create_topic(b.address, "t")
            async with Producer(b.address, acks=acks) as producer:
                values = [b"%d" % i for i in range(100)]
                offsets = [m.offset for m in await send_records(producer, api, "t", values)]
            assert offsets == ([-1] * 100 if acks == "none" else list(range(100)))
            records = await consume_all(b.address, [TopicPartition("t", 0)], 100)
            assert [r.value for r in records] == [b"%d" % i for i in range(100)]

    run(main())


@apis
def test_serializers_on_both_ends(tmp_path: Path, api: str) -> None:
    async def main() -> None:
        async with broker(tmp_path) as b:
            await create_topic(b.address, "t")
            async with Producer(
                b.address, key_serializer="str", value_serializer="json"
            ) as producer:
                values = [{"id": 1, "tags": ["a"]}, None]
                await send_records(producer, api, "t", values, ["user", "tombstone"])
            records = await consume_all(
                b.address,
                [TopicPartition("t", 0)],
                2,
                key_deserializer="str",
                value_deserializer="json",
            )
            assert [(r.key, r.value) for r in records] == [
                ("user", {"id": 1, "tags": ["a"]}),
                ("tombstone", None),
            ]

    run(main())


def test_a_serializer_that_returns_no_bytes_is_refused_at_send(tmp_path: Path) -> None:
    async def main() -> None:
        async with broker(tmp_path) as b:
            await create_topic(b.address, "t")
            async with Producer(
                b.address, value_serializer=str, key_serializer=lambda k: k
            ) as producer:
                with pytest.raises(TypeError, match="value serializer returned str"):
                    await producer.send("t", 42)
                with pytest.raises(TypeError, match="key serializer returned int"):
                    await producer.send("t", None, key=7)
                with pytest.raises(TypeError, match="value serializer returned str for value 0"):
                    await producer.send_many("t", [42])
                with pytest.raises(TypeError, match="key serializer returned int for key 1"):
                    await producer.send_many("t", [None, None], [b"k", 7])
                # Nothing was half-added: the same producer goes on with good records.
                meta = await producer.send_and_wait("t", None, key=b"k")
            assert meta.offset == 0

    run(main())


@apis
def test_a_small_buffer_applies_back_pressure_without_losing_records(
    tmp_path: Path, api: str
) -> None:
    async def main() -> None:
        async with broker(tmp_path) as b:
            await create_topic(b.address, "t")
            async with Producer(
                b.address, batch_size=2048, max_request_size=4096, buffer_memory=8192
            ) as producer:
                values = [b"%06d" % i + b"x" * 100 for i in range(2000)]
                # send_many() calls of 1,000 records: far more than buffer_memory holds
                metas = await send_records(producer, api, "t", values, chunk=1000)
            assert [m.offset for m in metas] == list(range(2000))

    run(main())


@apis
def test_a_loop_that_only_sends_still_ships_full_batches_while_it_runs(
    tmp_path: Path, api: str
) -> None:
    # send() never has to wait here (the buffer holds everything), so only the yield after a
    # full batch lets the sender run: without it nothing would leave before the loop ends.
    async def main() -> None:
        async with broker(tmp_path) as b:
            await create_topic(b.address, "t")
            # acks=leader (the default before idempotence): the ack must not wait on an fsync
            async with Producer(b.address, acks="leader", batch_size=1024, linger=60) as producer:
                await producer.send("t", b"warm")
                await producer.flush()  # metadata and connection ready
                if api == "send":
                    futures = [await producer.send("t", b"x" * 100) for _ in range(2000)]
                    first_done = futures[0].done()
                else:
                    bulks = [await producer.send_many("t", [b"x" * 100] * 5) for _ in range(400)]
                    first_done = bulks[0].done()
                assert first_done, "the first full batch was not sent during the loop"
                await producer.flush()
                if api == "send":
                    metas = [f.result() for f in futures]
                else:
                    metas = [m for bulk in bulks for m in bulk.metadata()]
            assert [m.offset for m in metas] == list(range(1, 2001))

    run(main())


def test_unknown_topic_is_an_error_when_auto_create_is_off(tmp_path: Path) -> None:
    async def main() -> None:
        async with broker(tmp_path) as b, Producer(b.address) as producer:
            with pytest.raises(UnknownTopicOrPartitionError, match="create the topic first"):
                await producer.send("missing", b"x")

    run(main())


def test_allow_auto_create_topics_creates_on_first_send(tmp_path: Path) -> None:
    async def main() -> None:
        async with (
            broker(tmp_path, auto_create_topics=True) as b,
            Producer(b.address, allow_auto_create_topics=True) as producer,
        ):
            meta = await producer.send_and_wait("fresh", b"x")
            assert (meta.topic, meta.offset) == ("fresh", 0)

    run(main())


def test_a_record_above_max_request_size_is_refused(tmp_path: Path) -> None:
    async def main() -> None:
        async with broker(tmp_path) as b:
            await create_topic(b.address, "t")
            async with Producer(b.address, batch_size=1024, max_request_size=1024) as producer:
                with pytest.raises(MessageTooLargeError, match="max_request_size"):
                    await producer.send("t", b"x" * 2000)
                values = [b"ok", b"x" * 500, b"x" * 2000, b"ok"]
                with pytest.raises(MessageTooLargeError, match="record 2 of send_many"):
                    await producer.send_many("t", values, [b"k"] * 4)
                # Nothing of that call was queued: the next record is the log's first.
                assert (await producer.send_and_wait("t", b"next")).offset == 0

    run(main())


def test_send_after_close_is_refused(tmp_path: Path) -> None:
    async def main() -> None:
        async with broker(tmp_path) as b:
            await create_topic(b.address, "t")
            producer = Producer(b.address)
            with pytest.raises(ClientClosedError, match="not running"):
                await producer.send("t", b"x")
            with pytest.raises(ClientClosedError, match="not running"):
                await producer.send_many("t", [b"x"])
            async with producer:
                future = await producer.send("t", b"x")
                bulk = await producer.send_many("t", [b"y", b"z"])
            assert future.done()  # close() drained it
            assert future.result().offset == 0
            assert bulk.done()
            assert bulk.result() == [OffsetRange("t", 0, 1, 2)]
            with pytest.raises(ClientClosedError):
                await producer.send("t", b"x")
            with pytest.raises(ClientClosedError):
                await producer.send_many("t", [b"x"])

    run(main())


@pytest.mark.storage_bound
def test_records_survive_a_broker_restart(tmp_path: Path) -> None:
    async def main() -> None:
        async with broker(tmp_path) as b:
            await create_topic(b.address, "t")
            port = b.port
            producer = Producer(b.address, retry_backoff=0.01, retry_backoff_max=0.05)
            await producer.start()
            await producer.send_and_wait("t", b"before")
        # The broker is down: records queue and their sends are retried with backoff.
        futures = [await producer.send("t", b"during-%d" % i) for i in range(10)]
        assert not any(f.done() for f in futures)
        async with broker(tmp_path, port=port) as b:
            metas = [await f for f in futures]
            await producer.close()
            assert [m.offset for m in metas] == list(range(1, 11))
            records = await consume_all(b.address, [TopicPartition("t", 0)], 11)
            assert [r.value for r in records][:2] == [b"before", b"during-0"]

    run(main())


def test_delivery_timeout_fails_records_the_broker_never_took(tmp_path: Path) -> None:
    async def main() -> None:
        async with broker(tmp_path) as b:
            await create_topic(b.address, "t")
            producer = Producer(
                b.address, delivery_timeout=0.3, retry_backoff=0.01, request_timeout=0.2
            )
            await producer.start()
        future = await producer.send("t", b"lost")
        with pytest.raises(DeliveryTimeoutError, match="delivery_timeout") as info:
            await future
        assert info.value.__cause__ is not None  # the connection error behind it
        await producer.close()

    run(main())


def test_a_non_retriable_error_fails_only_its_records(tmp_path: Path) -> None:
    async def main() -> None:
        async with broker(tmp_path) as b:
            await create_topic(b.address, "small", max_message_bytes="1000")
            await create_topic(b.address, "t")
            async with Producer(b.address, linger=0.01) as producer:
                big = await producer.send("small", b"x" * 2000)
                fine = await producer.send("t", b"y")
                with pytest.raises(MessageTooLargeError, match="max_message_bytes"):
                    await big
                assert (await fine).offset == 0

    run(main())


def test_retries_zero_fails_on_the_first_retriable_error(tmp_path: Path) -> None:
    async def main() -> None:
        async with broker(tmp_path) as b:
            await create_topic(b.address, "t")
            producer = Producer(b.address, retries=0)
            await producer.start()
        future = await producer.send("t", b"x")
        with pytest.raises(TidelogConnectionError):
            await future
        await producer.close()

    run(main())


def test_send_many_refuses_bad_input_before_queueing_anything(tmp_path: Path) -> None:
    async def main() -> None:
        async with broker(tmp_path) as b:
            await create_topic(b.address, "t")
            async with Producer(b.address) as producer:
                with pytest.raises(TypeError, match="sequence of values"):
                    await producer.send_many("t", b"abc")
                with pytest.raises(TypeError, match="sequence of values"):
                    await producer.send_many("t", (v for v in [b"a"]))  # type: ignore[arg-type]
                with pytest.raises(TypeError, match="sequence of keys"):
                    await producer.send_many("t", [b"a"], "k")
                with pytest.raises(TypeError, match="cannot send a str as bytes"):
                    await producer.send_many("t", [b"a", "b"])
                with pytest.raises(TypeError, match="cannot send a int as bytes"):
                    await producer.send_many("t", [b"a"], [3])
                with pytest.raises(ClientUsageError, match="2 keys for 1 values"):
                    await producer.send_many("t", [b"a"], [b"k", b"l"])
                assert len(await producer.send_many("t", [])) == 0
                # bytearray and memoryview are taken (as bytes), None is a null value.
                bulk = await producer.send_many("t", [bytearray(b"ba"), memoryview(b"mv"), None])
                assert await bulk == [OffsetRange("t", 0, 0, 3)]
            records = await consume_all(b.address, [TopicPartition("t", 0)], 3)
            assert [r.value for r in records] == [b"ba", b"mv", None]

    run(main())


def test_send_many_splits_a_call_into_batches_in_order(tmp_path: Path) -> None:
    async def main() -> None:
        async with broker(tmp_path) as b:
            await create_topic(b.address, "t")
            async with Producer(b.address, batch_size=1024, linger=0.001) as producer:
                await producer.send("t", b"first")  # an open batch the call joins
                sizes = [10, 900, 30, 2000, 5] * 20  # 2000: larger than a batch, goes alone
                values = [b"%04d" % i + b"x" * n for i, n in enumerate(sizes)]
                bulk = await producer.send_many("t", values)
                last = await producer.send("t", b"last")
                ranges = await bulk
                assert (await last).offset == 101
            assert len(ranges) > 20, "the call was not split into batches"
            assert ranges[0].offset == 1
            for before, after in itertools.pairwise(ranges):
                assert after.offset == before.offset + before.records
            assert sum(r.records for r in ranges) == 100
            assert [m.offset for m in bulk.metadata()] == list(range(1, 101))
            records = await consume_all(b.address, [TopicPartition("t", 0)], 102)
            assert [r.value for r in records] == [b"first", *values, b"last"]

    run(main())
