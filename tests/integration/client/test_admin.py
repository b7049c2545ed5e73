"""The admin client against a real broker."""

from __future__ import annotations

from pathlib import Path

import pytest

from tidelog.client import AdminClient, NewTopic, OffsetSpec, Producer, TopicPartition
from tidelog.wire import messages as m
from tidelog.wire.errors import (
    InvalidConfigError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)

from .helpers import broker, run


def test_create_describe_and_delete_topics(tmp_path: Path) -> None:
    async def main() -> None:
        async with broker(tmp_path) as b, AdminClient(b.address) as admin:
            await admin.create_topics([NewTopic("a", 3), NewTopic("b", 1)])
            assert await admin.list_topics() == ["a", "b"]
            (a,) = await admin.describe_topics(["a"])
            assert a.name == "a"
            assert [p.partition for p in a.partitions] == [0, 1, 2]
            assert all(p.leader == 0 for p in a.partitions)
            assert [t.name for t in await admin.describe_topics()] == ["a", "b"]

            with pytest.raises(TopicAlreadyExistsError, match=r"'a'.*if_not_exists"):
                await admin.create_topic("a", 1)
            await admin.create_topic("a", 1, if_not_exists=True)

            await admin.delete_topics(["b"])
            assert await admin.list_topics() == ["a"]
            with pytest.raises(UnknownTopicOrPartitionError, match="'b'"):
                await admin.describe_topics(["b"])
            with pytest.raises(UnknownTopicOrPartitionError):
                await admin.delete_topics(["b"])
            await admin.delete_topics(["b"], if_exists=True)

    run(main())


def test_validate_only_creates_nothing(tmp_path: Path) -> None:
    async def main() -> None:
        async with broker(tmp_path) as b, AdminClient(b.address) as admin:
            await admin.create_topics([NewTopic("dry", 2)], validate_only=True)
            assert await admin.list_topics() == []

    run(main())


def test_describe_and_alter_configs(tmp_path: Path) -> None:
    async def main() -> None:
        async with broker(tmp_path) as b, AdminClient(b.address) as admin:
            await admin.create_topic("t", 1, configs={"retention_ms": "60000"})
            configs = (await admin.describe_configs(["t"]))["t"]
            assert configs["retention_ms"].value == "60000"
            assert configs["retention_ms"].source == m.ConfigSource.TOPIC

            await admin.alter_configs("t", {"retention_ms": "120000"})
            entry = (await admin.describe_configs(["t"], keys=["retention_ms"]))["t"]
            assert list(entry) == ["retention_ms"]
            assert entry["retention_ms"].value == "120000"

            await admin.alter_configs("t", delete=["retention_ms"])
            reset = (await admin.describe_configs(["t"]))["t"]["retention_ms"]
            assert reset.source != m.ConfigSource.TOPIC

            with pytest.raises(InvalidConfigError, match="'t'"):
                await admin.alter_configs("t", {"no.such.key": "1"})

    run(main())


def test_list_offsets(tmp_path: Path) -> None:
    async def main() -> None:
        async with broker(tmp_path) as b, AdminClient(b.address) as admin:
            await admin.create_topic("t", 1)
            tp = TopicPartition("t", 0)
            empty = await admin.list_offsets({tp: OffsetSpec.EARLIEST})
            assert empty[tp].offset == 0
            async with Producer(b.address) as producer:
                for i in range(5):
                    await producer.send_and_wait("t", b"x", timestamp=1000 + 100 * i)
            earliest = await admin.list_offsets({tp: OffsetSpec.EARLIEST})
            latest = await admin.list_offsets({tp: OffsetSpec.LATEST})
            by_time = await admin.list_offsets({tp: 1250})
            after_all = await admin.list_offsets({tp: 99_999})
            assert (earliest[tp].offset, latest[tp].offset) == (0, 5)
            assert by_time[tp].offset == 3
            assert after_all[tp].offset == -1
            with pytest.raises(UnknownTopicOrPartitionError):
                await admin.list_offsets({TopicPartition("nope", 0): OffsetSpec.LATEST})

    run(main())


def test_describe_cluster(tmp_path: Path) -> None:
    async def main() -> None:
        async with broker(tmp_path) as b, AdminClient(b.address) as admin:
            cluster = await admin.describe_cluster()
            assert cluster.controller_id == 0
            assert [(x.node_id, x.port) for x in cluster.brokers] == [(0, b.port)]
            assert cluster.cluster_id

    run(main())


def test_describe_log_dirs(tmp_path: Path) -> None:
    async def main() -> None:
        async with broker(tmp_path) as b, AdminClient(b.address) as admin:
            await admin.create_topics([NewTopic("a", 2), NewTopic("b", 1)])
            async with Producer(b.address) as producer:
                for _ in range(3):
                    await producer.send_and_wait("a", b"x" * 100, partition=1)
            (disk,) = await admin.describe_log_dirs(["a"])
            assert disk.broker_id == 0
            assert disk.log_dir == str(tmp_path)
            by_partition = {(p.topic, p.partition): p for p in disk.partitions}
            assert set(by_partition) == {("a", 0), ("a", 1)}
            empty, full = by_partition["a", 0], by_partition["a", 1]
            assert (empty.log_start_offset, empty.log_end_offset, empty.size_bytes) == (0, 0, 0)
            assert (full.log_start_offset, full.log_end_offset) == (0, 3)
            assert full.size_bytes > 300
            assert full.segments == 1

            (everything,) = await admin.describe_log_dirs()
            assert sorted({p.topic for p in everything.partitions}) == ["a", "b"]
            with pytest.raises(UnknownTopicOrPartitionError, match="'nope'"):
                await admin.describe_log_dirs(["nope"])

    run(main())
