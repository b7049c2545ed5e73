"""A worker runner over a :class:`QueueConsumer`: N handlers kept busy; success acks, an
exception nacks with its text, a handler over its time renews or releases (as configured)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Literal

from tidelog.wire.errors import BrokerError

from .errors import ClientUsageError, TidelogConnectionError
from .queue import QueueConsumer, QueueMessage

logger = logging.getLogger("tidelog.client.workers")

Handler = Callable[[QueueMessage], Awaitable[object]]


async def run_workers(
    queue: QueueConsumer,
    handler: Handler,
    *,
    concurrency: int = 1,
    handler_timeout: float | None = None,
    on_timeout: Literal["release", "renew"] = "release",
    stop: asyncio.Event | None = None,
    handle_sigterm: bool = False,
    drain_timeout: float = 30.0,
) -> None:
    """Run ``handler`` on ``queue``'s messages with ``concurrency`` tasks until ``stop`` is set
    (or SIGTERM, with ``handle_sigterm``). Then fetching stops, in-flight handlers get up to
    ``drain_timeout`` seconds to finish, and :meth:`QueueConsumer.close` releases the rest.

    ``handler_timeout``: seconds a handler may run; past it the message is released (``on_timeout=
    "release"``, the handler is cancelled) or its lock renewed every ``handler_timeout`` seconds
    (``"renew"``)."""
    if concurrency < 1:
        raise ClientUsageError("concurrency must be at least 1")
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    if handle_sigterm:
        loop.add_signal_handler(signal.SIGTERM, stop.set)
    try:
        workers = [
            asyncio.create_task(_work(queue, handler, handler_timeout, on_timeout, stop))
            for _ in range(concurrency)
        ]
        waiter = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([*workers, waiter], return_when=asyncio.FIRST_COMPLETED)
        stop.set()
        for task in done:
            if task is not waiter and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(drain_timeout):
                await asyncio.gather(*workers, return_exceptions=True)
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, waiter, return_exceptions=True)
    finally:
        if handle_sigterm:
            loop.remove_signal_handler(signal.SIGTERM)
        await queue.close()


async def _work(
    queue: QueueConsumer,
    handler: Handler,
    handler_timeout: float | None,
    on_timeout: str,
    stop: asyncio.Event,
) -> None:
    while not stop.is_set():
        next_message = asyncio.ensure_future(anext(queue))
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait([next_message, stopped], return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not next_message.done():
            next_message.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                message = await next_message  # it may have completed meanwhile
                queue._buffer.appendleft(message)
            return
        try:
            message = next_message.result()
        except StopAsyncIteration:
            return
        await _handle(message, handler, handler_timeout, on_timeout)


async def _handle(
    message: QueueMessage, handler: Handler, handler_timeout: float | None, on_timeout: str
) -> None:
    try:
        if handler_timeout is None:
            await handler(message)
        elif on_timeout == "renew":
            task = asyncio.ensure_future(handler(message))
            while True:
                done, _ = await asyncio.wait([task], timeout=handler_timeout)
                if done:
                    task.result()
                    break
                await message.renew()
        else:
            async with asyncio.timeout(handler_timeout):
                await handler(message)
    except TimeoutError:
        await _settle(message.nack(delay=0, error="handler timed out"))
        return
    except Exception as exc:  # the handler failed: nack with its text
        await _settle(message.nack(error=f"{type(exc).__name__}: {exc}"))
        return
    if not message.settled:
        await _settle(message.ack())


async def _settle(settling: Awaitable[None]) -> None:
    try:
        await settling
    except (BrokerError, TidelogConnectionError) as exc:
        logger.warning("could not settle a message (it will be redelivered): %s", exc)
