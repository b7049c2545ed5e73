"""What the cluster keeps in etcd: the key layout and the JSON records under it.

Every key lives under a per-cluster prefix, so several clusters can share one etcd::

    /tidelog/<cluster>/brokers/<id>            BrokerRecord        under the broker's lease
    /tidelog/<cluster>/controller              ControllerRecord    under the controller's lease
    /tidelog/<cluster>/topics/<name>           TopicRecord
    /tidelog/<cluster>/partitions/<name>/<p>   PartitionState

Records are JSON (readable with ``etcdctl get --prefix /tidelog/``). The revisions etcd keeps
with each key carry meaning too: a broker registration's creation revision is that broker's
**incarnation** (Kafka's broker epoch), the controller key's creation revision is the
**controller epoch** every controller write compares, and a partition state's modification
revision is what a compare-and-set on it compares (Kafka's partition epoch).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, TypeVar

import msgspec

ROOT: Final = "/tidelog/"
NO_LEADER: Final = -1
_CLUSTER_NAME: Final = re.compile(r"[A-Za-z0-9._-]{1,200}")


class BrokerRecord(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """A live broker: where clients and peers reach it."""

    broker_id: int
    host: str
    port: int
    rack: str | None = None
    admin_port: int = 0
    draining: bool = False
    """Set by a broker that is stopping gracefully: the controller moves its leaderships to
    in-sync followers while it still serves (controlled shutdown), then it leaves."""


class ControllerRecord(msgspec.Struct, frozen=True):
    """Who the controller is: a broker id and the incarnation that won the election."""

    broker_id: int
    incarnation: int


class TopicRecord(msgspec.Struct, frozen=True):
    """A topic: its unique id (KIP-516: a re-created topic of the same name has another one, so
    a broker that missed the delete never serves the old log), its shape and config overrides."""

    topic_id: str
    partitions: int
    replication_factor: int = 1
    configs: dict[str, str] = msgspec.field(default_factory=dict)


class PartitionState(msgspec.Struct, frozen=True, omit_defaults=True):
    """Who holds a partition: replicas, the leader (or :data:`NO_LEADER`), the leader epoch
    (bumped by every leadership change) and the in-sync replicas; ``target``, while a
    reassignment runs, the replica list it moves the partition to (empty otherwise)."""

    topic_id: str
    replicas: tuple[int, ...]
    leader: int
    leader_epoch: int
    isr: tuple[int, ...]
    target: tuple[int, ...] = ()


R = TypeVar("R", BrokerRecord, ControllerRecord, TopicRecord, PartitionState)


def encode(record: msgspec.Struct) -> bytes:
    return msgspec.json.encode(record)


def decode(data: bytes, kind: type[R]) -> R:
    """``data`` as a ``kind``; ``ValueError`` naming the record kind when it does not fit."""
    try:
        return msgspec.json.decode(data, type=kind)
    except msgspec.DecodeError as exc:
        raise ValueError(f"a damaged {kind.__name__} in etcd: {exc}") from None


def validate_cluster_name(name: str) -> str:
    if not _CLUSTER_NAME.fullmatch(name):
        raise ValueError(f"cluster name {name!r} must be 1 to 200 letters, digits, '.', '_' or '-'")
    return name


@dataclass(frozen=True, slots=True)
class ClusterKeys:
    """The etcd keys of one cluster."""

    cluster: str

    def __post_init__(self) -> None:
        validate_cluster_name(self.cluster)

    @property
    def prefix(self) -> bytes:
        return f"{ROOT}{self.cluster}/".encode()

    @property
    def brokers(self) -> bytes:
        return self.prefix + b"brokers/"

    def broker(self, broker_id: int) -> bytes:
        return self.brokers + str(broker_id).encode()

    @property
    def controller(self) -> bytes:
        return self.prefix + b"controller"

    @property
    def producer_ids(self) -> bytes:
        """The next producer id no broker has reserved (a decimal number)."""
        return self.prefix + b"producer-ids"

    @property
    def topics(self) -> bytes:
        return self.prefix + b"topics/"

    def topic(self, name: str) -> bytes:
        return self.topics + name.encode()

    @property
    def partitions(self) -> bytes:
        return self.prefix + b"partitions/"

    def partitions_of(self, topic: str) -> bytes:
        return self.partitions + topic.encode() + b"/"

    def partition(self, topic: str, partition: int) -> bytes:
        return self.partitions_of(topic) + str(partition).encode()

    def parse(self, key: bytes) -> tuple[str, str, int]:
        """``(kind, topic-or-"", number)`` of a key under the prefix: ``("broker", "", 3)``,
        ``("controller", "", 0)``, ``("topic", "orders", 0)``, ``("partition", "orders", 7)``;
        ``("", "", 0)`` for anything else."""
        if not key.startswith(self.prefix):
            return "", "", 0
        rest = key[len(self.prefix) :].decode(errors="replace")
        kind, _, tail = rest.partition("/")
        if kind == "controller" and not tail:
            return "controller", "", 0
        if kind == "brokers" and tail.isdigit():
            return "broker", "", int(tail)
        if kind == "topics" and tail and "/" not in tail:
            return "topic", tail, 0
        if kind == "partitions":
            topic, _, number = tail.rpartition("/")
            if topic and number.isdigit():
                return "partition", topic, int(number)
        return "", "", 0
