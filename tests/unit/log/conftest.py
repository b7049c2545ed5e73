"""Fixtures of the log storage tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tidelog.server.log import FaultyFileSystem, Files, PartitionLog, TopicConfig

from .helpers import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def log_dir(tmp_path: Path) -> str:
    return str(tmp_path / "topic-0")


@pytest.fixture
def small_config() -> TopicConfig:
    """Small segments and a dense index, so a few appends exercise rolls and lookups."""
    return TopicConfig(segment_bytes=2048, index_interval_bytes=200, retention_ms=-1)


@pytest.fixture
def log(log_dir: str, small_config: TopicConfig, clock: FakeClock) -> Iterator[PartitionLog]:
    plog = PartitionLog.open(log_dir, small_config, clock=clock)
    yield plog
    if not plog.closed:
        plog.abandon()


@pytest.fixture
def faulty() -> FaultyFileSystem:
    return FaultyFileSystem()


@pytest.fixture
def faulty_files(faulty: FaultyFileSystem) -> Files:
    return Files(faulty)
