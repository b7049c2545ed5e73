"""``tidelog cluster health``, ``tidelog status`` and ``tidelog top`` against a real broker."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import threading
from collections.abc import Callable, Iterator

import pexpect
import pytest

from tidelog.cli.health import EXIT_UNHEALTHY
from tidelog.client import AdminClient, Consumer, Producer, QueueConsumer
from tidelog.testing import BrokerThread

from .helpers import DEADLINE_S, TIDELOG, cli, free_port, run, subprocess_env

ALT_SCREEN_ON = "\x1b[?1049h"
ALT_SCREEN_OFF = "\x1b[?1049l"


def test_health_of_a_healthy_broker_exits_0(tidelog_broker: BrokerThread) -> None:
    result = cli(tidelog_broker.address, "cluster", "health")
    assert result.exit_code == 0, result.output
    assert "Healthy: healthy" in result.output
    as_json = cli(tidelog_broker.address, "cluster", "health", "--json")
    report = json.loads(as_json.output)
    assert report["healthy"] is True
    assert report["controller_id"] == 0
    assert report["leaderless_partitions"] == []


def test_health_of_an_unreachable_broker_exits_unhealthy() -> None:
    address = f"127.0.0.1:{free_port()}"
    result = cli(address, "--timeout", "1", "cluster", "health", "--json")
    assert result.exit_code == EXIT_UNHEALTHY, result.output
    report = json.loads(result.output)
    assert report["healthy"] is False
    assert report["brokers_down"] == [address]
    assert "does not answer" in report["reasons"][0]


def test_status_summarises_the_broker(tidelog_broker_factory: Callable[..., BrokerThread]) -> None:
    broker = tidelog_broker_factory(admin_port=-1)

    async def setup() -> None:
        async with AdminClient(broker.address) as admin:
            await admin.create_topic("a", 3)
            await admin.create_topic("b", 1)
        async with Producer(broker.address) as producer:
            await producer.send("a", b"hello", partition=0)
            await producer.flush()
        async with QueueConsumer(broker.address, "workers", "a") as queue:
            [message] = await queue.take(1, wait=5)
            await message.ack()

    asyncio.run(setup())
    result = cli(broker.address, "status", "--json", "--admin", broker.admin_address)
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert (info["topics"], info["partitions"], info["groups"], info["queues"]) == (2, 4, 0, 1)
    assert info["version"]
    assert info["disk_bytes"] > 0
    assert info["uptime_s"] >= 0
    text = cli(broker.address, "status", "--admin", broker.admin_address)
    assert "partitions  4" in text.output
    assert "queues      1" in text.output


def test_health_watch_exits_at_the_first_healthy_check(tidelog_broker: BrokerThread) -> None:
    result = cli(
        tidelog_broker.address, "cluster", "health", "--watch", "--exit-when-healthy", "--json"
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["healthy"] is True


@pytest.fixture
def traffic(tidelog_broker_factory: Callable[..., BrokerThread]) -> Iterator[BrokerThread]:
    """A broker with a producer writing to "clicks" and a group "billing" that has committed
    nothing of the last records, until the test ends."""
    broker = tidelog_broker_factory(admin_port=-1)
    stop = threading.Event()
    ready = threading.Event()

    async def main() -> None:
        async with AdminClient(broker.address) as admin:
            await admin.create_topic("clicks", 1)
        async with Producer(broker.address) as producer:
            for _ in range(20):
                await producer.send("clicks", b"x" * 100)
            await producer.flush()
            async with AdminClient(broker.address) as admin:
                await admin.reset_offsets("billing", "clicks", to=5)
            ready.set()
            while not stop.is_set():  # a steady rate until the test ends (bounded below)
                for _ in range(20):
                    await producer.send("clicks", b"x" * 100)
                await producer.flush()
                await asyncio.sleep(0.05)

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(DEADLINE_S)
    try:
        yield broker
    finally:
        stop.set()
        thread.join(DEADLINE_S)


def test_top_shows_rates_and_lag_and_leaves_the_terminal_clean_on_ctrl_c(
    traffic: BrokerThread,
) -> None:
    child = pexpect.spawn(
        str(TIDELOG),
        ["--broker", traffic.address, "top", "--admin", traffic.admin_address, "--interval", "0.3"],
        env=subprocess_env(),
        dimensions=(50, 140),
        encoding="utf-8",
        codec_errors="replace",  # Ctrl-C may cut a box-drawing character in two
        timeout=DEADLINE_S,
    )
    try:
        child.expect_exact(ALT_SCREEN_ON)
        # A rate above zero on the topic's row (records/s in), after a refresh or two.
        child.expect(r"clicks\s+│\s+1\s+│\s+[1-9][0-9.]*\s")
        child.expect(r"billing\s+│\s+empty\s+│\s+0\s+│\s+[1-9][0-9]+")  # lag = end - 5
        child.send("s")  # sort by records in: redrawn at once
        child.expect_exact("sorted by in")
        child.kill(signal.SIGINT)
        child.expect_exact(ALT_SCREEN_OFF)
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0, child.before


def test_top_quits_on_q(traffic: BrokerThread) -> None:
    child = pexpect.spawn(
        str(TIDELOG),
        ["--broker", traffic.address, "top", "--admin", traffic.admin_address],
        env=subprocess_env(),
        dimensions=(50, 140),
        encoding="utf-8",
        codec_errors="replace",  # Ctrl-C may cut a box-drawing character in two
        timeout=DEADLINE_S,
    )
    try:
        child.expect_exact("clicks")
        child.send("/")
        child.send("nomatch")
        child.expect_exact("filter: nomatch")
        child.send("\r")
        child.send("q")
        child.expect_exact(ALT_SCREEN_OFF)
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0


def test_top_without_an_admin_port_says_where_it_looked(tidelog_broker: BrokerThread) -> None:
    admin = f"127.0.0.1:{free_port()}"
    result = cli(tidelog_broker.address, "top", "--admin", admin)
    assert result.exit_code == 1
    assert f"cannot read metrics from http://{admin}/metrics" in result.output


def test_a_consumer_group_member_is_counted(
    tidelog_broker_factory: Callable[..., BrokerThread],
) -> None:
    """``status`` counts a group with a live member too (ListGroups through the client)."""
    broker = tidelog_broker_factory(admin_port=-1)

    async def main() -> str:
        async with AdminClient(broker.address) as admin:
            await admin.create_topic("t", 1)
        async with Consumer(broker.address, group_id="g") as consumer:
            consumer.subscribe(["t"])
            while not consumer.assignment():
                await consumer.getmany(timeout=0.2)
            args = ("status", "--json", "--admin", broker.admin_address)
            result = await asyncio.to_thread(cli, broker.address, *args)
            return str(result.output)

    assert json.loads(asyncio.run(main()))["groups"] == 1


def test_top_over_two_brokers_shows_each_a_queue_and_a_broker_that_stops_answering(
    tidelog_broker_factory: Callable[..., BrokerThread],
) -> None:
    """``--admin a,b``: a row per broker; the queue "workers" on broker a with its depth, in
    flight and dead letters; broker b stopped shows "no answer" while a's rows go on."""
    a = tidelog_broker_factory(admin_port=-1)
    b = tidelog_broker_factory(admin_port=-1)

    async def queue() -> None:
        async with AdminClient(a.address) as admin:
            await admin.create_topic("jobs", 1)
        async with Producer(a.address) as producer:
            for i in range(10):
                await producer.send("jobs", b"job%d" % i)
        async with QueueConsumer(a.address, "workers", "jobs") as q:
            taken = await q.take(3, wait=5)
            await taken[0].reject("bad")
            await taken[1].ack()
            # leaving releases the third: depth 10 - 2, nothing in flight, one dead letter

    run(queue())
    b_admin = b.admin_address
    child = pexpect.spawn(
        str(TIDELOG),
        [
            "--broker",
            a.address,
            "top",
            "--admin",
            f"{a.admin_address},{b.admin_address}",
            "--interval",
            "0.3",
        ],
        env=subprocess_env(),
        dimensions=(60, 160),
        encoding="utf-8",
        codec_errors="replace",  # Ctrl-C may cut a box-drawing character in two
        timeout=DEADLINE_S,
    )
    try:
        child.expect_exact(ALT_SCREEN_ON)
        child.expect_exact(b.admin_address)
        # queue │ members │ depth │ in flight │ lag │ dead letters
        child.expect(r"workers\s+│\s+0\s+│\s+8\s+│\s+0\s+│\s+8\s+│\s+1\s+│")
        b.stop()
        child.expect(re.escape(b_admin) + r"\s+│\s+│\s+(\x1b\[[0-9;]*m)?no answer")
        child.send("q")
        child.expect_exact(ALT_SCREEN_OFF)
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0, child.before
