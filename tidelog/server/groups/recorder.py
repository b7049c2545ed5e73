"""Stored before told: a group's state goes to ``__consumer_offsets`` in the same turn of the
event loop as the change, and answers wait until it is fsynced (docs/GROUPS.md).

:class:`GroupRecorder` keeps, per group, which state (object and revision) its last record
holds and, until it is known fsynced, where that record ends. Writing the whole state each time
keeps every record a consistent picture of the group: the last one read back is the state the
group had when it was written, whatever came before.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Collection, Mapping

from tidelog.wire.errors import StorageError

from .group import ConsumerGroup
from .groupstate import group_record
from .records import encode_group, group_key
from .store import GroupStore


class GroupRecorder:
    """Appends the state of the groups in ``groups`` (the coordinator's live map) when it
    changed, and waits for it to be durable."""

    def __init__(self, store: GroupStore, groups: Mapping[str, ConsumerGroup]) -> None:
        self._store = store
        self._groups = groups
        self._stored: dict[str, tuple[ConsumerGroup, int]] = {}
        self._written: dict[str, int] = {}

    def resumed(self, group: ConsumerGroup) -> None:
        """``group`` was just read back: its record holds it."""
        self._stored[group.group_id] = (group, group.revision)

    def forget(self, group_id: str) -> None:
        """The group's partition was unloaded."""
        self._stored.pop(group_id, None)
        self._written.pop(group_id, None)

    def write(self, group_id: str) -> None:
        """Append the group's state now if it changed since its last record (a tombstone once
        it has no members). Raises :class:`StorageError`."""
        group = self._groups.get(group_id)
        stored = self._stored.get(group_id)
        if group is not None and group.members:
            if stored is not None and stored[0] is group and stored[1] == group.revision:
                return
            value: bytes | None = encode_group(group_record(group))
            self._stored[group_id] = (group, group.revision)
        else:
            if stored is None:
                return
            value = None
            del self._stored[group_id]
        partition = self._store.partition_for(group_id)
        self._written[group_id] = self._store.append(partition, [(group_key(group_id), value)])

    async def durable(self, group_id: str) -> None:
        """:meth:`write`, then return once the group's last record is fsynced. Raises
        :class:`StorageError`."""
        self.write(group_id)
        end = self._written.get(group_id)
        if end is None:
            return
        await self._store.durable(self._store.partition_for(group_id), end)
        if self._written.get(group_id) == end:
            del self._written[group_id]

    async def settled(self, group_id: str) -> None:
        """Before an error answer: wait for the group's records too (the error may tell of a
        change, a member removed, that must be stored first). A storage failure here is left
        to the records' own waiters."""
        with contextlib.suppress(StorageError):
            await self.durable(group_id)

    async def write_changed(self, loaded: Collection[int]) -> None:
        """Store every group of the ``loaded`` partitions that changed on its own (members
        removed by the housekeeping, groups emptied)."""
        for group_id in set(self._stored) | set(self._groups):
            if self._store.partition_for(group_id) in loaded:
                self.write(group_id)
        await asyncio.gather(*(self.durable(g) for g in list(self._written)))
