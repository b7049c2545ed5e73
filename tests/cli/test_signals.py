"""SIGTERM stops the long-running commands as cleanly as Ctrl-C: the installed executable on
pipes (as a service manager or a script runs it), against a real broker.

Exit codes: ``consume`` and ``tail`` end this way normally and exit 0 on either signal;
``produce`` from its input exits 128 + the signal's number (130, 143) after sending what it had
read; its prompt ends with 0.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections import Counter
from typing import Any

import pytest

from tidelog.client import AdminClient, OffsetSpec, Producer, TopicPartition
from tidelog.testing import BrokerThread

from .helpers import DEADLINE_S, TIDELOG, PipedProcess, PtyProcess, cli, run, subprocess_env

pytestmark = pytest.mark.skipif(not TIDELOG.exists(), reason="tidelog is not installed")

each_signal = pytest.mark.parametrize(
    "signum", [signal.SIGINT, signal.SIGTERM], ids=lambda s: str(s.name)
)


def create(address: str, name: str, partitions: int = 1) -> None:
    async def main() -> None:
        async with AdminClient(address) as admin:
            await admin.create_topic(name, partitions)

    run(main())


def produce(address: str, topic: str, partitions: int, per_partition: int, start: int = 0) -> None:
    async def main() -> None:
        async with Producer(address) as producer:
            futures = [
                await producer.send(topic, b"v%d" % i, partition=p)
                for i in range(start, start + per_partition)
                for p in range(partitions)
            ]
            for future in futures:
                await future

    run(main())


def group_state(address: str, group: str) -> tuple[int, dict[int, int]]:
    """The number of members the broker has for ``group`` now, and its committed offsets."""

    async def main() -> tuple[int, dict[int, int]]:
        async with AdminClient(address) as admin:
            (described,) = await admin.describe_groups([group])
            committed = await admin.list_committed(group)
        return len(described.members), {tp.partition: o.offset for tp, o in committed.items()}

    return run(main())


def end_offset(address: str, topic: str, wait_for: int | None = None) -> int:
    """The end offset of the topic's partition 0; with ``wait_for``, polled (with a deadline)
    until it is that."""

    async def main() -> int:
        tp = TopicPartition(topic, 0)
        deadline = time.monotonic() + DEADLINE_S
        async with AdminClient(address) as admin:
            while True:
                found = (await admin.list_offsets({tp: OffsetSpec.LATEST}))[tp].offset
                if wait_for is None or found == wait_for or time.monotonic() > deadline:
                    return found
                await asyncio.sleep(0.01)

    return run(main())


def spawn(address: str, *args: str) -> PipedProcess:
    return PipedProcess([str(TIDELOG), *args], subprocess_env(TIDELOG_BROKER=address))


def positions(lines: list[str]) -> list[tuple[int, int]]:
    rows: list[dict[str, Any]] = [json.loads(line) for line in lines if line]
    return [(r["partition"], r["offset"]) for r in rows]


@each_signal
def test_consume_group_commits_and_leaves_on_a_stop_signal(
    tidelog_broker: BrokerThread, signum: signal.Signals
) -> None:
    address = tidelog_broker.address
    create(address, "events", 2)
    produce(address, "events", 2, 1500)
    args = ["consume", "events", "--group", "g", "--from-beginning", "--follow", "--format", "json"]
    proc = spawn(address, *args)
    try:
        proc.wait_for_lines(200)
        proc.wait_until_blocked_on_stdout()  # the signal interrupts a write to a full pipe
        proc.signal(signum)
        code = proc.wait()
    finally:
        proc.kill()
    assert code == 0, proc.err.decode()
    assert b"Traceback" not in proc.err
    printed = positions(proc.lines)  # whole lines: none was cut by the signal
    assert len(printed) >= 200
    # Its session timeout is the CLI's default (45 s), far longer than this test: only a
    # LeaveGroup can have removed the member by now.
    members, committed = group_state(address, "g")
    assert members == 0
    per_partition = Counter(p for p, _ in printed)
    assert committed == {p: per_partition[p] for p in per_partition}  # exactly what it printed
    assert sum(committed.values()) == len(printed)

    # Started again, it continues after what it printed: nothing twice, nothing skipped.
    produce(address, "events", 2, 10, start=1500)
    again = cli(
        address, "consume", "events", "--group", "g", "--from-beginning", "--format", "json"
    )
    assert again.exit_code == 0, again.output
    rest = positions(again.stdout.splitlines())
    assert sorted(printed + rest) == [(p, o) for p in (0, 1) for o in range(1510)]


@each_signal
def test_tail_stops_on_a_stop_signal(tidelog_broker: BrokerThread, signum: signal.Signals) -> None:
    address = tidelog_broker.address
    create(address, "events")
    produce(address, "events", 1, 5)
    proc = spawn(address, "tail", "events", "--last", "5")
    try:
        proc.wait_for_lines(5)
        proc.signal(signum)
        code = proc.wait()
    finally:
        proc.kill()
    assert code == 0, proc.err.decode()
    assert "tail stopped after 5 records" in proc.err.decode()
    assert b"Traceback" not in proc.err


@each_signal
def test_produce_sends_what_it_read_and_exits_128_plus_the_signal(
    tidelog_broker: BrokerThread, signum: signal.Signals
) -> None:
    address = tidelog_broker.address
    create(address, "events")
    proc = spawn(address, "--json", "produce", "events")
    try:
        proc.write(b"".join(b"line %d\n" % i for i in range(1000)))  # stdin stays open
        assert end_offset(address, "events", wait_for=1000) == 1000
        proc.signal(signum)
        code = proc.wait()
    finally:
        proc.kill()
    assert code == 128 + signum, proc.err.decode()
    summary = json.loads(proc.out)
    assert summary["records"] == 1000
    assert summary["partitions"] == {"0": {"first_offset": 0, "last_offset": 999, "records": 1000}}
    assert end_offset(address, "events") == 1000


@each_signal
def test_produce_prompt_ends_on_a_stop_signal(
    tidelog_broker: BrokerThread, signum: signal.Signals
) -> None:
    address = tidelog_broker.address
    create(address, "t")
    term = PtyProcess([str(TIDELOG), "produce", "t"], subprocess_env(TIDELOG_BROKER=address))
    try:
        term.expect("type a record", "t> ")
        term.send(b"one\r")
        term.expect("partition 0, offset 0\r\nt> ")  # and the next prompt
        term.wait_until_asleep()
        term.proc.send_signal(signum)
        assert term.wait() == 0, term.text
    finally:
        term.kill()
    assert "Traceback" not in term.text
    assert end_offset(address, "t") == 1
