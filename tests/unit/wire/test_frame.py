"""FrameDecoder and encode_frame: delimiting and verifying frames on a byte stream."""

from __future__ import annotations

import struct

import pytest
from crc32c import crc32c
from hypothesis import given
from hypothesis import strategies as st

from tidelog.wire import (
    DEFAULT_MAX_FRAME_SIZE,
    PROTOCOL_VERSION,
    ApiKey,
    Frame,
    FrameDecoder,
    FrameFlags,
    RecordBatchBuilder,
    decode_request,
    encode_frame,
    encode_frame_prefix,
    encode_request,
    iter_batches,
    messages,
    split_data,
)
from tidelog.wire.errors import (
    BadMagicError,
    ChecksumMismatchError,
    CorruptBatchError,
    FrameTooLargeError,
    FramingError,
    ProtocolError,
    TruncatedFrameError,
    UnsupportedProtocolVersionError,
)
from tidelog.wire.layouts import FRAME_HEADER_SIZE, FRAME_HEADER_STRUCT

from .strategies import PROPERTY, decode_all, exercise_untrusted, feed_in_chunks, join

U16 = st.integers(0, 0xFFFF)
U32 = st.integers(0, 0xFFFFFFFF)


@st.composite
def frame_fields(draw: st.DrawFn) -> dict[str, object]:
    return {
        "api_key": draw(U16),
        "api_version": draw(U16),
        "flags": draw(U16),
        "correlation_id": draw(U32),
        "meta": draw(st.binary(max_size=64)),
        "data": [draw(st.binary(max_size=64))],
    }


def frame(**overrides: object) -> bytes:
    fields: dict[str, object] = {
        "api_key": ApiKey.METADATA,
        "api_version": 0,
        "flags": 0,
        "correlation_id": 1,
        "meta": b"\x80",
        "data": (),
    }
    fields.update(overrides)
    return encode_frame(**fields)  # type: ignore[arg-type]


def raw_header(*, meta_length: int = 0, data_length: int = 0, version: int = 1) -> bytes:
    """A header whose lengths and version are chosen by the test (CRC left at 0)."""
    return FRAME_HEADER_STRUCT.pack(0xD1, version, 1, 0, 0, 7, meta_length, data_length, 0)


def as_tuple(f: Frame) -> tuple[object, ...]:
    return (f.header, f.meta, bytes(f.data))


def split_points(draw: st.DrawFn, size: int) -> list[int]:
    return sorted(draw(st.sets(st.integers(0, size), max_size=12)))


# --- feeding ----------------------------------------------------------------------------------


@PROPERTY
@given(fields=st.lists(frame_fields(), min_size=1, max_size=4), data=st.data())
def test_whole_bytewise_and_split_feeding_yield_the_same_frames(
    fields: list[dict[str, object]], data: st.DataObject
) -> None:
    stream = b"".join(encode_frame(**f) for f in fields)  # type: ignore[arg-type]
    cuts = data.draw(st.builds(sorted, st.sets(st.integers(0, len(stream)), max_size=12)))

    whole = decode_all(stream)
    bytewise = decode_all(stream, range(1, len(stream)))
    split = decode_all(stream, cuts)

    assert [as_tuple(f) for f in whole] == [as_tuple(f) for f in bytewise]
    assert [as_tuple(f) for f in whole] == [as_tuple(f) for f in split]
    assert len(whole) == len(fields)
    for got, sent in zip(whole, fields, strict=True):
        h = got.header
        assert h.version == PROTOCOL_VERSION
        assert (h.api_key, h.api_version, h.flags, h.correlation_id) == (
            sent["api_key"],
            sent["api_version"],
            sent["flags"],
            sent["correlation_id"],
        )
        assert got.meta == sent["meta"]
        assert bytes(got.data) == b"".join(sent["data"])  # type: ignore[arg-type]
        assert h.meta_length == len(got.meta)
        assert h.data_length == len(got.data)
        assert h.is_response == bool(h.flags & FrameFlags.RESPONSE)


def test_pipelined_frames_in_one_chunk_come_out_in_order() -> None:
    decoder = FrameDecoder()
    decoder.feed(b"".join(frame(correlation_id=i, data=[bytes([i])]) for i in range(5)))

    frames = list(decoder)

    assert [f.header.correlation_id for f in frames] == [0, 1, 2, 3, 4]
    assert [bytes(f.data) for f in frames] == [bytes([i]) for i in range(5)]
    assert decoder.buffered == 0
    assert decoder.next_frame() is None


def test_next_frame_returns_none_until_the_frame_is_whole() -> None:
    data = frame(meta=b"\x81\xa1a\x01", data=[b"xyz"])
    decoder = FrameDecoder()

    for i, byte in enumerate(data[:-1]):
        decoder.feed(bytes([byte]))
        assert decoder.next_frame() is None
        assert decoder.buffered == i + 1
    assert decoder.pending_frame_size == len(data)

    decoder.feed(data[-1:])
    got = decoder.next_frame()

    assert got is not None
    assert bytes(got.data) == b"xyz"
    assert decoder.buffered == 0
    assert decoder.pending_frame_size == 0


def test_frame_data_is_writable_so_a_broker_can_stamp_batches_in_place() -> None:
    builder = RecordBatchBuilder()
    builder.append(b"v", timestamp=5)
    batch = builder.build()
    request = messages.ProduceRequest((messages.ProducePartition("t", 0, len(batch)),))
    (got,) = decode_all(join(encode_request(request, 3, data=[batch])))

    (piece,) = split_data([p.size for p in decode_request(got).partitions], got.data)  # type: ignore[union-attr]
    piece[0:8] = (42).to_bytes(8, "big")

    assert [b.base_offset for b in iter_batches(got.data)] == [42]


@pytest.mark.parametrize("data_length", [64 * 1024 - 1, 64 * 1024, 64 * 1024 + 1, 300_000])
def test_large_frames_decode_the_same_whole_in_chunks_and_pipelined(data_length: int) -> None:
    big_data = bytes(range(256)) * (data_length // 256) + b"\xab" * (data_length % 256)
    big = frame(correlation_id=2, data=[big_data])
    stream = frame(correlation_id=1, data=[b"a"]) + big + frame(correlation_id=3, data=[b"c"])
    big_end = len(stream) - len(frame(correlation_id=3, data=[b"c"]))

    for cuts in ([], [big_end], list(range(1000, len(stream), 1000)), [5, big_end - 1]):
        decoder = FrameDecoder()
        frames = feed_in_chunks(stream, cuts, decoder)
        assert [f.header.correlation_id for f in frames] == [1, 2, 3]
        assert bytes(frames[1].data) == big_data
        assert [bytes(f.data) for f in (frames[0], frames[2])] == [b"a", b"c"]
        assert decoder.buffered == 0
        decoder.close()


def test_a_handed_out_data_section_is_not_shared_with_the_decoder() -> None:
    big_data = b"\x11" * 100_000
    decoder = FrameDecoder()
    decoder.feed(frame(correlation_id=1, data=[big_data]))
    (first,) = list(decoder)

    decoder.feed(frame(correlation_id=2, data=[b"\x22" * 100_000])[:50])
    first.data[0:4] = b"XXXX"  # a broker stamps batches in place
    decoder.feed(frame(correlation_id=2, data=[b"\x22" * 100_000])[50:])
    (second,) = list(decoder)

    assert bytes(first.data) == b"XXXX" + big_data[4:]
    assert bytes(second.data) == b"\x22" * 100_000
    assert second.header.correlation_id == 2


def test_buffered_stays_bounded_while_frames_stream_through_in_small_chunks() -> None:
    one = frame(meta=b"\x80" * 100, data=[b"d" * 150])
    stream = one * 200
    chunk = 7
    decoder = FrameDecoder()
    count = 0
    high = 0

    for start in range(0, len(stream), chunk):
        decoder.feed(stream[start : start + chunk])
        high = max(high, decoder.buffered, len(decoder._buf))
        count += sum(1 for _ in decoder)

    assert count == 200
    assert decoder.buffered == 0
    assert high <= len(one) + chunk
    decoder.close()


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize("first", [b"G", b"\x16", b"\x00", b"\xd0", b"\xff"])
def test_bad_magic_is_detected_on_the_first_byte(first: bytes) -> None:
    decoder = FrameDecoder()
    decoder.feed(first)

    with pytest.raises(BadMagicError):
        decoder.next_frame()


def test_bad_magic_after_a_good_frame() -> None:
    decoder = FrameDecoder()
    decoder.feed(frame() + b"GET / HTTP/1.1\r\n")

    assert decoder.next_frame() is not None
    with pytest.raises(BadMagicError):
        decoder.next_frame()


def test_unsupported_protocol_version_is_refused_from_the_header() -> None:
    data = frame(version=2)
    decoder = FrameDecoder()
    decoder.feed(data[:FRAME_HEADER_SIZE])

    with pytest.raises(UnsupportedProtocolVersionError):
        decoder.next_frame()


def test_a_decoder_configured_for_more_versions_accepts_them() -> None:
    (got,) = decode_all(frame(version=2), versions=frozenset({1, 2}))

    assert got.header.version == 2


@pytest.mark.parametrize(
    ("meta_length", "data_length"),
    [(1025, 0), (0, 1025), (600, 425), (0xFFFFFFFF, 0xFFFFFFFF)],
)
def test_frame_too_large_is_refused_from_the_header_before_the_body_arrives(
    meta_length: int, data_length: int
) -> None:
    decoder = FrameDecoder(max_frame_size=1024)
    decoder.feed(raw_header(meta_length=meta_length, data_length=data_length))

    with pytest.raises(FrameTooLargeError):
        decoder.next_frame()
    assert decoder.buffered == FRAME_HEADER_SIZE


def test_a_frame_exactly_at_the_size_limit_is_accepted() -> None:
    data = frame(meta=b"m" * 24, data=[b"d" * 1000])

    (got,) = decode_all(data, max_frame_size=1024)

    assert len(got.meta) + len(got.data) == 1024


def test_default_max_frame_size_is_64_mib() -> None:
    assert FrameDecoder().max_frame_size == DEFAULT_MAX_FRAME_SIZE == 64 * 1024 * 1024


@pytest.mark.parametrize("where", ["api_key", "correlation_id", "meta", "crc"])
def test_checksum_mismatch(where: str) -> None:
    data = bytearray(frame(meta=b"\x81\xa1a\x01"))
    index = {"api_key": 3, "correlation_id": 10, "meta": FRAME_HEADER_SIZE + 2, "crc": 22}[where]
    data[index] ^= 0x10
    decoder = FrameDecoder()
    decoder.feed(data)

    with pytest.raises(ChecksumMismatchError):
        decoder.next_frame()


def test_data_section_is_not_covered_by_the_frame_crc_but_by_the_batch_crc() -> None:
    builder = RecordBatchBuilder()
    builder.append(b"value", key=b"key", timestamp=1)
    batch = builder.build()
    request = messages.ProduceRequest((messages.ProducePartition("t", 0, len(batch)),))
    data = bytearray(join(encode_request(request, 1, data=[batch])))
    data[-1] ^= 0x01

    (got,) = decode_all(bytes(data))

    assert decode_request(got) == request
    with pytest.raises(CorruptBatchError, match="CRC"):
        list(iter_batches(got.data))


@PROPERTY
@given(fields=frame_fields(), data=st.data())
def test_close_inside_a_frame_raises_truncated(
    fields: dict[str, object], data: st.DataObject
) -> None:
    whole = encode_frame(**fields)  # type: ignore[arg-type]
    cut = data.draw(st.integers(1, len(whole) - 1))
    decoder = FrameDecoder()
    decoder.feed(whole[:cut])
    assert decoder.next_frame() is None

    with pytest.raises(TruncatedFrameError):
        decoder.close()


def test_close_between_frames_is_fine() -> None:
    decoder = FrameDecoder()
    decoder.close()
    decoder.feed(frame() + frame())
    assert len(list(decoder)) == 2
    decoder.close()


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"X", BadMagicError),
        (raw_header(version=9), UnsupportedProtocolVersionError),
        (raw_header(meta_length=2048), FrameTooLargeError),
        (bytes(raw_header(meta_length=1)) + b"\x80", ChecksumMismatchError),
    ],
)
def test_after_an_error_the_decoder_keeps_raising_it(
    data: bytes, error: type[FramingError]
) -> None:
    decoder = FrameDecoder(max_frame_size=1024)
    decoder.feed(data)
    with pytest.raises(error) as first:
        decoder.next_frame()

    for call in (decoder.next_frame, lambda: decoder.feed(frame()), decoder.close):
        with pytest.raises(error) as again:
            call()
        assert again.value is first.value
    with pytest.raises(error):
        list(decoder)


def test_after_truncation_close_keeps_raising() -> None:
    decoder = FrameDecoder()
    decoder.feed(frame()[:10])
    with pytest.raises(TruncatedFrameError) as first:
        decoder.close()

    with pytest.raises(TruncatedFrameError) as again:
        decoder.next_frame()
    assert again.value is first.value


def test_framing_errors_are_protocol_errors() -> None:
    for error in (
        BadMagicError,
        UnsupportedProtocolVersionError,
        FrameTooLargeError,
        ChecksumMismatchError,
        TruncatedFrameError,
    ):
        assert issubclass(error, FramingError)
        assert issubclass(error, ProtocolError)


def test_every_single_bit_flip_is_caught_or_lands_in_the_data_section() -> None:
    builder = RecordBatchBuilder()
    builder.append(b"value", key=b"k", headers={"h": b"1"}, timestamp=10)
    batch = builder.build()
    request = messages.ProduceRequest((messages.ProducePartition("topic", 2, len(batch)),))
    good = join(encode_request(request, 77, data=[batch]))
    data_start = len(good) - len(batch)

    for bit in range(8 * len(good)):
        damaged = bytearray(good)
        damaged[bit // 8] ^= 1 << (bit % 8)
        byte = bit // 8
        if byte >= data_start:
            (got,) = decode_all(bytes(damaged))
            assert decode_request(got) == request
            assert bytes(got.data) == bytes(damaged[data_start:])
            continue
        expected: type[FramingError] | tuple[type[FramingError], ...]
        if byte == 0:
            expected = BadMagicError
        elif byte == 1:
            expected = UnsupportedProtocolVersionError
        elif 12 <= byte < 20:  # a length: the frame ends elsewhere or never
            expected = (ChecksumMismatchError, TruncatedFrameError, FrameTooLargeError)
        else:
            expected = ChecksumMismatchError
        with pytest.raises(expected):
            decode_all(bytes(damaged), max_frame_size=1024 * 1024)


@PROPERTY
@given(fields=frame_fields(), data=st.data())
def test_single_bit_flips_raise_only_protocol_errors(
    fields: dict[str, object], data: st.DataObject
) -> None:
    good = bytearray(encode_frame(**fields))  # type: ignore[arg-type]
    bit = data.draw(st.integers(0, 8 * len(good) - 1))
    good[bit // 8] ^= 1 << (bit % 8)

    exercise_untrusted(bytes(good))


@PROPERTY
@given(fields=st.lists(frame_fields(), min_size=1, max_size=3), data=st.data())
def test_truncated_streams_raise_only_protocol_errors(
    fields: list[dict[str, object]], data: st.DataObject
) -> None:
    stream = b"".join(encode_frame(**f) for f in fields)  # type: ignore[arg-type]
    cut = data.draw(st.integers(0, len(stream)))

    exercise_untrusted(stream[:cut])


@PROPERTY
@given(noise=st.binary(max_size=200))
def test_random_bytes_raise_only_protocol_errors(noise: bytes) -> None:
    exercise_untrusted(noise)
    exercise_untrusted(b"\xd1\x01" + noise)


@PROPERTY
@given(
    header=st.tuples(st.integers(0, 20) | U16, st.integers(0, 2) | U16, U16, U32),
    meta=st.binary(max_size=100),
)
def test_random_headers_with_a_valid_crc_raise_only_protocol_errors(
    header: tuple[int, int, int, int], meta: bytes
) -> None:
    api_key, api_version, flags, correlation_id = header
    data = encode_frame(
        api_key=api_key,
        api_version=api_version,
        flags=flags,
        correlation_id=correlation_id,
        meta=meta,
    )
    exercise_untrusted(data)


# --- encoding ---------------------------------------------------------------------------------


def test_encode_frame_prefix_is_header_and_metadata_with_crc_over_both() -> None:
    meta = b"\x81\xa1a\x01"
    prefix = encode_frame_prefix(
        api_key=6, api_version=0, flags=2, correlation_id=9, meta=meta, data_length=100
    )

    fields = FRAME_HEADER_STRUCT.unpack_from(prefix)

    assert fields[:8] == (0xD1, PROTOCOL_VERSION, 6, 0, 2, 9, len(meta), 100)
    assert fields[8] == crc32c(meta, crc32c(prefix[:20]))
    assert prefix[FRAME_HEADER_SIZE:] == meta


def test_encode_frame_joins_data_chunks() -> None:
    data = frame(data=[b"ab", bytearray(b"cd"), memoryview(b"ef")])

    (got,) = decode_all(data)

    assert bytes(got.data) == b"abcdef"
    assert struct.unpack_from(">I", data, 16) == (6,)


@pytest.mark.parametrize(
    "override",
    [
        {"api_key": -1},
        {"api_key": 0x10000},
        {"api_version": 0x10000},
        {"flags": -1},
        {"correlation_id": -1},
        {"correlation_id": 2**32},
    ],
)
def test_encode_frame_refuses_fields_that_do_not_fit(override: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="fit"):
        frame(**override)
