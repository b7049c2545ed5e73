"""Mutation fuzzing of the frame decoder and the batch reader.

Starts from valid frames and valid record batches (every codec, with and without headers, null
keys and values), mutates them with a seeded ``random.Random`` (bit flips, byte replacements,
truncation, insertion, deletion, duplicated chunks, length fields patched to big and small
values, records sections rewritten and recompressed, checksums recomputed so the damage reaches
the layers behind them) and adds pure random bytes. Every input goes through both targets:

* a ``FrameDecoder`` fed the input whole and in random chunks, then ``close()``; every frame it
  yields through ``decode_request``/``decode_response`` and its data section through
  ``split_data``/``iter_batches``/``records()``;
* ``RecordBatch.parse(verify_records=True).records()`` and ``iter_batches(...).records()``.

Only :class:`~tidelog.wire.errors.TidelogError` may escape. ``make test`` runs
``TIDELOG_FUZZ_INPUTS`` inputs (default 100,000); ``make fuzz`` runs 2,000,000. A failure names
the input's index, the seed and the input's hex, so it replays exactly.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from crc32c import crc32c

from tidelog.wire import (
    ApiKey,
    Compression,
    Frame,
    FrameDecoder,
    FrameHeader,
    RecordBatch,
    RecordBatchBuilder,
    decode_request,
    decode_response,
    encode_error,
    encode_request,
    encode_response,
    iter_batches,
    split_data,
)
from tidelog.wire import messages as m
from tidelog.wire.compression import compress, decompress
from tidelog.wire.errors import ErrorCode, TidelogError

INPUTS = int(os.environ.get("TIDELOG_FUZZ_INPUTS", "100000"))
SEED = int(os.environ.get("TIDELOG_FUZZ_SEED", "20241123"))
MAX_FRAME = 1024 * 1024
INTERESTING_32 = (0, 1, 2, 0x7F, 0x80, 0xFF, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)

pytestmark = [
    pytest.mark.slow,
    # A hang fails the run; the bound scales with the number of inputs (make fuzz).
    pytest.mark.timeout(max(300, INPUTS // 500)),
]


TOLERATED_BY_DECODERS: tuple[type[Exception], ...] = (TidelogError,)

# --- seeds ----------------------------------------------------------------------------------


def _payload(rng: random.Random, null_ok: bool) -> bytes | None:
    if null_ok and rng.random() < 0.3:
        return None
    size = rng.choice((0, 1, 3, 8, 20, 60, 200))
    if rng.random() < 0.5:
        return rng.randbytes(size)
    return (b"tidelog-" * (size // 8 + 1))[:size]  # compressible


def make_batches(rng: random.Random) -> list[bytes]:
    """Valid batches: every codec, with and without headers, with null keys and values."""
    out = []
    for codec in Compression:
        for headers in (False, True):
            for nulls in (False, True):
                builder = RecordBatchBuilder(codec, producer_id=rng.choice((-1, 7)))
                base_ts = rng.randrange(-(2**40), 2**41)
                for i in range(rng.randint(1, 9)):
                    hdrs: Any = None
                    if headers and rng.random() < 0.7:
                        hdrs = [
                            (rng.choice(("a", "trace-id", "ключ", "")), _payload(rng, True))
                            for _ in range(rng.randint(0, 3))
                        ]
                    builder.append(
                        _payload(rng, nulls),
                        key=_payload(rng, nulls),
                        headers=hdrs,
                        timestamp=base_ts + rng.randrange(0, 1000) * i,
                    )
                out.append(builder.build(rng.randrange(0, 2**40)))
    return out


def make_frames(rng: random.Random, batches: list[bytes]) -> list[bytes]:
    """Valid frames: requests and responses of several APIs, some carrying batches."""

    def join(parts: list[Any]) -> bytes:
        return b"".join(bytes(p) for p in parts)

    pick = [b for b in batches if len(b) < 700]
    out = []
    for cid, (one, two) in enumerate(zip(pick, pick[1:] + pick[:1], strict=True)):
        produce = m.ProduceRequest(
            (m.ProducePartition("orders", 0, len(one)), m.ProducePartition("t", 9, len(two))),
            acks=rng.choice((-1, 0, 1)),
        )
        out.append(join(encode_request(produce, cid, data=[one, two])))
        fetch_header = FrameHeader(1, ApiKey.FETCH, 0, 0, cid, 0, 0, 0)
        fetch = m.FetchResponse(
            (m.FetchPartitionResult("orders", 0, high_watermark=99, size=len(one) + len(two)),)
        )
        out.append(join(encode_response(fetch, fetch_header, data=[one, two])))
    requests: list[m.Request] = [
        m.HandshakeRequest(client_id="fuzz", api_versions=(m.ApiVersionRange(1, 0, 2),)),
        m.MetadataRequest(topics=("a", "b"), allow_auto_create=True),
        m.CreateTopicsRequest((m.NewTopic("t", 3, 1, {"retention.ms": "1000"}),)),
        m.JoinGroupRequest("g", subscribed_topics=("a",), instance_id="i"),
        m.OffsetCommitRequest("g", (m.OffsetCommitPartition("a", 0, 10, "meta"),), "m", 3),
        m.HeartbeatRequest("g", "m", 1, owned=(m.TopicPartitions("a", (0, 1)),)),
    ]
    out += [join(encode_request(r, i + 100)) for i, r in enumerate(requests)]
    header = FrameHeader(1, ApiKey.METADATA, 0, 0, 5, 0, 0, 0)
    metadata = m.MetadataResponse(
        brokers=(m.BrokerInfo(1, "localhost", 9092),),
        topics=(m.TopicMetadata("a", partitions=(m.PartitionMetadata(0, leader=1),)),),
    )
    out.append(join(encode_response(metadata, header)))
    out.append(join(encode_error(header, ErrorCode.NOT_LEADER, "moved")))
    out.append(out[0] + out[-1])  # pipelined
    return out


# --- mutation -------------------------------------------------------------------------------


def _reseal_frame(buf: bytearray) -> None:
    if len(buf) >= 24:
        meta_len = int.from_bytes(buf[12:16], "big")
        crc = crc32c(bytes(buf[24 : 24 + meta_len]), crc32c(bytes(buf[:20])))
        buf[20:24] = crc.to_bytes(4, "big")


def _reseal_batch(buf: bytearray) -> None:
    if len(buf) >= 21:
        buf[17:21] = crc32c(bytes(buf[21:])).to_bytes(4, "big")


def _patch_int(rng: random.Random, buf: bytearray, pos: int, size: int = 4) -> None:
    if pos + size > len(buf):
        return
    current = int.from_bytes(buf[pos : pos + size], "big")
    value = rng.choice(
        (
            rng.choice(INTERESTING_32),
            current + rng.randint(-3, 3),
            current * 2,
            len(buf) - pos + rng.randint(-2, 2),
            rng.getrandbits(8 * size),
        )
    )
    buf[pos : pos + size] = (value % (1 << (8 * size))).to_bytes(size, "big")


def mutate_bytes(rng: random.Random, data: bytes, length_fields: tuple[int, ...]) -> bytearray:
    buf = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 3, 5))):
        op = rng.randrange(9)
        n = len(buf)
        if op == 0 and n:  # flip a bit
            i = rng.randrange(8 * n)
            buf[i // 8] ^= 1 << (i % 8)
        elif op == 1 and n:  # replace a byte
            buf[rng.randrange(n)] = rng.choice((0, 0xFF, 0x7F, 0x80, rng.randrange(256)))
        elif op == 2 and n:  # truncate
            del buf[rng.randrange(n) :]
        elif op == 3:  # insert
            i = rng.randint(0, n)
            buf[i:i] = rng.randbytes(rng.randint(1, 16))
        elif op == 4 and n:  # delete a range
            i = rng.randrange(n)
            del buf[i : i + rng.randint(1, 16)]
        elif op == 5 and n:  # duplicate a chunk
            i = rng.randrange(n)
            j = min(n, i + rng.randint(1, 64))
            k = rng.randint(0, n)
            buf[k:k] = buf[i:j]
        elif op in (6, 7) and length_fields:  # patch a length field
            _patch_int(rng, buf, rng.choice(length_fields))
        elif op == 8 and n >= 4:  # patch an aligned int anywhere (records section arrays)
            _patch_int(rng, buf, rng.randrange(0, n - 3))
    return buf


FRAME_LENGTH_FIELDS = (12, 16)
# length, last_offset_delta, record_count, records_size; attributes (2 bytes) separately
BATCH_LENGTH_FIELDS = (8, 23, 57, 61)


def mutate_frame(rng: random.Random, seed: bytes) -> bytes:
    buf = mutate_bytes(rng, seed, FRAME_LENGTH_FIELDS)
    if rng.random() < 0.6:  # let the damage reach the message and batch layers
        _reseal_frame(buf)
    return bytes(buf)


def mutate_batch(rng: random.Random, seed: bytes) -> bytes:
    if rng.random() < 0.35 and len(seed) == 12 + int.from_bytes(seed[8:12], "big"):
        return _rewrite_section(rng, seed)  # a single batch, not a splice of two
    buf = mutate_bytes(rng, seed, BATCH_LENGTH_FIELDS)
    if rng.random() < 0.2 and len(buf) >= 23:
        buf[21:23] = rng.getrandbits(7).to_bytes(2, "big")  # any known attribute bits
    if rng.random() < 0.7:
        _reseal_batch(buf)
    return bytes(buf)


def _rewrite_section(rng: random.Random, seed: bytes) -> bytes:
    """Damage the *uncompressed* records section, recompress it with the batch's codec and
    fix lengths and CRC, so the damage reaches the column parser whatever the codec."""
    batch = RecordBatch.parse(seed)
    codec = batch.compression
    section = bytes(decompress(codec, memoryview(seed)[65:], batch.records_size))
    damaged = bytes(mutate_bytes(rng, section, ()))
    body = compress(codec, damaged)
    buf = bytearray(seed[:65] + body)
    buf[8:12] = (len(buf) - 12).to_bytes(4, "big")
    records_size = len(damaged) if rng.random() < 0.9 else rng.choice((0, 16, len(damaged) + 1))
    buf[61:65] = records_size.to_bytes(4, "big")
    _reseal_batch(buf)
    return bytes(buf)


# --- targets --------------------------------------------------------------------------------


def _decode_frames(data: bytes, cuts: list[int] | None) -> tuple[list[Frame], type | None]:
    decoder = FrameDecoder(max_frame_size=MAX_FRAME)
    frames: list[Frame] = []
    try:
        if cuts is None:
            decoder.feed(data)
            frames.extend(decoder)
        else:
            start = 0
            for cut in [*cuts, len(data)]:
                decoder.feed(data[start:cut])
                frames.extend(decoder)
                start = cut
        decoder.close()
    except TidelogError as exc:
        return frames, type(exc)
    return frames, None


def _read_batches(data: Any, stats: Counter[str]) -> None:
    try:
        for batch in iter_batches(data):
            stats["records"] += len(batch.records())
    except TidelogError:
        pass


def target_frame_decoder(rng: random.Random, data: bytes, stats: Counter[str]) -> None:
    frames, error = _decode_frames(data, None)
    cuts = []
    if len(data) > 1:
        cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(1, 24))))
    frames_chunked, error_chunked = _decode_frames(data, cuts)
    # Chunking never changes what a stream decodes to.
    assert [(f.header, f.meta, f.data) for f in frames_chunked] == [
        (f.header, f.meta, f.data) for f in frames
    ]
    assert error_chunked is error
    stats["frames"] += len(frames)
    for frame in frames:
        for decode in (decode_request, decode_response):
            try:
                message = decode(frame)
            except TOLERATED_BY_DECODERS:
                continue
            stats["messages"] += 1
            pieces = [memoryview(frame.data)]
            if isinstance(message, m.ProduceRequest | m.FetchResponse):
                with contextlib.suppress(TidelogError):
                    pieces = split_data([p.size for p in message.partitions], frame.data)
            for piece in pieces:
                _read_batches(piece, stats)


def target_batch_reader(data: bytes, stats: Counter[str]) -> None:
    try:
        stats["records"] += len(RecordBatch.parse(data, verify_records=True).records())
        stats["verified batches"] += 1
    except TidelogError:
        pass
    _read_batches(data, stats)


def run(inputs: Iterator[bytes], rng: random.Random) -> Counter[str]:
    stats: Counter[str] = Counter()
    for index, data in enumerate(inputs):
        try:
            target_frame_decoder(rng, data, stats)
            target_batch_reader(data, stats)
        except BaseException as exc:
            exc.add_note(f"fuzz input #{index} (TIDELOG_FUZZ_SEED={SEED}): {data.hex()}")
            raise
        stats["inputs"] += 1
    return stats


def generate(
    rng: random.Random, count: int, seeds: list[bytes], mutate: Callable[..., bytes]
) -> Iterator[bytes]:
    for _ in range(count):
        roll = rng.random()
        if roll < 0.06:
            yield rng.randbytes(rng.randint(0, 300))  # pure noise
        elif roll < 0.1:
            yield bytes([0xD1, 0x01]) + rng.randbytes(rng.randint(0, 300))  # noise after magic
        elif roll < 0.13:
            yield rng.choice(seeds)  # valid as is
        elif roll < 0.16:
            yield mutate(rng, rng.choice(seeds) + rng.choice(seeds))  # spliced
        else:
            yield mutate(rng, rng.choice(seeds))


# --- tests ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seeds() -> tuple[list[bytes], list[bytes]]:
    rng = random.Random(SEED)
    batches = make_batches(rng)
    return batches, make_frames(rng, batches)


def test_seeds_are_valid(seeds: tuple[list[bytes], list[bytes]]) -> None:
    batches, frames = seeds
    assert {RecordBatch.parse(b, verify_records=True).compression for b in batches} == set(
        Compression
    )
    assert max(map(len, batches + frames)) <= 2000
    stats = run(iter(frames), random.Random(SEED))
    # The last seed pipelines the first and the error response, which decodes to an exception.
    assert stats["frames"] == len(frames) + 1
    assert stats["messages"] == len(frames) + 1 - 2
    assert stats["records"] > 0


def test_fuzz_frame_decoder(seeds: tuple[list[bytes], list[bytes]]) -> None:
    _, frames = seeds
    count = INPUTS // 2
    rng = random.Random(SEED + 1)

    stats = run(generate(rng, count, frames, mutate_frame), rng)

    assert stats["inputs"] == count
    # The inputs reach every layer, not only the frame checksum.
    assert stats["frames"] > count // 10
    assert stats["messages"] > count // 20
    assert stats["records"] > 0


def test_fuzz_batch_reader(seeds: tuple[list[bytes], list[bytes]]) -> None:
    batches, _ = seeds
    count = INPUTS - INPUTS // 2
    rng = random.Random(SEED + 2)

    stats = run(generate(rng, count, batches, mutate_batch), rng)

    assert stats["inputs"] == count
    assert stats["verified batches"] > count // 20
    assert stats["records"] > count // 10
