"""A broker with ``storage = "memory"``: it serves as a disk broker does, never touches its data
dir, keeps nothing across a restart, and reports a full memory as a full disk."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tidelog.client import AdminClient, Consumer, Producer
from tidelog.server import Broker, BrokerConfig
from tidelog.server.log import MemoryFileSystem
from tidelog.wire.errors import StorageError

from .client.helpers import run

pytestmark = pytest.mark.storage_bound  # storage itself is under test


def memory_config(data_dir: Path, **settings: Any) -> BrokerConfig:
    return BrokerConfig(
        host="127.0.0.1",
        port=0,
        data_dir=data_dir,
        storage="memory",
        log_level="WARNING",
        **settings,
    )


def test_a_memory_broker_serves_without_files_and_forgets_on_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # a relative default data dir would land here
    config = memory_config(tmp_path / "data")

    async def main() -> None:
        async with Broker(config) as broker, AdminClient(broker.address) as admin:
            await admin.create_topic("t", 2)
            async with Producer(broker.address) as producer:
                for i in range(100):
                    await producer.send("t", b"%d" % i, partition=i % 2)
            async with Consumer(
                broker.address, group_id="g", auto_offset_reset="earliest"
            ) as consumer:
                consumer.subscribe(["t"])
                seen = [(await consumer.getone()).value for _ in range(100)]
                await consumer.commit()
            assert sorted(seen) == sorted(b"%d" % i for i in range(100))
        async with Broker(config) as broker, AdminClient(broker.address) as admin:
            assert await admin.list_topics() == []

    run(main())
    assert list(tmp_path.iterdir()) == [], "nothing may reach the disk"


def test_a_full_memory_refuses_appends_until_room_is_made(tmp_path: Path) -> None:
    config = memory_config(tmp_path, max_memory_storage_bytes=256 * 1024)

    async def main() -> None:
        async with (
            Broker(config) as broker,
            AdminClient(broker.address) as admin,
            Producer(broker.address, retries=0, linger=0) as producer,
        ):
            await admin.create_topic("big", 1)
            value = bytes(4096)

            async def fill() -> None:
                for _ in range(1000):
                    await producer.send_and_wait("big", value)

            with pytest.raises(StorageError, match=r"\[ENOSPC\].*max_memory_storage_bytes"):
                await fill()
            fs = broker.core.manager.files.fs
            assert isinstance(fs, MemoryFileSystem)
            assert fs.max_bytes - fs.used_bytes < 4096 + 100
            await admin.delete_topics(["big"])  # frees its segments, as retention would
            await admin.create_topic("next", 1)
            await producer.send_and_wait("next", value)

    asyncio.run(asyncio.wait_for(main(), 60))
