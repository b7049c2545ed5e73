"""Test helpers: a real broker for your test suite, on an ephemeral loopback port.

As a pytest plugin (registered through the ``pytest11`` entry point, so installing tidelog is
enough), it provides the fixtures:

* ``tidelog_broker`` -- a fresh broker per test, data in the test's ``tmp_path``; use
  ``tidelog_broker.address`` (``"127.0.0.1:PORT"``) in your client code.
* ``tidelog_broker_factory`` -- a callable to start more (or differently configured) brokers;
  ``factory(admin_port=-1)`` also serves ``/metrics`` on a free port (``.admin_address``).
* ``tidelog_gateway`` and ``tidelog_gateway_factory`` -- the HTTP gateway in front of it, on
  an ephemeral port (:mod:`tidelog.gateway.testing`).

``--tidelog-storage=memory`` starts these brokers with in-memory storage (no data dir; faster,
and nothing kept across restarts) unless a test names ``storage`` itself. Tests where storage is
the thing under test (restarts, files on disk, disk faults) carry the marker
``@pytest.mark.storage_bound``: that run leaves them out, as they ran on disk already.
:func:`default_storage` is the storage a test should give brokers it builds itself.

The broker runs on its own event loop in a background thread, so it works in synchronous and
asynchronous tests alike, with or without pytest-asyncio. Inside an asyncio program you can
also embed one directly: ``async with Broker(BrokerConfig(port=0, data_dir=...)) as broker``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import pytest

from tidelog.gateway.testing import tidelog_gateway, tidelog_gateway_factory  # noqa: F401
from tidelog.server import Broker, BrokerConfig
from tidelog.server.config import DISK, MEMORY

START_TIMEOUT_S = 30.0
STORAGE_OPTION = "--tidelog-storage"
STORAGE_BOUND = "storage_bound"

_storage = DISK


def default_storage() -> str:
    """The storage of brokers started by this run's tests: ``disk``, or ``memory`` under
    ``--tidelog-storage=memory``."""
    return _storage


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("tidelog").addoption(
        STORAGE_OPTION,
        choices=(DISK, MEMORY),
        default=DISK,
        help="storage of the brokers the tidelog fixtures start (default: disk); with memory, "
        f"tests marked {STORAGE_BOUND} are deselected",
    )


def pytest_configure(config: pytest.Config) -> None:
    global _storage
    _storage = config.getoption(STORAGE_OPTION)
    config.addinivalue_line(
        "markers",
        f"{STORAGE_BOUND}: storage is under test (restarts, files, disk faults): left out of "
        f"a {STORAGE_OPTION}=memory run",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _storage == DISK:
        return
    bound = [item for item in items if item.get_closest_marker(STORAGE_BOUND) is not None]
    if bound:
        config.hook.pytest_deselected(items=bound)
        items[:] = [item for item in items if item.get_closest_marker(STORAGE_BOUND) is None]


class BrokerThread:
    """A :class:`~tidelog.server.Broker` on its own event loop in a daemon thread."""

    def __init__(self, config: BrokerConfig) -> None:
        self.config = config
        self._loop: asyncio.AbstractEventLoop | None = None
        self._broker: Broker | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stop: asyncio.Event | None = None

    @property
    def broker(self) -> Broker:
        if self._broker is None:
            raise RuntimeError("the broker is not running")
        return self._broker

    @property
    def port(self) -> int:
        return self.broker.port

    @property
    def address(self) -> str:
        return f"{self.config.host}:{self.port}"

    @property
    def admin_address(self) -> str:
        """``host:port`` of the admin HTTP port (start the broker with ``admin_port=-1``)."""
        address = self.broker.admin_address
        if address is None:
            raise RuntimeError("the admin port is off: pass admin_port=-1 for a free one")
        return address

    def start(self) -> Self:
        self._thread = threading.Thread(target=self._run, name="tidelog-broker", daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_S):
            raise TimeoutError("the broker did not start in time")
        if self._error is not None:
            raise self._error
        return self

    def call(self, fn: Callable[[Broker], Any]) -> Any:
        """Run ``fn(broker)`` on the broker's loop (thread-safe) and return its result."""
        loop = self._loop
        assert loop is not None

        async def run() -> Any:
            return fn(self.broker)

        return asyncio.run_coroutine_threadsafe(run(), loop).result(START_TIMEOUT_S)

    def stop(self) -> None:
        """Graceful shutdown, waited for."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and self._thread is not None:
            loop.call_soon_threadsafe(stop.set)
            self._thread.join(START_TIMEOUT_S + self.config.shutdown_timeout_s)
            if self._thread.is_alive():
                raise TimeoutError("the broker thread did not stop in time")
        self._thread = None

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        broker = Broker(self.config)
        try:
            await broker.start()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._broker = broker
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await broker.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@pytest.fixture
def tidelog_broker_factory(tmp_path: Path) -> Iterator[Callable[..., BrokerThread]]:
    """Start brokers with ``factory(**settings)``; each gets its own data dir (and the run's
    :func:`default_storage` unless ``storage`` is given); all are stopped at the end of the
    test."""
    started: list[BrokerThread] = []

    def factory(**settings: Any) -> BrokerThread:
        settings.setdefault("host", "127.0.0.1")
        settings.setdefault("port", 0)
        settings.setdefault("storage", _storage)
        settings.setdefault("data_dir", tmp_path / f"broker-{len(started)}")
        config = BrokerConfig(**settings)
        config.validate()
        thread = BrokerThread(config).start()
        started.append(thread)
        return thread

    try:
        yield factory
    finally:
        for thread in reversed(started):
            thread.stop()


@pytest.fixture
def tidelog_broker(tidelog_broker_factory: Callable[..., BrokerThread]) -> BrokerThread:
    """A broker on 127.0.0.1 with an ephemeral port and a temporary data dir."""
    return tidelog_broker_factory()
