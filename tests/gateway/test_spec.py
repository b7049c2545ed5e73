"""What the property-based run (test_openapi.py) found, pinned down one by one: the spec
declares this gateway's limits and the links from created resources; numbers are numbers and
fit the wire; a 405 names every allowed method; answers are not held back by Nagle."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

import httpx

from tidelog.gateway import bind
from tidelog.gateway.testing import GatewayThread

from .conftest import TIMEOUT_S, assert_error

FETCH = "/v1/topics/{topic}/partitions/{partition}/records"


def test_the_spec_declares_the_limits_and_the_links(
    tidelog_broker: Any, tidelog_gateway_factory: Callable[..., GatewayThread]
) -> None:
    url = tidelog_gateway_factory(
        tidelog_broker.address, max_fetch_records=7, max_fetch_wait_ms=9, max_produce_records=3
    ).url
    spec = httpx.get(url + "/openapi.json", timeout=TIMEOUT_S).json()
    params = {p["name"]: p["schema"] for p in spec["paths"][FETCH]["get"]["parameters"]}
    assert params["wait_ms"]["maximum"] == 9
    assert {"type": "integer", "minimum": 1, "maximum": 7} in params["max_records"]["anyOf"]
    produce = spec["components"]["schemas"]["ProduceRequest"]["properties"]["records"]
    assert produce["maxItems"] == 3
    created = spec["paths"]["/v1/consumers/{group}"]["post"]["responses"]["201"]["links"]
    operations = {op["operationId"] for path in spec["paths"].values() for op in path.values()}
    assert created and set(created) <= operations
    for link in created.values():
        assert link["parameters"]["name"] == "$response.body#/instance_id"
    topic = spec["paths"]["/v1/topics"]["post"]["responses"]["201"]["links"]
    assert all(link["parameters"]["topic"] == "$response.body#/name" for link in topic.values())


def test_numbers_are_strict_and_fit_the_wire(http: httpx.Client) -> None:
    too_big = {"name": "big", "partitions": 2**70}
    assert_error(http.post("/v1/topics", json=too_big), 422, "invalid_request")
    assert_error(
        http.post("/v1/topics", json={"name": "x", "partitions": True}), 422, "invalid_request"
    )
    assert_error(http.post("/v1/consumers/g", json={"auto_commit": 0}), 422, "invalid_request")
    offsets = {"offsets": [{"topic": "t", "partition": 0, "offset": False}]}
    assert_error(http.post("/v1/groups/g/offsets", json=offsets), 422, "invalid_request")
    record = {"records": [{"value": 1, "timestamp": 2**64}]}
    assert_error(http.post("/v1/topics/t/records", json=record), 422, "invalid_request")


def test_a_405_names_every_method_of_the_path(http: httpx.Client) -> None:
    response = http.request("TRACE", "/v1/topics")
    assert_error(response, 405, "method_not_allowed")
    assert set(response.headers["allow"].split(", ")) == {"GET", "POST"}
    response = http.request("OPTIONS", "/v1/topics/events")
    assert set(response.headers["allow"].split(", ")) == {"GET", "DELETE"}


def test_accepted_connections_have_nagle_off() -> None:
    """The gateway's socket makes asyncio set TCP_NODELAY on each connection (without it, an
    answer written as head and body waited ~40 ms for the client's delayed ACK)."""

    async def main() -> int:
        accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        class Probe(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                sock = transport.get_extra_info("socket")
                accepted.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

        server = await asyncio.get_running_loop().create_server(Probe, sock=bind("127.0.0.1", 0))
        async with server:
            port = server.sockets[0].getsockname()[1]
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                return await asyncio.wait_for(accepted, TIMEOUT_S)
            finally:
                writer.close()

    assert asyncio.run(main()) != 0
