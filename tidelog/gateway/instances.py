"""Stateful consumer instances (REST Proxy v2 style): one :class:`~tidelog.client.Consumer`
each, in a group, created, used and deleted over HTTP; an instance unused for
``consumer_idle_timeout_s`` is closed (it leaves its group), at the latest when it is next
looked up or by the reaper.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from tidelog.client import Consumer

from .errors import GatewayError
from .formats import Format
from .registry import IdleRegistry
from .settings import GatewaySettings


@dataclass(slots=True)
class Instance:
    """One consumer instance: its consumer, its render format and when it was last used."""

    group: str
    name: str
    format: Format
    consumer: Consumer
    last_used: float
    topics: list[str] = field(default_factory=list)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Requests on one instance run one at a time (a poll and a commit never interleave)."""

    def busy(self, now: float) -> bool:
        return self.lock.locked()

    async def close(self) -> None:
        await self.consumer.close()


class Instances:
    """The registry, bounded by ``max_consumer_instances``."""

    def __init__(self, settings: GatewaySettings, clock: Callable[[], float]) -> None:
        self.settings = settings
        self.clock = clock
        self._registry: IdleRegistry[tuple[str, str], Instance] = IdleRegistry(
            settings.max_consumer_instances, settings.consumer_idle_timeout_s, clock
        )

    def __len__(self) -> int:
        return len(self._registry)

    def start(self) -> None:
        self._registry.start()

    async def create(
        self, group: str, name: str | None, fmt: Format, reset: str, auto_commit: bool
    ) -> Instance:
        """A new started instance. 409 if the name is taken in the group, 429 at the limit."""
        await self.expire_idle()
        name = name or f"gw-{secrets.token_hex(8)}"
        key = (group, name)
        if key in self._registry:
            raise GatewayError(409, "instance_exists", f"consumer instance {name!r} exists")
        if self._registry.full():
            raise GatewayError(
                429,
                "too_many_instances",
                f"{len(self._registry)} consumer instances are open "
                "(max_consumer_instances): delete some first",
            )
        s = self.settings
        consumer = Consumer(
            s.bootstrap,
            client_id=f"tidelog-gateway-{name}",
            group_id=group,
            auto_offset_reset=reset,  # type: ignore[arg-type]  # checked by the model
            auto_commit=auto_commit,
            request_timeout=s.request_timeout_s,
            connect_timeout=s.request_timeout_s,
            prefetch_bytes=s.ws_prefetch_bytes,
            max_partition_fetch_bytes=s.ws_prefetch_bytes,
        )
        instance = Instance(group, name, fmt, consumer, self.clock())
        self._registry.add(key, instance)  # reserve the name while it connects
        try:
            await consumer.start()
        except BaseException:
            self._registry.remove(key)
            await consumer.close()
            raise
        return instance

    async def get(self, group: str, name: str) -> Instance:
        """The instance, its idle clock reset. 404 if unknown or expired (the message says
        which)."""
        await self.expire_idle()
        instance = self._registry.get((group, name))
        if instance is None:
            if self._registry.expired((group, name)):
                raise GatewayError(
                    404,
                    "consumer_instance_expired",
                    f"consumer instance {name!r} of group {group!r} expired after "
                    f"{self.settings.consumer_idle_timeout_s:g}s unused: create a new one",
                )
            raise GatewayError(
                404,
                "consumer_instance_not_found",
                f"no consumer instance {name!r} in group {group!r}",
            )
        return instance

    async def delete(self, group: str, name: str) -> None:
        instance = await self.get(group, name)
        self._registry.remove((group, name))
        async with instance.lock:
            await instance.consumer.close()

    async def expire_idle(self) -> None:
        """Close every instance unused for longer than the idle timeout."""
        await self._registry.expire_idle()

    async def close(self) -> None:
        await self._registry.close()
