"""Long-poll support: fetches wait on appends, without polling.

A fetch that finds less than ``min_bytes`` registers one future on every partition it asked
for; a high-watermark advance on any of them resolves the futures of that partition, and the
fetch reads again. Waiting fetches hold no data, only a future per partition, so their memory
is bounded by the number of connections times ``max_inflight_requests``.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

TopicPartition = tuple[str, int]


class AppendNotifier:
    """Wakes fetches waiting on a partition when data becomes visible in it."""

    def __init__(self) -> None:
        self._waiters: defaultdict[TopicPartition, set[asyncio.Future[None]]] = defaultdict(set)
        self.version = 0
        """Counts the notifications: a fetch that read too little at one version, and finds
        the same one later, knows that reading again would find the same."""

    def notify(self, tp: TopicPartition) -> None:
        self.version += 1
        waiters = self._waiters.pop(tp, None)
        if waiters:
            for future in waiters:
                if not future.done():
                    future.set_result(None)

    def notify_all(self) -> None:
        """Wake every waiting fetch (shutdown, topic deletion)."""
        self.version += 1
        for tp in list(self._waiters):
            self.notify(tp)

    @contextmanager
    def watch(self, partitions: Iterable[TopicPartition]) -> Iterator[asyncio.Future[None]]:
        """A future resolved by the next notify of any of ``partitions``; the registration is
        dropped on exit, however the caller's wait ended."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        tps = list(partitions)
        for tp in tps:
            self._waiters[tp].add(future)
        try:
            yield future
        finally:
            for tp in tps:
                waiters = self._waiters.get(tp)
                if waiters is not None:
                    waiters.discard(future)
                    if not waiters:
                        del self._waiters[tp]

    @property
    def waiting(self) -> int:
        return sum(len(w) for w in self._waiters.values())
