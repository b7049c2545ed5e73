"""The pytest plugin's storage option: ``--tidelog-storage=memory`` gives the fixtures'
brokers in-memory storage and leaves out the tests marked ``storage_bound``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.storage_bound  # the storage option itself is under test

CHECKS = """
import pytest

from tidelog.testing import default_storage


def test_fixture_storage(tidelog_broker, pytestconfig):
    wanted = pytestconfig.getoption("--tidelog-storage")
    assert default_storage() == wanted
    assert tidelog_broker.config.storage == wanted
    assert (tidelog_broker.broker.core.manager.data_dir == "memory:") == (wanted == "memory")


def test_explicit_storage_wins(tidelog_broker_factory):
    assert tidelog_broker_factory(storage="disk").config.storage == "disk"


@pytest.mark.storage_bound
def test_bound():
    assert default_storage() == "disk"
"""


def pytest_run(directory: Path, *args: str) -> str:
    result = subprocess.run(
        # Its own basetemp: never the shared one, whose old directories pytest deletes.
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--basetemp=tmp", *args],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return result.stdout.strip().splitlines()[-1]


def test_the_storage_option_reaches_the_fixtures_and_deselects_bound_tests(
    tmp_path: Path,
) -> None:
    (tmp_path / "test_checks.py").write_text(CHECKS)
    assert pytest_run(tmp_path).startswith("3 passed")
    assert pytest_run(tmp_path, "--tidelog-storage=memory").startswith("2 passed, 1 deselected")
