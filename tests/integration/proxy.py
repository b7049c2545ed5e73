"""A fault-injecting TCP proxy for tests, in front of a real broker (after asyncpg's test fuzzer).

It listens on 127.0.0.1 on an ephemeral port and opens one upstream connection per client
connection. Requests go up byte for byte; responses come back frame by frame, each shown to a
``policy`` that forwards it, drops it, or drops it and closes the client's connection (the
client then reconnects, through the proxy again, and retries what was in flight). Metadata
responses are rewritten so that the broker advertises the proxy's address: a client that
bootstraps through the proxy stays behind it.

    async with Proxy(broker.host, broker.port, policy=DropEvery(ApiKey.PRODUCE, 3)) as proxy:
        async with Producer(proxy.address) as producer: ...
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import Enum

from tidelog.client.lifecycle import AsyncClient
from tidelog.wire import FrameDecoder, decode_response, encode_response
from tidelog.wire import messages as m
from tidelog.wire.api import ApiKey
from tidelog.wire.frame import Frame, FrameFlags, encode_frame

CHUNK = 256 * 1024


class Action(Enum):
    FORWARD = "forward"
    DROP = "drop"
    DROP_AND_CLOSE = "drop and close"
    """Drop the response and close the client's connection, cutting what else was in flight."""


Policy = Callable[[Frame], Action]


def forward_all(frame: Frame) -> Action:
    return Action.FORWARD


@dataclass
class DropEvery:
    """Drop every ``n``-th response of API ``api`` (counted across connections), then close
    the client's connection (``close``, the default) or leave it to time out."""

    api: ApiKey
    n: int
    close: bool = True
    seen: int = 0
    dropped: int = 0
    limit: int | None = None
    """Drop at most this many (``None``: no limit)."""

    def __call__(self, frame: Frame) -> Action:
        if frame.header.api_key != self.api:
            return Action.FORWARD
        self.seen += 1
        if self.seen % self.n or (self.limit is not None and self.dropped >= self.limit):
            return Action.FORWARD
        self.dropped += 1
        return Action.DROP_AND_CLOSE if self.close else Action.DROP


class Proxy(AsyncClient):
    """Forwards ``127.0.0.1:<port>`` to ``host:port``; see the module documentation. Use as
    ``async with Proxy(...)`` or call :meth:`start` and :meth:`close`."""

    def __init__(self, host: str, port: int, *, policy: Policy = forward_all) -> None:
        self.upstream = (host, port)
        self.policy = policy
        self.connections = 0
        """Client connections accepted so far."""
        self.peak_in_flight: dict[int, int] = {}
        """Per API key: the most requests of one connection ever waiting for a response."""
        self._server: asyncio.Server | None = None
        self._pumps: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def port(self) -> int:
        assert self._server is not None, "the proxy is not started"
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self.cut()
        for task in list(self._pumps):
            task.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def cut(self) -> None:
        """Close every connection now (both sides); new ones are still accepted."""
        for writer in list(self._writers):
            writer.close()

    # --- one client connection --------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        writers = (writer, up_writer)
        self._writers.update(writers)
        in_flight: dict[int, int] = {}  # this connection's requests waiting, per API key
        tasks = [
            asyncio.ensure_future(self._requests(reader, up_writer, in_flight)),
            asyncio.ensure_future(self._responses(up_reader, writer, in_flight)),
        ]
        self._pumps.update(tasks)
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._pumps.difference_update(tasks)
            for w in writers:
                self._writers.discard(w)
                w.close()
                with contextlib.suppress(OSError):
                    await w.wait_closed()

    async def _requests(
        self, reader: asyncio.StreamReader, up: asyncio.StreamWriter, in_flight: dict[int, int]
    ) -> None:
        decoder = FrameDecoder()
        peak = self.peak_in_flight
        while chunk := await reader.read(CHUNK):
            up.write(chunk)
            decoder.feed(chunk)
            while (frame := decoder.next_frame()) is not None:
                api = frame.header.api_key
                in_flight[api] = count = in_flight.get(api, 0) + 1
                peak[api] = max(peak.get(api, 0), count)
            await up.drain()

    async def _responses(
        self, reader: asyncio.StreamReader, client: asyncio.StreamWriter, in_flight: dict[int, int]
    ) -> None:
        decoder = FrameDecoder()
        while chunk := await reader.read(CHUNK):
            decoder.feed(chunk)
            while (frame := decoder.next_frame()) is not None:
                api = frame.header.api_key
                in_flight[api] = in_flight.get(api, 0) - 1
                action = self.policy(frame)
                if action is Action.DROP_AND_CLOSE:
                    return  # the caller closes both sides
                if action is Action.FORWARD:
                    client.write(self._rewrite(frame))
            await client.drain()

    def _rewrite(self, frame: Frame) -> bytes:
        """The frame's bytes; a metadata response names the proxy instead of the broker."""
        header = frame.header
        if header.api_key == ApiKey.METADATA and not header.flags & FrameFlags.ERROR:
            response = decode_response(frame)
            assert isinstance(response, m.MetadataResponse)
            brokers = tuple(
                replace(b, host="127.0.0.1", port=self.port)
                if (b.host, b.port) == self.upstream
                else b
                for b in response.brokers
            )
            return b"".join(
                bytes(part) for part in encode_response(replace(response, brokers=brokers), header)
            )
        return encode_frame(
            api_key=header.api_key,
            api_version=header.api_version,
            flags=header.flags,
            correlation_id=header.correlation_id,
            meta=frame.meta,
            data=(frame.data,) if frame.data else (),
            version=header.version,
        )
