"""Broker configuration: defaults, overridden by a TOML file, then ``TIDELOG_*`` environment
variables, then explicit arguments (command-line options).

Every setting is declared once, as a field of :class:`BrokerConfig` with its default, a doc
line, an example and its allowed range; :data:`SETTINGS` reads them back, and
``tidelog serve``'s options, ``python -m tidelog.server`` and :meth:`BrokerConfig.validate` are
built from it (docs/OPERATIONS.md lists the same settings; a test keeps it complete).
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import UnionType
from typing import Any, Final, TypeVar, get_args, get_origin, get_type_hints

from tidelog.wire.api import DEFAULT_BROKER_PORT
from tidelog.wire.frame import DEFAULT_MAX_FRAME_SIZE

from .budget import DEFAULT_MAX_QUEUED_REQUEST_BYTES
from .log.cleaner import (
    DEFAULT_BACKOFF_MS,
    DEFAULT_DEDUPE_BUFFER_BYTES,
    DEFAULT_IO_BYTES_PER_SECOND,
    CleanerSettings,
)
from .log.manager import MAX_PARTITIONS
from .log.offsetmap import ENTRY_BYTES

ENV_PREFIX: Final = "TIDELOG_"
DEFAULT_PORT: Final = DEFAULT_BROKER_PORT
DEFAULT_ADMIN_PORT: Final = 9644
"""The admin HTTP port (``/metrics``, ``/health``, ``/ready``): Redpanda's admin port."""
ADMIN_PORT_OFF: Final = 0
ADMIN_PORT_ANY: Final = -1
"""``admin_port`` asking for a free port (tests, several brokers on one host)."""
LOG_FORMATS: Final = ("text", "json")
DEFAULT_DATA_DIR: Final = Path("./tidelog-data")
LIMITS: Final = "Limits and timeouts"
GROUPS: Final = "Consumer groups"
CLUSTER: Final = "Cluster (etcd)"
DISK: Final = "disk"
MEMORY: Final = "memory"
LOG_CLEANER: Final = "LOG CLEANER"

T = TypeVar("T")


class ConfigError(ValueError):
    """A setting has a bad name or value; the message names the setting and the source."""


def _setting(
    default: T,
    doc: str,
    example: str,
    *,
    group: str = "",
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    choices: tuple[str, ...] = (),
) -> T:
    """A field of :class:`BrokerConfig`; the keywords after ``default`` become a
    :class:`Setting` (see there)."""
    meta = {"doc": doc, "example": example, "group": group, "low": low, "high": high}
    return field(default=default, metadata=meta | {"low_open": low_open, "choices": choices})


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    """Everything a broker process needs to know. Frozen: change it by building a new one."""

    host: str = _setting("127.0.0.1", "interface to listen on", "0.0.0.0")
    port: int = _setting(
        DEFAULT_PORT, "TCP port to listen on (0 picks a free one)", "7070", low=0, high=65535
    )
    data_dir: Path = _setting(  # noqa: RUF009 (_setting returns a dataclasses.field)
        DEFAULT_DATA_DIR, "directory holding the topic logs (unused with storage memory)", "./data"
    )
    storage: str = _setting(
        DISK,
        "where the logs live: disk, in data_dir, or memory, for tests and demos: memory keeps "
        "nothing across restarts and never uses or creates the data dir",
        MEMORY,
        choices=(DISK, MEMORY),
    )
    max_memory_storage_bytes: int = _setting(
        1 << 30,
        "with storage memory, most bytes all logs may hold; appends beyond fail with a "
        "storage-full error, as on a full disk, until retention frees room (0: no bound)",
        "268435456",
        group=LIMITS,
        low=0,
    )
    admin_port: int | None = _setting(
        None,
        "admin HTTP port on the broker's host, serving /metrics, /health and /ready (0: off; "
        "-1: a free port; default: 9644, or off when port is 0)",
        "9645",
        low=ADMIN_PORT_ANY,
        high=65535,
    )
    broker_id: int = _setting(0, "this broker's id in a cluster", "1", low=0)
    cluster_id: str = _setting("tidelog", "name of the cluster, reported to clients", "prod")
    advertised_host: str | None = _setting(
        None, "host name clients should connect to (default: host)", "broker1.internal"
    )
    advertised_port: int | None = _setting(
        None,
        "port clients should connect to, e.g. that of a proxy or NAT in front of the broker "
        "(default: the port it listens on)",
        "17070",
        low=1,
        high=65535,
    )
    max_frame_size: int = _setting(
        DEFAULT_MAX_FRAME_SIZE,
        "largest frame (metadata + data bytes) accepted from a client",
        "16777216",
        group=LIMITS,
        low=1024,
    )
    max_inflight_requests: int = _setting(
        128,
        "requests per connection processed at once; reading pauses above",
        "512",
        group=LIMITS,
        low=1,
    )
    max_connection_buffer: int = _setting(
        32 * 1024 * 1024,
        "request + response bytes held per connection; reading pauses above",
        "67108864",
        group=LIMITS,
        low=1024,
    )
    max_queued_request_bytes: int = _setting(
        DEFAULT_MAX_QUEUED_REQUEST_BYTES,
        "request bytes held across all connections (frames being received, requests being "
        "served); every connection pauses reading above",
        "134217728",
        group=LIMITS,
        low=1024,
    )
    idle_timeout_s: float = _setting(
        600.0,
        "close connections that send nothing for this long",
        "3600",
        group=LIMITS,
        low=0,
        low_open=True,
    )
    handshake_timeout_s: float = _setting(
        30.0,
        "close connections that do not complete a handshake in time",
        "5",
        group=LIMITS,
        low=0,
        low_open=True,
    )
    shutdown_timeout_s: float = _setting(
        10.0,
        "how long a graceful shutdown waits for in-flight requests",
        "30",
        group=LIMITS,
        low=0,
    )
    max_connections: int = _setting(
        10_000,
        "client connections served at once; one more is closed at accept (the file "
        "descriptors of the logs are kept out of the connections' reach)",
        "1000",
        group=LIMITS,
        low=1,
    )
    auto_create_topics: bool = _setting(
        True, "create unknown topics on produce and metadata requests", "false"
    )
    max_auto_create_per_request: int = _setting(
        10,
        "most unknown topics one produce or metadata request may auto-create (the others "
        "get POLICY_VIOLATION)",
        "100",
        group=LIMITS,
        low=1,
    )
    producer_id_expiration_ms: int = _setting(
        24 * 60 * 60 * 1000,
        "forget an idempotent producer's sequences after it has written nothing for this long",
        "3600000",
        group=LIMITS,
        low=1,
    )
    default_partitions: int = _setting(
        1,
        "partitions of auto-created topics and of CreateTopics with -1",
        "3",
        low=1,
        high=MAX_PARTITIONS,
    )
    max_fetch_wait_ms: int = _setting(
        60_000, "upper bound on a fetch's long-poll wait", "30000", group=LIMITS, low=0
    )
    max_fetch_bytes: int = _setting(
        32 * 1024 * 1024,
        "upper bound on the data bytes of one fetch response",
        "8388608",
        group=LIMITS,
        low=1024,
    )
    topic_defaults: dict[str, str] = field(
        default_factory=dict,
        metadata={
            "doc": "default topic configs (TOML table), e.g. retention_ms",
            "example": "retention_ms=86400000",
        },
    )
    retention_check_interval_ms: int = _setting(
        5 * 60 * 1000,
        "how often retention deletes expired segments",
        "60000",
        group=LIMITS,
        low=1,
    )
    scrub_bytes_per_second: int = _setting(
        8 * 1024 * 1024,
        "bytes per second the background scrubber reads to verify segments (0: no scrubbing)",
        "33554432",
        group=LIMITS,
        low=0,
    )
    log_cleaner_dedupe_buffer_bytes: int = _setting(
        DEFAULT_DEDUPE_BUFFER_BYTES,
        "memory for the log cleaner's key map; a log with more keys to clean is cleaned in passes",
        "268435456",
        group=LOG_CLEANER,
        low=ENTRY_BYTES,
    )
    log_cleaner_io_bytes_per_second: int = _setting(
        DEFAULT_IO_BYTES_PER_SECOND,
        "bytes per second the log cleaner reads plus writes (0: no limit)",
        "16777216",
        group=LOG_CLEANER,
        low=0,
    )
    log_cleaner_backoff_ms: int = _setting(
        DEFAULT_BACKOFF_MS,
        "how long the log cleaner sleeps when no compacted log is dirty enough",
        "5000",
        group=LOG_CLEANER,
        low=1,
    )
    group_heartbeat_interval_ms: int = _setting(
        3_000,
        "heartbeat interval given to group members (at most a third of their session timeout)",
        "1000",
        group=GROUPS,
        low=1,
    )
    group_min_session_timeout_ms: int = _setting(
        1_000,
        "smallest session timeout a group member may ask for",
        "6000",
        group=GROUPS,
        low=1,
    )
    group_max_session_timeout_ms: int = _setting(
        300_000,
        "largest session timeout a group member may ask for",
        "600000",
        group=GROUPS,
        low=1,
    )
    group_max_size: int = _setting(
        1_000, "most members a consumer group may have", "100", group=GROUPS, low=1
    )
    offset_metadata_max_bytes: int = _setting(
        4_096, "largest metadata string of a committed offset", "1024", group=GROUPS, low=0
    )
    offsets_topic_partitions: int = _setting(
        8,
        "partitions of the internal topic __consumer_offsets, where groups keep their state "
        "and committed offsets; applies when the topic is created (never changed after)",
        "16",
        group=GROUPS,
        low=1,
        high=1_000,
    )
    offsets_topic_segment_bytes: int = _setting(
        16 * 1024 * 1024,
        "segment size of __consumer_offsets (smaller than a user topic's, so compaction "
        "reaches its records sooner and a coordinator loads less)",
        "4194304",
        group=GROUPS,
        low=64 * 1024,
        high=2**31 - 1,
    )
    etcd: str = _setting(
        "",
        "etcd endpoints, comma separated: join the cluster named cluster_id (empty: a single "
        "broker, no etcd)",
        "127.0.0.1:2379,127.0.0.1:22379",
        group=CLUSTER,
    )
    rack: str | None = _setting(None, "rack or zone of this broker, told to clients", "eu-1a",
                                group=CLUSTER)  # fmt: skip
    etcd_lease_ttl_s: int = _setting(
        3,
        "seconds without keepalives after which etcd takes this broker for dead (at least 2)",
        "5",
        group=CLUSTER,
        low=2,
        high=60,
    )
    controlled_shutdown_timeout_s: float = _setting(
        10.0,
        "on a graceful stop, seconds to serve on while the controller moves this broker's "
        "leaderships to in-sync followers (controlled shutdown; 0: leave at once)",
        "30",
        group=CLUSTER,
        low=0,
        high=600,
    )
    cluster_join_timeout_s: float = _setting(
        60.0,
        "seconds to keep trying etcd at start (and to wait out this broker id's previous "
        "registration) before giving up",
        "120",
        group=CLUSTER,
        low=0,
        low_open=True,
    )
    replication_factor: int = _setting(
        3,
        "replicas of a new topic in a cluster when CreateTopics asks for the default (cut to "
        "the live broker count; internal topics get it too)",
        "2",
        group=CLUSTER,
        low=1,
        high=16,
    )
    min_insync_replicas: int = _setting(
        2,
        "in-sync replicas an acks=all write needs, unless the topic sets min_insync_replicas "
        "(cut to the topic's replication factor)",
        "1",
        group=CLUSTER,
        low=1,
        high=16,
    )
    replica_lag_time_max_ms: int = _setting(
        10_000,
        "a follower that has not caught up with its leader for this long leaves the ISR",
        "30000",
        group=CLUSTER,
        low=100,
        high=3_600_000,
    )
    auto_leader_rebalance: bool = _setting(
        True,
        "the controller moves a partition's leadership back to its preferred (first) replica "
        "once that replica is alive and in sync again",
        "false",
        group=CLUSTER,
    )
    log_level: str = _setting("INFO", "DEBUG, INFO, WARNING or ERROR", "DEBUG")
    log_format: str = _setting(
        "text", "text (one line per event) or json (one JSON object per line)", "json"
    )

    @property
    def in_memory(self) -> bool:
        """Whether the logs live in memory (``storage = "memory"``), not in ``data_dir``."""
        return self.storage == MEMORY

    @property
    def advertised(self) -> str:
        return self.advertised_host or self.host

    @property
    def etcd_endpoints(self) -> list[str]:
        """The etcd endpoints; empty for a single broker."""
        return [e.strip() for e in self.etcd.split(",") if e.strip()]

    @property
    def cleaner(self) -> CleanerSettings:
        """The ``log_cleaner_*`` settings, for the log manager."""
        return CleanerSettings(
            self.log_cleaner_dedupe_buffer_bytes,
            self.log_cleaner_io_bytes_per_second,
            self.log_cleaner_backoff_ms,
        )

    @property
    def admin(self) -> int:
        """The admin port to serve: ``admin_port``, or when not set 9644 -- except for a
        broker on a free port (``port=0``: tests and embedded brokers), whose admin port is
        off unless asked for, so that several of them never fight over 9644."""
        if self.admin_port is not None:
            return self.admin_port
        return ADMIN_PORT_OFF if self.port == 0 else DEFAULT_ADMIN_PORT

    def fetch_budget(self, requested: int) -> int:
        """The data bytes one fetch may return: what it asks, capped by ``max_fetch_bytes``
        and by half the connection buffer, so a fetch parked on a long poll (which reserves
        its budget) never stops the broker from reading that connection's next request."""
        return min(max(requested, 0), self.max_fetch_bytes, self.max_connection_buffer // 2)

    @classmethod
    def load(
        cls,
        *,
        overrides: Mapping[str, Any] | None = None,
        config_file: str | Path | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> BrokerConfig:
        """Merge file, environment and explicit overrides (in rising priority) over defaults.

        ``None`` values in ``overrides`` mean "not given". Raises :class:`ConfigError`.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        path = config_file or env.get(ENV_PREFIX + "CONFIG")
        if path:
            values.update(_from_toml(Path(path)))
        for setting in SETTINGS.values():
            raw = env.get(setting.env)
            if raw is not None and setting.kind is not dict:
                values[setting.name] = _coerce(setting.name, raw, f"${setting.env}")
        for name, value in (overrides or {}).items():
            if value is None:
                continue
            if name not in SETTINGS:
                raise ConfigError(f"unknown setting {name!r}")
            values[name] = _coerce(name, value, f"option {name}")
        config = cls(**values)
        config.validate()
        return config

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first setting outside its range."""
        for setting in SETTINGS.values():
            if not setting.allows(getattr(self, setting.name)):
                raise ConfigError(f"{setting.name} must be {setting.range}")
        if self.log_format not in LOG_FORMATS:
            raise ConfigError(f"log_format must be one of {', '.join(LOG_FORMATS)}")
        if self.group_min_session_timeout_ms > self.group_max_session_timeout_ms:
            raise ConfigError(
                "group_min_session_timeout_ms must be <= group_max_session_timeout_ms"
            )


@dataclass(frozen=True, slots=True)
class Setting:
    """One setting of :class:`BrokerConfig` as users see it, read back from the field."""

    name: str
    kind: type[Any]  # int, float, str, bool, Path or dict (a TOML table)
    default: Any
    doc: str  # one line, lower case, no full stop: "interface to listen on"
    example: str  # a value as a user would type it: "0.0.0.0"
    group: str = ""  # a heading for settings few people change (LIMITS, GROUPS)
    low: float | None = None  # the allowed range, when there is one
    high: float | None = None
    low_open: bool = False  # ``low`` itself is refused
    choices: tuple[str, ...] = ()  # the values allowed, when they are a list of names

    @property
    def env(self) -> str:
        """The environment variable that sets it: ``TIDELOG_PORT``."""
        return ENV_PREFIX + self.name.upper()

    @property
    def range(self) -> str:
        """The allowed values as text (``0..65535``, ``>= 1``, ``> 0``, ``disk or memory``);
        empty: anything."""
        if self.choices:
            return " or ".join(self.choices)
        if self.low is None:
            return "" if self.high is None else f"<= {self.high}"
        if self.high is not None:
            return f"{self.low}..{self.high}"
        return f"{'>' if self.low_open else '>='} {self.low}"

    def allows(self, value: Any) -> bool:
        """Whether ``value`` is within :attr:`range`."""
        if self.choices:
            return value in self.choices
        """Whether ``value`` is within :attr:`range` (``None``, "not set", always is)."""
        if value is None:
            return True
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or value <= self.high


def _settings() -> dict[str, Setting]:
    hints = get_type_hints(BrokerConfig)
    out: dict[str, Setting] = {}
    for f in dataclasses.fields(BrokerConfig):
        hint = hints[f.name]
        if isinstance(hint, UnionType):  # str | None -> str
            (hint,) = (k for k in get_args(hint) if k is not type(None))
        kind = get_origin(hint) or hint  # dict[str, str] -> dict
        default = f.default_factory() if callable(f.default_factory) else f.default
        out[f.name] = Setting(f.name, kind, default, **f.metadata)
    return out


SETTINGS: Final[Mapping[str, Setting]] = _settings()
SETTINGS_DOC: Final[Mapping[str, str]] = {name: s.doc for name, s in SETTINGS.items()}

_TRUE: Final = {"1", "true", "yes", "on"}
_FALSE: Final = {"0", "false", "no", "off"}


def _coerce(name: str, value: Any, source: str) -> Any:
    kind = SETTINGS[name].kind
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in _TRUE | _FALSE:
                return text in _TRUE
            raise ValueError(f"expected true or false, got {value!r}")
        if kind is dict:
            if not isinstance(value, Mapping):
                raise ValueError("expected a table of key = value")
            return {str(k): str(v) for k, v in value.items()}
        if kind is int and isinstance(value, float):
            raise ValueError(f"expected an integer, got {value!r}")
        return kind(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: bad value for {name}: {exc}") from None


def _from_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    section = data.get("broker", data)
    values: dict[str, Any] = {}
    for name, value in section.items():
        if name not in SETTINGS:
            raise ConfigError(f"{path}: unknown setting {name!r}")
        values[name] = _coerce(name, value, str(path))
    return values
