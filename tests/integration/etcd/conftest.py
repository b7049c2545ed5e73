"""A real etcd server for the tests that need one (Debian's ``etcd-server``, installed by
``.ci/run``). Without the binary these tests are skipped locally and fail under CI."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tidelog.etcd import EtcdProcess
from tidelog.etcd.process import INSTALL_HINT


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """These tests start no broker: the in-memory run of the suite has nothing to add."""
    for item in items:
        if "integration/etcd/" in str(item.path):
            item.add_marker(pytest.mark.storage_bound)


@pytest.fixture(scope="session")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdProcess]:
    if shutil.which("etcd") is None:
        if os.environ.get("CI"):
            pytest.fail(INSTALL_HINT)
        pytest.skip(INSTALL_HINT)
    with EtcdProcess(Path(tmp_path_factory.mktemp("etcd"))) as etcd:
        yield etcd


_counter = [0]


@pytest.fixture
def prefix() -> bytes:
    """A key prefix of this test's own, so tests sharing the server never see each other."""
    _counter[0] += 1
    return f"/test-{os.getpid()}-{_counter[0]}/".encode()
