"""Consumer groups against a real broker: fast heartbeats, an assignment history."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tidelog.client import Connection, Consumer, Producer, TopicPartition
from tidelog.server import Broker

from ..client.helpers import broker

DEADLINE_S = 30.0
GROUP_BROKER: dict[str, Any] = {
    "group_heartbeat_interval_ms": 100,
    "group_min_session_timeout_ms": 100,
}


@asynccontextmanager
async def group_broker(data_dir: Path, **config: Any) -> AsyncIterator[Broker]:
    async with broker(data_dir, **{**GROUP_BROKER, **config}) as b:
        yield b


@asynccontextmanager
async def raw_connection(b: Broker) -> AsyncIterator[Connection]:
    conn = await Connection.open("127.0.0.1", b.port)
    try:
        yield conn
    finally:
        await conn.close()


async def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` until it holds (a deadline, never a synchronisation device)."""
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def produce(address: str, topic: str, partitions: int, per_partition: int) -> None:
    async with Producer(address, linger=0.005) as producer:
        futures = [
            await producer.send(topic, b"%d-%d" % (p, i), partition=p)
            for p in range(partitions)
            for i in range(per_partition)
        ]
        for f in futures:
            await f


@dataclass
class History:
    """Every on_assigned / on_revoked of every consumer, in the order they happened (one event
    loop), checked as it grows: a partition never has two owners."""

    events: list[tuple[str, str, frozenset[TopicPartition]]] = field(default_factory=list)
    owners: dict[TopicPartition, str] = field(default_factory=dict)

    def callbacks(self, name: str) -> dict[str, Callable[[frozenset[TopicPartition]], None]]:
        def assigned(tps: frozenset[TopicPartition]) -> None:
            self.events.append((name, "assigned", tps))
            for tp in tps:
                assert tp not in self.owners, f"{tp} given to {name}, still {self.owners[tp]}'s"
                self.owners[tp] = name

        def revoked(tps: frozenset[TopicPartition]) -> None:
            self.events.append((name, "revoked", tps))
            for tp in tps:
                assert self.owners.pop(tp, None) == name

        return {"on_assigned": assigned, "on_revoked": revoked}

    def revoked_count(self, since: int = 0) -> int:
        return sum(len(tps) for _, kind, tps in self.events[since:] if kind == "revoked")

    def owned_by(self, name: str) -> set[TopicPartition]:
        return {tp for tp, owner in self.owners.items() if owner == name}


class Member:
    """A consumer in a group, iterating in a task of its own."""

    def __init__(self, consumer: Consumer, name: str) -> None:
        self.consumer = consumer
        self.name = name
        self.records: list[tuple[int, int]] = []
        self.task: asyncio.Task[None] | None = None

    async def _loop(self) -> None:
        async for record in self.consumer:
            self.records.append((record.partition, record.offset))

    def start(self) -> Member:
        self.task = asyncio.ensure_future(self._loop())
        return self

    async def close(self) -> None:
        await self.consumer.close()
        if self.task is not None:
            await self.task


async def start_member(
    address: str,
    name: str,
    topics: Iterable[str],
    history: History | None = None,
    **kwargs: Any,
) -> Member:
    kwargs.setdefault("group_id", "g")
    kwargs.setdefault("auto_offset_reset", "earliest")
    kwargs.setdefault("client_id", name)
    consumer = Consumer(address, **kwargs)
    await consumer.start()
    consumer.subscribe(list(topics), **(history.callbacks(name) if history else {}))
    return Member(consumer, name).start()
