from __future__ import annotations

import pytest

from tidelog.client.cluster import ClusterMetadata, parse_bootstrap
from tidelog.client.errors import ClientUsageError
from tidelog.client.types import TopicPartition
from tidelog.wire import messages as m


def test_parse_bootstrap_forms() -> None:
    assert parse_bootstrap("a:1, b") == [("a", 1), ("b", 7070)]
    assert parse_bootstrap(["[::1]:9000", "[fe80::1]"]) == [("::1", 9000), ("fe80::1", 7070)]


@pytest.mark.parametrize("bad", ["", " , ", "host:port", "host:0", "host:70000"])
def test_parse_bootstrap_refuses_bad_input(bad: str) -> None:
    with pytest.raises(ClientUsageError):
        parse_bootstrap(bad)


RESPONSE = m.MetadataResponse(
    brokers=(m.BrokerInfo(1, "h1", 9001), m.BrokerInfo(2, "h2", 9002)),
    controller_id=1,
    cluster_id="c",
    topics=(
        m.TopicMetadata(
            "t",
            partitions=(
                m.PartitionMetadata(1, leader=2),
                m.PartitionMetadata(0, leader=1),
                m.PartitionMetadata(2, leader=-1, error_code=8),
                m.PartitionMetadata(3, leader=7),  # a broker the metadata does not list
            ),
        ),
        m.TopicMetadata("gone", error_code=3),
    ),
)


def test_snapshot_answers_leaders_and_partitions() -> None:
    meta = ClusterMetadata.from_response(RESPONSE)
    assert meta.leader_for(TopicPartition("t", 0)) == 1
    assert meta.leader_for(TopicPartition("t", 1)) == 2
    assert meta.leader_for(TopicPartition("t", 2)) is None
    assert meta.leader_for(TopicPartition("t", 3)) is None
    assert meta.leader_for(TopicPartition("t", 9)) is None
    assert meta.leader_for(TopicPartition("nope", 0)) is None
    assert meta.partitions_for("t") == (0, 1, 2, 3)
    assert meta.topics["t"].available == (0, 1, 3)
    assert meta.partitions_for("gone") is None
    assert meta.partitions_for("nope") is None
    assert meta.controller_id == 1
    assert meta.cluster_id == "c"


def test_a_partial_response_keeps_other_topics() -> None:
    first = ClusterMetadata.from_response(RESPONSE)
    partial = m.MetadataResponse(
        brokers=RESPONSE.brokers,
        topics=(m.TopicMetadata("u", partitions=(m.PartitionMetadata(0, leader=2),)),),
    )
    merged = ClusterMetadata.from_response(partial, first)
    assert merged.partitions_for("t") == (0, 1, 2, 3)
    assert merged.leader_for(TopicPartition("u", 0)) == 2
    assert ClusterMetadata.from_response(partial).partitions_for("t") is None
