"""A broker's own connection to another broker, for replication: one request at a time.

The server never uses :mod:`tidelog.client` (DESIGN.md, "Layout"); this drives the sans-IO
:class:`~tidelog.wire.session.WireSession` directly. A replica fetcher has one request in
flight at a time, so there is no pipelining, no reader task and no reconnect logic here: any
error closes the connection, and the fetcher opens a new one.
"""

from __future__ import annotations

import asyncio
from typing import Final

from tidelog import __version__
from tidelog.wire import messages as m
from tidelog.wire.errors import BrokerError, TidelogError, raise_for_code
from tidelog.wire.records import Buffer
from tidelog.wire.session import ResponseFailed, Role, WireSession

READ_CHUNK: Final = 256 * 1024
CONNECT_TIMEOUT_S: Final = 5.0


class PeerConnectionError(TidelogError):
    """The peer broker could not be reached, or closed the connection."""


class PeerConnection:
    """A handshaken connection to one broker; :meth:`request` sends and awaits one answer."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        session: WireSession[int],
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._session = session

    @classmethod
    async def open(
        cls, host: str, port: int, client_id: str, max_frame_size: int
    ) -> PeerConnection:
        """Connect and handshake; :class:`PeerConnectionError` or the handshake's error."""
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                reader, writer = await asyncio.open_connection(host, port)
        except (OSError, TimeoutError) as exc:
            raise PeerConnectionError(f"cannot connect to {host}:{port}: {exc}") from exc
        session: WireSession[int] = WireSession(
            Role.CLIENT, client_id=client_id, client_version=__version__,
            max_frame_size=max_frame_size,
        )  # fmt: skip
        peer = cls(reader, writer, session)
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                answer, _ = await peer.request(session.handshake_request())
        except BaseException:
            peer.close()
            raise
        if isinstance(answer, m.HandshakeResponse) and answer.error_code:
            peer.close()
            raise_for_code(answer.error_code, answer.error_message)
        return peer

    async def request(
        self, message: m.Request, data: list[Buffer] | None = None
    ) -> tuple[m.Response, bytearray]:
        """Send ``message`` and return the answer and its data section. An error response
        raises its :class:`BrokerError`; a broken stream :class:`PeerConnectionError`."""
        session = self._session
        _, buffers = session.send_request(message, 0, data=data or ())
        try:
            self._writer.writelines(buffers)
            await self._writer.drain()
            while True:
                event = session.next_event()
                if event is not None:
                    break
                chunk = await self._reader.read(READ_CHUNK)
                if not chunk:
                    raise PeerConnectionError("the peer closed the connection")
                session.receive_data(chunk)
        except (OSError, ConnectionError) as exc:
            raise PeerConnectionError(f"the connection broke: {exc}") from exc
        if isinstance(event, ResponseFailed):
            if isinstance(event.error, BrokerError):
                raise event.error
            raise PeerConnectionError(f"a bad answer: {event.error}") from event.error
        return event.response, event.data

    def close(self) -> None:
        self._writer.close()
