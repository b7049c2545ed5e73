"""The records of the internal topic ``__consumer_offsets`` (docs/GROUPS.md, "Record format").

Two kinds of record share the topic, told apart by the first element of the key (its *type
tag*, Kafka's key version):

* an **offset** record: key ``[0, group, topic, partition]``, value an :class:`OffsetRecord`;
* a **group** record: key ``[1, group]``, value a :class:`GroupRecord`: the group's whole
  state (epoch, assignor and its state, members with their assignments).

Keys and values are msgpack; values are maps with a ``version`` field, so a field can be added
later without breaking older readers of the same version. A null value is a tombstone (the
offset or the group is gone); compaction keeps only the latest record of each key. A reader
refuses a tag or a version it does not know (:class:`RecordFormatError`) instead of guessing:
skipping a newer group record could resume an older state and repeat an epoch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import IntEnum
from typing import Final

import msgspec
from crc32c import crc32c

from tidelog.server.log import TopicPartition
from tidelog.wire.api import INTERNAL_TOPIC_PREFIX

OFFSETS_TOPIC: Final = "__consumer_offsets"
INTERNAL_PREFIX: Final = INTERNAL_TOPIC_PREFIX
PROTOCOL_TYPE: Final = "consumer"
OFFSET_VERSION: Final = 1
GROUP_VERSION: Final = 1
_MASK: Final = 0x7FFFFFFF


class RecordType(IntEnum):
    """The type tag: the first element of every key."""

    OFFSET = 0
    GROUP = 1


class RecordFormatError(ValueError):
    """A key or value this broker cannot read: an unknown type tag or version (written by a
    newer tidelog), or bytes that are not a record at all."""


def partition_for(group_id: str, partitions: int) -> int:
    """The partition of ``__consumer_offsets`` holding ``group_id``: the default partitioner's
    hash (docs/PROTOCOL.md §9) of the id's UTF-8 bytes, ``(crc32c(id) & 0x7FFFFFFF) % n``."""
    return (int(crc32c(group_id.encode())) & _MASK) % partitions


class OffsetRecord(msgspec.Struct, frozen=True):
    """A committed offset as stored."""

    version: int
    offset: int
    metadata: str = ""
    leader_epoch: int = -1
    commit_timestamp: int = -1


Partitions = dict[str, list[int]]
"""Partitions as stored: topic -> sorted partition numbers."""


class MemberRecord(msgspec.Struct, frozen=True):
    """One member of a stored group. Deadlines are not stored: a resumed member gets a whole
    session timeout (and rebalance timeout, if it has partitions to give up) from the load."""

    member_id: str
    instance_id: str | None
    client_id: str
    client_host: str
    subscribed_topics: list[str]
    subscribed_pattern: str | None
    assignor: str
    session_timeout_ms: int
    rebalance_timeout_ms: int
    epoch: int
    previous_epoch: int
    held: Partitions
    revoking: Partitions
    sent: Partitions | None
    target: Partitions
    departed: bool = False


class GroupRecord(msgspec.Struct, frozen=True):
    """A group's state: written before any member is told an assignment or an epoch it
    implies, so the stored epochs are never below what a member was told."""

    version: int
    group_epoch: int
    assignor: str
    topics: dict[str, int]
    """The assignor's state besides the target: the subscribed topics' partition counts the
    target was computed for."""
    members: list[MemberRecord]
    protocol_type: str = PROTOCOL_TYPE


class _Versioned(msgspec.Struct):
    version: int


_KEY = msgspec.msgpack.Decoder(list[str | int])
_VERSION = msgspec.msgpack.Decoder(_Versioned)
_OFFSET = msgspec.msgpack.Decoder(OffsetRecord)
_GROUP = msgspec.msgpack.Decoder(GroupRecord)
_ENCODE = msgspec.msgpack.Encoder().encode


def offset_key(group: str, tp: TopicPartition) -> bytes:
    return _ENCODE((int(RecordType.OFFSET), group, tp.topic, tp.partition))


def group_key(group: str) -> bytes:
    return _ENCODE((int(RecordType.GROUP), group))


def decode_key(data: bytes) -> tuple[RecordType, str, TopicPartition | None]:
    """``(type, group, partition)``; the partition is ``None`` for a group record. Raises
    :class:`RecordFormatError`."""
    try:
        key = _KEY.decode(data)
    except msgspec.DecodeError as exc:
        raise RecordFormatError(f"not a record key: {exc}") from None
    match key:
        case [RecordType.OFFSET, str(group), str(topic), int(partition)]:
            return RecordType.OFFSET, group, TopicPartition(topic, partition)
        case [RecordType.GROUP, str(group)]:
            return RecordType.GROUP, group, None
        case [int(tag), *_] if tag not in set(RecordType):
            raise RecordFormatError(
                f"unknown record type {tag} (written by a newer tidelog?); known: "
                f"{', '.join(f'{t.value} ({t.name.lower()})' for t in RecordType)}"
            )
    raise RecordFormatError(f"malformed record key {key!r}")


def encode_offset(value: OffsetRecord) -> bytes:
    return _ENCODE(value)


def encode_group(value: GroupRecord) -> bytes:
    return _ENCODE(value)


def _check_version(data: bytes, kind: str, known: int) -> None:
    try:
        version = _VERSION.decode(data).version
    except msgspec.DecodeError as exc:
        raise RecordFormatError(f"not {kind} record value: {exc}") from None
    if version != known:
        raise RecordFormatError(
            f"{kind} record of version {version}, this broker reads version {known} "
            "(written by a newer tidelog?)"
        )


def decode_offset(data: bytes) -> OffsetRecord:
    """Raises :class:`RecordFormatError`."""
    _check_version(data, "an offset", OFFSET_VERSION)
    try:
        return _OFFSET.decode(data)
    except msgspec.DecodeError as exc:
        raise RecordFormatError(f"bad offset record value: {exc}") from None


def decode_group(data: bytes) -> GroupRecord:
    """Raises :class:`RecordFormatError`."""
    _check_version(data, "a group", GROUP_VERSION)
    try:
        return _GROUP.decode(data)
    except msgspec.DecodeError as exc:
        raise RecordFormatError(f"bad group record value: {exc}") from None


def pack(tps: Iterable[TopicPartition]) -> Partitions:
    out: Partitions = {}
    for tp in tps:
        out.setdefault(tp.topic, []).append(tp.partition)
    return {t: sorted(ps) for t, ps in sorted(out.items())}


def unpack(stored: Mapping[str, Iterable[int]]) -> frozenset[TopicPartition]:
    return frozenset(TopicPartition(t, p) for t, ps in stored.items() for p in ps)
