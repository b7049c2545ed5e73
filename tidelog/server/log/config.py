"""Topic configuration, topic names and the clock: the values the log is parameterised by."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final, NamedTuple, TypeAlias, TypeVar

from tidelog.schemas.types import ValidationMode
from tidelog.wire.api import MAX_TOPIC_NAME_LENGTH
from tidelog.wire.errors import InvalidConfigError, InvalidTopicNameError
from tidelog.wire.records import now_ms

Clock: TypeAlias = Callable[[], int]
"""Milliseconds since the epoch. Injected everywhere time matters (rolling, retention, flush
intervals), so tests move time instead of sleeping."""

system_clock: Final[Clock] = now_ms

KiB: Final = 1024
MiB: Final = 1024 * KiB
GiB: Final = 1024 * MiB
DAY_MS: Final = 24 * 60 * 60 * 1000
INT32_MAX: Final = 2**31 - 1

_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]+")


def validate_topic_name(name: object) -> str:
    """Return ``name`` if it is a legal topic name, else raise :class:`InvalidTopicNameError`.

    Legal: 1 to ``MAX_TOPIC_NAME_LENGTH`` (233: what the files allow) characters from
    ``[A-Za-z0-9._-]``, and not ``.`` or ``..``.
    """
    if not isinstance(name, str):
        raise InvalidTopicNameError(f"a topic name must be a string, not {type(name).__name__}")
    if not name:
        raise InvalidTopicNameError("a topic name cannot be empty")
    if len(name) > MAX_TOPIC_NAME_LENGTH:
        raise InvalidTopicNameError(
            f"topic name of {len(name)} characters is longer than {MAX_TOPIC_NAME_LENGTH}"
        )
    if name in (".", ".."):
        raise InvalidTopicNameError(f"{name!r} is not a legal topic name")
    if not _TOPIC_NAME.fullmatch(name):
        bad = sorted({c for c in name if not _TOPIC_NAME.fullmatch(c)})
        raise InvalidTopicNameError(
            f"topic name {name!r} has illegal characters {''.join(bad)!r}; "
            "use letters, digits, '.', '_' and '-'"
        )
    return name


class TopicPartition(NamedTuple):
    """A partition's identity; its directory is named ``<topic>-<partition>`` like Kafka's."""

    topic: str
    partition: int

    @property
    def dir_name(self) -> str:
        return f"{self.topic}-{self.partition}"

    @classmethod
    def parse_dir_name(cls, name: str) -> TopicPartition | None:
        """The partition a directory name stands for, or ``None`` if it is not one."""
        topic, sep, number = name.rpartition("-")
        if not sep or not number.isdigit() or number != str(int(number)):
            return None
        try:
            validate_topic_name(topic)
        except InvalidTopicNameError:
            return None
        return cls(topic, int(number))

    def __str__(self) -> str:
        return self.dir_name


class FlushPolicy(StrEnum):
    """When appended data is fsynced. See docs/STORAGE.md for what each guarantees."""

    OS = "os"
    """Leave it to the OS: an acknowledged batch survives a broker crash (it is in the page
    cache), not a power loss. Segments are fsynced in the background once they roll."""
    INTERVAL = "interval"
    """Also fsync every ``flush_ms`` in the background: a power loss loses at most that long."""
    ACK = "ack"
    """fsync before acknowledging (group commit): an acknowledged batch survives a power loss."""


class CleanupPolicy(StrEnum):
    """What happens to old segments (Kafka's ``cleanup.policy``). See docs/STORAGE.md."""

    DELETE = "delete"
    """Whole old segments are deleted by ``retention_ms`` and ``retention_bytes``."""
    COMPACT = "compact"
    """The cleaner keeps at least the latest record of every key; tombstones (null values)
    vanish ``delete_retention_ms`` after they were cleaned."""
    COMPACT_DELETE = "compact,delete"
    """Both: compacted, and whole segments past retention are deleted too."""

    @property
    def compacts(self) -> bool:
        return self is not CleanupPolicy.DELETE

    @property
    def deletes(self) -> bool:
        return self is not CleanupPolicy.COMPACT


@dataclass(frozen=True, slots=True)
class TopicConfig:
    """Per-topic log settings. Defaults follow Kafka's; every value is checked on creation and
    a bad one raises :class:`InvalidConfigError` naming the key."""

    segment_bytes: int = 1 * GiB
    """A segment rolls before an append would take it past this size."""
    segment_ms: int = 7 * DAY_MS
    """A non-empty segment rolls once its first batch is this old."""
    retention_ms: int = 7 * DAY_MS
    """Whole segments whose newest record is older than this are deleted; -1: keep forever."""
    retention_bytes: int = -1
    """Oldest segments are deleted while the rest still holds this much; -1: no size limit."""
    index_interval_bytes: int = 4 * KiB
    """Bytes of batches between two entries of the sparse indexes."""
    flush_policy: FlushPolicy = FlushPolicy.OS
    flush_ms: int = 1000
    """Interval of the ``interval`` flush policy."""
    writeback_bytes: int = 1 * MiB
    """Start the kernel's writeback of the active segment every this many appended bytes
    (Linux ``sync_file_range``, asynchronous; what RocksDB calls ``bytes_per_sync``), so dirty
    pages do not pile up for one long flush later; 0: leave it to the kernel. Durability is
    unchanged: only the flush policy decides when an append is on disk."""
    max_message_bytes: int = 1 * MiB + 1 * KiB
    """Largest batch the topic accepts: 1 MiB of records plus room for the batch overhead."""
    cleanup_policy: CleanupPolicy = CleanupPolicy.DELETE
    delete_retention_ms: int = DAY_MS
    """How long a compacted topic keeps a tombstone after cleaning reached it, so that a
    consumer reading from behind still sees the delete."""
    min_cleanable_dirty_ratio: float = 0.5
    """Compact a log only once this share of it (by bytes) has not been cleaned yet."""
    min_compaction_lag_ms: int = 0
    """A record stays uncompacted at least this long after it was appended."""
    schema_validation: ValidationMode = ValidationMode.NONE
    """Produce checks values against the registry's ``<topic>-value`` subject: ``id`` (the
    Confluent framing and a live schema id) or ``full`` (and the payload fits); docs/REGISTRY.md."""
    min_insync_replicas: int = -1
    """In a cluster: in-sync replicas an acks=all write needs (cut to the replication
    factor); -1: the broker's ``min_insync_replicas``."""
    unclean_leader_election: bool = False
    """In a cluster: when no in-sync replica is alive, elect any live replica (acknowledged
    writes it lacks are lost) rather than leave the partition without a leader."""

    def __post_init__(self) -> None:
        _check_int("segment_bytes", self.segment_bytes, 1, INT32_MAX)
        _check_int("segment_ms", self.segment_ms, 1, 2**63 - 1)
        _check_int("retention_ms", self.retention_ms, -1, 2**63 - 1)
        _check_int("retention_bytes", self.retention_bytes, -1, 2**63 - 1)
        _check_int("index_interval_bytes", self.index_interval_bytes, 0, INT32_MAX)
        _check_int("flush_ms", self.flush_ms, 1, 2**63 - 1)
        _check_int("writeback_bytes", self.writeback_bytes, 0, 2**63 - 1)
        _check_int("max_message_bytes", self.max_message_bytes, 65, INT32_MAX)
        _check_int("delete_retention_ms", self.delete_retention_ms, 0, 2**63 - 1)
        _check_int("min_compaction_lag_ms", self.min_compaction_lag_ms, 0, 2**63 - 1)
        _check_int("min_insync_replicas", self.min_insync_replicas, -1, 1_000)
        if self.min_insync_replicas == 0:
            raise InvalidConfigError("min_insync_replicas must be -1 (the broker's) or 1 or more")
        unclean: object = self.unclean_leader_election
        if not isinstance(unclean, bool):
            raise InvalidConfigError(
                f"unclean_leader_election must be true or false, not {unclean!r}"
            )
        ratio: object = self.min_cleanable_dirty_ratio
        if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0 <= ratio <= 1:
            raise InvalidConfigError(
                f"min_cleanable_dirty_ratio must be a number from 0 to 1, not {ratio!r}"
            )
        object.__setattr__(self, "min_cleanable_dirty_ratio", float(ratio))
        flush = _choice("flush_policy", FlushPolicy, self.flush_policy)
        cleanup = _choice("cleanup_policy", CleanupPolicy, self.cleanup_policy, _policy_text)
        object.__setattr__(self, "flush_policy", flush)
        object.__setattr__(self, "cleanup_policy", cleanup)
        validation = _choice("schema_validation", ValidationMode, self.schema_validation)
        object.__setattr__(self, "schema_validation", validation)

    def with_overrides(self, overrides: Mapping[str, Any]) -> TopicConfig:
        """These settings with some replaced; unknown keys raise :class:`InvalidConfigError`."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise InvalidConfigError(
                f"unknown topic config {', '.join(map(repr, unknown))}; known: {sorted(names)}"
            )
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["flush_policy"] = self.flush_policy.value
        out["cleanup_policy"] = self.cleanup_policy.value
        out["schema_validation"] = self.schema_validation.value
        return out

    def overrides_from(self, defaults: TopicConfig) -> dict[str, Any]:
        """The keys whose value differs from ``defaults``: what a topic persists."""
        mine, theirs = self.to_dict(), defaults.to_dict()
        return {k: v for k, v in mine.items() if theirs[k] != v}


_Choice = TypeVar("_Choice", bound=StrEnum)


def _policy_text(raw: str) -> str:
    """``delete,compact`` and ``compact, delete`` mean the same as ``compact,delete``."""
    return ",".join(sorted({part.strip() for part in raw.split(",")}))


def _choice(
    name: str, enum: type[_Choice], raw: object, normalise: Callable[[str], str] = str.strip
) -> _Choice:
    """``raw`` as a member of ``enum``, or an :class:`InvalidConfigError` listing the choices."""
    if isinstance(raw, enum):
        return raw
    if isinstance(raw, str):
        try:
            return enum(normalise(raw))
        except ValueError:
            pass
    choices = ", ".join(member.value for member in enum)
    raise InvalidConfigError(f"{name} must be one of {choices}, not {raw!r}")


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidConfigError(f"{name} must be an integer, not {value!r}")
    if not low <= value <= high:
        raise InvalidConfigError(f"{name} must be between {low} and {high}, not {value}")
