"""The idempotent producer against a real broker, behind a proxy that loses produce responses:
each lost answer is a batch the broker appended but the producer must retry. With idempotence
every record is in the log exactly once, in the order sent, at the offset acknowledged;
without it the same faults write duplicates."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tidelog.client import AdminClient, OffsetSpec, Producer, TopicPartition
from tidelog.wire.api import ApiKey
from tidelog.wire.records import iter_batches

from ..proxy import DropEvery, Proxy
from .helpers import SEND_APIS, broker, consume_all, create_topic, run, send_records

TOPIC = "events"
PARTITIONS = 3
RECORDS = 3000
GROWN = "1024"
"""The topics' max_message_bytes: how large a batch grows while its window is full."""


async def produce_through(
    proxy: Proxy, api: str = "send", **options: Any
) -> list[tuple[bytes, int, int]]:
    """Send RECORDS keyed records through ``proxy`` with ``api`` (``send_many()`` in calls of
    50); (value, partition, offset) of each."""
    values = [b"v%05d" % i for i in range(RECORDS)]
    keys = [b"k%d" % (i % 17) for i in range(RECORDS)]
    async with Producer(
        proxy.address,
        batch_size=256,
        linger=0.001,
        retry_backoff=0.005,
        retry_backoff_max=0.05,
        **options,
    ) as producer:
        metas = await send_records(producer, api, TOPIC, values, keys, chunk=50)
    return [(v, meta.partition, meta.offset) for v, meta in zip(values, metas, strict=True)]


async def read_log(address: str, partitions: int = PARTITIONS) -> dict[int, list[bytes]]:
    """Every record of every partition, to the end of the log."""
    tps = [TopicPartition(TOPIC, p) for p in range(partitions)]
    count = sum(await asyncio.gather(*(_end(address, p) for p in range(partitions))))
    log: dict[int, list[bytes]] = {p: [] for p in range(partitions)}
    for record in await consume_all(address, tps, count):
        assert record.offset == len(log[record.partition])
        log[record.partition].append(record.value)
    return log


@pytest.mark.parametrize("api", SEND_APIS)
def test_lost_produce_responses_are_retried_and_each_record_is_written_once(
    tmp_path: Path, api: str
) -> None:
    async def main() -> None:
        async with broker(tmp_path) as b:
            # Small batches (grown ones too: see client/growth.py), so many requests to lose.
            await create_topic(b.address, TOPIC, PARTITIONS, max_message_bytes=GROWN)
            policy = DropEvery(ApiKey.PRODUCE, 3)
            async with Proxy("127.0.0.1", b.port, policy=policy) as proxy:
                acked = await produce_through(proxy, api)
            log = await read_log(b.address)
            assert Counter(v for values in log.values() for v in values) == Counter(
                v for v, _, _ in acked
            ), "a record is missing or written twice"
            for value, partition, offset in acked:
                assert log[partition][offset] == value, "acknowledged at another offset"
            for partition, values in log.items():
                sent = [v for v, p, _ in acked if p == partition]
                assert values == sent, f"partition {partition} is not in the order sent"
            assert policy.dropped >= 10, "the proxy lost too few responses to test anything"
            assert proxy.connections > policy.dropped  # each loss cost a reconnection

    run(main())


@pytest.mark.parametrize("api", SEND_APIS)
def test_pipelined_requests_of_one_partition_cut_mid_flight_land_once_in_order(
    tmp_path: Path, api: str
) -> None:
    """One partition, several of its requests in flight when the proxy drops a response and
    cuts the connection: every request on it fails, each comes back in order and is retried;
    the broker answers those it had appended with their original offsets."""

    async def main() -> None:
        async with broker(tmp_path) as b:
            await create_topic(b.address, TOPIC, 1, max_message_bytes=GROWN)
            policy = DropEvery(ApiKey.PRODUCE, 4)
            async with Proxy("127.0.0.1", b.port, policy=policy) as proxy:
                acked = await produce_through(proxy, api)
            log = (await read_log(b.address, partitions=1))[0]
            assert log == [v for v, _, _ in acked], "a record is missing, twice or out of order"
            assert [offset for _, _, offset in acked] == list(range(RECORDS))
            assert policy.dropped >= 10, "the proxy lost too few responses to test anything"
            assert proxy.peak_in_flight[ApiKey.PRODUCE] > 1, "the partition did not pipeline"

    run(main())


def test_without_idempotence_the_same_faults_write_duplicates(tmp_path: Path) -> None:
    """The control: what the test above catches when idempotence is off."""

    async def main() -> None:
        async with broker(tmp_path) as b:
            await create_topic(b.address, TOPIC, PARTITIONS)
            policy = DropEvery(ApiKey.PRODUCE, 2, limit=3)
            async with Proxy("127.0.0.1", b.port, policy=policy) as proxy:
                await produce_through(proxy, acks="all", enable_idempotence=False)
            ends = await asyncio.gather(*(_end(b.address, p) for p in range(PARTITIONS)))
            assert policy.dropped >= 1  # each one an appended batch, then appended again
            assert sum(ends) > RECORDS

    run(main())


async def _end(address: str, partition: int) -> int:
    tp = TopicPartition(TOPIC, partition)
    async with AdminClient(address) as admin:
        return (await admin.list_offsets({tp: OffsetSpec.LATEST}))[tp].offset


@pytest.mark.storage_bound  # reads the batches from the segment files
@pytest.mark.parametrize("api", SEND_APIS)
def test_batches_grow_while_the_window_is_full_up_to_the_topic_limit(
    tmp_path: Path, api: str
) -> None:
    """A fast idempotent producer: the partition's 5 batches in flight leave the rest waiting,
    so the open batch grows past batch_size (fewer, larger batches), never past the topic's
    max_message_bytes; the records stay in order. Without idempotence nothing grows."""

    async def produce(address: str, topic: str, idempotence: bool) -> list[int]:
        values = [b"%06d" % i + b"x" * 44 for i in range(20_000)]
        async with Producer(
            address, batch_size=1024, linger=0.001, enable_idempotence=idempotence
        ) as producer:
            metas = await send_records(producer, api, topic, values, chunk=500)
        assert [m.offset for m in metas] == list(range(20_000))
        records = await consume_all(address, [TopicPartition(topic, 0)], 20_000)
        assert [r.value for r in records] == values
        return [
            batch.size
            for segment in sorted((tmp_path / f"{topic}-0").glob("*.log"))
            for batch in iter_batches(segment.read_bytes())
        ]

    async def main() -> None:
        async with broker(tmp_path) as b:
            await create_topic(b.address, "grows", max_message_bytes="8192")
            await create_topic(b.address, "control", max_message_bytes="8192")
            grown = await produce(b.address, "grows", True)
            plain = await produce(b.address, "control", False)
        assert max(grown) > 1024, "no batch grew"
        assert max(grown) <= 8192, "a batch grew past max_message_bytes"
        assert max(plain) <= 1024
        assert len(grown) < len(plain)

    run(main())
