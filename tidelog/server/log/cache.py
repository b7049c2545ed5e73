"""A bound on open segment files: an LRU of inactive segments holding resources."""

from __future__ import annotations

from collections import OrderedDict
from typing import Protocol


class Releasable(Protocol):
    def release(self) -> None:
        """Close the descriptor and drop loaded indexes; reopened on the next use."""


class HandleCache:
    """LRU of inactive segments holding open resources (a descriptor and loaded indexes).

    Touching a segment past ``capacity`` releases the least recently used one; it reopens on
    its next read. Active segments are never in the cache, so a broker holds at most
    ``capacity`` descriptors of old segments plus one per partition.
    """

    def __init__(self, capacity: int = 256) -> None:
        if capacity < 1:
            raise ValueError("the handle cache needs a capacity of at least 1")
        self.capacity = capacity
        self._lru: OrderedDict[Releasable, None] = OrderedDict()

    def touch(self, segment: Releasable) -> None:
        lru = self._lru
        if segment in lru:
            lru.move_to_end(segment)
            return
        lru[segment] = None
        while len(lru) > self.capacity:
            oldest, _ = lru.popitem(last=False)
            oldest.release()

    def discard(self, segment: Releasable) -> None:
        self._lru.pop(segment, None)

    def __len__(self) -> int:
        return len(self._lru)
