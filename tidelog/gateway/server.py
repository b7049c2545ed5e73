"""Serving the app with uvicorn inside a program's own event loop: ``tidelog gateway``,
``tidelog serve`` (beside the broker) and the test fixture.

The socket is bound before anything starts (:func:`bind`), so a port in use is an error at
once and port 0 gives the real port up front. uvicorn's own signal handling is off: the
program that embeds it owns SIGINT and SIGTERM and stops the server with :meth:`stop`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

import uvicorn

from .app import create_app
from .settings import GatewaySettings


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free one). Raises ``OSError``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on accepted sockets whose proto says
    # TCP; without it every answer written in two parts waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
        sock.set_inheritable(True)
    except BaseException:
        sock.close()
        raise
    return sock


class _Embedded(uvicorn.Server):
    on_started: asyncio.Event | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the embedding program handles signals

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.on_started is not None:
            self.on_started.set()


class GatewayServer:
    """The gateway on a bound socket: ``await serve()`` until :meth:`stop`."""

    def __init__(self, settings: GatewaySettings, sock: socket.socket | None = None) -> None:
        self.settings = settings.validate()
        self.socket = sock if sock is not None else bind(settings.host, settings.port)
        config = uvicorn.Config(
            create_app(self.settings),
            http="httptools",
            ws="websockets-sansio",
            ws_max_size=self.settings.max_ws_message_bytes,
            lifespan="on",
            log_config=None,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=5,
        )
        self._server = _Embedded(config)

    @property
    def port(self) -> int:
        port: int = self.socket.getsockname()[1]
        return port

    @property
    def url(self) -> str:
        host = self.settings.host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"

    @property
    def started(self) -> bool:
        return self._server.started

    async def serve(self, started: asyncio.Event | None = None) -> None:
        """Serve until :meth:`stop` (or cancellation, which stops it gracefully too);
        ``started`` is set once it serves."""
        self._server.on_started = started
        try:
            await self._server.serve(sockets=[self.socket])
        except asyncio.CancelledError:
            self._server.should_exit = True
            with contextlib.suppress(Exception):
                await self._server.shutdown(sockets=[self.socket])
            raise
        finally:
            self.socket.close()

    def stop(self) -> None:
        self._server.should_exit = True
