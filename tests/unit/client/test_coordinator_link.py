"""The group's coordinator link backs off between failed finds (client/membership.py): a
caller that retries at once -- a commit loop while the coordinator is down -- waits a growing
delay per attempt instead of spinning on FindCoordinator and connects."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tidelog.client.backoff import Backoff
from tidelog.client.errors import BrokerUnavailableError
from tidelog.client.membership import CoordinatorLink
from tidelog.wire.errors import NotCoordinatorError


class DownCluster:
    """No broker answers: every lookup fails, counted."""

    connect_timeout = 1.0

    def __init__(self) -> None:
        self.lookups = 0

    async def any_connection(self) -> Any:
        self.lookups += 1
        raise BrokerUnavailableError("cannot connect to broker 127.0.0.1:1")


def link_with_recorded_waits() -> tuple[CoordinatorLink, DownCluster, list[float]]:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    cluster = DownCluster()
    link = CoordinatorLink(
        cluster,  # type: ignore[arg-type]
        group_id="g",
        retry_backoff=Backoff(0.1, 1.0, jitter=0.0),
        sleep=sleep,
    )
    return link, cluster, waits


async def failing_gets(link: CoordinatorLink, times: int) -> None:
    """What every caller does: a failed :meth:`get` (or request) is reported to ``moved``."""
    for _ in range(times):
        with pytest.raises(BrokerUnavailableError) as caught:
            await link.get()
        link.moved(caught.value)


def test_failed_finds_back_off_exponentially_up_to_the_maximum() -> None:
    link, cluster, waits = link_with_recorded_waits()
    asyncio.run(failing_gets(link, 6))
    assert cluster.lookups == 6
    # the first find does not wait; each failure counts once
    assert waits == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0], abs=0.01)


def test_a_success_starts_the_backoff_over_and_a_moved_coordinator_backs_off_too() -> None:
    link, _, waits = link_with_recorded_waits()

    async def attempts() -> None:
        await failing_gets(link, 3)
        link.succeeded()
        link.moved(NotCoordinatorError("moved"))
        await failing_gets(link, 1)

    asyncio.run(attempts())
    assert waits == pytest.approx([0.1, 0.2, 0.1], abs=0.01)


def test_time_the_caller_spent_on_its_own_backoff_counts() -> None:
    """A caller that waited its own backoff (the heartbeat loop does) is not made to wait the
    link's on top of it."""
    link, _, waits = link_with_recorded_waits()

    async def attempts() -> None:
        await failing_gets(link, 1)
        await asyncio.sleep(0.15)  # the caller's own retry backoff, longer than the link's
        await failing_gets(link, 1)

    asyncio.run(attempts())
    assert waits == []
