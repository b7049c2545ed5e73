"""A wake-up signal for background loops: cheaper than ``Event`` + ``wait_for``."""

from __future__ import annotations

import asyncio


class Wakeup:
    """Level-triggered: :meth:`set` from anywhere (callbacks included) makes the current or
    the next :meth:`wait` return at once; the waiting side calls :meth:`clear` before it looks
    at the state it waits on, so a ``set`` during its turn is never lost."""

    __slots__ = ("_is_set", "_waiter")

    def __init__(self) -> None:
        self._is_set = False
        self._waiter: asyncio.Future[None] | None = None

    def set(self) -> None:
        self._is_set = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def clear(self) -> None:
        self._is_set = False

    def is_set(self) -> bool:
        return self._is_set

    async def wait(self, delay: float | None = None) -> bool:
        """Wait until set, or ``delay`` seconds (``None``: no limit). Returns whether it was
        set. Does not clear it."""
        if self._is_set:
            return True
        if delay is not None and delay <= 0:
            return False
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = None if delay is None else loop.call_later(delay, _expire, waiter)
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()
        return self._is_set


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
