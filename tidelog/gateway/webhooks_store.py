"""The subscription definitions, durable in the compacted topic
:data:`~.webhooks_model.DEFINITIONS_TOPIC` (key: the name; a null value deletes it).

Every gateway tails the topic from its start and keeps the latest definition per name, so a
restarted gateway (or a second one) runs the same subscriptions. A write returns once this
gateway has read it back, so what a request wrote is what the next request sees.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Final

from tidelog.client import Consumer, OffsetSpec, TopicPartition

from .clients import Clients
from .errors import GatewayError
from .webhooks_model import DEFINITIONS_TOPIC, Definition

logger = logging.getLogger("tidelog.gateway.webhooks")
TP: Final = TopicPartition(DEFINITIONS_TOPIC, 0)
RETRY_S: Final = 1.0
"""The wait before trying again to reach the brokers while loading."""
READ_WAIT_S: Final = 1.0
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
        self._advanced = asyncio.Condition()
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
        producer = await self.clients.producer("all")
        meta = await producer.send_and_wait(DEFINITIONS_TOPIC, value, name.encode(), partition=0)
        async with self._advanced:
            await asyncio.wait_for(
                self._advanced.wait_for(lambda: self._read_to > meta.offset),
                self.clients.settings.request_timeout_s,
            )

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
            self.loaded.set()  # no subscription was ever created
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._created.wait(), DISCOVER_S)
            self._created.clear()
            return
        end = (await admin.list_offsets({TP: OffsetSpec.LATEST}))[TP].offset
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
                batch = await consumer.getmany(timeout=READ_WAIT_S)
                for records in batch.values():
                    for record in records:
                        self._apply(record.key, record.value)
                    self._read_to = records[-1].offset + 1
                async with self._advanced:
                    self._advanced.notify_all()
                if self._read_to >= end:
                    self.loaded.set()

    def _apply(self, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            return
        name = bytes(key).decode(errors="replace")
        if value is None:
            if self.definitions.pop(name, None) is not None:
                self.listener(name, None)
            return
        try:
            definition = Definition.decode(bytes(value))
        except Exception:  # written by a newer gateway, or damaged: skip it, loudly
            logger.exception("subscription %r: unreadable definition skipped", name)
            return
        self.definitions[name] = definition
        self.listener(name, definition)
