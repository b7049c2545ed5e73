"""A real broker on an ephemeral loopback port, and small helpers for the client tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from tidelog.client import (
    AdminClient,
    Consumer,
    ConsumerRecord,
    Producer,
    RecordMetadata,
    TopicPartition,
)
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


SEND_APIS = ("send", "send_many")
"""The producer's two ways in, for tests parametrised over both."""


async def send_records(
    producer: Producer,
    api: str,
    topic: str,
    values: list[Any],
    keys: list[Any] | None = None,
    *,
    partition: int | None = None,
    chunk: int = 700,
) -> list[RecordMetadata]:
    """Send ``values`` (with ``keys``) through ``api``: one ``send()`` each, or
    ``send_many()`` calls of ``chunk`` records; flush, and return each record's metadata in
    the order given."""
    if api == "send":
        ks = keys if keys is not None else [None] * len(values)
        futures = [
            await producer.send(topic, v, k, partition=partition)
            for v, k in zip(values, ks, strict=True)
        ]
        await producer.flush()
        return [f.result() for f in futures]
    bulks = [
        await producer.send_many(
            topic,
            values[at : at + chunk],
            None if keys is None else keys[at : at + chunk],
            partition=partition,
        )
        for at in range(0, len(values), chunk)
    ]
    await producer.flush()
    return [meta for bulk in bulks for meta in bulk.metadata()]


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
