"""The WebSocket endpoint: streaming in order, resuming, produce with answers, group mode,
bad messages."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from websockets.sync.client import ClientConnection, connect

from .conftest import TIMEOUT_S

RECORDS = 10_000


@contextmanager
def socket(base_url: str) -> Iterator[ClientConnection]:
    with connect(base_url.replace("http", "ws", 1) + "/v1/ws", max_size=None) as ws:
        yield ws


def send(ws: ClientConnection, **message: Any) -> None:
    ws.send(json.dumps(message))


def frame(ws: ClientConnection) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(ws.recv(timeout=TIMEOUT_S))
    return body


def answer(ws: ClientConnection, op_id: str) -> dict[str, Any]:
    """The next frame that answers ``op_id`` (records frames of other ids are skipped)."""
    while True:
        body = frame(ws)
        if body.get("id") == op_id and body["type"] != "records":
            return body


def fill(http: httpx.Client, count: int, partitions: int = 1) -> None:
    for start in range(0, count, 2000):
        r = http.post(
            "/v1/topics/events/records",
            json={
                "records": [
                    {"value": i, "partition": i % partitions}
                    for i in range(start, min(count, start + 2000))
                ]
            },
        )
        assert r.json()["failed"] == 0


def read(ws: ClientConnection, sub: str, count: int) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    while len(got) < count:
        body = frame(ws)
        assert body["type"] == "records" and body["id"] == sub, body
        got += body["records"]
    return got


def test_ten_thousand_records_stream_in_order(
    tidelog_gateway: str, http: httpx.Client, make_topic: Callable[..., str]
) -> None:
    make_topic()
    fill(http, RECORDS)
    with socket(tidelog_gateway) as ws:
        send(ws, op="subscribe", id="s1", topics=["events"], start="earliest")
        subscribed = frame(ws)
        assert subscribed == {
            "type": "subscribed",
            "id": "s1",
            "partitions": [{"topic": "events", "partition": 0}],
        }
        got = read(ws, "s1", RECORDS)
    assert [r["offset"] for r in got] == list(range(RECORDS))
    assert [r["value"] for r in got] == list(range(RECORDS))


def test_a_client_that_reconnects_with_its_offsets_resumes_in_order(
    tidelog_gateway: str, http: httpx.Client, make_topic: Callable[..., str]
) -> None:
    make_topic(partitions=2)
    fill(http, 2000, partitions=2)
    last: dict[int, int] = {}
    with socket(tidelog_gateway) as ws:
        send(ws, op="subscribe", id="a", topics=["events"], start="earliest")
        frame(ws)
        for r in read(ws, "a", 700):
            last[r["partition"]] = r["offset"]
    seen = {p: last.get(p, -1) + 1 for p in (0, 1)}  # the next offset the client wants
    fill(http, 200, partitions=2)
    with socket(tidelog_gateway) as ws:
        offsets = [{"topic": "events", "partition": p, "offset": o} for p, o in seen.items()]
        send(ws, op="subscribe", id="b", topics=["events"], start="latest", offsets=offsets)
        frame(ws)
        remaining = 2200 - sum(seen.values())
        rest = read(ws, "b", remaining)
    for p in (0, 1):
        offsets_p = [r["offset"] for r in rest if r["partition"] == p]
        assert offsets_p == list(range(seen.get(p, 0), 1100)), p


def test_one_partition_from_the_end(
    tidelog_gateway: str, http: httpx.Client, make_topic: Callable[..., str]
) -> None:
    make_topic(partitions=2)
    fill(http, 10, partitions=2)
    with socket(tidelog_gateway) as ws:
        send(ws, op="subscribe", id="s", topics=["events"], partition=1, start="latest")
        assert frame(ws)["partitions"] == [{"topic": "events", "partition": 1}]
        send(
            ws,
            op="produce",
            id="p",
            topic="events",
            records=[{"value": "x", "partition": 0}, {"value": "y", "partition": 1}],
        )
        frames = [frame(ws), frame(ws)]  # the answer and the record, in either order
        (produced,) = [f for f in frames if f["type"] == "produced"]
        assert produced["failed"] == 0
        ((record,),) = [f["records"] for f in frames if f["type"] == "records"]
        assert (record["partition"], record["offset"], record["value"]) == (1, 5, "y")


def test_produce_over_the_socket_answers_each_message(
    tidelog_gateway: str, http: httpx.Client, make_topic: Callable[..., str]
) -> None:
    make_topic()
    with socket(tidelog_gateway) as ws:
        for i in range(20):
            send(ws, op="produce", id=f"m{i}", topic="events", records=[{"value": i}])
        send(ws, op="produce", id="bad", topic="nope", records=[{"value": 1}])
        send(ws, op="produce", id="b64", topic="events", format="base64", records=[{"value": "%%"}])
        answers = {}
        while len(answers) < 22:
            body = frame(ws)
            answers[body["id"]] = body
    offsets = [answers[f"m{i}"]["results"][0]["offset"] for i in range(20)]
    assert offsets == list(range(20))  # queued in the order the messages came
    assert answers["m0"]["type"] == "produced"
    assert (answers["bad"]["type"], answers["bad"]["error_code"]) == (
        "error",
        "unknown_topic_or_partition",
    )
    assert answers["b64"]["error_code"] == "invalid_record"


def test_group_mode_and_commit(
    tidelog_gateway: str, http: httpx.Client, make_topic: Callable[..., str]
) -> None:
    make_topic()
    fill(http, 50)
    with socket(tidelog_gateway) as ws:
        send(ws, op="subscribe", id="g", topics=["events"], group="ws-readers", start="earliest")
        assert frame(ws)["type"] == "subscribed"
        got = read(ws, "g", 50)
        assert [r["value"] for r in got] == list(range(50))
        send(
            ws,
            op="commit",
            id="c",
            subscription="g",
            offsets=[{"topic": "events", "partition": 0, "offset": 30}],
        )
        assert answer(ws, "c") == {"type": "committed", "id": "c"}
        send(ws, op="unsubscribe", id="g")
        assert answer(ws, "g") == {"type": "unsubscribed", "id": "g"}
    (p0,) = http.get("/v1/groups/ws-readers").json()["offsets"]
    assert (p0["committed"], p0["lag"]) == (30, 20)


def test_bad_messages_get_error_frames_and_the_socket_stays_open(
    tidelog_gateway: str, make_topic: Callable[..., str]
) -> None:
    make_topic()
    with socket(tidelog_gateway) as ws:
        ws.send("{not json")
        assert frame(ws)["error_code"] == "invalid_message"
        send(ws, op="fly", id="x")
        assert frame(ws) | {"message": ""} == {
            "type": "error",
            "id": "x",
            "error_code": "invalid_message",
            "message": "",
        }
        send(ws, op="subscribe", id="s", topics=["nope"])
        assert answer(ws, "s")["error_code"] == "unknown_topic_or_partition"
        send(ws, op="unsubscribe", id="s")
        assert answer(ws, "s")["error_code"] == "unknown_subscription"
        send(ws, op="commit", id="c", subscription="s")
        assert answer(ws, "c")["error_code"] == "unknown_subscription"
        send(ws, op="subscribe", id="s", topics=["events"], partition=4)
        assert answer(ws, "s")["error_code"] == "unknown_topic_or_partition"
        send(ws, op="subscribe", id="ok", topics=["events"])
        assert answer(ws, "ok")["type"] == "subscribed"
        send(ws, op="subscribe", id="ok", topics=["events"])
        assert answer(ws, "ok")["error_code"] == "subscription_exists"
