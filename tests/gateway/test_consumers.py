"""Consumer instances, the direct group commit and group list/describe with lag, through a
real gateway and broker."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from .conftest import TIMEOUT_S, assert_error


def _produce(http: httpx.Client, values: list[Any], topic: str = "events") -> None:
    r = http.post(f"/v1/topics/{topic}/records", json={"records": [{"value": v} for v in values]})
    assert r.json()["failed"] == 0, r.text


def _poll_all(http: httpx.Client, base: str, count: int) -> list[dict[str, Any]]:
    """Poll until ``count`` records came (each poll long-polls; the deadline is the client's
    timeout per request and a bound on the number of polls)."""
    got: list[dict[str, Any]] = []
    for _ in range(100):
        if len(got) >= count:
            break
        r = http.get(base + "/records", params={"timeout_ms": 2000})
        assert r.status_code == 200, r.text
        got += r.json()["records"]
    return got


def test_instance_lifecycle_and_commits(http: httpx.Client, make_topic: Callable[..., str]) -> None:
    make_topic(partitions=2)
    _produce(http, list(range(6)))
    created = http.post(
        "/v1/consumers/billing", json={"name": "c1", "auto_offset_reset": "earliest"}
    )
    assert created.status_code == 201, created.text
    base = created.json()["base_uri"]
    assert base.endswith("/v1/consumers/billing/instances/c1")
    assert created.json()["instance_id"] == "c1"
    assert_error(http.post("/v1/consumers/billing", json={"name": "c1"}), 409, "instance_exists")
    assert http.post(base + "/subscription", json={"topics": ["events"]}).status_code == 204
    got = _poll_all(http, base, 6)
    assert sorted(r["value"] for r in got) == list(range(6))
    sub = http.get(base + "/subscription").json()
    assert sub["topics"] == ["events"] and len(sub["partitions"]) == 2

    committed = http.post(base + "/offsets", json={}).json()["offsets"]
    assert sum(o["offset"] for o in committed) == 6
    assert sorted(
        map(tuple, (o.values() for o in http.get(base + "/offsets").json()["offsets"]))
    ) == sorted(map(tuple, (o.values() for o in committed)))
    group = http.get("/v1/groups/billing").json()
    assert group["lag"] == 0 and len(group["members"]) == 1
    assert {g["group_id"] for g in http.get("/v1/groups").json()["groups"]} == {"billing"}

    _produce(http, [6, 7])
    explicit = http.post(
        base + "/offsets", json={"offsets": [{"topic": "events", "partition": 0, "offset": 0}]}
    )
    assert explicit.status_code == 200, explicit.text
    detail = http.get("/v1/groups/billing").json()
    assert detail["lag"] >= 2 and any(o["committed"] == 0 for o in detail["offsets"])

    assert http.delete(base).status_code == 204
    assert_error(http.get(base + "/records"), 404, "consumer_instance_not_found")


def test_unknown_instance_and_unknown_topic(
    http: httpx.Client, make_topic: Callable[..., str]
) -> None:
    base = "/v1/consumers/g/instances/ghost"
    for response in (
        http.get(base + "/records"),
        http.post(base + "/subscription", json={"topics": ["events"]}),
        http.post(base + "/offsets", json={}),
        http.delete(base),
    ):
        assert_error(response, 404, "consumer_instance_not_found")
    created = http.post("/v1/consumers/g", json={}).json()
    assert_error(
        http.post(created["base_uri"] + "/subscription", json={"topics": ["nope"]}),
        404,
        "unknown_topic_or_partition",
    )
    assert_error(http.post("/v1/consumers/g", json={"format": "xml"}), 422, "invalid_request")


def test_an_idle_instance_expires(
    tidelog_broker: Any, tidelog_gateway_factory: Callable[..., Any]
) -> None:
    now = [1000.0]
    gateway = tidelog_gateway_factory(
        tidelog_broker.address, consumer_idle_timeout_s=60.0, clock=lambda: now[0]
    )
    with httpx.Client(base_url=gateway.url, timeout=TIMEOUT_S) as http:
        kept = http.post("/v1/consumers/g", json={"name": "kept"}).json()["base_uri"]
        idle = http.post("/v1/consumers/g", json={"name": "idle"}).json()["base_uri"]
        now[0] += 50
        assert http.get(kept + "/subscription").status_code == 200  # used: its clock resets
        now[0] += 50  # idle: 100 s unused; kept: 50 s
        assert http.get(kept + "/subscription").status_code == 200
        body = assert_error(http.get(idle + "/records"), 404, "consumer_instance_expired")
        assert "60s" in body["message"]
        assert http.get("/v1/gateway").json()["consumer_instances"] == 1


def test_direct_group_commit(http: httpx.Client, make_topic: Callable[..., str]) -> None:
    make_topic(partitions=2)
    records = [{"value": i, "partition": 1} for i in range(4)]
    assert http.post("/v1/topics/events/records", json={"records": records}).json()["failed"] == 0
    r = http.post(
        "/v1/groups/audit/offsets",
        json={"offsets": [{"topic": "events", "partition": 1, "offset": 1, "metadata": "x"}]},
    )
    assert r.status_code == 200, r.text
    (p1,) = http.get("/v1/groups/audit").json()["offsets"]
    assert (p1["partition"], p1["committed"], p1["member_id"]) == (1, 1, None)
    assert (p1["end_offset"], p1["lag"]) == (4, 3)
    assert_error(
        http.post(
            "/v1/groups/audit/offsets",
            json={"offsets": [{"topic": "events", "partition": 9, "offset": 0}]},
        ),
        404,
        "unknown_topic_or_partition",
    )
    assert_error(
        http.post("/v1/groups/audit/offsets", json={"offsets": []}), 422, "invalid_request"
    )
    assert_error(http.get("/v1/groups/never"), 404, "unknown_group")


def test_a_group_with_members_refuses_a_direct_commit(
    http: httpx.Client, make_topic: Callable[..., str]
) -> None:
    make_topic()
    base = http.post("/v1/consumers/busy", json={}).json()["base_uri"]
    http.post(base + "/subscription", json={"topics": ["events"]})
    http.get(base + "/records", params={"timeout_ms": 500})  # joins the group
    assert_error(
        http.post(
            "/v1/groups/busy/offsets",
            json={"offsets": [{"topic": "events", "partition": 0, "offset": 0}]},
        ),
        409,
        "group_not_empty",
    )
    assert_error(http.delete("/v1/groups/busy"), 409, "group_not_empty")


def test_undecodable_records_are_not_skipped(
    http: httpx.Client, make_topic: Callable[..., str]
) -> None:
    make_topic()
    http.post("/v1/topics/events/records", json={"format": "text", "records": [{"value": "{"}]})
    _produce(http, [1])
    base = http.post(
        "/v1/consumers/g", json={"auto_offset_reset": "earliest", "format": "json"}
    ).json()["base_uri"]
    http.post(base + "/subscription", json={"topics": ["events"]})
    for _ in range(2):  # the same record fails again: it was not consumed
        r = http.get(base + "/records", params={"timeout_ms": 5000})
        assert_error(r, 406, "undecodable_record")
