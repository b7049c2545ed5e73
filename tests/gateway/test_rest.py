"""Health, cluster, topics, produce and fetch through a real HTTP client, a real gateway and a
real broker, error paths included."""

from __future__ import annotations

import base64
import concurrent.futures
from collections.abc import Callable

import httpx

from .conftest import assert_error


def test_health_ready_and_openapi(http: httpx.Client) -> None:
    assert http.get("/health").json() == {"status": "ok"}
    assert http.get("/ready").json() == {"status": "ready", "brokers": 1}
    spec = http.get("/openapi.json").json()
    for path in (
        "/v1/cluster",
        "/v1/topics",
        "/v1/topics/{topic}",
        "/v1/topics/{topic}/configs",
        "/v1/topics/{topic}/records",
        "/v1/topics/{topic}/partitions/{partition}/records",
        "/v1/consumers/{group}",
        "/v1/consumers/{group}/instances/{name}/records",
        "/v1/groups/{group}/offsets",
    ):
        assert path in spec["paths"], path
    assert http.get("/docs").status_code == 200


def test_ready_is_503_when_the_broker_is_gone(
    tidelog_gateway_factory: Callable[..., object],
) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    gateway = tidelog_gateway_factory(dead, request_timeout_s=2.0)
    with httpx.Client(base_url=gateway.url, timeout=30) as client:  # type: ignore[attr-defined]
        assert client.get("/health").status_code == 200
        assert_error(client.get("/ready"), 503, "broker_unavailable")
        assert_error(client.get("/v1/topics"), 503, "broker_unavailable")


def test_cluster_metadata(http: httpx.Client, make_topic: Callable[..., str]) -> None:
    make_topic("orders", partitions=2)
    cluster = http.get("/v1/cluster").json()
    (broker,) = cluster["brokers"]
    assert broker["host"] == "127.0.0.1"
    assert cluster["controller_id"] == broker["node_id"]
    (topic,) = [t for t in cluster["topics"] if t["name"] == "orders"]
    assert [p["partition"] for p in topic["partitions"]] == [0, 1]
    assert all(p["leader"] == broker["node_id"] for p in topic["partitions"])
    assert all(p["replicas"] == [broker["node_id"]] for p in topic["partitions"])


def test_topic_lifecycle(http: httpx.Client) -> None:
    created = http.post(
        "/v1/topics",
        json={"name": "orders", "partitions": 3, "configs": {"retention_ms": "3600000"}},
    )
    assert created.status_code == 201, created.text
    assert [p["partition"] for p in created.json()["partitions"]] == [0, 1, 2]
    assert http.get("/v1/topics").json() == {"topics": ["orders"]}
    assert_error(http.post("/v1/topics", json={"name": "orders"}), 409, "topic_exists")

    http.post("/v1/topics/orders/records", json={"records": [{"value": 1, "partition": 2}]})
    detail = http.get("/v1/topics/orders").json()
    p2 = detail["partitions"][2]
    assert (p2["earliest_offset"], p2["latest_offset"]) == (0, 1)
    assert p2["size_bytes"] > 0 and detail["partitions"][0]["size_bytes"] == 0
    configs = {c["name"]: c for c in detail["configs"]}
    assert configs["retention_ms"]["value"] == "3600000"
    assert configs["retention_ms"]["source"] == "topic"

    altered = http.patch(
        "/v1/topics/orders/configs",
        json={"set": {"segment_ms": "60000"}, "delete": ["retention_ms"]},
    )
    assert altered.status_code == 200, altered.text
    now = {c["name"]: c for c in altered.json()["configs"]}
    assert now["segment_ms"]["value"] == "60000" and now["retention_ms"]["source"] == "default"
    assert http.get("/v1/topics/orders/configs").json() == altered.json()
    assert_error(
        http.patch("/v1/topics/orders/configs", json={"set": {"no_such_key": "1"}}),
        400,
        "invalid_config",
    )

    assert http.delete("/v1/topics/orders").status_code == 204
    assert http.get("/v1/topics").json() == {"topics": []}
    assert_error(http.delete("/v1/topics/orders"), 404, "unknown_topic_or_partition")


def test_unknown_topic_everywhere(http: httpx.Client) -> None:
    for response in (
        http.get("/v1/topics/nope"),
        http.get("/v1/topics/nope/configs"),
        http.patch("/v1/topics/nope/configs", json={"set": {"segment_ms": "1"}}),
        http.post("/v1/topics/nope/records", json={"records": [{"value": 1}]}),
        http.get("/v1/topics/nope/partitions/0/records"),
    ):
        assert_error(response, 404, "unknown_topic_or_partition")


def test_bad_input_is_a_4xx_with_a_json_body(http: httpx.Client) -> None:
    assert_error(http.post("/v1/topics", json={"name": ""}), 422, "invalid_request")
    assert_error(http.post("/v1/topics", json={"name": "x", "bogus": 1}), 422, "invalid_request")
    assert_error(http.post("/v1/topics", json={"name": "bad name!"}), 400, "invalid_topic_name")
    bad_json = http.post(
        "/v1/topics", content=b'{"name": ', headers={"content-type": "application/json"}
    )
    assert_error(bad_json, 400, "invalid_json")
    assert_error(http.get("/v1/nowhere"), 404, "not_found")
    assert_error(http.put("/v1/topics"), 405, "method_not_allowed")


def test_produce_and_fetch_in_every_format(
    http: httpx.Client, make_topic: Callable[..., str]
) -> None:
    make_topic("events", partitions=2)
    as_json = http.post(
        "/v1/topics/events/records",
        json={
            "records": [
                {
                    "key": "user-1",
                    "value": {"n": 1},
                    "partition": 0,
                    "headers": [{"name": "trace", "value": "abc"}],
                },
                {"value": [1, 2], "partition": 0, "timestamp": 1_700_000_000_000},
            ]
        },
    ).json()
    assert [(r["partition"], r["offset"]) for r in as_json["results"]] == [(0, 0), (0, 1)]
    assert as_json["failed"] == 0
    raw = bytes(range(256))
    http.post(
        "/v1/topics/events/records",
        json={
            "format": "base64",
            "records": [{"value": base64.b64encode(raw).decode(), "partition": 0}],
        },
        params={"acks": "leader"},
    )
    http.post(
        "/v1/topics/events/records",
        json={"format": "text", "records": [{"value": "héllo", "partition": 0}]},
    )

    page = http.get("/v1/topics/events/partitions/0/records", params={"offset": 0}).json()
    first, second = page["records"][:2]
    assert (first["key"], first["value"], first["headers"]) == (
        "user-1",
        {"n": 1},
        [{"name": "trace", "value": "abc"}],
    )
    assert second["value"] == [1, 2] and second["timestamp"] == 1_700_000_000_000
    binary = http.get(
        "/v1/topics/events/partitions/0/records", params={"offset": 2, "format": "base64"}
    ).json()
    assert base64.b64decode(binary["records"][0]["value"]) == raw
    text = http.get(
        "/v1/topics/events/partitions/0/records", params={"offset": 3, "format": "text"}
    ).json()
    assert text["records"][0]["value"] == "héllo"
    assert (text["next_offset"], text["high_watermark"], text["log_start_offset"]) == (4, 4, 0)
    # Bytes that are not JSON: 406 with a hint, never a 500 and never skipped.
    undecodable = http.get("/v1/topics/events/partitions/0/records", params={"offset": 2})
    assert "base64" in assert_error(undecodable, 406, "undecodable_record")["message"]


def test_acks_none_answers_offset_minus_one(
    http: httpx.Client, make_topic: Callable[..., str]
) -> None:
    make_topic()
    r = http.post(
        "/v1/topics/events/records", json={"records": [{"value": 1}]}, params={"acks": "none"}
    )
    assert r.json()["results"][0]["offset"] == -1
    assert_error(
        http.post(
            "/v1/topics/events/records", json={"records": [{"value": 1}]}, params={"acks": "x"}
        ),
        422,
        "invalid_request",
    )


def test_a_failing_record_is_answered_alone(
    http: httpx.Client, make_topic: Callable[..., str]
) -> None:
    make_topic()
    r = http.post(
        "/v1/topics/events/records",
        json={"records": [{"value": 1}, {"value": 2, "partition": 7}, {"value": 3}]},
    ).json()
    assert r["failed"] == 1
    ok1, bad, ok3 = r["results"]
    assert (ok1["offset"], ok3["offset"]) == (0, 1)
    assert bad["error_code"] == "unknown_topic_or_partition" and bad["offset"] is None


def test_bad_base64_and_wrong_value_types_fail_the_whole_request(
    http: httpx.Client, make_topic: Callable[..., str]
) -> None:
    make_topic()
    for body in (
        {"format": "base64", "records": [{"value": "aGk="}, {"value": "not base64!"}]},
        {"format": "text", "records": [{"value": {"an": "object"}}]},
    ):
        body_error = assert_error(
            http.post("/v1/topics/events/records", json=body), 422, "invalid_record"
        )
        assert "records[" in body_error["message"]
    assert http.get("/v1/topics/events").json()["partitions"][0]["latest_offset"] == 0


def test_fetch_offsets_and_bounds(http: httpx.Client, make_topic: Callable[..., str]) -> None:
    make_topic()
    http.post("/v1/topics/events/records", json={"records": [{"value": i} for i in range(10)]})
    url = "/v1/topics/events/partitions/0/records"
    page = http.get(url, params={"offset": 3, "max_records": 4}).json()
    assert [r["value"] for r in page["records"]] == [3, 4, 5, 6]
    assert page["next_offset"] == 7
    assert http.get(url, params={"offset": "latest"}).json()["records"] == []
    assert http.get(url, params={"offset": "earliest"}).json()["records"][0]["offset"] == 0
    assert_error(http.get(url, params={"offset": 11}), 400, "offset_out_of_range")
    assert_error(http.get(url, params={"offset": -1}), 422, "invalid_request")
    assert_error(http.get(url, params={"offset": "soon"}), 422, "invalid_request")
    assert_error(
        http.get("/v1/topics/events/partitions/5/records"), 404, "unknown_topic_or_partition"
    )
    # A long-poll for the end returns when a record arrives (here: none comes; wait_ms=1).
    assert http.get(url, params={"offset": 10, "wait_ms": 1}).json()["records"] == []


def test_a_long_poll_fetch_returns_the_record_that_arrives(
    http: httpx.Client, make_topic: Callable[..., str]
) -> None:
    make_topic()
    url = "/v1/topics/events/partitions/0/records"
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(http.get, url, params={"offset": 0, "wait_ms": 20_000})
        # Without the wait the fetch answers [] at once (unless the produce overtook it).
        r = http.post("/v1/topics/events/records", json={"records": [{"value": "late"}]})
        assert r.json()["failed"] == 0
        page = waiting.result(timeout=30).json()
    assert [x["value"] for x in page["records"]] == ["late"]


def test_max_bytes_bounds_a_fetch(http: httpx.Client, make_topic: Callable[..., str]) -> None:
    make_topic()
    for i in range(5):  # one request each: a batch each
        body = {"records": [{"value": f"{i}" + "x" * 2000}]}
        assert http.post("/v1/topics/events/records", json=body).json()["failed"] == 0
    url = "/v1/topics/events/partitions/0/records"
    small = http.get(url, params={"offset": 0, "max_bytes": 3000}).json()
    assert 1 <= len(small["records"]) < 5  # at least one whole batch, never nothing
    everything = http.get(url, params={"offset": 0}).json()
    assert len(everything["records"]) == 5
    rest = http.get(url, params={"offset": small["next_offset"], "max_bytes": 1}).json()
    assert [r["offset"] for r in rest["records"]] == [small["next_offset"]]


def test_create_with_a_replication_factor(http: httpx.Client) -> None:
    one = http.post("/v1/topics", json={"name": "r1", "partitions": 2, "replication_factor": 1})
    assert one.status_code == 201, one.text
    two = http.post("/v1/topics", json={"name": "r2", "replication_factor": 2})  # one broker
    assert_error(two, 400, "invalid_replication_factor")
    assert "r2" not in http.get("/v1/topics").json()["topics"]
