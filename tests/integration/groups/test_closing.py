"""A group consumer commits and leaves however its task is stopped: the block ending by an
exception, the task cancelled (as ``asyncio.run`` does on Ctrl-C), and cancelled again while it
closes. Its session timeout is five minutes: only a LeaveGroup can remove it during a test."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tidelog.client import AdminClient, Consumer

from ..client.helpers import create_topic, run
from .helpers import group_broker, produce

T = "events"
SESSION_TIMEOUT_S = 300.0


class Stop(Exception):
    """Raised inside the consumer's ``async with`` block."""


async def members_and_committed(address: str) -> tuple[int, int]:
    async with AdminClient(address) as admin:
        (described,) = await admin.describe_groups(["g"])
        committed = await admin.list_committed("g")
    return len(described.members), sum(o.offset for o in committed.values())


@pytest.mark.parametrize("how", ["exception", "cancelled", "cancelled-while-closing"])
def test_a_stopped_consumer_commits_what_it_consumed_and_leaves(tmp_path: Path, how: str) -> None:
    async def main() -> None:
        async with group_broker(tmp_path) as b:
            await create_topic(b.address, T, 2)
            await produce(b.address, T, 2, 50)
            consumed = 0
            enough = asyncio.Event()

            async def consume() -> None:
                nonlocal consumed
                async with Consumer(
                    b.address,
                    group_id="g",
                    auto_offset_reset="earliest",
                    session_timeout=SESSION_TIMEOUT_S,
                    auto_commit_interval=3600.0,  # only closing commits
                ) as consumer:
                    consumer.subscribe([T])
                    async for _ in consumer:
                        consumed += 1
                        if consumed == 30:
                            enough.set()
                            if how == "exception":
                                raise Stop

            task = asyncio.create_task(consume())
            await enough.wait()
            if how != "exception":
                task.cancel()
            if how == "cancelled-while-closing":
                while not task.done():  # cancel every step of the closing as well
                    await asyncio.sleep(0)
                    task.cancel()
            outcome = await asyncio.gather(task, return_exceptions=True)
            assert isinstance(outcome[0], Stop if how == "exception" else asyncio.CancelledError)
            assert await members_and_committed(b.address) == (0, consumed)

    run(main())
