"""Drivers for the request core without sockets: a clock moved by hand, fsyncs held back."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any

from tidelog.wire import messages as m
from tidelog.wire.records import RecordBatchBuilder


class ManualClock:
    """A :class:`~tidelog.server.core.DeadlineClock` whose time moves only by :meth:`advance`."""

    def __init__(self) -> None:
        self.now = 1000.0
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def monotonic(self) -> float:
        return self.now

    async def wait(self, future: asyncio.Future[None], timeout_s: float) -> bool:
        if future.done() or timeout_s <= 0:
            return future.done()
        timer: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._timers, (self.now + timeout_s, next(self._order), timer))
        try:
            await asyncio.wait((future, timer), return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
        return future.done()

    @property
    def waiting(self) -> int:
        """Deadlines still pending (a waiter is parked on the clock)."""
        return sum(1 for _, _, timer in self._timers if not timer.done())

    def advance(self, seconds: float) -> None:
        """Move time on and fire every deadline that has passed."""
        self.now += seconds
        while self._timers and self._timers[0][0] <= self.now:
            _, _, timer = heapq.heappop(self._timers)
            if not timer.done():
                timer.set_result(None)


class HeldExecutor(Executor):
    """Runs nothing until :meth:`release`: the fsyncs of a test's logs wait for it."""

    def __init__(self) -> None:
        self.jobs: list[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]]] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        self.jobs.append((future, fn, args))
        return future

    def release(self) -> int:
        """Run every held job now, in this thread; how many ran."""
        jobs, self.jobs = self.jobs, []
        for future, fn, args in jobs:
            try:
                future.set_result(fn(*args))
            except BaseException as exc:
                future.set_exception(exc)
        return len(jobs)


async def settle(condition: Callable[[], bool], turns: int = 1000) -> None:
    """Let the event loop run until ``condition`` holds (bounded in loop turns, not time)."""
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


def batch(*values: bytes) -> bytes:
    builder = RecordBatchBuilder()
    for value in values:
        builder.append(value, timestamp=1)
    return builder.build()


def produce(
    topic: str, *batches: bytes, acks: int = m.Acks.LEADER, timeout_ms: int = 30_000
) -> tuple[m.ProduceRequest, bytearray]:
    """A one-partition produce request and its data section."""
    data = bytearray(b"".join(batches))
    request = m.ProduceRequest(
        (m.ProducePartition(topic, 0, len(data)),), acks=acks, timeout_ms=timeout_ms
    )
    return request, data


def fetch(
    topic: str, offset: int = 0, *, max_wait_ms: int = 0, min_bytes: int = 1
) -> m.FetchRequest:
    return m.FetchRequest(
        (m.FetchPartition(topic, 0, offset),), max_wait_ms=max_wait_ms, min_bytes=min_bytes
    )


def idempotent_batch(pid: int, epoch: int, seq: int, *values: bytes) -> bytes:
    builder = RecordBatchBuilder(producer_id=pid, producer_epoch=epoch, base_sequence=seq)
    for value in values:
        builder.append(value, timestamp=1)
    return builder.build()
