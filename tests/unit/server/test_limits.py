"""Limits that keep a broker usable: descriptors shared by logs and connections, and settings
that pass validation only when a broker with them can work (issue 13, points 5 and 6)."""

from __future__ import annotations

import errno
import resource
from pathlib import Path

import pytest

from tidelog.server.config import BrokerConfig, ConfigError
from tidelog.server.limits import RESERVED_DESCRIPTORS, connection_capacity, descriptor_limit
from tidelog.server.log import FaultyFileSystem, LogManager
from tidelog.wire.errors import StorageError


def test_running_out_of_descriptors_names_the_limit_and_the_fix(tmp_path: Path) -> None:
    fs = FaultyFileSystem()
    with LogManager(tmp_path, fs=fs) as logs:
        fs.inject("open", errno.EMFILE, times=None)
        with pytest.raises(StorageError) as caught:
            logs.create_topic("t", 1)
        fs.clear()
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert f"may hold {soft} open files" in caught.value.message
    assert "ulimit -n" in caught.value.message


def test_connections_get_what_the_logs_leave() -> None:
    limit = descriptor_limit()
    assert connection_capacity(10**9, 0, 0) == limit - RESERVED_DESCRIPTORS
    assert connection_capacity(5, 0, 0) == 5
    assert connection_capacity(10**9, 100, 256) == limit - 100 - 256 - RESERVED_DESCRIPTORS
    assert connection_capacity(10**9, limit, 256) == 1  # the listener still answers someone


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("handshake_timeout_s", "0", "handshake_timeout_s must be > 0"),
        ("handshake_timeout_s", "-1", "handshake_timeout_s must be > 0"),
        ("idle_timeout_s", "0", "idle_timeout_s must be > 0"),
        ("default_partitions", "100000", "default_partitions must be"),
        ("max_connections", "0", "max_connections must be"),
        ("max_auto_create_per_request", "0", "max_auto_create_per_request must be"),
    ],
)
def test_settings_that_cannot_work_are_refused(setting: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        BrokerConfig.load(overrides={setting: value}, environ={})
