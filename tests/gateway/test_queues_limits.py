"""The gateway's queue members: bounded in number and in messages held, closed when idle and
on shutdown (what they hold goes back to the queue)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from .conftest import TIMEOUT_S, assert_error
from .test_queues import Q, lease, produce

Factory = Callable[..., Any]


def test_queue_member_and_lease_limits(
    tidelog_broker: Any, tidelog_gateway_factory: Factory
) -> None:
    gateway = tidelog_gateway_factory(
        tidelog_broker.address, max_queue_members=1, max_queue_leases=2
    )
    with httpx.Client(base_url=gateway.url, timeout=TIMEOUT_S) as http:
        http.post("/v1/topics", json={"name": "emails"})
        produce(http, list(range(4)))
        missing = http.post(Q + "/lease", json={"topics": ["nope"]})
        assert_error(missing, 404, "unknown_topic_or_partition")  # no member stays for it
        first = lease(http, 3)["messages"]
        assert len(first) == 2  # max_queue_leases
        body = assert_error(
            http.post(Q + "/lease", json={"topics": ["emails"]}), 429, "too_many_leases"
        )
        assert "max_queue_leases" in body["message"]
        assert (
            http.post(Q + "/ack", json={"receipts": [first[0]["receipt"]]}).json()["failed"] == []
        )
        assert len(lease(http, 3)["messages"]) == 1
        other = http.post("/v1/queues/other/lease", json={"topics": ["emails"]})
        body = assert_error(other, 429, "too_many_queue_members")
        assert "max_queue_members" in body["message"]
        assert http.get("/v1/gateway").json()["queue_members"] == 1


def test_an_idle_queue_member_is_closed(
    tidelog_broker: Any, tidelog_gateway_factory: Factory
) -> None:
    now = [1000.0]
    gateway = tidelog_gateway_factory(
        tidelog_broker.address, queue_idle_timeout_s=60.0, clock=lambda: now[0]
    )
    with httpx.Client(base_url=gateway.url, timeout=TIMEOUT_S) as http:
        http.post("/v1/topics", json={"name": "emails"})
        produce(http, ["job"])
        (held,) = lease(http)["messages"]
        now[0] += 50  # its lease (30 s) is over, the member is not idle yet
        assert lease(http, wait_ms=0)["messages"] == []  # used: its idle clock resets
        now[0] += 61
        # Another queue's first lease closes the idle member; its close releases the message.
        http.post("/v1/topics", json={"name": "other"})
        assert http.post("/v1/queues/x/lease", json={"topics": ["other"]}).status_code == 200
        body = assert_error(
            http.post(Q + "/renew", json={"receipt": held["receipt"]}), 404, "unknown_receipt"
        )
        assert "closed after 60s unused" in body["message"]
        (again,) = lease(http)["messages"]
        assert (again["offset"], again["delivery_count"]) == (held["offset"], 2)


def test_a_queue_member_holding_a_lease_is_not_idle(
    tidelog_broker: Any, tidelog_gateway_factory: Factory
) -> None:
    now = [1000.0]
    gateway = tidelog_gateway_factory(
        tidelog_broker.address, queue_idle_timeout_s=10.0, clock=lambda: now[0]
    )
    with httpx.Client(base_url=gateway.url, timeout=TIMEOUT_S) as http:
        http.post("/v1/topics", json={"name": "emails"})
        http.post("/v1/topics", json={"name": "other"})
        produce(http, ["job"])
        (held,) = lease(http)["messages"]
        now[0] += 20  # unused for 20 s, but its lease (30 s) is still on
        assert http.post("/v1/queues/x/lease", json={"topics": ["other"]}).status_code == 200
        ok = http.post(Q + "/ack", json={"receipts": [held["receipt"]]}).json()
        assert ok["failed"] == []


def test_shutdown_releases_what_the_members_hold(
    tidelog_broker: Any, tidelog_gateway_factory: Factory
) -> None:
    closing = tidelog_gateway_factory(tidelog_broker.address)
    staying = tidelog_gateway_factory(tidelog_broker.address)
    with (
        httpx.Client(base_url=closing.url, timeout=TIMEOUT_S) as a,
        httpx.Client(base_url=staying.url, timeout=TIMEOUT_S) as b,
    ):
        a.post("/v1/topics", json={"name": "emails"})
        produce(a, ["job"])
        (held,) = lease(a)["messages"]
        (member,) = b.get(Q).json()["members"]
        closing.stop()
        status = b.get(Q).json()
        assert member not in status["members"]
        assert status["partitions"][0]["in_flight"] == 0
        (again,) = lease(b)["messages"]
        assert (again["offset"], again["delivery_count"]) == (held["offset"], 2)
