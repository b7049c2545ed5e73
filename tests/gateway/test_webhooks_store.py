"""Webhook subscriptions when topics are deleted under them (all found by schemathesis's
stateful phase). The definitions' store (tidelog/gateway/webhooks_store.py): a write returns
only once this gateway has read that very record back, so a subscription just created answers
at once, also on a definitions topic created anew. A subscription's status with committed
positions on partitions that no longer exist."""

from __future__ import annotations

import asyncio

import httpx

from tidelog.gateway.webhooks_model import DEFINITIONS_TOPIC
from tidelog.gateway.webhooks_runner import join

from .conftest import TIMEOUT_S, eventually

HOOK = "http://127.0.0.1:9/hook"


def create(http: httpx.Client, name: str) -> None:
    body = {"name": name, "url": HOOK, "topic": "events"}
    r = http.post("/v1/subscriptions", json=body)
    assert r.status_code == 201, r.text


def test_a_subscription_created_on_a_new_definitions_topic_is_there_at_once(
    tidelog_gateway: str,
) -> None:
    """Found by schemathesis: the definitions topic deleted (its log had reached offset 3)
    and created anew by the next create, whose record lands at offset 0, below what the
    store had read: the create returned before the store read it, and pause said 404."""
    with httpx.Client(base_url=tidelog_gateway, timeout=TIMEOUT_S) as http:
        assert http.post("/v1/topics", json={"name": "events"}).status_code == 201
        for name in ("a", "b", "c"):
            create(http, name)
        assert http.delete(f"/v1/topics/{DEFINITIONS_TOPIC}").status_code == 204
        create(http, "billing")
        r = http.post("/v1/subscriptions/billing/pause")
        assert r.status_code == 200, r.text
        assert r.json()["state"] == "paused"
        names = [s["name"] for s in http.get("/v1/subscriptions").json()["subscriptions"]]
        assert names == ["billing"]  # the store is the topic: the deleted ones went with it


def test_join_lets_the_callers_cancellation_through() -> None:
    """Cancelled while waiting for a runner to stop (the gateway stopping while a subscription
    is paused or changed), the reconcile loop must end, not swallow it and wait forever."""

    async def main() -> tuple[bool, bool]:
        inner = asyncio.get_running_loop().create_task(asyncio.Event().wait())
        outer = asyncio.get_running_loop().create_task(join(inner))
        await asyncio.sleep(0)  # outer is now waiting in join
        outer.cancel()
        await asyncio.wait((outer,))
        return outer.cancelled(), inner.cancelled()

    assert asyncio.run(main()) == (True, True)


def test_status_with_a_committed_partition_that_no_longer_exists(tidelog_gateway: str) -> None:
    """The topic deleted and created with fewer partitions: the group's commit on the
    partition gone is left out (asking its end offset waited out the request timeout)."""
    with httpx.Client(base_url=tidelog_gateway, timeout=TIMEOUT_S) as http:
        assert http.post("/v1/topics", json={"name": "events", "partitions": 2}).status_code == 201
        body = {"name": "billing", "url": HOOK, "topic": "events", "start": "earliest"}
        assert http.post("/v1/subscriptions", json=body).status_code == 201

        def committed() -> list[int]:
            r = http.get("/v1/subscriptions/billing")
            assert r.status_code == 200, r.text
            return [p["partition"] for p in r.json()["partitions"]]

        eventually(lambda: committed() == [0, 1], "both partitions committed")
        assert http.post("/v1/subscriptions/billing/pause").status_code == 200
        assert http.delete("/v1/topics/events").status_code == 204
        assert http.post("/v1/topics", json={"name": "events"}).status_code == 201
        assert committed() == [0]
