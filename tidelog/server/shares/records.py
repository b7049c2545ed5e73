"""The records of the internal topic ``__share_group_state`` (docs/QUEUES.md, "Durability").

A share-partition is stored as **deltas**: each change writes only what changed, never the
whole window (with a thousand records in flight, a whole-state record per ack cost more than
the rest of the ack).

* a **partition** record: key ``[0, group, topic, partition]``, value a :class:`PartitionRecord`
  of version 2: the window's start and end offsets and its counters, rewritten with every
  change (it is small). Version 1 also held every unsettled record (``entries``): it is still
  read, and its entries are stored as entry records the next time the partition changes.
* an **entry** record: key ``[2, group, topic, partition, offset]``, value an
  :class:`EntryRecord` (state, delivery count, first and last delivery times, last error), one
  per unsettled record; settling it writes a tombstone (null value).
* a **settings** record: key ``[1, group]``, value a :class:`SettingsRecord`.

The changes of one request go in one batch (atomic), written and fsynced before an acquisition
is delivered and before an acknowledgement is answered. Msgpack keys and values, values
versioned; the topic is compacted, so only each key's last record stays: a partition's state is
its last partition record plus the last entry record of each offset in its window (an entry
below the start is settled whatever it says). Readers refuse a version they do not know.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Final, Protocol, TypeVar

import msgspec

from tidelog.server.log import TopicPartition

from .partition import InFlight, RecordState, SharePartition
from .settings import ShareSettings

SHARE_STATE_TOPIC: Final = "__share_group_state"
STATE_VERSION: Final = 1
"""Of settings and entry records."""
PARTITION_VERSION: Final = 2
"""Of partition records: 1 held the whole state (read, never written), 2 the header only."""


class ShareRecordType(IntEnum):
    PARTITION = 0
    SETTINGS = 1
    ENTRY = 2


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


class EntryValue(msgspec.Struct, array_like=True, frozen=True):
    """The value of an entry record (the offset is in its key)."""

    version: int
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
_ENTRY = msgspec.msgpack.Decoder(EntryValue)
_SETTINGS = msgspec.msgpack.Decoder(SettingsRecord)
_ENCODE = msgspec.msgpack.Encoder().encode

Row = tuple[bytes, bytes | None]
PartitionId = tuple[str, TopicPartition]
"""A share-partition: its group and topic partition."""


@dataclass(slots=True)
class StoredPartition:
    """A share-partition's records as read back: its partition record and its entries'."""

    value: bytes | None = None
    entries: dict[int, bytes] = field(default_factory=dict)


@dataclass(slots=True)
class StoredState:
    """What one partition of ``__share_group_state`` holds, decoded down to the keys."""

    settings: dict[str, bytes] = field(default_factory=dict)
    partitions: dict[PartitionId, StoredPartition] = field(default_factory=dict)


def partition_key(group: str, tp: TopicPartition) -> bytes:
    return _ENCODE((int(ShareRecordType.PARTITION), group, tp.topic, tp.partition))


def entry_key(group: str, tp: TopicPartition, offset: int) -> bytes:
    return _ENCODE((int(ShareRecordType.ENTRY), group, tp.topic, tp.partition, offset))


def settings_key(group: str) -> bytes:
    return _ENCODE((int(ShareRecordType.SETTINGS), group))


def decode_key(data: bytes) -> tuple[ShareRecordType, str, TopicPartition | None, int]:
    """``(type, group, topic partition or None, offset or -1)``."""
    try:
        key = _KEY.decode(data)
    except msgspec.DecodeError as exc:
        raise ShareRecordError(f"not a share state key: {exc}") from None
    match key:
        case [ShareRecordType.PARTITION, str(group), str(topic), int(partition)]:
            return ShareRecordType.PARTITION, group, TopicPartition(topic, partition), -1
        case [ShareRecordType.ENTRY, str(group), str(topic), int(partition), int(offset)]:
            return ShareRecordType.ENTRY, group, TopicPartition(topic, partition), offset
        case [ShareRecordType.SETTINGS, str(group)]:
            return ShareRecordType.SETTINGS, group, None, -1
    raise ShareRecordError(f"unknown share state key {key!r} (written by a newer tidelog?)")


def sort_rows(rows: Mapping[bytes, bytes | None]) -> StoredState:
    """The last value of every key (``ShareStore.read``), by share-partition. Tombstones and
    settled entries are left out. Raises :class:`ShareRecordError` for a key it cannot read."""
    out = StoredState()
    for key, value in rows.items():
        if value is None:
            continue
        kind, group, tp, offset = decode_key(key)
        if kind is ShareRecordType.SETTINGS:
            out.settings[group] = value
            continue
        assert tp is not None
        stored = out.partitions.setdefault((group, tp), StoredPartition())
        if kind is ShareRecordType.PARTITION:
            stored.value = value
        else:
            stored.entries[offset] = value
    return out


def encode_partition(sp: SharePartition) -> bytes:
    """The partition record: start, end and counters (the entries are records of their own)."""
    return _ENCODE(
        PartitionRecord(PARTITION_VERSION, sp.start, sp.end, [], sp.acked, sp.dead_lettered)
    )


def encode_entry(entry: InFlight | None) -> bytes | None:
    """An entry record's value; a tombstone for a settled record (``None``)."""
    if entry is None:
        return None
    return _ENCODE(
        EntryValue(
            STATE_VERSION,
            int(entry.state),
            entry.delivery_count,
            entry.first_delivery,
            entry.last_delivery,
            entry.last_error,
            entry.reason,
        )
    )


def changed_rows(
    group: str, tp: TopicPartition, sp: SharePartition, offsets: Iterable[int]
) -> list[Row]:
    """The records that store ``offsets`` of ``sp`` (its dirty ones): an entry record each (a
    tombstone for a settled one), then the partition record."""
    rows: list[Row] = [(entry_key(group, tp, o), encode_entry(sp.records.get(o))) for o in offsets]
    rows.append((partition_key(group, tp), encode_partition(sp)))
    return rows


def decode_partition(stored: StoredPartition, settings: ShareSettings) -> SharePartition:
    """The share-partition its records hold, as a restarted broker resumes it: a record that
    was acquired is released (its holder's lock did not survive), or bound for the dead-letter
    topic if that was its last attempt. Delivery counts are kept. The entries of a version 1
    record are dirty (stored as entry records with the next change)."""
    if stored.value is None:
        raise ShareRecordError("share entry records without their partition record")
    record = _decode(_PARTITION, stored.value, "partition", (1, PARTITION_VERSION))
    sp = SharePartition(record.start, record.end)
    sp.acked, sp.dead_lettered = record.acked, record.dead_lettered
    values = [(e.offset, EntryValue(STATE_VERSION, *_fields(e))) for e in record.entries] + [
        (offset, _decode(_ENTRY, data, "entry", (STATE_VERSION,)))
        for offset, data in stored.entries.items()
    ]
    for offset, e in values:
        if not record.start <= offset < record.end:
            continue  # settled (its tombstone may be compacted away already)
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
        sp.load(offset, entry)
    sp.dirty.update(e.offset for e in record.entries)
    return sp


def _fields(e: EntryRecord) -> tuple[int, int, int, int, str, str]:
    return e.state, e.delivery_count, e.first_delivery, e.last_delivery, e.last_error, e.reason


class _Versioned(Protocol):
    @property
    def version(self) -> int: ...


_V = TypeVar("_V", bound=_Versioned)


def _decode(
    decoder: msgspec.msgpack.Decoder[_V], data: bytes, what: str, versions: tuple[int, ...]
) -> _V:
    try:
        value = decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise ShareRecordError(f"bad share {what} record: {exc}") from None
    if value.version not in versions:
        raise ShareRecordError(f"share {what} record of version {value.version}")
    return value


def encode_settings(settings: ShareSettings) -> bytes:
    return _ENCODE(SettingsRecord(STATE_VERSION, list(settings.as_configs())))


def decode_settings(data: bytes) -> ShareSettings:
    record = _decode(_SETTINGS, data, "settings", (STATE_VERSION,))
    return ShareSettings().altered(record.configs)
