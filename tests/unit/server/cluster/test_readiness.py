"""``/ready`` of a broker in a cluster (:meth:`ClusterRole.not_ready`): not before it is
registered, nor while the cluster's view names it leader of a partition it does not lead yet.
No etcd is contacted: the view is filled in by hand, as the watch would."""

from __future__ import annotations

from typing import Any, cast

from tidelog.server import BrokerConfig
from tidelog.server.cluster.member import ClusterMember
from tidelog.server.cluster.records import BrokerRecord, PartitionState, TopicRecord
from tidelog.server.cluster.role import ClusterRole
from tidelog.server.cluster.view import Versioned
from tidelog.server.log import LogManager, TopicPartition


def no_logs() -> LogManager:
    raise AssertionError("readiness reads no log")


def test_ready_once_registered_and_leading_what_the_view_says() -> None:
    role = ClusterRole(BrokerConfig(broker_id=1, etcd="127.0.0.1:1"), no_logs, lambda tp: None)
    assert role.not_ready() == "not registered in the cluster"
    me = BrokerRecord(1, "127.0.0.1", 7070)
    member = role.member = ClusterMember(role.etcd, role.keys, me)
    assert role.not_ready() == "not registered in the cluster"  # its key not seen yet
    view = member.view
    view.brokers[1] = Versioned(me, 5, 5)
    view.partitions["t", 0] = Versioned(PartitionState("id", (1, 2), 1, 0, (1, 2)), 6, 6)
    view.partitions["t", 1] = Versioned(PartitionState("id", (2, 1), 2, 0, (2, 1)), 7, 7)
    view.topics["t"] = Versioned(TopicRecord("id", 2, 2), 4, 4)
    # a deleted topic's leftover partition state, not removed by the controller yet
    view.partitions["gone", 0] = Versioned(PartitionState("old", (1,), 1, 0, (1,)), 3, 3)
    assert role.not_ready() == "not yet leading 1 partition(s) it leads: t-0"
    role.replicas.leaders[TopicPartition("t", 0)] = cast(Any, object())
    assert role.not_ready() is None  # t-1 is led by broker 2: not this one's to wait for
