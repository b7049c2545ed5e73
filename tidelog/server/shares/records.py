"""The records of the internal topic ``__share_group_state`` (docs/QUEUES.md, "Durability").

* a **partition** record: key ``[0, group, topic, partition]``, value a :class:`PartitionRecord`:
  the share-partition's whole state (start and end offsets, every unsettled record with its
  delivery count and times). Written, fsynced, before an acquisition is delivered and before
  an acknowledgement is answered.
* a **settings** record: key ``[1, group]``, value a :class:`SettingsRecord`.

Msgpack keys and values, values versioned; a null value is a tombstone; the topic is
compacted, so only each key's last record stays. Readers refuse a version they do not know.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Final

import msgspec

from tidelog.server.log import TopicPartition

from .partition import InFlight, RecordState, SharePartition
from .settings import ShareSettings

SHARE_STATE_TOPIC: Final = "__share_group_state"
STATE_VERSION: Final = 1


class ShareRecordType(IntEnum):
    PARTITION = 0
    SETTINGS = 1


class ShareRecordError(ValueError):
    """A key or value of ``__share_group_state`` this broker cannot read."""


class EntryRecord(msgspec.Struct, array_like=True, frozen=True):
    offset: int
    state: int
    delivery_count: int
    first_delivery: int
    last_delivery: int
    last_error: str = ""
    reason: str = ""


class PartitionRecord(msgspec.Struct, frozen=True):
    version: int
    start: int
    end: int
    entries: list[EntryRecord]
    acked: int = 0
    dead_lettered: int = 0


class SettingsRecord(msgspec.Struct, frozen=True):
    version: int
    configs: list[tuple[str, str]]


_KEY = msgspec.msgpack.Decoder(list[str | int])
_PARTITION = msgspec.msgpack.Decoder(PartitionRecord)
_SETTINGS = msgspec.msgpack.Decoder(SettingsRecord)
_ENCODE = msgspec.msgpack.Encoder().encode


def partition_key(group: str, tp: TopicPartition) -> bytes:
    return _ENCODE((int(ShareRecordType.PARTITION), group, tp.topic, tp.partition))


def settings_key(group: str) -> bytes:
    return _ENCODE((int(ShareRecordType.SETTINGS), group))


def decode_key(data: bytes) -> tuple[ShareRecordType, str, TopicPartition | None]:
    try:
        key = _KEY.decode(data)
    except msgspec.DecodeError as exc:
        raise ShareRecordError(f"not a share state key: {exc}") from None
    match key:
        case [ShareRecordType.PARTITION, str(group), str(topic), int(partition)]:
            return ShareRecordType.PARTITION, group, TopicPartition(topic, partition)
        case [ShareRecordType.SETTINGS, str(group)]:
            return ShareRecordType.SETTINGS, group, None
    raise ShareRecordError(f"unknown share state key {key!r} (written by a newer tidelog?)")


def encode_partition(sp: SharePartition) -> bytes:
    entries = [
        EntryRecord(
            o,
            int(r.state),
            r.delivery_count,
            r.first_delivery,
            r.last_delivery,
            r.last_error,
            r.reason,
        )
        for o, r in sorted(sp.records.items())
    ]
    record = PartitionRecord(STATE_VERSION, sp.start, sp.end, entries, sp.acked, sp.dead_lettered)
    return _ENCODE(record)


def decode_partition(data: bytes, settings: ShareSettings) -> SharePartition:
    """The share-partition a record holds, as a restarted broker resumes it: a record that
    was acquired is released (its holder's lock did not survive), or bound for the dead-letter
    topic if that was its last attempt. Delivery counts are kept."""
    try:
        record = _PARTITION.decode(data)
    except msgspec.DecodeError as exc:
        raise ShareRecordError(f"bad share partition record: {exc}") from None
    if record.version != STATE_VERSION:
        raise ShareRecordError(f"share partition record of version {record.version}")
    sp = SharePartition(record.start, record.end)
    sp.acked, sp.dead_lettered = record.acked, record.dead_lettered
    for e in record.entries:
        entry = InFlight(
            RecordState(e.state),
            e.delivery_count,
            "",
            0,
            0,
            e.first_delivery,
            e.last_delivery,
            e.last_error,
            e.reason,
        )
        if entry.state is RecordState.ACQUIRED:
            entry.expired = True
            if entry.delivery_count >= settings.max_delivery_attempts:
                entry.state, entry.reason = RecordState.ARCHIVING, "lock_expired"
            else:
                entry.state = RecordState.AVAILABLE
        sp.records[e.offset] = entry
    return sp


def encode_settings(settings: ShareSettings) -> bytes:
    return _ENCODE(SettingsRecord(STATE_VERSION, list(settings.as_configs())))


def decode_settings(data: bytes) -> ShareSettings:
    try:
        record = _SETTINGS.decode(data)
    except msgspec.DecodeError as exc:
        raise ShareRecordError(f"bad share settings record: {exc}") from None
    if record.version != STATE_VERSION:
        raise ShareRecordError(f"share settings record of version {record.version}")
    return ShareSettings().altered(record.configs)
