"""One pipelined connection to one broker.

Shape (after aiokafka's ``conn.py`` and nats.py's flusher):

* a :class:`~tidelog.wire.session.WireSession` does the protocol: the handshake, the API
  versions, correlation ids. Each request is sent with a future as its token; requests are
  written without waiting for earlier responses, and responses may come back in any order;
* one reader task feeds the session bytes and completes the future of each response event;
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
from typing import Final, NoReturn, TypeVar

from tidelog import __version__
from tidelog.wire import messages as m
from tidelog.wire.api import ApiKey
from tidelog.wire.errors import UnsupportedVersionError
from tidelog.wire.frame import DEFAULT_MAX_FRAME_SIZE
from tidelog.wire.records import Buffer
from tidelog.wire.session import ResponseReceived, Role, WireSession

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
        self._loop = asyncio.get_running_loop()
        self._reader = reader
        self._writer = writer
        # Each request's future is its token in the session; its deadline timer sits here.
        self._wire: WireSession[asyncio.Future[Reply]] = WireSession(
            Role.CLIENT,
            client_id=client_id,
            client_version=__version__,
            max_frame_size=max_frame_size,
        )
        self._timers: dict[asyncio.Future[Reply], asyncio.TimerHandle] = {}
        self._expire_later = self._expire  # bound once: a deadline per request
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
        request = self._wire.handshake_request()
        response = await self.call(request, m.HandshakeResponse, timeout=deadline)
        if response.error_code:
            raise broker_error(
                response.error_code, response.error_message, where=f"handshake with {self}"
            )

    @property
    def api_versions(self) -> dict[ApiKey, int]:
        """Per API, the version this client and the broker both speak."""
        return self._wire.api_versions

    @property
    def broker_id(self) -> int | None:
        """The broker's node id, once the handshake has succeeded."""
        broker = self._wire.broker
        return None if broker is None else broker.broker_id

    @property
    def cluster_id(self) -> str:
        broker = self._wire.broker
        return "" if broker is None else broker.cluster_id

    @property
    def broker_max_frame_size(self) -> int:
        """The broker's receive limit from the handshake (0: not stated)."""
        broker = self._wire.broker
        return 0 if broker is None else broker.max_frame_size

    # --- requests ----------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    @property
    def in_flight(self) -> int:
        """Requests written or queued whose response has not arrived."""
        return self._wire.in_flight

    def _raise_closed(self) -> NoReturn:
        cause = self._close_cause
        reason = f": {cause}" if cause is not None else ""
        raise ConnectionClosedError(f"connection to {self} is closed{reason}") from cause

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
        if self._closed.is_set():
            self._raise_closed()
        future: asyncio.Future[Reply] = self._loop.create_future()
        try:
            correlation_id, frame = self._wire.send_request(message, future, data=data)
        except UnsupportedVersionError as exc:
            raise UnsupportedVersionError(f"broker {self}: {exc.message}") from None
        delay = self.request_timeout if timeout is None else timeout
        self._timers[future] = self._loop.call_later(
            delay, self._expire_later, correlation_id, delay
        )
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
        if self._closed.is_set():
            self._raise_closed()
        try:
            frame = self._wire.send_no_response(message, data=data)
        except UnsupportedVersionError as exc:
            raise UnsupportedVersionError(f"broker {self}: {exc.message}") from None
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._flusher.write(frame, waiter)
        return waiter

    def _expire(self, correlation_id: int, delay: float) -> None:
        future = self._wire.expire(correlation_id)  # its late response will be dropped
        if future is None:
            return
        del self._timers[future]
        if not future.done():
            future.set_exception(
                RequestTimeoutError(
                    f"no response from broker {self} within {delay:g}s (raise request_timeout "
                    "if the broker is busy or the network slow)"
                )
            )

    # --- reading -----------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        reader = self._reader
        wire = self._wire
        try:
            while True:
                chunk = await reader.read(READ_SIZE)
                if not chunk:
                    wire.receive_eof()  # raises if the stream ended inside a frame
                    self._abort(ConnectionResetError(f"broker {self} closed the connection"))
                    return
                wire.receive_data(chunk)
                while (event := wire.next_event()) is not None:
                    future = event.token
                    self._timers.pop(future).cancel()
                    if future.done():
                        continue
                    if isinstance(event, ResponseReceived):
                        future.set_result(event[1:])  # (response, data)
                    else:
                        future.set_exception(event.error)
        except Exception as exc:
            self._abort(exc)

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

        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for future in self._wire.close():
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
        state = "closed" if self.closed else f"{self.in_flight} in flight"
        return f"<Connection {self} broker_id={self.broker_id} {state}>"
