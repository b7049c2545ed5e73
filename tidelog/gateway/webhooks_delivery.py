"""Delivering one record to a subscription's URL: the POST, its retries with exponential
backoff and jitter, and the dead-letter topic when it keeps failing (docs/HTTP.md, "Webhook
subscriptions", states the contract this implements)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final
from urllib.parse import urlsplit

import httpx
import msgspec

from tidelog.client.types import AnyRecord

from .clients import Clients
from .formats import UndecodableError, render
from .settings import GatewaySettings
from .webhooks_model import SIGNATURE_HEADER, Definition, backoff_delay, classify, retry_after, sign

USER_AGENT: Final = "tidelog-webhooks"
DEAD_LETTER_HEADER: Final = "tidelog.dead_letter."
"""Prefix of the headers a dead letter carries: reason, status, attempts, topic, partition,
offset, subscription."""


class Result(Enum):
    ACKED = "acked"
    FILTERED = "filtered"
    DEAD_LETTER = "dead_letter"
    GONE = "gone"
    STOPPED = "stopped"


@dataclass(slots=True)
class DeliveryStats:
    """What this gateway has seen of one subscription (counted since it started serving it)."""

    deliveries: int = 0
    """Records acknowledged by the receiver."""
    failures: int = 0
    """Failed attempts (each retry counts)."""
    dead_letters: int = 0
    filtered: int = 0
    consecutive_failures: int = 0
    last_success_ms: int | None = None
    last_error: str | None = None
    last_error_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one attempt came to: ``outcome`` None is acknowledged."""

    outcome: str | None
    reason: str
    status: int | None = None
    wait_s: float | None = None


class Deliverer:
    """Delivers the records of one subscription, one record per call; calls for different
    partitions may run at once (bounded by the subscription's and the host's semaphores)."""

    def __init__(
        self,
        definition: Definition,
        settings: GatewaySettings,
        clients: Clients,
        http: httpx.AsyncClient,
        host_limit: asyncio.Semaphore,
    ) -> None:
        self.definition = definition
        self.settings = settings
        self.clients = clients
        self.http = http
        self.host_limit = host_limit
        self.limit = asyncio.Semaphore(settings.webhook_concurrency)
        self.stats = DeliveryStats()
        self.rng = random.Random()
        self.host = urlsplit(definition.url).hostname or ""
        d = definition
        self.base_headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "x-tidelog-subscription": d.name,
            **{k: v for k, v in d.headers},
        }

    async def deliver(self, record: AnyRecord, stop: asyncio.Event) -> Result:
        """Deliver ``record`` until it is acknowledged, dead-lettered or the receiver is gone.
        ``STOPPED`` (the record is not done) if ``stop`` is set between two attempts."""
        d = self.definition
        if not d.filter.matches(record.key, record.headers):
            self.stats.filtered += 1
            return Result.FILTERED
        try:
            body = self.body(record)
        except UndecodableError as exc:  # never sent: no failed attempt, but the last error
            self.stats.last_error = f"undecodable: {exc}"
            self.stats.last_error_ms = time.time_ns() // 1_000_000
            return await self._dead_letter(record, "undecodable", str(exc), None, 0, stop)
        attempt = 0
        while True:
            attempt += 1
            result = await self._attempt(record, body, attempt)
            if result.outcome is None:
                self.stats.deliveries += 1
                self.stats.consecutive_failures = 0
                self.stats.last_success_ms = time.time_ns() // 1_000_000
                return Result.ACKED
            self._failed(result.reason)
            if result.outcome == "gone":
                return Result.GONE
            if result.outcome == "dead_letter" or attempt >= self.settings.webhook_max_attempts:
                why = "rejected" if result.outcome == "dead_letter" else "retries_exhausted"
                return await self._dead_letter(
                    record, why, result.reason, result.status, attempt, stop
                )
            s = self.settings
            wait = result.wait_s
            if wait is None:
                wait = backoff_delay(
                    attempt, s.webhook_backoff_s, s.webhook_backoff_max_s, self.rng
                )
            if await self._wait_or_stop(wait, stop):
                return Result.STOPPED

    def body(self, record: AnyRecord) -> bytes:
        """The JSON body: the record as the gateway renders it, plus the subscription."""
        d = self.definition
        row = (record.offset, record.timestamp, record.key, record.value, record.headers)
        (rendered,) = render(record.topic, record.partition, [row], d.format)
        out: dict[str, Any] = {"subscription": d.name, **msgspec.structs.asdict(rendered)}
        return msgspec.json.encode(out)

    async def _attempt(self, record: AnyRecord, body: bytes, attempt: int) -> Attempt:
        d = self.definition
        headers = {
            **self.base_headers,
            "x-tidelog-delivery-attempt": str(attempt),
            "x-tidelog-delivery-id": f"{d.name}/{record.topic}/{record.partition}/{record.offset}",
        }
        if d.secret:
            headers[SIGNATURE_HEADER.lower()] = sign(d.secret, body)
        async with self.limit, self.host_limit:
            try:
                response = await self.http.post(
                    d.url, content=body, headers=headers, timeout=self.settings.webhook_timeout_s
                )
            except httpx.TimeoutException:
                return Attempt("retry", "timeout")
            except httpx.TransportError as exc:
                return Attempt("retry", f"connection error: {type(exc).__name__}: {exc}")
        status = response.status_code
        outcome = classify(status)
        wait = retry_after(response.headers.get("retry-after")) if status in (429, 503) else None
        return Attempt(outcome, f"HTTP {status}", status, wait)

    def _failed(self, reason: str) -> None:
        st = self.stats
        st.failures += 1
        st.consecutive_failures += 1
        st.last_error = reason
        st.last_error_ms = time.time_ns() // 1_000_000

    async def _wait_or_stop(self, delay: float, stop: asyncio.Event) -> bool:
        """Wait ``delay`` (with the injected sleep); True if ``stop`` was set first."""
        if stop.is_set():
            return True
        sleeping = asyncio.ensure_future(self.settings.sleep(delay))
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait((sleeping, stopping), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeping, stopping):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        return stop.is_set()

    async def _dead_letter(
        self,
        record: AnyRecord,
        reason: str,
        detail: str,
        status: int | None,
        attempts: int,
        stop: asyncio.Event,
    ) -> Result:
        """Write ``record`` to the dead-letter topic with headers saying why; retried (with the
        same backoff) until the brokers take it, so no record is acknowledged unwritten."""
        d = self.definition
        p = DEAD_LETTER_HEADER
        headers = [
            *record.headers,
            (p + "reason", reason.encode()),
            (p + "detail", detail.encode()),
            (p + "status", str(status or "").encode()),
            (p + "attempts", str(attempts).encode()),
            (p + "topic", record.topic.encode()),
            (p + "partition", str(record.partition).encode()),
            (p + "offset", str(record.offset).encode()),
            (p + "subscription", d.name.encode()),
        ]
        tries = 0
        while True:
            tries += 1
            try:
                producer = await self.clients.producer("all")
                await producer.send_and_wait(
                    d.dead_letter_topic,
                    record.value,
                    record.key,
                    timestamp=record.timestamp,
                    headers=headers,
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the brokers are down: keep the record, try again
                self._failed(f"dead-letter write failed: {exc}")
                s = self.settings
                wait = backoff_delay(tries, s.webhook_backoff_s, s.webhook_backoff_max_s, self.rng)
                if await self._wait_or_stop(wait, stop):
                    return Result.STOPPED
                continue
            self.stats.dead_letters += 1
            return Result.DEAD_LETTER
