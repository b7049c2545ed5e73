from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from tidelog.server.config import SETTINGS, BrokerConfig, ConfigError, Setting
from tidelog.server.core import parse_topic_configs
from tidelog.wire.errors import InvalidConfigError


def test_defaults_are_documented_and_valid() -> None:
    config = BrokerConfig.load(environ={})
    assert config == BrokerConfig()
    assert config.port == 7070 and config.host == "127.0.0.1"


def test_priority_is_file_then_environment_then_arguments(tmp_path: Path) -> None:
    toml = tmp_path / "broker.toml"
    toml.write_text(
        '[broker]\nport = 9001\nhost = "127.0.0.2"\nauto_create_topics = false\n'
        "[broker.topic_defaults]\nretention_ms = 1000\n"
    )
    env = {"TIDELOG_PORT": "9002", "TIDELOG_DEFAULT_PARTITIONS": "3"}
    config = BrokerConfig.load(config_file=toml, environ=env, overrides={"port": 9003})
    assert config.port == 9003
    assert config.host == "127.0.0.2"
    assert config.default_partitions == 3
    assert config.auto_create_topics is False
    assert config.topic_defaults == {"retention_ms": "1000"}


def test_environment_names_a_config_file(tmp_path: Path) -> None:
    toml = tmp_path / "b.toml"
    toml.write_text("port = 9100\n")
    assert BrokerConfig.load(environ={"TIDELOG_CONFIG": str(toml)}).port == 9100


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TIDELOG_PORT": "eighty"}, "TIDELOG_PORT"),
        ({"TIDELOG_PORT": "70000"}, "port must be"),
        ({"TIDELOG_AUTO_CREATE_TOPICS": "maybe"}, "true or false"),
        ({"TIDELOG_MAX_FRAME_SIZE": "10"}, "max_frame_size"),
    ],
)
def test_bad_values_name_the_setting(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        BrokerConfig.load(environ=env)


def test_unknown_settings_are_refused(tmp_path: Path) -> None:
    toml = tmp_path / "b.toml"
    toml.write_text("prot = 1\n")
    with pytest.raises(ConfigError, match="unknown setting 'prot'"):
        BrokerConfig.load(config_file=toml, environ={})
    with pytest.raises(ConfigError, match="unknown setting"):
        BrokerConfig.load(overrides={"nope": 1}, environ={})
    with pytest.raises(ConfigError, match="does not exist"):
        BrokerConfig.load(config_file=tmp_path / "missing.toml", environ={})


@pytest.mark.parametrize("setting", [s for s in SETTINGS.values() if s.range], ids=lambda s: s.name)
def test_each_declared_range_is_enforced_at_its_bounds(setting: Setting) -> None:
    base = BrokerConfig(group_min_session_timeout_ms=1)  # any max session timeout is >= it
    cases: list[tuple[Any, bool]] = []
    if setting.low is not None:
        step = 1 if setting.low_open else 0
        cases += [(setting.low - 1 + step, False), (setting.low + step, True)]
    if setting.high is not None:
        cases += [(setting.high, True), (setting.high + 1, False)]
    for value, ok in cases:
        config = dataclasses.replace(base, **{setting.name: value})
        if ok:
            config.validate()
        else:
            with pytest.raises(ConfigError, match=f"^{setting.name} must be {setting.range}$"):
                config.validate()


def test_storage_is_disk_or_memory() -> None:
    assert BrokerConfig().storage == "disk" and not BrokerConfig().in_memory
    assert BrokerConfig.load(environ={"TIDELOG_STORAGE": "memory"}).in_memory
    with pytest.raises(ConfigError, match=r"^storage must be disk or memory$"):
        BrokerConfig.load(overrides={"storage": "tape"}, environ={})


def test_the_session_timeout_bounds_are_in_order() -> None:
    config = BrokerConfig(group_min_session_timeout_ms=5_000, group_max_session_timeout_ms=4_000)
    with pytest.raises(ConfigError, match="group_min_session_timeout_ms must be <="):
        config.validate()


def test_topic_configs_accept_kafka_style_keys() -> None:
    assert parse_topic_configs({"retention.ms": "1_000", "flush_policy": "ack"}) == {
        "retention_ms": 1000,
        "flush_policy": "ack",
    }
    with pytest.raises(InvalidConfigError, match="unknown topic config"):
        parse_topic_configs({"retention": "1"})
    with pytest.raises(InvalidConfigError, match="must be an integer"):
        parse_topic_configs({"segment_bytes": "big"})


def test_operations_doc_lists_every_setting() -> None:
    doc = (Path(__file__).parents[3] / "docs" / "OPERATIONS.md").read_text()
    for field in dataclasses.fields(BrokerConfig):
        assert f"`{field.name}`" in doc, f"docs/OPERATIONS.md misses {field.name}"
