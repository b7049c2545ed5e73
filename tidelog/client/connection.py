"""One pipelined connection to one broker.

Shape (after aiokafka's ``conn.py`` and nats.py's flusher):

* requests get a correlation id and a future in ``_pending``; they are written without waiting
  for earlier responses, and responses may come back in any order;
* one reader task turns bytes into frames (:class:`~tidelog.wire.FrameDecoder`) and completes
  the future with the matching correlation id;
* one writer task (:class:`_Flusher`) sends everything queued since it last ran in a single
  ``writelines`` and then waits for the socket to drain, so many small requests issued in one
  event-loop iteration cost one system call;
* every request has its own deadline, a loop timer that fails it with
  :class:`~tidelog.client.errors.RequestTimeoutError`; a late response is dropped, while a
  response to a correlation id never sent (or already answered) is a protocol violation that
  closes the connection (docs/PROTOCOL.md §2);
* on close, by the caller or because the stream failed, every pending future fails with
  :class:`~tidelog.client.errors.ConnectionClosedError` chained to the cause.

A connection never reconnects: :class:`~tidelog.client.cluster.Cluster` replaces closed ones.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Final, TypeVar

from tidelog import __version__
from tidelog.wire import messages as m
from tidelog.wire.api import (
    HANDSHAKE_VERSION,
    ApiKey,
    api_of,
    decode_response,
    encode_request,
    negotiate_versions,
    supported_versions,
)
from tidelog.wire.errors import MalformedMessageError, TidelogError, UnsupportedVersionError
from tidelog.wire.frame import DEFAULT_MAX_FRAME_SIZE, Frame, FrameDecoder
from tidelog.wire.records import Buffer

from .errors import (
    BrokerUnavailableError,
    ConnectionClosedError,
    RequestTimeoutError,
    broker_error,
)

R = TypeVar("R", bound=m.Response)
Reply = tuple[m.Response, bytearray]

DEFAULT_REQUEST_TIMEOUT: Final = 30.0
DEFAULT_CONNECT_TIMEOUT: Final = 10.0
READ_SIZE: Final = 1024 * 1024
"""Bytes asked of the socket per read."""
MAX_EXPIRED: Final = 4096
"""Timed-out correlation ids remembered so their late responses are recognised."""
_U32: Final = 0xFFFFFFFF


class _Flusher:
    """The connection's single writer: queued buffers go out together, then it drains."""

    __slots__ = ("_buffers", "_busy", "_task", "_transport", "_waiters", "_wakeup", "_writer")

    def __init__(self, writer: asyncio.StreamWriter, on_error: Callable[[BaseException], None]):
        self._writer = writer
        self._transport = writer.transport
        self._buffers: list[Buffer] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._wakeup = asyncio.Event()
        self._busy = False  # the task holds buffers or waits for the socket to drain
        self._task = asyncio.get_running_loop().create_task(self._run(on_error))

    def write(self, buffers: Sequence[Buffer], waiter: asyncio.Future[None] | None = None) -> None:
        """Queue ``buffers``; ``waiter`` resolves once they are handed to a drained socket."""
        if waiter is None and not self._busy and not self._transport.get_write_buffer_size():
            # Nothing queued and the socket keeps up: write now rather than a loop turn later
            # (the request's latency). A socket that falls behind leaves bytes in the
            # transport, and the next write goes through the task, which drains.
            self._writer.writelines(buffers)
            return
        self._busy = True
        self._buffers.extend(buffers)
        if waiter is not None:
            self._waiters.append(waiter)
        self._wakeup.set()

    async def _run(self, on_error: Callable[[BaseException], None]) -> None:
        writer = self._writer
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup.clear()
                buffers, self._buffers = self._buffers, []
                waiters, self._waiters = self._waiters, []
                writer.writelines(buffers)
                await writer.drain()
                for w in waiters:
                    if not w.done():
                        w.set_result(None)
                self._busy = bool(self._buffers)
        except Exception as exc:
            on_error(exc)

    def fail(self, exc_factory: Callable[[], BaseException]) -> None:
        for w in self._waiters:
            if not w.done():
                w.set_exception(exc_factory())
        self._waiters.clear()
        self._buffers.clear()

    def cancel(self) -> asyncio.Task[None]:
        if asyncio.current_task() is not self._task:
            self._task.cancel()
        return self._task


class Connection:
    """A handshaken, pipelined connection. Create with :meth:`open`."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        host: str,
        port: int,
        client_id: str = "",
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    ) -> None:
        self.host = host
        self.port = port
        self.client_id = client_id
        self.request_timeout = request_timeout
        self.api_versions: dict[ApiKey, int] = {ApiKey.HANDSHAKE: HANDSHAKE_VERSION}
        self.broker_id: int | None = None
        self.cluster_id = ""
        self.broker_max_frame_size = 0
        self._loop = asyncio.get_running_loop()
        self._reader = reader
        self._writer = writer
        self._decoder = FrameDecoder(max_frame_size)
        self._pending: dict[int, tuple[asyncio.Future[Reply], asyncio.TimerHandle | None]] = {}
        self._expired: dict[int, None] = {}  # timed-out correlation ids, oldest first
        self._next_id = 0
        self._close_cause: BaseException | None = None
        self._closed = asyncio.Event()
        self._close_callbacks: list[Callable[[Connection], None]] = []
        self._flusher = _Flusher(writer, self._abort)
        self._reader_task = self._loop.create_task(self._read_loop())

    # --- opening -----------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        *,
        client_id: str = "",
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    ) -> Connection:
        """Connect and handshake. Raises :class:`BrokerUnavailableError` (chained to the OS
        error) when the broker cannot be reached in ``connect_timeout`` seconds, and the
        broker's error when it refuses the handshake."""
        try:
            async with asyncio.timeout(connect_timeout):
                reader, writer = await asyncio.open_connection(host, port, limit=READ_SIZE)
        except (OSError, TimeoutError) as exc:
            raise BrokerUnavailableError(
                f"cannot connect to broker {host}:{port}: {exc or 'timed out'} (is it running, "
                "and is this address reachable from here?)"
            ) from exc
        conn = cls(
            reader,
            writer,
            host=host,
            port=port,
            client_id=client_id,
            request_timeout=request_timeout,
            max_frame_size=max_frame_size,
        )
        try:
            await conn._handshake(connect_timeout)
        except (ConnectionClosedError, RequestTimeoutError) as exc:
            # Accepted the connection but never answered the handshake: as unreachable as a
            # refused connection, so the cluster backs off and tries its other brokers.
            await conn.close()
            raise BrokerUnavailableError(
                f"broker {host}:{port} accepted the connection but did not complete the "
                f"handshake: {exc}"
            ) from exc
        except BaseException:
            await conn.close()
            raise
        return conn

    async def _handshake(self, deadline: float) -> None:
        request = m.HandshakeRequest(
            client_id=self.client_id,
            client_version=__version__,
            api_versions=supported_versions(),
        )
        response = await self.call(request, m.HandshakeResponse, timeout=deadline)
        if response.error_code:
            raise broker_error(
                response.error_code, response.error_message, where=f"handshake with {self}"
            )
        self.api_versions = negotiate_versions(response.api_versions)
        self.api_versions[ApiKey.HANDSHAKE] = HANDSHAKE_VERSION
        self.broker_id = response.broker_id
        self.cluster_id = response.cluster_id
        self.broker_max_frame_size = response.max_frame_size

    # --- requests ----------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    @property
    def in_flight(self) -> int:
        """Requests written or queued whose response has not arrived."""
        return len(self._pending)

    def _frame(self, message: m.Request, data: Sequence[Buffer]) -> tuple[int, list[Buffer]]:
        if self._closed.is_set():
            cause = self._close_cause
            reason = f": {cause}" if cause is not None else ""
            raise ConnectionClosedError(f"connection to {self} is closed{reason}") from cause
        key = api_of(message).key
        version = self.api_versions.get(key)
        if version is None:
            raise UnsupportedVersionError(
                f"broker {self} does not support {key.name} at any version this client speaks "
                "(upgrade the client or the broker)"
            )
        self._next_id = correlation_id = (self._next_id + 1) & _U32
        return correlation_id, encode_request(
            message, correlation_id, api_version=version, data=data
        )

    def send(
        self,
        message: m.Request,
        *,
        data: Sequence[Buffer] = (),
        timeout: float | None = None,
    ) -> asyncio.Future[Reply]:
        """Write a request now; the returned future resolves to ``(response, data_section)``.

        Fails with the broker's error class for an error response, :class:`RequestTimeoutError`
        after ``timeout`` seconds (default ``request_timeout``) and
        :class:`ConnectionClosedError` if the connection closes first.
        """
        correlation_id, frame = self._frame(message, data)
        future: asyncio.Future[Reply] = self._loop.create_future()
        delay = self.request_timeout if timeout is None else timeout
        timer = self._loop.call_later(delay, self._expire, correlation_id, delay)
        self._pending[correlation_id] = (future, timer)
        self._flusher.write(frame)
        return future

    async def request(
        self,
        message: m.Request,
        *,
        data: Sequence[Buffer] = (),
        timeout: float | None = None,  # noqa: ASYNC109 (a per-request deadline)
    ) -> Reply:
        """Send a request and wait for ``(response, data_section)``; see :meth:`send`."""
        return await self.send(message, data=data, timeout=timeout)

    async def call(
        self,
        message: m.Request,
        expect: type[R],
        *,
        timeout: float | None = None,  # noqa: ASYNC109 (a per-request deadline)
    ) -> R:
        """Send a request with no data section and return its response, checked to be an
        ``expect``."""
        response, _ = await self.send(message, timeout=timeout)
        if not isinstance(response, expect):
            raise TypeError(f"expected {expect.__name__}, got {type(response).__name__}")
        return response

    def send_no_response(
        self, message: m.Request, *, data: Sequence[Buffer] = ()
    ) -> asyncio.Future[None]:
        """Write a request the broker does not answer (produce with ``acks=NONE``); the future
        resolves once its bytes are handed to the socket and the socket has drained."""
        _, frame = self._frame(message, data)
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._flusher.write(frame, waiter)
        return waiter

    def _expire(self, correlation_id: int, delay: float) -> None:
        entry = self._pending.pop(correlation_id, None)
        if entry is None:
            return
        # Remember it (boundedly) so that its late response is dropped, not taken for a
        # protocol violation.
        self._expired[correlation_id] = None
        if len(self._expired) > MAX_EXPIRED:
            del self._expired[next(iter(self._expired))]
        if not entry[0].done():
            entry[0].set_exception(
                RequestTimeoutError(
                    f"no response from broker {self} within {delay:g}s (raise request_timeout "
                    "if the broker is busy or the network slow)"
                )
            )

    # --- reading -----------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        reader = self._reader
        decoder = self._decoder
        try:
            while True:
                chunk = await reader.read(READ_SIZE)
                if not chunk:
                    decoder.close()  # raises if the stream ended inside a frame
                    self._abort(ConnectionResetError(f"broker {self} closed the connection"))
                    return
                decoder.feed(chunk)
                while (frame := decoder.next_frame()) is not None:
                    self._dispatch(frame)
        except Exception as exc:
            self._abort(exc)

    def _dispatch(self, frame: Frame) -> None:
        correlation_id = frame.header.correlation_id
        entry = self._pending.pop(correlation_id, None)
        if entry is None:
            if correlation_id in self._expired:
                del self._expired[correlation_id]
                return  # its deadline passed; the response is late
            raise MalformedMessageError(
                f"broker {self} answered correlation id {correlation_id}, which has no request "
                "in flight"
            )
        future, timer = entry
        if timer is not None:
            timer.cancel()
        if future.done():
            return
        try:
            response = decode_response(frame)
        except TidelogError as exc:
            future.set_exception(exc)
            return
        future.set_result((response, frame.data))

    # --- closing -----------------------------------------------------------------------------

    def add_close_callback(self, callback: Callable[[Connection], None]) -> None:
        """Call ``callback(self)`` once, when the connection closes for any reason."""
        if self._closed.is_set():
            self._loop.call_soon(callback, self)
        else:
            self._close_callbacks.append(callback)

    def _abort(self, cause: BaseException | None) -> None:
        """Close now; every pending request fails with ConnectionClosedError from ``cause``."""
        if self._closed.is_set():
            return
        self._close_cause = cause
        self._closed.set()
        reason = f": {cause}" if cause is not None else ""

        def closed_error() -> ConnectionClosedError:
            exc = ConnectionClosedError(f"connection to broker {self} closed{reason}")
            exc.__cause__ = cause
            return exc

        pending, self._pending = self._pending, {}
        for future, timer in pending.values():
            if timer is not None:
                timer.cancel()
            if not future.done():
                future.set_exception(closed_error())
        self._flusher.fail(closed_error)
        self._flusher.cancel()
        if asyncio.current_task() is not self._reader_task:
            self._reader_task.cancel()
        self._writer.close()
        for callback in self._close_callbacks:
            callback(self)
        self._close_callbacks.clear()

    async def close(self) -> None:
        """Close the connection; pending requests fail with :class:`ConnectionClosedError`."""
        self._abort(None)
        tasks = {self._flusher.cancel(), self._reader_task}
        tasks.discard(asyncio.current_task())
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()

    async def wait_closed(self) -> None:
        """Wait until the connection has closed (for any reason)."""
        await self._closed.wait()

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{len(self._pending)} in flight"
        return f"<Connection {self} broker_id={self.broker_id} {state}>"
