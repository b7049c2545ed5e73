"""The subscription definitions, durable in the compacted topic
:data:`~.webhooks_model.DEFINITIONS_TOPIC` (key: the name; a null value deletes it).

Every gateway tails the topic from its start and keeps the latest definition per name, so a
restarted gateway (or a second one) runs the same subscriptions. A write returns once this
gateway has read that very record back (a random token in a header says which: offsets cannot,
as the topic may be deleted and created anew, its log restarting below what was read), so what
a request wrote is what the next request sees. The topic gone, or its log restarted, voids
what it said: the store forgets it and reads the new log from its start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from typing import Final

from tidelog.client import Consumer, OffsetOutOfRangeError, OffsetSpec, TopicPartition
from tidelog.client.types import AnyRecord

from .clients import Clients
from .errors import GatewayError
from .webhooks_model import DEFINITIONS_TOPIC, Definition

logger = logging.getLogger("tidelog.gateway.webhooks")
TP: Final = TopicPartition(DEFINITIONS_TOPIC, 0)
RETRY_S: Final = 1.0
"""The wait before trying again to reach the brokers while loading."""
READ_WAIT_S: Final = 1.0
WRITE_HEADER: Final = "tidelog-write"
"""The header carrying a write's token, by which :meth:`DefinitionStore._write` knows the tail
has read its record."""
DISCOVER_S: Final = 5.0
"""Until the first subscription exists, how often to look for the definitions topic (another
gateway may create it)."""

Listener = Callable[[str, Definition | None], None]


class DefinitionStore:
    """The latest definition of every subscription; ``listener(name, definition_or_None)`` is
    called on every change read from the topic."""

    def __init__(self, clients: Clients, listener: Listener) -> None:
        self.clients = clients
        self.listener = listener
        self.definitions: dict[str, Definition] = {}
        self.loaded = asyncio.Event()
        self._read_to = 0
        self._pending: dict[bytes, asyncio.Future[None]] = {}
        self._task: asyncio.Task[None] | None = None
        self._created = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def check_loaded(self) -> None:
        if not self.loaded.is_set():
            raise GatewayError(
                503, "subscriptions_loading", "the gateway is still reading its subscriptions"
            )

    async def ensure_topic(self) -> None:
        """Create the definitions topic (with the first subscription, so a gateway without
        subscriptions adds no topic to the cluster)."""
        admin = await self.clients.admin()
        await admin.create_topic(
            DEFINITIONS_TOPIC, 1, configs={"cleanup.policy": "compact"}, if_not_exists=True
        )
        self._created.set()

    async def put(self, definition: Definition) -> None:
        await self._write(definition.name, definition.encode())

    async def delete(self, name: str) -> None:
        await self._write(name, None)

    async def _write(self, name: str, value: bytes | None) -> None:
        token = os.urandom(16)
        self._pending[token] = read = asyncio.get_running_loop().create_future()
        try:
            producer = await self.clients.producer("all")
            await producer.send_and_wait(
                DEFINITIONS_TOPIC,
                value,
                name.encode(),
                partition=0,
                headers=((WRITE_HEADER, token),),
            )
            await asyncio.wait_for(read, self.clients.settings.request_timeout_s)
        finally:
            del self._pending[token]

    async def _run(self) -> None:
        while True:
            try:
                await self._tail()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the brokers are down: try again, as /ready does
                logger.warning("reading %s failed (%s); retrying", DEFINITIONS_TOPIC, exc)
                await asyncio.sleep(RETRY_S)

    async def _tail(self) -> None:
        admin = await self.clients.admin()
        if DEFINITIONS_TOPIC not in await admin.list_topics():
            self._forget()  # deleted: what it said is gone with it
            self.loaded.set()  # no subscription was ever created
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._created.wait(), DISCOVER_S)
            self._created.clear()
            return
        end = (await admin.list_offsets({TP: OffsetSpec.LATEST}))[TP].offset
        if end < self._read_to:
            self._forget()  # created anew: its log restarts below what was read
        s = self.clients.settings
        async with Consumer(
            s.bootstrap,
            client_id="tidelog-gateway-subscriptions",
            auto_offset_reset="earliest",
            request_timeout=s.request_timeout_s,
            connect_timeout=s.request_timeout_s,
        ) as consumer:
            consumer.assign([TP])
            consumer.seek(TP, self._read_to)
            if self._read_to >= end:
                self.loaded.set()
            while True:
                try:
                    batch = await consumer.getmany(timeout=READ_WAIT_S)
                except OffsetOutOfRangeError:  # deleted and created anew while read
                    self._forget()
                    return
                for records in batch.values():
                    for record in records:
                        self._apply(record)
                    self._read_to = records[-1].offset + 1
                if self._read_to >= end:
                    self.loaded.set()

    def _forget(self) -> None:
        """The topic is gone or restarted: forget what it said, read the new one from 0."""
        self._read_to = 0
        for name in list(self.definitions):
            self._change(name, None)

    def _apply(self, record: AnyRecord) -> None:
        key, value = record.key, record.value
        for header, token in record.headers:
            if header == WRITE_HEADER and token is not None:
                read = self._pending.get(token)
                if read is not None and not read.done():
                    read.set_result(None)
        if key is None:
            return
        name = bytes(key).decode(errors="replace")
        if value is None:
            self._change(name, None)
            return
        try:
            definition = Definition.decode(bytes(value))
        except Exception:  # written by a newer gateway, or damaged: skip it, loudly
            logger.exception("subscription %r: unreadable definition skipped", name)
            return
        self._change(name, definition)

    def _change(self, name: str, definition: Definition | None) -> None:
        if definition is not None:
            self.definitions[name] = definition
        elif self.definitions.pop(name, None) is None:
            return
        self.listener(name, definition)
