"""Consumer groups and SIGKILL: a member process killed mid-work (its partitions go to the
others after the session timeout; at-least-once skips nothing and repeats at most what it had
not committed), and a broker killed and restarted (committed offsets survive)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import IO, Any

from tidelog.client import AdminClient, Consumer, Producer, TopicPartition

from .procs import BrokerProcess

DEADLINE_S = 60.0
TOPIC = "work"
PARTITIONS = 4
PER_PARTITION = 150
WORKER = Path(__file__).with_name("group_worker.py")
FAST_GROUPS = ("--group-heartbeat-interval-ms", "200", "--group-min-session-timeout-ms", "100")


class Worker:
    """``group_worker.py`` as a subprocess; its output lines collected by a thread."""

    def __init__(self, address: str, name: str) -> None:
        root = Path(__file__).parents[2]
        env = {**os.environ, "PYTHONPATH": str(root)}
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER), address, TOPIC, "g", name],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        self.lines: list[list[str]] = []
        assert self.proc.stdout is not None
        threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            if line.endswith("\n"):  # not the half of a line a SIGKILL cut off
                self.lines.append(line.split())

    def of(self, kind: str) -> list[tuple[int, ...]]:
        return [tuple(map(int, words[1:])) for words in list(self.lines) if words[0] == kind]

    def owned(self) -> set[int]:
        owned: set[int] = set()
        for words in list(self.lines):
            if words[0] == "assigned":
                owned |= {int(w) for w in words[1:]}
            elif words[0] == "revoked":
                owned -= {int(w) for w in words[1:]}
        return owned

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(DEADLINE_S)

    def stop(self) -> None:
        self.kill()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


async def wait_until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)  # polling a condition with a deadline


async def produce(address: str, count: int) -> None:
    async with Producer(address, linger=0.005) as producer:
        futures = [
            await producer.send(TOPIC, b"%d" % i, partition=p)
            for p in range(PARTITIONS)
            for i in range(count)
        ]
        for future in futures:
            await future


def test_a_killed_members_partitions_go_to_the_others_and_nothing_is_skipped(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        with BrokerProcess(tmp_path / "data", *FAST_GROUPS) as broker:
            async with AdminClient(broker.address) as admin:
                await admin.create_topic(TOPIC, PARTITIONS)
            await produce(broker.address, PER_PARTITION)
            a, b = Worker(broker.address, "a"), Worker(broker.address, "b")
            try:
                await wait_until(
                    lambda: a.owned() and b.owned() and len(a.owned() | b.owned()) == PARTITIONS,
                    "both members own partitions",
                )
                await wait_until(lambda: len(a.of("committed")) >= 4, "a committed a few times")
                a.kill()
                killed_owned = a.owned()
                everything = {(p, o) for p in range(PARTITIONS) for o in range(PER_PARTITION)}
                await wait_until(
                    lambda: {*a.of("processed"), *b.of("processed")} >= everything,
                    "every record processed",
                )
                assert b.owned() == set(range(PARTITIONS))
                async with AdminClient(broker.address) as admin:
                    await wait_until_lag_zero(admin)
            finally:
                a.stop()
                b.stop()
            # At least once: nothing skipped (checked above). Duplicates: only what a had
            # been handed but not committed when it died, per partition it owned.
            counts = Counter(a.of("processed") + b.of("processed"))
            duplicates = Counter(p for (p, _), n in counts.items() for _ in range(n - 1))
            committed = {p: o for p, o in a.of("committed")}
            fetched_end = {p: last + 1 for p, _, last in a.of("fetched")}
            for p, n in duplicates.items():
                assert p in killed_owned, f"partition {p} repeated records a never owned at the end"
                assert n <= fetched_end[p] - committed.get(p, 0), (p, n)

    asyncio.run(asyncio.wait_for(main(), DEADLINE_S * 2))


async def wait_until_lag_zero(admin: AdminClient) -> None:
    """b commits after each batch: the group's lag reaches zero."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        (group,) = await admin.describe_groups(["g"])
        if len(group.offsets) == PARTITIONS and group.lag == 0:
            assert all(p.committed == PER_PARTITION for p in group.offsets)
            return
        assert time.monotonic() < deadline, group
        await asyncio.sleep(0.05)  # polling a condition with a deadline


def test_committed_offsets_survive_a_broker_sigkill(tmp_path: Path) -> None:
    data = tmp_path / "data"

    async def consume_and_commit(address: str) -> None:
        consumer = Consumer(address, group_id="g", auto_commit=False, auto_offset_reset="earliest")
        async with consumer:
            consumer.subscribe([TOPIC])
            taken = 0
            while taken < PARTITIONS * 10:
                batch = await consumer.getmany(timeout=DEADLINE_S, max_records=3)
                taken += sum(len(records) for records in batch.values())
                await consumer.commit(metadata=f"after {taken}")

    async def first_life(address: str) -> None:
        async with AdminClient(address) as admin:
            await admin.create_topic(TOPIC, PARTITIONS)
        await produce(address, 10)
        await consume_and_commit(address)

    async def second_life(address: str) -> None:
        async with AdminClient(address) as admin:
            committed = await admin.list_committed("g")
            assert {tp.partition: o.offset for tp, o in committed.items()} == dict.fromkeys(
                range(PARTITIONS), 10
            )
            assert {o.metadata for o in committed.values()} == {f"after {PARTITIONS * 10}"}
            (group,) = await admin.describe_groups(["g"])
            assert group.state == "empty" and group.lag == 0
        await produce(address, 2)
        consumer = Consumer(address, group_id="g", auto_offset_reset="earliest")
        async with consumer:
            consumer.subscribe([TOPIC])
            got: list[tuple[int, int]] = []
            while len(got) < PARTITIONS * 2:
                for tp, records in (await consumer.getmany(timeout=DEADLINE_S)).items():
                    got.extend((tp.partition, r.offset) for r in records)
            assert sorted(got) == [(p, o) for p in range(PARTITIONS) for o in (10, 11)]
            for p in range(PARTITIONS):
                assert consumer.lag(TopicPartition(TOPIC, p)) == 0

    with BrokerProcess(data) as broker:
        asyncio.run(asyncio.wait_for(first_life(broker.address), DEADLINE_S))
        broker.kill()
    with BrokerProcess(data) as broker:
        asyncio.run(asyncio.wait_for(second_life(broker.address), DEADLINE_S))
