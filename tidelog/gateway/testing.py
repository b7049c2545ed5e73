"""pytest fixtures for the gateway, registered by :mod:`tidelog.testing`:

* ``tidelog_gateway`` -- a gateway on an ephemeral loopback port in front of the
  ``tidelog_broker`` fixture's broker; its value is the base URL (``http://127.0.0.1:PORT``).
* ``tidelog_gateway_factory`` -- ``factory(broker_address, **settings)`` starts more (or
  differently limited) gateways; all are stopped at the end of the test.

Each gateway runs on its own event loop in a daemon thread, like the broker fixture, so
synchronous tests can use httpx's and websockets' synchronous clients.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any, Final

import pytest

from .server import GatewayServer
from .settings import GatewaySettings

START_TIMEOUT_S: Final = 30.0


class GatewayThread:
    """A :class:`GatewayServer` on port 0, serving from a daemon thread."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.server = GatewayServer(settings)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, name="tidelog-gateway", daemon=True)
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> GatewayThread:
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_S):
            raise TimeoutError("the gateway did not start in time")
        if self._error is not None:
            raise self._error
        return self

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        started = asyncio.Event()
        task = asyncio.ensure_future(self.server.serve(started))
        waiter = asyncio.ensure_future(started.wait())
        try:
            await asyncio.wait((task, waiter), return_when=asyncio.FIRST_COMPLETED)
            if task.done() and task.exception() is not None:
                self._error = task.exception()
        finally:
            waiter.cancel()
            self._ready.set()
        if self._error is None:
            await task

    def stop(self) -> None:
        loop = self._loop
        if loop is not None and self._thread.is_alive():
            loop.call_soon_threadsafe(self.server.stop)
            self._thread.join(START_TIMEOUT_S)
            if self._thread.is_alive():
                raise TimeoutError("the gateway thread did not stop in time")


@pytest.fixture
def tidelog_gateway_factory() -> Iterator[Callable[..., GatewayThread]]:
    """Start gateways with ``factory(broker_address, **settings)`` (any
    :class:`GatewaySettings` field); port 0 and 127.0.0.1 unless given."""
    started: list[GatewayThread] = []

    def factory(bootstrap: str, **settings: Any) -> GatewayThread:
        settings.setdefault("host", "127.0.0.1")
        settings.setdefault("port", 0)
        thread = GatewayThread(GatewaySettings(bootstrap=bootstrap, **settings)).start()
        started.append(thread)
        return thread

    try:
        yield factory
    finally:
        for thread in reversed(started):
            thread.stop()


@pytest.fixture
def tidelog_gateway(
    tidelog_broker: Any, tidelog_gateway_factory: Callable[..., GatewayThread]
) -> str:
    """The base URL of a gateway in front of the ``tidelog_broker`` fixture's broker."""
    return tidelog_gateway_factory(tidelog_broker.address).url
