"""Topic and broker config values as strings: what the wire, the CLI and TOML files carry."""

from __future__ import annotations

from typing import Any, Final

from tidelog.wire.errors import InvalidConfigError

from ..log import TopicConfig

_INT64_MAX: Final = 2**63 - 1
TOPIC_KEYS: Final = frozenset(TopicConfig().to_dict())
BROKER_KEYS: Final = (
    "broker_id",
    "host",
    "port",
    "data_dir",
    "max_frame_size",
    "auto_create_topics",
    "default_partitions",
)
"""The broker settings DescribeConfigs shows."""


def normalise_key(key: str) -> str:
    """Accept Kafka-style dotted keys too: ``retention.ms`` means ``retention_ms``."""
    return key.strip().replace(".", "_").replace("-", "_")


def parse_topic_configs(raw: dict[str, str]) -> dict[str, Any]:
    """Topic config strings (from the wire, a CLI or a TOML file) as typed values.

    Raises :class:`InvalidConfigError` naming the bad key.
    """
    defaults = TopicConfig().to_dict()
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = normalise_key(key)
        if name not in defaults:
            raise InvalidConfigError(
                f"unknown topic config {key!r}; known: {', '.join(sorted(defaults))}"
            )
        if isinstance(defaults[name], bool):
            text = str(value).strip().lower()
            if text not in ("true", "false"):
                raise InvalidConfigError(f"{key} must be true or false, not {value!r}")
            out[name] = text == "true"
        elif isinstance(defaults[name], int):
            try:
                number = int(str(value).strip().replace("_", ""))
            except ValueError:
                raise InvalidConfigError(f"{key} must be an integer, not {value!r}") from None
            if not -_INT64_MAX <= number <= _INT64_MAX:
                raise InvalidConfigError(f"{key} is out of range")
            out[name] = number
        elif isinstance(defaults[name], float):
            try:
                out[name] = float(str(value).strip())
            except ValueError:
                raise InvalidConfigError(f"{key} must be a number, not {value!r}") from None
        else:
            out[name] = str(value).strip()
    return out


def config_text(value: object) -> str:
    """A config value as DescribeConfigs shows it (``true``, ``ack``, ``1024``)."""
    if isinstance(value, bool):
        return str(value).lower()
    return str(getattr(value, "value", value))
