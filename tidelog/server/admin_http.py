"""The broker's admin HTTP port: ``/metrics``, ``/health`` and ``/ready``.

A small Starlette app served by uvicorn on the broker's own event loop (the project's HTTP
stack; no thread, no second process). Three routes do not need a framework's router, but
Starlette gives a tested HTTP/1.1 server path and the same stack as the gateway. The app calls
``generate_latest`` on the broker's own registry rather than mounting prometheus-client's ASGI
app, so ``/health`` and ``/ready`` sit beside it in one app and the text is built on the loop
the counters live on (no lock, no torn read).

uvicorn's ``Server.serve()`` installs signal handlers of its own in the main thread, which
would take SIGTERM from the broker process; the broker drives ``startup()`` and
``shutdown()`` instead and keeps its signals. The socket is bound here, so ``admin_port=-1``
can ask for a free port and :attr:`AdminServer.port` tells which.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import Final

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

log = logging.getLogger("tidelog.server.admin")

SHUTDOWN_TIMEOUT_S: Final = 5


def admin_app(registry: CollectorRegistry, ready: Callable[[], str | None]) -> Starlette:
    """The ASGI app. ``ready()`` returns ``None`` when the broker serves, else the reason."""

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readiness(request: Request) -> Response:
        reason = ready()
        if reason is None:
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "not ready", "reason": reason}, status_code=503)

    return Starlette(
        routes=[
            Route("/metrics", metrics),
            Route("/health", health),
            Route("/ready", readiness),
        ]
    )


class AdminServer:
    """uvicorn serving :func:`admin_app` on ``host:port`` (``port`` 0: a free one)."""

    def __init__(self, app: Starlette, host: str, port: int) -> None:
        self._config = uvicorn.Config(
            app,
            host=host,
            port=port,
            lifespan="off",
            ws="none",
            log_config=None,
            access_log=False,
            server_header=False,
            date_header=False,
            timeout_graceful_shutdown=SHUTDOWN_TIMEOUT_S,
        )
        self._server: uvicorn.Server | None = None
        self._socket: socket.socket | None = None

    @property
    def port(self) -> int:
        if self._socket is None:
            raise RuntimeError("the admin server is not running")
        return int(self._socket.getsockname()[1])

    async def start(self) -> None:
        config = self._config
        sock = socket.create_server((config.host, config.port))
        sock.set_inheritable(True)
        server = uvicorn.Server(config)
        config.load()
        server.lifespan = config.lifespan_class(config)
        try:
            await server.startup(sockets=[sock])
        except BaseException:
            sock.close()
            raise
        self._server, self._socket = server, sock
        log.info("admin HTTP on %s:%d (/metrics, /health, /ready)", config.host, self.port)

    async def stop(self) -> None:
        server, sock = self._server, self._socket
        self._server = self._socket = None
        if server is not None and sock is not None:
            server.should_exit = True
            await server.shutdown(sockets=[sock])
