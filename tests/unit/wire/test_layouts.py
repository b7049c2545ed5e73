"""Each construct declaration in layouts.py and its struct twin produce identical bytes."""

from __future__ import annotations

import struct
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
