"""What the gateway's stateful clients share (consumer instances, queue members): a bounded
registry whose entries unused for an idle timeout are closed, on lookup and by a reaper, and
whose expired keys are remembered for a while so a caller hears "expired" rather than "not
found"."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Hashable, Iterator
from typing import Final, Generic, Protocol, TypeVar

REAP_INTERVAL_MAX_S: Final = 10.0
EXPIRED_REMEMBERED: Final = 4096
"""Keys of expired entries kept to answer "expired" rather than "not found"."""


class Expiring(Protocol):
    """An entry: when it was last used, whether it may not expire now, how to close it."""

    last_used: float

    def busy(self, now: float) -> bool: ...

    async def close(self) -> None: ...


K = TypeVar("K", bound=Hashable)
T = TypeVar("T", bound=Expiring)


class IdleRegistry(Generic[K, T]):
    """At most ``limit`` live entries by key (the owner checks :meth:`full` and answers its
    own error); one reaper task between :meth:`start` and :meth:`close`."""

    def __init__(self, limit: int, idle_timeout_s: float, clock: Callable[[], float]) -> None:
        self.limit = limit
        self.idle_timeout_s = idle_timeout_s
        self.clock = clock
        self._live: dict[K, T] = {}
        self._expired: dict[K, None] = {}
        self._reaper: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, key: K) -> bool:
        return key in self._live

    def __iter__(self) -> Iterator[T]:
        return iter(list(self._live.values()))

    def start(self) -> None:
        self._reaper = asyncio.get_running_loop().create_task(self._reap_loop())

    def full(self) -> bool:
        return len(self._live) >= self.limit

    def add(self, key: K, entry: T) -> None:
        self._live[key] = entry
        self._expired.pop(key, None)

    def remove(self, key: K) -> T | None:
        """Take the entry out (the caller closes it)."""
        return self._live.pop(key, None)

    def get(self, key: K) -> T | None:
        """The live entry, its idle clock reset; ``None`` if unknown or expired."""
        entry = self._live.get(key)
        if entry is not None:
            entry.last_used = self.clock()
        return entry

    def expired(self, key: K) -> bool:
        """The key's entry expired (recently: the last :data:`EXPIRED_REMEMBERED`)."""
        return key in self._expired

    async def expire_idle(self) -> None:
        """Close every entry unused for longer than the idle timeout and not busy."""
        now = self.clock()
        idle = [
            k
            for k, e in self._live.items()
            if now - e.last_used > self.idle_timeout_s and not e.busy(now)
        ]
        for key in idle:
            entry = self._live.pop(key)
            self._expired[key] = None
            if len(self._expired) > EXPIRED_REMEMBERED:
                del self._expired[next(iter(self._expired))]
            await entry.close()

    async def _reap_loop(self) -> None:
        interval = min(REAP_INTERVAL_MAX_S, self.idle_timeout_s / 2)
        while True:
            await asyncio.sleep(interval)
            await self.expire_idle()

    async def close(self) -> None:
        """Stop the reaper and close every entry."""
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        live = list(self._live.values())
        self._live.clear()
        await asyncio.gather(*(e.close() for e in live), return_exceptions=True)
