"""The pipelined connection against a scripted peer on loopback that speaks tidelog.wire.

The peer is not a broker: each test scripts the frames it answers, to pin down the
connection's own behaviour (correlation, deadlines, failure on close).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import pytest

from tidelog.client.connection import Connection
from tidelog.client.errors import (
    BrokerUnavailableError,
    ConnectionClosedError,
    RequestTimeoutError,
)
from tidelog.wire import FrameDecoder, FrameFlags, decode_request, encode_error, encode_response
from tidelog.wire import messages as m
from tidelog.wire.api import ApiKey, supported_versions
from tidelog.wire.errors import BadMagicError, ErrorCode, UnknownApiError, UnsupportedVersionError
from tidelog.wire.frame import Frame

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 10))


class Peer:
    """The server side of one accepted connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.decoder = FrameDecoder()

    async def frame(self) -> Frame:
        while (frame := self.decoder.next_frame()) is None:
            chunk = await self.reader.read(65536)
            assert chunk, "client closed"
            self.decoder.feed(chunk)
        return frame

    async def answer(self, frame: Frame, response: m.Response, data: bytes = b"") -> None:
        self.writer.writelines(encode_response(response, frame.header, data=[data] if data else []))
        await self.writer.drain()

    async def handshake(self, versions: tuple[m.ApiVersionRange, ...] | None = None) -> None:
        frame = await self.frame()
        assert frame.header.api_key == ApiKey.HANDSHAKE
        assert isinstance(decode_request(frame), m.HandshakeRequest)
        await self.answer(
            frame,
            m.HandshakeResponse(
                api_versions=supported_versions() if versions is None else versions,
                broker_id=7,
                cluster_id="test",
            ),
        )


@asynccontextmanager
async def connected(
    handshake: Callable[[Peer], Coroutine[Any, Any, None]] | None = None,
    **kwargs: Any,
) -> AsyncIterator[tuple[Connection, Peer]]:
    peers: asyncio.Queue[Peer] = asyncio.Queue()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await peers.put(Peer(reader, writer))

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    opening = asyncio.ensure_future(Connection.open("127.0.0.1", port, **kwargs))
    peer = await peers.get()
    await (handshake or Peer.handshake)(peer)
    conn = await opening
    try:
        yield conn, peer
    finally:
        await conn.close()
        peer.writer.close()
        server.close()
        await server.wait_closed()


def test_handshake_negotiates_versions() -> None:
    async def main() -> None:
        async with connected(client_id="me") as (conn, _):
            assert conn.broker_id == 7
            assert conn.cluster_id == "test"
            assert conn.api_versions[ApiKey.METADATA] == 0
            assert str(conn) == f"127.0.0.1:{conn.port}"

    run(main())


def test_an_api_the_broker_lacks_is_refused_locally() -> None:
    async def only_handshake(peer: Peer) -> None:
        await peer.handshake(versions=(m.ApiVersionRange(0, 0, 0),))

    async def main() -> None:
        async with connected(only_handshake) as (conn, _):
            with pytest.raises(UnsupportedVersionError, match="METADATA"):
                await conn.request(m.MetadataRequest())

    run(main())


def test_responses_in_any_order_reach_their_requests() -> None:
    async def main() -> None:
        async with connected() as (conn, peer):
            first = conn.send(m.MetadataRequest(topics=("a",)))
            second = conn.send(m.MetadataRequest(topics=("b",)))
            assert conn.in_flight == 2
            f1, f2 = await peer.frame(), await peer.frame()
            assert f1.header.correlation_id != f2.header.correlation_id
            await peer.answer(f2, m.MetadataResponse(cluster_id="second"))
            await peer.answer(f1, m.MetadataResponse(cluster_id="first"))
            r1, _ = await first
            r2, _ = await second
            assert isinstance(r1, m.MetadataResponse)
            assert r1.cluster_id == "first"
            assert isinstance(r2, m.MetadataResponse)
            assert r2.cluster_id == "second"
            assert conn.in_flight == 0

    run(main())


def test_requests_written_together_are_coalesced_into_one_write() -> None:
    async def main() -> None:
        async with connected() as (conn, peer):
            futures = [conn.send(m.MetadataRequest(topics=(str(i),))) for i in range(50)]
            frames = [await peer.frame() for _ in futures]
            topics = [getattr(decode_request(f), "topics", None) for f in frames]
            assert topics == [(str(i),) for i in range(50)]
            for f in frames:
                await peer.answer(f, m.MetadataResponse())
            await asyncio.gather(*futures)

    run(main())


def test_data_sections_travel_both_ways() -> None:
    async def main() -> None:
        async with connected() as (conn, peer):
            request = m.ProduceRequest((m.ProducePartition("t", 0, 5),))
            pending = conn.send(request, data=[b"ab", b"cde"])
            frame = await peer.frame()
            assert bytes(frame.data) == b"abcde"
            fetch = conn.send(m.FetchRequest(()))
            fetch_frame = await peer.frame()
            result = m.FetchResponse((m.FetchPartitionResult("t", 0, size=3),))
            await peer.answer(fetch_frame, result, b"xyz")
            response, data = await fetch
            assert isinstance(response, m.FetchResponse)
            assert bytes(data) == b"xyz"
            await peer.answer(frame, m.ProduceResponse())
            await pending

    run(main())


def test_error_responses_raise_the_registry_class() -> None:
    async def main() -> None:
        async with connected() as (conn, peer):
            pending = conn.send(m.MetadataRequest())
            frame = await peer.frame()
            peer.writer.writelines(encode_error(frame.header, ErrorCode.UNKNOWN_API, "nope"))
            with pytest.raises(UnknownApiError, match="nope"):
                await pending
            assert not conn.closed  # an error response leaves the stream in sync

    run(main())


def test_each_request_has_its_own_deadline() -> None:
    async def main() -> None:
        async with connected() as (conn, peer):
            slow = conn.send(m.MetadataRequest(topics=("slow",)), timeout=0.05)
            patient = conn.send(m.MetadataRequest(topics=("patient",)), timeout=30)
            f_slow, f_patient = await peer.frame(), await peer.frame()
            with pytest.raises(RequestTimeoutError, match="request_timeout"):
                await slow
            await peer.answer(f_slow, m.MetadataResponse(cluster_id="late"))  # dropped
            await peer.answer(f_patient, m.MetadataResponse(cluster_id="on time"))
            response, _ = await patient
            assert isinstance(response, m.MetadataResponse)
            assert response.cluster_id == "on time"
            assert not conn.closed

    run(main())


def test_acks_none_produce_resolves_when_written() -> None:
    async def main() -> None:
        async with connected() as (conn, peer):
            request = m.ProduceRequest((m.ProducePartition("t", 0, 3),), acks=m.Acks.NONE)
            await conn.send_no_response(request, data=[b"abc"])
            frame = await peer.frame()
            assert frame.header.flags & FrameFlags.NO_RESPONSE
            assert conn.in_flight == 0

    run(main())


def test_peer_closing_fails_every_pending_request_with_the_cause() -> None:
    async def main() -> None:
        async with connected() as (conn, peer):
            pending = [conn.send(m.MetadataRequest()) for _ in range(3)]
            await peer.frame()
            peer.writer.close()
            for future in pending:
                with pytest.raises(ConnectionClosedError) as info:
                    await future
                assert isinstance(info.value.__cause__, ConnectionResetError)
                assert info.value.retriable
            await conn.wait_closed()
            with pytest.raises(ConnectionClosedError):
                conn.send(m.MetadataRequest())

    run(main())


def test_garbage_closes_the_connection_with_a_framing_error() -> None:
    async def main() -> None:
        async with connected() as (conn, peer):
            pending = conn.send(m.MetadataRequest())
            peer.writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            with pytest.raises(ConnectionClosedError) as info:
                await pending
            assert isinstance(info.value.__cause__, BadMagicError)
            assert conn.closed

    run(main())


def test_close_fails_pending_requests_and_runs_callbacks() -> None:
    async def main() -> None:
        async with connected() as (conn, _):
            closed: list[Connection] = []
            conn.add_close_callback(closed.append)
            pending = conn.send(m.MetadataRequest())
            await conn.close()
            with pytest.raises(ConnectionClosedError):
                await pending
            assert closed == [conn]

    run(main())


def test_unreachable_broker_raises_broker_unavailable() -> None:
    async def main() -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]  # bound, not listening: connections are refused
            with pytest.raises(BrokerUnavailableError, match=f"127.0.0.1:{port}") as info:
                await Connection.open("127.0.0.1", port, connect_timeout=5)
        assert isinstance(info.value.__cause__, OSError)

    run(main())


def test_a_response_nobody_asked_for_closes_the_connection() -> None:
    async def main() -> None:
        async with connected() as (conn, peer):
            pending = conn.send(m.MetadataRequest())
            frame = await peer.frame()
            await peer.answer(frame, m.MetadataResponse())
            await pending
            await peer.answer(frame, m.MetadataResponse())  # the same correlation id again
            await conn.wait_closed()
            with pytest.raises(ConnectionClosedError, match="no request in flight"):
                conn.send(m.MetadataRequest())

    run(main())


def test_a_peer_that_accepts_but_never_handshakes_is_unavailable() -> None:
    async def main() -> None:
        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read()  # accepts, reads, never answers
            writer.close()

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            with pytest.raises(BrokerUnavailableError, match="did not complete the handshake"):
                await Connection.open("127.0.0.1", port, connect_timeout=0.2)

    asyncio.run(main())
