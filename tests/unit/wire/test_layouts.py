"""Each construct declaration in layouts.py and its struct twin produce identical bytes."""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import construct as cs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidelog.wire import layouts as L

from .strategies import PROPERTY

PAIRS = [
    pytest.param(L.FRAME_HEADER, L.FRAME_HEADER_STRUCT, id="frame-header"),
    pytest.param(L.BATCH_HEADER, L.BATCH_HEADER_STRUCT, id="batch-header"),
]


def field_range(field: Any) -> st.SearchStrategy[int]:
    """All values a construct integer field can hold, from its struct format."""
    fmt = field.subcon.fmtstr
    bits = 8 * struct.calcsize(fmt)
    if fmt[-1].islower():
        return st.integers(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    return st.integers(0, 2**bits - 1)


def offset_of(layout: cs.Struct, name: str) -> int:
    offset = 0
    for field in layout.subcons:
        if field.name == name:
            return offset
        offset += field.sizeof()
    raise KeyError(name)


@pytest.mark.parametrize(("layout", "twin"), PAIRS)
@PROPERTY
@given(data=st.data())
def test_declaration_and_twin_produce_identical_bytes(
    layout: cs.Struct, twin: struct.Struct, data: st.DataObject
) -> None:
    values = {f.name: data.draw(field_range(f), label=f.name) for f in layout.subcons}
    ordered = [values[f.name] for f in layout.subcons]

    built = layout.build(values)

    assert built == twin.pack(*ordered)
    assert list(twin.unpack(built)) == ordered
    parsed = layout.parse(built)
    assert [parsed[f.name] for f in layout.subcons] == ordered


@pytest.mark.parametrize(("layout", "twin"), PAIRS)
def test_declaration_and_twin_agree_on_size_and_byte_order(
    layout: cs.Struct, twin: struct.Struct
) -> None:
    assert layout.sizeof() == twin.size
    assert twin.format.startswith(">")
    # Every field is a fixed-size integer, so the twin has one code per field.
    assert len(twin.unpack(bytes(twin.size))) == len(layout.subcons)


def test_frame_sizes_and_offsets_derive_from_the_declaration() -> None:
    assert L.FRAME_HEADER_SIZE == L.FRAME_HEADER.sizeof() == 24
    assert offset_of(L.FRAME_HEADER, "magic") == 0
    assert offset_of(L.FRAME_HEADER, "crc") == L.FRAME_CRC_OFFSET == 20
    assert L.FRAME_PREFIX_STRUCT.size == L.FRAME_CRC_OFFSET


@given(data=st.data())
def test_frame_prefix_struct_is_the_header_up_to_its_crc(data: st.DataObject) -> None:
    fields = L.FRAME_HEADER.subcons
    values = [data.draw(field_range(f), label=f.name) for f in fields]

    assert L.FRAME_PREFIX_STRUCT.pack(*values[:-1]) == L.FRAME_HEADER_STRUCT.pack(*values)[:20]


def test_batch_sizes_and_offsets_derive_from_the_declaration() -> None:
    assert L.BATCH_HEADER_SIZE == L.BATCH_HEADER.sizeof() == 65
    assert offset_of(L.BATCH_HEADER, "length") + 4 == L.BATCH_LOG_OVERHEAD
    assert offset_of(L.BATCH_HEADER, "leader_epoch") == L.BATCH_LEADER_EPOCH_OFFSET
    assert offset_of(L.BATCH_HEADER, "magic") == 16
    assert offset_of(L.BATCH_HEADER, "crc") == L.BATCH_CRC_OFFSET
    assert offset_of(L.BATCH_HEADER, "attributes") == L.BATCH_CRC_START
    # The fields the broker stamps lie before the CRC's coverage.
    assert offset_of(L.BATCH_HEADER, "base_offset") + 8 <= L.BATCH_CRC_START
    assert L.BATCH_LEADER_EPOCH_OFFSET + 4 <= L.BATCH_CRC_START


@pytest.mark.parametrize(
    ("twin", "fmt"),
    [
        (L.HEADER_COUNT_STRUCT, ">H"),
        (L.HEADER_KEY_LEN_STRUCT, ">H"),
        (L.HEADER_VALUE_LEN_STRUCT, ">i"),
    ],
)
def test_record_header_structs_are_big_endian(twin: struct.Struct, fmt: str) -> None:
    assert twin.format == fmt


# Every byte offset into a batch that layouts.py derives: the field it starts (or ends) at and
# its value. The declaration decides the values, the on-disk format pins them.
BATCH_FIELD_EDGES = [
    pytest.param("BATCH_BASE_OFFSET_OFFSET", "base_offset", "start", 0, id="base-offset"),
    pytest.param("BATCH_LENGTH_OFFSET", "length", "start", 8, id="length"),
    pytest.param("BATCH_LOG_OVERHEAD", "length", "end", 12, id="log-overhead"),
    pytest.param("BATCH_LEADER_EPOCH_OFFSET", "leader_epoch", "start", 12, id="leader-epoch"),
    pytest.param("BATCH_STAMPED_SIZE", "leader_epoch", "end", 16, id="stamped-size"),
    pytest.param("BATCH_MAGIC_OFFSET", "magic", "start", 16, id="magic"),
    pytest.param("BATCH_CRC_OFFSET", "crc", "start", 17, id="crc"),
    pytest.param("BATCH_CRC_START", "attributes", "start", 21, id="crc-start"),
    pytest.param("BATCH_MAX_TIMESTAMP_OFFSET", "max_timestamp", "start", 35, id="max-timestamp"),
]
BATCH_FIELD_TWINS = [
    pytest.param(L.BATCH_STAMP_STRUCT, 0, ("base_offset", "length", "leader_epoch"), id="stamp"),
    pytest.param(L.BATCH_LENGTH_STRUCT, L.BATCH_LENGTH_OFFSET, ("length",), id="length"),
    pytest.param(
        L.BATCH_MAX_TIMESTAMP_STRUCT, L.BATCH_MAX_TIMESTAMP_OFFSET, ("max_timestamp",), id="max-ts"
    ),
]


def marked_batch_header() -> tuple[dict[str, int], bytes]:
    """A header built from the declaration in which no two bytes are equal (byte k of field i
    is ``8 * i + k + 1``), so a field's bytes are found only where it is, in its order."""
    values = {}
    for i, field in enumerate(L.BATCH_HEADER.subcons):
        marks = bytes(8 * i + k + 1 for k in range(field.sizeof()))
        values[field.name] = int.from_bytes(marks, "big")
    return values, L.BATCH_HEADER.build(values)


def extreme_batch_header() -> tuple[dict[str, int], bytes]:
    """A header whose signed fields hold their smallest value and unsigned ones their largest:
    a twin with the wrong signedness reads them differently."""
    values = {}
    for field in L.BATCH_HEADER.subcons:
        fmt = field.subcon.fmtstr
        bits = 8 * struct.calcsize(fmt)
        values[field.name] = -(2 ** (bits - 1)) if fmt[-1].islower() else 2**bits - 1
    return values, L.BATCH_HEADER.build(values)


def field_bytes(name: str, value: int) -> bytes:
    (field,) = [f for f in L.BATCH_HEADER.subcons if f.name == name]
    return bytes(field.build(value))


@pytest.mark.parametrize(("constant", "name", "edge", "pinned"), BATCH_FIELD_EDGES)
def test_batch_offsets_sit_at_their_field_in_the_declaration(
    constant: str, name: str, edge: str, pinned: int
) -> None:
    values, header = marked_batch_header()
    at = getattr(L, constant)
    expected = field_bytes(name, values[name])
    start = at if edge == "start" else at - len(expected)

    assert header[start : start + len(expected)] == expected
    assert at == pinned


@pytest.mark.parametrize("header", [marked_batch_header, extreme_batch_header])
@pytest.mark.parametrize(("twin", "at", "names"), BATCH_FIELD_TWINS)
def test_batch_field_twins_read_their_fields(
    twin: struct.Struct,
    at: int,
    names: tuple[str, ...],
    header: Callable[[], tuple[dict[str, int], bytes]],
) -> None:
    values, built = header()

    assert twin.unpack_from(built, at) == tuple(values[n] for n in names)
    assert twin.pack(*(values[n] for n in names)) == built[at : at + twin.size]
