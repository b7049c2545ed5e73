"""A real broker on an ephemeral loopback port, and small helpers for the client tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from tidelog.client import AdminClient, Consumer, ConsumerRecord, TopicPartition
from tidelog.server import Broker
from tidelog.server.config import BrokerConfig
from tidelog.testing import default_storage

T = TypeVar("T")
TEST_TIMEOUT = 60.0


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a test coroutine on a fresh loop, bounded so a hang fails instead of stalling."""
    return asyncio.run(asyncio.wait_for(coro, TEST_TIMEOUT))


@asynccontextmanager
async def broker(data_dir: Path, **config: Any) -> AsyncIterator[Broker]:
    config.setdefault("host", "127.0.0.1")
    config.setdefault("port", 0)
    config.setdefault("admin_port", 0)  # a restart on a fixed port must not take 9644
    config.setdefault("log_level", "WARNING")
    config.setdefault("storage", default_storage())
    async with Broker(BrokerConfig(data_dir=data_dir, **config)) as b:
        yield b


async def create_topic(address: str, name: str, partitions: int = 1, **configs: str) -> None:
    async with AdminClient(address) as admin:
        await admin.create_topic(name, partitions, configs=configs)


async def consume_all(
    address: str,
    partitions: list[TopicPartition],
    count: int,
    **kwargs: Any,
) -> list[ConsumerRecord[Any, Any]]:
    """The first ``count`` records of ``partitions`` from the beginning, in arrival order."""
    kwargs.setdefault("auto_offset_reset", "earliest")
    out: list[ConsumerRecord[Any, Any]] = []
    async with Consumer(address, **kwargs) as consumer:
        consumer.assign(partitions)
        async for record in consumer:
            out.append(record)
            if len(out) == count:
                break
    return out
