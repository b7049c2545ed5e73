"""Webhook subscriptions against real local receivers (tests/gateway/receiver.py): retries,
ordering per partition, dead letters, pause/resume/replay, patterns, the host allow-list.
Retry waits go through an injected sleep that records the delays and returns at once."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tidelog.gateway.testing import GatewayThread
from tidelog.gateway.webhooks_model import JITTER

from .conftest import assert_error, eventually
from .receiver import Receiver

TIMEOUT_S = 30.0
BACKOFF_S = 0.5


class FakeSleep:
    """The gateway's retry wait: records each delay and yields once instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(0)


@pytest.fixture
def sleep() -> FakeSleep:
    return FakeSleep()


@pytest.fixture
def start_gateway(
    tidelog_broker: Any, tidelog_gateway_factory: Callable[..., GatewayThread], sleep: FakeSleep
) -> Callable[..., GatewayThread]:
    def start(**settings: Any) -> GatewayThread:
        settings.setdefault("sleep", sleep)
        settings.setdefault("webhook_backoff_s", BACKOFF_S)
        settings.setdefault("webhook_commit_interval_s", 0.05)
        return tidelog_gateway_factory(tidelog_broker.address, **settings)

    return start


@pytest.fixture
def gw(start_gateway: Callable[..., GatewayThread]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=start_gateway().url, timeout=TIMEOUT_S) as client:
        yield client


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
