"""Golden bytes: the exact encoding of a few frames and batches, pinned.

If one of these fails, the wire format changed. That is a protocol version bump and a
docs/PROTOCOL.md change, never a quiet edit of the hex below.
"""

from __future__ import annotations

import struct

import pytest

from tidelog.wire import (
    ApiKey,
    FrameFlags,
    FrameHeader,
    Record,
    RecordBatch,
    RecordBatchBuilder,
    decode_request,
    decode_response,
    encode_error,
    encode_request,
    encode_response,
    iter_batches,
    stamp_batch,
)
from tidelog.wire import messages as m
from tidelog.wire.errors import ErrorCode, NotLeaderError
from tidelog.wire.layouts import FRAME_HEADER_STRUCT

from .strategies import decode_all, join

TS = 1_700_000_000_000  # 2023-11-14T22:13:20Z

HANDSHAKE_FRAME = bytes.fromhex(
    "d1"  # magic
    "01"  # frame protocol version 1
    "0000"  # api key HANDSHAKE
    "0000"  # api version 0
    "0000"  # flags: a request
    "00000001"  # correlation id 1
    "00000062"  # 98 bytes of metadata
    "00000000"  # no data section
    "ba457f7d"  # CRC-32C of the 20 bytes above and the metadata
    # msgpack map of 5: client_id "c1", client_software "tidelog-python", client_version "0.1",
    # protocol_versions [1], api_versions []
    "85a9636c69656e745f6964a26331af636c69656e745f736f667477617265ae746964656c6f672d707974"
    "686f6eae636c69656e745f76657273696f6ea3302e31b170726f746f636f6c5f76657273696f6e739101"
    "ac6170695f76657273696f6e7390"
)

TWO_RECORD_BATCH = bytes.fromhex(
    "0000000000000000"  # base offset 0
    "00000077"  # length: 119 bytes follow
    "ffffffff"  # leader epoch -1
    "01"  # batch magic 1
    "f2f62290"  # CRC-32C of attributes .. end
    "0040"  # attributes: HAS_HEADERS, no compression
    "00000001"  # last offset delta 1
    "0000018bcfe56800"  # base timestamp 1_700_000_000_000
    "0000018bcfe56805"  # max timestamp 1_700_000_000_005
    "ffffffffffffffff"  # producer id -1
    "ffff"  # producer epoch -1
    "ffffffff"  # base sequence -1
    "00000002"  # 2 records
    "00000042"  # records section: 66 bytes
    "00000000000000000000000000000005"  # timestamp deltas 0, 5
    "00000002ffffffff"  # key lengths 2, null
    "ffffffff00000005"  # value lengths null, 5
    "0000000a00000009"  # header block lengths 10, 9
    "6b31"  # key "k1"
    "76616c7565"  # value "value"
    "0001"
    "0001"
    "68"
    "00000001"
    "76"  # headers: 1 of them, "h" = b"v"
    "0001"
    "0001"
    "61"
    "ffffffff"  # headers: 1 of them, "a" = null
)

ONE_RECORD_BATCH = bytes.fromhex(
    "0000000000000000"  # base offset 0
    "0000004b"  # length: 75 bytes follow
    "ffffffff"  # leader epoch -1
    "01"  # batch magic 1
    "6c11def2"  # CRC-32C
    "0000"  # attributes: none
    "00000000"  # last offset delta 0
    "0000018bcfe56800"  # base timestamp
    "0000018bcfe56800"  # max timestamp
    "ffffffffffffffff"  # producer id -1
    "ffff"  # producer epoch -1
    "ffffffff"  # base sequence -1
    "00000001"  # 1 record
    "00000016"  # records section: 22 bytes
    "0000000000000000"  # timestamp delta 0
    "00000001"  # key length 1
    "00000005"  # value length 5
    "6b"  # key "k"
    "68656c6c6f"  # value "hello"
)

PRODUCE_FRAME = (
    bytes.fromhex(
        "d1"  # magic
        "01"  # frame protocol version 1
        "0006"  # api key PRODUCE
        "0000"  # api version 0
        "0000"  # flags: a request that wants a response (acks=1)
        "00000007"  # correlation id 7
        "0000004d"  # 77 bytes of metadata
        "00000057"  # 87 bytes of data: the batch
        "f41aa6c0"  # CRC-32C of the 20 bytes above and the metadata (not the data)
        # {partitions: [{topic: "t", partition: 0, size: 87}], acks: 1, timeout_ms: 1000,
        #  transactional_id: nil}
        "84aa706172746974696f6e739183a5746f706963a174a9706172746974696f6e00a473697a6557a461636b"
        "7301aa74696d656f75745f6d73cd03e8b07472616e73616374696f6e616c5f6964c0"
    )
    + ONE_RECORD_BATCH
)

ERROR_FRAME = bytes.fromhex(
    "d1"  # magic
    "01"  # frame protocol version 1
    "0007"  # api key FETCH (echoed)
    "0000"  # api version 0 (echoed)
    "0005"  # flags: RESPONSE | ERROR
    "00000009"  # correlation id 9 (echoed)
    "0000001b"  # 27 bytes of metadata
    "00000000"  # no data section
    "8901bbbc"  # CRC-32C
    "82aa6572726f725f636f646507a76d657373616765a56d6f766564"  # {error_code: 7, message: "moved"}
)


def crc32c_reference(data: bytes) -> int:
    """Bitwise CRC-32C (Castagnoli, reflected 0x82F63B78): independent of the crc32c package."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def test_reference_crc_is_castagnoli() -> None:
    assert crc32c_reference(b"123456789") == 0xE3069283


def test_handshake_request_frame() -> None:
    message = m.HandshakeRequest(client_id="c1", client_version="0.1")

    assert join(encode_request(message, 1)) == HANDSHAKE_FRAME
    (frame,) = decode_all(HANDSHAKE_FRAME)
    assert decode_request(frame) == message


def test_produce_request_frame_with_one_batch() -> None:
    builder = RecordBatchBuilder()
    builder.append(b"hello", key=b"k", timestamp=TS)
    batch = builder.build()
    message = m.ProduceRequest(
        (m.ProducePartition("t", 0, len(batch)),), acks=m.Acks.LEADER, timeout_ms=1000
    )

    assert batch == ONE_RECORD_BATCH
    assert join(encode_request(message, 7, data=[batch])) == PRODUCE_FRAME
    (frame,) = decode_all(PRODUCE_FRAME)
    assert decode_request(frame) == message
    assert [b.records() for b in iter_batches(frame.data)] == [[Record(0, TS, b"k", b"hello")]]


def test_uncompressed_two_record_batch_with_key_headers_and_null_value() -> None:
    builder = RecordBatchBuilder()
    builder.append(None, key=b"k1", headers={"h": b"v"}, timestamp=TS)
    builder.append(b"value", headers=[("a", None)], timestamp=TS + 5)

    assert builder.build() == TWO_RECORD_BATCH
    assert RecordBatch.parse(TWO_RECORD_BATCH, verify_records=True).records() == [
        Record(0, TS, b"k1", None, (("h", b"v"),)),
        Record(1, TS + 5, None, b"value", (("a", None),)),
    ]


def test_error_response_frame() -> None:
    request = FrameHeader(1, ApiKey.FETCH, 0, 0, 9, 0, 0, 0)

    assert join(encode_error(request, ErrorCode.NOT_LEADER, "moved")) == ERROR_FRAME
    (frame,) = decode_all(ERROR_FRAME)
    assert frame.header.flags == FrameFlags.RESPONSE | FrameFlags.ERROR
    with pytest.raises(NotLeaderError, match="moved"):
        decode_response(frame)


def test_golden_frame_headers_decode_by_hand() -> None:
    for data, api_key, flags, correlation_id in [
        (HANDSHAKE_FRAME, 0, 0, 1),
        (PRODUCE_FRAME, 6, 0, 7),
        (ERROR_FRAME, 7, 5, 9),
    ]:
        magic, version, key, _, got_flags, corr, meta_len, data_len, crc = (
            FRAME_HEADER_STRUCT.unpack_from(data)
        )
        assert (magic, version, key, got_flags, corr) == (0xD1, 1, api_key, flags, correlation_id)
        assert 24 + meta_len + data_len == len(data)
        assert crc == crc32c_reference(data[:20] + data[24 : 24 + meta_len])


def test_golden_batch_crcs_decode_by_hand() -> None:
    for data in (ONE_RECORD_BATCH, TWO_RECORD_BATCH):
        (length,) = struct.unpack_from(">i", data, 8)
        (crc,) = struct.unpack_from(">I", data, 17)
        assert length + 12 == len(data)
        assert crc == crc32c_reference(data[21:])


# --- the worked examples of docs/PROTOCOL.md §8, copied from the document ---------------------

SPEC_8_1_METADATA_FRAME = bytes.fromhex(
    "d1 01 00 01 00 00 00 00 00 00 00 02 00 00 00 1c 00 00 00 00 c7 60 80 3b"
    "82 a6 74 6f 70 69 63 73 c0 b1 61 6c 6c 6f 77 5f 61 75 74 6f 5f 63 72 65 61 74 65 c2"
)

SPEC_8_2_PRODUCE_FRAME = bytes.fromhex(
    "d1 01 00 06 00 00 00 00  00 00 00 07 00 00 00 52"
    "00 00 00 7f ac c7 68 42  84 aa 70 61 72 74 69 74"
    "69 6f 6e 73 91 83 a5 74  6f 70 69 63 a6 6f 72 64"
    "65 72 73 a9 70 61 72 74  69 74 69 6f 6e 00 a4 73"
    "69 7a 65 7f a4 61 63 6b  73 ff aa 74 69 6d 65 6f"
    "75 74 5f 6d 73 cd 75 30  b0 74 72 61 6e 73 61 63"
    "74 69 6f 6e 61 6c 5f 69  64 c0 00 00 00 00 00 00"
    "00 00 00 00 00 73 ff ff  ff ff 01 c8 72 c2 2e 00"
    "40 00 00 00 01 00 00 01  8b cf e5 68 00 00 00 01"
    "8b cf e5 68 05 ff ff ff  ff ff ff ff ff ff ff ff"
    "ff ff ff 00 00 00 02 00  00 00 3e 00 00 00 00 00"
    "00 00 00 00 00 00 00 00  00 00 05 00 00 00 02 ff"
    "ff ff ff 00 00 00 05 00  00 00 05 00 00 00 00 00"
    "00 00 0a 6b 31 68 65 6c  6c 6f 77 6f 72 6c 64 00"
    "01 00 01 68 00 00 00 01  76"
)

SPEC_8_3_STAMPED_BATCH_PREFIX = bytes.fromhex(
    "00 00 00 00 00 00 00 2a 00 00 00 73 00 00 00 03 01 c8 72 c2 2e"
)
SPEC_8_3_FETCH_RESPONSE_HEADER = bytes.fromhex(
    "d1 01 00 07 00 00 00 01 00 00 00 08 00 00 00 97 00 00 00 7f 7b 2f 54 a2"
)
SPEC_8_3_ERROR_FRAME = bytes.fromhex(
    "d1 01 00 07 00 00 00 05 00 00 00 08 00 00 00 17 00 00 00 00 e9 ab c8 b3"
    "82 aa 65 72 72 6f 72 5f 63 6f 64 65 1a a7 6d 65 73 73 61 67 65 a1 78"
)


def spec_batch() -> bytes:
    builder = RecordBatchBuilder()
    builder.append(b"hello", key=b"k1", timestamp=TS)
    builder.append(b"world", key=None, headers={"h": b"v"}, timestamp=TS + 5)
    return builder.build()


def test_spec_8_1_metadata_request() -> None:
    assert join(encode_request(m.MetadataRequest(), 2)) == SPEC_8_1_METADATA_FRAME


def test_spec_8_2_produce_request_with_one_batch() -> None:
    batch = spec_batch()
    request = m.ProduceRequest(
        partitions=(m.ProducePartition("orders", 0, len(batch)),),
        acks=m.Acks.ALL,
        timeout_ms=30000,
    )

    assert len(batch) == 127
    assert join(encode_request(request, 7, data=[batch])) == SPEC_8_2_PRODUCE_FRAME
    (frame,) = decode_all(SPEC_8_2_PRODUCE_FRAME)
    assert decode_request(frame) == request


def test_spec_8_3_fetch_response_of_the_stamped_batch() -> None:
    batch = bytearray(spec_batch())
    stamp_batch(batch, 42, 3)
    request = FrameHeader(1, ApiKey.FETCH, 0, 0, 8, 0, 0, 0)
    response = m.FetchResponse(
        (
            m.FetchPartitionResult(
                "orders",
                0,
                high_watermark=44,
                last_stable_offset=44,
                log_start_offset=0,
                size=len(batch),
            ),
        )
    )

    frame = join(encode_response(response, request, data=[batch]))

    assert batch[:21] == SPEC_8_3_STAMPED_BATCH_PREFIX
    assert len(frame) == 302
    assert frame[:24] == SPEC_8_3_FETCH_RESPONSE_HEADER
    (decoded,) = decode_all(frame)
    assert decode_response(decoded) == response
    (stamped,) = iter_batches(decoded.data)
    assert [(r.offset, r.timestamp) for r in stamped.records()] == [(42, TS), (43, TS + 5)]
    assert stamped.next_offset == 44


def test_spec_8_3_error_response() -> None:
    request = FrameHeader(1, ApiKey.FETCH, 0, 0, 8, 0, 0, 0)

    assert join(encode_error(request, ErrorCode.HANDSHAKE_REQUIRED, "x")) == SPEC_8_3_ERROR_FRAME
