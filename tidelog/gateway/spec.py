"""What the generated OpenAPI spec cannot know from the route declarations alone, added once
when the spec is first built: this gateway's limits (as ``maximum`` / ``maxItems``, so a
request the spec calls valid is one the gateway accepts) and the links from a created topic or
consumer instance to the operations on it (so tools that follow links, like schemathesis'
stateful tests, reach them)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from fastapi import FastAPI

from .settings import GatewaySettings

FETCH: Final = ("/v1/topics/{topic}/partitions/{partition}/records", "get")
PRODUCE: Final = ("/v1/topics/{topic}/records", "post")
CREATE_TOPIC: Final = ("/v1/topics", "post")
CREATE_CONSUMER: Final = ("/v1/consumers/{group}", "post")
INSTANCE: Final = "/v1/consumers/{group}/instances/{name}"
# Only operations whose 404 means the linked resource is gone (a produce's 404 may be its
# record's partition; a subscription's, one of its topics).
TOPIC_LINKS: Final = (
    ("/v1/topics/{topic}", "get"),
    ("/v1/topics/{topic}/configs", "get"),
    ("/v1/topics/{topic}/configs", "patch"),
    FETCH,
    ("/v1/topics/{topic}", "delete"),
)
INSTANCE_LINKS: Final = (
    (INSTANCE + "/subscription", "get"),
    (INSTANCE + "/records", "get"),
    (INSTANCE + "/offsets", "get"),
    (INSTANCE, "delete"),
)


def install(app: FastAPI, settings: GatewaySettings) -> None:
    """Make ``app.openapi()`` return the spec with this gateway's limits and links."""
    build: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        fresh = app.openapi_schema is None
        spec = build()
        if fresh:
            _limits(spec, settings)
            _links(spec)
        return spec

    app.openapi = openapi  # type: ignore[method-assign]


def _limits(spec: dict[str, Any], s: GatewaySettings) -> None:
    fetch = spec["paths"][FETCH[0]][FETCH[1]]
    for name, limit in (
        ("max_records", s.max_fetch_records),
        ("max_bytes", s.max_fetch_bytes),
        ("wait_ms", s.max_fetch_wait_ms),
    ):
        (param,) = (p for p in fetch["parameters"] if p["name"] == name)
        for schema in param["schema"].get("anyOf", [param["schema"]]):
            if schema.get("type") == "integer":
                schema["maximum"] = limit
    produce = spec["components"]["schemas"]["ProduceRequest"]
    produce["properties"]["records"]["maxItems"] = s.max_produce_records


def _links(spec: dict[str, Any]) -> None:
    paths = spec["paths"]

    def link(source: tuple[str, str], status: str, targets: Any, params: dict[str, str]) -> None:
        response = paths[source[0]][source[1]]["responses"][status]
        response["links"] = {
            paths[path][method]["operationId"]: {
                "operationId": paths[path][method]["operationId"],
                "parameters": {k: v for k, v in params.items() if "{" + k + "}" in path},
            }
            for path, method in targets
        }

    link(CREATE_TOPIC, "201", TOPIC_LINKS, {"topic": "$response.body#/name", "partition": "0"})
    link(
        CREATE_CONSUMER,
        "201",
        INSTANCE_LINKS,
        {"group": "$request.path.group", "name": "$response.body#/instance_id"},
    )
