"""A share group's settings: defaults, names as ``tidelog queue`` and AlterShareGroup spell
them, and the ranges that keep them sane (docs/QUEUES.md, "Settings")."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields, replace
from typing import Final

from tidelog.server.log.config import validate_topic_name
from tidelog.wire.api import INTERNAL_TOPIC_PREFIX
from tidelog.wire.errors import InvalidConfigError

DEFAULT_LOCK_DURATION_MS: Final = 30_000
DEFAULT_MAX_DELIVERY_ATTEMPTS: Final = 5
DEFAULT_BACKOFF_BASE_MS: Final = 1_000
DEFAULT_BACKOFF_MULTIPLIER: Final = 2.0
DEFAULT_BACKOFF_MAX_MS: Final = 30_000
DEFAULT_MAX_PARTITION_LOCKS: Final = 2_000
DEFAULT_MAX_BACKLOG_RECORDS: Final = 0
"""No backlog limit."""
DLQ_SUFFIX: Final = ".dlq"
START_POSITIONS: Final = ("earliest", "latest")

_RANGES: Final[dict[str, tuple[float, float]]] = {
    "lock_duration_ms": (100, 3_600_000),
    "max_delivery_attempts": (1, 1_000),
    "backoff_base_ms": (0, 3_600_000),
    "backoff_multiplier": (1.0, 100.0),
    "backoff_max_ms": (0, 86_400_000),
    "max_partition_locks": (1, 100_000),
    "max_backlog_records": (0, 10**12),
}


@dataclass(frozen=True, slots=True)
class ShareSettings:
    lock_duration_ms: int = DEFAULT_LOCK_DURATION_MS
    """The acquisition lock (visibility timeout)."""
    max_delivery_attempts: int = DEFAULT_MAX_DELIVERY_ATTEMPTS
    """Deliveries without an ack before a record is dead-lettered."""
    backoff_base_ms: int = DEFAULT_BACKOFF_BASE_MS
    backoff_multiplier: float = DEFAULT_BACKOFF_MULTIPLIER
    backoff_max_ms: int = DEFAULT_BACKOFF_MAX_MS
    dead_letter_topic: str = ""
    """Empty: ``<topic>.dlq`` of each record's topic."""
    start: str = "earliest"
    """Where the group starts reading a partition it never read: ``earliest`` (a queue's jobs
    produced before the first worker are not skipped) or ``latest``."""
    max_partition_locks: int = DEFAULT_MAX_PARTITION_LOCKS
    """Cap on a partition's in-flight window (first unsettled record to the next never
    acquired); fetching pauses at it."""
    max_backlog_records: int = DEFAULT_MAX_BACKLOG_RECORDS
    """The queue's bound (0: none): while the records of a topic the group reads that it has
    not settled number this many or more, producers to the topic get QUEUE_FULL."""

    def backoff_ms(self, delivery_count: int) -> int:
        """The delay of a release without an explicit one, after ``delivery_count``
        deliveries: base * multiplier^(count-1), at most max."""
        exponent = max(delivery_count - 1, 0)
        delay = self.backoff_base_ms * self.backoff_multiplier ** min(exponent, 64)
        return int(min(delay, self.backoff_max_ms))

    def dead_letter_for(self, topic: str) -> str:
        return self.dead_letter_topic or topic + DLQ_SUFFIX

    def as_configs(self) -> tuple[tuple[str, str], ...]:
        return tuple((f.name, str(getattr(self, f.name))) for f in fields(self))

    def altered(self, configs: Iterable[tuple[str, str]]) -> ShareSettings:
        """These settings with ``configs`` applied. Raises :class:`InvalidConfigError` for an
        unknown name or a value out of range (nothing applied)."""
        known = {f.name: f for f in fields(self)}
        changes: dict[str, object] = {}
        for name, raw in configs:
            f = known.get(name)
            if f is None:
                raise InvalidConfigError(
                    f"unknown share group setting {name!r}; known: {', '.join(known)}"
                )
            changes[name] = _parse(name, raw, f.type)
        out = replace(self, **changes)  # type: ignore[arg-type]
        if out.backoff_max_ms < out.backoff_base_ms:
            raise InvalidConfigError(
                f"backoff_max_ms ({out.backoff_max_ms}) is below backoff_base_ms "
                f"({out.backoff_base_ms})"
            )
        return out


def _parse(name: str, raw: str, kind: object) -> object:
    if name == "start":
        if raw not in START_POSITIONS:
            raise InvalidConfigError(f"start is one of {', '.join(START_POSITIONS)}, not {raw!r}")
        return raw
    if name == "dead_letter_topic":
        if raw:
            validate_topic_name(raw)
            if raw.startswith(INTERNAL_TOPIC_PREFIX):
                raise InvalidConfigError(f"{raw!r} is internal: not a dead-letter topic")
        return raw
    try:
        value: float = float(raw) if kind in (float, "float") else int(raw)
    except ValueError:
        raise InvalidConfigError(f"{name} must be a number, not {raw!r}") from None
    low, high = _RANGES[name]
    if not low <= value <= high:
        raise InvalidConfigError(f"{name} must be between {low:g} and {high:g}, not {raw}")
    return value
