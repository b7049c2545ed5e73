"""Fixtures for the webhook tests: a gateway on the test's broker whose retry waits go
through an injected sleep (``FakeSleep``: records each delay and returns at once), short
backoff and commit intervals; ``gw``, an httpx client on one."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tidelog.gateway.testing import GatewayThread

TIMEOUT_S = 30.0
BACKOFF_S = 0.5


class FakeSleep:
    """The gateway's retry wait: records each delay and yields once instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(0)


@pytest.fixture
def sleep() -> FakeSleep:
    return FakeSleep()


@pytest.fixture
def start_gateway(
    tidelog_broker: Any, tidelog_gateway_factory: Callable[..., GatewayThread], sleep: FakeSleep
) -> Callable[..., GatewayThread]:
    def start(**settings: Any) -> GatewayThread:
        settings.setdefault("sleep", sleep)
        settings.setdefault("webhook_backoff_s", BACKOFF_S)
        settings.setdefault("webhook_commit_interval_s", 0.05)
        return tidelog_gateway_factory(tidelog_broker.address, **settings)

    return start


@pytest.fixture
def gw(start_gateway: Callable[..., GatewayThread]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=start_gateway().url, timeout=TIMEOUT_S) as client:
        yield client
