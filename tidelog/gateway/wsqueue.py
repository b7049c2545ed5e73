"""A WebSocket's send queue, bounded in bytes: what keeps a slow client from growing the
gateway's memory. A pump that finds it full waits (and so stops fetching: its consumer's
prefetch, itself bounded, fills and the consumer stops asking the broker)."""

from __future__ import annotations

import asyncio
from collections import deque

from .state import SocketStats


class FrameQueue:
    """Frames (encoded JSON) waiting to be written to one socket; at most ``limit`` bytes,
    except that one frame of any size enters an empty queue (so progress never stops)."""

    def __init__(self, limit: int, stats: SocketStats) -> None:
        self.limit = limit
        self.stats = stats
        self._frames: deque[bytes] = deque()
        self._bytes = 0
        self._room = asyncio.Event()
        self._ready = asyncio.Event()

    @property
    def buffered(self) -> int:
        return self._bytes

    async def put(self, frame: bytes, *, pump: bool = False) -> None:
        """Queue ``frame``, waiting for room; ``pump`` counts the wait as a stalled
        subscription in the stats."""
        size = len(frame)
        if self._bytes and self._bytes + size > self.limit:
            if pump:
                self.stats.stalled += 1
            try:
                while self._bytes and self._bytes + size > self.limit:
                    self._room.clear()
                    await self._room.wait()
            finally:
                if pump:
                    self.stats.stalled -= 1
        self._frames.append(frame)
        self._bytes += size
        self.stats.buffered_bytes += size
        self._ready.set()

    async def get(self) -> bytes:
        while not self._frames:
            self._ready.clear()
            await self._ready.wait()
        frame = self._frames.popleft()
        self._bytes -= len(frame)
        self.stats.buffered_bytes -= len(frame)
        self._room.set()
        return frame

    def clear(self) -> None:
        """Drop what is queued (the socket is gone): the stats forget it."""
        self.stats.buffered_bytes -= self._bytes
        self._frames.clear()
        self._bytes = 0
        self._room.set()
