"""The delivery contract's remaining cases against real local receivers: a receiver that does
not listen at all (connection refused) and one that answers too late (a timeout) are retried,
and the status names the error; the body in the ``text`` and ``base64`` formats with the
subscription's own headers; a record that does not decode goes to the dead letters; requests in
flight are bounded per subscription and per receiving host; ``start: offset`` and a replay of
one partition."""

from __future__ import annotations

import asyncio
import base64
import socket
import threading
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tidelog.gateway.testing import GatewayThread

from .conftest import eventually
from .receiver import Receiver
from .test_webhooks import TIMEOUT_S, check_order, fetch_all, make_topic, produce, subscribe
from .webhook_gateway import FakeSleep


async def short_sleep(delay: float) -> None:
    """A retry wait of at most 20 ms: the refused receiver is retried many times while the
    test waits for it, but never in a busy loop."""
    await asyncio.sleep(min(delay, 0.02))


def status(gw: httpx.Client, name: str = "hook") -> dict[str, Any]:
    r = gw.get(f"/v1/subscriptions/{name}")
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def test_a_receiver_that_does_not_listen_gets_everything_once_it_does(
    start_gateway: Callable[..., GatewayThread],
    receiver_factory: Callable[..., Receiver],
) -> None:
    # The port is bound but not listening: every connection is refused, and no other process
    # can take it until the receiver starts there.
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    gateway = start_gateway(
        sleep=short_sleep, webhook_max_attempts=1000, webhook_backoff_max_s=0.05
    )
    with closed, httpx.Client(base_url=gateway.url, timeout=TIMEOUT_S) as gw:
        make_topic(gw, "orders", partitions=2)
        produce(gw, "orders", [{"value": i, "partition": i % 2} for i in range(10)])
        subscribe(gw, "hook", f"http://127.0.0.1:{port}/hook", topic="orders")
        eventually(lambda: status(gw)["delivery"]["consecutive_failures"] >= 4, "refused attempts")
        down = status(gw)["delivery"]
        assert down["last_error"].startswith("connection error: ConnectError"), down
        assert down["last_success_ms"] is None and down["deliveries"] == 0
        closed.close()
        receiver = receiver_factory(port=port)
        eventually(lambda: len(receiver.acked()) == 10, "10 acknowledged deliveries")
        check_order(receiver, {("orders", p): list(range(5)) for p in (0, 1)})
        up = status(gw)["delivery"]
        assert up["deliveries"] == 10 and up["consecutive_failures"] == 0
        assert up["last_success_ms"] is not None and up["failures"] >= 4
        assert up["last_error"].startswith("connection error")  # the last one, kept
        assert fetch_all(gw, "_tidelog_dlq.hook") == []


def test_a_receiver_that_answers_too_late_is_retried(
    start_gateway: Callable[..., GatewayThread],
    receiver_factory: Callable[..., Receiver],
    sleep: FakeSleep,
) -> None:
    second = threading.Event()

    def policy(body: dict[str, Any], headers: dict[str, str]) -> int:
        if headers["x-tidelog-delivery-attempt"] == "1":
            second.wait(TIMEOUT_S)  # answers only after the gateway gave up and tried again
        else:
            second.set()
        return 200

    receiver = receiver_factory(policy)
    with httpx.Client(base_url=start_gateway(webhook_timeout_s=0.2).url, timeout=TIMEOUT_S) as gw:
        make_topic(gw, "orders")
        produce(gw, "orders", [{"value": "late"}])
        subscribe(gw, "hook", receiver.url, topic="orders")
        eventually(lambda: status(gw)["delivery"]["deliveries"] == 1, "delivered")
        delivery = status(gw)["delivery"]
        assert (delivery["failures"], delivery["last_error"]) == (1, "timeout")
        assert len(sleep.delays) == 1  # one backoff, between attempt 1 and attempt 2
        eventually(lambda: len(receiver.all()) == 2, "the late answer recorded too")
        assert sorted(d.attempt for d in receiver.all()) == [1, 2]
        assert fetch_all(gw, "_tidelog_dlq.hook") == []


def produce_text(http: httpx.Client, topic: str, records: list[dict[str, Any]]) -> None:
    r = http.post(f"/v1/topics/{topic}/records", json={"format": "text", "records": records})
    assert r.status_code == 200, r.text


def test_text_and_base64_bodies_carry_the_subscriptions_headers(
    gw: httpx.Client,
    receiver_factory: Callable[..., Receiver],
) -> None:
    receiver = receiver_factory()
    make_topic(gw, "orders")
    row = {"key": "k-1", "value": "caf\u00e9", "headers": [{"name": "kind", "value": "paid"}]}
    produce_text(gw, "orders", [row])
    for fmt in ("text", "base64"):
        subscribe(gw, fmt, receiver.url, topic="orders", format=fmt, headers={"X-Env": f"e-{fmt}"})
    eventually(lambda: len(receiver.acked()) == 2, "both subscriptions delivered")
    got = {d.body["subscription"]: d for d in receiver.acked()}
    text, b64 = got["text"], got["base64"]
    assert (text.body["key"], text.body["value"]) == ("k-1", "caf\u00e9")
    assert text.body["headers"] == [{"name": "kind", "value": "paid"}]
    assert text.headers["x-env"] == "e-text"

    def enc(s: str) -> str:
        return base64.b64encode(s.encode()).decode()

    assert (b64.body["key"], b64.body["value"]) == (enc("k-1"), enc("caf\u00e9"))
    assert b64.body["headers"] == [{"name": "kind", "value": enc("paid")}]
    assert b64.headers["x-env"] == "e-base64"


def test_a_record_that_does_not_decode_goes_to_the_dead_letters(
    gw: httpx.Client,
    receiver_factory: Callable[..., Receiver],
) -> None:
    receiver = receiver_factory()
    make_topic(gw, "orders")
    produce(gw, "orders", [{"value": 1}])
    produce_text(gw, "orders", [{"value": "not json"}])
    produce(gw, "orders", [{"value": 3}])
    subscribe(gw, "hook", receiver.url, topic="orders")  # format json
    eventually(lambda: len(receiver.acked()) == 2, "the two JSON records")
    assert [d.body["value"] for d in receiver.acked()] == [1, 3]
    r = gw.get(
        "/v1/topics/_tidelog_dlq.hook/partitions/0/records",
        params={"offset": "earliest", "format": "text"},
    )
    assert r.status_code == 200, r.text
    (letter,) = r.json()["records"]
    assert letter["value"] == "not json"
    why = {h["name"]: h["value"] for h in letter["headers"]}
    assert why["tidelog.dead_letter.reason"] == "undecodable"
    assert why["tidelog.dead_letter.offset"] == "1"
    assert why["tidelog.dead_letter.attempts"] == "0"  # never sent
    delivery = status(gw)["delivery"]
    assert (delivery["failures"], delivery["dead_letters"]) == (0, 1)
    assert delivery["last_error"].startswith("undecodable: the value of the record at offset 1")


@pytest.mark.parametrize(
    ("limit", "subscriptions"),
    [({"webhook_concurrency": 2}, 1), ({"webhook_host_concurrency": 3}, 2)],
    ids=["per-subscription", "per-host"],
)
def test_requests_in_flight_are_bounded(
    start_gateway: Callable[..., GatewayThread],
    receiver_factory: Callable[..., Receiver],
    limit: dict[str, int],
    subscriptions: int,
) -> None:
    """Four partitions, one record each, and a receiver that holds every request: the gateway
    has every record in hand (``held_records``), yet only the bound is in flight."""
    bound = next(iter(limit.values()))
    go = threading.Event()

    def policy(body: dict[str, Any], headers: dict[str, str]) -> int:
        go.wait(TIMEOUT_S)
        return 200

    receiver = receiver_factory(policy)
    try:
        with httpx.Client(base_url=start_gateway(**limit).url, timeout=TIMEOUT_S) as gw:
            make_topic(gw, "orders", partitions=4)
            produce(gw, "orders", [{"value": p, "partition": p} for p in range(4)])
            names = [f"hook{i}" for i in range(subscriptions)]
            for name in names:
                subscribe(gw, name, receiver.url, topic="orders")

            def held() -> int:
                return sum(status(gw, n)["delivery"]["held_records"] for n in names)

            eventually(
                lambda: held() == 4 * subscriptions and receiver.requests_in_flight() == bound,
                f"every record in hand and {bound} requests in flight",
            )
            assert receiver.requests_in_flight() == bound
            go.set()
            eventually(lambda: len(receiver.acked()) == 4 * subscriptions, "all delivered")
    finally:
        go.set()
    assert receiver.most_in_flight == bound


def test_start_at_an_offset_and_replay_one_partition(
    gw: httpx.Client, receiver_factory: Callable[..., Receiver]
) -> None:
    """``start: offset`` starts every partition there (clamped into its log); a replay with
    ``topic`` and ``partition`` moves that partition only."""
    receiver = receiver_factory()
    make_topic(gw, "orders", partitions=2)
    produce(gw, "orders", [{"value": i, "partition": 0} for i in range(5)])
    produce(gw, "orders", [{"value": i, "partition": 1} for i in range(2)])
    subscribe(gw, "hook", receiver.url, topic="orders", start="offset", offset=3)
    eventually(lambda: len(receiver.acked()) == 2, "offsets 3 and 4 of partition 0")

    def positions() -> list[int]:
        return [p["position"] for p in status(gw)["partitions"]]

    eventually(lambda: positions() == [5, 2], "partition 1 clamped to its end, 2")
    assert receiver.acked_offsets() == {("orders", 0): [3, 4]}
    r = gw.post(
        "/v1/subscriptions/hook/replay", json={"offset": 0, "topic": "orders", "partition": 1}
    )
    assert r.status_code == 200, r.text
    eventually(lambda: len(receiver.acked()) == 4, "partition 1 from 0")
    assert receiver.acked_offsets() == {("orders", 0): [3, 4], ("orders", 1): [0, 1]}
    eventually(lambda: positions() == [5, 2], "both at their end again")
