"""Webhook subscriptions without I/O: the definition as stored, the filter, where a partition
starts, which hosts may be called, the retry delays and the signature.

A definition is one JSON record keyed by the subscription's name in the compacted topic
:data:`DEFINITIONS_TOPIC`; every gateway reads that topic and runs what it says, so the topic
(not a gateway's memory) is the truth.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import random
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from email.utils import parsedate_to_datetime
from typing import Any, Final, Literal

import msgspec

from .formats import Format

DEFINITIONS_TOPIC: Final = "_tidelog_subscriptions"
"""The compacted topic of subscription definitions (``__`` names are the broker's own)."""
DEAD_LETTER_PREFIX: Final = "_tidelog_dlq."
GROUP_PREFIX: Final = "_tidelog_subscription."
HIDDEN_PREFIX: Final = "_tidelog_"
"""Topics a pattern never matches: the gateway's own (definitions, dead letters)."""
NAME_RE: Final = re.compile(r"[A-Za-z0-9._-]{1,200}")
SIGNATURE_HEADER: Final = "X-Tidelog-Signature"
RETRY_AFTER_MAX_S: Final = 3600.0
"""The longest ``Retry-After`` honoured (a longer one waits this long)."""
JITTER: Final = 0.5
"""A retry waits between ``(1 - JITTER)`` and 1 times its exponential delay."""
LOOPBACK_NAMES: Final = frozenset({"localhost", "localhost.localdomain"})

StartKind = Literal["earliest", "latest", "offset", "time"]
State = Literal["active", "paused", "ended"]


@dataclass(frozen=True, slots=True)
class Position:
    """Where a partition starts: the log start, an offset (clamped into the log) or the first
    record at or after a time (ms since the epoch; the end if there is none). ``latest`` is
    stored as the time the subscription was created, so topics a pattern picks up later are
    delivered from their first record written after that."""

    kind: Literal["earliest", "offset", "time"]
    value: int = 0


@dataclass(frozen=True, slots=True)
class Replay:
    """A move of the position: partitions whose committed offset carries an older generation
    than the subscription's jump to ``to`` (only the given topic/partition, if any)."""

    to: Position
    topic: str | None = None
    partition: int | None = None

    def covers(self, topic: str, partition: int) -> bool:
        return (self.topic is None or self.topic == topic) and (
            self.partition is None or self.partition == partition
        )


@dataclass(frozen=True, slots=True)
class Filter:
    """Which records are delivered: all conditions hold (an empty filter passes everything).
    ``key_prefix``: the key's bytes start with this text's UTF-8 bytes (a null key never
    matches). ``headers``: for each name, the record has a header of that name whose value is
    exactly this text's UTF-8 bytes."""

    key_prefix: str | None = None
    headers: tuple[tuple[str, str], ...] = ()

    def matches(self, key: bytes | None, headers: Sequence[tuple[str, bytes | None]]) -> bool:
        if self.key_prefix is not None and (
            key is None or not bytes(key).startswith(self.key_prefix.encode())
        ):
            return False
        for name, value in self.headers:
            wanted = value.encode()
            if not any(n == name and v is not None and bytes(v) == wanted for n, v in headers):
                return False
        return True


@dataclass(frozen=True, slots=True)
class Definition:
    """One subscription as stored. ``generation`` goes up with every replay; the committed
    offsets carry it as their metadata, so a replay applies once per partition."""

    name: str
    url: str
    topics: tuple[str, ...] = ()
    pattern: str | None = None
    start: Position = Position("earliest")
    format: Format = Format.JSON
    headers: tuple[tuple[str, str], ...] = ()
    filter: Filter = field(default_factory=Filter)
    secret: str | None = None
    dead_letter_topic: str = ""
    state: State = "active"
    ended_reason: str | None = None
    generation: int = 0
    replay: Replay | None = None
    created_ms: int = 0

    @property
    def group_id(self) -> str:
        return GROUP_PREFIX + self.name

    @property
    def tag(self) -> str:
        """The commit metadata of this generation."""
        return f"g{self.generation}"

    @property
    def consumer_pattern(self) -> str | None:
        """The pattern as the group sees it: never the gateway's own topics."""
        if self.pattern is None:
            return None
        return f"(?!{re.escape(HIDDEN_PREFIX)})(?:{self.pattern})"

    def with_changes(self, **changes: Any) -> Definition:
        return replace(self, **changes)

    def encode(self) -> bytes:
        return msgspec.json.encode(asdict(self))

    @classmethod
    def decode(cls, data: bytes) -> Definition:
        raw = msgspec.json.decode(data)
        start = Position(**raw.pop("start"))
        filt = raw.pop("filter")
        replay = raw.pop("replay")
        return cls(
            **{
                **raw,
                "topics": tuple(raw["topics"]),
                "headers": tuple(tuple(h) for h in raw["headers"]),
                "format": Format(raw["format"]),
            },
            start=start,
            filter=Filter(filt["key_prefix"], tuple(tuple(h) for h in filt["headers"])),
            replay=None
            if replay is None
            else Replay(Position(**replay["to"]), replay["topic"], replay["partition"]),
        )


def dead_letter_topic(name: str) -> str:
    return DEAD_LETTER_PREFIX + name


# --- safety ------------------------------------------------------------------------------------


def host_allowed(host: str, allowed: Iterable[str]) -> bool:
    """Loopback (``localhost``, 127.0.0.0/8, ``::1``) and the hosts listed (exact names or
    addresses, case-insensitive; ``*`` allows any). A name is never resolved: a listed name is
    allowed by name only, so a DNS answer cannot turn a refused URL into an allowed one."""
    host = host.strip("[]").lower().rstrip(".")
    listed = {h.strip("[]").lower().rstrip(".") for h in allowed}
    if "*" in listed or host in listed or host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- retries -----------------------------------------------------------------------------------


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """The wait after failed attempt number ``attempt`` (1-based): ``base * 2**(attempt-1)``
    capped at ``cap``, times a jitter factor in ``[1 - JITTER, 1]``."""
    exp = min(cap, base * 2.0 ** min(attempt - 1, 62))
    return exp * (1.0 - JITTER * rng.random())


def retry_after(value: str | None) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta seconds or an HTTP date), capped at
    :data:`RETRY_AFTER_MAX_S`; ``None`` if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), RETRY_AFTER_MAX_S)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, min(when.timestamp() - time.time(), RETRY_AFTER_MAX_S))


def sign(secret: str, body: bytes) -> str:
    """The signature header's value: ``sha256=`` and the hex HMAC-SHA256 of the body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


Outcome = Literal["retry", "dead_letter", "gone"]


def classify(status: int) -> Outcome | None:
    """What a non-2xx answer means: 410 ends the subscription; 408, 429 and 5xx are retried;
    any other status (3xx, 4xx) is final and the record goes to the dead letters. ``None``
    for 2xx (acknowledged)."""
    if 200 <= status < 300:
        return None
    if status == 410:
        return "gone"
    if status in (408, 429) or status >= 500:
        return "retry"
    return "dead_letter"
