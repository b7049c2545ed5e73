"""The connection session, sans-IO: bytes in, events out, for either end of one connection.

A :class:`WireSession` is what a broker's connection and a client's connection both drive, in
h11's shape: ``receive_data()`` takes bytes, ``next_event()`` hands out one event per frame,
and the ``send_*`` methods turn messages into buffers for ``writelines``. It wraps the
:class:`~tidelog.wire.frame.FrameDecoder` and the encoders of :mod:`tidelog.wire.api`, and owns
the protocol rules that sit above single frames (docs/PROTOCOL.md §2-§4):

* the handshake and the choice of protocol and API versions. A server session answers the
  handshake itself, from the :class:`BrokerIdentity` it was built with; a client session
  checks the broker's answer and keeps the negotiated API versions;
* "handshake first": before a handshake has succeeded, a server session answers every other
  request with ``HANDSHAKE_REQUIRED`` (a ``NO_RESPONSE`` frame is dropped unanswered), and
  takes no frame above :data:`~tidelog.wire.frame.MAX_HANDSHAKE_FRAME_SIZE` (a framing error):
  a client that has not said who it is cannot make the broker hold a large frame;
* correlation ids: a client session allocates them and matches each response to the request's
  token; a response to an id with no request in flight is a protocol violation. A server
  session echoes the id of the request it answers;
* the connection's state, as a table (:data:`TRANSITIONS`).

Which events a session hands out depends on its role. A server gets :class:`RequestReceived`
(serve it), :class:`HandshakeAnswered` and :class:`RequestRefused` (write ``reply``, if any).
A client gets :class:`ResponseReceived` and :class:`ResponseFailed`, each with the token given
to :meth:`WireSession.send_request`. A :class:`~tidelog.wire.errors.ProtocolError` raised by
``next_event()`` or ``receive_eof()`` puts the session in ``ERROR`` for good: close the
connection, a stream that lied once is never resynchronised.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Final, Generic, NamedTuple, Never, TypeAlias, TypeVar, cast, overload

from . import messages as m
from .api import (
    HANDSHAKE_VERSION,
    ApiKey,
    api_of,
    decode_request,
    decode_response,
    encode_error,
    encode_request,
    encode_response,
    negotiate_protocol,
    negotiate_versions,
    supported_versions,
)
from .errors import (
    BrokerError,
    ErrorCode,
    FramingError,
    MalformedMessageError,
    ProtocolError,
    TidelogError,
    UnsupportedVersionError,
)
from .frame import (
    DEFAULT_MAX_FRAME_SIZE,
    MAX_HANDSHAKE_FRAME_SIZE,
    SUPPORTED_PROTOCOL_VERSIONS,
    FrameDecoder,
    FrameFlags,
    FrameHeader,
)
from .records import Buffer

T = TypeVar("T")

MAX_EXPIRED: Final = 4096
"""Timed-out correlation ids a client session remembers, so that their late responses are
dropped instead of taken for protocol violations."""
_U32: Final = 0xFFFFFFFF
_HANDSHAKE: Final = ApiKey.HANDSHAKE
_NO_RESPONSE: Final = FrameFlags.NO_RESPONSE
_HANDSHAKE_LIMIT: Final = "the limit before a handshake (MAX_HANDSHAKE_FRAME_SIZE)"


class LocalProtocolError(TidelogError):
    """This side used a session against the protocol (a request before the handshake, input
    after close): a bug in the owner, never the peer's doing."""


class Role(Enum):
    CLIENT = "client"
    SERVER = "server"


class State(Enum):
    AWAIT_HANDSHAKE = "await-handshake"
    OPEN = "open"
    CLOSED = "closed"
    ERROR = "error"


class Trigger(Enum):
    """What moves a session from one state to another."""

    HANDSHAKE_ACCEPTED = "handshake-accepted"
    HANDSHAKE_REFUSED = "handshake-refused"  # no common protocol version
    CLOSE = "close"  # the peer ended the stream between frames, or the owner closed
    PROTOCOL_ERROR = "protocol-error"  # a framing error, or a response nobody asked for


_AWAIT: Final = State.AWAIT_HANDSHAKE
_OPEN: Final = State.OPEN
_CLOSED: Final = State.CLOSED
_ERROR: Final = State.ERROR

TRANSITIONS: Final[Mapping[State, Mapping[Trigger, State]]] = {
    _AWAIT: {
        Trigger.HANDSHAKE_ACCEPTED: _OPEN,
        Trigger.HANDSHAKE_REFUSED: _AWAIT,  # the client closes; the broker keeps refusing
        Trigger.CLOSE: _CLOSED,
        Trigger.PROTOCOL_ERROR: _ERROR,
    },
    _OPEN: {
        # A broker answers a repeated handshake, and a handshaken connection stays so.
        Trigger.HANDSHAKE_ACCEPTED: _OPEN,
        Trigger.HANDSHAKE_REFUSED: _OPEN,
        Trigger.CLOSE: _CLOSED,
        Trigger.PROTOCOL_ERROR: _ERROR,
    },
    _CLOSED: {Trigger.CLOSE: _CLOSED},
    _ERROR: {Trigger.CLOSE: _ERROR},
}
"""Every legal transition; a trigger missing from a state's row raises LocalProtocolError."""


@dataclass(frozen=True, slots=True)
class BrokerIdentity:
    """What a broker says about itself in a handshake response: given to a server session, and
    learned by a client session from the broker's answer."""

    broker_id: int
    cluster_id: str
    server_version: str
    max_frame_size: int


# --- events -----------------------------------------------------------------------------------
# The two built for every frame are named tuples (like FrameHeader: a frozen dataclass costs
# several times as much to build); the rare ones are frozen dataclasses.


class RequestReceived(NamedTuple):
    """Server: a handshaken client's request, decoded, for the owner to serve."""

    header: FrameHeader
    request: m.Request
    data: bytearray


class ResponseReceived(NamedTuple, Generic[T]):
    """Client: the response to the request sent with ``token``."""

    token: T
    response: m.Response
    data: bytearray


@dataclass(frozen=True, slots=True)
class ResponseFailed(Generic[T]):
    """Client: the request sent with ``token`` failed whole: an error response (its registry
    class) or a body that does not decode. The stream is still in sync."""

    token: T
    error: TidelogError


@dataclass(frozen=True, slots=True)
class HandshakeAnswered:
    """Server: a handshake the session answered itself; write ``reply``."""

    request: m.HandshakeRequest
    response: m.HandshakeResponse
    reply: Sequence[Buffer]

    @property
    def accepted(self) -> bool:
        return not self.response.error_code


@dataclass(frozen=True, slots=True)
class RequestRefused:
    """Server: a request the session answered with an error response itself (undecodable, an
    unknown API or version, no handshake yet). ``reply`` is empty for a NO_RESPONSE request,
    which is dropped unanswered."""

    header: FrameHeader
    code: ErrorCode
    message: str
    reply: Sequence[Buffer]


ServerEvent: TypeAlias = RequestReceived | HandshakeAnswered | RequestRefused
ClientEvent: TypeAlias = ResponseReceived[T] | ResponseFailed[T]
Event: TypeAlias = ServerEvent | ClientEvent[T]


_new_tuple: Final = tuple.__new__  # skips a named tuple's Python-level __new__ per frame


class WireSession(Generic[T]):
    """One connection's protocol state, for the ``role`` this side plays.

    A server session needs ``identity`` (its frame limit is ``identity.max_frame_size`` once
    a handshake has succeeded, :data:`MAX_HANDSHAKE_FRAME_SIZE` before); a client session
    takes ``client_id``, ``client_version`` and ``max_frame_size`` and holds one token of
    type ``T`` (never ``None``) per request awaiting its response.
    """

    __slots__ = (
        "_decoder",
        "_expired",
        "_handshake_id",
        "_handshake_sent",
        "_is_client",
        "_next_id",
        "_outstanding",
        "_state",
        "_stop",
        "api_versions",
        "broker",
        "client_id",
        "client_version",
        "protocol_version",
        "role",
    )

    def __init__(
        self,
        role: Role,
        *,
        identity: BrokerIdentity | None = None,
        client_id: str = "",
        client_version: str = "",
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    ) -> None:
        if (role is Role.SERVER) != (identity is not None):
            raise ValueError("a server session needs a BrokerIdentity, a client session none")
        self.role = role
        self.broker = identity
        """The broker's identity: a server's own; a client's once a handshake succeeded."""
        self.client_id = client_id
        """The client's name: a client's own; a server's from the last handshake."""
        self.client_version = client_version
        self.api_versions: dict[ApiKey, int] = {ApiKey.HANDSHAKE: HANDSHAKE_VERSION}
        """Per API, the version both sides speak (only the handshake until one succeeds)."""
        self.protocol_version: int | None = None
        self._is_client = role is Role.CLIENT
        if identity is None:
            self._decoder = FrameDecoder(max_frame_size, SUPPORTED_PROTOCOL_VERSIONS)
        else:
            limit = min(MAX_HANDSHAKE_FRAME_SIZE, identity.max_frame_size)
            self._decoder = FrameDecoder(limit, SUPPORTED_PROTOCOL_VERSIONS)
            self._decoder.set_limit(limit, _HANDSHAKE_LIMIT)
        self._state = _AWAIT
        self._stop: TidelogError | None = None  # why no more input is taken
        self._outstanding: dict[int, T] = {}
        self._expired: dict[int, None] = {}  # timed-out correlation ids, oldest first
        self._next_id = 0
        self._handshake_id: int | None = None
        self._handshake_sent = False

    @property
    def state(self) -> State:
        return self._state

    @property
    def in_flight(self) -> int:
        """Requests sent whose response has not arrived (a client's; always 0 on a server)."""
        return len(self._outstanding)

    @property
    def buffered(self) -> int:
        """Bytes received but not handed out as events yet (at most one frame past the last
        whole one, bounded by the frame limit)."""
        return self._decoder.buffered

    @property
    def pending_frame_size(self) -> int:
        """The whole size of the frame being received, once its header has been checked by
        ``next_event()`` (0 otherwise): an owner can budget the bytes before it reads them."""
        return self._decoder.pending_frame_size

    # --- input ------------------------------------------------------------------------------

    def receive_data(self, data: Buffer) -> None:
        """Take bytes from the peer; ``next_event()`` hands out what they complete."""
        if self._stop is not None:
            raise self._stop
        self._decoder.feed(data)

    def receive_eof(self) -> None:
        """The peer ended the stream. Take every event out first: bytes still held are a frame
        cut short, :class:`~tidelog.wire.errors.TruncatedFrameError`."""
        if self._state is _CLOSED:
            return
        if self._stop is not None:
            raise self._stop
        try:
            self._decoder.close()
        except FramingError as exc:
            self._fail(exc)
            raise
        self._fire(Trigger.CLOSE)
        self._stop = LocalProtocolError("the peer ended the stream")

    # A server session holds no tokens: typed WireSession[Never], it gets server events. (A
    # WireSession[Never] also fits the second signature, hence the overlap mypy reports.)
    @overload
    def next_event(self: WireSession[Never]) -> ServerEvent | None: ...  # type: ignore[overload-overlap]
    @overload
    def next_event(self: WireSession[T]) -> ClientEvent[T] | None: ...
    def next_event(self) -> Event[T] | None:
        """The next event, or ``None`` until more bytes arrive. Raises
        :class:`~tidelog.wire.errors.ProtocolError` (the session is then in ``ERROR``)."""
        # One method for both roles, the hot paths inline: a call costs as much as the event.
        if self._stop is not None:
            raise self._stop
        while True:
            try:
                frame = self._decoder.next_frame()
            except FramingError as exc:
                self._fail(exc)
                raise
            if frame is None:
                return None
            header = frame.header
            if self._is_client:
                correlation_id = header.correlation_id
                token = self._outstanding.pop(correlation_id, None)
                if token is None:
                    self._unexpected(correlation_id)  # raises unless the response is late
                    continue
                try:
                    response = decode_response(frame)
                except TidelogError as exc:
                    return ResponseFailed(token, exc)
                if correlation_id == self._handshake_id and type(response) is m.HandshakeResponse:
                    self._take_handshake(correlation_id, token, response)
                return _new_tuple(ResponseReceived, (token, response, frame.data))
            if self._state is not _OPEN and header.flags & _NO_RESPONSE:
                return RequestRefused(
                    header, ErrorCode.HANDSHAKE_REQUIRED, "sent before the handshake", ()
                )
            try:
                request = decode_request(frame)
            except BrokerError as exc:
                return self._refuse(header, exc.code, exc.message)
            except MalformedMessageError as exc:
                return self._refuse(header, ErrorCode.INVALID_REQUEST, str(exc))
            if type(request) is m.HandshakeRequest:
                return self._answer_handshake(header, request)
            if self._state is not _OPEN:
                return self._refuse(
                    header, ErrorCode.HANDSHAKE_REQUIRED, "send a HandshakeRequest first"
                )
            return _new_tuple(RequestReceived, (header, request, frame.data))

    def _refuse(self, header: FrameHeader, code: ErrorCode, message: str) -> RequestRefused:
        reply = () if header.flags & _NO_RESPONSE else encode_error(header, code, message)
        return RequestRefused(header, code, message, reply)

    def _answer_handshake(
        self, header: FrameHeader, request: m.HandshakeRequest
    ) -> HandshakeAnswered:
        identity = self.broker
        assert identity is not None  # a server session always has one
        self.client_id = request.client_id
        self.client_version = request.client_version
        version = negotiate_protocol(request.protocol_versions, SUPPORTED_PROTOCOL_VERSIONS)
        if version is None:
            response = m.HandshakeResponse(
                error_code=ErrorCode.UNSUPPORTED_VERSION,
                error_message=f"this broker speaks protocol versions "
                f"{sorted(SUPPORTED_PROTOCOL_VERSIONS)}",
                api_versions=supported_versions(),
                server_version=identity.server_version,
            )
            self._fire(Trigger.HANDSHAKE_REFUSED)
        else:
            self._agree(version, request.api_versions)
            response = m.HandshakeResponse(
                protocol_version=version,
                api_versions=supported_versions(),
                broker_id=identity.broker_id,
                cluster_id=identity.cluster_id,
                server_version=identity.server_version,
                max_frame_size=identity.max_frame_size,
            )
            self._fire(Trigger.HANDSHAKE_ACCEPTED)
            self._decoder.set_limit(identity.max_frame_size)
        return HandshakeAnswered(request, response, encode_response(response, header))

    def _unexpected(self, correlation_id: int) -> None:
        """A response to no request in flight: dropped if its request timed out, else a
        protocol violation."""
        if correlation_id not in self._expired:
            raise self._fail(
                MalformedMessageError(
                    f"the broker answered correlation id {correlation_id}, which has no "
                    "request in flight"
                )
            )
        del self._expired[correlation_id]

    def _take_handshake(self, correlation_id: int, token: T, response: m.HandshakeResponse) -> None:
        self._handshake_id = None
        if response.error_code:
            self._fire(Trigger.HANDSHAKE_REFUSED)
            return
        if response.protocol_version not in SUPPORTED_PROTOCOL_VERSIONS:
            self._outstanding[correlation_id] = token  # fails with the rest at close()
            raise self._fail(
                MalformedMessageError(
                    f"the broker chose protocol version {response.protocol_version}, which "
                    f"this client did not offer ({sorted(SUPPORTED_PROTOCOL_VERSIONS)})"
                )
            )
        self._agree(response.protocol_version, response.api_versions)
        self.broker = BrokerIdentity(
            response.broker_id, response.cluster_id, response.server_version,
            response.max_frame_size,
        )  # fmt: skip
        self._fire(Trigger.HANDSHAKE_ACCEPTED)

    def _agree(self, protocol_version: int, theirs: Sequence[m.ApiVersionRange]) -> None:
        self.protocol_version = protocol_version
        versions = negotiate_versions(theirs)
        versions[ApiKey.HANDSHAKE] = HANDSHAKE_VERSION
        self.api_versions = versions

    # --- output: client ---------------------------------------------------------------------

    def handshake_request(self) -> m.HandshakeRequest:
        """The handshake this client opens with; send it with :meth:`send_request`."""
        return m.HandshakeRequest(
            client_id=self.client_id,
            client_version=self.client_version,
            protocol_versions=tuple(sorted(SUPPORTED_PROTOCOL_VERSIONS)),
            api_versions=supported_versions(),
        )

    def send_request(
        self, message: m.Request, token: T, *, data: Sequence[Buffer] = ()
    ) -> tuple[int, list[Buffer]]:
        """Frame a request at the negotiated version; its response will come back as an event
        carrying ``token``. Returns the correlation id and the buffers to write.

        Raises :class:`UnsupportedVersionError` for an API the peer does not share and
        :class:`LocalProtocolError` for a request before the handshake or after close.
        """
        key = api_of(message).key
        self._next_id = correlation_id = (self._next_id + 1) & _U32
        if key is _HANDSHAKE or self._state is not _OPEN or not self._is_client:
            self._check_send(key, correlation_id)
        version = self.api_versions.get(key)
        if version is None:
            raise UnsupportedVersionError(
                f"{key.name} is not supported at any version both sides speak (upgrade the "
                "client or the broker)"
            )
        buffers = encode_request(message, correlation_id, api_version=version, data=data)
        self._outstanding[correlation_id] = token
        return correlation_id, buffers

    def send_no_response(self, message: m.Request, *, data: Sequence[Buffer] = ()) -> list[Buffer]:
        """Frame a request the peer does not answer (produce with ``acks=NONE``): its
        correlation id is not in flight. Raises as :meth:`send_request`."""
        correlation_id, buffers = self.send_request(message, cast(T, None), data=data)
        del self._outstanding[correlation_id]
        return buffers

    def expire(self, correlation_id: int) -> T | None:
        """The request's deadline passed: stop waiting for it and return its token (``None``
        if it is not in flight). Its late response, if it comes, is dropped."""
        token = self._outstanding.pop(correlation_id, None)
        if token is not None:
            expired = self._expired
            expired[correlation_id] = None
            if len(expired) > MAX_EXPIRED:
                del expired[next(iter(expired))]
        return token

    def _check_send(self, key: ApiKey, correlation_id: int) -> None:
        if not self._is_client:
            raise LocalProtocolError("a server session sends responses, not requests")
        if self._stop is not None:
            raise LocalProtocolError(f"the session is {self._state.value}: {self._stop}")
        if key is not _HANDSHAKE:
            if self._state is not _OPEN:
                raise LocalProtocolError(f"{key.name} before the handshake has succeeded")
            return
        if self._handshake_sent:
            raise LocalProtocolError("a client sends one handshake per connection")
        self._handshake_sent = True
        self._handshake_id = correlation_id

    # --- output: server ---------------------------------------------------------------------

    def send_response(
        self, request: FrameHeader, response: m.Response, *, data: Sequence[Buffer] = ()
    ) -> list[Buffer]:
        """Frame the response to ``request`` (its correlation id echoed); no buffers for a
        NO_RESPONSE request."""
        if request.flags & _NO_RESPONSE:
            return []
        return encode_response(response, request, data=data)

    def send_error(self, request: FrameHeader, code: ErrorCode, message: str = "") -> list[Buffer]:
        """Frame an error response to ``request``; no buffers for a NO_RESPONSE request."""
        if request.flags & _NO_RESPONSE:
            return []
        return encode_error(request, code, message)

    # --- closing ----------------------------------------------------------------------------

    def close(self) -> list[T]:
        """This side closes: no more input is taken and the bytes held are dropped. Returns
        the tokens of the requests still in flight, which will never be answered."""
        self._fire(Trigger.CLOSE)
        if self._stop is None:
            self._stop = LocalProtocolError("the session is closed")
        self._decoder.discard()
        tokens = list(self._outstanding.values())
        self._outstanding.clear()
        return tokens

    def _fail(self, exc: ProtocolError) -> ProtocolError:
        """Enter ERROR for ``exc``, which every later input call raises again."""
        self._stop = exc
        self._fire(Trigger.PROTOCOL_ERROR)
        return exc

    def _fire(self, trigger: Trigger) -> None:
        new = TRANSITIONS[self._state].get(trigger)
        if new is None:
            raise LocalProtocolError(
                f"{trigger.value} is not possible in state {self._state.value}"
            )
        self._state = new

    def __repr__(self) -> str:
        return f"<WireSession {self.role.value} {self._state.value} {self.in_flight} in flight>"


ServerSession: TypeAlias = WireSession[Never]
"""A server session never holds request tokens."""
