"""Queue endpoints through a real gateway and broker: lease and settle by receipt, redelivery,
the receipt's error paths, dead letters, status and settings, hostile bodies."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import httpx

from .conftest import TIMEOUT_S, assert_error

Q = "/v1/queues/jobs"
LONG_WAIT_MS = 20_000  # a long poll that returns as soon as a message is there


def produce(http: httpx.Client, values: list[Any], topic: str = "emails", **extra: Any) -> None:
    records = [{"value": v, **extra} for v in values]
    r = http.post(f"/v1/topics/{topic}/records", json={"records": records})
    assert r.json()["failed"] == 0, r.text


def lease(http: httpx.Client, n: int = 1, wait_ms: int = LONG_WAIT_MS, **extra: Any) -> Any:
    body = {"topics": ["emails"], "max_records": n, "wait_ms": wait_ms, **extra}
    r = http.post(Q + "/lease", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def lease_all(http: httpx.Client, n: int) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    for _ in range(50):
        if len(got) >= n:
            break
        got += lease(http, n - len(got))["messages"]
    return got


def settings(http: httpx.Client, **values: Any) -> None:
    r = http.patch(Q + "/settings", json={"set": values})
    assert r.status_code == 200, r.text


def test_lease_then_ack(http: httpx.Client, make_topic: Callable[..., str]) -> None:
    make_topic("emails", partitions=2)
    produce(http, [{"n": i} for i in range(5)])
    got = lease_all(http, 5)
    assert sorted(m["value"]["n"] for m in got) == list(range(5))
    assert {m["delivery_count"] for m in got} == {1}
    assert len({m["receipt"] for m in got}) == 5
    assert lease(http, 5, wait_ms=0)["messages"] == []  # all held
    status = http.get(Q).json()
    assert sum(p["in_flight"] for p in status["partitions"]) == 5
    assert status["gateway_leases"] == 5
    receipts = [m["receipt"] for m in got]
    answer = http.post(Q + "/ack", json={"receipts": receipts}).json()
    assert sorted(answer["acked"]) == sorted(receipts) and answer["failed"] == []
    status = http.get(Q).json()
    assert sum(p["acked"] for p in status["partitions"]) == 5
    assert sum(p["in_flight"] for p in status["partitions"]) == 0
    assert lease(http, 5, wait_ms=0)["messages"] == []  # acked: never again
    again = http.post(Q + "/ack", json={"receipts": receipts[:1]}).json()
    assert again["acked"] == [] and again["failed"][0]["error_code"] == "unknown_receipt"


def test_a_message_not_valid_in_the_format_comes_in_base64(
    http: httpx.Client, make_topic: Callable[..., str]
) -> None:
    make_topic("emails")
    raw = base64.b64encode(b"\xff\xfe").decode()
    http.post("/v1/topics/emails/records", json={"format": "base64", "records": [{"value": raw}]})
    (m,) = lease(http)["messages"]
    assert (m["format"], m["value"]) == ("base64", raw)


def test_nack_redelivers_after_its_delay(
    http: httpx.Client, make_topic: Callable[..., str]
) -> None:
    make_topic("emails")
    settings(http, backoff_base_ms=0)  # so a delay dropped on the way would show
    produce(http, ["later", "soon"])
    got = {m["value"]: m for m in lease_all(http, 2)}
    hour = {"receipt": got["later"]["receipt"], "delay_ms": 3_600_000}
    assert http.post(Q + "/nack", json=hour).status_code == 204
    r = http.post(Q + "/nack", json={"receipt": got["soon"]["receipt"], "delay_ms": 50})
    assert r.status_code == 204, r.text
    (again,) = lease(http, 2)["messages"]  # the one hour delay is not over
    assert (again["value"], again["delivery_count"]) == ("soon", 2)
    (part,) = http.get(Q).json()["partitions"]
    assert (part["delayed"], part["in_flight"]) == (1, 1)


def test_an_expired_lease_goes_to_another_caller(
    tidelog_gateway: str, make_topic: Callable[..., str]
) -> None:
    make_topic("emails")
    with (
        httpx.Client(base_url=tidelog_gateway, timeout=TIMEOUT_S) as a,
        httpx.Client(base_url=tidelog_gateway, timeout=TIMEOUT_S) as b,
    ):
        settings(a, lock_duration_ms=100)
        produce(a, ["job"])
        (first,) = lease(a)["messages"]
        (second,) = lease(b)["messages"]  # waits until the first lock ends
        assert (second["offset"], second["delivery_count"]) == (first["offset"], 2)
        for path, body in (("/ack", None), ("/nack", {}), ("/reject", {}), ("/renew", {})):
            if body is None:
                failed = a.post(Q + path, json={"receipts": [first["receipt"]]}).json()["failed"]
                assert failed[0]["error_code"] == "receipt_expired", failed
            else:
                r = a.post(Q + path, json={"receipt": first["receipt"], **body})
                assert_error(r, 409, "receipt_expired")


def test_a_lock_over_by_the_gateways_clock_is_not_sent_to_the_broker(
    tidelog_broker: Any, tidelog_gateway_factory: Callable[..., Any]
) -> None:
    now = [1000.0]
    gateway = tidelog_gateway_factory(tidelog_broker.address, clock=lambda: now[0])
    with httpx.Client(base_url=gateway.url, timeout=TIMEOUT_S) as http:
        http.post("/v1/topics", json={"name": "emails"})
        produce(http, ["a", "b"])
        got = lease_all(http, 2)
        assert {m["delivery_count"] for m in got} == {1}
        renewed = http.post(Q + "/renew", json={"receipt": got[0]["receipt"]}).json()
        assert renewed == {"lock_duration_ms": 30_000}
        now[0] += 29  # the first lock was renewed at 1000: 1 s left on both
        assert http.post(Q + "/renew", json={"receipt": got[0]["receipt"]}).status_code == 200
        now[0] += 2  # the second's lock is over by the gateway's clock (the broker's is not)
        body = assert_error(
            http.post(Q + "/nack", json={"receipt": got[1]["receipt"]}), 409, "receipt_expired"
        )
        assert "ended" in body["message"]
        assert http.post(Q + "/ack", json={"receipts": [got[0]["receipt"]]}).json()["failed"] == []


def test_receipt_errors(http: httpx.Client, make_topic: Callable[..., str]) -> None:
    make_topic("emails")
    produce(http, ["x"])
    (m,) = lease(http)["messages"]
    assert_error(http.post(Q + "/nack", json={"receipt": "not-a-receipt"}), 400, "invalid_receipt")
    other = http.post("/v1/queues/other/renew", json={"receipt": m["receipt"]})
    assert_error(other, 400, "invalid_receipt")
    forged = json.loads(base64.urlsafe_b64decode(m["receipt"] + "=" * (-len(m["receipt"]) % 4)))
    forged[2] = "gwq-nobody"
    text = base64.urlsafe_b64encode(json.dumps(forged).encode()).decode().rstrip("=")
    body = assert_error(http.post(Q + "/reject", json={"receipt": text}), 404, "unknown_receipt")
    assert "no queue member of this gateway" in body["message"]
    mixed = http.post(Q + "/ack", json={"receipts": [m["receipt"], "garbage"]}).json()
    assert mixed["acked"] == [m["receipt"]]
    assert [f["error_code"] for f in mixed["failed"]] == ["invalid_receipt"]
    for path in ("/nack", "/reject", "/renew"):
        assert_error(http.post(Q + path, json={"receipt": m["receipt"]}), 404, "unknown_receipt")


def test_reject_lands_in_the_dead_letters_with_its_reason(
    http: httpx.Client, make_topic: Callable[..., str]
) -> None:
    make_topic("emails")
    assert_error(http.get(Q + "/dlq"), 404, "unknown_group")
    produce(http, ["poison"], headers=[{"name": "trace", "value": "t-1"}])
    (m,) = lease(http)["messages"]
    r = http.post(Q + "/reject", json={"receipt": m["receipt"], "reason": "bad payload"})
    assert r.status_code == 204, r.text
    listed = http.get(Q + "/dlq").json()
    assert (listed["dlq_topic"], listed["next_offset"]) == ("emails.dlq", 1)
    (letter,) = listed["dead_letters"]
    assert letter["value"] == "poison" and letter["headers"] == [{"name": "trace", "value": "t-1"}]
    why = (letter["reason"], letter["error"], letter["group"])
    assert why == ("rejected", "bad payload", "jobs")
    assert (letter["source_topic"], letter["source_offset"], letter["delivery_count"]) == (
        "emails",
        m["offset"],
        1,
    )
    assert http.get(Q + f"/dlq/0/{letter['dlq_offset']}").json() == letter
    assert_error(http.get(Q + "/dlq/0/7"), 404, "dead_letter_not_found")
    assert http.get("/v1/queues/others/dlq", params={"topic": "emails"}).status_code == 404
    assert http.get(Q + "/dlq", params={"offset": 1}).json()["dead_letters"] == []
    (part,) = http.get(Q).json()["partitions"]
    assert part["dead_lettered"] == 1


def test_dead_letters_are_redriven_one_or_all_and_purged(
    http: httpx.Client, make_topic: Callable[..., str]
) -> None:
    make_topic("emails")
    produce(http, ["a", "b", "c"])
    for m in lease_all(http, 3):
        r = http.post(Q + "/reject", json={"receipt": m["receipt"], "reason": "bad"})
        assert r.status_code == 204, r.text
    letters = http.get(Q + "/dlq").json()["dead_letters"]
    assert [x["value"] for x in letters] == ["a", "b", "c"]
    page = http.get(Q + "/dlq", params={"max_records": 2}).json()
    assert ([x["value"] for x in page["dead_letters"]], page["next_offset"]) == (["a", "b"], 2)
    rest = http.get(Q + "/dlq", params={"offset": page["next_offset"]}).json()
    assert [x["value"] for x in rest["dead_letters"]] == ["c"]
    bad = http.post(Q + "/dlq/redrive", json={"offset": 1})
    assert_error(bad, 400, "invalid_request")
    one = http.post(Q + "/dlq/redrive", json={"partition": 0, "offset": letters[1]["dlq_offset"]})
    assert (one.json()["redriven"], one.json()["dlq_topic"]) == (1, "emails.dlq"), one.text
    (back,) = lease(http)["messages"]
    assert back["value"] == "b"
    assert {"name": "tidelog.redrive_count", "value": "1"} in back["headers"]
    assert http.post(Q + "/ack", json={"receipts": [back["receipt"]]}).json()["failed"] == []
    everything = http.post(Q + "/dlq/redrive", json={"rate": 1000}).json()
    assert everything["redriven"] == 3  # an unfiltered redrive sends all from its mark
    assert sorted(m["value"] for m in lease_all(http, 3)) == ["a", "b", "c"]
    purged = http.post(Q + "/dlq/purge", json={}).json()
    assert purged == {"dlq_topic": "emails.dlq", "purged_to": {"0": 3}}
    assert http.get(Q + "/dlq").json()["dead_letters"] == []
    assert_error(http.post(Q + "/dlq/purge", json={"before": -1}), 422, "invalid_request")


def test_status_settings_and_hostile_bodies(
    http: httpx.Client, make_topic: Callable[..., str]
) -> None:
    make_topic("emails")
    assert_error(http.get(Q), 404, "unknown_group")
    assert_error(
        http.patch(Q + "/settings", json={"set": {"lock_duration_ms": -1}}), 400, "invalid_config"
    )
    assert_error(http.patch(Q + "/settings", json={"set": {"nope": 1}}), 400, "invalid_config")
    settings(http, max_delivery_attempts=3)
    status = http.get(Q).json()
    assert {"name": "max_delivery_attempts", "value": "3"}.items() <= next(
        s for s in status["settings"] if s["name"] == "max_delivery_attempts"
    ).items()
    for bad in (
        {"topics": []},
        {"topics": ["emails"], "max_records": 0},
        {"topics": ["emails"], "wait_ms": "5"},
        {"topics": ["emails"], "extra": 1},
        {"topics": "emails"},
    ):
        assert_error(http.post(Q + "/lease", json=bad), 422, "invalid_request")
    r = http.post(Q + "/lease", content=b"{", headers={"content-type": "application/json"})
    assert_error(r, 400, "invalid_json")
    assert_error(http.post(Q + "/ack", json={"receipts": []}), 422, "invalid_request")
    assert_error(
        http.post(Q + "/nack", json={"receipt": "x", "delay_ms": -1}), 422, "invalid_request"
    )
    assert_error(
        http.post(Q + "/lease", json={"topics": ["nope"]}), 404, "unknown_topic_or_partition"
    )
    assert_error(
        http.post(Q + "/lease", json={"topics": ["__consumer_offsets"]}), 400, "invalid_request"
    )
