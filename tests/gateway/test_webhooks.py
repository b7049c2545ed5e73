"""Webhook subscriptions against real local receivers (tests/gateway/receiver.py): retries,
ordering per partition, dead letters, pause/resume/replay, patterns, the host allow-list.
Retry waits go through an injected sleep that records the delays and returns at once."""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections.abc import Callable
from typing import Any

import httpx

from tidelog.gateway.testing import GatewayThread
from tidelog.gateway.webhooks_model import JITTER

from .conftest import assert_error, eventually
from .receiver import Receiver
from .webhook_gateway import BACKOFF_S, FakeSleep

TIMEOUT_S = 30.0


def make_topic(http: httpx.Client, name: str, partitions: int = 1) -> None:
    r = http.post("/v1/topics", json={"name": name, "partitions": partitions, "configs": {}})
    assert r.status_code == 201, r.text


def produce(http: httpx.Client, topic: str, records: list[dict[str, Any]]) -> None:
    r = http.post(f"/v1/topics/{topic}/records", json={"records": records})
    assert r.status_code == 200, r.text


def subscribe(http: httpx.Client, name: str, url: str, **body: Any) -> dict[str, Any]:
    body.setdefault("start", "earliest")
    r = http.post("/v1/subscriptions", json={"name": name, "url": url, **body})
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def check_order(receiver: Receiver, expected: dict[tuple[str, int], list[int]]) -> None:
    """Every partition's records were acknowledged in offset order, each once, and no
    request for a record went out before its predecessor was acknowledged."""
    assert receiver.acked_offsets() == expected
    last_acked: dict[tuple[str, int], int] = {}
    for d in receiver.all():
        topic, partition, offset = d.where
        assert offset == last_acked.get((topic, partition), -1) + 1, d.where
        if 200 <= d.status < 300:
            last_acked[(topic, partition)] = offset
    assert receiver.overlaps == 0


def test_every_record_arrives_on_its_third_attempt_in_order(
    gw: httpx.Client, receiver_factory: Callable[..., Receiver], sleep: FakeSleep
) -> None:
    receiver = receiver_factory(
        lambda body, headers: 200 if headers["x-tidelog-delivery-attempt"] == "3" else 503
    )
    make_topic(gw, "orders", partitions=2)
    for p in (0, 1):
        produce(
            gw, "orders", [{"key": f"k{i}", "value": {"n": i}, "partition": p} for i in range(8)]
        )
    subscribe(gw, "orders-hook", receiver.url, topic="orders", secret="s" * 16)
    eventually(lambda: len(receiver.acked()) == 16, "16 acknowledged deliveries")
    check_order(receiver, {("orders", p): list(range(8)) for p in (0, 1)})
    for d in receiver.acked():
        assert d.attempt == 3
        assert d.body["value"] == {"n": d.body["offset"]}
        assert d.body["subscription"] == "orders-hook"
        assert d.headers["x-tidelog-subscription"] == "orders-hook"
        mac = hmac.new(b"s" * 16, d.raw, hashlib.sha256).hexdigest()
        assert d.headers["x-tidelog-signature"] == f"sha256={mac}"
    # two retries per record: after attempt 1 about BACKOFF_S, after attempt 2 about twice it
    assert len(sleep.delays) == 32
    firsts = sorted(sleep.delays)[:16]
    seconds = sorted(sleep.delays)[16:]
    assert all(BACKOFF_S * (1 - JITTER) <= x <= BACKOFF_S for x in firsts)
    assert all(2 * BACKOFF_S * (1 - JITTER) <= x <= 2 * BACKOFF_S for x in seconds)
    status = gw.get("/v1/subscriptions/orders-hook").json()
    assert status["delivery"]["deliveries"] == 16
    assert status["delivery"]["failures"] == 32
    eventually(
        lambda: (
            [p["position"] for p in gw.get("/v1/subscriptions/orders-hook").json()["partitions"]]
            == [8, 8]
        ),
        "positions committed",
    )


def test_a_host_not_allowed_is_refused_at_creation(gw: httpx.Client) -> None:
    make_topic(gw, "orders")
    r = gw.post(
        "/v1/subscriptions",
        json={"name": "out", "url": "http://example.com/hook", "topic": "orders"},
    )
    body = assert_error(r, 400, "host_not_allowed")
    assert "example.com" in body["message"]
    assert gw.get("/v1/subscriptions").json() == {"subscriptions": []}


def fetch_all(http: httpx.Client, topic: str) -> list[dict[str, Any]]:
    r = http.get(f"/v1/topics/{topic}/partitions/0/records", params={"offset": "earliest"})
    assert r.status_code == 200, r.text
    return r.json()["records"]  # type: ignore[no-any-return]


def test_records_that_keep_failing_go_to_the_dead_letters_and_later_ones_flow(
    start_gateway: Callable[..., GatewayThread],
    receiver_factory: Callable[..., Receiver],
    sleep: FakeSleep,
) -> None:
    def policy(body: dict[str, Any], headers: dict[str, str]) -> int:
        return {"poison": 500, "refused": 400}.get(body["key"], 200)

    receiver = receiver_factory(policy)
    with httpx.Client(base_url=start_gateway(webhook_max_attempts=4).url) as gw:
        make_topic(gw, "orders")
        keys = ["a", "poison", "b", "refused", "c", "poison", "d"]
        produce(gw, "orders", [{"key": k, "value": i} for i, k in enumerate(keys)])
        subscribe(gw, "hook", receiver.url, topic="orders")
        eventually(lambda: len(fetch_all(gw, "_tidelog_dlq.hook")) == 3, "3 dead letters")
        eventually(lambda: len(receiver.acked()) == 4, "the good records delivered")
        assert [d.body["key"] for d in receiver.acked()] == ["a", "b", "c", "d"]
        attempts = [d.attempt for d in receiver.all() if d.body["key"] == "poison"]
        assert attempts == [1, 2, 3, 4, 1, 2, 3, 4]  # the retry limit, for each
        assert [d.attempt for d in receiver.all() if d.body["key"] == "refused"] == [1]
        letters = fetch_all(gw, "_tidelog_dlq.hook")
        assert [(x["key"], x["value"]) for x in letters] == [
            ("poison", 1),
            ("refused", 3),
            ("poison", 5),
        ]
        why = [{h["name"]: h["value"] for h in x["headers"]} for x in letters]
        assert [w["tidelog.dead_letter.reason"] for w in why] == [
            "retries_exhausted",
            "rejected",
            "retries_exhausted",
        ]
        assert [w["tidelog.dead_letter.offset"] for w in why] == ["1", "3", "5"]
        assert why[1]["tidelog.dead_letter.status"] == "400"
        status = gw.get("/v1/subscriptions/hook").json()["delivery"]
        assert status["dead_letters"] == 3
        assert status["deliveries"] == 4


def test_a_receiver_down_for_a_while_gets_everything_in_order_when_it_returns(
    gw: httpx.Client, receiver_factory: Callable[..., Receiver]
) -> None:
    up = threading.Event()
    refused = threading.Semaphore(0)

    def policy(body: dict[str, Any], headers: dict[str, str]) -> int:
        if up.is_set():
            return 200
        refused.release()
        return 503

    receiver = receiver_factory(policy)
    make_topic(gw, "orders", partitions=2)
    produce(gw, "orders", [{"value": i, "partition": i % 2} for i in range(10)])
    subscribe(gw, "hook", receiver.url, topic="orders")
    for _ in range(6):  # down while the gateway retries (webhook_max_attempts=10)
        assert refused.acquire(timeout=TIMEOUT_S)
    up.set()
    eventually(lambda: len(receiver.acked()) == 10, "10 acknowledged deliveries")
    check_order(receiver, {("orders", p): list(range(5)) for p in (0, 1)})
    assert fetch_all(gw, "_tidelog_dlq.hook") == []


def test_pause_resume_and_replay(
    gw: httpx.Client, receiver_factory: Callable[..., Receiver]
) -> None:
    receiver = receiver_factory()
    make_topic(gw, "orders")
    produce(gw, "orders", [{"value": i} for i in range(5)])
    subscribe(gw, "hook", receiver.url, topic="orders")
    eventually(lambda: len(receiver.acked()) == 5, "the first 5 records")
    r = gw.post("/v1/subscriptions/hook/pause")
    assert r.status_code == 200 and r.json()["state"] == "paused"
    eventually(
        lambda: not gw.get("/v1/subscriptions/hook").json()["delivery"]["serving"],
        "the gateway stopped serving it",
    )
    produce(gw, "orders", [{"value": i} for i in range(5, 8)])
    assert gw.get("/v1/subscriptions/hook").json()["partitions"][0]["lag"] == 3
    assert len(receiver.acked()) == 5  # paused: nothing is running that could deliver
    r = gw.post("/v1/subscriptions/hook/resume")
    assert r.status_code == 200 and r.json()["state"] == "active"
    eventually(lambda: len(receiver.acked()) == 8, "the 3 produced while paused")
    r = gw.post("/v1/subscriptions/hook/replay", json={"offset": 2})
    assert r.status_code == 200 and r.json()["generation"] == 1
    eventually(lambda: len(receiver.acked()) == 14, "offsets 2-7 again")
    assert receiver.acked_offsets() == {("orders", 0): [*range(8), *range(2, 8)]}
    eventually(
        lambda: gw.get("/v1/subscriptions/hook").json()["partitions"][0]["position"] == 8,
        "the position back at the end",
    )
    assert gw.delete("/v1/subscriptions/hook").status_code == 204
    assert_error(gw.get("/v1/subscriptions/hook"), 404, "unknown_subscription")


def test_a_pattern_subscription_picks_up_a_topic_created_later(
    gw: httpx.Client, receiver_factory: Callable[..., Receiver]
) -> None:
    receiver = receiver_factory()
    make_topic(gw, "orders-eu")
    make_topic(gw, "payments")
    subscribe(gw, "hook", receiver.url, topic_pattern="orders-.*", start="latest")
    produce(gw, "orders-eu", [{"value": "eu"}])
    produce(gw, "payments", [{"value": "not matched"}])
    eventually(lambda: len(receiver.acked()) == 1, "the first topic's record")
    make_topic(gw, "orders-us")
    produce(gw, "orders-us", [{"value": "us"}])
    eventually(lambda: len(receiver.acked()) == 2, "the new topic's record")
    assert [(d.body["topic"], d.body["value"]) for d in receiver.acked()] == [
        ("orders-eu", "eu"),
        ("orders-us", "us"),
    ]


def test_filter_by_key_prefix_and_header(
    gw: httpx.Client, receiver_factory: Callable[..., Receiver]
) -> None:
    receiver = receiver_factory()
    make_topic(gw, "orders")
    rows = [
        {"key": "eu-1", "value": 1, "headers": [{"name": "kind", "value": "paid"}]},
        {"key": "us-1", "value": 2, "headers": [{"name": "kind", "value": "paid"}]},
        {"key": "eu-2", "value": 3, "headers": [{"name": "kind", "value": "open"}]},
        {"key": "eu-3", "value": 4, "headers": [{"name": "kind", "value": "paid"}]},
    ]
    produce(gw, "orders", rows)
    f = {"key_prefix": '"eu-', "headers": {"kind": "paid"}}  # keys are JSON: "eu-1"
    subscribe(gw, "hook", receiver.url, topic="orders", filter=f)
    eventually(
        lambda: gw.get("/v1/subscriptions/hook").json()["delivery"]["filtered"] == 2,
        "two records filtered out",
    )
    eventually(lambda: len(receiver.acked()) == 2, "two records delivered")
    assert [d.body["value"] for d in receiver.acked()] == [1, 4]


def test_a_429_or_503_with_retry_after_is_retried_after_that_delay(
    gw: httpx.Client, receiver_factory: Callable[..., Receiver], sleep: FakeSleep
) -> None:
    answers = {"1": (429, {"Retry-After": "7"}), "2": (503, {"Retry-After": "11"})}
    receiver = receiver_factory(
        lambda body, headers: answers.get(headers["x-tidelog-delivery-attempt"], 200)
    )
    make_topic(gw, "orders")
    produce(gw, "orders", [{"value": 0}])
    subscribe(gw, "hook", receiver.url, topic="orders")
    eventually(lambda: len(receiver.acked()) == 1, "the record acknowledged")
    assert [d.status for d in receiver.all()] == [429, 503, 200]
    assert sleep.delays == [7.0, 11.0]  # what the receiver asked, not the backoff (~0.5, ~1)


def test_a_410_gone_ends_the_subscription(
    gw: httpx.Client, receiver_factory: Callable[..., Receiver]
) -> None:
    receiver = receiver_factory(lambda body, headers: 410 if body["offset"] == 2 else 200)
    make_topic(gw, "orders")
    produce(gw, "orders", [{"value": i} for i in range(5)])
    subscribe(gw, "hook", receiver.url, topic="orders")

    def status() -> dict[str, Any]:
        return gw.get("/v1/subscriptions/hook").json()  # type: ignore[no-any-return]

    eventually(lambda: status()["subscription"]["state"] == "ended", "the subscription ended")
    assert "410" in status()["subscription"]["ended_reason"]
    eventually(lambda: not status()["delivery"]["serving"], "the gateway stopped serving it")
    # the refused record is not acknowledged: the position stays on it
    eventually(lambda: status()["partitions"][0]["position"] == 2, "position 2 committed")
    assert [d.where[2] for d in receiver.all()] == [0, 1, 2]  # nothing after the 410
    assert fetch_all(gw, "_tidelog_dlq.hook") == []
    assert_error(gw.post("/v1/subscriptions/hook/resume"), 409, "subscription_ended")


def test_start_and_replay_by_time(
    gw: httpx.Client, receiver_factory: Callable[..., Receiver]
) -> None:
    receiver = receiver_factory()
    make_topic(gw, "orders")
    produce(gw, "orders", [{"value": i, "timestamp": 1000 * (i + 1)} for i in range(5)])
    subscribe(gw, "hook", receiver.url, topic="orders", start="time", time=2500)
    eventually(lambda: len(receiver.acked()) == 3, "the records at or after 2500 ms")
    r = gw.post("/v1/subscriptions/hook/replay", json={"time": 2000})
    assert r.status_code == 200, r.text
    eventually(lambda: len(receiver.acked()) == 7, "the records at or after 2000 ms again")
    assert receiver.acked_offsets() == {("orders", 0): [2, 3, 4, 1, 2, 3, 4]}
