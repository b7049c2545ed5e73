"""The cluster as etcd records it, read once: live brokers, the controller, topics and who leads
each partition. The key layout and the JSON records are docs/CLUSTER.md's; the structs here are
this package's own readers of them (the supervisor never imports the server), lenient about
fields it does not need.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, TypeVar

import msgspec

from tidelog.etcd import EtcdClient

ROOT: Final = "/tidelog/"
NO_LEADER: Final = -1


class BrokerEntry(msgspec.Struct, frozen=True):
    """``brokers/<id>``: a registered (live) broker."""

    broker_id: int
    host: str
    port: int
    admin_port: int = 0


class ControllerEntry(msgspec.Struct, frozen=True):
    broker_id: int


class TopicEntry(msgspec.Struct, frozen=True):
    topic_id: str
    partitions: int
    replication_factor: int = 1


class PartitionEntry(msgspec.Struct, frozen=True):
    """``partitions/<topic>/<p>``: its replicas, leader (:data:`NO_LEADER` when none) and
    in-sync replicas."""

    replicas: tuple[int, ...]
    leader: int
    leader_epoch: int = 0
    isr: tuple[int, ...] | None = None  # absent: a record that predates replication


S = TypeVar("S", BrokerEntry, ControllerEntry, TopicEntry, PartitionEntry)


def _decode(data: bytes, kind: type[S]) -> S | None:
    try:
        return msgspec.json.decode(data, type=kind)
    except msgspec.DecodeError:
        return None  # a record this version cannot read: shown as absent, never fatal


@dataclass(frozen=True, slots=True)
class TopicView:
    name: str
    partitions: int
    replication_factor: int
    leaders: dict[int, int] = field(default_factory=dict)
    """Partition -> leader, for the partitions the controller has placed."""
    short: tuple[int, ...] = ()
    """The placed partitions whose ISR is smaller than their replica set."""

    @property
    def leaderless(self) -> list[int]:
        return [p for p in range(self.partitions) if self.leaders.get(p, NO_LEADER) < 0]

    @property
    def under_replicated(self) -> list[int]:
        """Partitions with a replica out of the ISR (Kafka's under-replicated partitions); a
        leaderless partition counts here too when its ISR is short."""
        return list(self.short)


@dataclass(frozen=True, slots=True)
class ClusterView:
    """One consistent read of the cluster's prefix (a single etcd range)."""

    brokers: dict[int, BrokerEntry]
    controller: int
    topics: dict[str, TopicView]

    def led_by(self, broker_id: int) -> int:
        return sum(1 for t in self.topics.values() for b in t.leaders.values() if b == broker_id)

    @property
    def leaderless(self) -> list[str]:
        return [f"{t.name}-{p}" for t in self.topics.values() for p in t.leaderless]

    @property
    def under_replicated(self) -> list[str]:
        return [f"{t.name}-{p}" for t in self.topics.values() for p in t.under_replicated]


def parse(cluster_id: str, kvs: Sequence[tuple[bytes, bytes]]) -> ClusterView:
    """The view from the ``(key, value)`` pairs under ``/tidelog/<cluster_id>/``."""
    prefix = f"{ROOT}{cluster_id}/".encode()
    brokers: dict[int, BrokerEntry] = {}
    controller = NO_LEADER
    topics: dict[str, TopicEntry] = {}
    leaders: dict[str, dict[int, int]] = {}
    short: dict[str, list[int]] = {}
    for key, value in kvs:
        parts = key[len(prefix) :].decode(errors="replace").split("/")
        match parts:
            case ["brokers", _]:
                broker = _decode(value, BrokerEntry)
                if broker is not None:
                    brokers[broker.broker_id] = broker
            case ["controller"]:
                entry = _decode(value, ControllerEntry)
                controller = entry.broker_id if entry is not None else NO_LEADER
            case ["topics", name]:
                topic = _decode(value, TopicEntry)
                if topic is not None:
                    topics[name] = topic
            case ["partitions", name, partition] if partition.isdigit():
                state = _decode(value, PartitionEntry)
                if state is not None:
                    leaders.setdefault(name, {})[int(partition)] = state.leader
                    if state.isr is not None and len(state.isr) < len(state.replicas):
                        short.setdefault(name, []).append(int(partition))
    views = {
        name: TopicView(
            name,
            t.partitions,
            t.replication_factor,
            leaders.get(name, {}),
            tuple(sorted(short.get(name, ()))),
        )
        for name, t in sorted(topics.items())
    }
    return ClusterView(brokers, controller, views)


async def read(endpoints: Sequence[str], cluster_id: str, wait_s: float = 2.0) -> ClusterView:
    """Read the cluster's whole prefix from etcd; raises ``tidelog.etcd.EtcdError`` when etcd
    does not answer."""
    async with EtcdClient(endpoints, timeout=wait_s) as client:
        kvs, _ = await client.range(f"{ROOT}{cluster_id}/".encode(), prefix=True)
    return parse(cluster_id, [(kv.key, kv.value) for kv in kvs])
