"""The producer against a real broker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tidelog.client import (
    ClientClosedError,
    DeliveryTimeoutError,
    Producer,
    RecordMetadata,
    TidelogConnectionError,
    TopicPartition,
    partition_for_key,
)
from tidelog.wire.errors import MessageTooLargeError, UnknownTopicOrPartitionError

from .helpers import broker, consume_all, create_topic, run


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


def test_many_records_keep_their_order_and_offsets(tmp_path: Path) -> None:
    async def main() -> None:
        async with broker(tmp_path) as b:
            await create_topic(b.address, "t")
            async with Producer(b.address, batch_size=1024, linger=0.001) as producer:
                futures = [await producer.send("t", b"%05d" % i, partition=0) for i in range(3000)]
                await producer.flush()
                assert all(f.done() for f in futures)
                assert [f.result().offset for f in futures] == list(range(3000))
            records = await consume_all(b.address, [TopicPartition("t", 0)], 3000)
            assert [r.value for r in records] == [b"%05d" % i for i in range(3000)]

    run(main())


def test_keyed_records_land_on_the_key_hash_partition(tmp_path: Path) -> None:
    async def main() -> None:
        async with broker(tmp_path) as b:
            await create_topic(b.address, "t", partitions=5)
            keys = [f"user-{i}".encode() for i in range(50)]
            async with Producer(b.address) as producer:
                futures = [await producer.send("t", b"v", key=k) for k in keys]
                metas = [await f for f in futures]
            assert [m.partition for m in metas] == [partition_for_key(k, 5) for k in keys]

    run(main())


def test_keyless_records_spread_over_partitions(tmp_path: Path) -> None:
    async def main() -> None:
        async with broker(tmp_path) as b:
            await create_topic(b.address, "t", partitions=3)
            async with Producer(b.address, batch_size=200) as producer:
                futures = [await producer.send("t", b"x" * 50) for _ in range(60)]
                partitions = {(await f).partition for f in futures}
            assert partitions == {0, 1, 2}

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

    run(main())


@pytest.mark.parametrize("compression", ["none", "lz4", "zstd"])
def test_compressed_batches_round_trip(tmp_path: Path, compression: Any) -> None:
    async def main() -> None:
        async with broker(tmp_path) as b:
            await create_topic(b.address, "t")
            values = [b"value-%d " % i * 20 for i in range(500)]
            async with Producer(b.address, compression=compression) as producer:
                for i, v in enumerate(values):
                    await producer.send("t", v, key=b"%d" % i, headers={"n": b"%d" % i})
                await producer.flush()
            records = await consume_all(b.address, [TopicPartition("t", 0)], 500)
            assert [r.value for r in records] == values
            assert records[7].key == b"7"
            assert records[7].headers == (("n", b"7"),)

    run(main())


@pytest.mark.parametrize("acks", ["none", "leader", "all"])
def test_every_ack_level_delivers(tmp_path: Path, acks: Any) -> None:
    async def main() -> None:
        async with broker(tmp_path) as b:
            await create_topic(b.address, "t")
            async with Producer(b.address, acks=acks) as producer:
                futures = [await producer.send("t", b"%d" % i) for i in range(100)]
                await producer.flush()
                offsets = [f.result().offset for f in futures]
            assert offsets == ([-1] * 100 if acks == "none" else list(range(100)))
            records = await consume_all(b.address, [TopicPartition("t", 0)], 100)
            assert [r.value for r in records] == [b"%d" % i for i in range(100)]

    run(main())


def test_serializers_on_both_ends(tmp_path: Path) -> None:
    async def main() -> None:
        async with broker(tmp_path) as b:
            await create_topic(b.address, "t")
            async with Producer(
                b.address, key_serializer="str", value_serializer="json"
            ) as producer:
                await producer.send_and_wait("t", {"id": 1, "tags": ["a"]}, key="user")
                await producer.send_and_wait("t", None, key="tombstone")
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
                # Nothing was half-added: the same producer goes on with good records.
                meta = await producer.send_and_wait("t", None, key=b"k")
            assert meta.offset == 0

    run(main())


def test_a_small_buffer_applies_back_pressure_without_losing_records(tmp_path: Path) -> None:
    async def main() -> None:
        async with broker(tmp_path) as b:
            await create_topic(b.address, "t")
            async with Producer(
                b.address, batch_size=2048, max_request_size=4096, buffer_memory=8192
            ) as producer:
                futures = [await producer.send("t", b"%06d" % i + b"x" * 100) for i in range(2000)]
                metas = [await f for f in futures]
            assert [m.offset for m in metas] == list(range(2000))

    run(main())


def test_a_loop_that_only_sends_still_ships_full_batches_while_it_runs(tmp_path: Path) -> None:
    # send() never has to wait here (the buffer holds everything), so only the yield after a
    # full batch lets the sender run: without it nothing would leave before the loop ends.
    async def main() -> None:
        async with broker(tmp_path) as b:
            await create_topic(b.address, "t")
            # acks=leader (the default before idempotence): the ack must not wait on an fsync
            async with Producer(b.address, acks="leader", batch_size=1024, linger=60) as producer:
                await producer.send("t", b"warm")
                await producer.flush()  # metadata and connection ready
                futures = [await producer.send("t", b"x" * 100) for _ in range(2000)]
                assert futures[0].done(), "the first full batch was not sent during the loop"
                await producer.flush()
                metas = [f.result() for f in futures]
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

    run(main())


def test_send_after_close_is_refused(tmp_path: Path) -> None:
    async def main() -> None:
        async with broker(tmp_path) as b:
            await create_topic(b.address, "t")
            producer = Producer(b.address)
            with pytest.raises(ClientClosedError, match="not running"):
                await producer.send("t", b"x")
            async with producer:
                future = await producer.send("t", b"x")
            assert future.done()  # close() drained it
            assert future.result().offset == 0
            with pytest.raises(ClientClosedError):
                await producer.send("t", b"x")

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
