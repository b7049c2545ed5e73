"""The internal topic ``__consumer_offsets`` as the coordinator uses it: created at start,
read back partition by partition (:meth:`GroupStore.read`), written durably
(:meth:`GroupStore.append`, then :meth:`GroupStore.durable`), and the committed-offsets table
of the partitions loaded.

Writes have acks=all semantics (:class:`~..core.internal_topic.InternalTopic`): a commit or a
group change is durable before it is answered, and commits that arrive while one fsync runs
share the next one. The append half is synchronous: a group's record is appended in the same
turn of the event loop as the change it stores, so the log holds the group's states in the
order they were made.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import msgspec

from tidelog.server.log import LogManager, TopicPartition
from tidelog.wire.errors import StorageError

from ..core.internal_topic import InternalTopic, Row, internal_topic_config
from .records import (
    OFFSET_VERSION,
    OFFSETS_TOPIC,
    GroupRecord,
    OffsetRecord,
    RecordFormatError,
    RecordType,
    decode_group,
    decode_key,
    decode_offset,
    encode_offset,
    offset_key,
    partition_for,
)

logger = logging.getLogger("tidelog.server.groups")


class OffsetValue(msgspec.Struct, frozen=True):
    """A committed offset (what OffsetFetch reports)."""

    offset: int
    metadata: str = ""
    leader_epoch: int = -1
    commit_timestamp: int = -1


def offsets_topic_config(segment_bytes: int) -> dict[str, object]:
    """The topic's overrides: compacted, kept forever, flushed explicitly before answers."""
    return internal_topic_config(segment_bytes)


@dataclass(slots=True)
class LoadedPartition:
    """What one partition of the topic holds: the latest value of every key."""

    offsets: dict[str, dict[TopicPartition, OffsetValue]] = field(default_factory=dict)
    groups: dict[str, GroupRecord] = field(default_factory=dict)
    records: int = 0


def offset_row(group: str, tp: TopicPartition, value: OffsetValue | None) -> Row:
    if value is None:
        return offset_key(group, tp), None
    stored = OffsetRecord(
        OFFSET_VERSION, value.offset, value.metadata, value.leader_epoch, value.commit_timestamp
    )
    return offset_key(group, tp), encode_offset(stored)


class GroupStore(InternalTopic):
    """The topic, and the committed offsets of the groups in its loaded partitions."""

    def __init__(self, logs: LogManager, *, partitions: int, segment_bytes: int) -> None:
        super().__init__(logs, OFFSETS_TOPIC, partitions)
        self.segment_bytes = segment_bytes
        self._offsets: dict[str, dict[TopicPartition, OffsetValue]] = {}

    def ensure_topic(self) -> None:
        """Create the topic if it is missing. An existing topic keeps its partition count
        (another count would move groups to partitions that do not hold them)."""
        count = self._logs.partition_count(OFFSETS_TOPIC)
        if count is None:
            config = offsets_topic_config(self.segment_bytes)
            self._logs.create_topic(OFFSETS_TOPIC, self.partitions, config)
            return
        if count != self.partitions:
            logger.warning(
                "%s has %d partitions; offsets_topic_partitions (%d) applies only when the "
                "topic is created, so it stays at %d",
                OFFSETS_TOPIC,
                count,
                self.partitions,
                count,
            )
            self.partitions = count

    def partition_for(self, group_id: str) -> int:
        return partition_for(group_id, self.partitions)

    async def read(self, partition: int) -> LoadedPartition:
        """Every key's latest value in ``partition`` (:meth:`rows`). Raises
        :class:`StorageError` if a record has a type or version this broker does not know:
        resuming without it could repeat epochs."""
        out = LoadedPartition()
        async for offset, key, value in self.rows(partition):
            try:
                self._apply(out, key, value)
            except RecordFormatError as exc:
                raise StorageError(
                    f"{OFFSETS_TOPIC}-{partition} offset {offset}: {exc}; "
                    "start the tidelog version that wrote it"
                ) from None
            out.records += 1
        return out

    @staticmethod
    def _apply(out: LoadedPartition, key: bytes, value: bytes | None) -> None:
        kind, group, tp = decode_key(key)
        if kind is RecordType.GROUP:
            if value is None:
                out.groups.pop(group, None)
            else:
                out.groups[group] = decode_group(value)
            return
        assert tp is not None
        if value is None:
            table = out.offsets.get(group)
            if table is not None:
                table.pop(tp, None)
                if not table:
                    del out.offsets[group]
            return
        stored = decode_offset(value)
        out.offsets.setdefault(group, {})[tp] = OffsetValue(
            stored.offset, stored.metadata, stored.leader_epoch, stored.commit_timestamp
        )

    # --- committed offsets ------------------------------------------------------------------

    def adopt(self, loaded: Mapping[str, dict[TopicPartition, OffsetValue]]) -> None:
        """Take the offsets of a partition just loaded."""
        self._offsets.update(loaded)

    def forget(self, partition: int) -> None:
        """Drop the offsets of the groups in ``partition`` (unloaded)."""
        for group in [g for g in self._offsets if self.partition_for(g) == partition]:
            del self._offsets[group]

    def groups(self) -> list[str]:
        """Groups with committed offsets."""
        return [g for g, table in self._offsets.items() if table]

    def committed(self, group: str) -> dict[TopicPartition, OffsetValue]:
        return dict(self._offsets.get(group, {}))

    async def commit(self, group: str, offsets: Mapping[TopicPartition, OffsetValue]) -> None:
        """Store offsets: one batch, fsynced before this returns; the table is updated at once
        (later reads see them). Raises :class:`StorageError`."""
        if not offsets:
            return
        partition = self.partition_for(group)
        end = self.append(partition, [offset_row(group, tp, v) for tp, v in offsets.items()])
        self._offsets.setdefault(group, {}).update(offsets)
        await self.durable(partition, end)

    async def delete(self, group: str, extra: Sequence[Row] = ()) -> None:
        """Tombstones for every offset of ``group`` (and ``extra`` rows), fsynced."""
        rows = [offset_row(group, tp, None) for tp in self._offsets.get(group, {})]
        rows.extend(extra)
        if not rows:
            return
        partition = self.partition_for(group)
        end = self.append(partition, rows)
        self._offsets.pop(group, None)
        await self.durable(partition, end)
