"""Webhook subscriptions: the gateway's part. :class:`Webhooks` reads the definitions
(:mod:`.webhooks_store`), runs one :class:`~.webhooks_runner.Runner` per active subscription,
and answers the subscription endpoints: create, list, status, pause, resume, replay, delete.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from typing import Final
from urllib.parse import urlsplit

import httpx

from tidelog.client import OffsetSpec, TopicPartition

from . import models_subscriptions as ms
from .clients import Clients
from .errors import GatewayError
from .settings import GatewaySettings
from .webhooks_model import (
    HIDDEN_PREFIX,
    Definition,
    Filter,
    Position,
    Replay,
    dead_letter_topic,
    host_allowed,
)
from .webhooks_runner import Runner
from .webhooks_store import DefinitionStore

HTTP_POOL: Final = 256


class Webhooks:
    """Every subscription this gateway knows of, and the runners of the active ones."""

    def __init__(self, settings: GatewaySettings, clients: Clients) -> None:
        self.settings = settings
        self.clients = clients
        self.store = DefinitionStore(clients, self._changed)
        self.runners: dict[str, Runner] = {}
        self.http = httpx.AsyncClient(
            follow_redirects=False,
            limits=httpx.Limits(max_connections=HTTP_POOL, max_keepalive_connections=HTTP_POOL),
            trust_env=False,
        )
        self._hosts: dict[str, asyncio.Semaphore] = {}
        self._dirty: asyncio.Queue[str] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.store.start()
        self._task = asyncio.get_running_loop().create_task(self._reconcile_loop())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.store.close()
        runners = list(self.runners.values())
        self.runners.clear()
        await asyncio.gather(*(r.close() for r in runners), return_exceptions=True)
        await self.http.aclose()

    # --- running what the definitions say ----------------------------------------------------

    def _changed(self, name: str, _: Definition | None) -> None:
        self._dirty.put_nowait(name)

    async def _reconcile_loop(self) -> None:
        while True:
            name = await self._dirty.get()
            wanted = self.store.definitions.get(name)
            runner = self.runners.get(name)
            if runner is not None and runner.definition != wanted:
                del self.runners[name]
                await runner.close()
                runner = None
            if runner is None and wanted is not None and wanted.state == "active":
                self.runners[name] = runner = self._runner(wanted)
                runner.start()

    def _runner(self, d: Definition) -> Runner:
        host = urlsplit(d.url).hostname or ""
        limit = self._hosts.get(host)
        if limit is None:
            limit = self._hosts[host] = asyncio.Semaphore(self.settings.webhook_host_concurrency)
        return Runner(d, self.settings, self.clients, self.http, limit, self._gone)

    async def _gone(self, name: str, reason: str) -> None:
        d = self.store.definitions.get(name)
        if d is not None and d.state == "active":
            await self.store.put(d.with_changes(state="ended", ended_reason=reason))

    # --- the endpoints -----------------------------------------------------------------------

    def get(self, name: str) -> Definition:
        self.store.check_loaded()
        d = self.store.definitions.get(name)
        if d is None:
            raise GatewayError(404, "unknown_subscription", f"no subscription {name!r}")
        return d

    def all(self) -> list[Definition]:
        self.store.check_loaded()
        return sorted(self.store.definitions.values(), key=lambda d: d.name)

    async def create(self, body: ms.CreateSubscription) -> Definition:
        """Check and store a new subscription. 409 if the name is taken, 400 for a URL not
        allowed, 404 for an unknown topic, 429 above ``max_subscriptions``."""
        self.store.check_loaded()
        if body.name in self.store.definitions:
            raise GatewayError(409, "subscription_exists", f"subscription {body.name!r} exists")
        if len(self.store.definitions) >= self.settings.max_subscriptions:
            raise GatewayError(429, "too_many_subscriptions", "max_subscriptions reached")
        self.check_url(body.url)
        admin = await self.clients.admin()
        if body.topic is not None:
            if body.topic.startswith(HIDDEN_PREFIX):
                raise GatewayError(400, "invalid_topic_name", "the gateway's own topics")
            await admin.describe_topics([body.topic])
        else:
            assert body.topic_pattern is not None
            try:
                re.compile(body.topic_pattern)
            except re.error as exc:
                raise GatewayError(400, "invalid_pattern", f"topic_pattern: {exc}") from None
        now = time.time_ns() // 1_000_000
        start = {
            "earliest": Position("earliest"),
            "latest": Position("time", now),
            "offset": Position("offset", body.offset or 0),
            "time": Position("time", body.time or 0),
        }[body.start]
        d = Definition(
            name=body.name,
            url=body.url,
            topics=() if body.topic is None else (body.topic,),
            pattern=body.topic_pattern,
            start=start,
            format=body.format,
            headers=tuple(body.headers.items()),
            filter=Filter(body.filter.key_prefix, tuple(body.filter.headers.items())),
            secret=body.secret,
            dead_letter_topic=body.dead_letter_topic or dead_letter_topic(body.name),
            created_ms=now,
        )
        await admin.create_topic(d.dead_letter_topic, 1, if_not_exists=True)
        await self.store.ensure_topic()
        await self.store.put(d)
        return d

    def check_url(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise GatewayError(400, "invalid_url", f"not an http(s) URL: {url!r}")
        if not host_allowed(parts.hostname, self.settings.webhook_allowed_hosts):
            raise GatewayError(
                400,
                "host_not_allowed",
                f"the gateway may not call {parts.hostname!r}: only loopback and the hosts in "
                "the gateway setting webhook_allowed_hosts are allowed (tidelog gateway "
                "--webhook-allowed-hosts, tidelog serve --http-webhook-allowed-hosts, env "
                "TIDELOG_WEBHOOK_ALLOWED_HOSTS)",
            )

    async def set_state(self, name: str, state: str) -> Definition:
        d = self.get(name)
        if d.state == "ended":
            raise GatewayError(409, "subscription_ended", f"{name!r} ended: {d.ended_reason}")
        if d.state != state:
            d = d.with_changes(state=state)
            await self.store.put(d)
        return d

    async def replay(self, name: str, body: ms.ReplayRequest) -> Definition:
        d = self.get(name)
        to = Position("offset", body.offset) if body.offset is not None else None
        to = to or Position("time", body.time or 0)
        d = d.with_changes(
            generation=d.generation + 1, replay=Replay(to, body.topic, body.partition)
        )
        await self.store.put(d)
        return d

    async def delete(self, name: str) -> None:
        d = self.get(name)
        await self.store.delete(name)
        admin = await self.clients.admin()
        with contextlib.suppress(Exception):  # other gateways may still be leaving it
            await admin.delete_groups([d.group_id])

    async def positions(self, d: Definition) -> list[ms.PartitionStatus]:
        """The committed position and lag of every partition the group has committed that
        still exists (a topic deleted, or created anew with fewer partitions, leaves commits
        whose end offset cannot be asked)."""
        admin = await self.clients.admin()
        committed = await admin.list_committed(d.group_id)
        wanted = {tp.topic for tp in committed} & set(await admin.list_topics())
        exist = {
            (t.name, p.partition)
            for t in (await admin.describe_topics(sorted(wanted)) if wanted else [])
            for p in t.partitions
        }
        tps = sorted(tp for tp in committed if (tp.topic, tp.partition) in exist)
        ends = await admin.list_offsets(dict.fromkeys(tps, OffsetSpec.LATEST)) if tps else {}
        return [
            ms.PartitionStatus(
                topic=tp.topic,
                partition=tp.partition,
                position=committed[tp].offset,
                end_offset=ends[tp].offset,
                lag=max(0, ends[tp].offset - committed[tp].offset),
            )
            for tp in tps
            if isinstance(tp, TopicPartition)
        ]
