"""The broker: a uvloop/asyncio streams server around the request core and the log manager.

``async with Broker(config) as broker:`` runs one in-process (tests, embedding);
``python -m tidelog.server`` and ``tidelog serve`` run one as a process. Shutdown is graceful:
stop accepting, stop reading, answer the requests in flight, wake long-polling fetches, flush
and close the logs cleanly (so the next start needs no recovery scan).
"""

from __future__ import annotations

import asyncio
import logging
import time
from types import TracebackType
from typing import Final, Self

from prometheus_client.registry import CollectorRegistry

from .admin_http import AdminServer, admin_app
from .budget import RequestBudget
from .config import ADMIN_PORT_ANY, ADMIN_PORT_OFF, BrokerConfig
from .connection import Connection
from .core import BrokerCore
from .limits import check_descriptors, connection_capacity, descriptor_limit, partitions_on_disk
from .log import FileSystem
from .log.manager import MAX_OPEN_SEGMENTS
from .metrics import BrokerMetrics
from .metrics_export import BrokerCollector
from .protocol import ClientProtocol

log = logging.getLogger("tidelog.server")

STREAM_LIMIT: Final = 1 << 20
"""The StreamReader's buffer limit: it stops reading the socket above twice this."""


class Broker:
    """One tidelog broker. Start it with ``async with`` or ``start()`` / ``stop()``."""

    def __init__(self, config: BrokerConfig | None = None, *, fs: FileSystem | None = None) -> None:
        """``fs`` replaces the file system under the logs (tests inject faults with it)."""
        self.config = config or BrokerConfig()
        self.core = BrokerCore(self.config, fs=fs)
        self.budget = RequestBudget(self.config.max_queued_request_bytes)
        """Request bytes held across all connections (``max_queued_request_bytes``)."""
        self._server: asyncio.Server | None = None
        self._connections: dict[Connection, asyncio.Task[None]] = {}
        self._stopped = asyncio.Event()
        self._started_at = 0.0
        self.refused_connections = 0
        """Connections closed at accept because the broker was full."""
        self.metrics: BrokerMetrics | None = None
        """The counters behind ``/metrics``; ``None`` (nothing counted) without an admin
        port."""
        self.registry: CollectorRegistry | None = None
        """This broker's own Prometheus registry (never the process-wide one)."""
        self._admin: AdminServer | None = None
        if self.config.admin != ADMIN_PORT_OFF:
            self.metrics = BrokerMetrics()
            self.registry = CollectorRegistry(auto_describe=False)
            self.registry.register(BrokerCollector(self, self.metrics))
            self.core.count_into(self.metrics)

    @property
    def port(self) -> int:
        """The port actually bound (useful with ``port=0``)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("the broker is not running")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def host(self) -> str:
        return self.config.host

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def admin_address(self) -> str | None:
        """``host:port`` of the admin HTTP port, ``None`` when it is off."""
        if self._admin is None:
            return None
        return f"{self.host}:{self._admin.port}"

    def not_ready(self) -> str | None:
        """Why the broker is not ready to serve (``/ready``), or ``None`` when it is."""
        if self._server is None or self.core.logs is None or self.core.groups is None:
            return "starting or stopping: the logs are not loaded"
        if self.core.state.shutting_down:
            return "shutting down"
        cluster = self.core.state.cluster
        return None if cluster is None else cluster.not_ready()

    @property
    def connections(self) -> list[Connection]:
        return list(self._connections)

    async def start(self) -> None:
        if not self.config.in_memory:  # in memory, the logs hold no file descriptors
            check_descriptors(partitions_on_disk(self.config.data_dir), MAX_OPEN_SEGMENTS)
        await self.core.open()
        loop = asyncio.get_running_loop()

        def protocol() -> ClientProtocol:  # what asyncio.start_server builds, our protocol
            return ClientProtocol(asyncio.StreamReader(STREAM_LIMIT, loop), self._accept, loop)

        try:
            # Bound now (a cluster registration carries the real port), served only once the
            # broker has joined its cluster: before that a produce would be taken as on a
            # single broker (leader epoch -1, acknowledged after the local fsync alone), and a
            # broker restarted at its old address is reached at once by clients that knew it.
            self._server = await loop.create_server(
                protocol,
                self.config.host,
                self.config.port,
                reuse_address=True,
                start_serving=False,
            )
        except OSError:
            await self.core.shutdown()
            raise
        self.core.set_advertised_port(self.config.advertised_port or self.port)
        if self.config.etcd_endpoints:
            try:
                await self.core.join_cluster()
            except BaseException:
                self._server.close()
                await self.core.shutdown()
                raise
        await self._server.start_serving()
        self._started_at = time.monotonic()
        if self.registry is not None:
            try:
                await self._start_admin(self.registry)
            except OSError:
                await self.stop()
                raise
        partitions, cached = self._log_descriptors()
        log.info(
            "the logs hold %d file descriptors (one per partition) and up to %d more for older "
            "segments; the limit is %d, which leaves room for %d connections",
            partitions,
            cached,
            descriptor_limit(),
            self._capacity(),
        )
        log.info(
            "broker %d listening on %s (data in %s)",
            self.config.broker_id,
            self.address,
            "memory, kept until the broker stops"
            if self.config.in_memory
            else self.config.data_dir,
        )

    async def stop(self) -> None:
        """Graceful shutdown; safe to call more than once."""
        if self._server is None:
            return
        server, self._server = self._server, None
        log.info("broker shutting down")
        admin, self._admin = self._admin, None
        if admin is not None:
            await admin.stop()
        server.close()
        await self.core.leave_cluster()  # others take over its partitions at once
        for conn in self._connections:
            conn.stop_reading()
        self.core.begin_shutdown()
        tasks = list(self._connections.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self.config.shutdown_timeout_s)
            for conn, task in list(self._connections.items()):
                if task in pending:
                    conn.abort()
            if pending:
                await asyncio.wait(pending)
        try:
            await server.wait_closed()
            await self.core.shutdown()
        finally:
            self._stopped.set()  # even a failed shutdown ends the process's wait
        log.info("broker stopped cleanly")

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _start_admin(self, registry: CollectorRegistry) -> None:
        port = self.config.admin
        admin = AdminServer(
            admin_app(registry, self.not_ready), self.host, 0 if port == ADMIN_PORT_ANY else port
        )
        await admin.start()
        self._admin = admin

    def _capacity(self) -> int:
        """How many connections may be open now (none once the logs are closed)."""
        if self.core.logs is None:
            return 0
        partitions, cached = self._log_descriptors()
        return connection_capacity(self.config.max_connections, partitions, cached)

    def _log_descriptors(self) -> tuple[int, int]:
        """The file descriptors the logs may hold (none in memory): see ``LogManager``."""
        return (0, 0) if self.config.in_memory else self.core.manager.descriptors

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._connections) >= self._capacity():
            self.refused_connections += 1
            if self.refused_connections % 1000 == 1:
                log.warning(
                    "refusing a connection from %s: %d connections are open, the most this "
                    "broker serves (max_connections and the file descriptor limit); %d refused",
                    writer.get_extra_info("peername"),
                    len(self._connections),
                    self.refused_connections,
                )
            writer.transport.abort()
            return
        conn = Connection(reader, writer, self.core, self.config, self.budget, self.metrics)
        task = asyncio.current_task()
        assert task is not None
        self._connections[conn] = task
        try:
            await conn.run()
        finally:
            del self._connections[conn]
