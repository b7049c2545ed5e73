"""The broker-wide budget of request bytes (Kafka's ``queued.max.request.bytes``).

Every connection bounds what it holds itself (``max_connection_buffer``), but N connections
could still hold N times that. This budget counts the request bytes held across all of them:
frames being received (a frame's whole size is taken once its header has arrived, before the
rest is read) and requests being served (until their handler returns). While it is spent,
every connection stops reading.

Admission is Kafka's memory pool's: a taker gets in while the budget is not spent, and may
overshoot it by what it takes (one frame), so a frame larger than the whole budget is still
served, alone. Taking a frame whole means a frame taken can always complete: connections that
each hold part of a frame never wait on each other. Waiters are woken in arrival order.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Final

log = logging.getLogger("tidelog.server.connection")

DEFAULT_MAX_QUEUED_REQUEST_BYTES: Final = 256 * 1024 * 1024
"""A few maximum-size frames' worth: room for many large producers at once, never gigabytes."""
WARN_INTERVAL_S: Final = 10.0
"""At most one warning per this many seconds while connections wait for the budget."""


class RequestBudget:
    """Request bytes held across a broker's connections, against ``limit``.

    The connection's hot path adds to :attr:`used` directly for a request that arrived whole
    (the bytes are already read, so it does not wait); :meth:`take` is for bytes about to be
    read and waits while the budget is spent; :meth:`release` gives bytes back.
    """

    __slots__ = ("_waiters", "_warned_at", "limit", "peak", "used", "waits")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.peak = 0
        """The most :attr:`used` has been at a wait or a release (what tests assert on)."""
        self.waits = 0
        """How many times a connection had to stop reading for the budget."""
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._warned_at = -WARN_INTERVAL_S

    @property
    def spent(self) -> bool:
        return self.used >= self.limit

    async def take(self, nbytes: int) -> None:
        """Take ``nbytes``, first waiting (in arrival order) until the budget is not spent."""
        if self.used >= self.limit or self._waiters:
            loop = asyncio.get_running_loop()
            if loop.time() - self._warned_at >= WARN_INTERVAL_S:
                self._warned_at = loop.time()
                log.warning(
                    "the broker holds %d bytes of requests (max_queued_request_bytes=%d): "
                    "connections stop reading until some are served",
                    self.used,
                    self.limit,
                )
            self.waits += 1
            waiter = loop.create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if not waiter.cancelled():
                    self._wake()  # woken, then cancelled: pass the turn on
                elif waiter in self._waiters:  # (a wake-up may have passed it over already)
                    self._waiters.remove(waiter)
                raise
        self.used += nbytes
        self.peak = max(self.peak, self.used)
        if self._waiters and self.used < self.limit:
            self._wake()

    def release(self, nbytes: int) -> None:
        """Give back ``nbytes`` taken or added before."""
        used = self.used
        if used > self.peak:
            self.peak = used
        self.used = used - nbytes
        if self._waiters and self.used < self.limit:
            self._wake()

    def _wake(self) -> None:
        """Wake the first waiter still waiting; it takes its bytes when it runs."""
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
