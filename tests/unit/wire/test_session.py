"""WireSession: both roles talking to each other in memory, bytes fed whole, one byte at a time
and in any chunking; the handshake, the handshake-first rule, correlation ids and the states."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Never, TypeVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidelog.wire import messages as m
from tidelog.wire.api import (
    HANDSHAKE_VERSION,
    ApiKey,
    decode_response,
    encode_error,
    encode_request,
    encode_response,
    negotiate_versions,
    supported_versions,
)
from tidelog.wire.errors import (
    BadMagicError,
    ChecksumMismatchError,
    ErrorCode,
    FrameTooLargeError,
    FramingError,
    HandshakeRequiredError,
    InvalidRequestError,
    MalformedMessageError,
    TruncatedFrameError,
    UnknownApiError,
    UnsupportedVersionError,
)
from tidelog.wire.frame import Frame, FrameDecoder, FrameFlags, FrameHeader, encode_frame
from tidelog.wire.records import Buffer
from tidelog.wire.session import (
    MAX_EXPIRED,
    TRANSITIONS,
    BrokerIdentity,
    Event,
    HandshakeAnswered,
    LocalProtocolError,
    RequestReceived,
    RequestRefused,
    ResponseFailed,
    ResponseReceived,
    Role,
    State,
    Trigger,
    WireSession,
)

from .strategies import PROPERTY

T = TypeVar("T")

IDENTITY = BrokerIdentity(
    broker_id=7, cluster_id="test-cluster", server_version="9.9.9", max_frame_size=64 * 1024
)
METADATA = m.MetadataRequest(topics=("a",))
ACKS_NONE = m.ProduceRequest((m.ProducePartition("t", 0, 3),), acks=m.Acks.NONE)


def server() -> WireSession[Never]:
    return WireSession(Role.SERVER, identity=IDENTITY)


def client(client_id: str = "me") -> WireSession[str]:
    return WireSession(
        Role.CLIENT, client_id=client_id, client_version="1.2.3", max_frame_size=64 * 1024
    )


def join(buffers: Iterable[Buffer]) -> bytes:
    return b"".join(bytes(b) for b in buffers)


def feed(session: WireSession[T], data: bytes, cuts: Sequence[int] = ()) -> list[Event[T]]:
    """Every event ``data`` yields, fed in chunks split at ``cuts`` (sorted positions)."""
    events: list[Event[T]] = []
    start = 0
    for cut in [*cuts, len(data)]:
        session.receive_data(data[start:cut])
        while (event := session.next_event()) is not None:
            events.append(event)
        start = cut
    return events


def one(events: list[Event[T]]) -> Event[T]:
    assert len(events) == 1, events
    return events[0]


def raw_request(message: m.Request, correlation_id: int = 1, data: Sequence[Buffer] = ()) -> bytes:
    return join(encode_request(message, correlation_id, data=data))


def frames_of(data: bytes) -> list[Frame]:
    decoder = FrameDecoder()
    decoder.feed(data)
    frames = list(decoder)
    decoder.close()
    return frames


def header_of(buffers: Iterable[Buffer]) -> FrameHeader:
    (frame,) = frames_of(join(buffers))
    return frame.header


def handshaken() -> tuple[WireSession[str], WireSession[Never]]:
    c, s = client(), server()
    _, buffers = c.send_request(c.handshake_request(), "handshake")
    answered = one(feed(s, join(buffers)))
    assert isinstance(answered, HandshakeAnswered)
    feed(c, join(answered.reply))
    assert c.state is State.OPEN and s.state is State.OPEN
    return c, s


# --- the handshake ----------------------------------------------------------------------------


def test_a_handshake_between_the_two_roles_opens_both() -> None:
    c, s = client(), server()
    assert (c.state, s.state) == (State.AWAIT_HANDSHAKE, State.AWAIT_HANDSHAKE)
    _, buffers = c.send_request(c.handshake_request(), "handshake")
    answered = one(feed(s, join(buffers)))
    assert isinstance(answered, HandshakeAnswered) and answered.accepted
    assert s.state is State.OPEN
    assert (s.client_id, s.client_version) == ("me", "1.2.3")
    assert answered.response == m.HandshakeResponse(
        protocol_version=1,
        api_versions=supported_versions(),
        broker_id=7,
        cluster_id="test-cluster",
        server_version="9.9.9",
        max_frame_size=64 * 1024,
    )
    received = one(feed(c, join(answered.reply)))
    assert isinstance(received, ResponseReceived)
    assert received.token == "handshake" and received.response == answered.response
    assert c.state is State.OPEN and c.broker == IDENTITY and c.protocol_version == 1
    expected = {**negotiate_versions(supported_versions()), ApiKey.HANDSHAKE: HANDSHAKE_VERSION}
    assert c.api_versions == expected and s.api_versions == expected


def test_a_handshake_with_no_common_protocol_version_is_refused() -> None:
    s = server()
    hello = m.HandshakeRequest(client_id="old", protocol_versions=(99,))
    answered = one(feed(s, raw_request(hello, correlation_id=5)))
    assert isinstance(answered, HandshakeAnswered) and not answered.accepted
    assert answered.response.error_code == ErrorCode.UNSUPPORTED_VERSION
    assert "protocol versions [1]" in (answered.response.error_message or "")
    assert answered.response.server_version == "9.9.9"
    assert s.state is State.AWAIT_HANDSHAKE and s.client_id == "old"
    refused = one(feed(s, raw_request(METADATA, correlation_id=6)))
    assert isinstance(refused, RequestRefused) and refused.code == ErrorCode.HANDSHAKE_REQUIRED


def test_a_client_refused_in_the_handshake_stays_unopened() -> None:
    c = client()
    _, buffers = c.send_request(c.handshake_request(), "handshake")
    request_header = header_of(buffers)
    refusal = m.HandshakeResponse(error_code=ErrorCode.UNSUPPORTED_VERSION, error_message="no")
    received = one(feed(c, join(encode_response(refusal, request_header))))
    assert isinstance(received, ResponseReceived) and received.response == refusal
    assert c.state is State.AWAIT_HANDSHAKE and c.broker is None
    assert c.api_versions == {ApiKey.HANDSHAKE: HANDSHAKE_VERSION}
    with pytest.raises(LocalProtocolError, match="before the handshake"):
        c.send_request(METADATA, "metadata")
    with pytest.raises(LocalProtocolError, match="one handshake"):
        c.send_request(c.handshake_request(), "again")


def test_a_broker_choosing_a_protocol_version_never_offered_is_a_protocol_error() -> None:
    c = client()
    _, buffers = c.send_request(c.handshake_request(), "handshake")
    request_header = header_of(buffers)
    odd = m.HandshakeResponse(protocol_version=99, api_versions=supported_versions())
    c.receive_data(join(encode_response(odd, request_header)))
    with pytest.raises(MalformedMessageError, match="protocol version 99"):
        c.next_event()
    assert c.state is State.ERROR and c.broker is None
    assert c.close() == ["handshake"]  # its request fails with the rest


def test_a_repeated_handshake_is_answered_and_the_session_stays_open() -> None:
    _, s = handshaken()
    again = one(feed(s, raw_request(m.HandshakeRequest(client_id="second"), correlation_id=9)))
    assert isinstance(again, HandshakeAnswered) and again.accepted and s.client_id == "second"
    refused = one(feed(s, raw_request(m.HandshakeRequest(protocol_versions=(99,)), 10)))
    assert isinstance(refused, HandshakeAnswered) and not refused.accepted
    assert s.state is State.OPEN


def test_an_api_the_broker_lacks_is_refused_locally() -> None:
    c = client()
    _, buffers = c.send_request(c.handshake_request(), "handshake")
    request_header = header_of(buffers)
    only_handshake = m.HandshakeResponse(api_versions=(m.ApiVersionRange(0, 0, 0),))
    feed(c, join(encode_response(only_handshake, request_header)))
    assert c.state is State.OPEN
    with pytest.raises(UnsupportedVersionError, match="METADATA"):
        c.send_request(METADATA, "metadata")
    assert c.in_flight == 0


# --- handshake first --------------------------------------------------------------------------


def test_a_request_before_the_handshake_gets_handshake_required() -> None:
    s = server()
    refused = one(feed(s, raw_request(METADATA, correlation_id=41)))
    assert isinstance(refused, RequestRefused) and refused.code == ErrorCode.HANDSHAKE_REQUIRED
    (frame,) = frames_of(join(refused.reply))
    assert frame.header.correlation_id == 41 and frame.header.api_key == ApiKey.METADATA
    with pytest.raises(HandshakeRequiredError):
        decode_response(frame)
    assert s.state is State.AWAIT_HANDSHAKE


def test_a_no_response_frame_before_the_handshake_is_dropped_unanswered() -> None:
    s = server()
    garbage_body = encode_frame(
        api_key=ApiKey.PRODUCE, api_version=0, flags=FrameFlags.NO_RESPONSE,
        correlation_id=3, meta=b"\xc1",
    )  # fmt: skip
    for data in (raw_request(ACKS_NONE, 2, [b"abc"]), garbage_body):
        dropped = one(feed(s, data))
        assert isinstance(dropped, RequestRefused)
        assert dropped.code == ErrorCode.HANDSHAKE_REQUIRED and dropped.reply == ()


def test_after_the_handshake_requests_reach_the_owner() -> None:
    _, s = handshaken()
    received = one(feed(s, raw_request(ACKS_NONE, 2, [b"abc"])))
    assert isinstance(received, RequestReceived)
    assert received.request == ACKS_NONE and bytes(received.data) == b"abc"
    assert received.header.flags & FrameFlags.NO_RESPONSE


@pytest.mark.parametrize(
    ("frame", "code", "error"),
    [
        (encode_frame(api_key=999, api_version=0, flags=0, correlation_id=8, meta=b"\x80"),
         ErrorCode.UNKNOWN_API, UnknownApiError),
        (encode_frame(api_key=ApiKey.METADATA, api_version=42, flags=0, correlation_id=8,
                      meta=b"\x80"),
         ErrorCode.UNSUPPORTED_VERSION, UnsupportedVersionError),
        (encode_frame(api_key=ApiKey.METADATA, api_version=0, flags=0, correlation_id=8,
                      meta=b"\xc1\xc1"),
         ErrorCode.INVALID_REQUEST, InvalidRequestError),
        (encode_frame(api_key=ApiKey.METADATA, api_version=0, flags=FrameFlags.RESPONSE,
                      correlation_id=8, meta=b"\x80"),
         ErrorCode.INVALID_REQUEST, InvalidRequestError),
    ],
)  # fmt: skip
def test_undecodable_requests_are_refused_and_the_session_goes_on(
    frame: bytes, code: ErrorCode, error: type[Exception]
) -> None:
    for s in (server(), handshaken()[1]):  # checked before the handshake rule, as in §3.5
        before = s.state
        refused = one(feed(s, frame))
        assert isinstance(refused, RequestRefused) and refused.code == code
        (reply,) = frames_of(join(refused.reply))
        assert reply.header.correlation_id == 8
        with pytest.raises(error):
            decode_response(reply)
        assert s.state is before


def test_an_undecodable_no_response_request_is_dropped_unanswered() -> None:
    _, s = handshaken()
    frame = encode_frame(
        api_key=ApiKey.PRODUCE, api_version=0, flags=FrameFlags.NO_RESPONSE,
        correlation_id=3, meta=b"\xc1",
    )  # fmt: skip
    refused = one(feed(s, frame))
    assert isinstance(refused, RequestRefused)
    assert refused.code == ErrorCode.INVALID_REQUEST and refused.reply == ()


# --- correlation ids --------------------------------------------------------------------------


def test_a_server_echoes_the_correlation_id_and_never_answers_no_response() -> None:
    _, s = handshaken()
    served = one(feed(s, raw_request(METADATA, correlation_id=0xFFFFFFFF)))
    assert isinstance(served, RequestReceived)
    (frame,) = frames_of(join(s.send_response(served.header, m.MetadataResponse())))
    assert frame.header.correlation_id == 0xFFFFFFFF
    assert frame.header.flags & FrameFlags.RESPONSE
    (error,) = frames_of(join(s.send_error(served.header, ErrorCode.STORAGE_ERROR, "disk")))
    assert error.header.correlation_id == 0xFFFFFFFF
    silent = one(feed(s, raw_request(ACKS_NONE, 5, [b"abc"])))
    assert isinstance(silent, RequestReceived)
    assert s.send_response(silent.header, m.ProduceResponse()) == []
    assert s.send_error(silent.header, ErrorCode.STORAGE_ERROR, "disk") == []


def test_responses_in_any_order_reach_their_requests() -> None:
    c, s = handshaken()
    tokens = {}
    for token in ("first", "second", "third"):
        correlation_id, buffers = c.send_request(METADATA, token)
        tokens[correlation_id] = token
        feed(s, join(buffers))
    assert c.in_flight == 3 and len(tokens) == 3
    for correlation_id in sorted(tokens, reverse=True):
        header = header_of([raw_request(METADATA, correlation_id)])
        c.receive_data(join(s.send_response(header, m.MetadataResponse())))
    events = [e for e in iter(c.next_event, None)]
    assert [e.token for e in events if isinstance(e, ResponseReceived)] == [
        tokens[i] for i in sorted(tokens, reverse=True)
    ]
    assert c.in_flight == 0 and c.state is State.OPEN


def test_an_error_response_fails_its_request_and_the_stream_stays_in_sync() -> None:
    c, _ = handshaken()
    _, buffers = c.send_request(METADATA, "metadata")
    header = header_of(buffers)
    failed = one(feed(c, join(encode_error(header, ErrorCode.UNKNOWN_API, "nope"))))
    assert isinstance(failed, ResponseFailed) and failed.token == "metadata"
    assert isinstance(failed.error, UnknownApiError)
    assert c.state is State.OPEN and c.in_flight == 0


def test_a_response_with_an_unknown_correlation_id_is_a_protocol_error() -> None:
    c, _ = handshaken()
    _, buffers = c.send_request(METADATA, "metadata")
    header = header_of(buffers)
    answer = join(encode_response(m.MetadataResponse(), header))
    assert isinstance(one(feed(c, answer)), ResponseReceived)
    c.receive_data(answer)  # the same correlation id again
    with pytest.raises(MalformedMessageError, match="no request in flight"):
        c.next_event()
    assert c.state is State.ERROR
    for again in (c.next_event, lambda: c.receive_data(b"")):
        with pytest.raises(MalformedMessageError):
            again()
    c.close()
    assert c.state is State.ERROR


def test_a_late_response_to_an_expired_request_is_dropped_once() -> None:
    c, _ = handshaken()
    correlation_id, buffers = c.send_request(METADATA, "slow")
    header = header_of(buffers)
    assert c.expire(correlation_id) == "slow" and c.in_flight == 0
    assert c.expire(correlation_id) is None
    _, buffers = c.send_request(METADATA, "on time")
    late = join(encode_response(m.MetadataResponse(), header))
    on_time = join(encode_response(m.MetadataResponse(), header_of(buffers)))
    received = one(feed(c, late + on_time))  # the late one is skipped, not the batch
    assert isinstance(received, ResponseReceived) and received.token == "on time"
    assert c.state is State.OPEN
    c.receive_data(late)  # remembered once: a second answer is a violation
    with pytest.raises(MalformedMessageError):
        c.next_event()


def test_expired_correlation_ids_are_remembered_up_to_the_bound() -> None:
    c, _ = handshaken()
    headers = []
    for _ in range(MAX_EXPIRED + 1):
        correlation_id, buffers = c.send_request(METADATA, "t")
        headers.append(header_of(buffers))
        c.expire(correlation_id)
    assert feed(c, join(encode_response(m.MetadataResponse(), headers[1]))) == []
    c.receive_data(join(encode_response(m.MetadataResponse(), headers[0])))  # forgotten
    with pytest.raises(MalformedMessageError):
        c.next_event()


def test_close_returns_the_tokens_in_flight() -> None:
    c, _ = handshaken()
    c.send_request(METADATA, "one")
    c.send_request(METADATA, "two")
    c.send_no_response(ACKS_NONE, data=[b"abc"])
    assert sorted(c.close()) == ["one", "two"]
    assert c.state is State.CLOSED and c.in_flight == 0
    with pytest.raises(LocalProtocolError):
        c.send_request(METADATA, "three")
    with pytest.raises(LocalProtocolError):
        c.receive_data(b"x")


def test_a_server_session_sends_no_requests_and_needs_an_identity() -> None:
    with pytest.raises(LocalProtocolError):
        handshaken()[1].send_request(METADATA, "x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="BrokerIdentity"):
        WireSession(Role.SERVER)
    with pytest.raises(ValueError, match="BrokerIdentity"):
        WireSession(Role.CLIENT, identity=IDENTITY)


# --- bytes in any chunking --------------------------------------------------------------------


PRODUCE = m.ProduceRequest((m.ProducePartition("t", 0, 5),), acks=1)


def _send_requests(c: WireSession[str]) -> bytes:
    """A handshaken client's requests, with and without data, one without a response."""
    return b"".join(
        (
            join(c.send_request(METADATA, "metadata")[1]),
            join(c.send_request(PRODUCE, "produce", data=[b"ab", b"cde"])[1]),
            join(c.send_no_response(ACKS_NONE, data=[b"xyz"])),
        )
    )


def _conversation() -> tuple[bytes, bytes, bytes]:
    """The bytes of one conversation: the client's (handshake, then requests), the server's
    handshake answer, and the server's responses."""
    c, s = client(), server()
    hello = join(c.send_request(c.handshake_request(), "handshake")[1])
    answered = one(feed(s, hello))
    assert isinstance(answered, HandshakeAnswered)
    feed(c, join(answered.reply))
    requests = _send_requests(c)
    responses = []
    for event in feed(s, requests):
        assert isinstance(event, RequestReceived)
        response = m.MetadataResponse(cluster_id="x") if event.request == METADATA else None
        responses.append(join(s.send_response(event.header, response or m.ProduceResponse())))
    return hello + requests, join(answered.reply), b"".join(responses)


UP, HANDSHAKE_DOWN, DOWN = _conversation()


def _replay(
    up_cuts: Sequence[int], handshake_cuts: Sequence[int], down_cuts: Sequence[int]
) -> tuple[list[Event[Never]], list[Event[str]]]:
    """The events of the conversation replayed with each stream cut at the given places."""
    c, s = client(), server()
    server_events = feed(s, UP, up_cuts)
    c.send_request(c.handshake_request(), "handshake")
    client_events = feed(c, HANDSHAKE_DOWN, handshake_cuts)
    _send_requests(c)
    client_events += feed(c, DOWN, down_cuts)
    assert (s.state, c.state, c.in_flight) == (State.OPEN, State.OPEN, 0)
    return server_events, client_events


WHOLE = _replay((), (), ())


def test_the_conversation_yields_one_event_per_frame() -> None:
    server_events, client_events = WHOLE
    assert [type(e) for e in server_events] == [HandshakeAnswered] + [RequestReceived] * 3
    assert [e.token for e in client_events if isinstance(e, ResponseReceived)] == [
        "handshake", "metadata", "produce",
    ]  # fmt: skip
    assert len(client_events) == 3


def test_one_byte_at_a_time_yields_the_same_events() -> None:
    every_byte = [range(1, len(b)) for b in (UP, HANDSHAKE_DOWN, DOWN)]
    assert _replay(*every_byte) == WHOLE


@PROPERTY
@given(st.data())
def test_any_chunking_yields_the_same_events(data: st.DataObject) -> None:
    cuts = [
        sorted(data.draw(st.lists(st.integers(0, len(b)), max_size=12)))
        for b in (UP, HANDSHAKE_DOWN, DOWN)
    ]
    assert _replay(*cuts) == WHOLE


# --- framing errors and the end of the stream -------------------------------------------------


def _corrupt_checksum() -> bytes:
    frame = bytearray(raw_request(METADATA))
    frame[-1] ^= 0xFF
    return bytes(frame)


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"GET / HTTP/1.1\r\n\r\n", BadMagicError),
        (_corrupt_checksum(), ChecksumMismatchError),
        (raw_request(m.MetadataRequest(topics=("x" * 70_000,))), FrameTooLargeError),
    ],
)
def test_a_framing_error_puts_the_session_in_error_for_good(
    role: Role, data: bytes, error: type[FramingError]
) -> None:
    session = server() if role is Role.SERVER else client()
    session.receive_data(data)
    with pytest.raises(error):
        session.next_event()
    assert session.state is State.ERROR
    with pytest.raises(error):
        session.receive_data(raw_request(METADATA))
    with pytest.raises(error):
        session.receive_eof()
    session.close()
    assert session.state is State.ERROR


def test_the_stream_ending_between_frames_closes_the_session() -> None:
    _, s = handshaken()
    s.receive_eof()
    assert s.state is State.CLOSED
    s.receive_eof()  # idempotent
    with pytest.raises(LocalProtocolError):
        s.receive_data(raw_request(METADATA))


def test_the_stream_ending_inside_a_frame_is_an_error() -> None:
    _, s = handshaken()
    s.receive_data(raw_request(METADATA)[:-3])
    assert s.next_event() is None and s.buffered > 0
    with pytest.raises(TruncatedFrameError):
        s.receive_eof()
    assert s.state is State.ERROR


# --- the state table --------------------------------------------------------------------------


def test_every_state_has_a_row_and_closed_and_error_are_final() -> None:
    assert set(TRANSITIONS) == set(State)
    for state in (State.AWAIT_HANDSHAKE, State.OPEN):
        assert set(TRANSITIONS[state]) == set(Trigger)  # every input has an answer
    for final in (State.CLOSED, State.ERROR):
        assert set(TRANSITIONS[final].values()) == {final}


def test_a_session_walks_the_table() -> None:
    s = server()
    walk = [s.state]
    feed(s, raw_request(m.HandshakeRequest(protocol_versions=(99,)), 1))
    walk.append(s.state)
    feed(s, raw_request(m.HandshakeRequest(), 2))
    walk.append(s.state)
    feed(s, raw_request(m.HandshakeRequest(protocol_versions=(99,)), 3))
    walk.append(s.state)
    s.close()
    walk.append(s.state)
    s.close()
    walk.append(s.state)
    assert walk == [
        State.AWAIT_HANDSHAKE,
        State.AWAIT_HANDSHAKE,  # refused: still waiting
        State.OPEN,
        State.OPEN,  # a refused repeat leaves it open
        State.CLOSED,
        State.CLOSED,
    ]
