"""Record batches: builder, reader, stamping and the checks a broker relies on."""

from __future__ import annotations

import contextlib
import os
import struct
from typing import Any

import lz4.block
import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from tidelog.wire import (
    BatchAttributes,
    Compression,
    Record,
    RecordBatch,
    RecordBatchBuilder,
    build_batch,
    iter_batches,
    read_records,
    stamp_batch,
)
from tidelog.wire.compression import compress, decompress
from tidelog.wire.errors import (
    CorruptBatchError,
    ProtocolError,
    TidelogError,
    UnsupportedCompressionError,
)
from tidelog.wire.layouts import BATCH_HEADER_SIZE, BATCH_HEADER_STRUCT
from tidelog.wire.records import MAX_RECORDS_SIZE, batch_size_at

from .strategies import (
    COMPRESSIONS,
    PROPERTY,
    RECORD_LISTS,
    expected_headers,
    reseal_batch,
)

FIELDS = [
    "base_offset",
    "length",
    "leader_epoch",
    "magic",
    "crc",
    "attributes",
    "last_offset_delta",
    "base_timestamp",
    "max_timestamp",
    "producer_id",
    "producer_epoch",
    "base_sequence",
    "record_count",
    "records_size",
]


def build(
    records: list[dict[str, Any]], compression: Compression = Compression.NONE, **kw: Any
) -> RecordBatchBuilder:
    builder = RecordBatchBuilder(compression, **kw)
    for r in records:
        builder.append(**r)
    return builder


def sample_batch(compression: Compression = Compression.NONE, n: int = 3, base: int = 0) -> bytes:
    builder = RecordBatchBuilder(compression)
    for i in range(n):
        builder.append(b"value-%d" % i, key=b"k%d" % i, headers={"i": b"%d" % i}, timestamp=100 + i)
    return builder.build(base)


def patch_header(batch: bytes, **fields: int) -> bytearray:
    """The batch with header fields replaced and its CRC recomputed."""
    values = dict(zip(FIELDS, BATCH_HEADER_STRUCT.unpack_from(batch), strict=True))
    values.update(fields)
    buf = bytearray(batch)
    BATCH_HEADER_STRUCT.pack_into(buf, 0, *(values[f] for f in FIELDS))
    return reseal_batch(buf)


def with_body(batch: bytes | bytearray, body: bytes, **fields: int) -> bytearray:
    """The batch's header over another records section, lengths fixed up and CRC resealed."""
    buf = bytearray(batch[:BATCH_HEADER_SIZE] + body)
    return patch_header(bytes(buf), length=len(buf) - 12, **fields)


# --- round trips ------------------------------------------------------------------------------


@PROPERTY
@given(records=RECORD_LISTS, compression=COMPRESSIONS, base=st.integers(0, 2**62))
def test_builder_and_reader_round_trip(
    records: list[dict[str, Any]], compression: Compression, base: int
) -> None:
    data = build(records, compression).build(base)

    batch = RecordBatch.parse(data, verify_records=True)

    assert batch.records() == [
        Record(base + i, r["timestamp"], r["key"], r["value"], expected_headers(r["headers"]))
        for i, r in enumerate(records)
    ]
    assert list(batch) == batch.records()
    # A codec that does not shrink the records is dropped for that batch (stored raw).
    assert batch.compression in (compression, Compression.NONE)
    assert batch.record_count == len(records)
    assert batch.base_offset == base
    assert batch.last_offset == base + len(records) - 1
    assert batch.next_offset == base + len(records)
    assert batch.base_timestamp == min(r["timestamp"] for r in records)
    assert batch.max_timestamp == max(r["timestamp"] for r in records)
    assert batch.size == len(data)
    assert batch.leader_epoch == -1
    has_headers = any(r["headers"] for r in records)
    assert bool(batch.attributes & BatchAttributes.HAS_HEADERS) == has_headers


@PROPERTY
@given(
    head=st.lists(st.tuples(st.none() | st.binary(max_size=20), st.binary(max_size=20))),
    tail=st.lists(
        st.tuples(st.none() | st.binary(max_size=20), st.none() | st.binary(max_size=20)),
        min_size=1,
    ),
    timestamp=st.integers(0, 2**40),
    headers=st.booleans(),
)
def test_extend_builds_the_same_bytes_as_one_append_per_record(
    head: list[tuple[bytes | None, bytes]],
    tail: list[tuple[bytes | None, bytes | None]],
    timestamp: int,
    headers: bool,
) -> None:
    """The producer's send_many() path (``extend``) against send()'s (``append``), also
    after records with other timestamps and with headers."""
    one, bulk = RecordBatchBuilder(), RecordBatchBuilder()
    for builder in (one, bulk):
        for key, value in head:
            builder.append(value, key, {"h": b"1"} if headers else None, timestamp + 1)
    for key, value in tail:
        one.append(value, key, None, timestamp)
    size = sum(16 + len(k or b"") + len(v or b"") for k, v in tail)
    keys = [k for k, _ in tail]
    no_keys = all(k is None for k in keys)  # then keys=None, the keyless form
    index = bulk.extend([v for _, v in tail], None if no_keys else keys, timestamp, size)

    assert index == len(head)
    assert bulk.size_in_bytes == one.size_in_bytes
    assert bulk.build() == one.build()


@PROPERTY
@given(records=RECORD_LISTS)
def test_size_in_bytes_is_the_uncompressed_batch_size(records: list[dict[str, Any]]) -> None:
    builder = build(records)

    assert builder.size_in_bytes == len(builder.build())
    assert len(builder) == len(records)


@PROPERTY
@given(records=RECORD_LISTS, compression=COMPRESSIONS)
def test_size_in_bytes_is_the_header_plus_records_size_when_compressed(
    records: list[dict[str, Any]], compression: Compression
) -> None:
    builder = build(records, compression)

    batch = RecordBatch.parse(builder.build())

    assert builder.size_in_bytes == BATCH_HEADER_SIZE + batch.records_size


def test_headers_may_start_after_records_without_them() -> None:
    builder = RecordBatchBuilder()
    builder.append(b"a", timestamp=1)
    builder.append(b"b", timestamp=1)
    builder.append(b"c", headers=[("x", b"1"), ("x", None)], timestamp=1)
    builder.append(b"d", headers={}, timestamp=1)

    data = builder.build()

    assert builder.size_in_bytes == len(data)
    assert [r.headers for r in RecordBatch.parse(data, verify_records=True).records()] == [
        (),
        (),
        (("x", b"1"), ("x", None)),
        (),
    ]


def test_unicode_header_keys_round_trip() -> None:
    builder = RecordBatchBuilder()
    builder.append(None, headers={"ключ-🔑": b"\x00\xff", "": None}, timestamp=0)

    (record,) = RecordBatch.parse(builder.build()).records()

    assert record.headers == (("ключ-🔑", b"\x00\xff"), ("", None))


def test_a_builder_can_keep_appending_after_build() -> None:
    builder = RecordBatchBuilder()
    builder.append(b"1", timestamp=1)
    first = builder.build()
    builder.append(b"2", timestamp=2)
    second = builder.build(10)

    assert [r.value for r in RecordBatch.parse(first).records()] == [b"1"]
    assert [(r.offset, r.value) for r in RecordBatch.parse(second).records()] == [
        (10, b"1"),
        (11, b"2"),
    ]


def test_producer_fields_are_carried() -> None:
    builder = RecordBatchBuilder(producer_id=77, producer_epoch=3, base_sequence=1000)
    builder.append(b"x", timestamp=0)

    batch = RecordBatch.parse(builder.build())

    assert (batch.producer_id, batch.producer_epoch, batch.base_sequence) == (77, 3, 1000)


def test_default_producer_fields_mean_none() -> None:
    batch = RecordBatch.parse(build_batch([(None, b"x")], timestamp=0))

    assert (batch.producer_id, batch.producer_epoch, batch.base_sequence) == (-1, -1, -1)


def test_timestamps_default_to_the_injected_clock() -> None:
    ticks = iter([1_000, 1_007])
    builder = RecordBatchBuilder(clock=lambda: next(ticks))
    builder.append(b"a")
    builder.append(b"b")
    builder.append(b"c", timestamp=999)

    batch = RecordBatch.parse(builder.build(), verify_records=True)

    assert [r.timestamp for r in batch.records()] == [1_000, 1_007, 999]
    assert (batch.base_timestamp, batch.max_timestamp) == (999, 1_007)


def test_build_batch_and_read_records() -> None:
    data = build_batch([(b"k", b"v"), (None, None)], Compression.LZ4, timestamp=5)

    assert read_records(data + data) == [
        Record(0, 5, b"k", b"v"),
        Record(1, 5, None, None),
        Record(0, 5, b"k", b"v"),
        Record(1, 5, None, None),
    ]


def test_log_append_time_gives_every_record_the_max_timestamp() -> None:
    data = sample_batch()
    attributes = RecordBatch.parse(data).attributes | BatchAttributes.LOG_APPEND_TIME
    stamped = patch_header(data, attributes=attributes, max_timestamp=5_000)

    batch = RecordBatch.parse(stamped, verify_records=True)

    assert [r.timestamp for r in batch.records()] == [5_000, 5_000, 5_000]


# --- stamping ---------------------------------------------------------------------------------


@given(base=st.integers(-(2**63), 2**63 - 1), epoch=st.integers(-(2**31), 2**31 - 1))
def test_stamping_sets_base_offset_and_leader_epoch_and_keeps_the_crc_valid(
    base: int, epoch: int
) -> None:
    data = bytearray(sample_batch(Compression.ZSTD))

    stamp_batch(data, base, epoch)

    batch = RecordBatch.parse(data, verify_records=True)
    assert (batch.base_offset, batch.leader_epoch) == (base, epoch)
    assert [r.offset for r in batch.records()] == [base, base + 1, base + 2]


def test_stamping_in_place_through_a_view_of_a_larger_buffer() -> None:
    first, second = sample_batch(n=2), sample_batch(n=4)
    buf = bytearray(first + second)

    stamp_batch(memoryview(buf)[len(first) :], 500, 3)

    assert [(b.base_offset, b.leader_epoch) for b in iter_batches(buf)] == [(0, -1), (500, 3)]


# --- iter_batches -----------------------------------------------------------------------------


def test_iter_batches_splits_concatenated_batches() -> None:
    parts = [sample_batch(c, n=i + 1, base=10 * i) for i, c in enumerate(Compression)]

    batches = list(iter_batches(b"".join(parts)))

    assert [bytes(b.buffer) for b in batches] == parts
    assert [b.base_offset for b in batches] == [0, 10, 20]
    assert [b.compression for b in batches] == list(Compression)
    assert list(iter_batches(b"")) == []


def test_iter_batches_refuses_a_truncated_tail() -> None:
    whole = sample_batch() + sample_batch(Compression.LZ4)
    last = len(sample_batch(Compression.LZ4))

    for cut in range(1, last):
        with pytest.raises(CorruptBatchError, match="ends inside"):
            list(iter_batches(whole[:-cut]))


@pytest.mark.parametrize("length", [-1, 0, 52])
def test_impossible_batch_length_is_corrupt(length: int) -> None:
    data = bytearray(sample_batch())
    data[8:12] = length.to_bytes(4, "big", signed=True)

    with pytest.raises(CorruptBatchError, match="impossible"):
        batch_size_at(data, 0)
    with pytest.raises(CorruptBatchError):
        list(iter_batches(data))


def test_batch_size_at_needs_the_length_field() -> None:
    data = sample_batch()

    assert batch_size_at(data[:11], 0) is None
    assert batch_size_at(data, 0) == len(data)


# --- corruption -------------------------------------------------------------------------------


@pytest.mark.parametrize("compression", list(Compression), ids=lambda c: c.name)
def test_every_single_bit_flip_is_caught_unless_it_is_a_stamped_field(
    compression: Compression,
) -> None:
    good = sample_batch(compression)

    for bit in range(8 * len(good)):
        damaged = bytearray(good)
        damaged[bit // 8] ^= 1 << (bit % 8)
        byte = bit // 8
        if byte < 8 or 12 <= byte < 16:  # base offset, leader epoch: the broker's to stamp
            assert len(RecordBatch.parse(damaged, verify_records=True).records()) == 3
        else:
            with pytest.raises(CorruptBatchError):
                RecordBatch.parse(damaged, verify_records=True)
            with pytest.raises(CorruptBatchError):
                list(iter_batches(damaged))


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"magic": 2}, "format"),
        ({"record_count": 0, "last_offset_delta": -1}, "record count"),
        ({"last_offset_delta": 7}, "record count"),
        ({"attributes": 0x80}, "attribute"),
        ({"records_size": -1}, "out of bounds"),
        ({"base_timestamp": 200, "max_timestamp": 100}, "timestamp"),
        ({"record_count": 100, "last_offset_delta": 99}, "cannot fit"),
    ],
)
def test_header_checks_refuse_inconsistent_batches(fields: dict[str, int], match: str) -> None:
    with pytest.raises(CorruptBatchError, match=match):
        RecordBatch.parse(patch_header(sample_batch(), **fields))


def test_short_buffer_and_length_mismatch_are_corrupt() -> None:
    data = sample_batch()

    with pytest.raises(CorruptBatchError, match="shorter"):
        RecordBatch.parse(data[:64])
    with pytest.raises(CorruptBatchError, match="buffer has"):
        RecordBatch.parse(data + b"\x00")


def test_crc_check_can_be_skipped() -> None:
    damaged = bytearray(sample_batch())
    damaged[-1] ^= 0xFF

    batch = RecordBatch.parse(damaged, verify_crc=False)

    assert batch.records()[-1].headers != (("i", b"2"),)
    with pytest.raises(CorruptBatchError, match="CRC"):
        RecordBatch.parse(damaged)


def test_record_timestamps_outside_the_batch_range_fail_strict_verification() -> None:
    data = patch_header(sample_batch(), max_timestamp=101)  # the last record is at 102

    with pytest.raises(CorruptBatchError, match="outside"):
        RecordBatch.parse(data, verify_records=True)
    assert [r.timestamp for r in RecordBatch.parse(data).records()] == [100, 101, 102]


@pytest.mark.parametrize("codec", [3, 4, 7])
def test_unknown_codec_is_refused_when_records_are_read(codec: int) -> None:
    data = sample_batch()
    attributes = (RecordBatch.parse(data).attributes & ~0x07) | codec
    damaged = patch_header(data, attributes=attributes)

    with pytest.raises(UnsupportedCompressionError):
        RecordBatch.parse(damaged, verify_records=True)
    with pytest.raises(UnsupportedCompressionError):
        RecordBatch.parse(damaged).records()


def test_unknown_codec_never_surfaces_as_value_error() -> None:
    data = sample_batch()
    damaged = patch_header(data, attributes=RecordBatch.parse(data).attributes | 0x03)

    try:
        batch = RecordBatch.parse(damaged)
    except UnsupportedCompressionError:
        return  # refused from the header: the best fix
    with pytest.raises(UnsupportedCompressionError):
        _ = batch.compression


@pytest.mark.parametrize(
    ("section", "match"),
    [
        (struct.pack(">q", 0) + struct.pack(">ii", 5, -1) + b"abcd", "add up"),  # one short
        (struct.pack(">q", 0) + struct.pack(">ii", -2, 4) + b"abcd", "negative"),
        (struct.pack(">q", 0) + struct.pack(">ii", 1, 1) + b"a", "add up"),
    ],
)
def test_records_section_lengths_must_add_up(section: bytes, match: str) -> None:
    data = build_batch([(b"k", b"v")], timestamp=0)
    damaged = with_body(data, section, records_size=len(section))

    with pytest.raises(CorruptBatchError, match=match):
        RecordBatch.parse(damaged, verify_records=True)
    with pytest.raises(CorruptBatchError, match=match):
        RecordBatch.parse(damaged).records()


def test_damaged_header_block_with_a_valid_crc_is_corrupt() -> None:
    builder = RecordBatchBuilder()
    builder.append(b"v", headers={"key": b"value"}, timestamp=0)
    data = bytearray(builder.build())
    data[-9] = 0xFF  # a byte of the header key: no longer UTF-8

    with pytest.raises(CorruptBatchError, match="header"):
        RecordBatch.parse(reseal_batch(data)).records()
    with pytest.raises(CorruptBatchError, match="header"):
        RecordBatch.parse(data, verify_records=True)


@pytest.mark.parametrize(
    "block",
    [
        b"\x00\x02\x00\x01k\x00\x00\x00\x00",  # says 2 headers, holds 1
        b"\x00\x01\x00\x05k\xff\xff\xff\xff",  # key longer than the block
        b"\x00\x01\x00\x01k\xff\xff\xff\xfe",  # value length -2
        b"\x00\x01\x00\x01k\x00\x00\x00\x00\x00",  # a byte left over
        b"\x00",  # not even a count
    ],
)
def test_header_blocks_must_parse_and_fill_their_length_exactly(block: bytes) -> None:
    section = struct.pack(">q", 0) + struct.pack(">iii", -1, -1, len(block)) + block
    data = build_batch([(None, None)], timestamp=0)
    attributes = BatchAttributes.HAS_HEADERS
    damaged = with_body(data, section, records_size=len(section), attributes=attributes)
    assert RecordBatch.parse(damaged).record_count == 1

    with pytest.raises(CorruptBatchError, match="header"):
        RecordBatch.parse(damaged, verify_records=True)
    with pytest.raises(CorruptBatchError, match="header"):
        RecordBatch.parse(damaged).records()


@PROPERTY
@given(
    records=RECORD_LISTS,
    compression=COMPRESSIONS,
    data=st.data(),
)
def test_damaged_records_sections_raise_only_corrupt_batch(
    records: list[dict[str, Any]], compression: Compression, data: st.DataObject
) -> None:
    good = bytearray(build(records).build())
    section = good[BATCH_HEADER_SIZE:]
    for _ in range(data.draw(st.integers(1, 4))):
        if section:
            i = data.draw(st.integers(0, len(section) - 1))
            section[i] = data.draw(st.integers(0, 255))
    body = compress(compression, bytes(section))
    attributes = (RecordBatch.parse(good).attributes & ~0x07) | compression
    damaged = with_body(good, body, attributes=attributes, records_size=len(section))

    with contextlib.suppress(CorruptBatchError):
        RecordBatch.parse(damaged, verify_records=True)
    with contextlib.suppress(CorruptBatchError):
        RecordBatch.parse(damaged).records()


@PROPERTY
@given(noise=st.binary(min_size=16, max_size=300), compression=COMPRESSIONS)
def test_random_records_sections_raise_only_corrupt_batch(
    noise: bytes, compression: Compression
) -> None:
    data = sample_batch()
    attributes = (RecordBatch.parse(data).attributes & ~0x07) | compression
    damaged = with_body(data, noise, attributes=attributes, records_size=len(noise))

    for verify in (True, False):
        with contextlib.suppress(CorruptBatchError):
            RecordBatch.parse(damaged, verify_records=verify).records()


# --- decompression bounds ---------------------------------------------------------------------


def test_records_size_above_the_maximum_is_refused_before_decompressing() -> None:
    data = sample_batch(Compression.ZSTD)
    bomb = patch_header(data, records_size=MAX_RECORDS_SIZE + 1)

    with pytest.raises(CorruptBatchError, match="out of bounds"):
        RecordBatch.parse(bomb)
    with pytest.raises(CorruptBatchError, match="out of bounds"):
        RecordBatch.parse(data, max_records_size=10)


def test_zstd_frame_declaring_another_size_than_records_size_is_refused() -> None:
    data = sample_batch(Compression.ZSTD)
    declared_size = 8 * 1024 * 1024
    body = zstandard.ZstdCompressor().compress(bytes(declared_size))
    batch = RecordBatch.parse(data)
    bomb = with_body(data, body, records_size=batch.records_size)

    with pytest.raises(CorruptBatchError, match="declares"):
        RecordBatch.parse(bomb, verify_records=True)


@pytest.mark.parametrize(
    "body",
    [
        zstandard.ZstdCompressor(write_content_size=False).compress(bytes(1 << 20)),
        lz4.block.compress(bytes(1 << 20), store_size=False),
        zstandard.ZstdCompressor().compress(bytes(10)),
        lz4.block.compress(bytes(10), store_size=False),
    ],
    ids=["zstd-undeclared-big", "lz4-big", "zstd-small", "lz4-small"],
)
def test_a_section_inflating_to_another_size_than_records_size_is_refused(body: bytes) -> None:
    codec = Compression.ZSTD if body.startswith(b"\x28\xb5\x2f\xfd") else Compression.LZ4
    data = sample_batch(codec)
    damaged = with_body(data, body, records_size=RecordBatch.parse(data).records_size)

    with pytest.raises(CorruptBatchError):
        RecordBatch.parse(damaged, verify_records=True)


@pytest.mark.parametrize(
    "body",
    [
        zstandard.ZstdCompressor().compress(b"x" * 40) + b"trailing",
        zstandard.ZstdCompressor().compress(b"x" * 20) * 2,
        zstandard.ZstdCompressor().compress(b"x" * 40)[:-3],
    ],
    ids=["trailing-bytes", "two-frames", "cut-short"],
)
def test_zstd_section_must_be_exactly_one_whole_frame(body: bytes) -> None:
    data = sample_batch(Compression.ZSTD)

    with pytest.raises(CorruptBatchError):
        decompress(Compression.ZSTD, body, 40)
    damaged = with_body(data, body, records_size=40)
    with pytest.raises(CorruptBatchError):
        RecordBatch.parse(damaged, verify_records=True)


@pytest.mark.parametrize("codec", list(Compression), ids=lambda c: c.name)
def test_compress_and_decompress_round_trip(codec: Compression) -> None:
    section = b"tidelog " * 100

    assert bytes(decompress(codec, compress(codec, section), len(section))) == section
    with pytest.raises(CorruptBatchError):
        decompress(codec, compress(codec, section), len(section) + 1)


def test_decompress_refuses_an_unknown_codec() -> None:
    with pytest.raises(UnsupportedCompressionError):
        decompress(5, b"data", 4)
    assert issubclass(UnsupportedCompressionError, CorruptBatchError)
    assert issubclass(CorruptBatchError, ProtocolError)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (None, Compression.NONE),
        ("zstd", Compression.ZSTD),
        ("LZ4", Compression.LZ4),
        ("none", Compression.NONE),
        (2, Compression.ZSTD),
        (Compression.LZ4, Compression.LZ4),
    ],
)
def test_compression_parse(name: Any, expected: Compression) -> None:
    assert Compression.parse(name) is expected


def test_compression_parse_refuses_unknown_names() -> None:
    with pytest.raises(ValueError, match="gzip"):
        Compression.parse("gzip")


# --- local misuse -----------------------------------------------------------------------------


def test_building_an_empty_batch_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="empty"):
        RecordBatchBuilder().build()


@pytest.mark.parametrize(
    ("append", "error"),
    [
        ({"value": "text"}, TypeError),
        ({"value": b"v", "key": "text"}, TypeError),
        ({"value": b"v", "headers": {"k": "text"}}, TypeError),
        ({"value": b"v", "headers": {"k" * 0x10000: b""}}, ValueError),
        ({"value": b"v", "headers": [("k", b"")] * 0x10000}, ValueError),
        ({"value": b"v", "timestamp": 2**63}, ValueError),
        ({"value": b"v", "timestamp": 1.5}, ValueError),
    ],
)
def test_bad_record_fields_fail_locally(append: dict[str, Any], error: type[Exception]) -> None:
    def attempt() -> None:
        builder = RecordBatchBuilder()
        builder.append(**append)
        builder.build()

    with pytest.raises(error):
        attempt()
    assert not issubclass(error, TidelogError)


def test_timestamps_too_far_apart_for_one_batch_fail_locally() -> None:
    builder = RecordBatchBuilder()
    builder.append(b"a", timestamp=-(2**63))
    builder.append(b"b", timestamp=2**63 - 1)

    with pytest.raises(ValueError, match="out of range"):
        builder.build()


def test_unknown_compression_fails_locally() -> None:
    with pytest.raises(ValueError, match="Compression"):
        RecordBatchBuilder(7)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("make", "error"),
    [
        pytest.param({"producer_id": 2**63}, ValueError, id="producer_id-out-of-range"),
        pytest.param({"producer_epoch": 2**15}, ValueError, id="producer_epoch-out-of-range"),
        pytest.param({"base_offset": 2**63}, ValueError, id="base_offset-out-of-range"),
        pytest.param({"headers": {b"k": b"v"}}, TypeError, id="bytes-header-key"),
    ],
)
def test_builder_misuse_raises_value_or_type_error(
    make: dict[str, Any], error: type[Exception]
) -> None:
    def attempt() -> None:
        builder = RecordBatchBuilder(**{k: v for k, v in make.items() if k.startswith("producer")})
        builder.append(b"v", headers=make.get("headers"), timestamp=0)
        builder.build(make.get("base_offset", 0))

    with pytest.raises(error):
        attempt()


@pytest.mark.parametrize("codec", [Compression.LZ4, Compression.ZSTD])
def test_a_batch_is_never_bigger_than_its_uncompressed_size(codec: Compression) -> None:
    random_bytes = RecordBatchBuilder(codec)
    random_bytes.append(os.urandom(20_000))  # grows under any codec
    data = random_bytes.build()
    assert len(data) == random_bytes.size_in_bytes
    assert RecordBatch.parse(data).compression is Compression.NONE
    assert RecordBatch.parse(data).records()[0].value == random_bytes.build()[-20_000:]
    zeros = RecordBatchBuilder(codec)
    for _ in range(50):
        zeros.append(bytes(1000))
    data = zeros.build()
    assert len(data) < zeros.size_in_bytes
    assert RecordBatch.parse(data).compression is codec
