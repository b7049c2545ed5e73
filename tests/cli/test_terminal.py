"""The interactive parts on a pseudo-terminal: ``tail``'s live view, ``produce``'s prompt and
``topic delete``'s question."""

from __future__ import annotations

from pathlib import Path

import pytest

from tidelog.client import AdminClient, Consumer, Producer, TopicPartition
from tidelog.testing import BrokerThread

from .helpers import TIDELOG, PtyProcess, run, subprocess_env

pytestmark = pytest.mark.skipif(not TIDELOG.exists(), reason="tidelog is not installed")


def create(address: str, name: str, partitions: int = 1) -> None:
    async def main() -> None:
        async with AdminClient(address) as admin:
            await admin.create_topic(name, partitions)

    run(main())


def on_terminal(address: str, *args: str) -> PtyProcess:
    return PtyProcess([str(TIDELOG), *args], subprocess_env(TIDELOG_BROKER=address))


def test_tail_shows_records_as_they_arrive(tidelog_broker: BrokerThread) -> None:
    address = tidelog_broker.address
    create(address, "events", 3)

    async def send(values: list[tuple[bytes, int]], key: bytes | None = None) -> None:
        async with Producer(address) as producer:
            for value, partition in values:
                await producer.send_and_wait("events", value, key=key, partition=partition)

    run(send([(b"before-start", 0)]))
    term = on_terminal(address, "tail", "events", "--last", "1", "--grep", "^(before|after)")
    try:
        term.expect("following events", "before-start", "p0 ", "p1 ", "p2 ")
        run(send([(b"after-one", 1), (b"skipped by grep", 1)], key=b"user-7"))
        run(send([(b"after-two", 2)]))
        screen = term.expect("after-one", "after-two", "user-7", "1 filtered out")
        assert "skipped by grep" not in screen
        term.interrupt()
        assert term.wait() == 0, term.text
    finally:
        term.kill()
    assert "tail stopped after 3 records" in term.text
    assert "Traceback" not in term.text


def test_produce_prompts_on_a_terminal(tidelog_broker: BrokerThread) -> None:
    address = tidelog_broker.address
    create(address, "t")
    term = on_terminal(address, "produce", "t", "--format", "json")
    try:
        term.expect("type a record", "t> ")
        term.send(b'{"n": 1}\r')
        term.expect("partition 0, offset 0")
        term.send(b"not json\r")
        term.expect("line 2 is not valid JSON")
        term.send(b'{"n": 2}\r')
        term.expect("partition 0, offset 1")
        term.send(b"\x04")  # Ctrl-D ends the input
        assert term.wait() == 0, term.text
    finally:
        term.kill()

    async def values() -> list[bytes | None]:
        async with Consumer(address, auto_offset_reset="earliest") as consumer:
            consumer.assign([TopicPartition("t", 0)])
            batch = await consumer.getmany(timeout=5)
            return [r.value for records in batch.values() for r in records]

    assert run(values()) == [b'{"n": 1}', b'{"n": 2}']


def test_delete_asks_on_a_terminal(tidelog_broker: BrokerThread) -> None:
    address = tidelog_broker.address
    create(address, "keep")

    async def topics() -> list[str]:
        async with AdminClient(address) as admin:
            return await admin.list_topics()

    term = on_terminal(address, "topic", "delete", "keep")
    try:
        term.expect("Delete topic 'keep' and its 0 records? [y/N]")
        term.send(b"n\r")
        assert term.wait() == 1
    finally:
        term.kill()
    assert "topic 'keep' was not deleted" in term.text
    assert run(topics()) == ["keep"]

    term = on_terminal(address, "topic", "delete", "keep")
    try:
        term.expect("[y/N]")
        term.send(b"y\r")
        assert term.wait() == 0
    finally:
        term.kill()
    assert "deleted topic keep" in term.text
    assert run(topics()) == []


def test_consume_follows_until_ctrl_c(tidelog_broker: BrokerThread) -> None:
    address = tidelog_broker.address
    create(address, "t")

    async def send(value: bytes) -> None:
        async with Producer(address) as producer:
            await producer.send_and_wait("t", value)

    run(send(b"old"))
    term = on_terminal(address, "consume", "t", "--from-beginning", "--follow", "--format", "value")
    try:
        term.expect("waiting for records on t", "old")
        run(send(b"new"))
        term.expect("new")
        term.interrupt()
        assert term.wait() == 0, term.text
    finally:
        term.kill()

    # Without a start option consume waits at the end; --count ends it.
    term = on_terminal(address, "consume", "t", "--count", "1", "--format", "value")
    try:
        term.expect("waiting for records on t")
        run(send(b"newest"))
        assert term.wait() == 0, term.text
    finally:
        term.kill()
    assert "newest" in term.text and "old" not in term.text


def test_bulk_produce_shows_progress_and_a_summary(
    tidelog_broker: BrokerThread, tmp_path: Path
) -> None:
    address = tidelog_broker.address
    create(address, "t", 2)
    path = tmp_path / "lines.txt"
    path.write_text("".join(f"user-{i % 7}|value {i}\n" for i in range(20_000)))
    term = on_terminal(address, "produce", "t", "--file", str(path), "--key-separator", "|")
    try:
        screen = term.expect("sent 20,000 records")
        assert term.wait() == 0, term.text
    finally:
        term.kill()
    assert "records/s" in screen and "producing to t" in screen
    assert "MB" in screen or "kB" in screen  # bytes read, next to the bar
