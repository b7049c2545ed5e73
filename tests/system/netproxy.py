"""A userspace TCP proxy for network faults between real processes (the reliability note's
"network behind a userspace proxy"), on a thread of its own so that tests drive it from
anywhere.

Faults, each undone by :meth:`FaultProxy.heal`:

* :meth:`~FaultProxy.cut` resets every connection through the proxy (the peers see an RST);
* :meth:`~FaultProxy.block` refuses new connections (nothing listens: connection refused);
* :meth:`~FaultProxy.blackhole` silences connections without closing them, the nastier case:
  bytes in either direction are dropped, new connections are accepted and then hear nothing,
  as behind a router that drops every packet. A connection silenced this way stays silent
  after :meth:`~FaultProxy.heal` (a half-open TCP connection whose other end gave up: its
  owner learns only from a timeout of its own); only new connections pass again.

A proxy with a ``tagger`` reads the first bytes of each new connection before it forwards
them and names the connection by them (:func:`client_id`: the client id of a tidelog
handshake, ``replica-<id>`` for a broker's replica fetcher); a blackhole may then silence only
the connections whose name matches.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tidelog.wire.api import decode_request
from tidelog.wire.errors import TidelogError
from tidelog.wire.frame import MAX_HANDSHAKE_FRAME_SIZE, FrameDecoder
from tidelog.wire.messages import HandshakeRequest

T = TypeVar("T")
Tagger = Callable[[bytes], str | None]
"""The name of a connection from its first bytes; ``None`` while more bytes are needed."""
READ_CHUNK = 65536


def client_id(first: bytes) -> str | None:
    """The client id of the tidelog handshake that opens a connection (``""`` when the first
    frame is something else); ``None`` until the whole frame has arrived."""
    decoder = FrameDecoder(MAX_HANDSHAKE_FRAME_SIZE)
    decoder.feed(first)
    try:
        frame = decoder.next_frame()
        if frame is None:
            return None
        request = decode_request(frame)
    except TidelogError:
        return ""
    return request.client_id if isinstance(request, HandshakeRequest) else ""


@dataclass(eq=False)
class Link:
    """One connection through the proxy."""

    tag: str
    silent: bool = False
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    def reset(self) -> None:
        for writer in self.writers:
            writer.transport.abort()


class FaultProxy:
    """Forwards ``127.0.0.1:<port>`` to ``upstream`` (settable later: a broker behind the
    proxy advertises the proxy's port, which must exist before the broker starts)."""

    def __init__(self, upstream: tuple[str, int] | None = None, tagger: Tagger | None = None):
        self.port = 0
        self._tagger = tagger
        self._upstream = upstream
        self._loop = asyncio.new_event_loop()
        self._has_upstream = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._links: set[Link] = set()
        self._silence: Callable[[str], bool] | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        self._thread.start()
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.unblock()
        if self._upstream is not None:
            self.set_upstream(*self._upstream)
        return self

    def set_upstream(self, host: str, port: int) -> None:
        def set_it() -> None:
            self._upstream = (host, port)
            self._has_upstream.set()

        self._loop.call_soon_threadsafe(set_it)

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    # --- faults ----------------------------------------------------------------------------

    def unblock(self) -> None:
        async def listen() -> None:
            if self._server is None:
                self._server = await asyncio.start_server(
                    self._accept, "127.0.0.1", self.port, reuse_address=True
                )

        self._run(listen())

    def block(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
                self._server = None

        self._run(close())

    def cut(self) -> None:
        async def cut() -> None:
            for link in list(self._links):
                link.reset()

        self._run(cut())

    def blackhole(self, match: Callable[[str], bool] = lambda _: True) -> None:
        """Silence the connections whose tag ``match`` accepts, now and new ones, until
        :meth:`heal`."""

        async def silence() -> None:
            self._silence = match
            for link in self._links:
                link.silent = link.silent or match(link.tag)

        self._run(silence())

    def heal(self) -> None:
        """Forward new connections again (and listen, if blocked); connections silenced so far
        stay silent."""

        async def heal() -> None:
            self._silence = None

        self._run(heal())
        self.unblock()

    def stop(self) -> None:
        self.block()
        self.cut()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    # --- forwarding ------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first = b""
        tag = ""
        try:
            if self._tagger is not None:
                while (found := self._tagger(first)) is None:
                    chunk = await reader.read(READ_CHUNK)
                    if not chunk:
                        raise ConnectionError("closed before its first frame")
                    first += chunk
                tag = found
        except (ConnectionError, OSError):
            writer.transport.abort()
            return
        link = Link(tag, writers=[writer])
        link.silent = self._silence is not None and self._silence(tag)
        self._links.add(link)
        try:
            if link.silent:  # accepted, then nothing: the peer's bytes go nowhere
                while await reader.read(READ_CHUNK):
                    pass
                return
            await self._has_upstream.wait()
            assert self._upstream is not None
            up_reader, up_writer = await asyncio.open_connection(*self._upstream)
            link.writers.append(up_writer)
            if link.silent:  # silenced while connecting
                up_writer.transport.abort()
            else:
                up_writer.write(first)
            await asyncio.gather(self._pipe(link, reader, up_writer),
                                 self._pipe(link, up_reader, writer))  # fmt: skip
        except (ConnectionError, OSError):
            pass
        finally:
            self._links.discard(link)
            link.reset()

    @staticmethod
    async def _pipe(link: Link, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(READ_CHUNK):
                if link.silent:
                    continue  # dropped on the floor; the connection stays open
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        if not link.silent:
            dst.transport.abort()
