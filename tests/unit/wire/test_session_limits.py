"""A server session's frame limit: MAX_HANDSHAKE_FRAME_SIZE until a handshake has succeeded
(a larger frame is a framing error naming that limit), the broker's own limit after. And what
a broker budgets with: the size of a frame being received, and close() dropping its bytes."""

from __future__ import annotations

from typing import Never

import pytest

from tidelog.wire import messages as m
from tidelog.wire.api import ApiKey, encode_request, supported_versions
from tidelog.wire.errors import FrameTooLargeError
from tidelog.wire.frame import MAX_HANDSHAKE_FRAME_SIZE, encode_frame
from tidelog.wire.layouts import FRAME_HEADER_SIZE, FRAME_HEADER_STRUCT, FRAME_MAGIC
from tidelog.wire.session import (
    BrokerIdentity,
    HandshakeAnswered,
    LocalProtocolError,
    RequestReceived,
    RequestRefused,
    Role,
    State,
    WireSession,
)

LIMIT = 1024 * 1024
IDENTITY = BrokerIdentity(broker_id=1, cluster_id="c", server_version="1", max_frame_size=LIMIT)


def server() -> WireSession[Never]:
    return WireSession(Role.SERVER, identity=IDENTITY)


def header(body: int, api_key: int = ApiKey.PRODUCE) -> bytes:
    """The header of a frame of ``body`` bytes (its CRC is never checked: no body follows)."""
    return FRAME_HEADER_STRUCT.pack(FRAME_MAGIC, 1, api_key, 0, 0, 1, 0, body, 0)


def handshake(session: WireSession[Never], client_id: str = "me") -> HandshakeAnswered:
    request = m.HandshakeRequest(client_id=client_id, api_versions=supported_versions())
    session.receive_data(b"".join(encode_request(request, 1)))
    event = session.next_event()
    assert isinstance(event, HandshakeAnswered) and event.accepted
    return event


def test_a_frame_above_the_handshake_limit_before_a_handshake_is_a_framing_error() -> None:
    session = server()
    session.receive_data(header(MAX_HANDSHAKE_FRAME_SIZE + 1))
    with pytest.raises(FrameTooLargeError, match="MAX_HANDSHAKE_FRAME_SIZE") as raised:
        session.next_event()
    assert str(MAX_HANDSHAKE_FRAME_SIZE) in str(raised.value)
    assert session.state is State.ERROR


def test_a_frame_at_the_handshake_limit_is_taken_before_a_handshake() -> None:
    session = server()
    frame = encode_frame(
        api_key=999, api_version=0, flags=0, correlation_id=1, meta=b"\x80" * 10,
        data=[b"x" * (MAX_HANDSHAKE_FRAME_SIZE - 10)],
    )  # fmt: skip
    session.receive_data(frame)
    event = session.next_event()
    assert isinstance(event, RequestRefused)  # answered, not a framing error


def test_a_long_client_id_still_fits_a_handshake() -> None:
    handshake(server(), client_id="c" * 4096)


def test_after_the_handshake_the_brokers_own_limit_applies() -> None:
    session = server()
    handshake(session)
    session.receive_data(header(LIMIT))
    assert session.next_event() is None  # taken: the body is awaited
    assert session.pending_frame_size == FRAME_HEADER_SIZE + LIMIT
    other = server()
    handshake(other)
    other.receive_data(header(LIMIT + 1))
    with pytest.raises(FrameTooLargeError, match=f"above the limit of {LIMIT} bytes"):
        other.next_event()


def test_a_refused_handshake_keeps_the_handshake_limit() -> None:
    session = server()
    refused = m.HandshakeRequest(protocol_versions=(99,), api_versions=supported_versions())
    session.receive_data(b"".join(encode_request(refused, 1)))
    event = session.next_event()
    assert isinstance(event, HandshakeAnswered) and not event.accepted
    session.receive_data(header(MAX_HANDSHAKE_FRAME_SIZE + 1))
    with pytest.raises(FrameTooLargeError, match="MAX_HANDSHAKE_FRAME_SIZE"):
        session.next_event()


def test_the_size_of_a_frame_being_received_is_known_from_its_header() -> None:
    session = server()
    handshake(session)
    request = m.ProduceRequest((m.ProducePartition("t", 0, 1000),))
    frame = b"".join(bytes(b) for b in encode_request(request, 2, data=[b"x" * 1000]))
    session.receive_data(frame[: FRAME_HEADER_SIZE - 1])
    assert session.next_event() is None
    assert session.pending_frame_size == 0  # the header is not whole yet
    session.receive_data(frame[FRAME_HEADER_SIZE - 1 : -1])
    assert session.next_event() is None
    assert session.pending_frame_size == len(frame)
    assert session.buffered == len(frame) - 1
    session.receive_data(frame[-1:])
    assert isinstance(session.next_event(), RequestReceived)
    assert session.pending_frame_size == 0 and session.buffered == 0


def test_close_drops_the_bytes_held_and_takes_no_more() -> None:
    session = server()
    handshake(session)
    session.receive_data(header(LIMIT) + b"x" * 1000)
    assert session.next_event() is None and session.buffered > 0
    session.close()
    assert session.buffered == 0 and session.pending_frame_size == 0
    with pytest.raises(LocalProtocolError):
        session.receive_data(b"x")
