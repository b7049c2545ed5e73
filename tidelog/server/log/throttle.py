"""A token bucket over bytes, by an injected clock: what bounds the cleaner's I/O (Kafka's
``Throttler``). Every byte read or written is counted; the caller waits whenever it is ahead
of ``bytes_per_second``, so over any window of the clock the bytes moved stay within the rate
times the window, plus one burst, plus the one read or write paid for before the window began
(the cleaner reads and writes in chunks of at most 256 KiB, or one batch).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Final

from .config import Clock

BURST_SECONDS: Final = 0.1
"""The bucket holds this long's worth of bytes: a burst after idling is at most that."""


class ThrottleStopped(Exception):
    """The throttled work is to stop (the broker is shutting down)."""


class Throttler:
    """Counts bytes (:meth:`take`) and waits while they are ahead of the rate.

    ``sleep`` waits that many seconds and returns ``True`` if it was interrupted (stop); the
    default waits on ``stop``. Tests pass a clock and a ``sleep`` that moves the clock."""

    def __init__(
        self,
        bytes_per_second: int,
        clock: Clock,
        *,
        stop: threading.Event | None = None,
        sleep: Callable[[float], bool] | None = None,
    ) -> None:
        self.bytes_per_second = bytes_per_second
        self._clock = clock
        self._stop = threading.Event() if stop is None else stop
        self._sleep = self._stop.wait if sleep is None else sleep
        self._burst = max(int(bytes_per_second * BURST_SECONDS), 1)
        self._tokens = float(self._burst)
        self._last = clock()
        self.bytes_read = 0
        self.bytes_written = 0

    def read(self, size: int) -> None:
        self.bytes_read += size
        self.take(size)

    def written(self, size: int) -> None:
        self.bytes_written += size
        self.take(size)

    def take(self, size: int) -> None:
        """Spend ``size`` bytes; wait until the bucket is no longer in debt."""
        if self._stop.is_set():
            raise ThrottleStopped
        if self.bytes_per_second <= 0:
            return
        self._refill()
        self._tokens -= size
        while self._tokens < 0:
            if self._sleep(-self._tokens / self.bytes_per_second):
                raise ThrottleStopped
            self._refill()

    def _refill(self) -> None:
        now = self._clock()
        elapsed = max(now - self._last, 0)
        self._last = now
        self._tokens = min(self._tokens + elapsed * self.bytes_per_second / 1000, self._burst)
