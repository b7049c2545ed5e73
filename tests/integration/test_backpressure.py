"""Back-pressure: a client that stops reading, and a producer that floods, slow themselves
down; the broker's buffered bytes per connection stay under the configured limits."""

from __future__ import annotations

import time
from collections.abc import Callable

from tidelog.server.connection import READ_CHUNK
from tidelog.testing import BrokerThread
from tidelog.wire import messages as m
from tidelog.wire.api import decode_response
from tidelog.wire.records import RecordBatchBuilder

from .rawclient import RawClient

LIMIT = 512 * 1024
FRAME = 1024 * 1024
DEADLINE_S = 60.0


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)  # polling a condition with a deadline, not synchronising by sleep


def batch_of(size: int, records: int = 16) -> bytes:
    builder = RecordBatchBuilder()
    for _ in range(records):
        builder.append(b"x" * (size // records))
    return builder.build()


def peak(broker: BrokerThread) -> list[tuple[int, int, int]]:
    return broker.call(
        lambda b: [
            (c.stats.buffered, c.stats.peak_buffered, c.stats.inflight) for c in b.connections
        ]
    )  # type: ignore[no-any-return]


def test_a_consumer_that_stops_reading_does_not_grow_broker_memory(
    tidelog_broker_factory: Callable[..., BrokerThread],
) -> None:
    broker = tidelog_broker_factory(
        max_connection_buffer=LIMIT, max_frame_size=FRAME, max_fetch_bytes=256 * 1024
    )
    with RawClient(broker.address) as producer:
        producer.handshake()
        batch = batch_of(64 * 1024)
        for _ in range(64):  # 4 MiB of records
            producer.call(m.ProduceRequest((m.ProducePartition("t", 0, len(batch)),)), [batch])

    slow = RawClient(broker.address, rcvbuf=64 * 1024)
    with slow:
        slow.handshake()
        fetch = m.FetchRequest((m.FetchPartition("t", 0, 0, 256 * 1024),), max_wait_ms=0)
        requests = 200
        for _ in range(requests):
            slow.send(fetch)
        # The broker fills the socket, then holds at most LIMIT (+ one read's worth) and
        # stops reading this connection.
        wait_for(lambda: any(b >= LIMIT for b, _, _ in peak(broker)), "the broker to stall")
        assert all(p <= LIMIT + READ_CHUNK + FRAME for _, p, _ in peak(broker))
        # Other clients are served meanwhile.
        with RawClient(broker.address) as other:
            other.handshake()
            assert isinstance(other.call(m.MetadataRequest()), m.MetadataResponse)
        # Nothing is lost: every response arrives once the client reads again.
        for _ in range(requests):
            frame = slow.read_frame()
            assert frame is not None
            response = decode_response(frame)
            assert isinstance(response, m.FetchResponse)
            assert response.partitions[0].size > 0
        assert all(p <= LIMIT + READ_CHUNK + FRAME for _, p, _ in peak(broker))


def test_a_flooding_producer_is_bounded_and_loses_nothing(
    tidelog_broker_factory: Callable[..., BrokerThread],
) -> None:
    broker = tidelog_broker_factory(
        max_connection_buffer=LIMIT, max_frame_size=FRAME, max_inflight_requests=4
    )
    batch = batch_of(64 * 1024)
    count = 100
    with RawClient(broker.address) as producer:
        producer.handshake()
        request = m.ProduceRequest((m.ProducePartition("flood", 0, len(batch)),), acks=-1)
        for _ in range(count):
            producer.send(request, [batch])
        for _ in range(count):
            frame = producer.read_frame()
            assert frame is not None
            response = decode_response(frame)
            assert isinstance(response, m.ProduceResponse)
            assert response.partitions[0].error_code == 0
        assert all(p <= LIMIT + READ_CHUNK + FRAME for _, p, _ in peak(broker))
        offsets = producer.call(
            m.ListOffsetsRequest((m.ListOffsetsPartition("flood", 0, m.OffsetSpec.LATEST),))
        )
        assert isinstance(offsets, m.ListOffsetsResponse)
        assert offsets.partitions[0].offset == count * 16


def test_a_long_polling_fetch_does_not_block_the_requests_behind_it(
    tidelog_broker: BrokerThread,
) -> None:
    with RawClient(tidelog_broker.address) as client:
        client.handshake()
        batch = batch_of(1024)
        client.call(m.ProduceRequest((m.ProducePartition("t", 0, len(batch)),)), [batch])
        # A fetch at the log end, asking for far more than the connection may buffer, parks.
        fetch = m.FetchRequest(
            (m.FetchPartition("t", 0, 16, 64 << 20),), max_wait_ms=30_000, max_bytes=64 << 20
        )
        fetch_id = client.send(fetch)
        metadata_id = client.send(m.MetadataRequest())
        first = client.read_frame()
        assert first is not None
        assert first.header.correlation_id == metadata_id  # answered while the fetch waits
        assert isinstance(decode_response(first), m.MetadataResponse)
        produce_id = client.send(
            m.ProduceRequest((m.ProducePartition("t", 0, len(batch)),)), [batch]
        )
        # The append wakes the fetch: both answers come, in either order.
        answered = set()
        for _ in range(2):
            frame = client.read_frame()
            assert frame is not None
            answered.add(frame.header.correlation_id)
        assert answered == {produce_id, fetch_id}
