"""A blocking raw-socket client that speaks tidelog.wire directly: for tests that need to send
what the real client never would (garbage, bad checksums, oversized frames)."""

from __future__ import annotations

import socket
import struct
from collections.abc import Sequence

from tidelog.wire import messages as m
from tidelog.wire.api import decode_response, encode_request, supported_versions
from tidelog.wire.frame import Frame, FrameDecoder
from tidelog.wire.records import Buffer

IO_TIMEOUT_S = 30.0  # a bound against hangs, never a synchronisation device


class RawClient:
    def __init__(self, address: str, *, rcvbuf: int | None = None) -> None:
        host, port = address.rsplit(":", 1)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:  # small, so a client that stops reading fills up quickly
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(IO_TIMEOUT_S)
        self.sock.connect((host, int(port)))
        self.decoder = FrameDecoder()
        self.correlation_id = 0

    def close(self) -> None:
        self.sock.close()

    def reset(self) -> None:
        """Close abruptly: the broker gets a reset (RST), whatever is left unread."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, message: m.Request, data: Sequence[Buffer] = ()) -> int:
        self.correlation_id += 1
        self.sock.sendall(b"".join(encode_request(message, self.correlation_id, data=data)))
        return self.correlation_id

    def read_frame(self) -> Frame | None:
        """The next frame, or ``None`` if the broker closed the connection."""
        while True:
            frame = self.decoder.next_frame()
            if frame is not None:
                return frame
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                return None
            self.decoder.feed(chunk)

    def call(self, message: m.Request, data: Sequence[Buffer] = ()) -> m.Response:
        cid = self.send(message, data)
        frame = self.read_frame()
        if frame is None:
            raise ConnectionError("the broker closed the connection")
        assert frame.header.correlation_id == cid
        return decode_response(frame)

    def call_with_data(
        self, message: m.Request, data: Sequence[Buffer] = ()
    ) -> tuple[m.Response, bytes]:
        cid = self.send(message, data)
        frame = self.read_frame()
        assert frame is not None and frame.header.correlation_id == cid
        return decode_response(frame), bytes(frame.data)

    def handshake(self) -> m.HandshakeResponse:
        response = self.call(m.HandshakeRequest(client_id="raw", api_versions=supported_versions()))
        assert isinstance(response, m.HandshakeResponse)
        return response

    def is_closed_by_peer(self) -> bool:
        """True once the broker has closed the connection (reads until EOF)."""
        try:
            while True:
                chunk = self.sock.recv(1 << 16)
                if not chunk:
                    return True
        except ConnectionResetError:
            return True
