"""The gateway's settings: where the brokers are, where it listens, and every limit.

Each limit is a named field with a default and a one-line doc; ``tidelog gateway`` and
``tidelog serve`` generate their ``--http-*`` options from :data:`LIMITS`, so a limit is
declared once, here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final, TypeVar

DEFAULT_HTTP_PORT: Final = 8080
MIB: Final = 1024 * 1024
T = TypeVar("T", int, float)


def _limit(default: T, doc: str) -> T:
    """A limit: a field whose doc the CLI shows."""
    value: T = field(default=default, metadata={"doc": doc})
    return value


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    """Everything the gateway needs; frozen, checked by :meth:`validate`."""

    bootstrap: str = "127.0.0.1:7070"
    """The broker(s) to connect to, ``host:port[,host:port...]``."""
    host: str = "127.0.0.1"
    port: int = DEFAULT_HTTP_PORT
    """0 picks a free port (the server reports the one it got)."""
    request_timeout_s: float = 30.0
    """The clients' per-request deadline towards the brokers."""

    max_body_bytes: int = _limit(8 * MIB, "largest HTTP request body accepted (413 above)")
    max_produce_records: int = _limit(10_000, "records per produce request (413 above)")
    max_fetch_bytes: int = _limit(8 * MIB, "largest max_bytes a fetch may ask for")
    max_fetch_records: int = _limit(10_000, "largest max_records a fetch or poll may ask for")
    max_fetch_wait_ms: int = _limit(30_000, "longest long-poll wait of a fetch or poll, in ms")
    max_consumer_instances: int = _limit(256, "consumer instances alive at once (429 above)")
    consumer_idle_timeout_s: float = _limit(300.0, "a consumer instance unused this long is closed")
    max_queue_members: int = _limit(
        64, "queue members (share group and topics) this gateway holds at once (429 above)"
    )
    queue_idle_timeout_s: float = _limit(
        300.0, "a queue member unused this long, with no lease left, is closed"
    )
    max_queue_leases: int = _limit(
        10_000, "messages one queue member holds leased at once (429 above)"
    )
    max_ws_connections: int = _limit(256, "WebSocket connections open at once")
    max_ws_subscriptions: int = _limit(16, "subscriptions per WebSocket connection")
    max_ws_message_bytes: int = _limit(MIB, "largest WebSocket message a client may send")
    ws_send_queue_bytes: int = _limit(
        MIB,
        "bytes of frames queued per WebSocket before the gateway stops fetching for it",
    )
    ws_prefetch_bytes: int = _limit(MIB, "bytes a WebSocket subscription prefetches per partition")
    ws_frame_records: int = _limit(500, "records per WebSocket records frame at most")
    ws_queue_max_prefetch: int = _limit(
        1000, "messages a queue WebSocket may hold unsettled at once (its largest prefetch)"
    )
    max_subscriptions: int = _limit(1000, "webhook subscriptions at once (429 above)")
    webhook_timeout_s: float = _limit(10.0, "deadline of one webhook delivery request, in s")
    webhook_max_attempts: int = _limit(
        10, "attempts of one webhook delivery before the record goes to the dead letters"
    )
    webhook_backoff_s: float = _limit(0.5, "first retry delay of a webhook delivery, in s")
    webhook_backoff_max_s: float = _limit(60.0, "longest retry delay of a webhook delivery")
    webhook_max_in_flight: int = _limit(
        1000, "records a subscription holds fetched and not yet delivered (memory bound)"
    )
    webhook_concurrency: int = _limit(
        8, "webhook requests in flight per subscription (one per partition at most)"
    )
    webhook_host_concurrency: int = _limit(32, "webhook requests in flight per receiving host")
    webhook_commit_interval_s: float = _limit(
        0.5, "how often a subscription commits its acknowledged position, in s"
    )
    webhook_session_timeout_s: float = _limit(
        10.0, "a gateway silent this long loses its subscriptions' partitions to the others"
    )
    webhook_allowed_hosts: tuple[str, ...] = ()
    """Hosts webhooks may call besides loopback (names or IP addresses; ``*`` allows any)."""

    clock: Callable[[], float] = field(default=time.monotonic, compare=False, repr=False)
    """Monotonic seconds for instance expiry (tests inject one)."""
    sleep: Callable[[float], Awaitable[None]] = field(
        default=asyncio.sleep, compare=False, repr=False
    )
    """The webhook retry wait (tests inject one that records the delays)."""

    def validate(self) -> GatewaySettings:
        """Raise ``ValueError`` naming the first setting out of range; return ``self``."""
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0-65535, not {self.port}")
        if self.request_timeout_s <= 0:
            raise ValueError("request_timeout_s must be > 0")
        for name in LIMITS:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, not {getattr(self, name)}")
        return self

    def replace(self, **changes: object) -> GatewaySettings:
        return dataclasses.replace(self, **changes).validate()  # type: ignore[arg-type]


LIMITS: Final[dict[str, str]] = {
    f.name: f.metadata["doc"] for f in dataclasses.fields(GatewaySettings) if "doc" in f.metadata
}
"""Every limit's name and doc, in declaration order (the CLI builds its options from it)."""
