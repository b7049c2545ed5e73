"""Consumer-group rebalance time: 10 members, 100 partitions, one broker process.

    python bench/groups.py [--members 10] [--partitions 100] [--rounds 3]
                           [--heartbeat-ms 3000] [--session 10]

Two events, ``--rounds`` times each:

* **join**: with ``members - 1`` consumers stable, one more subscribes; timed from its
  ``subscribe()`` (the broker notices at its JoinGroup, one round trip later).
* **death**: one member is a separate process; it is SIGKILLed. The broker notices when its
  session times out (``--session`` seconds later): the bench polls ListGroups every
  millisecond and takes the first answer without the member as that moment. Timed from there.

"Stable" is what the consumers themselves hold (their ``assignment()``, polled every
millisecond): every partition owned by exactly one member and every member within one of the
others. The goal (issue #6): stable within one heartbeat interval plus 100 ms after the broker
notices.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import uvloop
from harness import broker_process, machine, spread
from rich.console import Console
from rich.table import Table

from tidelog.client import AdminClient, Consumer, TopicPartition

TOPIC = "rebalance"
GROUP = "bench"
POLL_S = 0.001


class Member:
    """An in-process consumer iterating in its own task (so it reconciles at once)."""

    def __init__(self, address: str, name: str, session: float) -> None:
        self.consumer = Consumer(
            address, group_id=GROUP, client_id=name, session_timeout=session, auto_commit=False
        )
        self.task: asyncio.Task[None] | None = None

    async def connect(self) -> Member:
        await self.consumer.start()
        return self

    def subscribe(self) -> Member:
        self.consumer.subscribe([TOPIC])
        self.task = asyncio.ensure_future(self._loop())
        return self

    async def start(self) -> Member:
        return (await self.connect()).subscribe()

    async def _loop(self) -> None:
        async for _ in self.consumer:
            pass

    async def close(self) -> None:
        await self.consumer.close()
        if self.task is not None:
            await self.task


def stable(members: list[Member], partitions: int) -> bool:
    """Every partition owned by exactly one member; counts within one of each other."""
    owned: list[frozenset[TopicPartition]] = [m.consumer.assignment() for m in members]
    counts = [len(a) for a in owned]
    total = sum(counts)
    return (
        total == partitions
        and len(frozenset().union(*owned)) == total
        and max(counts) - min(counts) <= 1
    )


async def wait_for(condition: Callable[[], bool], limit: float) -> float:
    """Seconds until ``condition`` holds, polled every millisecond."""
    start = time.perf_counter()
    while not condition():
        if time.perf_counter() - start > limit:
            raise TimeoutError("no stable assignment in time")
        await asyncio.sleep(POLL_S)
    return time.perf_counter() - start


async def until_broker(admin: AdminClient, wanted: Callable[[int, str], bool]) -> None:
    """Poll ListGroups every millisecond until ``wanted(members, state)``."""
    while True:
        if wanted(*await group_state(admin)):
            return
        await asyncio.sleep(POLL_S)


async def group_state(admin: AdminClient) -> tuple[int, str]:
    for g in await admin.list_groups():
        if g.group_id == GROUP:
            return g.member_count, g.state
    return 0, "dead"


def spawn_member(address: str, session: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, __file__, "--member", address, "--session", str(session)],
        stdout=subprocess.DEVNULL,
    )


async def run_member(address: str, session: float) -> None:
    member = await Member(address, "remote", session).start()
    assert member.task is not None
    await member.task


async def join_round(address: str, args: argparse.Namespace) -> float:
    members = [
        await Member(address, f"m{i}", args.session).start() for i in range(args.members - 1)
    ]
    await wait_for(lambda: stable(members, args.partitions), 60)
    joiner = await Member(address, "joiner", args.session).connect()
    members.append(joiner.subscribe())
    took = await wait_for(lambda: stable(members, args.partitions), 60)
    for m in members:
        await m.close()
    return took


async def death_round(address: str, args: argparse.Namespace) -> tuple[float, float, float]:
    """Seconds from SIGKILL to the broker noticing, from noticing to stable (both as seen by
    millisecond polls), from SIGKILL to stable."""
    members = [
        await Member(address, f"m{i}", args.session).start() for i in range(args.members - 1)
    ]
    remote = spawn_member(address, args.session)
    async with AdminClient(address) as admin:
        await until_broker(admin, lambda n, state: n == args.members and state == "stable")
        killed = time.perf_counter()
        os.kill(remote.pid, signal.SIGKILL)
        remote.wait()
        settled = asyncio.ensure_future(wait_for(lambda: stable(members, args.partitions), 60))
        await until_broker(admin, lambda n, _: n < args.members)
        noticed = time.perf_counter()
        stable_at = killed + await settled
    for m in members:
        await m.close()
    return noticed - killed, max(0.0, stable_at - noticed), stable_at - killed


async def main(args: argparse.Namespace) -> None:
    console = Console()
    with broker_process("--group-heartbeat-interval-ms", str(args.heartbeat_ms)) as broker:
        async with AdminClient(broker.address) as admin:
            await admin.create_topic(TOPIC, args.partitions)
        joins = [await join_round(broker.address, args) for _ in range(args.rounds)]
        deaths = [await death_round(broker.address, args) for _ in range(args.rounds)]
    interval = min(args.heartbeat_ms / 1000, args.session / 3)
    table = Table(title=f"{args.members} members, {args.partitions} partitions ({machine()})")
    table.add_column("event")
    table.add_column("broker notices after, s")
    table.add_column("stable after noticing, ms")
    table.add_column("goal, ms")
    table.add_column("event to stable, s")
    goal = f"< {(interval + 0.1) * 1000:,.0f}"
    table.add_row(
        "a member joins",
        "at its JoinGroup",
        spread([j * 1000 for j in joins]),
        goal,
        spread(joins, ".3f"),
    )
    table.add_row(
        "a member is SIGKILLed",
        spread([d[0] for d in deaths], ".2f"),
        spread([d[1] * 1000 for d in deaths]),
        goal,
        spread([d[2] for d in deaths], ".2f"),
    )
    console.print(table)
    console.print(
        f"heartbeat interval {interval * 1000:.0f} ms, session timeout {args.session:g} s, "
        f"{args.rounds} round(s) each; median (min-max)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--members", type=int, default=10)
    parser.add_argument("--partitions", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--heartbeat-ms", type=int, default=3000)
    parser.add_argument("--session", type=float, default=10.0)
    parser.add_argument("--member", help=argparse.SUPPRESS)  # internal: the member to kill
    parsed = parser.parse_args()
    if parsed.member:
        uvloop.run(run_member(parsed.member, parsed.session))
    else:
        uvloop.run(main(parsed))
