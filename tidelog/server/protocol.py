"""The broker's asyncio protocol for a client connection.

asyncio's stream protocol keeps its writer half (``drain()``, close); what it receives goes
straight to the connection's callback instead of a StreamReader, so that a request arriving
whole can be served without waking a task (see :mod:`.connection`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final, cast

MAX_UNREAD: Final = 1 << 20
"""Bytes received and not yet decoded (the read loop busy or waiting) at which a connection
stops reading its socket until the loop takes them."""


class ClientProtocol(asyncio.StreamReaderProtocol):
    """asyncio's stream protocol (its writer side: drain, close), which hands the bytes it
    receives straight to its connection (:attr:`sink`), not to a StreamReader: a request that
    arrives whole is served from this callback, with no task woken and no loop turn. It also
    tells its connection at once when the client goes away, even while the connection is not
    reading (waiting for room, or for the budget)."""

    gone: Callable[[bool], None] | None = None
    """Called with ``False`` at the client's EOF and ``True`` when the connection is lost."""
    sink: Callable[[bytes], None] | None = None
    """Takes each chunk received, and ``b""`` at the client's EOF, once a connection is
    attached; until then they are kept in :attr:`early` (reading paused above a limit)."""
    early: list[bytes] | None = None
    transport: asyncio.Transport | None = None

    def data_received(self, data: bytes) -> None:
        sink = self.sink
        if sink is not None:
            sink(data)
        else:
            self._keep(data)

    def eof_received(self) -> bool:
        keep_open = bool(super().eof_received())
        if self.sink is not None:
            self.sink(b"")
        else:
            self._keep(b"")
        if self.gone is not None:
            self.gone(False)
        return keep_open

    def _keep(self, data: bytes) -> None:
        if self.early is None:
            self.early = []
        self.early.append(data)
        if sum(map(len, self.early)) > MAX_UNREAD and self.transport is not None:
            self.transport.pause_reading()  # resumed by the connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.gone is not None:
            self.gone(True)
