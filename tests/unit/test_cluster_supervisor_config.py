"""The pure parts of ``tidelog cluster``: its config (defaults < TOML < flags, clear errors)
and the reader of the cluster's etcd records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tidelog.cluster.config import ClusterConfig, ClusterConfigError, from_json, to_json
from tidelog.cluster.view import NO_LEADER, parse


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cluster.toml"
    path.write_text(text)
    return path


def test_flags_override_the_file_which_overrides_the_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[cluster]\nbrokers = 4\nbase_port = 9000\ndata_dir = "d"\netcd = ["h:1", "h:2"]\n',
    )
    config = ClusterConfig.load(path, {"brokers": 2, "base_port": None})
    assert (config.brokers, config.base_port, config.etcd) == (2, 9000, ("h:1", "h:2"))
    assert config.data_dir == Path("d").resolve()
    assert ClusterConfig.load().brokers == 5
    assert (config.port(2), config.admin_port(2)) == (9001, 10001)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[cluster]\nbrokerz = 3\n", "unknown setting 'brokerz'"),
        ('[cluster]\nbrokers = "3"\n', "brokers in"),
        ("[cluster]\nbrokers = 0\n", "brokers in"),
        ("[cluster]\nbrokers = 2\nreplication_factor = 3\n", "replication_factor in"),
        ("[cluster]\nbase_port = 65000\n", "base_port in"),
        ("[cluster\n", "is not valid TOML"),
    ],
)
def test_bad_settings_are_named(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ClusterConfigError, match=message):
        ClusterConfig.load(write(tmp_path, text))


def test_the_gateway_port_never_collides_with_the_brokers(tmp_path: Path) -> None:
    config = ClusterConfig.load(write(tmp_path, "[cluster]\nbase_port = 9000\n"))
    assert (config.gateway, config.http_port) == (True, 11000)
    assert ClusterConfig.load(None, {"gateway_port": 8080}).http_port == 8080
    with pytest.raises(ClusterConfigError, match=r"gateway_port in .*: 9001 is a broker's"):
        ClusterConfig.load(None, {"base_port": 9000, "gateway_port": 9001})
    with pytest.raises(ClusterConfigError, match=r"gateway_port in .*: 10004 is a broker's"):
        ClusterConfig.load(None, {"base_port": 9000, "gateway_port": 10004})
    with pytest.raises(ClusterConfigError, match=r"gateway_port in .*: 66000 is not a port"):
        ClusterConfig.load(None, {"brokers": 1, "base_port": 64000})
    assert not ClusterConfig.load(
        None, {"brokers": 1, "base_port": 64000, "gateway": False}
    ).gateway


def test_the_config_survives_the_trip_to_the_background_supervisor() -> None:
    config = ClusterConfig(
        brokers=3, etcd=("a:1",), restart_on_failure=True, gateway_port=8081
    ).validate()
    assert from_json(json.loads(json.dumps(to_json(config)))) == config


def test_the_view_reads_the_records_of_one_cluster() -> None:
    def kv(key: str, value: object) -> tuple[bytes, bytes]:
        return f"/tidelog/dev/{key}".encode(), json.dumps(value).encode()

    view = parse(
        "dev",
        [
            kv("brokers/1", {"broker_id": 1, "host": "h", "port": 1, "rack": None}),
            kv("brokers/2", {"broker_id": 2, "host": "h", "port": 2, "admin_port": 9}),
            kv("controller", {"broker_id": 2, "incarnation": 7}),
            kv("topics/t", {"topic_id": "x", "partitions": 3, "replication_factor": 1}),
            kv("partitions/t/0", {"topic_id": "x", "replicas": [1], "leader": 1, "isr": [1]}),
            kv("partitions/t/1", {"topic_id": "x", "replicas": [3], "leader": -1, "isr": [3]}),
            kv("topics/u", {"topic_id": "y", "partitions": 2, "replication_factor": 2}),
            kv("partitions/u/0", {"topic_id": "y", "replicas": [1, 2], "leader": 1, "isr": [1]}),
            kv("partitions/u/1", {"topic_id": "y", "replicas": [2, 1], "leader": 2}),
            (b"/tidelog/dev/topics/bad", b"not json"),
        ],
    )
    assert sorted(view.brokers) == [1, 2]
    assert view.controller == 2
    assert list(view.topics) == ["t", "u"]
    assert view.topics["t"].leaders == {0: 1, 1: NO_LEADER}
    assert view.leaderless == ["t-1", "t-2"]  # partition 2 is not placed yet
    assert view.under_replicated == ["u-0"]  # u-1 has no ISR field: a record of before
    assert (view.led_by(1), view.led_by(2)) == (2, 1)
