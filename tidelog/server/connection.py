"""One client connection: transport + codec + flow control, around a core that knows no sockets.

The read loop feeds bytes to a :class:`~tidelog.wire.session.WireSession`, which answers the
handshake and refuses what it cannot decode, and starts one task per request it hands out as
served, so pipelined requests (a long-polling fetch next to a produce) run side by side; each
response is written when it is ready, tagged with its request's correlation id. Reading pauses
while the connection holds ``max_inflight_requests`` requests or ``max_connection_buffer``
bytes of requests and unsent responses: a slow client slows itself, never the broker.

A framing error (bad magic, checksum, oversized or truncated frame) closes the connection: the
stream cannot be trusted any more. An undecodable body, an unknown API or a missing handshake
gets an error response and the connection goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, cast

from tidelog import __version__
from tidelog.wire import messages as m
from tidelog.wire.errors import BrokerError, ErrorCode, FramingError, MalformedMessageError
from tidelog.wire.frame import FrameHeader
from tidelog.wire.records import Buffer
from tidelog.wire.session import (
    BrokerIdentity,
    HandshakeAnswered,
    RequestReceived,
    RequestRefused,
    Role,
    ServerEvent,
    ServerSession,
    State,
    WireSession,
)

from .config import BrokerConfig
from .core import RequestCore, Session

log = logging.getLogger("tidelog.server.connection")

READ_CHUNK: Final = 256 * 1024


@dataclass(slots=True)
class ConnectionStats:
    """Counters a test or an operator can read; ``peak_buffered`` proves the memory bound."""

    buffered: int = 0
    peak_buffered: int = 0
    inflight: int = 0
    requests: int = 0


class Connection:
    """Serves one client until it disconnects, misbehaves, idles out or the broker stops."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        core: RequestCore,
        config: BrokerConfig,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._core = core
        self._config = config
        peer = writer.get_extra_info("peername")
        self.session = Session(peer[0], peer[1]) if peer else Session("?", 0)
        self._peer = self.session.peer  # for log lines
        identity = BrokerIdentity(
            config.broker_id, config.cluster_id, __version__, config.max_frame_size
        )
        self._wire: ServerSession = WireSession(Role.SERVER, identity=identity)
        self.stats = ConnectionStats()
        self._tasks: set[asyncio.Task[None]] = set()
        self._forget = self._tasks.discard  # bound once: a done callback per request
        self._room = asyncio.Event()
        self._room.set()
        self._closing = False
        self._task: asyncio.Task[None] | None = None  # the task in run()
        self._in_read = False
        self._read_interrupted = False
        sock = writer.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    @property
    def unsent_bytes(self) -> int:
        """Bytes written to the transport but not yet sent to the client."""
        return self._writer.transport.get_write_buffer_size()

    async def run(self) -> None:
        self._task = asyncio.current_task()
        log.info("client connected from %s", self._peer)
        wire = self._wire
        reason = "closed by client"
        try:
            while not self._closing:
                # Admission is per frame: a chunk may hold many pipelined requests, and each
                # waits for room before it starts.
                event = wire.next_event()
                if event is not None:
                    if self._full() and not await self._wait_for_room():
                        break
                    self._dispatch(event)
                    continue
                timeout = (
                    self._config.idle_timeout_s
                    if wire.state is State.OPEN
                    else self._config.handshake_timeout_s
                )
                try:
                    chunk = await self._read(timeout)
                except TimeoutError:
                    reason = f"idle for {timeout:g}s"
                    break
                if chunk is None:
                    reason = "broker shutting down"
                    break
                if not chunk:
                    if not self._closing:
                        wire.receive_eof()  # raises if the stream ended inside a frame
                    break
                wire.receive_data(chunk)
        except FramingError as exc:
            reason = f"protocol error: {exc}"
            log.warning("closing connection from %s: %s", self._peer, exc)
        except (ConnectionError, OSError) as exc:
            reason = f"connection error: {exc}"
        finally:
            await self._finish()
            log.info("client %s disconnected (%s)", self._peer, reason)

    async def _read(self, timeout: float) -> bytes | None:  # noqa: ASYNC109
        """The next chunk from the client (``b""`` at its EOF), or ``None`` once the broker
        stops reading. Raises ``TimeoutError`` after ``timeout`` seconds of silence.

        A plain awaited read, not a task raced against a stop signal: that cost a task, a
        wait() and an extra loop turn per chunk. :meth:`stop_reading` cancels this task
        instead, only while it sits in the read (unread bytes stay in the StreamReader)."""
        if self._closing:
            return None
        self._in_read = True
        try:
            async with asyncio.timeout(timeout):
                return await self._reader.read(READ_CHUNK)
        except asyncio.CancelledError:
            task = self._task
            # Ours alone (cancelling() == 1): swallow it. Anyone else's cancel goes on up.
            if self._read_interrupted and task is not None and task.cancelling() == 1:
                task.uncancel()
                return None
            raise
        finally:
            self._in_read = False
            self._read_interrupted = False

    def stop_reading(self) -> None:
        """Graceful shutdown: take no new requests; in-flight ones are answered and the
        socket stays open until they are written."""
        self._closing = True
        self._room.set()
        transport = cast(asyncio.Transport, self._writer.transport)
        if not transport.is_closing():
            transport.pause_reading()
        if self._in_read and not self._read_interrupted and self._task is not None:
            self._read_interrupted = True
            self._task.cancel()

    async def wait_idle(self) -> None:
        """Wait until every in-flight request of this connection has been answered."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    def abort(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._writer.transport.abort()

    async def _finish(self) -> None:
        self._closing = True
        try:
            await self.wait_idle()
        finally:
            self._writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await self._writer.wait_closed()

    def _full(self) -> bool:
        """Whether the connection is at its limit of requests or buffered bytes."""
        stats = self.stats
        return (
            stats.inflight >= self._config.max_inflight_requests
            or stats.buffered >= self._config.max_connection_buffer
        )

    async def _wait_for_room(self) -> bool:
        """Wait while the connection is over its limits; False once it is closing. Called only
        when :meth:`_full`: a coroutine per frame would cost more than the check."""
        while self._full() and not self._closing:
            self._room.clear()
            await self._room.wait()
        return not self._closing

    def _dispatch(self, event: ServerEvent) -> None:
        self.stats.requests += 1
        if type(event) is not RequestReceived:  # a type test: a third of a match's cost
            self._answered(event)
            return
        header, request, data = event
        size = header.meta_length + header.data_length + self._core.reserve(request)
        self._account(size, +1)
        task = asyncio.create_task(self._serve(header, request, data, size))
        self._tasks.add(task)
        task.add_done_callback(self._forget)

    def _answered(self, event: ServerEvent) -> None:
        """A frame the wire session answered itself: a handshake, or a refused request."""
        match event:
            case HandshakeAnswered(request=request, reply=reply):
                self.session.client_id = self._wire.client_id
                if event.accepted:
                    log.debug("handshake from %s (%s)", self._peer, request.client_id or "no id")
                self._reply(reply)
            case RequestRefused(code=code, message=message, reply=reply):
                if code == ErrorCode.INVALID_REQUEST:
                    log.info("bad request from %s: %s", self._peer, message)
                elif not reply:
                    log.info("dropping a no-response request from %s: %s", self._peer, message)
                if reply:
                    self._reply(reply)

    async def _serve(
        self, header: FrameHeader, request: m.Request, data: bytearray, size: int
    ) -> None:
        response_size = 0
        try:
            try:
                reply = await self._core.handle(request, data, self.session)
            except BrokerError as exc:
                buffers = self._wire.send_error(header, exc.code, exc.message)
            except MalformedMessageError as exc:
                buffers = self._wire.send_error(header, ErrorCode.INVALID_REQUEST, str(exc))
            except Exception:
                log.exception("error handling %s from %s", type(request).__name__, self._peer)
                buffers = self._wire.send_error(
                    header, ErrorCode.UNKNOWN_SERVER_ERROR, "unexpected broker error (see logs)"
                )
            else:
                if reply is None:
                    return
                response, chunks = reply
                buffers = self._wire.send_response(header, response, data=chunks)
            if not buffers:
                return  # a NO_RESPONSE request
            response_size = sum(len(b) for b in buffers)
            self._account(response_size, 0)
            self._send(buffers)
            await self._writer.drain()
        except (ConnectionError, OSError):
            pass  # the read loop notices and closes
        finally:
            self._account(-size - response_size, -1)

    def _reply(self, buffers: Sequence[Buffer]) -> None:
        """Write a reply made without a handler, counted in the connection's buffered bytes
        until it drains: a client that sends junk and never reads is bounded too."""
        size = sum(len(b) for b in buffers)
        self._account(size, +1)
        self._send(buffers)
        task = asyncio.create_task(self._drain_then_release(size))
        self._tasks.add(task)
        task.add_done_callback(self._forget)

    async def _drain_then_release(self, size: int) -> None:
        try:
            await self._writer.drain()
        except (ConnectionError, OSError):
            pass  # the read loop notices and closes
        finally:
            self._account(-size, -1)

    def _send(self, buffers: Sequence[Buffer]) -> None:
        if not self._writer.is_closing():
            self._writer.writelines(buffers)

    def _account(self, nbytes: int, requests: int) -> None:
        stats = self.stats
        stats.buffered += nbytes
        stats.inflight += requests
        stats.peak_buffered = max(stats.peak_buffered, stats.buffered)
        if nbytes < 0 or requests < 0:
            self._room.set()
