"""``tidelog topic ...`` in-process against a real broker."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tidelog.client import AdminClient, Producer
from tidelog.testing import BrokerThread

from .helpers import cli, run


def produce(address: str, topic: str, values: list[bytes], partition: int = 0) -> None:
    async def main() -> None:
        async with Producer(address) as producer:
            for value in values:
                await producer.send(topic, value, partition=partition)

    run(main())


def test_create_list_describe_alter_delete(tidelog_broker: BrokerThread) -> None:
    address = tidelog_broker.address
    created = cli(address, "topic", "create", "events", "-p", "3", "--config", "retention_ms=60000")
    assert created.exit_code == 0, created.output
    assert "created topic events with 3 partitions" in created.output
    produce(address, "events", [b"a", b"b", b"c"], partition=1)

    listed = cli(address, "topic", "list")
    assert listed.exit_code == 0, listed.output
    assert "events" in listed.output
    rows = json.loads(cli(address, "--json", "topic", "list").stdout)
    assert rows == [
        {
            "topic": "events",
            "partitions": 3,
            "records": 3,
            "size_bytes": rows[0]["size_bytes"],
            "internal": False,
        }
    ]
    assert rows[0]["size_bytes"] > 0

    described = cli(address, "topic", "describe", "events")
    assert described.exit_code == 0, described.output
    assert "3 partitions, 3 records" in described.output
    assert "retention_ms" in described.output and "60000" in described.output
    info = json.loads(cli(address, "--json", "topic", "describe", "events").stdout)
    p1 = info["partitions"][1]
    assert (p1["start_offset"], p1["end_offset"], p1["records"], p1["segments"]) == (0, 3, 3, 1)
    assert p1["size_bytes"] > 0 and p1["leader"] == 0 and p1["replicas"] == [0]
    assert p1["lag"] == {"0": 0}  # a single broker: its only replica is the leader
    assert info["configs"]["retention_ms"] == {"value": "60000", "source": "topic"}

    altered = cli(address, "topic", "alter", "events", "--config", "retention_ms=120000")
    assert altered.exit_code == 0, altered.output
    info = json.loads(cli(address, "--json", "topic", "describe", "events").stdout)
    assert info["configs"]["retention_ms"]["value"] == "120000"
    reset = cli(address, "topic", "alter", "events", "--reset", "retention_ms")
    assert reset.exit_code == 0, reset.output
    info = json.loads(cli(address, "--json", "topic", "describe", "events").stdout)
    assert info["configs"]["retention_ms"]["source"] == "default"

    # Standard input is not a terminal here: no question is asked.
    deleted = cli(address, "topic", "delete", "events")
    assert deleted.exit_code == 0, deleted.output
    assert "deleted topic events" in deleted.output
    empty = cli(address, "topic", "list")
    assert "no topics yet" in empty.output


def test_create_twice_and_if_not_exists(tidelog_broker: BrokerThread) -> None:
    address = tidelog_broker.address
    assert cli(address, "topic", "create", "t").exit_code == 0
    again = cli(address, "topic", "create", "t")
    assert again.exit_code == 1
    assert "topic 't' already exists" in again.output and "--if-not-exists" in again.output
    assert cli(address, "topic", "create", "t", "--if-not-exists").exit_code == 0
    as_json = json.loads(cli(address, "--json", "topic", "create", "u", "-p", "2").stdout)
    assert as_json == {"topic": "u", "partitions": 2, "configs": {}}


def test_missing_topic_is_one_line_and_exit_1(tidelog_broker: BrokerThread) -> None:
    for args in (["describe", "nope"], ["delete", "nope", "--yes"], ["alter", "nope", "-c", "a=1"]):
        result = cli(tidelog_broker.address, "topic", *args)
        assert result.exit_code == 1, (args, result.output)
        assert "'nope'" in result.output
        assert len(result.output.strip().splitlines()) == 1
        assert "Traceback" not in result.output


def test_bad_config_key_is_refused_by_the_broker(tidelog_broker: BrokerThread) -> None:
    address = tidelog_broker.address
    result = cli(address, "topic", "create", "t", "--config", "no_such_key=1")
    assert result.exit_code == 1
    assert "no_such_key" in result.output
    assert cli(address, "topic", "create", "t").exit_code == 0
    result = cli(address, "topic", "alter", "t", "--config", "retention_ms=soon")
    assert result.exit_code == 1
    assert "retention_ms" in result.output


def test_bad_key_value_is_a_usage_error(tidelog_broker: BrokerThread) -> None:
    address = tidelog_broker.address
    result = cli(address, "topic", "create", "t", "--config", "retention_ms")
    assert result.exit_code == 2
    assert "key=value" in result.output
    assert cli(address, "topic", "alter", "t", "--config", "=1").exit_code == 2
    nothing = cli(address, "topic", "alter", "t")
    assert nothing.exit_code == 2
    assert "nothing to change" in nothing.output

    async def topics() -> list[str]:
        async with AdminClient(address) as admin:
            return await admin.list_topics()

    assert run(topics()) == []  # nothing was created


@pytest.mark.storage_bound
def test_describe_reports_the_ranges_the_broker_cannot_read(
    tidelog_broker_factory: Callable[..., BrokerThread], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    first = tidelog_broker_factory(data_dir=data)
    cli(first.address, "topic", "create", "events", "--config", "segment_bytes=1024")

    async def one_batch_each() -> None:
        async with Producer(first.address, linger=0) as producer:
            for _ in range(12):
                await producer.send("events", b"x" * 300)
                await producer.flush()

    run(one_batch_each())
    first.stop()
    segments = sorted((data / "events-0").glob("*.log"))
    start, end = int(segments[1].name[:20]), int(segments[2].name[:20])
    segments[1].unlink()  # a segment lost between two runs
    again = tidelog_broker_factory(data_dir=data)

    described = cli(again.address, "topic", "describe", "events")
    assert described.exit_code == 0, described.output
    assert "1 unreadable range" in described.output and "missing" in described.output
    info = json.loads(cli(again.address, "--json", "topic", "describe", "events").stdout)
    (partition,) = info["partitions"]
    assert partition["unreadable"] == [
        {"start": start, "end": end, "kind": "missing", "detail": "no segment"}
    ]


def test_internal_topics_are_listed_with_internal_described_and_not_deleted(
    tidelog_broker: BrokerThread,
) -> None:
    address = tidelog_broker.address
    assert cli(address, "topic", "create", "events").exit_code == 0
    rows = json.loads(cli(address, "--json", "topic", "list").stdout)
    assert [row["topic"] for row in rows] == ["events"]
    listed = cli(address, "topic", "list", "--internal")
    assert listed.exit_code == 0, listed.output
    assert "__consumer_offsets" in listed.output
    rows = json.loads(cli(address, "--json", "topic", "list", "--internal").stdout)
    assert {row["topic"]: row["internal"] for row in rows} == {
        "__consumer_offsets": True,
        "events": False,
    }

    described = cli(address, "topic", "describe", "__consumer_offsets")
    assert described.exit_code == 0, described.output
    info = json.loads(cli(address, "--json", "topic", "describe", "__consumer_offsets").stdout)
    assert info["configs"]["cleanup_policy"]["value"] == "compact"
    assert len(info["partitions"]) >= 1

    deleted = cli(address, "topic", "delete", "__consumer_offsets")
    assert deleted.exit_code == 1, deleted.output
    assert "internal topic" in deleted.output
    assert "__consumer_offsets" in cli(address, "topic", "list", "--internal").output


def test_reassign_and_rebalance_on_a_single_broker_say_they_need_a_cluster(
    tidelog_broker: BrokerThread,
) -> None:
    address = tidelog_broker.address
    assert cli(address, "topic", "create", "moving").exit_code == 0
    refused = cli(address, "topic", "reassign", "moving", "--replicas", "1")
    assert refused.exit_code == 1
    assert "partition reassignment needs a cluster (brokers started with --etcd)" in refused.output
    assert cli(address, "cluster", "rebalance").exit_code == 1
    usage = cli(address, "topic", "reassign", "moving", "--replicas", "1,,2")
    assert usage.exit_code == 2 and "give broker ids separated by commas" in usage.output
