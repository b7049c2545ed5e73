"""A broker's picture of the cluster: everything under the cluster's prefix, as of a revision.

It starts from one range read (a consistent snapshot at one revision) and follows a watch from
the next revision on; a watch that breaks or falls behind etcd's compaction is replaced by a
fresh read (:meth:`ClusterView.load`), so the view never skips a change silently.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Generic

from tidelog.etcd import EventType, KeyValue, WatchEvent

from .records import (
    BrokerRecord,
    ClusterKeys,
    ControllerRecord,
    PartitionState,
    R,
    TopicRecord,
    decode,
)

logger = logging.getLogger("tidelog.server.cluster")


@dataclass(frozen=True, slots=True)
class Versioned(Generic[R]):
    """A record with the etcd revisions of its key: created at (incarnation, controller epoch)
    and last modified at (what a compare-and-set compares)."""

    record: R
    create_revision: int
    mod_revision: int


@dataclass(slots=True)
class ClusterView:
    keys: ClusterKeys
    revision: int = 0
    brokers: dict[int, Versioned[BrokerRecord]] = field(default_factory=dict)
    controller: Versioned[ControllerRecord] | None = None
    topics: dict[str, Versioned[TopicRecord]] = field(default_factory=dict)
    partitions: dict[tuple[str, int], Versioned[PartitionState]] = field(default_factory=dict)

    @classmethod
    def load(cls, keys: ClusterKeys, kvs: Iterable[KeyValue], revision: int) -> ClusterView:
        view = cls(keys, revision)
        for kv in kvs:
            view.put(kv)
        return view

    def apply(self, events: Iterable[WatchEvent], revision: int) -> None:
        for event in events:
            if event.type is EventType.DELETE:
                self.delete(event.kv.key)
            else:
                self.put(event.kv)
        self.revision = max(self.revision, revision)

    def put(self, kv: KeyValue) -> None:
        kind, topic, number = self.keys.parse(kv.key)
        try:
            if kind == "broker":
                self.brokers[number] = _versioned(kv, BrokerRecord)
            elif kind == "controller":
                self.controller = _versioned(kv, ControllerRecord)
            elif kind == "topic":
                self.topics[topic] = _versioned(kv, TopicRecord)
            elif kind == "partition":
                self.partitions[topic, number] = _versioned(kv, PartitionState)
        except ValueError as exc:
            # Somebody wrote garbage under our prefix: ignore that key, loudly.
            logger.error("ignoring etcd key %r: %s", kv.key, exc)

    def delete(self, key: bytes) -> None:
        kind, topic, number = self.keys.parse(key)
        if kind == "broker":
            self.brokers.pop(number, None)
        elif kind == "controller":
            self.controller = None
        elif kind == "topic":
            self.topics.pop(topic, None)
        elif kind == "partition":
            self.partitions.pop((topic, number), None)

    # --- questions -----------------------------------------------------------------------

    @property
    def controller_id(self) -> int:
        return -1 if self.controller is None else self.controller.record.broker_id

    def live_brokers(self) -> list[int]:
        return sorted(self.brokers)

    def partitions_of(self, topic: str) -> dict[int, Versioned[PartitionState]]:
        return {p: v for (t, p), v in self.partitions.items() if t == topic}

    def topic_ready(self, topic: str) -> bool:
        """Whether every partition of ``topic`` has its state, for the topic id it has now."""
        found = self.topics.get(topic)
        if found is None:
            return False
        states = self.partitions_of(topic)
        return len(states) == found.record.partitions and all(
            s.record.topic_id == found.record.topic_id for s in states.values()
        )


def _versioned(kv: KeyValue, kind: type[R]) -> Versioned[R]:
    return Versioned(decode(kv.value, kind), kv.create_revision, kv.mod_revision)
