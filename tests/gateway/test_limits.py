"""Every limit of the gateway, each a named setting, refused with its error past the bound."""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from .conftest import TIMEOUT_S, assert_error, eventually
from .test_ws import answer, frame, send, socket

Factory = Callable[..., Any]


@pytest.fixture
def small(tidelog_broker: Any, tidelog_gateway_factory: Factory) -> Iterator[httpx.Client]:
    gateway = tidelog_gateway_factory(
        tidelog_broker.address,
        max_body_bytes=2000,
        max_produce_records=3,
        max_fetch_records=5,
        max_fetch_bytes=4096,
        max_fetch_wait_ms=100,
        max_consumer_instances=2,
        max_ws_connections=1,
        max_ws_subscriptions=1,
        max_ws_message_bytes=1000,
        ws_frame_records=3,
    )
    with httpx.Client(base_url=gateway.url, timeout=TIMEOUT_S) as client:
        client.post("/v1/topics", json={"name": "events"})
        yield client


def test_a_body_above_max_body_bytes_is_413(small: httpx.Client) -> None:
    big = {"records": [{"value": "x" * 3000}]}
    assert_error(small.post("/v1/topics/events/records", json=big), 413, "body_too_large")
    ok = small.post("/v1/topics/events/records", json={"records": [{"value": "x" * 1500}]})
    assert ok.status_code == 200


def test_a_chunked_body_is_cut_off_at_the_limit(small: httpx.Client) -> None:
    """No Content-Length: the gateway counts the chunks and answers 413 once past the
    limit, without reading the rest (the client is still sending when the answer comes)."""
    url = urlsplit(str(small.base_url))
    conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=TIMEOUT_S)
    conn.putrequest("POST", "/v1/topics/events/records")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    chunk = b"x" * 1024
    for _ in range(3):
        conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    response = conn.getresponse()
    assert response.status == 413
    assert json.loads(response.read())["error_code"] == "body_too_large"
    conn.close()


def test_max_produce_records(small: httpx.Client) -> None:
    records = {"records": [{"value": i} for i in range(4)]}
    body = assert_error(
        small.post("/v1/topics/events/records", json=records), 413, "too_many_records"
    )
    assert "max_produce_records" in body["message"]
    records["records"].pop()
    assert small.post("/v1/topics/events/records", json=records).json()["failed"] == 0


def test_fetch_limits(small: httpx.Client) -> None:
    url = "/v1/topics/events/partitions/0/records"
    for name, value in (("max_records", 6), ("max_bytes", 4097), ("wait_ms", 101)):
        body = assert_error(small.get(url, params={name: value}), 422, "invalid_request")
        assert name in body["message"]
        assert small.get(url, params={name: value - 1}).status_code == 200


def test_max_consumer_instances(small: httpx.Client) -> None:
    a = small.post("/v1/consumers/g", json={}).json()["base_uri"]
    small.post("/v1/consumers/g", json={})
    assert_error(small.post("/v1/consumers/g", json={}), 429, "too_many_instances")
    small.delete(a)
    assert small.post("/v1/consumers/g", json={}).status_code == 201


def test_websocket_limits(small: httpx.Client) -> None:
    base = str(small.base_url)
    with socket(base) as ws:
        with socket(base) as second:  # max_ws_connections=1
            refused = frame(second)
            assert refused["error_code"] == "too_many_connections"
            with pytest.raises(ConnectionClosed) as closed:
                second.recv(timeout=TIMEOUT_S)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
        send(ws, op="subscribe", id="a", topics=["events"])
        assert answer(ws, "a")["type"] == "subscribed"
        send(ws, op="subscribe", id="b", topics=["events"])  # max_ws_subscriptions=1
        assert answer(ws, "b")["error_code"] == "too_many_subscriptions"
        send(ws, op="produce", id="p", topic="events", records=[{"value": "x" * 800}])
        assert answer(ws, "p")["type"] == "produced"
        send(ws, op="produce", id="q", topic="events", records=[{"value": "x" * 1100}])
        with pytest.raises(ConnectionClosed) as too_big:  # max_ws_message_bytes=1000
            _drain(ws)
        assert too_big.value.rcvd is not None and too_big.value.rcvd.code == 1009
    eventually(lambda: small.get("/v1/gateway").json()["ws_connections"] == 0, "the sockets closed")


def _drain(ws: Any) -> None:
    """Read frames until the socket closes (raises ``ConnectionClosed`` then)."""
    while True:
        ws.recv(timeout=TIMEOUT_S)


def test_ws_frame_records(small: httpx.Client) -> None:
    for start in range(0, 10, 3):  # max_produce_records=3
        records = [{"value": i} for i in range(start, min(10, start + 3))]
        assert small.post("/v1/topics/events/records", json={"records": records}).status_code == 200
    with socket(str(small.base_url)) as ws:
        send(ws, op="subscribe", id="s", topics=["events"], start="earliest")
        assert answer(ws, "s")["type"] == "subscribed"
        sizes, values = [], []
        while len(values) < 10:
            body = frame(ws)
            sizes.append(len(body["records"]))
            values += [r["value"] for r in body["records"]]
    assert values == list(range(10))
    assert max(sizes) <= 3 < sum(sizes), sizes  # ws_frame_records=3 per frame
