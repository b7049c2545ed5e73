"""One client connection: transport + codec + flow control, around a core that knows no sockets.

Bytes go to a :class:`~tidelog.wire.session.WireSession`, which answers the handshake and
refuses what it cannot decode. A request the core can serve at once (a produce at acks 0 or 1,
a fetch with data: ``RequestCore.handle_now``) is served where its last byte is received, in
the protocol's callback, and answered before the next frame is decoded: no task, no turn of
the event loop, which is most of what a small request costs. Any other request gets a task of
its own, so pipelined requests (a long-polling fetch next to a produce) run side by side; a
request arriving while an earlier one's task has not started gets a task too, so requests
always start in arrival order. Each response is written when it is ready, tagged with its
request's correlation id.

A read loop (one task per connection) handles everything but that fast path: the handshake, a
frame that arrives in pieces, and every wait. The callback serves inline only while the loop
sits waiting for bytes with nothing pending; otherwise it queues the bytes for the loop (and
stops reading the socket above :data:`MAX_UNREAD` of them). Reading pauses while the
connection holds ``max_inflight_requests`` requests or ``max_connection_buffer`` bytes of
requests and unsent responses: a slow client slows itself, never the broker.

Memory is bounded per connection and broker-wide: every connection also stops reading while
the broker's :class:`~tidelog.server.budget.RequestBudget` of request bytes is spent, and takes
from it *before* it reads more of a large frame (the header gives the size). Time is bounded
too: the handshake must complete by a deadline from accept, and a frame once begun must
complete within ``idle_timeout_s`` of its first byte, however slowly its bytes trickle in.

When the client goes away (its stream ends, or the connection resets) its fetches in flight are
cancelled, none is started, and no response is built any more; after a reset nothing more is
read. Other requests in flight (a produce, a commit) finish: their effects stand.

A framing error (bad magic, checksum, oversized or truncated frame) closes the connection: the
stream cannot be trusted any more. An undecodable body, an unknown API or a missing handshake
gets an error response and the connection goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

from tidelog import __version__
from tidelog.wire import messages as m
from tidelog.wire.errors import BrokerError, ErrorCode, FramingError, MalformedMessageError
from tidelog.wire.frame import FrameHeader
from tidelog.wire.layouts import FRAME_HEADER_SIZE
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

from .budget import RequestBudget
from .config import BrokerConfig
from .core import Outcome, Reply, RequestCore, Session, finish, served
from .metrics import BrokerMetrics
from .protocol import MAX_UNREAD, ClientProtocol

log = logging.getLogger("tidelog.server.connection")

READ_CHUNK: Final = 256 * 1024
_AGAIN: Final = memoryview(b"")
"""What :meth:`Connection._read` returns when bytes were taken in its callback and the read
loop has to look at what they left (a partial frame, a full connection)."""
_FETCH: Final = m.FetchRequest
"""The request cancelled when its client goes away: a fetch changes nothing, its work (a long
poll, reading up to its ``max_bytes``) exists only for its response."""
_OPEN: Final = State.OPEN
_INTERRUPTED: Final = "interrupted"
_TIMED_OUT: Final = "timed out"
TIMER_SLACK_S: Final = 0.001
"""A read deadline this close is due: loop timers may fire up to a clock tick early."""


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
        budget: RequestBudget | None = None,
        metrics: BrokerMetrics | None = None,
    ) -> None:
        """``budget`` is the broker's, shared by its connections (a connection of its own if
        not given); ``metrics``, when given, counts each served request."""
        self._reader = reader
        self._writer = writer
        self._core = core
        self._config = config
        self._budget = RequestBudget(config.max_queued_request_bytes) if budget is None else budget
        self._taken = 0  # budget bytes taken for the frame being received
        self._metrics = metrics
        self._now = asyncio.get_running_loop().time
        peer = writer.get_extra_info("peername")
        self.session = Session(peer[0], peer[1]) if peer else Session("?", 0)
        self._peer = self.session.peer  # for log lines
        identity = BrokerIdentity(
            config.broker_id, config.cluster_id, __version__, config.max_frame_size
        )
        self._wire: ServerSession = WireSession(Role.SERVER, identity=identity)
        self.stats = ConnectionStats()
        # Each request's task, and whether it is cancelled when the client goes away.
        self._tasks: dict[asyncio.Task[None], bool] = {}
        # The tasks not started yet, with what to undo if one is cancelled before it starts:
        # its outcome (closed unawaited), request bytes (budget) and accounted size.
        self._unstarted: dict[asyncio.Task[None], tuple[Outcome, int, int]] = {}
        self._room = asyncio.Event()
        self._room.set()
        self._closing = False
        self._gone = False  # the client has gone: no response is built any more
        self._stop_reason = ""
        self._task: asyncio.Task[None] | None = None  # the task in run()
        self._waiting = False  # run() sits in a read or a budget wait
        self._interrupted = False
        self._loop = asyncio.get_running_loop()
        self._reading = False  # run() sits in a read
        self._deadline = 0.0  # when the read times out (loop clock)
        self._timer: asyncio.TimerHandle | None = None  # follows the deadline
        self._timer_at = 0.0
        self._timed_out = False  # the timer cancelled the read
        self._accepted_at = asyncio.get_running_loop().time()
        self._transport = cast(asyncio.Transport, writer.transport)
        # Bytes received that the read loop has not taken yet (b"": the client's EOF).
        self._inbox: list[bytes] = []
        self._unread = 0
        self._paused = False  # reading the socket paused: the inbox is over MAX_UNREAD
        self._waiter: asyncio.Future[None] | None = None  # the read loop's, while it waits
        protocol = writer.transport.get_protocol()
        self._protocol = protocol if isinstance(protocol, ClientProtocol) else None
        if self._protocol is not None:
            self._protocol.gone = self._client_gone
            for chunk in self._protocol.early or ():
                self._keep(chunk)
            self._protocol.early = None
            self._protocol.sink = self._received
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
        budget = self._budget
        stats = self.stats
        time = asyncio.get_running_loop().time
        idle = self._config.idle_timeout_s
        handshake_deadline = self._accepted_at + self._config.handshake_timeout_s
        frame_deadline = 0.0
        frame_mark = -1  # stats.requests when the frame being received began
        reason = ""
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
                # What is buffered now is the start of one frame: once its header is known,
                # take the whole frame from the broker's budget before reading more of it, and
                # stop reading while the budget is spent -- except to complete a frame taken
                # (so connections holding parts of frames never wait on each other).
                partial = wire.buffered
                need = wire.pending_frame_size - self._taken if partial else 0
                if need > 0 or (budget.used >= budget.limit and not self._taken):
                    if budget.used >= budget.limit:
                        frame_mark = -1  # the broker's wait: the frame's clock starts again
                    if not await self._take(max(need, 0)):
                        break
                now = time()
                if wire.state is not _OPEN:
                    deadline, what = handshake_deadline, "no handshake within"
                elif partial:
                    if frame_mark != stats.requests:
                        frame_mark = stats.requests
                        frame_deadline = now + idle
                    deadline, what = frame_deadline, "a frame unfinished after"
                else:
                    deadline, what = now + idle, "idle for"
                try:
                    chunk = await self._read(deadline)
                except TimeoutError:
                    timeout = idle if wire.state is _OPEN else self._config.handshake_timeout_s
                    reason = f"{what} {timeout:g}s"
                    break
                if chunk is None:
                    break
                if chunk is _AGAIN:
                    continue  # bytes were taken in the callback: see what they left
                if not chunk:
                    reason = "closed by client"
                    self._client_gone(False)
                    if not self._closing:
                        wire.receive_eof()  # raises if the stream ended inside a frame
                    break
                wire.receive_data(chunk)
        except FramingError as exc:
            reason = f"protocol error: {exc}"
            log.warning("closing connection from %s: %s", self._peer, exc)
        except (ConnectionError, OSError) as exc:
            self._client_gone(True)
            reason = f"connection error: {exc}"
        finally:
            await self._finish()
            reason = reason or self._stop_reason or "closed by client"
            log.info("client %s disconnected (%s)", self._peer, reason)

    async def _read(self, deadline: float) -> bytes | memoryview | None:
        """The next chunk from the client (``b""`` at its EOF), :data:`_AGAIN` when the
        protocol's callback took the bytes itself and left something for the loop to look at,
        or ``None`` once the broker stops reading. Raises ``TimeoutError`` at ``deadline`` (on
        the loop's clock).

        A plain awaited future, not a task raced against a stop signal: that cost a task, a
        wait() and an extra loop turn per chunk. :meth:`_interrupt` cancels this task
        instead, only while it sits in the read (unread bytes stay in the inbox). Nor a
        timeout context per read, which cost a timer set and cancelled per chunk: one timer
        (:meth:`_on_timer`) follows the deadline, which mostly only moves later."""
        if self._closing:
            return None
        self._deadline = deadline
        timer = self._timer
        if timer is None or self._timer_at > deadline:
            if timer is not None:
                timer.cancel()
            self._timer_at = deadline
            self._timer = self._loop.call_at(deadline, self._on_timer)
        if self._inbox:
            return self._take_inbox()
        self._waiting = self._reading = True
        try:
            if self._protocol is None:
                return await self._reader.read(READ_CHUNK)
            self._waiter = waiter = self._loop.create_future()
            await waiter
            return self._take_inbox() if self._inbox else _AGAIN
        except asyncio.CancelledError:
            why = self._ours()
            if why is _INTERRUPTED:
                return None
            if why is _TIMED_OUT:
                raise TimeoutError from None
            raise
        finally:
            self._waiter = None
            self._waiting = self._reading = False
            self._interrupted = self._timed_out = False

    def _take_inbox(self) -> bytes:
        """What the inbox holds, up to the client's EOF (``b""`` if that is all there is)."""
        inbox = self._inbox
        if not inbox[0]:
            return inbox.pop(0)  # the EOF: nothing came before it
        try:
            end = inbox.index(b"")
        except ValueError:
            end = len(inbox)
        chunk = inbox[0] if end == 1 else b"".join(inbox[:end])
        del inbox[:end]
        self._unread -= len(chunk)
        if self._paused and self._unread <= MAX_UNREAD // 2 and not self._closing:
            self._paused = False
            self._transport.resume_reading()
        return chunk

    def _keep(self, data: bytes) -> None:
        """Keep bytes for the read loop (pausing the socket above :data:`MAX_UNREAD`)."""
        self._inbox.append(data)
        self._unread += len(data)
        if self._unread > MAX_UNREAD and not self._paused:
            self._paused = True
            self._transport.pause_reading()

    def _received(self, data: bytes) -> None:
        """The protocol's sink. While the read loop waits for bytes and nothing is pending
        (no partial frame, room, budget), the requests ``data`` completes are served here
        and now; the rest is left to the loop, which is woken."""
        waiter = self._waiter
        wire = self._wire
        if (
            data
            and waiter is not None
            and not self._inbox
            and wire.state is _OPEN
            and wire.buffered == 0
            and not self._taken
            and self._budget.used < self._budget.limit
            and not self._closing
        ):
            self._deadline = self._loop.time() + self._config.idle_timeout_s
            try:
                wire.receive_data(data)
                while not self._full():
                    event = wire.next_event()
                    if event is None:
                        if not wire.buffered:
                            return  # all served: the loop goes on waiting
                        break
                    self._dispatch(event)
            except FramingError:
                pass  # the loop meets it again at its next_event() and closes
        else:
            self._keep(data)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _on_timer(self) -> None:
        """The read deadline's timer: cancel the read if it is due, else follow the deadline
        (it moved later since the timer was set)."""
        self._timer = None
        if not self._reading or self._closing:
            return  # the next read sets the timer again
        if self._deadline - self._loop.time() > TIMER_SLACK_S:
            self._timer_at = self._deadline
            self._timer = self._loop.call_at(self._deadline, self._on_timer)
        elif not self._timed_out and self._task is not None:
            self._timed_out = True
            self._task.cancel()

    async def _take(self, nbytes: int) -> bool:
        """Take ``nbytes`` of the broker's budget for the frame being received (or none, to
        wait), waiting while the budget is spent; False if the connection closed meanwhile."""
        self._waiting = True
        try:
            await self._budget.take(nbytes)
        except asyncio.CancelledError:
            if self._ours() is _INTERRUPTED:
                return False
            raise
        finally:
            self._waiting = False
            self._interrupted = False
        self._taken += nbytes
        return True

    def _ours(self) -> str | None:
        """Whose the cancel being handled is: when only :meth:`_interrupt` and the read timer
        cancelled (``cancelling()`` counts theirs alone) it is swallowed, and the answer is
        :data:`_INTERRUPTED` if the interrupt was among them, else :data:`_TIMED_OUT`.
        ``None``: anyone else's cancel, which goes on up."""
        task = self._task
        ours = self._interrupted + self._timed_out
        if ours and task is not None and task.cancelling() == ours:
            for _ in range(ours):
                task.uncancel()
            return _INTERRUPTED if self._interrupted else _TIMED_OUT
        return None

    def _interrupt(self, reason: str) -> None:
        """Stop the read loop: it ends at its next wait, or at once if it sits in one."""
        if not self._closing:
            self._closing = True
            self._stop_reason = reason
        self._room.set()
        if self._waiting and not self._interrupted and self._task is not None:
            self._interrupted = True
            self._task.cancel()

    def stop_reading(self) -> None:
        """Graceful shutdown: take no new requests; in-flight ones are answered and the
        socket stays open until they are written."""
        self._interrupt("broker shutting down")
        transport = cast(asyncio.Transport, self._writer.transport)
        if not transport.is_closing():
            transport.pause_reading()

    def _client_gone(self, lost: bool) -> None:
        """The client ended its stream (``lost`` False) or the connection is lost: cancel the
        fetches in flight and build no response any more; after a loss, read nothing more."""
        if not self._gone:
            self._gone = True
            for task, cancel in self._tasks.items():
                if cancel:
                    task.cancel()
        if lost:
            self._interrupt("connection lost")

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
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._wire.close()  # drops the bytes of frames not served
        if self._taken:
            self._budget.release(self._taken)
            self._taken = 0
        try:
            await self.wait_idle()
        finally:
            self.session.close()
            self._writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await self._writer.wait_closed()
            if self._protocol is not None:
                self._protocol.gone = None  # no cycle through the protocol: freed at once

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
        taken = self._taken
        if type(event) is not RequestReceived:  # a type test: a third of a match's cost
            if taken:
                self._taken = 0
                self._budget.release(taken)
            self._answered(event)
            return
        header, request, data = event
        body = header.meta_length + header.data_length
        held = FRAME_HEADER_SIZE + body  # the request's bytes, held until its handler returns
        cancel = type(request) is _FETCH
        if cancel and self._gone:
            if taken:
                self._taken = 0
                self._budget.release(taken)
            return  # a fetch for a client that has gone is not served
        self._budget.used += held - taken
        self._taken = 0
        size = body + self._core.reserve(request)
        self._account(size, +1)
        received = 0.0 if self._metrics is None else self._now()
        if self._unstarted:
            # An earlier request's task has not started yet: this one starts after it, so
            # requests still start in arrival order (pipelined produces land in order).
            outcome: Outcome = self._core.handle(request, data, self.session)
        else:
            # Served at once when the core can (a small produce or fetch): no task, no turn
            # of the event loop, the response written before the next frame is decoded.
            error: tuple[ErrorCode, str] | None = None
            try:
                outcome = self._core.handle_now(request, data, self.session)
            except Exception as exc:
                outcome, error = None, self._error(request, exc)
            if error is not None or served(outcome):
                del data
                self._budget.release(held)
                self._finish_now(header, request, cast(Reply, outcome), error, size, held, received)
                return
        task = asyncio.create_task(self._serve(header, request, outcome, size, held, received))
        self._unstarted[task] = outcome, size, held
        self._tasks[task] = cancel
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        """A request's task is done. One cancelled before it started (a fetch of a client
        that went away at once) gives back what its start would have."""
        del self._tasks[task]
        unstarted = self._unstarted.pop(task, None)
        if unstarted is not None:
            outcome, size, held = unstarted
            if not served(outcome):
                cast(Coroutine[Any, Any, Reply], outcome).close()  # never awaited: no warning
            self._budget.release(held)
            self._account(-size, -1)

    def _error(self, request: m.Request, exc: Exception) -> tuple[ErrorCode, str]:
        """The error response for what a handler raised."""
        if isinstance(exc, BrokerError):
            return exc.code, exc.message
        if isinstance(exc, MalformedMessageError):
            return ErrorCode.INVALID_REQUEST, str(exc)
        log.error("error handling %s from %s", type(request).__name__, self._peer, exc_info=exc)
        return ErrorCode.UNKNOWN_SERVER_ERROR, "unexpected broker error (see logs)"

    def _finish_now(
        self,
        header: FrameHeader,
        request: m.Request,
        reply: Reply,
        error: tuple[ErrorCode, str] | None,
        size: int,
        held: int,
        received: float,
    ) -> None:
        """Write the response of a request served at once. Its bytes stay counted until the
        socket has taken them (at once, as a rule; else a task waits for the drain)."""
        response_size = 0
        try:
            response_size = self._respond(header, reply, error)
        except (ConnectionError, OSError):
            self._client_gone(True)  # the read loop notices and closes
        if response_size and self._transport.get_write_buffer_size():
            self._account(-size, 0)
            self._track(asyncio.create_task(self._drain_then_release(response_size)))
        else:
            self._account(-size - response_size, -1)
        metrics = self._metrics
        if metrics is not None:
            code = 0 if error is None else int(error[0])
            metrics.request(type(request), code, held, response_size, 0.0, self._now() - received)

    def _respond(
        self, header: FrameHeader, reply: Reply, error: tuple[ErrorCode, str] | None
    ) -> int:
        """Write the response (none when the client has gone, or for a NO_RESPONSE request);
        its size, counted in the connection's buffered bytes."""
        if self._gone:
            return 0  # nobody will read it: not built
        if error is not None:
            buffers = self._wire.send_error(header, *error)
        elif reply is None:
            return 0
        else:
            response, chunks = reply
            buffers = self._wire.send_response(header, response, data=chunks)
        if not buffers:
            return 0  # a NO_RESPONSE request
        response_size = sum(map(len, buffers))
        self._account(response_size, 0)
        self._send(buffers)
        return response_size

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
        self,
        header: FrameHeader,
        request: m.Request,
        outcome: Outcome,
        size: int,
        held: int,
        received: float,
    ) -> None:
        """Finish serving one request in a task and write its response; ``received`` is when
        its frame was decoded (on the loop's clock; only read when metrics are kept)."""
        del self._unstarted[cast(asyncio.Task[None], asyncio.current_task())]
        response_size = 0
        reply: Reply = None
        error: tuple[ErrorCode, str] | None = None
        started = 0.0 if self._metrics is None else self._now()
        try:
            try:
                reply = await finish(outcome)
            except Exception as exc:
                error = self._error(request, exc)
            finally:
                del outcome  # the request's bytes go back to the broker's budget now
                self._budget.release(held)
            response_size = self._respond(header, reply, error)
            if response_size:
                await self._writer.drain()
        except (ConnectionError, OSError):
            self._client_gone(True)  # the read loop notices and closes
        finally:
            self._account(-size - response_size, -1)
            metrics = self._metrics
            if metrics is not None:
                code = 0 if error is None else int(error[0])
                queued = started - received
                metrics.request(
                    type(request), code, held, response_size, queued, self._now() - received
                )

    def _reply(self, buffers: Sequence[Buffer]) -> None:
        """Write a reply made without a handler, counted in the connection's buffered bytes
        until it drains: a client that sends junk and never reads is bounded too."""
        if self._gone:
            return
        size = sum(len(b) for b in buffers)
        self._account(size, +1)
        self._send(buffers)
        self._track(asyncio.create_task(self._drain_then_release(size)))

    def _track(self, task: asyncio.Task[None]) -> None:
        """Keep a task that writes (never cancelled when the client goes) until it is done."""
        self._tasks[task] = False
        task.add_done_callback(self._forget)

    async def _drain_then_release(self, size: int) -> None:
        try:
            await self._writer.drain()
        except (ConnectionError, OSError):
            self._client_gone(True)  # the read loop notices and closes
        finally:
            self._account(-size, -1)

    def _send(self, buffers: Sequence[Buffer]) -> None:
        transport = self._transport
        if not transport.is_closing():
            transport.writelines(buffers)

    def _account(self, nbytes: int, requests: int) -> None:
        stats = self.stats
        stats.buffered += nbytes
        stats.inflight += requests
        stats.peak_buffered = max(stats.peak_buffered, stats.buffered)
        if nbytes < 0 or requests < 0:
            self._room.set()
