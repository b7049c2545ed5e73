"""What the request core and its transport share: the session, the reply and the clock.

The transport (``server/connection.py``) imports these; nothing here knows about sockets or
streams, so the core runs the same under a socket, an in-memory test or a future gateway.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias, TypeGuard, cast

from tidelog.wire import messages as m
from tidelog.wire.records import Buffer

Reply = tuple[m.Response, Sequence[Buffer]] | None
"""What the core returns: a response and its data section, or ``None`` for no response."""

Outcome: TypeAlias = Reply | Coroutine[Any, Any, Reply]
"""What :meth:`RequestCore.handle_now` returns: the reply when the request was served at once,
else the coroutine that finishes serving it (to run in a task of its own)."""


def served(outcome: Outcome) -> TypeGuard[Reply]:
    """Whether ``outcome`` is the reply itself (a type test: no ABC check on the hot path)."""
    return outcome is None or type(outcome) is tuple


async def finish(outcome: Outcome) -> Reply:
    """The reply of an outcome: itself, or what its coroutine returns."""
    if served(outcome):
        return outcome
    return await cast(Coroutine[Any, Any, Reply], outcome)


@dataclass(slots=True)
class Session:
    """What the core may know about the client behind a request."""

    peer_host: str
    peer_port: int = 0
    client_id: str = ""
    closed_callbacks: dict[Hashable, Callable[[], None]] = field(default_factory=dict)
    """Run once when the connection ends (a share-group member's records are released)."""

    def on_close(self, key: Hashable, callback: Callable[[], None]) -> None:
        """Run ``callback`` when the connection ends. One per ``key``: a registration under a
        key already there replaces it, so a member that fetches on one connection all day
        holds one callback, not one per fetch."""
        self.closed_callbacks[key] = callback

    def close(self) -> None:
        """The connection ended: run (and drop) the close callbacks."""
        callbacks, self.closed_callbacks = self.closed_callbacks, {}
        for callback in callbacks.values():
            callback()

    @property
    def peer(self) -> str:
        """``host:port`` for log lines."""
        return f"{self.peer_host}:{self.peer_port}"


class RequestCore(Protocol):
    """The broker's request handling, free of transport concerns."""

    def reserve(self, request: m.Request) -> int:
        """Bytes of connection budget to hold for the response beyond the request itself."""
        ...

    async def handle(self, request: m.Request, data: bytearray, session: Session) -> Reply: ...

    def handle_now(self, request: m.Request, data: bytearray, session: Session) -> Outcome:
        """Serve ``request`` at once if nothing needs waiting for (a produce at acks 0 or 1, a
        fetch with data), else start nothing and return the coroutine that serves it -- or,
        when the request's effects were made at once (a produce's appends), the coroutine that
        waits for what the answer depends on. Raises what :meth:`handle` raises."""
        ...


class DeadlineClock(Protocol):
    """The time source of every request deadline (fetch long-poll, produce timeout).

    Injected so tests drive deadlines by hand instead of waiting in real time."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards."""
        ...

    async def wait(self, future: asyncio.Future[None], timeout_s: float) -> bool:
        """Wait until ``future`` is done or ``timeout_s`` passes; whether it is done. Never
        cancels ``future``: others may be waiting on it."""
        ...


class LoopClock:
    """The real clock: ``time.monotonic`` and the event loop's timers."""

    def monotonic(self) -> float:
        return time.monotonic()

    async def wait(self, future: asyncio.Future[None], timeout_s: float) -> bool:
        if not future.done() and timeout_s > 0:
            await asyncio.wait((future,), timeout=timeout_s)
        return future.done()
