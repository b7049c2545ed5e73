"""What ``tidelog cluster up`` starts: defaults, overridden by a TOML file's ``[cluster]`` table,
then by command-line flags (only the flags given).

Ports are laid out from ``base_port``: broker ``i`` (1-based) listens on ``base_port + i - 1``
and serves its admin HTTP port on ``base_port + ADMIN_OFFSET + i - 1``, so two clusters with
base ports far enough apart never collide, and a port already taken is found before anything
starts. The HTTP gateway listens on ``base_port + GATEWAY_OFFSET`` unless ``gateway_port`` names
another port (which must not be a broker's or an admin port).
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

DEFAULT_BROKERS: Final = 5
DEFAULT_BASE_PORT: Final = 7070
DEFAULT_DATA_DIR: Final = Path("./tidelog-cluster")
ADMIN_OFFSET: Final = 1000
"""Broker ``i``'s admin port is ``base_port + ADMIN_OFFSET + i - 1``."""
GATEWAY_OFFSET: Final = 2000
"""The gateway's default HTTP port is ``base_port + GATEWAY_OFFSET``: above every admin port."""
MAX_BROKERS: Final = 100
TABLE: Final = "cluster"
_CLUSTER_NAME: Final = re.compile(r"[A-Za-z0-9._-]{1,200}")


class ClusterConfigError(ValueError):
    """A setting has a bad name or value; the message names the setting and where it came from."""


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """One local cluster: how many brokers, where they listen and keep data, which etcd."""

    brokers: int = DEFAULT_BROKERS
    base_port: int = DEFAULT_BASE_PORT
    data_dir: Path = DEFAULT_DATA_DIR
    cluster_id: str = "tidelog"
    default_partitions: int = 1
    replication_factor: int = 1
    etcd: tuple[str, ...] = ()
    """Endpoints of an existing etcd; empty: start one of our own under ``data_dir/etcd``."""
    restart_on_failure: bool = False
    lease_ttl_s: int = 3
    """The brokers' etcd lease TTL: how long a killed broker looks alive to the others."""
    host: str = "127.0.0.1"
    gateway: bool = True
    """Start one HTTP gateway (``tidelog gateway``) in front of the brokers."""
    gateway_port: int = 0
    """The gateway's HTTP port; 0: ``base_port + GATEWAY_OFFSET``."""

    def validate(self, source: str = "settings") -> ClusterConfig:
        def bad(name: str, why: str) -> ClusterConfigError:
            return ClusterConfigError(f"{name} in {source}: {why}")

        if not 1 <= self.brokers <= MAX_BROKERS:
            raise bad("brokers", f"must be 1..{MAX_BROKERS}, not {self.brokers}")
        last_admin = self.admin_port(self.brokers)
        if self.base_port < 1 or last_admin > 65535:
            raise bad("base_port", f"{self.base_port} leaves no room for the admin ports")
        if not _CLUSTER_NAME.fullmatch(self.cluster_id):
            raise bad("cluster_id", "1 to 200 letters, digits, '.', '_' or '-'")
        if self.default_partitions < 1:
            raise bad("default_partitions", "must be at least 1")
        if not 1 <= self.replication_factor <= self.brokers:
            raise bad("replication_factor", f"must be 1..brokers ({self.brokers})")
        if not 2 <= self.lease_ttl_s <= 60:
            raise bad("lease_ttl_s", "must be 2..60")
        if self.gateway:
            port = self.http_port
            if not 1 <= port <= 65535:
                raise bad("gateway_port", f"{port} is not a port (set gateway_port)")
            taken = {p for i in self.broker_ids for p in (self.port(i), self.admin_port(i))}
            if port in taken:
                raise bad("gateway_port", f"{port} is a broker's or an admin port")
        return self

    def port(self, broker_id: int) -> int:
        return self.base_port + broker_id - 1

    def admin_port(self, broker_id: int) -> int:
        return self.base_port + ADMIN_OFFSET + broker_id - 1

    @property
    def http_port(self) -> int:
        """The gateway's HTTP port."""
        return self.gateway_port or self.base_port + GATEWAY_OFFSET

    def broker_dir(self, broker_id: int) -> Path:
        return self.data_dir / f"broker-{broker_id}"

    @property
    def broker_ids(self) -> range:
        return range(1, self.brokers + 1)

    @classmethod
    def load(
        cls, config_file: Path | None = None, overrides: Mapping[str, Any] | None = None
    ) -> ClusterConfig:
        """Defaults, then the file's ``[cluster]`` table, then ``overrides`` (``None`` values
        are flags not given and are skipped). ``data_dir`` comes out absolute: the brokers'
        command lines name it, which is how a stray one is recognised (:mod:`.run`)."""
        values: dict[str, Any] = {}
        if config_file is not None:
            values.update(read_toml(config_file))
        values.update({k: v for k, v in (overrides or {}).items() if v is not None})
        config = cls(**values)
        config = dataclasses.replace(config, data_dir=Path(config.data_dir).resolve())
        source = str(config_file) if config_file is not None else "settings"
        return config.validate(source)


def read_toml(path: Path) -> dict[str, Any]:
    """The ``[cluster]`` table of ``path``, checked against the field names and types."""
    try:
        with open(path, "rb") as file:
            document = tomllib.load(file)
    except OSError as exc:
        raise ClusterConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ClusterConfigError(f"{path} is not valid TOML: {exc}") from None
    table = document.get(TABLE, {})
    if not isinstance(table, dict):
        raise ClusterConfigError(f"[{TABLE}] in {path} must be a table")
    fields = {f.name: f for f in dataclasses.fields(ClusterConfig)}
    out: dict[str, Any] = {}
    for name, value in table.items():
        if name not in fields:
            known = ", ".join(fields)
            raise ClusterConfigError(f"unknown setting {name!r} in {path} (known: {known})")
        out[name] = _typed(name, value, str(path))
    return out


def _typed(name: str, value: Any, source: str) -> Any:
    default = getattr(ClusterConfig(), name)
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, Path):
        ok = isinstance(value, str)
        value = Path(value) if ok else value
    elif isinstance(default, tuple):
        if isinstance(value, str):
            value = [e for e in value.split(",") if e.strip()]
        ok = isinstance(value, list) and all(isinstance(e, str) for e in value)
        value = tuple(e.strip() for e in value) if ok else value
    else:
        ok = isinstance(value, str)
    if not ok:
        raise ClusterConfigError(f"{name} in {source}: {value!r} is not a {type(default).__name__}")
    return value


def to_json(config: ClusterConfig) -> dict[str, Any]:
    """``config`` as JSON values (how ``up --detach`` hands it to the background supervisor)."""
    out = dataclasses.asdict(config)
    out["data_dir"] = str(config.data_dir)
    out["etcd"] = list(config.etcd)
    return out


def from_json(values: Mapping[str, Any]) -> ClusterConfig:
    fields = {**values, "data_dir": Path(values["data_dir"]), "etcd": tuple(values["etcd"])}
    return ClusterConfig(**fields).validate("the supervisor's arguments")
