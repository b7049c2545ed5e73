"""Bad input over a raw socket: each gets its specific error or a closed connection, the
broker keeps serving other clients, and nothing invalid is written."""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator

import pytest

from tidelog.testing import BrokerThread
from tidelog.wire import messages as m
from tidelog.wire.api import ApiKey, decode_response
from tidelog.wire.errors import (
    ErrorCode,
    HandshakeRequiredError,
    InvalidRequestError,
    UnknownApiError,
)
from tidelog.wire.frame import encode_frame
from tidelog.wire.layouts import FRAME_HEADER_STRUCT, FRAME_MAGIC
from tidelog.wire.records import build_batch, read_records

from .rawclient import RawClient


def produce(client: RawClient, topic: str, batch: bytes, partition: int = 0) -> m.ProduceResponse:
    request = m.ProduceRequest((m.ProducePartition(topic, partition, len(batch)),), acks=1)
    response = client.call(request, [batch])
    assert isinstance(response, m.ProduceResponse)
    return response


def fetch_all(client: RawClient, topic: str, partition: int = 0) -> list[bytes | None]:
    request = m.FetchRequest((m.FetchPartition(topic, partition, 0),), max_wait_ms=0)
    response, data = client.call_with_data(request)
    assert isinstance(response, m.FetchResponse)
    assert response.partitions[0].error_code == 0
    return [r.value for r in read_records(data)]


def assert_still_serving(broker: BrokerThread) -> None:
    with RawClient(broker.address) as other:
        other.handshake()
        response = other.call(m.MetadataRequest())
        assert isinstance(response, m.MetadataResponse)


@pytest.fixture
def client(tidelog_broker: BrokerThread) -> Iterator[RawClient]:
    with RawClient(tidelog_broker.address) as c:
        c.handshake()
        yield c


def test_garbage_bytes_close_the_connection(tidelog_broker: BrokerThread) -> None:
    with RawClient(tidelog_broker.address) as c:
        c.send_raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.is_closed_by_peer()
    assert_still_serving(tidelog_broker)


def test_wrong_checksum_closes_the_connection(
    client: RawClient, tidelog_broker: BrokerThread
) -> None:
    frame = bytearray(
        encode_frame(
            api_key=ApiKey.METADATA, api_version=0, flags=0, correlation_id=9, meta=b"\x80"
        )
    )
    frame[-1] ^= 0xFF  # the metadata byte, covered by the CRC
    client.send_raw(bytes(frame))
    assert client.is_closed_by_peer()
    assert_still_serving(tidelog_broker)


def test_oversized_length_is_refused_from_the_header_alone(tidelog_broker: BrokerThread) -> None:
    limit = tidelog_broker.config.max_frame_size
    header = FRAME_HEADER_STRUCT.pack(FRAME_MAGIC, 1, ApiKey.PRODUCE, 0, 0, 1, 16, limit, 0)
    with RawClient(tidelog_broker.address) as c:
        c.handshake()
        c.send_raw(header)  # the body never comes: the broker must not wait for it
        assert c.is_closed_by_peer()
    assert_still_serving(tidelog_broker)


def test_truncated_frame_then_close(tidelog_broker: BrokerThread) -> None:
    frame = encode_frame(
        api_key=ApiKey.METADATA, api_version=0, flags=0, correlation_id=1, meta=b"\x80"
    )
    with RawClient(tidelog_broker.address) as c:
        c.send_raw(frame[:-5])
    assert_still_serving(tidelog_broker)


def test_unknown_api_gets_an_error_and_the_connection_goes_on(client: RawClient) -> None:
    client.send_raw(
        encode_frame(api_key=999, api_version=0, flags=0, correlation_id=77, meta=b"\x80")
    )
    frame = client.read_frame()
    assert frame is not None and frame.header.correlation_id == 77
    with pytest.raises(UnknownApiError):
        decode_response(frame)
    assert isinstance(client.call(m.MetadataRequest()), m.MetadataResponse)


def test_unsupported_api_version(client: RawClient) -> None:
    client.send_raw(
        encode_frame(
            api_key=ApiKey.METADATA, api_version=42, flags=0, correlation_id=5, meta=b"\x80"
        )
    )
    frame = client.read_frame()
    assert frame is not None
    with pytest.raises(Exception, match="UNSUPPORTED_VERSION"):
        decode_response(frame)


def test_malformed_body_gets_invalid_request(client: RawClient) -> None:
    client.send_raw(
        encode_frame(
            api_key=ApiKey.METADATA, api_version=0, flags=0, correlation_id=3, meta=b"\xc1\xc1"
        )
    )
    frame = client.read_frame()
    assert frame is not None
    with pytest.raises(InvalidRequestError):
        decode_response(frame)
    assert isinstance(client.call(m.MetadataRequest()), m.MetadataResponse)


def test_requests_before_the_handshake_are_refused(tidelog_broker: BrokerThread) -> None:
    with RawClient(tidelog_broker.address) as c:
        with pytest.raises(HandshakeRequiredError):
            c.call(m.MetadataRequest())
        c.handshake()
        assert isinstance(c.call(m.MetadataRequest()), m.MetadataResponse)


def test_corrupt_batch_crc_is_refused_and_never_written(client: RawClient) -> None:
    good = build_batch([(None, b"good")])
    assert produce(client, "events", good).partitions[0].error_code == 0
    bad = bytearray(build_batch([(None, b"evil")]))
    bad[-1] ^= 0x01  # inside the records, covered by the batch CRC
    result = produce(client, "events", bytes(bad)).partitions[0]
    assert result.error_code == ErrorCode.CORRUPT_MESSAGE
    assert fetch_all(client, "events") == [b"good"]


def test_batch_with_wrong_length_field_is_refused(client: RawClient) -> None:
    batch = bytearray(build_batch([(None, b"x" * 10)]))
    struct.pack_into(">i", batch, 8, len(batch) * 2)
    result = produce(client, "events", bytes(batch)).partitions[0]
    assert result.error_code == ErrorCode.CORRUPT_MESSAGE
    assert fetch_all(client, "events") == []


def test_sizes_that_do_not_add_up_are_an_invalid_request(client: RawClient) -> None:
    batch = build_batch([(None, b"x")])
    request = m.ProduceRequest((m.ProducePartition("events", 0, len(batch) + 3),), acks=1)
    with pytest.raises(InvalidRequestError):
        client.call(request, [batch])


@pytest.mark.parametrize("name", ["", "..", "bad/name", "a" * 250, "sp ace"])
def test_invalid_topic_names(client: RawClient, name: str) -> None:
    batch = build_batch([(None, b"x")])
    result = produce(client, name, batch).partitions[0]
    assert result.error_code == ErrorCode.INVALID_TOPIC_NAME
    metadata = client.call(m.MetadataRequest())
    assert isinstance(metadata, m.MetadataResponse)
    assert metadata.topics == ()


def test_oversized_batch_is_refused(client: RawClient) -> None:
    created = client.call(
        m.CreateTopicsRequest((m.NewTopic("small", 1, configs={"max_message_bytes": "1000"}),))
    )
    assert isinstance(created, m.CreateTopicsResponse) and created.topics[0].error_code == 0
    result = produce(client, "small", build_batch([(None, b"x" * 2000)])).partitions[0]
    assert result.error_code == ErrorCode.MESSAGE_TOO_LARGE
    assert fetch_all(client, "small") == []


def test_unknown_partition(client: RawClient) -> None:
    produce(client, "events", build_batch([(None, b"x")]))
    result = produce(client, "events", build_batch([(None, b"x")]), partition=5).partitions[0]
    assert result.error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION


def test_fetch_out_of_range(client: RawClient) -> None:
    produce(client, "events", build_batch([(None, b"x")]))
    request = m.FetchRequest((m.FetchPartition("events", 0, 50),), max_wait_ms=0)
    response = client.call(request)
    assert isinstance(response, m.FetchResponse)
    assert response.partitions[0].error_code == ErrorCode.OFFSET_OUT_OF_RANGE


def test_bad_topic_config_is_refused(client: RawClient) -> None:
    response = client.call(
        m.CreateTopicsRequest(
            (
                m.NewTopic("a", 1, configs={"no_such_key": "1"}),
                m.NewTopic("b", 1, configs={"retention_ms": "soon"}),
                m.NewTopic("c", 0),
            )
        )
    )
    assert isinstance(response, m.CreateTopicsResponse)
    codes = [t.error_code for t in response.topics]
    assert codes == [
        ErrorCode.INVALID_CONFIG,
        ErrorCode.INVALID_CONFIG,
        ErrorCode.INVALID_PARTITIONS,
    ]
    metadata = client.call(m.MetadataRequest())
    assert isinstance(metadata, m.MetadataResponse) and metadata.topics == ()


def test_idle_connections_are_closed(tidelog_broker_factory: Callable[..., BrokerThread]) -> None:
    broker = tidelog_broker_factory(idle_timeout_s=0.2, handshake_timeout_s=0.2)
    with RawClient(broker.address) as silent:  # never handshakes
        assert silent.is_closed_by_peer()
    with RawClient(broker.address) as idle:
        idle.handshake()
        assert idle.is_closed_by_peer()
    assert_still_serving(broker)


def test_pre_handshake_junk_from_a_client_that_never_reads_is_bounded(
    tidelog_broker_factory: Callable[..., BrokerThread],
) -> None:
    broker = tidelog_broker_factory(max_connection_buffer=64 * 1024)
    request = encode_frame(
        api_key=ApiKey.METADATA, api_version=0, flags=0, correlation_id=1, meta=b"\x80"
    )
    with RawClient(broker.address, rcvbuf=16 * 1024) as c:
        c.sock.settimeout(1.0)
        sent = 0
        try:
            for _ in range(200_000):  # ~6 MB of requests, each answered with an error
                c.sock.sendall(request)
                sent += 1
        except TimeoutError:
            pass  # the broker stopped reading: the point of the test
        held = broker.call(
            lambda b: [(c.stats.peak_buffered, c.unsent_bytes) for c in b.connections]
        )
        assert held, "the connection should still be open"
        for peak, write_buffer in held:
            assert peak <= 64 * 1024 + 1024
            assert write_buffer <= 64 * 1024 + 1024 + 65536  # + the transport's high-water mark
    assert_still_serving(broker)


def test_a_partitions_batches_are_appended_all_or_none(client: RawClient) -> None:
    good = build_batch([(None, b"good")])
    assert produce(client, "events", good).partitions[0].error_code == 0
    bad = bytearray(build_batch([(None, b"evil")]))
    bad[-1] ^= 0x01
    section = build_batch([(None, b"first")]) + bytes(bad)  # a valid batch, then a corrupt one
    result = produce(client, "events", section).partitions[0]
    assert result.error_code == ErrorCode.CORRUPT_MESSAGE
    assert fetch_all(client, "events") == [b"good"]
    assert produce(client, "events", good).partitions[0].base_offset == 1
