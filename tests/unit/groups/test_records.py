"""The record format of ``__consumer_offsets`` and the group-to-partition mapping."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidelog.client.partitioner import partition_for_key
from tidelog.server.groups.records import (
    GROUP_VERSION,
    OFFSET_VERSION,
    GroupRecord,
    MemberRecord,
    OffsetRecord,
    RecordFormatError,
    RecordType,
    decode_group,
    decode_key,
    decode_offset,
    encode_group,
    encode_offset,
    group_key,
    offset_key,
    partition_for,
)
from tidelog.server.log import TopicPartition as TP

names = st.text(min_size=1, max_size=40)


@given(names, names, st.integers(0, 10_000))
def test_keys_round_trip(group: str, topic: str, partition: int) -> None:
    assert decode_key(offset_key(group, TP(topic, partition))) == (
        RecordType.OFFSET,
        group,
        TP(topic, partition),
    )
    assert decode_key(group_key(group)) == (RecordType.GROUP, group, None)


@given(st.integers(0, 2**62), st.text(max_size=50), st.integers(-1, 2**31), st.integers(-1, 2**50))
def test_offset_values_round_trip(offset: int, metadata: str, epoch: int, stamp: int) -> None:
    value = OffsetRecord(OFFSET_VERSION, offset, metadata, epoch, stamp)
    assert decode_offset(encode_offset(value)) == value


def member(mid: str, **kwargs: object) -> MemberRecord:
    fields: dict[str, object] = dict(
        member_id=mid,
        instance_id=None,
        client_id="c",
        client_host="127.0.0.1",
        subscribed_topics=["t"],
        subscribed_pattern=None,
        assignor="sticky",
        session_timeout_ms=6000,
        rebalance_timeout_ms=30000,
        epoch=3,
        previous_epoch=2,
        held={"t": [0, 1]},
        revoking={"t": [1]},
        sent={"t": [0]},
        target={"t": [0]},
    )
    fields.update(kwargs)
    return MemberRecord(**fields)  # type: ignore[arg-type]


def test_group_values_round_trip() -> None:
    value = GroupRecord(
        GROUP_VERSION,
        group_epoch=7,
        assignor="range",
        topics={"t": 4},
        members=[member("a"), member("b", instance_id="i", sent=None, departed=True)],
    )
    assert decode_group(encode_group(value)) == value


def test_unknown_versions_and_types_are_refused_clearly() -> None:
    newer = msgspec.msgpack.encode({"version": OFFSET_VERSION + 1, "offset": 3})
    with pytest.raises(RecordFormatError, match=r"version 2.*reads version 1"):
        decode_offset(newer)
    with pytest.raises(RecordFormatError, match="version 2"):
        decode_group(msgspec.msgpack.encode({"version": GROUP_VERSION + 1}))
    with pytest.raises(RecordFormatError, match="unknown record type 7"):
        decode_key(msgspec.msgpack.encode([7, "g"]))
    with pytest.raises(RecordFormatError, match="malformed"):
        decode_key(msgspec.msgpack.encode([0, "g"]))
    with pytest.raises(RecordFormatError):
        decode_key(b"\xc1")


def test_a_value_may_gain_fields_in_the_same_version() -> None:
    data = msgspec.msgpack.encode(
        {"version": OFFSET_VERSION, "offset": 5, "metadata": "", "future": [1, 2]}
    )
    assert decode_offset(data).offset == 5


@given(st.text(min_size=1, max_size=255), st.integers(1, 1000))
def test_a_group_lives_where_the_default_partitioner_puts_its_id(group: str, n: int) -> None:
    assert partition_for(group, n) == partition_for_key(group.encode(), n)
    assert 0 <= partition_for(group, n) < n


def test_the_mapping_is_stable() -> None:
    # crc32c(b"123456789") == 0xE3069283 (docs/PROTOCOL.md §9): 1661375107 % 8 == 3.
    assert partition_for("123456789", 8) == 3
