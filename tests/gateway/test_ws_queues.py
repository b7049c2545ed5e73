"""The WebSocket queue mode (``/v1/queues/{group}/ws``) through a real gateway and broker, with
a real WebSocket client: messages pushed with receipts under the prefetch bound, settled by
frames on the same socket, released when the socket closes; bad frames and limits."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from .conftest import TIMEOUT_S, eventually
from .test_queues import Q, lease, produce, settings
from .test_ws import answer, frame, send

Factory = Callable[..., Any]


@contextmanager
def queue_socket(
    base_url: str, group: str = "jobs", topics: tuple[str, ...] = ("emails",), **query: Any
) -> Iterator[ClientConnection]:
    url = base_url.replace("http", "ws", 1) + f"/v1/queues/{group}/ws"
    url += "?" + urlencode({"topics": topics, **query}, doseq=True)
    with connect(url, max_size=None) as ws:
        yield ws


def opened(ws: ClientConnection) -> dict[str, Any]:
    body = frame(ws)
    assert body["type"] == "consuming", body
    return body


def take(ws: ClientConnection, count: int, held: int = 0, prefetch: int | None = None) -> Any:
    """The next ``count`` pushed messages (answers to settlements are skipped); with
    ``prefetch``, checks that no frame ever took the socket above it (``held``: what it held
    unsettled before)."""
    got: list[dict[str, Any]] = []
    while len(got) < count:
        body = frame(ws)
        if body["type"] in ("acked", "nacked", "rejected", "renewed"):
            continue
        assert body["type"] == "messages", body
        got += body["messages"]
        if prefetch is not None:
            assert held + len(got) <= prefetch, (held, len(got), prefetch)
    return got


def closed(ws: ClientConnection) -> int | None:
    """Reads until the gateway closes the socket; its close code."""
    try:
        while True:
            ws.recv(timeout=TIMEOUT_S)
    except ConnectionClosed:
        return ws.close_code


def test_messages_are_pushed_with_receipts_and_acked_on_the_socket(
    tidelog_gateway: str, http: httpx.Client, make_topic: Callable[..., str]
) -> None:
    make_topic("emails", partitions=2)
    produce(http, [{"n": i} for i in range(5)])
    with queue_socket(tidelog_gateway, prefetch=10) as ws:
        hello = opened(ws)
        assert (hello["group"], hello["topics"], hello["prefetch"]) == ("jobs", ["emails"], 10)
        got = take(ws, 5)
        assert sorted(m["value"]["n"] for m in got) == list(range(5))
        assert {m["delivery_count"] for m in got} == {1}
        assert http.get(Q).json()["gateway_leases"] == 5
        receipts = [m["receipt"] for m in got]
        send(ws, op="ack", id="a", receipts=receipts)
        acked = answer(ws, "a")
        assert acked["type"] == "acked" and acked["failed"] == []
        assert sorted(acked["acked"]) == sorted(receipts)
        send(ws, op="ack", id="again", receipts=receipts[:1])
        (failed,) = answer(ws, "again")["failed"]
        assert failed["error_code"] == "unknown_receipt"
        status = http.get(Q).json()
        assert sum(p["acked"] for p in status["partitions"]) == 5
        assert hello["member"] in status["members"]
    assert lease(http, 5, wait_ms=0)["messages"] == []  # acked: never again


def test_prefetch_bounds_what_the_socket_holds(
    tidelog_gateway: str, http: httpx.Client, make_topic: Callable[..., str]
) -> None:
    make_topic("emails")
    produce(http, list(range(7)))
    with queue_socket(tidelog_gateway, prefetch=2) as ws:
        opened(ws)
        held: list[dict[str, Any]] = []
        seen: list[int] = []
        while len(seen) < 7:
            new = take(ws, 1, held=len(held), prefetch=2)
            held += new
            seen += [m["value"] for m in new]
            if len(held) == 2:  # full: settle one, which is the credit for one more
                first = held.pop(0)
                send(ws, op="ack", id=f"a{first['offset']}", receipts=[first["receipt"]])
        assert sorted(seen) == list(range(7))


def test_nack_reject_and_renew_over_the_socket(
    tidelog_gateway: str, http: httpx.Client, make_topic: Callable[..., str]
) -> None:
    make_topic("emails")
    settings(http, backoff_base_ms=0)
    produce(http, ["retry", "poison", "long"])
    with queue_socket(tidelog_gateway, prefetch=3) as ws:
        opened(ws)
        got = {m["value"]: m for m in take(ws, 3)}
        send(ws, op="renew", id="r", receipt=got["long"]["receipt"])
        assert answer(ws, "r") == {"type": "renewed", "id": "r", "lock_duration_ms": 30_000}
        send(ws, op="reject", id="x", receipt=got["poison"]["receipt"], reason="bad address")
        assert answer(ws, "x") == {"type": "rejected", "id": "x"}
        send(ws, op="nack", id="n", receipt=got["retry"]["receipt"], delay_ms=0, error="smtp")
        assert answer(ws, "n") == {"type": "nacked", "id": "n"}
        (again,) = take(ws, 1)  # the credit the nack gave back brings it again
        assert (again["value"], again["delivery_count"]) == ("retry", 2)
        send(ws, op="nack", id="old", receipt=got["retry"]["receipt"])  # delivered again since
        assert answer(ws, "old")["error_code"] == "receipt_expired"
        send(ws, op="renew", id="done", receipt=got["poison"]["receipt"])  # settled
        body = answer(ws, "done")
        assert (body["type"], body["error_code"]) == ("error", "unknown_receipt")
    (letter,) = http.get(Q + "/dlq").json()["dead_letters"]
    assert (letter["value"], letter["reason"], letter["error"]) == (
        "poison",
        "rejected",
        "bad address",
    )


def test_a_message_not_acked_before_the_socket_closes_goes_to_another_consumer(
    tidelog_gateway: str, http: httpx.Client, make_topic: Callable[..., str]
) -> None:
    make_topic("emails")
    produce(http, ["job"])
    with queue_socket(tidelog_gateway) as first:
        member = opened(first)["member"]
        (held,) = take(first, 1)
    with queue_socket(tidelog_gateway) as second:
        opened(second)
        (again,) = take(second, 1)  # at once: the close released it, no lock had to end
        assert (again["offset"], again["delivery_count"]) == (held["offset"], 2)
        assert member not in http.get(Q).json()["members"]
        r = http.post(Q + "/renew", json={"receipt": held["receipt"]})
        assert (r.status_code, r.json()["error_code"]) == (404, "unknown_receipt")
        r = http.post(Q + "/ack", json={"receipts": [again["receipt"]]})  # REST settles it too
        assert r.json()["acked"] == [again["receipt"]]
    members = lambda: http.get("/v1/gateway").json()["queue_members"]  # noqa: E731
    eventually(lambda: members() == 0, "the closed sockets' members closed")


def test_bad_frames_get_error_frames_and_the_socket_stays_open(
    tidelog_gateway: str, http: httpx.Client, make_topic: Callable[..., str]
) -> None:
    make_topic("emails")
    with queue_socket(tidelog_gateway) as ws:
        opened(ws)
        ws.send("{not json")
        assert frame(ws)["error_code"] == "invalid_message"
        ws.send(b"\xff\x00")
        assert frame(ws)["error_code"] == "invalid_message"
        send(ws, op="subscribe", id="s", topics=["emails"])  # a /v1/ws op
        assert answer(ws, "s")["error_code"] == "invalid_message"
        send(ws, op="nack", id="d", receipt="x", delay_ms=-1)
        assert answer(ws, "d")["error_code"] == "invalid_message"
        send(ws, op="ack", id="e", receipts=[])
        assert answer(ws, "e")["error_code"] == "invalid_message"
        send(ws, op="renew", id="f", receipt="not-a-receipt")
        assert answer(ws, "f")["error_code"] == "invalid_receipt"
        produce(http, ["still here"])
        (m,) = take(ws, 1)
        send(ws, op="ack", id="ok", receipts=[m["receipt"]])
        assert answer(ws, "ok")["acked"] == [m["receipt"]]


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ({"topics": ("nope",)}, "unknown_topic_or_partition"),
        ({"topics": ()}, "invalid_message"),
        ({"prefetch": 0}, "invalid_message"),
        ({"prefetch": "many"}, "invalid_message"),
        ({"colour": "red"}, "invalid_message"),
    ],
)
def test_a_bad_open_gets_an_error_frame_and_a_close(
    tidelog_gateway: str, make_topic: Callable[..., str], query: dict[str, Any], code: str
) -> None:
    make_topic("emails")
    with queue_socket(tidelog_gateway, **query) as ws:
        body = frame(ws)
        assert (body["type"], body["id"], body["error_code"]) == ("error", None, code), body
        assert closed(ws) == 1008


def test_queue_socket_limits(tidelog_broker: Any, tidelog_gateway_factory: Factory) -> None:
    gateway = tidelog_gateway_factory(
        tidelog_broker.address, ws_queue_max_prefetch=5, max_queue_members=1
    )
    with httpx.Client(base_url=gateway.url, timeout=TIMEOUT_S) as http:
        http.post("/v1/topics", json={"name": "emails"})
        with queue_socket(gateway.url, prefetch=6) as ws:
            body = frame(ws)
            assert body["error_code"] == "invalid_message"
            assert "ws_queue_max_prefetch" in body["message"]
            assert closed(ws) == 1008
        with queue_socket(gateway.url, prefetch=5) as ws:
            assert opened(ws)["prefetch"] == 5
            with queue_socket(gateway.url) as other:  # its member would be the second
                body = frame(other)
                assert body["error_code"] == "too_many_queue_members"
                assert closed(other) == 1013
            r = http.post(Q + "/lease", json={"topics": ["emails"]})  # REST too
            assert r.json()["error_code"] == "too_many_queue_members"
            ws.send(json.dumps({"op": "ack", "id": "big", "receipts": ["x" * 2_000_000]}))
            assert closed(ws) == 1009  # max_ws_message_bytes
        members = lambda: http.get("/v1/gateway").json()["queue_members"]  # noqa: E731
        eventually(lambda: members() == 0, "the closed socket's member closed")


def test_the_openapi_description_names_the_websocket_routes(http: httpx.Client) -> None:
    info = http.get("/openapi.json").json()["info"]["description"]
    for text in ("/v1/ws", "/v1/queues/{group}/ws", "ws_queue_max_prefetch", "renewed"):
        assert text in info, text


def test_a_gateway_that_stops_releases_what_its_sockets_hold(
    tidelog_broker: Any, tidelog_gateway_factory: Factory
) -> None:
    closing = tidelog_gateway_factory(tidelog_broker.address)
    staying = tidelog_gateway_factory(tidelog_broker.address)
    with httpx.Client(base_url=staying.url, timeout=TIMEOUT_S) as http:
        http.post("/v1/topics", json={"name": "emails"})
        produce(http, ["job"])
        with queue_socket(closing.url) as ws:
            opened(ws)
            (held,) = take(ws, 1)
            closing.stop()
            assert closed(ws) is not None
        (again,) = lease(http)["messages"]
        assert (again["offset"], again["delivery_count"]) == (held["offset"], 2)
