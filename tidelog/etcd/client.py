"""An asyncio client for etcd's v3 API through its JSON gateway (``/v3/...`` over HTTP).

Why the gateway and not gRPC: the only dependency is an HTTP client (httpx, which the HTTP
gateway and the CLI use too), while the gRPC clients tie us to grpcio/protobuf majors (the
``etcd3`` package does not even import with today's protobuf). Patroni's etcd3 support is built
on the same gateway. Measurements and the choice: docs/CLUSTER.md.

Every call goes to the first endpoint that answers; a connection failure rotates to the next one
(a multi-member etcd keeps working when one member dies). A call that times out may still have
been applied: callers that write re-read and compare instead of blindly sending again.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Final

import httpx

from .types import (
    JSON,
    NO_LEASE,
    Compare,
    Delete,
    Get,
    KeyValue,
    Lease,
    Op,
    Put,
    TxnResult,
    WatchEvent,
    range_body,
)

DEFAULT_TIMEOUT: Final = 2.0
"""Seconds for one call; short, because a call to a dead member only ends when this runs out."""


class EtcdError(Exception):
    """etcd answered with an error (``code`` is its gRPC status code)."""

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code


class EtcdUnavailableError(EtcdError):
    """No endpoint answered in time. Retriable; a write may or may not have been applied."""


class EtcdCompactedError(EtcdError):
    """A watch asked for history etcd has compacted away: re-read the state, then watch from
    the revision of that read."""

    def __init__(self, compact_revision: int) -> None:
        super().__init__(f"etcd compacted its history up to revision {compact_revision}")
        self.compact_revision = compact_revision


@dataclass(frozen=True, slots=True)
class WatchBatch:
    """The events of one watch response and the store revision they bring the watcher to."""

    events: tuple[WatchEvent, ...]
    revision: int


class EtcdClient:
    """A small async etcd v3 client: get, range, put, delete, txn, leases and watches."""

    def __init__(self, endpoints: Sequence[str], *, timeout: float = DEFAULT_TIMEOUT) -> None:
        if not endpoints:
            raise ValueError("at least one etcd endpoint is needed")
        self.endpoints = [normalise_endpoint(e) for e in endpoints]
        self.timeout = timeout
        self._current = 0
        self._http = httpx.AsyncClient(timeout=timeout)

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> EtcdClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- calls ---------------------------------------------------------------------------

    async def call(self, path: str, body: JSON) -> JSON:
        """POST ``body`` to ``/v3/<path>`` on the first endpoint that answers."""
        failures: list[str] = []
        for attempt in range(len(self.endpoints)):
            index = (self._current + attempt) % len(self.endpoints)
            url = f"{self.endpoints[index]}/v3/{path}"
            try:
                response = await self._http.post(url, json=body)
            except httpx.TransportError as exc:
                failures.append(f"{self.endpoints[index]}: {describe(exc)}")
                continue
            self._current = index
            return decode(response)
        raise EtcdUnavailableError(f"no etcd endpoint answered ({'; '.join(failures)})")

    async def get(self, key: bytes) -> KeyValue | None:
        kvs, _ = await self.range(key)
        return kvs[0] if kvs else None

    async def range(self, key: bytes, *, prefix: bool = False) -> tuple[list[KeyValue], int]:
        """The keys (one, or all under ``key`` when ``prefix``) and the revision they are of."""
        reply = await self.call("kv/range", range_body(key, prefix))
        kvs = [KeyValue.from_json(kv) for kv in reply.get("kvs", ())]
        return kvs, header_revision(reply)

    async def put(self, key: bytes, value: bytes, *, lease: int = NO_LEASE) -> int:
        """Store ``value``; the revision it was written at."""
        reply = await self.call("kv/put", Put(key, value, lease).to_json()["request_put"])
        return header_revision(reply)

    async def delete(self, key: bytes, *, prefix: bool = False) -> int:
        """Delete ``key`` (or every key under it); the number of keys deleted."""
        reply = await self.call(
            "kv/deleterange", Delete(key, prefix).to_json()["request_delete_range"]
        )
        return int(reply.get("deleted", 0))

    async def txn(
        self, compare: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult:
        """If every comparison holds, apply ``success``, else ``failure``: atomically."""
        reply = await self.call(
            "kv/txn",
            {
                "compare": [c.to_json() for c in compare],
                "success": [op.to_json() for op in success],
                "failure": [op.to_json() for op in failure],
            },
        )
        succeeded = bool(reply.get("succeeded", False))
        ran = success if succeeded else failure
        reads: list[tuple[KeyValue, ...]] = []
        for op, response in zip(ran, reply.get("responses", ()), strict=False):
            if isinstance(op, Get):
                found = response.get("response_range", {}).get("kvs", ())
                reads.append(tuple(KeyValue.from_json(kv) for kv in found))
            else:
                reads.append(())
        return TxnResult(succeeded, header_revision(reply), tuple(reads))

    async def compact(self, revision: int) -> None:
        """Drop the history before ``revision`` (watches from earlier revisions then fail with
        :class:`EtcdCompactedError`)."""
        await self.call("kv/compaction", {"revision": str(revision), "physical": True})

    # --- leases --------------------------------------------------------------------------

    async def grant(self, ttl: int) -> Lease:
        """A new lease of ``ttl`` seconds (etcd grants at least 2)."""
        reply = await self.call("lease/grant", {"TTL": str(ttl)})
        return Lease(int(reply["ID"]), int(reply.get("TTL", ttl)))

    async def revoke(self, lease: int) -> None:
        """End ``lease`` now: its keys are deleted at once. An unknown lease is no error."""
        try:
            await self.call("lease/revoke", {"ID": str(lease)})
        except EtcdError as exc:
            if "lease not found" not in str(exc):
                raise

    async def time_to_live(self, lease: int) -> int:
        """Seconds ``lease`` has left; -1 when it has expired or never existed."""
        reply = await self.call("lease/timetolive", {"ID": str(lease)})
        return int(reply.get("TTL", -1))

    # --- watches -------------------------------------------------------------------------

    async def watch(
        self, key: bytes, *, prefix: bool = True, start_revision: int = 0
    ) -> AsyncIterator[WatchBatch]:
        """The changes to ``key`` (or under it) from ``start_revision`` on, batch by batch.

        Ends with :class:`EtcdUnavailableError` when the stream breaks (re-watch from the last
        revision seen plus one) and :class:`EtcdCompactedError` when that history is gone.
        """
        request = range_body(key, prefix)
        if start_revision:
            request["start_revision"] = str(start_revision)
        url = f"{self.endpoints[self._current]}/v3/watch"
        timeout = httpx.Timeout(self.timeout, read=None)
        try:
            async with self._http.stream(
                "POST", url, json={"create_request": request}, timeout=timeout
            ) as response:
                async for line in response.aiter_lines():
                    if not line.strip():
                        continue
                    message = json.loads(line)
                    if "error" in message:
                        raise error_of(message["error"])
                    result = message.get("result", {})
                    compacted = int(result.get("compact_revision", 0))
                    if compacted:
                        raise EtcdCompactedError(compacted)
                    if result.get("canceled"):
                        raise EtcdError(f"etcd cancelled the watch: {result.get('cancel_reason')}")
                    events = tuple(WatchEvent.from_json(e) for e in result.get("events", ()))
                    if events:
                        yield WatchBatch(events, header_revision(result))
        except httpx.TransportError as exc:
            self._current = (self._current + 1) % len(self.endpoints)
            raise EtcdUnavailableError(f"the etcd watch broke: {describe(exc)}") from exc
        raise EtcdUnavailableError("etcd ended the watch stream")


def normalise_endpoint(endpoint: str) -> str:
    """``host:port`` or a URL, as ``http://host:port``."""
    endpoint = endpoint.strip().rstrip("/")
    return endpoint if "://" in endpoint else f"http://{endpoint}"


def header_revision(reply: JSON) -> int:
    return int(reply.get("header", {}).get("revision", 0))


def decode(response: httpx.Response) -> JSON:
    try:
        body = response.json()
    except ValueError:
        raise EtcdError(
            f"etcd answered HTTP {response.status_code} with no JSON: {response.text[:200]!r}"
        ) from None
    if response.status_code != 200 or "error" in body:
        raise error_of(body)
    if not isinstance(body, dict):
        raise EtcdError(f"etcd answered {body!r}")
    return body


def error_of(body: JSON) -> EtcdError:
    message = str(body.get("message") or body.get("error") or body)
    return EtcdError(f"etcd: {message}", int(body.get("code", 0)))


def describe(exc: Exception) -> str:
    return str(exc) or type(exc).__name__
