"""The internal topic ``__share_group_state`` as the share coordinator uses it: created on
first use, read back partition by partition when the coordinator takes one over, appended to in
the same turn of the loop as a change, and durable (fsynced; in a cluster, in every in-sync
replica) before the change is told to anyone (:class:`~..core.internal_topic.InternalTopic`)."""

from __future__ import annotations

from typing import Final

from tidelog.server.log import LogManager

from ..core.internal_topic import InternalTopic, internal_topic_config
from ..groups.records import partition_for
from .records import SHARE_STATE_TOPIC

SHARE_STATE_PARTITIONS: Final = 4
SEGMENT_BYTES: Final = 16 * 1024 * 1024


def share_state_topic_config() -> dict[str, object]:
    return internal_topic_config(SEGMENT_BYTES)


class ShareStore(InternalTopic):
    def __init__(self, logs: LogManager, partitions: int = SHARE_STATE_PARTITIONS) -> None:
        super().__init__(logs, SHARE_STATE_TOPIC, partitions)

    def exists(self) -> bool:
        return self._logs.partition_count(SHARE_STATE_TOPIC) is not None

    def ensure_topic(self) -> None:
        """Create the topic if missing (an existing one keeps its partition count). In a
        cluster the cluster creates it (``ClusterRole.ensure_internal_topic``)."""
        count = self._logs.partition_count(SHARE_STATE_TOPIC)
        if count is None:
            self._logs.create_topic(SHARE_STATE_TOPIC, self.partitions, share_state_topic_config())
        else:
            self.partitions = count

    def partition_for(self, group_id: str) -> int:
        return partition_for(group_id, self.partitions)

    async def read(self, partition: int) -> dict[bytes, bytes | None]:
        """Every key's last value (tombstones as ``None``), from log start to end."""
        return {key: value async for _, key, value in self.rows(partition)}
