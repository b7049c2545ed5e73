"""The registry's REST API over a real gateway and broker: Confluent's paths, content type,
error codes and bodies; state shared by gateways and kept across restarts."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx

from tidelog.registry import MEDIA_TYPE, PREFIX

AVRO_V1 = json.dumps({"type": "record", "name": "R", "fields": [{"name": "x", "type": "int"}]})
AVRO_V2 = json.dumps(
    {
        "type": "record",
        "name": "R",
        "fields": [{"name": "x", "type": "int"}, {"name": "y", "type": "string", "default": ""}],
    }
)
AVRO_BAD = json.dumps(
    {
        "type": "record",
        "name": "R",
        "fields": [{"name": "x", "type": "int"}, {"name": "z", "type": "string"}],
    }
)


def error(r: httpx.Response, status: int, code: int) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == MEDIA_TYPE
    body = r.json()
    assert set(body) == {"error_code", "message"} and body["error_code"] == code, body


def register(sr: httpx.Client, subject: str, schema: str, kind: str = "AVRO") -> int:
    r = sr.post(f"/subjects/{subject}/versions", json={"schema": schema, "schemaType": kind})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == MEDIA_TYPE
    schema_id: int = r.json()["id"]
    return schema_id


def test_register_get_lookup(sr: httpx.Client) -> None:
    one = register(sr, "a-value", AVRO_V1)
    assert register(sr, "a-value", AVRO_V1) == one  # the same schema twice: the same id
    assert register(sr, "b-value", AVRO_V1) == one  # and in another subject too
    two = register(sr, "a-value", AVRO_V2)
    assert two != one
    assert sr.get("/subjects").json() == ["a-value", "b-value"]
    assert sr.get("/subjects/a-value/versions").json() == [1, 2]
    latest = sr.get("/subjects/a-value/versions/latest").json()
    assert latest == {"subject": "a-value", "version": 2, "id": two, "schema": latest["schema"]}
    assert json.loads(latest["schema"]) == json.loads(AVRO_V2)
    assert json.loads(sr.get("/subjects/a-value/versions/1/schema").text) == json.loads(AVRO_V1)
    assert json.loads(sr.get(f"/schemas/ids/{one}").json()["schema"]) == json.loads(AVRO_V1)
    assert sr.get(f"/schemas/ids/{one}/subjects").json() == ["a-value", "b-value"]
    assert sr.get(f"/schemas/ids/{one}/versions").json() == [
        {"subject": "a-value", "version": 1},
        {"subject": "b-value", "version": 1},
    ]
    found = sr.post("/subjects/a-value", json={"schema": AVRO_V1}).json()
    assert (found["version"], found["id"]) == (1, one)
    assert sr.get("/schemas/types").json() == ["AVRO", "JSON"]


def test_errors(sr: httpx.Client) -> None:
    register(sr, "e-value", AVRO_V1)
    error(sr.get("/subjects/none/versions"), 404, 40401)
    error(sr.get("/subjects/e-value/versions/7"), 404, 40402)
    error(sr.get("/schemas/ids/999"), 404, 40403)
    error(sr.post("/subjects/e-value", json={"schema": AVRO_V2}), 404, 40403)
    error(sr.post("/subjects/e-value/versions", json={"schema": AVRO_BAD}), 409, 409)
    error(sr.post("/subjects/e-value/versions", json={"schema": "{"}), 422, 42201)
    error(
        sr.post("/subjects/e-value/versions", json={"schema": "{}", "schemaType": "XML"}),
        422,
        42201,
    )
    error(sr.get("/subjects/e-value/versions/0"), 422, 42202)
    error(sr.get("/subjects/e-value/versions/x"), 422, 42202)
    error(sr.put("/config", json={"compatibility": "SIDEWAYS"}), 422, 42203)
    error(sr.get("/config/e-value"), 404, 40408)


def test_config_and_compatibility(sr: httpx.Client) -> None:
    register(sr, "c-value", AVRO_V1)
    check = "/compatibility/subjects/c-value/versions/latest"
    assert sr.post(check, json={"schema": AVRO_BAD}).json() == {"is_compatible": False}
    assert sr.post(check, json={"schema": AVRO_V2}).json() == {"is_compatible": True}
    verbose = sr.post(check + "?verbose=true", json={"schema": AVRO_BAD}).json()
    assert "z" in " ".join(verbose["messages"])
    assert sr.get("/config").json() == {"compatibilityLevel": "BACKWARD"}
    assert sr.put("/config/c-value", json={"compatibility": "NONE"}).json() == {
        "compatibility": "NONE"
    }
    assert sr.get("/config/c-value").json() == {"compatibilityLevel": "NONE"}
    assert sr.post(check, json={"schema": AVRO_BAD}).json() == {"is_compatible": True}
    register(sr, "c-value", AVRO_BAD)  # NONE: anything goes
    assert sr.delete("/config/c-value").json() == {"compatibilityLevel": "NONE"}
    assert sr.get("/config/c-value?defaultToGlobal=true").json() == {
        "compatibilityLevel": "BACKWARD"
    }


def test_deletes(sr: httpx.Client) -> None:
    one = register(sr, "d-value", AVRO_V1)
    register(sr, "d-value", AVRO_V2)
    error(sr.delete("/subjects/d-value/versions/1?permanent=true"), 404, 40407)
    assert sr.delete("/subjects/d-value/versions/1").json() == 1
    error(sr.delete("/subjects/d-value/versions/1"), 404, 40406)
    assert sr.get("/subjects/d-value/versions").json() == [2]
    assert sr.get("/subjects/d-value/versions?deleted=true").json() == [1, 2]
    error(sr.delete("/subjects/d-value?permanent=true"), 404, 40405)
    assert sr.delete("/subjects/d-value").json() == [2]
    error(sr.delete("/subjects/d-value"), 404, 40404)
    assert sr.get("/subjects").json() == []
    assert sr.get("/subjects?deleted=true").json() == ["d-value"]
    assert sr.delete("/subjects/d-value?permanent=true").json() == [1, 2]
    error(sr.get(f"/schemas/ids/{one}"), 404, 40403)
    # ids are never reused: the schema comes back under a new one
    assert register(sr, "d-value", AVRO_V1) > one + 1


def test_gateways_share_state_and_survive_restarts(
    tidelog_broker: Any, tidelog_gateway_factory: Callable[..., Any]
) -> None:
    first = tidelog_gateway_factory(tidelog_broker.address)
    with httpx.Client(base_url=first.url + PREFIX, timeout=30) as sr:
        one = register(sr, "g-value", AVRO_V1)
    second = tidelog_gateway_factory(tidelog_broker.address)
    with httpx.Client(base_url=second.url + PREFIX, timeout=30) as sr:
        assert register(sr, "g-value", AVRO_V1) == one  # read back from _schemas
        two = register(sr, "h-value", AVRO_V2)
    first.stop()
    third = tidelog_gateway_factory(tidelog_broker.address)
    with httpx.Client(base_url=third.url + PREFIX, timeout=30) as sr:
        assert sr.get("/subjects").json() == ["g-value", "h-value"]
        assert sr.get("/subjects/h-value/versions/1").json()["id"] == two
