"""Messages and the API codec: requests and responses through frames and back."""

from __future__ import annotations

import contextlib
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidelog.wire import (
    API_SPECS,
    ApiKey,
    Frame,
    FrameFlags,
    FrameHeader,
    RecordBatchBuilder,
    decode_request,
    decode_response,
    encode_error,
    encode_frame,
    encode_request,
    encode_response,
    iter_batches,
    negotiate_protocol,
    negotiate_versions,
    split_data,
    supported_versions,
)
from tidelog.wire import messages as m
from tidelog.wire import replica_messages as rm
from tidelog.wire import share_messages as sm
from tidelog.wire.api import api_of
from tidelog.wire.errors import (
    ERRORS,
    BrokerError,
    ErrorCode,
    MalformedMessageError,
    NotLeaderError,
    UnknownApiError,
    UnknownServerError,
    UnsupportedVersionError,
    error_class,
)

from .strategies import (
    PROPERTY,
    QUICK,
    REQUEST_CLASSES,
    RESPONSE_CLASSES,
    TOLERATED_BY_DECODERS,
    decode_all,
    join,
    message_strategy,
)

U32 = st.integers(0, 0xFFFFFFFF)


def one_frame(parts: list[Any]) -> Frame:
    (frame,) = decode_all(join(parts))
    return frame


def request_header(key: ApiKey, correlation_id: int = 5, api_version: int = 0) -> FrameHeader:
    return FrameHeader(1, int(key), api_version, 0, correlation_id, 0, 0, 0)


def raw_frame(
    api_key: int, meta: bytes, *, flags: int = 0, version: int = 0, data: bytes = b""
) -> Frame:
    """A frame with a valid CRC around whatever metadata bytes the test chose."""
    return one_frame(
        [
            encode_frame(
                api_key=api_key,
                api_version=version,
                flags=flags,
                correlation_id=1,
                meta=meta,
                data=[data],
            )
        ]
    )


# --- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", REQUEST_CLASSES, ids=lambda c: c.__name__)
@QUICK
@given(data=st.data(), correlation_id=U32)
def test_every_request_round_trips(cls: type, data: st.DataObject, correlation_id: int) -> None:
    message = data.draw(message_strategy(cls))
    spec = api_of(message)

    frame = one_frame(encode_request(message, correlation_id))

    assert decode_request(frame) == message
    h = frame.header
    assert (h.api_key, h.api_version, h.correlation_id) == (
        spec.key,
        spec.max_version,
        correlation_id,
    )
    assert not h.is_response


@pytest.mark.parametrize("cls", RESPONSE_CLASSES, ids=lambda c: c.__name__)
@QUICK
@given(data=st.data(), correlation_id=U32)
def test_every_response_round_trips_and_echoes_the_request(
    cls: type, data: st.DataObject, correlation_id: int
) -> None:
    message = data.draw(message_strategy(cls))
    spec = api_of(message)
    request = request_header(spec.key, correlation_id, spec.max_version)

    frame = one_frame(encode_response(message, request))

    assert decode_response(frame) == message
    h = frame.header
    assert (h.api_key, h.api_version, h.correlation_id) == (
        spec.key,
        spec.max_version,
        correlation_id,
    )
    assert h.flags == FrameFlags.RESPONSE
    assert h.is_response


def test_a_request_fed_one_byte_at_a_time_decodes_the_same() -> None:
    message = m.JoinGroupRequest(
        "group", subscribed_topics=("a", "b"), instance_id="i-1", session_timeout_ms=10_000
    )
    data = join(encode_request(message, 99))

    (frame,) = decode_all(data, range(1, len(data)))

    assert decode_request(frame) == message


def test_produce_request_carries_batches_in_its_data_section() -> None:
    batches = []
    for i in range(3):
        builder = RecordBatchBuilder()
        builder.append(b"v%d" % i, timestamp=i)
        batches.append(builder.build())
    message = m.ProduceRequest(
        (
            m.ProducePartition("a", 0, len(batches[0]) + len(batches[1])),
            m.ProducePartition("b", 3, len(batches[2])),
        ),
        acks=m.Acks.ALL,
    )

    frame = one_frame(encode_request(message, 1, data=batches))
    decoded = decode_request(frame)

    assert isinstance(decoded, m.ProduceRequest)
    pieces = split_data([p.size for p in decoded.partitions], frame.data)
    assert [[b.records()[0].value for b in iter_batches(p)] for p in pieces] == [
        [b"v0", b"v1"],
        [b"v2"],
    ]
    assert not frame.header.flags & FrameFlags.NO_RESPONSE


def test_fetch_response_carries_batches_in_its_data_section() -> None:
    builder = RecordBatchBuilder()
    builder.append(b"x", timestamp=1)
    batch = builder.build()
    message = m.FetchResponse((m.FetchPartitionResult("t", 0, high_watermark=1, size=len(batch)),))

    frame = one_frame(encode_response(message, request_header(ApiKey.FETCH), data=[batch]))

    assert decode_response(frame) == message
    assert bytes(frame.data) == batch


@pytest.mark.parametrize(
    ("acks", "flags"),
    [
        (m.Acks.NONE, FrameFlags.NO_RESPONSE),
        (m.Acks.LEADER, FrameFlags.NONE),
        (m.Acks.ALL, FrameFlags.NONE),
    ],
)
def test_produce_with_acks_none_is_flagged_no_response(acks: int, flags: FrameFlags) -> None:
    frame = one_frame(encode_request(m.ProduceRequest((), acks=acks), 1))

    assert frame.header.flags == flags


def test_unknown_fields_are_ignored_and_missing_fields_take_their_defaults() -> None:
    meta = msgspec.msgpack.encode({"allow_auto_create": True, "added_in_v9": [1, {"x": 2}]})

    decoded = decode_request(raw_frame(ApiKey.METADATA, meta))

    assert decoded == m.MetadataRequest(topics=None, allow_auto_create=True)


@pytest.mark.parametrize("reserved", [0x08, 0x80, 0xFFF8])
def test_reserved_flag_bits_are_ignored(reserved: int) -> None:
    request = raw_frame(ApiKey.METADATA, b"\x80", flags=reserved)
    response = raw_frame(ApiKey.METADATA, b"\x80", flags=reserved | FrameFlags.RESPONSE)

    assert decode_request(request) == m.MetadataRequest()
    assert decode_response(response) == m.MetadataResponse()


def test_unknown_keys_are_ignored_at_every_nesting_level() -> None:
    meta = msgspec.msgpack.encode(
        {"partitions": [{"topic": "t", "partition": 1, "size": 0, "later": {"x": [1]}}]}
    )

    decoded = decode_request(raw_frame(ApiKey.PRODUCE, meta))

    assert decoded == m.ProduceRequest((m.ProducePartition("t", 1, 0),))


@pytest.mark.parametrize(
    "body",
    [
        {"partitions": [], "acks": None},  # nil where the type has no |nil
        {"partitions": [], "acks": 1.0},  # a float for an int
        {"partitions": [], "acks": True},  # a bool for an int
        {"partitions": [{"topic": b"t", "partition": 0, "size": 0}]},  # bin for a str
        {"partitions": None},  # nil for a required array
    ],
    ids=["nil-int", "float-int", "bool-int", "bin-str", "nil-array"],
)
def test_types_are_strict(body: dict[str, Any]) -> None:
    frame = raw_frame(ApiKey.PRODUCE, msgspec.msgpack.encode(body))

    with pytest.raises(MalformedMessageError):
        decode_request(frame)


def test_a_bool_field_refuses_an_int() -> None:
    meta = msgspec.msgpack.encode({"allow_auto_create": 1})

    with pytest.raises(MalformedMessageError):
        decode_request(raw_frame(ApiKey.METADATA, meta))


def test_request_body_checks_apply_in_the_documented_order() -> None:
    # RESPONSE flag, then API key, then version, then body, then data section.
    with pytest.raises(MalformedMessageError, match="response"):
        decode_request(raw_frame(999, b"\xc1", flags=FrameFlags.RESPONSE, version=9))
    with pytest.raises(UnknownApiError):
        decode_request(raw_frame(999, b"\xc1", version=9))
    with pytest.raises(UnsupportedVersionError):
        decode_request(raw_frame(ApiKey.METADATA, b"\xc1", version=9, data=b"x"))
    with pytest.raises(MalformedMessageError, match="cannot decode"):
        decode_request(raw_frame(ApiKey.METADATA, b"\xc1", data=b"x"))


# --- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize("api_key", [max(ApiKey) + 1, 99, 0xFFFF])
def test_unknown_api_key_raises_unknown_api(api_key: int) -> None:
    frame = raw_frame(api_key, b"\x80")

    with pytest.raises(UnknownApiError, match=str(api_key)):
        decode_request(frame)
    with pytest.raises(UnknownApiError):
        decode_response(raw_frame(api_key, b"\x80", flags=FrameFlags.RESPONSE))


@pytest.mark.parametrize("version", [1, 2, 0xFFFF])
def test_version_out_of_range_raises_unsupported_version(version: int) -> None:
    frame = raw_frame(ApiKey.METADATA, b"\x80", version=version)

    with pytest.raises(UnsupportedVersionError, match="METADATA"):
        decode_request(frame)


def test_encoding_an_unsupported_version_fails_locally() -> None:
    with pytest.raises(UnsupportedVersionError):
        encode_request(m.MetadataRequest(), 1, api_version=1)


@pytest.mark.parametrize(
    "meta",
    [
        b"",  # nothing
        b"\xc1",  # a byte msgpack never uses
        b"\x81\xa1",  # truncated
        b"\x93\x01\x02\x03",  # an array, not a map
        b"\x81\xa6topics\x05",  # wrong type for a field
        b"\x80\x80",  # trailing bytes
    ],
)
def test_garbage_body_with_a_valid_crc_is_malformed(meta: bytes) -> None:
    frame = raw_frame(ApiKey.METADATA, meta)

    with pytest.raises(MalformedMessageError, match="METADATA"):
        decode_request(frame)
    with pytest.raises(MalformedMessageError):
        decode_response(raw_frame(ApiKey.METADATA, meta, flags=FrameFlags.RESPONSE))


def test_missing_required_field_is_malformed() -> None:
    with pytest.raises(MalformedMessageError):
        decode_request(raw_frame(ApiKey.DELETE_TOPICS, b"\x80"))


@pytest.mark.parametrize(
    ("flags", "meta"),
    [
        # {"topics": ["<2 bytes that are not UTF-8>"]}
        pytest.param(FrameFlags.NONE, b"\x81\xa6topics\x91\xa2\xff\xfe", id="request"),
        # {"cluster_id": "<2 bytes that are not UTF-8>"}
        pytest.param(FrameFlags.RESPONSE, b"\x81\xaacluster_id\xa2\xff\xfe", id="response"),
    ],
)
def test_invalid_utf8_in_a_string_field_is_malformed(flags: FrameFlags, meta: bytes) -> None:
    frame = raw_frame(ApiKey.METADATA, meta, flags=flags)

    with pytest.raises(MalformedMessageError):
        decode_request(frame) if flags == FrameFlags.NONE else decode_response(frame)


@pytest.mark.parametrize(
    "flags",
    [
        pytest.param(FrameFlags.NONE, id="request"),
        pytest.param(FrameFlags.RESPONSE, id="response"),
    ],
)
def test_deeply_nested_body_is_malformed(flags: FrameFlags) -> None:
    # An unknown field nested 5,000 arrays deep: 5 KB, far below any frame size limit.
    meta = b"\x81\xa1x" + b"\x91" * 5000 + b"\xc0"
    frame = raw_frame(ApiKey.METADATA, meta, flags=flags)

    with pytest.raises(MalformedMessageError):
        decode_request(frame) if flags == FrameFlags.NONE else decode_response(frame)


@pytest.mark.parametrize("key", [k for k, s in API_SPECS.items() if not s.has_request_data])
def test_data_section_on_a_request_that_carries_none_is_malformed(key: ApiKey) -> None:
    meta = one_frame(encode_request(_minimal_request(key), 1)).meta

    with pytest.raises(MalformedMessageError, match="data"):
        decode_request(raw_frame(key, meta, data=b"\x00"))


def test_data_section_on_a_response_that_carries_none_is_malformed() -> None:
    frame = raw_frame(ApiKey.METADATA, b"\x80", flags=FrameFlags.RESPONSE, data=b"x")

    with pytest.raises(MalformedMessageError, match="data"):
        decode_response(frame)


def test_requests_and_responses_are_not_confused() -> None:
    request = one_frame(encode_request(m.MetadataRequest(), 1))
    response = one_frame(encode_response(m.MetadataResponse(), request.header))

    with pytest.raises(MalformedMessageError, match="request"):
        decode_response(request)
    with pytest.raises(MalformedMessageError, match="response"):
        decode_request(response)


def test_a_response_must_answer_the_api_of_its_request() -> None:
    with pytest.raises(TypeError):
        encode_response(m.FetchResponse(), request_header(ApiKey.PRODUCE))


def test_api_of_refuses_what_is_not_a_message() -> None:
    with pytest.raises(TypeError):
        api_of(m.ErrorResponse(1))  # type: ignore[arg-type]


@PROPERTY
@given(
    api_key=st.sampled_from(list(ApiKey)) | st.integers(0, 0xFFFF),
    flags=st.integers(0, 7),
    meta=st.binary(max_size=120),
)
def test_random_bodies_raise_only_protocol_or_broker_errors(
    api_key: int, flags: int, meta: bytes
) -> None:
    frame = raw_frame(api_key, meta, flags=flags)

    for decode in (decode_request, decode_response):
        with contextlib.suppress(*TOLERATED_BY_DECODERS):
            decode(frame)


def _minimal_request(key: ApiKey) -> m.Request:
    minimal: dict[ApiKey, m.Request] = {
        ApiKey.HANDSHAKE: m.HandshakeRequest(),
        ApiKey.METADATA: m.MetadataRequest(),
        ApiKey.LIST_GROUPS: m.ListGroupsRequest(),
        ApiKey.CREATE_TOPICS: m.CreateTopicsRequest(()),
        ApiKey.DELETE_TOPICS: m.DeleteTopicsRequest(()),
        ApiKey.DESCRIBE_CONFIGS: m.DescribeConfigsRequest(()),
        ApiKey.ALTER_CONFIGS: m.AlterConfigsRequest(()),
        ApiKey.FETCH: m.FetchRequest(()),
        ApiKey.LIST_OFFSETS: m.ListOffsetsRequest(()),
        ApiKey.JOIN_GROUP: m.JoinGroupRequest("g"),
        ApiKey.HEARTBEAT: m.HeartbeatRequest("g", "m", 0),
        ApiKey.LEAVE_GROUP: m.LeaveGroupRequest("g", "m"),
        ApiKey.OFFSET_COMMIT: m.OffsetCommitRequest("g", ()),
        ApiKey.OFFSET_FETCH: m.OffsetFetchRequest("g"),
        ApiKey.DESCRIBE_GROUPS: m.DescribeGroupsRequest(()),
        ApiKey.DELETE_GROUPS: m.DeleteGroupsRequest(()),
        ApiKey.DESCRIBE_LOG_DIRS: m.DescribeLogDirsRequest(),
        ApiKey.INIT_PRODUCER_ID: m.InitProducerIdRequest(),
        ApiKey.FIND_COORDINATOR: m.FindCoordinatorRequest("g"),
        ApiKey.ALTER_PARTITION_REASSIGNMENTS: m.AlterPartitionReassignmentsRequest(),
        ApiKey.SHARE_FETCH: sm.ShareFetchRequest("g", "m", ("t",)),
        ApiKey.SHARE_ACKNOWLEDGE: sm.ShareAcknowledgeRequest("g", "m"),
        ApiKey.ALTER_SHARE_GROUP: sm.AlterShareGroupRequest("g"),
        ApiKey.DESCRIBE_SHARE_GROUP: sm.DescribeShareGroupRequest("g"),
        ApiKey.OFFSETS_FOR_LEADER_EPOCH: rm.OffsetsForLeaderEpochRequest(()),
    }
    return minimal[key]


# --- error responses --------------------------------------------------------------------------


@pytest.mark.parametrize("code", [c for c in ErrorCode if c != ErrorCode.NONE], ids=str)
def test_error_response_raises_the_class_mapped_to_its_code(code: ErrorCode) -> None:
    request = request_header(ApiKey.FETCH, correlation_id=12, api_version=0)

    frame = one_frame(encode_error(request, code, "details here"))

    assert frame.header.flags == FrameFlags.RESPONSE | FrameFlags.ERROR
    assert frame.header.correlation_id == 12
    assert frame.header.api_key == ApiKey.FETCH
    with pytest.raises(error_class(code)) as info:
        decode_response(frame)
    assert type(info.value) is error_class(code)
    assert info.value.code == code
    assert info.value.message == "details here"
    assert info.value.retriable == ERRORS[code].retriable


def test_error_response_without_message_uses_the_default() -> None:
    frame = one_frame(encode_error(request_header(ApiKey.PRODUCE), ErrorCode.NOT_LEADER))

    with pytest.raises(NotLeaderError) as info:
        decode_response(frame)
    assert info.value.message == ERRORS[ErrorCode.NOT_LEADER].message
    assert info.value.retriable


def test_error_response_is_decoded_even_for_an_unknown_api() -> None:
    frame = one_frame(encode_error(request_header(ApiKey.METADATA), ErrorCode.UNKNOWN_API, "?"))
    frame = Frame(
        FrameHeader(1, 4242, 7, frame.header.flags, 1, len(frame.meta), 0, 0),
        frame.meta,
        bytearray(),
    )

    with pytest.raises(UnknownApiError, match=r"\?"):
        decode_response(frame)


@pytest.mark.parametrize(
    ("code", "match"), [(0, "UNKNOWN_SERVER_ERROR"), (999, "unknown error code 999")]
)
def test_error_response_with_code_none_or_unknown_is_an_unknown_server_error(
    code: int, match: str
) -> None:
    meta = msgspec.msgpack.encode(m.ErrorResponse(code, "boom"))
    frame = raw_frame(ApiKey.FETCH, meta, flags=FrameFlags.RESPONSE | FrameFlags.ERROR)

    with pytest.raises(UnknownServerError, match=match) as info:
        decode_response(frame)
    assert isinstance(info.value, BrokerError)


def test_undecodable_error_response_is_malformed() -> None:
    frame = raw_frame(ApiKey.FETCH, b"\x91\x01", flags=FrameFlags.RESPONSE | FrameFlags.ERROR)

    with pytest.raises(MalformedMessageError, match="ErrorResponse"):
        decode_response(frame)


# --- data sections ----------------------------------------------------------------------------


@PROPERTY
@given(sizes=st.lists(st.integers(0, 20), max_size=6))
def test_split_data_cuts_the_section_into_consecutive_pieces(sizes: list[int]) -> None:
    data = bytearray(range(sum(sizes)))

    pieces = split_data(sizes, data)

    assert [len(p) for p in pieces] == sizes
    assert b"".join(pieces) == data
    if pieces and sizes[0]:
        pieces[0][0] = 0xEE  # views into the frame's data, not copies
        assert data[0] == 0xEE


@pytest.mark.parametrize(("sizes", "length"), [([1, 2], 4), ([5], 4), ([], 1), ([3, -1], 2)])
def test_split_data_refuses_sizes_that_do_not_add_up(sizes: list[int], length: int) -> None:
    with pytest.raises(MalformedMessageError):
        split_data(sizes, bytearray(length))


# --- negotiation ------------------------------------------------------------------------------


def test_negotiating_with_ourselves_picks_every_api_at_its_max_version() -> None:
    chosen = negotiate_versions(supported_versions())

    assert chosen == {key: spec.max_version for key, spec in API_SPECS.items()}
    assert {r.api_key for r in supported_versions()} == {int(k) for k in ApiKey}


def test_negotiation_picks_the_highest_common_version_and_leaves_out_no_overlap() -> None:
    fetch = API_SPECS[ApiKey.FETCH]
    theirs = [
        m.ApiVersionRange(ApiKey.METADATA, 0, 5),  # overlaps at our max
        m.ApiVersionRange(ApiKey.FETCH, fetch.max_version + 1, fetch.max_version + 4),  # none
        m.ApiVersionRange(777, 0, 3),  # an API we do not know
    ]

    chosen = negotiate_versions(theirs)

    assert chosen == {ApiKey.METADATA: API_SPECS[ApiKey.METADATA].max_version}


@given(
    theirs=st.lists(
        st.builds(
            m.ApiVersionRange,
            st.integers(0, 20),
            st.integers(0, 3),
            st.integers(0, 3),
        ),
        max_size=20,
        unique_by=lambda r: r.api_key,
    )
)
def test_negotiated_versions_lie_in_both_ranges_and_are_the_highest(
    theirs: list[m.ApiVersionRange],
) -> None:
    chosen = negotiate_versions(theirs)

    for r in theirs:
        spec = API_SPECS.get(r.api_key)  # type: ignore[call-overload]
        common = (
            set()
            if spec is None
            else set(range(spec.min_version, spec.max_version + 1))
            & set(range(r.min_version, r.max_version + 1))
        )
        if common:
            assert chosen[spec.key] == max(common)
        elif spec is not None:
            assert spec.key not in chosen
    assert set(chosen) <= {r.api_key for r in theirs}


@pytest.mark.parametrize(
    ("theirs", "ours", "expected"),
    [([1], [1], 1), ([1, 2, 3], [2, 3, 4], 3), ([2], [1], None), ([], [1], None)],
)
def test_negotiate_protocol(theirs: list[int], ours: list[int], expected: int | None) -> None:
    assert negotiate_protocol(theirs, ours) == expected
