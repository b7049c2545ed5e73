"""End to end: the real client against a real broker (in-process, on an ephemeral loopback
port), at volume and across the settings a user combines.

* 100,000 keyed records over 8 partitions arrive exactly once, in per-partition order, with
  key, value, headers and timestamp intact; keys keep their partition; an explicit partition
  and a custom partitioner are honoured for every record.
* Every ack level with every codec; batches from one record to the topic's maximum size.
* Long-poll fetches: a waiting fetch returns when a record is produced, a fetch at the end
  waits, a fetch below the log start is OFFSET_OUT_OF_RANGE and the consumer applies its
  reset policy.
* 50 producers and 50 consumers at once all finish with the right records.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest

from tests.integration.client.helpers import run
from tests.integration.rawclient import RawClient
from tidelog.client import (
    AdminClient,
    Consumer,
    ConsumerRecord,
    OffsetSpec,
    Producer,
    RecordMetadata,
    TopicPartition,
    partition_for_key,
)
from tidelog.testing import BrokerThread
from tidelog.wire import messages as m
from tidelog.wire.api import decode_response
from tidelog.wire.compression import Compression
from tidelog.wire.errors import ErrorCode, OffsetOutOfRangeError
from tidelog.wire.records import RecordBatch, RecordBatchBuilder, iter_batches

BrokerFactory = Callable[..., BrokerThread]
Row = tuple[int, bytes | None, bytes | None, tuple[tuple[str, bytes | None], ...], int]
"""What a consumer must give back for a produced record: offset, key, value, headers,
timestamp."""

DEADLINE_S = 30.0
"""Bound on waits for a condition (never a synchronisation device)."""
TOPIC_MAX_BYTES = 1024 * 1024 + 1024
"""A topic's default ``max_message_bytes``: the largest batch it accepts."""
CODECS = ["none", "lz4", "zstd"]


async def wait_until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll ``condition`` until it holds; fail after ``DEADLINE_S``."""
    deadline = time.monotonic() + DEADLINE_S
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)  # polling a condition with a deadline


async def create_topic(address: str, name: str, partitions: int = 1, **configs: str) -> None:
    async with AdminClient(address) as admin:
        await admin.create_topic(name, partitions, configs=configs)


async def log_offsets(address: str, tps: Sequence[TopicPartition], spec: int) -> dict[Any, int]:
    async with AdminClient(address) as admin:
        answer = await admin.list_offsets(dict.fromkeys(tps, spec))
    return {tp: answer[tp].offset for tp in tps}


async def consume_exactly(
    address: str, tps: Sequence[TopicPartition], count: int, **kwargs: Any
) -> dict[TopicPartition, list[ConsumerRecord[Any, Any]]]:
    """Every record of ``tps`` from the beginning, which must be ``count`` in all: reads until
    ``count`` came, then checks that the logs end there (so nothing came twice or is left)."""
    kwargs.setdefault("auto_offset_reset", "earliest")
    out: dict[TopicPartition, list[ConsumerRecord[Any, Any]]] = {tp: [] for tp in tps}
    got = 0
    async with Consumer(address, **kwargs) as consumer:
        consumer.assign(tps)
        while got < count:
            batch = await consumer.getmany(timeout=DEADLINE_S)
            assert batch, f"only {got} of {count} records arrived"
            for tp, records in batch.items():
                out[tp].extend(records)
                got += len(records)
        assert got == count
        ends = await log_offsets(address, tps, OffsetSpec.LATEST)
        for tp in tps:
            assert await consumer.position(tp) == ends[tp]
    assert sum(ends.values()) == count
    return out


def rows(records: Sequence[ConsumerRecord[Any, Any]]) -> list[Row]:
    return [(r.offset, r.key, r.value, r.headers, r.timestamp) for r in records]


def fetch_batches(address: str, tp: TopicPartition, offset: int = 0) -> list[RecordBatch]:
    """The batches stored for ``tp`` from ``offset``, as the broker serves them."""
    out: list[RecordBatch] = []
    with RawClient(address) as client:
        client.handshake()
        while True:
            request = m.FetchRequest(
                (m.FetchPartition(tp.topic, tp.partition, offset, 8 * 1024 * 1024),),
                max_wait_ms=0,
            )
            response, data = client.call_with_data(request)
            assert isinstance(response, m.FetchResponse)
            assert response.partitions[0].error_code == 0
            batches = list(iter_batches(data))
            if not batches:
                return out
            out.extend(b for b in batches if b.next_offset > offset)
            offset = batches[-1].next_offset


def fetchers_waiting(broker: BrokerThread) -> int:
    return broker.call(lambda b: b.core.notifier.waiting)  # type: ignore[no-any-return]


# --- 100,000 keyed records over 8 partitions ----------------------------------------------


def test_100k_keyed_records_arrive_exactly_once_in_partition_order_and_intact(
    tidelog_broker_factory: BrokerFactory,
) -> None:
    n, partitions = 100_000, 8
    base_ts = 1_700_000_000_000
    keys = [b"user-%d" % (i % 1000) for i in range(n)]
    # Timestamps out of order inside a partition: deltas in a batch may be negative.
    timestamps = [base_ts + (i * 7919) % n for i in range(n)]
    headers = [
        (("seq", b"%d" % i), ("empty", b""), ("null", None))
        if i % 3 == 0
        else (("seq", b"%d" % i),)
        for i in range(n)
    ]
    values = [b"value-%d" % i if i % 97 else None for i in range(n)]  # some tombstones

    async def main(address: str) -> None:
        await create_topic(address, "events", partitions)
        async with Producer(address, acks="all", linger=0.005) as producer:
            futures = [
                await producer.send(
                    "events", values[i], keys[i], timestamp=timestamps[i], headers=headers[i]
                )
                for i in range(n)
            ]
            await producer.flush()
        metas: list[RecordMetadata] = [f.result() for f in futures]

        # Where each record went: the key hash, the same partition for every record of a key,
        # offsets per partition in send order and contiguous from 0.
        expected: dict[TopicPartition, list[Row]] = defaultdict(list)
        partition_of_key: dict[bytes, int] = {}
        for i, meta in enumerate(metas):
            assert meta.partition == partition_for_key(keys[i], partitions)
            assert partition_of_key.setdefault(keys[i], meta.partition) == meta.partition
            assert meta.timestamp == timestamps[i]
            tp = TopicPartition("events", meta.partition)
            expected[tp].append((meta.offset, keys[i], values[i], headers[i], timestamps[i]))
        assert len(expected) == partitions  # 1000 keys spread over every partition
        for tp_rows in expected.values():
            assert [row[0] for row in tp_rows] == list(range(len(tp_rows)))

        tps = [TopicPartition("events", p) for p in range(partitions)]
        consumed = await consume_exactly(address, tps, n)
        for tp in tps:
            assert rows(consumed[tp]) == expected[tp], f"{tp} differs"

    run(main(tidelog_broker_factory(log_level="WARNING").address))


def test_explicit_partition_and_custom_partitioner_are_honoured_for_every_record(
    tidelog_broker_factory: BrokerFactory,
) -> None:
    n, partitions = 4000, 8
    calls: list[tuple[bytes | None, tuple[int, ...]]] = []

    def by_number(key: bytes | None, all_partitions: Sequence[int], available: Any) -> int:
        calls.append((key, tuple(all_partitions)))
        return 0 if key is None else int(key) % len(all_partitions)

    def where(i: int) -> int:
        if i % 10 == 0:
            return (i // 10) % partitions  # explicit partition: the partitioner is not asked
        if i % 10 == 1:
            return 0  # keyless: the partitioner decides (None -> 0)
        return i % partitions

    async def main(address: str) -> None:
        await create_topic(address, "routed", partitions)
        async with Producer(address, partitioner=by_number) as producer:
            futures = []
            for i in range(n):
                key = None if i % 10 == 1 else b"%d" % i
                partition = (i // 10) % partitions if i % 10 == 0 else None
                futures.append(await producer.send("routed", b"v%d" % i, key, partition=partition))
            await producer.flush()
        assert [f.result().partition for f in futures] == [where(i) for i in range(n)]
        assert len(calls) == n - n // 10
        assert {c[1] for c in calls} == {tuple(range(partitions))}
        # Sanity: the custom choice really differs from the key hash for many keys.
        assert sum(where(i) != partition_for_key(b"%d" % i, partitions) for i in range(n)) > n / 2

        tps = [TopicPartition("routed", p) for p in range(partitions)]
        consumed = await consume_exactly(address, tps, n)
        for tp, records in consumed.items():
            sent = [b"v%d" % i for i in range(n) if where(i) == tp.partition]
            assert [r.value for r in records] == sent

    run(main(tidelog_broker_factory(log_level="WARNING").address))


# --- ack levels, codecs, batch sizes ------------------------------------------------------


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("acks", ["none", "leader", "all"])
def test_every_ack_level_with_every_codec(
    tidelog_broker_factory: BrokerFactory, acks: Any, codec: Any
) -> None:
    n, partitions = 600, 3
    rng = random.Random(f"{acks}-{codec}")
    values = [
        rng.randbytes(rng.randrange(0, 300)) if i % 2 else b"compressible %d " % i * 20
        for i in range(n)
    ]
    keys = [b"k%d" % (i % 40) for i in range(n)]

    async def main(address: str) -> None:
        await create_topic(address, "t", partitions)
        async with Producer(address, acks=acks, compression=codec, linger=0.01) as producer:
            futures = [
                await producer.send("t", values[i], keys[i], headers={"i": b"%d" % i})
                for i in range(n)
            ]
            await producer.flush()
        metas = [f.result() for f in futures]
        assert [meta.partition for meta in metas] == [
            partition_for_key(k, partitions) for k in keys
        ]
        if acks == "none":
            assert {meta.offset for meta in metas} == {-1}  # no answer, no offsets

        tps = [TopicPartition("t", p) for p in range(partitions)]
        consumed = await consume_exactly(address, tps, n)
        for tp in tps:
            sent = [
                (keys[i], values[i], (("i", b"%d" % i),))
                for i in range(n)
                if metas[i].partition == tp.partition
            ]
            assert [(r.key, r.value, r.headers) for r in consumed[tp]] == sent
            if acks != "none":
                mine = [meta.offset for meta in metas if meta.partition == tp.partition]
                assert [r.offset for r in consumed[tp]] == mine
            # Stored as sent: every batch carries the producer's codec.
            stored = fetch_batches(address, tp)
            assert stored
            assert {b.compression for b in stored} == {Compression.parse(codec)}

    run(main(tidelog_broker_factory(log_level="WARNING").address))


@pytest.mark.parametrize("codec", CODECS)
def test_batch_size_one_sends_one_record_per_batch(
    tidelog_broker_factory: BrokerFactory, codec: Any
) -> None:
    n = 200

    async def main(address: str) -> None:
        await create_topic(address, "t")
        async with Producer(address, batch_size=1, compression=codec, linger=0.05) as producer:
            futures = [await producer.send("t", b"record-%d" % i, b"k") for i in range(n)]
            await producer.flush()
        assert [f.result().offset for f in futures] == list(range(n))
        tp = TopicPartition("t", 0)
        batches = fetch_batches(address, tp)
        assert [(b.base_offset, len(b.records())) for b in batches] == [(i, 1) for i in range(n)]
        consumed = await consume_exactly(address, [tp], n)
        assert [r.value for r in consumed[tp]] == [b"record-%d" % i for i in range(n)]

    run(main(tidelog_broker_factory(log_level="WARNING").address))


def uncompressed_size(records: Sequence[Any]) -> int:
    """The size of a batch of ``records`` without compression."""
    builder = RecordBatchBuilder()
    for r in records:
        builder.append(r.value, r.key, r.headers, r.timestamp)
    return len(builder.build())


def check_full_batches(
    address: str, codec: Any, values: list[bytes], *, compressible: bool = True
) -> None:
    """Produce ``values`` (about 8 KiB each) in batches as large as the topic accepts; each
    batch but the last is as full as it can be, and every record comes back. Incompressible
    batches may be stored uncompressed (a codec is chosen per batch)."""

    async def main() -> None:
        await create_topic(address, "big")
        async with Producer(
            address,
            batch_size=TOPIC_MAX_BYTES,
            max_request_size=TOPIC_MAX_BYTES,
            compression=codec,
            linger=0.5,
        ) as producer:
            futures = [await producer.send("big", v, b"key") for v in values]
            await producer.flush()
        assert [f.result().offset for f in futures] == list(range(len(values)))

        tp = TopicPartition("big", 0)
        batches = fetch_batches(address, tp)
        assert len(batches) >= 2
        if compressible:
            assert {b.compression for b in batches} == {Compression.parse(codec)}
        for batch in batches[:-1]:
            size = uncompressed_size(batch.records())
            assert size <= TOPIC_MAX_BYTES
            assert TOPIC_MAX_BYTES - size < 8300  # another record would not have fit
            assert len(batch.buffer) <= TOPIC_MAX_BYTES
        consumed = await consume_exactly(address, [tp], len(values))
        assert [r.value for r in consumed[tp]] == values

    run(main())


@pytest.mark.parametrize("codec", CODECS)
def test_batches_up_to_the_topic_maximum_round_trip(
    tidelog_broker_factory: BrokerFactory, codec: Any
) -> None:
    rng = random.Random(codec)
    # Half random, half repetitive: compressible, as most payloads are. ~3 MiB in all.
    values = [rng.randbytes(4000) + b"%d" % i * 1000 for i in range(400)]
    values = [v[:8200] for v in values]
    check_full_batches(tidelog_broker_factory(log_level="WARNING").address, codec, values)


@pytest.mark.parametrize(
    "codec",
    [
        "none",
        "lz4",
        "zstd",
    ],
)
def test_incompressible_records_in_batches_of_the_topic_maximum_are_accepted(
    tidelog_broker_factory: BrokerFactory, codec: Any
) -> None:
    rng = random.Random(codec)
    values = [rng.randbytes(8000 + rng.randrange(200)) for _ in range(400)]  # ~3 MiB
    address = tidelog_broker_factory(log_level="WARNING").address
    check_full_batches(address, codec, values, compressible=False)


# --- long-poll fetches and the log start --------------------------------------------------


def test_a_waiting_fetch_returns_as_soon_as_a_record_is_produced(
    tidelog_broker_factory: BrokerFactory,
) -> None:
    broker = tidelog_broker_factory(log_level="WARNING")
    tp = TopicPartition("t", 0)

    async def main(address: str) -> None:
        await create_topic(address, "t")
        # The broker holds each fetch up to 30 s; getmany() gives up after 20 s. Only a fetch
        # woken by the append can deliver the record inside getmany()'s window.
        async with Consumer(address, auto_offset_reset="latest", fetch_max_wait=30) as consumer:
            consumer.assign([tp])
            assert await consumer.position(tp) == 0
            waiting = asyncio.ensure_future(consumer.getmany(timeout=20))

            async def parked() -> bool:
                return await asyncio.to_thread(fetchers_waiting, broker) == 1

            await wait_until(parked, "the consumer's fetch to wait on the broker")
            assert not waiting.done()
            async with Producer(address) as producer:
                await producer.send_and_wait("t", b"late", b"k")
            batch = await waiting
        assert [(r.offset, r.key, r.value) for r in batch[tp]] == [(0, b"k", b"late")]

    run(main(broker.address))


def test_a_fetch_at_the_log_end_waits_then_returns_nothing_without_error(
    tidelog_broker_factory: BrokerFactory,
) -> None:
    broker = tidelog_broker_factory(log_level="WARNING")
    address = broker.address

    async def produce(count: int) -> None:
        async with Producer(address) as producer:
            for i in range(count):
                await producer.send("t", b"r%d" % i)

    run(create_topic(address, "t"))
    run(produce(3))
    with RawClient(address) as client:
        client.handshake()
        # A short wait at the end: an empty answer, no error, the high watermark.
        fetch = m.FetchRequest((m.FetchPartition("t", 0, 3),), max_wait_ms=50)
        response, data = client.call_with_data(fetch)
        assert isinstance(response, m.FetchResponse)
        (result,) = response.partitions
        assert (result.error_code, result.size, result.high_watermark) == (0, 0, 3)
        assert data == b""

        # A long wait at the end: the broker holds it (no answer yet) until a record comes.
        # The broker may hold it 30 s; we read for 20 s at most, so only a fetch woken by
        # the append can answer in time.
        client.send(m.FetchRequest((m.FetchPartition("t", 0, 3),), max_wait_ms=30_000))
        client.sock.settimeout(20)
        deadline = time.monotonic() + DEADLINE_S
        while fetchers_waiting(broker) != 1:
            assert time.monotonic() < deadline, "the fetch at the end did not wait"
            time.sleep(0.01)  # polling a condition with a deadline
        run(produce(1))
        frame = client.read_frame()
        assert frame is not None
        response = decode_response(frame)
        assert isinstance(response, m.FetchResponse)
        (result,) = response.partitions
        assert (result.error_code, result.high_watermark) == (0, 4)
        records = [r for b in iter_batches(bytes(frame.data)) for r in b.records()]
        assert [(r.offset, r.value) for r in records] == [(3, b"r0")]
    assert fetchers_waiting(broker) == 0


def test_fetch_below_the_log_start_is_out_of_range_and_the_consumer_applies_its_reset_policy(
    tidelog_broker_factory: BrokerFactory,
) -> None:
    broker = tidelog_broker_factory(log_level="WARNING", retention_check_interval_ms=50)
    address = broker.address
    tp = TopicPartition("r", 0)
    old, fresh = 20, 5

    async def main() -> None:
        # One record per batch, one batch per segment; retention by time deletes the segments
        # of the 20 records stamped in 1970 and keeps the 5 fresh ones: the log starts at 20.
        await create_topic(address, "r", segment_bytes="1024", retention_ms=str(3_600_000))
        async with Producer(address, batch_size=1, acks="all") as producer:
            for i in range(old):
                await producer.send("r", b"old-%d" % i + b"." * 600, timestamp=1000 + i)
            for i in range(fresh):
                await producer.send("r", b"fresh-%d" % i + b"." * 600)
            await producer.flush()

        async def log_start_is_20() -> bool:
            return (await log_offsets(address, [tp], OffsetSpec.EARLIEST))[tp] == old

        await wait_until(log_start_is_20, "retention to delete the old segments")
        assert (await log_offsets(address, [tp], OffsetSpec.LATEST))[tp] == old + fresh

        # The broker: a fetch below the log start is OFFSET_OUT_OF_RANGE.
        def raw_fetch() -> m.FetchPartitionResult:
            with RawClient(address) as client:
                client.handshake()
                response = client.call(m.FetchRequest((m.FetchPartition("r", 0, 5),)))
                assert isinstance(response, m.FetchResponse)
                return response.partitions[0]

        result = await asyncio.to_thread(raw_fetch)
        assert result.error_code == ErrorCode.OFFSET_OUT_OF_RANGE

        # "none": the error reaches the caller, and stays until a seek.
        async with Consumer(address, auto_offset_reset="none") as consumer:
            consumer.assign([tp])
            consumer.seek(tp, 0)
            for _ in range(2):
                with pytest.raises(OffsetOutOfRangeError):
                    await consumer.getmany(timeout=DEADLINE_S)
            consumer.seek(tp, old)
            assert (await consumer.getone()).value.startswith(b"fresh-0")

        # "earliest": resumes at the new log start.
        async with Consumer(address, auto_offset_reset="earliest") as consumer:
            consumer.assign([tp])
            consumer.seek(tp, 0)
            record = await consumer.getone()
            assert record.offset == old
            assert record.value.startswith(b"fresh-0.")

        # "latest": jumps to the end and gets only what is produced from then on.
        async with Consumer(address, auto_offset_reset="latest") as consumer:
            consumer.assign([tp])
            consumer.seek(tp, 0)

            async def reset_done() -> bool:
                return await consumer.position(tp) != 0

            await wait_until(reset_done, "the consumer to reset its position")
            assert await consumer.position(tp) == old + fresh
            async with Producer(address) as producer:
                await producer.send_and_wait("r", b"newest")
            record = await consumer.getone()
            assert (record.offset, record.value) == (old + fresh, b"newest")

    run(main())


# --- many clients at once -----------------------------------------------------------------


def test_50_producers_and_50_consumers_at_once(tidelog_broker_factory: BrokerFactory) -> None:
    clients, per_client = 50, 200
    acks_levels: list[Any] = ["none", "leader", "all"]

    def value(c: int, i: int) -> bytes:
        return b"client-%d-record-%d" % (c, i)

    async def produce(address: str, c: int) -> list[int]:
        async with Producer(
            address, acks=acks_levels[c % 3], linger=0.002, client_id=f"p{c}"
        ) as producer:
            futures = [
                await producer.send("many", value(c, i), b"%d" % i, partition=c)
                for i in range(per_client)
            ]
            await producer.flush()
        return [f.result().offset for f in futures]

    async def consume(address: str, c: int) -> list[ConsumerRecord[Any, Any]]:
        tp = TopicPartition("many", c)
        out: list[ConsumerRecord[Any, Any]] = []
        async with Consumer(address, auto_offset_reset="earliest", client_id=f"c{c}") as consumer:
            consumer.assign([tp])
            while len(out) < per_client:
                batch = await consumer.getmany(timeout=DEADLINE_S)
                assert batch, f"consumer {c} got {len(out)} of {per_client} records"
                out.extend(batch[tp])
        return out

    async def main(address: str) -> None:
        await create_topic(address, "many", clients)
        results = await asyncio.gather(
            *(consume(address, c) for c in range(clients)),
            *(produce(address, c) for c in range(clients)),
        )
        consumed: list[list[ConsumerRecord[Any, Any]]] = results[:clients]
        offsets: list[list[int]] = results[clients:]
        for c in range(clients):
            expected_offsets = [-1] * per_client if c % 3 == 0 else list(range(per_client))
            assert offsets[c] == expected_offsets
            assert [(r.offset, r.key, r.value) for r in consumed[c]] == [
                (i, b"%d" % i, value(c, i)) for i in range(per_client)
            ]
        tps = [TopicPartition("many", c) for c in range(clients)]
        ends = await log_offsets(address, tps, OffsetSpec.LATEST)
        assert set(ends.values()) == {per_client}  # nothing written twice

    run(main(tidelog_broker_factory(log_level="WARNING").address))
