"""Bounded connections (issue 13, points 1-3), against an in-process broker over raw sockets:
the small frame limit before a handshake, the handshake and frame deadlines against clients
that trickle bytes, and the work of a client that goes away, cancelled at once."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import pytest

from tidelog.testing import BrokerThread
from tidelog.wire import messages as m
from tidelog.wire.api import ApiKey, encode_request, supported_versions
from tidelog.wire.frame import MAX_HANDSHAKE_FRAME_SIZE
from tidelog.wire.layouts import FRAME_HEADER_STRUCT, FRAME_MAGIC
from tidelog.wire.records import read_records

from .rawclient import RawClient
from .rawload import fill, trickle
from .test_backpressure import batch_of, wait_for


def assert_serves_produce(broker: BrokerThread, topic: str = "other") -> None:
    with RawClient(broker.address) as other:
        other.handshake()
        batch = batch_of(1024)
        response = other.call(
            m.ProduceRequest((m.ProducePartition(topic, 0, len(batch)),)), [batch]
        )
        assert isinstance(response, m.ProduceResponse)
        assert response.partitions[0].error_code == 0
        fetched, data = other.call_with_data(
            m.FetchRequest((m.FetchPartition(topic, 0, 0),), max_wait_ms=0)
        )
        assert isinstance(fetched, m.FetchResponse) and read_records(data)


# --- point 1: the frame limit before a handshake ------------------------------------------------


def test_a_large_frame_before_the_handshake_closes_the_connection_naming_the_limit(
    tidelog_broker: BrokerThread, caplog: pytest.LogCaptureFixture
) -> None:
    body = MAX_HANDSHAKE_FRAME_SIZE + 1
    header = FRAME_HEADER_STRUCT.pack(FRAME_MAGIC, 1, ApiKey.PRODUCE, 0, 0, 1, 0, body, 0)
    with (
        caplog.at_level(logging.WARNING, "tidelog.server.connection"),
        RawClient(tidelog_broker.address) as c,
    ):
        c.send_raw(header)  # far below max_frame_size, but no handshake yet
        assert c.is_closed_by_peer()
        wait_for(lambda: not tidelog_broker.call(lambda b: b.connections), "the close")
    assert "above the limit before a handshake (MAX_HANDSHAKE_FRAME_SIZE) of " in caplog.text
    with RawClient(tidelog_broker.address) as c:
        request = m.HandshakeRequest(client_id="c" * 4096, api_versions=supported_versions())
        assert isinstance(c.call(request), m.HandshakeResponse)  # a long name still fits
        # After the handshake a frame of that size is served (its data is no batch: refused).
        data = bytes(body)
        request = m.ProduceRequest((m.ProducePartition("t", 0, len(data)),))
        response = c.call(request, [data])
        assert isinstance(response, m.ProduceResponse) and response.partitions[0].error_code


# --- point 2: deadlines, not idle timers ---------------------------------------------------------


def test_the_handshake_timeout_is_a_deadline_from_accept(
    tidelog_broker_factory: Callable[..., BrokerThread],
) -> None:
    broker = tidelog_broker_factory(handshake_timeout_s=0.3)
    request = m.HandshakeRequest(client_id="trickler", api_versions=supported_versions())
    frame = b"".join(encode_request(request, 1))
    with RawClient(broker.address) as c:
        # A byte every TRICKLE_PAUSE_S would keep an idle timer from ever firing.
        sent = trickle(c.sock, frame)
        assert sent < len(frame), "the broker waited for the whole trickled handshake"
        assert c.is_closed_by_peer()
    assert_serves_produce(broker)


def test_a_frame_once_begun_must_complete_within_the_idle_timeout(
    tidelog_broker_factory: Callable[..., BrokerThread],
) -> None:
    broker = tidelog_broker_factory(idle_timeout_s=0.3)
    batch = batch_of(1024)
    request = m.ProduceRequest((m.ProducePartition("t", 0, len(batch)),))
    frame = b"".join(encode_request(request, 2, data=[batch]))
    with RawClient(broker.address) as c:
        c.handshake()
        sent = trickle(c.sock, frame)
        assert sent < len(frame), "the broker waited for the whole trickled frame"
        assert c.is_closed_by_peer()
    assert_serves_produce(broker, "t")


def test_a_connection_busy_for_longer_than_the_idle_timeout_stays_open(
    tidelog_broker_factory: Callable[..., BrokerThread],
) -> None:
    # The idle deadline moves with every request served, also those served in the protocol's
    # callback while the read loop waits: whole requests spread over four idle timeouts.
    broker = tidelog_broker_factory(idle_timeout_s=0.5)
    batch = batch_of(1024)
    request = m.ProduceRequest((m.ProducePartition("t", 0, len(batch)),))
    with RawClient(broker.address) as c:
        c.handshake()
        started = time.monotonic()
        while time.monotonic() - started < 2.0:
            response = c.call(request, [batch])
            assert isinstance(response, m.ProduceResponse)
            assert response.partitions[0].error_code == 0
            time.sleep(0.1)  # pacing the client, a tenth of the idle timeout
        assert not broker.call(lambda b: b.connections[0].stats.inflight)
        # And once it goes quiet, the idle timeout closes it.
        assert c.is_closed_by_peer()


# --- point 3: the work of a client that has gone --------------------------------------------------

LIMIT = 1024 * 1024  # max_connection_buffer
FETCH_BYTES = 256 * 1024  # max_fetch_bytes: a fetch reserves this, so few are served at once
PIPELINED = 400


def test_the_queued_fetches_of_a_client_that_resets_are_never_served(
    tidelog_broker_factory: Callable[..., BrokerThread],
) -> None:
    broker = tidelog_broker_factory(max_connection_buffer=LIMIT, max_fetch_bytes=FETCH_BYTES)
    fill(broker.address, "t", LIMIT, batch_of(64 * 1024))
    slow = RawClient(broker.address, rcvbuf=16 * 1024)
    slow.handshake()
    stats = broker.call(lambda b: b.connections[-1].stats)
    fetch = m.FetchRequest((m.FetchPartition("t", 0, 0, FETCH_BYTES),), max_wait_ms=0)
    slow.send_raw(b"".join(b"".join(encode_request(fetch, i)) for i in range(2, PIPELINED + 2)))
    # The client reads nothing: the broker fills the socket and stops taking its fetches.
    wait_for(lambda: broker.call(lambda b: stats.buffered >= LIMIT), "the broker to stall")
    slow.reset()
    wait_for(lambda: not broker.call(lambda b: b.connections), "the connection to end")
    # Its queued fetches were dropped, not served to a dead socket one by one, and nothing
    # it held is left.
    assert stats.requests < PIPELINED // 2, f"{stats.requests} requests served after the reset"
    assert (stats.inflight, stats.buffered) == (0, 0)
    assert broker.call(lambda b: b.budget.used) == 0
    assert_serves_produce(broker)


def test_a_long_polling_fetch_is_cancelled_when_its_client_closes(
    tidelog_broker_factory: Callable[..., BrokerThread],
) -> None:
    broker = tidelog_broker_factory(max_fetch_wait_ms=600_000)
    with RawClient(broker.address) as c:
        c.handshake()
        batch = batch_of(1024)
        c.call(m.ProduceRequest((m.ProducePartition("t", 0, len(batch)),)), [batch])
        stats = broker.call(lambda b: b.connections[0].stats)
        # Parked at the log end for ten minutes, unless its client goes away.
        c.send(m.FetchRequest((m.FetchPartition("t", 0, 16),), max_wait_ms=600_000))
        wait_for(lambda: broker.call(lambda b: stats.inflight) == 1, "the fetch to park")
    # A plain close (FIN): the connection ends at once, its fetch cancelled, not answered.
    wait_for(lambda: not broker.call(lambda b: b.connections), "the connection to end")
    assert (stats.inflight, stats.buffered) == (0, 0)
    assert broker.call(lambda b: b.budget.used) == 0
    assert_serves_produce(broker)
