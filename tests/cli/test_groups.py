"""``tidelog group ...`` and ``tidelog consume --group`` against a real broker."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from types import TracebackType
from typing import Any

import pytest

from tidelog.client import AdminClient, Consumer, Producer, TopicPartition
from tidelog.testing import BrokerThread

from .helpers import DEADLINE_S, TIDELOG, PtyProcess, cli, free_port, run, subprocess_env

HOUR_MS = 3_600_000


def create(address: str, name: str, partitions: int = 1) -> None:
    async def main() -> None:
        async with AdminClient(address) as admin:
            await admin.create_topic(name, partitions)

    run(main())


def produce(address: str, topic: str, records: list[tuple[int, bytes]], **kw: Any) -> None:
    """``(partition, value)`` pairs, in order."""

    async def main() -> None:
        async with Producer(address) as producer:
            for partition, value in records:
                await producer.send_and_wait(topic, value, partition=partition, **kw)

    run(main())


def committed(address: str, group: str) -> dict[int, int]:
    async def main() -> dict[int, int]:
        async with AdminClient(address) as admin:
            found = await admin.list_committed(group)
        return {tp.partition: o.offset for tp, o in found.items()}

    return run(main())


def json_out(*args: str) -> Any:
    result = cli(*args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def one_red_line(result: Any, code: int = 1) -> str:
    assert result.exit_code == code, result.output
    assert result.stdout == ""
    assert result.stderr.startswith("tidelog: ") and result.stderr.count("\n") == 1
    return str(result.stderr)


class Member:
    """A consumer in ``group`` on a thread of its own (its own event loop), from the moment
    it has been assigned partitions until the ``with`` block ends."""

    def __init__(self, address: str, group: str, topic: str) -> None:
        self.address, self.group, self.topic = address, group, topic
        self.member_id = ""
        self._joined = threading.Event()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        try:
            async with Consumer(
                self.address, group_id=self.group, client_id="member-in-test", auto_commit=False
            ) as consumer:
                consumer.subscribe([self.topic])
                while not self._stop.is_set():
                    await consumer.getmany(timeout=0.05)
                    if consumer.assignment() and not self._joined.is_set():
                        self.member_id = consumer.member_id
                        self._joined.set()
        except BaseException as exc:  # handed to the test's thread
            self._error = exc
            self._joined.set()

    def __enter__(self) -> Member:
        self._thread.start()
        assert self._joined.wait(DEADLINE_S), "the member was never assigned partitions"
        if self._error is not None:
            raise self._error
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(DEADLINE_S)
        if self._error is not None and exc is None:
            raise self._error


def test_list_and_describe_a_group(tidelog_broker: BrokerThread) -> None:
    address = tidelog_broker.address
    create(address, "events", 3)
    produce(address, "events", [(0, b"a")] * 5 + [(1, b"b")] * 3 + [(2, b"c")] * 2)

    async def consume_and_commit() -> None:
        async with Consumer(
            address, group_id="billing", auto_offset_reset="earliest", auto_commit=False
        ) as consumer:
            consumer.subscribe(["events"])
            seen = 0
            while seen < 10:
                batch = await consumer.getmany(timeout=1)
                seen += sum(len(records) for records in batch.values())
            await consumer.commit({TopicPartition("events", 0): 3, TopicPartition("events", 1): 1})

    run(consume_and_commit())

    assert json_out(address, "--json", "group", "list") == [
        {"group": "billing", "state": "empty", "members": 0}
    ]
    assert json_out(address, "--json", "group", "list", "--state", "stable") == []
    listed = cli(address, "group", "list")
    assert listed.exit_code == 0, listed.output
    assert "billing" in listed.output and "empty" in listed.output

    info = json_out(address, "--json", "group", "describe", "billing")
    assert info["state"] == "empty" and info["members"] == []
    rows = {p["partition"]: p for p in info["offsets"]}
    assert set(rows) == {0, 1}  # nothing committed for partition 2
    for p in rows.values():
        assert p["lag"] == p["end_offset"] - p["committed"]
    assert [(rows[p]["committed"], rows[p]["end_offset"]) for p in (0, 1)] == [(3, 5), (1, 3)]
    assert info["lag"] == sum(p["lag"] for p in rows.values()) == 4

    shown = cli(address, "group", "describe", "billing")
    assert shown.exit_code == 0, shown.output
    assert "group billing: empty, epoch" in shown.output
    assert "0 members" in shown.output and "total lag: 4" in shown.output
    assert "end offset" in shown.output

    with Member(address, "billing", "events") as member:
        assert json_out(address, "--json", "group", "list") == [
            {"group": "billing", "state": "stable", "members": 1}
        ]
        info = json_out(address, "--json", "group", "describe", "billing")
        (described,) = info["members"]
        assert described["member_id"] == member.member_id
        assert described["client_id"] == "member-in-test"
        assert described["assignment"] == {"events": [0, 1, 2]}
        assert [p["owner"] for p in info["offsets"]] == [member.member_id] * 3
        assert [p["committed"] for p in info["offsets"]] == [3, 1, None]
        assert info["offsets"][2]["lag"] is None and info["lag"] == 4
        shown = cli(address, "group", "describe", "billing")
        assert shown.exit_code == 0, shown.output
        assert "1 member" in shown.output and "member-in-test" in shown.output
        assert "events[0,1,2]" in shown.output

    assert "no group 'nope'" in one_red_line(cli(address, "group", "describe", "nope"))


def test_reset_offsets(tidelog_broker: BrokerThread) -> None:
    address = tidelog_broker.address
    create(address, "events", 2)
    now = int(time.time() * 1000)
    for i, hours_ago in enumerate((3, 2, 1, 0)):
        records = [(p, f"r{i}".encode()) for p in (0, 1)]
        produce(address, "events", records, timestamp=now - hours_ago * HOUR_MS)

    def reset(*args: str) -> dict[int, int]:
        out = json_out(address, "--json", "group", "reset-offsets", "g", "-t", "events", *args)
        return {row["partition"]: row["offset"] for row in out["offsets"]}

    assert reset("--to-earliest") == {0: 0, 1: 0} == committed(address, "g")
    assert reset("--to-latest") == {0: 4, 1: 4} == committed(address, "g")
    assert reset("--to-offset", "1", "--partition", "0") == {0: 1}
    assert committed(address, "g") == {0: 1, 1: 4}
    assert reset("--to-offset", "99") == {0: 4, 1: 4}  # clamped into the log
    assert reset("--to-time", "-90m") == {0: 2, 1: 2} == committed(address, "g")
    assert reset("--to-time", str(now - 2 * HOUR_MS)) == {0: 1, 1: 1}
    assert reset("--to-time", "2000-01-01") == {0: 0, 1: 0}

    dry = json_out(
        address, "--json", "group", "reset-offsets", "g", "-t", "events", "--to-latest", "--dry-run"
    )
    assert dry["dry_run"] is True
    assert [(r["previous"], r["offset"]) for r in dry["offsets"]] == [(0, 4), (0, 4)]
    assert committed(address, "g") == {0: 0, 1: 0}

    shown = cli(address, "group", "reset-offsets", "g", "--topic", "events", "--to-offset", "3")
    assert shown.exit_code == 0, shown.output
    assert "reset group g on topic events" in shown.output and "new offset" in shown.output

    for args in ([], ["--to-earliest", "--to-latest"], ["--to-time", "yesterday-ish"]):
        result = cli(address, "group", "reset-offsets", "g", "--topic", "events", *args)
        one_red_line(result, code=2)
    missing = cli(address, "group", "reset-offsets", "g", "-t", "events", "--to-latest", "-p", "7")
    assert "events[7]" in one_red_line(missing)

    with Member(address, "g", "events"):
        refused = cli(address, "group", "reset-offsets", "g", "-t", "events", "--to-earliest")
        assert "1 member(s)" in one_red_line(refused)
    assert committed(address, "g") == {0: 3, 1: 3}


def test_delete(tidelog_broker: BrokerThread) -> None:
    address = tidelog_broker.address
    create(address, "events")
    produce(address, "events", [(0, b"x")])
    reset = cli(address, "group", "reset-offsets", "g", "-t", "events", "--to-latest")
    assert reset.exit_code == 0, reset.output

    with Member(address, "g", "events"):
        assert "still has members" in one_red_line(cli(address, "group", "delete", "g", "--yes"))
    deleted = cli(address, "group", "delete", "g", "--yes")
    assert deleted.exit_code == 0, deleted.output
    assert "deleted group g" in deleted.output
    assert json_out(address, "--json", "group", "list") == []
    assert committed(address, "g") == {}
    assert "no group 'g'" in one_red_line(cli(address, "group", "delete", "g", "--yes"))


def test_consume_as_a_group_continues_where_it_stopped(tidelog_broker: BrokerThread) -> None:
    address = tidelog_broker.address
    create(address, "events", 3)
    sent = [(i % 3, f"v{i}".encode()) for i in range(10)]
    produce(address, "events", sent)

    def consume(*args: str) -> list[tuple[int, int, str]]:
        result = cli(address, "consume", "events", "--group", "g", "--format", "json", *args)
        assert result.exit_code == 0, result.output
        rows = [json.loads(line) for line in result.stdout.splitlines()]
        return [(r["partition"], r["offset"], r["value"]) for r in rows]

    first = consume("--from-beginning", "--count", "4")
    assert len(first) == 4
    second = consume("--from-beginning")  # catches up, then exits
    everything = sorted(first + second)
    assert len(everything) == len(set(everything)) == 10  # no duplicates, nothing skipped
    assert sorted(v for _, _, v in everything) == sorted(v.decode() for _, v in sent)

    produce(address, "events", [(1, b"late")])
    assert consume("--from-beginning") == [(1, 3, "late")]
    assert consume("--count", "1", "--from-beginning") == []  # caught up: nothing left
    info = json_out(address, "--json", "group", "describe", "g")
    assert info["state"] == "empty" and info["lag"] == 0
    assert committed(address, "g") == {0: 4, 1: 4, 2: 3}


def test_consume_group_option_conflicts() -> None:
    for extra in (["--partition", "0"], ["--offset", "3"], ["--from-time", "-1h"]):
        result = cli(None, "consume", "events", "--group", "g", *extra)
        assert "does not combine" in one_red_line(result, code=2)


@pytest.mark.skipif(not TIDELOG.exists(), reason="tidelog is not installed")
def test_consume_group_commits_on_ctrl_c(tidelog_broker: BrokerThread) -> None:
    address = tidelog_broker.address
    create(address, "events", 2)
    produce(address, "events", [(0, b"one"), (1, b"two")])
    env = subprocess_env(TIDELOG_BROKER=address)
    args = ["consume", "events", "--group", "g", "--from-beginning", "--follow"]
    term = PtyProcess([str(TIDELOG), *args, "--format", "value"], env)
    try:
        term.expect("waiting for records on events as group g", "one", "two")
        produce(address, "events", [(1, b"three")])
        term.expect("three")
        term.interrupt()
        assert term.wait() == 0, term.text
    finally:
        term.kill()
    assert "Traceback" not in term.text
    assert committed(address, "g") == {0: 1, 1: 2}

    # A new group without --from-beginning starts at the end and waits; --count ends it.
    term = PtyProcess([str(TIDELOG), "consume", "events", "-g", "new", "-n", "1"], env)
    try:
        term.expect("waiting for records on events as group new")
        produce(address, "events", [(0, b"four")])
        assert term.wait() == 0, term.text
    finally:
        term.kill()
    assert "four" in term.text and "one" not in term.text
    assert committed(address, "new") == {0: 2, 1: 2}


@pytest.mark.skipif(not TIDELOG.exists(), reason="tidelog is not installed")
def test_delete_asks_on_a_terminal(tidelog_broker: BrokerThread) -> None:
    address = tidelog_broker.address
    create(address, "events")
    assert cli(address, "group", "reset-offsets", "g", "-t", "events", "--to-latest").exit_code == 0
    env = subprocess_env(TIDELOG_BROKER=address)
    for answer, code in ((b"n", 1), (b"y", 0)):
        term = PtyProcess([str(TIDELOG), "group", "delete", "g"], env)
        try:
            term.expect("Delete group 'g' and its committed offsets of 1 partition? [y/N]")
            term.send(answer + b"\r")
            assert term.wait() == code, term.text
        finally:
            term.kill()
        assert ("was not deleted" if code else "deleted group g") in term.text
        assert committed(address, "g") == ({0: 0} if code else {})


GROUP_COMMANDS = [
    ["group", "list"],
    ["group", "describe", "g"],
    ["group", "reset-offsets", "g", "--topic", "t", "--to-earliest"],
    ["group", "delete", "g", "--yes"],
    ["consume", "t", "--group", "g"],
]


@pytest.mark.parametrize("args", GROUP_COMMANDS, ids=" ".join)
def test_broker_down_is_one_line(args: list[str]) -> None:
    address = f"127.0.0.1:{free_port()}"
    assert "cannot reach broker" in one_red_line(cli(address, *args))


def test_help_has_examples() -> None:
    for path in ([], ["list"], ["describe"], ["reset-offsets"], ["delete"]):
        shown = cli(None, "group", *path, "--help")
        assert shown.exit_code == 0, shown.output
        assert "Example" in shown.output
    consume = cli(None, "consume", "--help")
    assert "--group billing" in consume.output
