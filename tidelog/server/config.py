"""Broker configuration: defaults, overridden by a TOML file, then ``TIDELOG_*`` environment
variables, then explicit arguments (command-line options).

Every setting is a field of :class:`BrokerConfig` with its default and a one-line doc in
``SETTINGS_DOC``; ``tidelog serve --help`` and docs/OPERATIONS.md are generated from them.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from tidelog.wire.api import DEFAULT_BROKER_PORT
from tidelog.wire.frame import DEFAULT_MAX_FRAME_SIZE

ENV_PREFIX: Final = "TIDELOG_"
DEFAULT_PORT: Final = DEFAULT_BROKER_PORT


class ConfigError(ValueError):
    """A setting has a bad name or value; the message names the setting and the source."""


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    """Everything a broker process needs to know. Frozen: change it by building a new one."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    data_dir: Path = Path("./tidelog-data")
    broker_id: int = 0
    cluster_id: str = "tidelog"
    advertised_host: str | None = None
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
    max_inflight_requests: int = 128
    max_connection_buffer: int = 32 * 1024 * 1024
    idle_timeout_s: float = 600.0
    handshake_timeout_s: float = 30.0
    shutdown_timeout_s: float = 10.0
    auto_create_topics: bool = True
    default_partitions: int = 1
    max_fetch_wait_ms: int = 60_000
    max_fetch_bytes: int = 32 * 1024 * 1024
    topic_defaults: dict[str, str] = field(default_factory=dict)
    retention_check_interval_ms: int = 5 * 60 * 1000
    group_heartbeat_interval_ms: int = 3_000
    group_min_session_timeout_ms: int = 1_000
    group_max_session_timeout_ms: int = 300_000
    group_max_size: int = 1_000
    offset_metadata_max_bytes: int = 4_096
    offsets_snapshot_records: int = 10_000
    log_level: str = "INFO"

    @property
    def advertised(self) -> str:
        return self.advertised_host or self.host

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
        for name in _FIELDS:
            raw = env.get(ENV_PREFIX + name.upper())
            if raw is not None and name != "topic_defaults":
                values[name] = _coerce(name, raw, f"${ENV_PREFIX}{name.upper()}")
        for name, value in (overrides or {}).items():
            if value is None:
                continue
            if name not in _FIELDS:
                raise ConfigError(f"unknown setting {name!r}")
            values[name] = _coerce(name, value, f"option {name}")
        config = cls(**values)
        config.validate()
        return config

    def validate(self) -> None:
        checks = [
            (0 <= self.port <= 65535, "port must be 0..65535"),
            (self.broker_id >= 0, "broker_id must be >= 0"),
            (self.max_frame_size >= 1024, "max_frame_size must be at least 1024 bytes"),
            (self.max_inflight_requests >= 1, "max_inflight_requests must be >= 1"),
            (self.max_connection_buffer >= 1024, "max_connection_buffer must be >= 1024"),
            (self.idle_timeout_s > 0, "idle_timeout_s must be > 0"),
            (self.default_partitions >= 1, "default_partitions must be >= 1"),
            (self.max_fetch_wait_ms >= 0, "max_fetch_wait_ms must be >= 0"),
            (self.max_fetch_bytes >= 1024, "max_fetch_bytes must be >= 1024"),
            (self.retention_check_interval_ms >= 1, "retention_check_interval_ms must be >= 1"),
            (self.group_heartbeat_interval_ms >= 1, "group_heartbeat_interval_ms must be >= 1"),
            (
                1 <= self.group_min_session_timeout_ms <= self.group_max_session_timeout_ms,
                "group_min_session_timeout_ms must be >= 1 and <= group_max_session_timeout_ms",
            ),
            (self.group_max_size >= 1, "group_max_size must be >= 1"),
            (self.offset_metadata_max_bytes >= 0, "offset_metadata_max_bytes must be >= 0"),
            (self.offsets_snapshot_records >= 1, "offsets_snapshot_records must be >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)


SETTINGS_DOC: Final[dict[str, str]] = {
    "host": "interface to listen on",
    "port": "TCP port to listen on (0 picks a free one)",
    "data_dir": "directory holding the topic logs",
    "broker_id": "this broker's id in a cluster",
    "cluster_id": "name of the cluster, reported to clients",
    "advertised_host": "host name clients should connect to (default: host)",
    "max_frame_size": "largest frame (metadata + data bytes) accepted from a client",
    "max_inflight_requests": "requests per connection processed at once; reading pauses above",
    "max_connection_buffer": "request + response bytes held per connection; reading pauses above",
    "idle_timeout_s": "close connections that send nothing for this long",
    "handshake_timeout_s": "close connections that do not complete a handshake in time",
    "shutdown_timeout_s": "how long a graceful shutdown waits for in-flight requests",
    "auto_create_topics": "create unknown topics on produce and metadata requests",
    "default_partitions": "partitions of auto-created topics and of CreateTopics with -1",
    "max_fetch_wait_ms": "upper bound on a fetch's long-poll wait",
    "max_fetch_bytes": "upper bound on the data bytes of one fetch response",
    "topic_defaults": "default topic configs (TOML table), e.g. retention_ms",
    "retention_check_interval_ms": "how often retention deletes expired segments",
    "group_heartbeat_interval_ms": "heartbeat interval given to group members (at most a third "
    "of their session timeout)",
    "group_min_session_timeout_ms": "smallest session timeout a group member may ask for",
    "group_max_session_timeout_ms": "largest session timeout a group member may ask for",
    "group_max_size": "most members a consumer group may have",
    "offset_metadata_max_bytes": "largest metadata string of a committed offset",
    "offsets_snapshot_records": "committed-offset records between two snapshots of the offsets "
    "log (start-up replays at most this many)",
    "log_level": "DEBUG, INFO, WARNING or ERROR",
}

_FIELDS: Final = {f.name: f for f in dataclasses.fields(BrokerConfig)}
assert set(SETTINGS_DOC) == set(_FIELDS), "every setting needs a doc line"

_TRUE: Final = {"1", "true", "yes", "on"}
_FALSE: Final = {"0", "false", "no", "off"}


def _coerce(name: str, value: Any, source: str) -> Any:
    default = _FIELDS[name].default
    kind: type[Any] = type(default) if default is not dataclasses.MISSING else dict
    if name == "advertised_host":
        kind = str
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
        if isinstance(default, Path):
            return Path(value)
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
        if name not in _FIELDS:
            raise ConfigError(f"{path}: unknown setting {name!r}")
        values[name] = _coerce(name, value, str(path))
    return values
