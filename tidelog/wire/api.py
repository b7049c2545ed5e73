"""APIs: keys, versions, and the codec between frames and messages. No I/O here.

Both sides drive the same functions: a client encodes with :func:`encode_request` and decodes
with :func:`decode_response`; a broker decodes with :func:`decode_request` and answers with
:func:`encode_response` or :func:`encode_error`. Encoders return the frame as a list of buffers
(header and metadata, then the data section chunks untouched) for ``writelines``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Final, TypeVar

import msgspec

from . import messages as m
from . import replica_messages as rm
from . import share_messages as sm
from .errors import (
    ErrorCode,
    MalformedMessageError,
    UnknownApiError,
    UnsupportedVersionError,
    raise_for_code,
)
from .frame import Frame, FrameFlags, FrameHeader, encode_frame_prefix
from .records import Buffer

_T = TypeVar("_T")


class ApiKey(IntEnum):
    """Identifies an API in every frame header. Values are wire format: never reuse one."""

    HANDSHAKE = 0
    METADATA = 1
    CREATE_TOPICS = 2
    DELETE_TOPICS = 3
    DESCRIBE_CONFIGS = 4
    ALTER_CONFIGS = 5
    PRODUCE = 6
    FETCH = 7
    LIST_OFFSETS = 8
    JOIN_GROUP = 9
    HEARTBEAT = 10
    LEAVE_GROUP = 11
    OFFSET_COMMIT = 12
    OFFSET_FETCH = 13
    LIST_GROUPS = 14
    DESCRIBE_GROUPS = 15
    DELETE_GROUPS = 16
    DESCRIBE_LOG_DIRS = 17
    INIT_PRODUCER_ID = 18
    FIND_COORDINATOR = 19
    ALTER_PARTITION_REASSIGNMENTS = 20
    SHARE_FETCH = 30
    SHARE_ACKNOWLEDGE = 31
    ALTER_SHARE_GROUP = 32
    DESCRIBE_SHARE_GROUP = 33
    OFFSETS_FOR_LEADER_EPOCH = 34


@dataclass(frozen=True, slots=True)
class ApiSpec:
    """One API: its message types and the versions this code speaks. Version ``v`` of an API
    may add fields with defaults; every version in range decodes with the same classes."""

    key: ApiKey
    request: type[m.Request]
    response: type[m.Response]
    min_version: int = 0
    max_version: int = 0
    has_request_data: bool = False
    has_response_data: bool = False


API_SPECS: Final[Mapping[ApiKey, ApiSpec]] = {
    s.key: s
    for s in (
        ApiSpec(ApiKey.HANDSHAKE, m.HandshakeRequest, m.HandshakeResponse),
        ApiSpec(ApiKey.METADATA, m.MetadataRequest, m.MetadataResponse),
        ApiSpec(ApiKey.CREATE_TOPICS, m.CreateTopicsRequest, m.CreateTopicsResponse),
        ApiSpec(ApiKey.DELETE_TOPICS, m.DeleteTopicsRequest, m.DeleteTopicsResponse),
        ApiSpec(ApiKey.DESCRIBE_CONFIGS, m.DescribeConfigsRequest, m.DescribeConfigsResponse),
        ApiSpec(ApiKey.ALTER_CONFIGS, m.AlterConfigsRequest, m.AlterConfigsResponse),
        ApiSpec(ApiKey.PRODUCE, m.ProduceRequest, m.ProduceResponse, has_request_data=True),
        ApiSpec(ApiKey.FETCH, m.FetchRequest, m.FetchResponse, has_response_data=True),
        ApiSpec(ApiKey.LIST_OFFSETS, m.ListOffsetsRequest, m.ListOffsetsResponse),
        ApiSpec(ApiKey.JOIN_GROUP, m.JoinGroupRequest, m.JoinGroupResponse),
        ApiSpec(ApiKey.HEARTBEAT, m.HeartbeatRequest, m.HeartbeatResponse),
        ApiSpec(ApiKey.LEAVE_GROUP, m.LeaveGroupRequest, m.LeaveGroupResponse),
        ApiSpec(ApiKey.OFFSET_COMMIT, m.OffsetCommitRequest, m.OffsetCommitResponse),
        ApiSpec(ApiKey.OFFSET_FETCH, m.OffsetFetchRequest, m.OffsetFetchResponse),
        ApiSpec(ApiKey.LIST_GROUPS, m.ListGroupsRequest, m.ListGroupsResponse),
        ApiSpec(ApiKey.DESCRIBE_GROUPS, m.DescribeGroupsRequest, m.DescribeGroupsResponse),
        ApiSpec(ApiKey.DELETE_GROUPS, m.DeleteGroupsRequest, m.DeleteGroupsResponse),
        ApiSpec(ApiKey.DESCRIBE_LOG_DIRS, m.DescribeLogDirsRequest, m.DescribeLogDirsResponse),
        ApiSpec(ApiKey.INIT_PRODUCER_ID, m.InitProducerIdRequest, m.InitProducerIdResponse),
        ApiSpec(ApiKey.FIND_COORDINATOR, m.FindCoordinatorRequest, m.FindCoordinatorResponse),
        ApiSpec(
            ApiKey.ALTER_PARTITION_REASSIGNMENTS,
            m.AlterPartitionReassignmentsRequest,
            m.AlterPartitionReassignmentsResponse,
        ),
        ApiSpec(ApiKey.SHARE_FETCH, sm.ShareFetchRequest, sm.ShareFetchResponse),
        ApiSpec(ApiKey.SHARE_ACKNOWLEDGE, sm.ShareAcknowledgeRequest, sm.ShareAcknowledgeResponse),
        ApiSpec(ApiKey.ALTER_SHARE_GROUP, sm.AlterShareGroupRequest, sm.AlterShareGroupResponse),
        ApiSpec(
            ApiKey.DESCRIBE_SHARE_GROUP, sm.DescribeShareGroupRequest, sm.DescribeShareGroupResponse
        ),
        ApiSpec(
            ApiKey.OFFSETS_FOR_LEADER_EPOCH,
            rm.OffsetsForLeaderEpochRequest,
            rm.OffsetsForLeaderEpochResponse,
        ),
    )
}

DEFAULT_BROKER_PORT: Final = 7070
"""The port a broker listens on and a client connects to when none is given."""
MAX_TOPIC_NAME_LENGTH: Final = 255 - len(".json") - len(".0123456789ab.tmp")
INTERNAL_TOPIC_PREFIX: Final = "__"
"""Topic names starting with this are reserved for the broker's internal topics."""
INTERNAL_TOPICS: Final = frozenset({"__consumer_offsets", "__share_group_state"})
"""The internal topics: left out of a Metadata or DescribeLogDirs answer about every topic
(and marked ``internal`` when named)."""
"""233: what a broker's files allow. A topic's longest file name is the temporary file of its
topic file's atomic write, ``<name>.json.<12 hex>.tmp``, and Linux file systems allow 255 bytes
(Kafka's 249 leaves room only for ``-<partition>``)."""

HANDSHAKE_VERSION: Final = 0
"""The handshake is always sent at API version 0 and frame protocol version 1, whatever else
changes, so any two peers can at least agree that they cannot talk."""

_SPEC_OF_KEY: Final[dict[int, ApiSpec]] = {int(k): s for k, s in API_SPECS.items()}
_API_OF_REQUEST: Final = {s.request: s for s in API_SPECS.values()}
_API_OF_RESPONSE: Final = {s.response: s for s in API_SPECS.values()}
_ENCODER: Final = msgspec.msgpack.Encoder()
_REQUEST_DECODERS: Final = {k: msgspec.msgpack.Decoder(s.request) for k, s in API_SPECS.items()}
_RESPONSE_DECODERS: Final = {k: msgspec.msgpack.Decoder(s.response) for k, s in API_SPECS.items()}
_ERROR_DECODER: Final = msgspec.msgpack.Decoder(m.ErrorResponse)


def api_of(message: m.Request | m.Response) -> ApiSpec:
    """The API a request or response message belongs to."""
    kind: type = type(message)
    spec = _API_OF_REQUEST.get(kind) or _API_OF_RESPONSE.get(kind)
    if spec is None:
        raise TypeError(f"{type(message).__name__} is not a tidelog message")
    return spec


def supported_versions() -> tuple[m.ApiVersionRange, ...]:
    """This code's version range for every API, as sent in a handshake."""
    return tuple(
        m.ApiVersionRange(int(s.key), s.min_version, s.max_version) for s in API_SPECS.values()
    )


def negotiate_versions(theirs: Iterable[m.ApiVersionRange]) -> dict[ApiKey, int]:
    """For each API both sides know, the highest version both speak. APIs with no common
    version are left out: using one raises :class:`UnsupportedVersionError` locally."""
    chosen: dict[ApiKey, int] = {}
    for r in theirs:
        spec = API_SPECS.get(r.api_key)  # type: ignore[call-overload]
        if spec is None:
            continue
        high = min(spec.max_version, r.max_version)
        if high >= max(spec.min_version, r.min_version):
            chosen[spec.key] = high
    return chosen


def negotiate_protocol(theirs: Iterable[int], ours: Iterable[int]) -> int | None:
    """The highest frame protocol version both sides speak, or ``None``."""
    common = set(theirs) & set(ours)
    return max(common) if common else None


def _encode(
    message: object,
    *,
    api_key: int,
    api_version: int,
    flags: int,
    correlation_id: int,
    data: Sequence[Buffer],
) -> list[Buffer]:
    meta = _ENCODER.encode(message)
    prefix = encode_frame_prefix(
        api_key=api_key,
        api_version=api_version,
        flags=flags,
        correlation_id=correlation_id,
        meta=meta,
        data_length=sum(len(c) for c in data),
    )
    return [prefix, *data]


def encode_request(
    message: m.Request,
    correlation_id: int,
    *,
    api_version: int | None = None,
    data: Sequence[Buffer] = (),
) -> list[Buffer]:
    """Frame a request. ``api_version`` defaults to the newest this code speaks; produce with
    ``acks=NONE`` is flagged NO_RESPONSE so the broker's connection knows not to answer."""
    spec = api_of(message)
    version = spec.max_version if api_version is None else api_version
    if not spec.min_version <= version <= spec.max_version:
        raise UnsupportedVersionError(f"{spec.key.name} version {version} is not supported here")
    flags = FrameFlags.NONE
    if isinstance(message, m.ProduceRequest) and message.acks == m.Acks.NONE:
        flags |= FrameFlags.NO_RESPONSE
    return _encode(
        message,
        api_key=spec.key,
        api_version=version,
        flags=flags,
        correlation_id=correlation_id,
        data=data,
    )


def encode_response(
    message: m.Response, request: FrameHeader, *, data: Sequence[Buffer] = ()
) -> list[Buffer]:
    """Frame the response to ``request`` (same API, version and correlation id)."""
    spec = api_of(message)
    if spec.key != request.api_key:
        raise TypeError(f"{type(message).__name__} does not answer API {request.api_key}")
    return _encode(
        message,
        api_key=request.api_key,
        api_version=request.api_version,
        flags=FrameFlags.RESPONSE,
        correlation_id=request.correlation_id,
        data=data,
    )


def encode_error(request: FrameHeader, code: ErrorCode, message: str = "") -> list[Buffer]:
    """Frame an :class:`~tidelog.wire.messages.ErrorResponse` for a request that failed whole."""
    return _encode(
        m.ErrorResponse(int(code), message),
        api_key=request.api_key,
        api_version=request.api_version,
        flags=FrameFlags.RESPONSE | FrameFlags.ERROR,
        correlation_id=request.correlation_id,
        data=(),
    )


def decode_request(frame: Frame) -> m.Request:
    """The request a frame carries.

    Raises :class:`UnknownApiError` or :class:`UnsupportedVersionError` (answer with
    :func:`encode_error`, the stream is still in sync) and :class:`MalformedMessageError` when
    the body does not decode to the API's request.
    """
    h = frame.header
    if h.flags & FrameFlags.RESPONSE:
        raise MalformedMessageError("expected a request, got a frame flagged as a response")
    spec = _spec(h)
    message: m.Request = _decode(_REQUEST_DECODERS[spec.key], frame.meta, spec.key)
    if not spec.has_request_data and h.data_length:
        raise MalformedMessageError(f"{spec.key.name} requests carry no data section")
    return message


def decode_response(frame: Frame) -> m.Response:
    """The response a frame carries. An ERROR-flagged frame raises the exception for its code
    (e.g. :class:`UnknownApiError`); an undecodable body raises :class:`MalformedMessageError`.
    """
    h = frame.header
    if not h.flags & FrameFlags.RESPONSE:
        raise MalformedMessageError("expected a response, got a frame flagged as a request")
    if h.flags & FrameFlags.ERROR:
        error: m.ErrorResponse = _decode(_ERROR_DECODER, frame.meta, "ErrorResponse")
        raise_for_code(error.error_code or ErrorCode.UNKNOWN_SERVER_ERROR, error.message or None)
    spec = _spec(h)
    message: m.Response = _decode(_RESPONSE_DECODERS[spec.key], frame.meta, spec.key)
    if not spec.has_response_data and h.data_length:
        raise MalformedMessageError(f"{spec.key.name} responses carry no data section")
    return message


def _spec(header: FrameHeader) -> ApiSpec:
    spec = _SPEC_OF_KEY.get(header.api_key)  # by int: an ApiKey(...) call is enum machinery
    if spec is None:
        raise UnknownApiError(f"unknown API key {header.api_key}")
    if not spec.min_version <= header.api_version <= spec.max_version:
        raise UnsupportedVersionError(
            f"{spec.key.name} version {header.api_version} is not supported "
            f"(supported: {spec.min_version}..{spec.max_version})"
        )
    return spec


def _decode(decoder: msgspec.msgpack.Decoder[_T], meta: bytes, what: object) -> _T:
    try:
        return decoder.decode(meta)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        name = what.name if isinstance(what, ApiKey) else what
        raise MalformedMessageError(f"cannot decode {name} body: {exc}") from None


def split_data(sizes: Sequence[int], data: bytearray) -> list[memoryview]:
    """Cut a frame's data section into the per-partition pieces a message's ``size`` fields
    describe. The sizes must add up to the section exactly, or :class:`MalformedMessageError`.
    """
    if any(s < 0 for s in sizes) or sum(sizes) != len(data):
        raise MalformedMessageError(
            f"partition sizes add up to {sum(sizes)} bytes, the data section has {len(data)}"
        )
    view = memoryview(data)
    out: list[memoryview] = []
    pos = 0
    for size in sizes:
        out.append(view[pos : pos + size])
        pos += size
    return out
