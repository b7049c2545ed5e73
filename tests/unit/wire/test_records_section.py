"""The checks of a batch's records section: what ``verify_records`` refuses (the broker's check
before a batch is stored) and what reading records refuses, held against a plain record-by-record
reference of the rules, for uncompressed and compressed sections, in ``bytes`` and in a
``memoryview`` of a ``bytearray`` (what the broker gets from a request)."""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidelog.wire import BatchAttributes, Compression, RecordBatch
from tidelog.wire.compression import compress
from tidelog.wire.errors import CorruptBatchError
from tidelog.wire.layouts import BATCH_HEADER_SIZE, BATCH_HEADER_STRUCT, BATCH_MAGIC

from .strategies import COMPRESSIONS, PROPERTY, reseal_batch

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
INT32_MIN = -(2**31)

BUFFERS: dict[str, Callable[[bytes], bytes | memoryview]] = {
    "bytes": bytes,
    "memoryview": lambda data: memoryview(bytearray(data)),
}


@dataclass
class Section:
    """A records section spelled out array by array; ``payload`` is the keys and values."""

    deltas: list[int]
    keys: list[int]
    values: list[int]
    payload: bytes = b""
    blocks: list[bytes] | None = None
    """Header blocks (``None``: the batch has no header array)."""
    block_lengths: list[int] | None = None
    """What the header array says, if not the blocks' true lengths."""
    base_timestamp: int = 0
    max_timestamp: int = 0

    @property
    def count(self) -> int:
        return len(self.deltas)

    def lengths_of_blocks(self) -> list[int]:
        if self.block_lengths is not None:
            return self.block_lengths
        return [len(b) for b in self.blocks or ()]

    def encode(self) -> bytes:
        n = self.count
        parts = [
            struct.pack(f">{n}q", *self.deltas),
            struct.pack(f">{n}i", *self.keys),
            struct.pack(f">{n}i", *self.values),
        ]
        if self.blocks is not None:
            parts.append(struct.pack(f">{n}i", *self.lengths_of_blocks()))
        parts.append(self.payload)
        parts.extend(self.blocks or ())
        return b"".join(parts)

    def batch(self, compression: Compression = Compression.NONE) -> bytes:
        """The section in a batch whose header agrees with it, CRC included."""
        section = self.encode()
        body = compress(compression, section)
        attributes = int(compression)
        if self.blocks is not None:
            attributes |= BatchAttributes.HAS_HEADERS
        header = BATCH_HEADER_STRUCT.pack(
            0,
            BATCH_HEADER_SIZE - 12 + len(body),
            -1,
            BATCH_MAGIC,
            0,
            attributes,
            self.count - 1,
            self.base_timestamp,
            self.max_timestamp,
            -1,
            -1,
            -1,
            self.count,
            len(section),
        )
        return bytes(reseal_batch(bytearray(header + body)))


# --- the reference: the rules, record by record -------------------------------------------------


def reference_refuses(section: Section, *, strict: bool) -> bool:
    """Whether a section breaks a rule of the format, checked the slow, obvious way: signed
    lengths, one record at a time. ``strict`` adds the timestamp range (``verify_records``)."""
    data = section.encode()
    n = section.count
    has_headers = section.blocks is not None
    arrays = (20 if has_headers else 16) * n
    if arrays > len(data):
        return True
    deltas = struct.unpack_from(f">{n}q", data, 0)
    lengths = struct.unpack_from(f">{2 * n}i", data, 8 * n)
    blocks = struct.unpack_from(f">{n}i", data, 16 * n) if has_headers else (0,) * n
    if any(length < -1 for length in lengths) or any(length < 0 for length in blocks):
        return True
    if arrays + sum(max(length, 0) for length in lengths) + sum(blocks) != len(data):
        return True
    span = section.max_timestamp - section.base_timestamp
    if strict and not all(0 <= delta <= span for delta in deltas):
        return True
    pos = len(data) - sum(blocks)
    for length in blocks:
        if not header_block_is_whole(data[pos : pos + length]):
            return True
        pos += length
    return False


def header_block_is_whole(block: bytes) -> bool:
    """A header block: u16 count, then per header u16 key length, UTF-8 key, i32 value length
    (-1: no value), value; it must end exactly where its length says. Empty: no headers."""
    if not block:
        return True
    pos = 2
    if len(block) < pos:
        return False
    for _ in range(int.from_bytes(block[:2], "big")):
        if pos + 2 > len(block):
            return False
        key_end = pos + 2 + int.from_bytes(block[pos : pos + 2], "big")
        if key_end + 4 > len(block):
            return False
        try:
            block[pos + 2 : key_end].decode()
        except UnicodeDecodeError:
            return False
        value_length = int.from_bytes(block[key_end : key_end + 4], "big", signed=True)
        if value_length < -1:
            return False
        pos = key_end + 4 + max(value_length, 0)
    return pos == len(block)


def verify(data: bytes | memoryview) -> object:
    return RecordBatch.parse(data, verify_records=True)


def read(data: bytes | memoryview) -> object:
    return RecordBatch.parse(data).records()


def refuses(check: Callable[[bytes | memoryview], object], data: bytes | memoryview) -> bool:
    try:
        check(data)
    except CorruptBatchError:
        return True
    return False


# --- table: each malformed array refused, with the error that names it -------------------------

ONE_HEADER = b"\x00\x01\x00\x01k\x00\x00\x00\x01v"  # {"k": b"v"}

MALFORMED = {
    "a key length below -1 made up by a longer value": (
        Section([0], keys=[-2], values=[3], payload=b"a"),
        "negative key or value length",
    ),
    "key and value lengths of -2**31": (
        Section([0], keys=[INT32_MIN], values=[INT32_MIN], payload=b"x"),
        "negative key or value length",
    ),
    "two -2**31 lengths posing as an absent value and a byte": (
        Section([0, 0], keys=[INT32_MIN, INT32_MIN], values=[-1, 0], payload=b"x"),
        "negative key or value length",
    ),
    "no keys and a value length below -1 made up by another": (
        Section([0, 0], keys=[-1, -1], values=[-2, 5], payload=b"abc"),
        "negative key or value length",
    ),
    "an absent key beside a key length below -1": (
        Section([0, 0], keys=[-1, -2], values=[1, 3], payload=b"ab"),
        "negative key or value length",
    ),
    "lengths one byte short of the section": (
        Section([0], keys=[1], values=[1], payload=b"abc"),
        "add up",
    ),
    "lengths one byte past the section": (
        Section([0], keys=[1], values=[2], payload=b"ab"),
        "add up",
    ),
    "absent keys and values with bytes left over": (
        Section([0, 0], keys=[-1, -1], values=[-1, -1], payload=b"?"),
        "add up",
    ),
    "a header block length of -1": (
        Section([0], keys=[-1], values=[-1], blocks=[b""], block_lengths=[-1]),
        "negative header block length",
    ),
    "a header block length below 0 made up by a key": (
        Section([0], keys=[4], values=[-1], payload=b"kk", blocks=[b""], block_lengths=[-2]),
        "negative header block length",
    ),
    "a header block length past the section": (
        Section([0], keys=[-1], values=[-1], blocks=[ONE_HEADER], block_lengths=[12]),
        "add up",
    ),
    "a header block that does not decode": (
        Section([0], keys=[-1], values=[-1], blocks=[b"\x00\x02\x00\x01k\x00\x00\x00\x00"]),
        "header",
    ),
}


def test_the_reference_refuses_every_malformed_case() -> None:
    for section, _ in MALFORMED.values():
        assert reference_refuses(section, strict=False)


@pytest.mark.parametrize("buffer", list(BUFFERS), ids=str)
@pytest.mark.parametrize("case", list(MALFORMED), ids=str)
def test_a_malformed_records_array_is_refused_by_verify_and_by_reading(
    case: str, buffer: str
) -> None:
    section, match = MALFORMED[case]
    data = BUFFERS[buffer](section.batch())
    batch = RecordBatch.parse(data)  # the header alone is fine

    with pytest.raises(CorruptBatchError, match=match):
        RecordBatch.parse(data, verify_records=True)
    with pytest.raises(CorruptBatchError, match=match):
        batch.records()


@pytest.mark.parametrize("buffer", list(BUFFERS), ids=str)
def test_a_section_too_short_for_its_header_array_is_refused(buffer: str) -> None:
    good = Section([0, 0], keys=[0, 0], values=[0, 0], blocks=[b"", b""]).batch()
    cut = bytearray(good[:-4])  # a 36-byte section: room for 16 * 2 bytes of arrays, not 20 * 2
    fields = list(BATCH_HEADER_STRUCT.unpack_from(good))
    fields[1] -= 4  # length
    fields[13] -= 4  # records_size
    BATCH_HEADER_STRUCT.pack_into(cut, 0, *fields)
    damaged = BUFFERS[buffer](bytes(reseal_batch(cut)))

    with pytest.raises(CorruptBatchError, match="too short"):
        RecordBatch.parse(damaged, verify_records=True)


TIMESTAMPS = {
    "a negative delta": (Section([0, -1], [-1, -1], [-1, -1], max_timestamp=10), True),
    "a delta past max - base": (Section([0, 11], [-1, -1], [-1, -1], max_timestamp=10), True),
    "a delta at max - base": (Section([0, 10], [-1, -1], [-1, -1], max_timestamp=10), False),
    "a delta under a zero span": (Section([0, 1], [-1, -1], [-1, -1]), True),
    "a negative delta under a span wider than int64": (
        Section([-1], [-1], [-1], base_timestamp=INT64_MIN, max_timestamp=INT64_MAX),
        True,
    ),
    "the smallest delta under the widest span": (
        Section([INT64_MIN], [-1], [-1], base_timestamp=INT64_MIN, max_timestamp=INT64_MAX),
        True,
    ),
    "the largest delta under the widest span": (
        Section([INT64_MAX], [-1], [-1], base_timestamp=INT64_MIN, max_timestamp=INT64_MAX),
        False,
    ),
}


@pytest.mark.parametrize("buffer", list(BUFFERS), ids=str)
@pytest.mark.parametrize("case", list(TIMESTAMPS), ids=str)
def test_timestamp_deltas_must_lie_within_the_batch_range(case: str, buffer: str) -> None:
    section, bad = TIMESTAMPS[case]
    data = BUFFERS[buffer](section.batch())
    assert reference_refuses(section, strict=True) is bad

    if bad:
        with pytest.raises(CorruptBatchError, match="outside"):
            RecordBatch.parse(data, verify_records=True)
    else:
        RecordBatch.parse(data, verify_records=True)
    assert len(RecordBatch.parse(data).records()) == section.count  # readers do not care


WELL_FORMED = {
    "every key and value absent": Section([0, 0, 0], [-1, -1, -1], [-1, -1, -1]),
    "absent and empty keys and values": Section([0, 0], [-1, 0], [2, -1], payload=b"ab"),
    "empty and real header blocks": Section(
        [0, 0], [1, 1], [-1, 1], payload=b"abc", blocks=[b"", ONE_HEADER]
    ),
    "a header block with no headers": Section([0], [-1], [-1], blocks=[b"\x00\x00"]),
}


@pytest.mark.parametrize("compression", list(Compression), ids=lambda c: c.name)
@pytest.mark.parametrize("buffer", list(BUFFERS), ids=str)
@pytest.mark.parametrize("case", list(WELL_FORMED), ids=str)
def test_well_formed_sections_pass(case: str, buffer: str, compression: Compression) -> None:
    section = WELL_FORMED[case]
    data = BUFFERS[buffer](section.batch(compression))

    batch = RecordBatch.parse(data, verify_records=True)
    assert len(batch.records()) == section.count


# --- property: the checks agree with the reference on every section ------------------------------

LENGTHS = st.sampled_from([INT32_MIN, -2, -1, -1, 0, 1, 3]) | st.integers(-1, 6)
DELTAS = st.sampled_from([INT64_MIN, -1, 0, 1, 5, INT64_MAX]) | st.integers(0, 12)
SPANS = st.sampled_from([0, 1, 5, 12, 2**32, INT64_MAX, 2**64 - 1])
BLOCKS = st.sampled_from(
    [
        b"",
        b"\x00\x00",
        ONE_HEADER,
        b"\x00\x01\x00\x01k\xff\xff\xff\xff",  # {"k": None}
        b"\x00",  # not even a count
        b"\x00\x02\x00\x01k\x00\x00\x00\x00",  # says 2 headers, holds 1
        b"\x00\x01\x00\x01\xff\x00\x00\x00\x00",  # the key is not UTF-8
        b"\x00\x01\x00\x01k\xff\xff\xff\xfe",  # value length -2
    ]
)


@st.composite
def sections(draw: st.DrawFn) -> Section:
    """Sections near the rules' edges: most add up or miss by a byte, with odd lengths."""
    n = draw(st.integers(1, 4))
    keys = draw(st.lists(LENGTHS, min_size=n, max_size=n))
    values = draw(st.lists(LENGTHS, min_size=n, max_size=n))
    blocks = draw(st.none() | st.lists(BLOCKS, min_size=n, max_size=n))
    block_lengths = None
    if blocks is not None and draw(st.booleans()):
        block_lengths = draw(st.lists(LENGTHS, min_size=n, max_size=n))
    wanted = sum(max(length, 0) for length in keys + values)
    size = max(0, wanted + draw(st.sampled_from([0, 0, 0, -1, 1])))
    span = draw(SPANS)
    base = 0 if span <= INT64_MAX else INT64_MIN
    return Section(
        draw(st.lists(DELTAS, min_size=n, max_size=n)),
        keys,
        values,
        payload=draw(st.binary(min_size=size, max_size=size)),
        blocks=blocks,
        block_lengths=block_lengths,
        base_timestamp=base,
        max_timestamp=base + span,
    )


@PROPERTY
@given(section=sections(), compression=COMPRESSIONS)
def test_verify_and_read_refuse_exactly_what_the_reference_refuses(
    section: Section, compression: Compression
) -> None:
    verify_refuses = reference_refuses(section, strict=True)
    read_refuses = reference_refuses(section, strict=False)
    for make in BUFFERS.values():
        data = make(section.batch(compression))

        assert refuses(verify, data) is verify_refuses
        assert refuses(read, data) is read_refuses
