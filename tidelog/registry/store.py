"""The registry's durable state: the compacted topic :data:`~tidelog.schemas.SCHEMAS_TOPIC`,
tailed from its start into a :class:`~tidelog.schemas.RegistryState` and written with an
idempotent acks=all producer.

Reads are linearisable across gateways: :meth:`SchemaStore.sync` first asks the partition's
log end, then waits until the tail has applied everything below it, so a request sees every
write answered before it began, whichever gateway wrote it. A write returns once the tail has
read that very record back (a random token in a header says which), so the writer can see
whether replay accepted it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Sequence
from typing import Final, TypeVar

from tidelog.client import (
    AdminClient,
    Consumer,
    OffsetOutOfRangeError,
    OffsetSpec,
    Producer,
    TopicPartition,
)
from tidelog.client.types import AnyRecord
from tidelog.schemas.state import SCHEMAS_TOPIC, RegistryState

logger = logging.getLogger("tidelog.registry")
TP: Final = TopicPartition(SCHEMAS_TOPIC, 0)
RETRY_S: Final = 1.0
"""The wait before trying again to reach the brokers."""
READ_WAIT_S: Final = 1.0
DISCOVER_S: Final = 2.0
"""Until the topic exists, how often to look for it (another gateway may create it)."""
WRITE_HEADER: Final = "tidelog-registry-write"

Row = tuple[bytes, bytes | None]
C = TypeVar("C", AdminClient, Producer)


async def _started(client: C) -> C:
    """``client`` started, or closed again if it cannot start."""
    try:
        await client.start()
    except BaseException:
        await client.close()
        raise
    return client


class SchemaStore:
    """One gateway's view of the registry log. :attr:`state` is only read after :meth:`sync`."""

    def __init__(self, bootstrap: str, request_timeout: float) -> None:
        self.bootstrap = bootstrap
        self.timeout = request_timeout
        self.state = RegistryState()
        self._read_to = 0
        self._progress = asyncio.Condition()
        self._pending: dict[bytes, asyncio.Future[None]] = {}
        self._task: asyncio.Task[None] | None = None
        self._created = asyncio.Event()
        self._admin: AdminClient | None = None
        self._producer: Producer | None = None
        self._lock = asyncio.Lock()

    def start(self) -> None:
        """Start tailing the log (else the first request does: an unused registry costs no
        connection)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for client in (self._producer, self._admin):
            if client is not None:
                await client.close()

    async def admin(self) -> AdminClient:
        async with self._lock:
            if self._admin is None:
                self._admin = await _started(
                    AdminClient(
                        self.bootstrap,
                        client_id="tidelog-registry",
                        request_timeout=self.timeout,
                        connect_timeout=self.timeout,
                    )
                )
            return self._admin

    async def _the_producer(self) -> Producer:
        async with self._lock:
            if self._producer is None:
                self._producer = await _started(
                    Producer(
                        self.bootstrap,
                        client_id="tidelog-registry",
                        acks="all",
                        enable_idempotence=True,
                        linger=0.0,
                        request_timeout=self.timeout,
                        connect_timeout=self.timeout,
                        delivery_timeout=max(self.timeout * 2, 1.0),
                        max_block=self.timeout,
                    )
                )
            return self._producer

    async def sync(self) -> RegistryState:
        """The state, once everything written before this call has been applied."""
        self.start()
        admin = await self.admin()
        async with asyncio.timeout(self.timeout):
            if SCHEMAS_TOPIC not in await admin.list_topics():
                return self.state
            end = (await admin.list_offsets({TP: OffsetSpec.LATEST}))[TP].offset
            async with self._progress:
                await self._progress.wait_for(lambda: self._read_to >= end)
        return self.state

    async def write(self, rows: Sequence[Row]) -> RegistryState:
        """Append ``rows`` durably, in order; return once the last one has been applied."""
        self.start()
        await self._ensure_topic()
        producer = await self._the_producer()
        token = os.urandom(16)
        self._pending[token] = read = asyncio.get_running_loop().create_future()
        try:
            for index, (key, value) in enumerate(rows):
                headers = ((WRITE_HEADER, token),) if index == len(rows) - 1 else ()
                await producer.send_and_wait(
                    SCHEMAS_TOPIC, value, key, partition=0, headers=headers
                )
            await asyncio.wait_for(read, self.timeout)
        finally:
            del self._pending[token]
        return self.state

    async def _ensure_topic(self) -> None:
        if self._created.is_set():
            return
        admin = await self.admin()
        # Every broker holds a replica, so each validates produce from its own copy.
        brokers = len((await admin.describe_cluster()).brokers)
        await admin.create_topic(
            SCHEMAS_TOPIC,
            1,
            max(brokers, 1),
            configs={"cleanup.policy": "compact", "retention.ms": "-1"},
            if_not_exists=True,
        )
        self._created.set()

    async def _run(self) -> None:
        while True:
            try:
                await self._tail()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the brokers are down: try again
                logger.warning("reading %s failed (%s); retrying", SCHEMAS_TOPIC, exc)
                await asyncio.sleep(RETRY_S)

    async def _tail(self) -> None:
        admin = await self.admin()
        if SCHEMAS_TOPIC not in await admin.list_topics():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._created.wait(), DISCOVER_S)
            return
        self._created.set()
        async with Consumer(
            self.bootstrap,
            client_id="tidelog-registry",
            auto_offset_reset="earliest",
            request_timeout=self.timeout,
            connect_timeout=self.timeout,
        ) as consumer:
            consumer.assign([TP])
            consumer.seek(TP, self._read_to)
            while True:
                try:
                    batch = await consumer.getmany(timeout=READ_WAIT_S)
                except OffsetOutOfRangeError:  # deleted and created anew while read
                    await self._reset()
                    return
                for records in batch.values():
                    for record in records:
                        self._apply(record)
                    async with self._progress:
                        self._read_to = records[-1].offset + 1
                        self._progress.notify_all()

    async def _reset(self) -> None:
        async with self._progress:
            self.state = RegistryState()
            self._read_to = 0

    def _apply(self, record: AnyRecord) -> None:
        key, value = record.key, record.value
        self.state.apply(
            None if key is None else bytes(key), None if value is None else bytes(value)
        )
        for header, token in record.headers:
            if header == WRITE_HEADER and token is not None:
                read = self._pending.get(bytes(token))
                if read is not None and not read.done():
                    read.set_result(None)
