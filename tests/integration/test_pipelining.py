"""Requests pipelined in one write start in arrival order, whether the broker serves them at
once (in its protocol callback) or in a task of their own (a topic to auto-create first)."""

from __future__ import annotations

from collections.abc import Callable

from tidelog.testing import BrokerThread
from tidelog.wire import messages as m
from tidelog.wire.api import decode_response, encode_request

from .rawclient import RawClient
from .test_backpressure import batch_of

Produce = tuple[m.ProduceRequest, list[bytes]]


def produce(*topics: str) -> Produce:
    batches = [batch_of(100, records=1) for _ in topics]
    sizes = zip(topics, map(len, batches), strict=True)
    partitions = tuple(m.ProducePartition(t, 0, size) for t, size in sizes)
    return m.ProduceRequest(partitions), batches


def pipelined(client: RawClient, requests: list[Produce]) -> dict[int, m.ProduceResponse]:
    """Send ``requests`` in one write (correlation ids from 100); their responses by id."""
    frames = [b"".join(encode_request(r, 100 + i, data=d)) for i, (r, d) in enumerate(requests)]
    client.send_raw(b"".join(frames))
    responses = {}
    for _ in requests:
        frame = client.read_frame()
        assert frame is not None
        response = decode_response(frame)
        assert isinstance(response, m.ProduceResponse)
        responses[frame.header.correlation_id] = response
    return responses


def offset_of(response: m.Response, topic: str) -> int:
    assert isinstance(response, m.ProduceResponse)
    (result,) = (p for p in response.partitions if p.topic == topic)
    assert result.error_code == 0, result
    return result.base_offset


def test_a_produce_that_waits_for_an_auto_create_keeps_its_place_before_the_next(
    tidelog_broker: BrokerThread,
) -> None:
    with RawClient(tidelog_broker.address) as c:
        c.handshake()
        offset_of(c.call(*produce("existing")), "existing")
        # The first request names a topic to create (served by a task); the second only the
        # existing one (servable at once): it must still land after the first.
        responses = pipelined(c, [produce("created", "existing"), produce("existing")])
    assert offset_of(responses[100], "existing") == 1
    assert offset_of(responses[101], "existing") == 2
    assert offset_of(responses[100], "created") == 0


def test_many_pipelined_produces_land_in_the_order_sent(
    tidelog_broker_factory: Callable[..., BrokerThread],
) -> None:
    broker = tidelog_broker_factory(max_inflight_requests=1000)
    with RawClient(broker.address) as c:
        c.handshake()
        offset_of(c.call(*produce("t")), "t")
        responses = pipelined(c, [produce("t") for _ in range(300)])
    assert [offset_of(responses[100 + i], "t") for i in range(300)] == list(range(1, 301))
