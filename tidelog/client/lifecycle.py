"""The ``async with`` shape shared by the clients (producer, consumer, admin), and clean-up
that a cancellation does not cut short."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, Self, TypeVar

T = TypeVar("T")


async def despite_cancellation(clean_up: Coroutine[Any, Any, T]) -> T:
    """Run ``clean_up`` to its end even if the calling task is cancelled meanwhile, then
    raise that cancellation: for closing steps that must happen however the task is stopped
    (a consumer leaving its group, connections closing). ``clean_up`` must be bounded by
    timeouts of its own; cancelling the event loop's every task still ends it."""
    task = asyncio.ensure_future(clean_up)
    cancelled = False
    while not task.done():
        try:
            await asyncio.wait([task])  # unlike await task, never cancels it
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        if not task.cancelled():
            task.exception()  # retrieved: the cancellation is what the caller sees
        raise asyncio.CancelledError
    return task.result()


class AsyncClient:
    """``async with client:`` starts it and closes it however the block ends. Subclasses
    implement :meth:`start` and :meth:`close`."""

    async def start(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
