"""Fixtures for the registry tests: a real broker, a real gateway on an ephemeral port, and
the registry's base URL (the gateway's ``/registry``)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tidelog.registry import PREFIX

TIMEOUT_S = 30.0


@pytest.fixture
def registry_url(tidelog_gateway: str) -> str:
    return tidelog_gateway + PREFIX


@pytest.fixture
def sr(registry_url: str) -> Iterator[httpx.Client]:
    """An httpx client on the registry."""
    with httpx.Client(base_url=registry_url, timeout=TIMEOUT_S) as client:
        yield client
