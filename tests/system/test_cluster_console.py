"""``tidelog cluster up``'s console driven under a pseudo-terminal: a 3-broker cluster over its
own etcd and its HTTP gateway, steered with status, broker stop/start/kill/restart, gateway
stop/start, restart all, topic list, help, Tab completion and quit; every process it started is
gone afterwards (by PID), the history is kept, and a second ``up`` finds the first one's topic."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pexpect
import pytest

from tests.cli.helpers import TIDELOG, subprocess_env

from .supervised import (
    DEADLINE_S,
    alive,
    free_base_port,
    need_etcd,
    reap,
    state_pids,
    tidelog,
    tidelog_json,
    write_config,
)

PROMPT = "tidelog> "


@pytest.fixture
def cluster_config(tmp_path: Path) -> Iterator[Path]:
    need_etcd()
    data_dir = tmp_path / "c"
    yield write_config(tmp_path / "cluster.toml", data_dir, free_base_port(3), 3)
    reap(tmp_path)  # after a failure: nothing of this test keeps running


def command(child: pexpect.spawn, line: str, *expect: str) -> None:
    child.sendline(line)
    for pattern in expect:
        child.expect(pattern)
    child.expect_exact(PROMPT)


def test_the_console_steers_the_cluster_and_stops_every_process(
    cluster_config: Path, tmp_path: Path
) -> None:
    data_dir = tmp_path / "c"
    child = pexpect.spawn(
        str(TIDELOG),
        ["cluster", "up", "--config", str(cluster_config)],
        env=subprocess_env(TERM="dumb", COLUMNS="160", LINES="60"),
        dimensions=(60, 160),
        encoding="utf-8",
        timeout=DEADLINE_S,
    )
    started: set[int] = set()
    try:
        child.expect(r"controller \(\*\): \d")
        child.expect_exact(PROMPT)
        started |= state_pids(data_dir)
        command(child, "topic create orders 3", "created topic orders")
        command(child, "status", "every partition has a leader")

        command(
            child,
            "broker stop 2",
            r"broker 2 \(pid \d+\) stopped; leaderless partitions: orders-\d",
        )
        command(child, "status", r"2\*?\s+│\s+stopped", r"leaderless partitions \(1\): orders-\d")
        command(child, "broker start 2", r"broker 2 started \(pid \d+\)")
        started |= state_pids(data_dir)

        child.sendline("broker kill 3")
        child.expect(r"broker 3 \(pid \d+\) died: killed by SIGKILL")  # the watcher's notice
        child.expect_exact(PROMPT)
        command(child, "status", r"3\*?\s+│\s+died \(killed by SIGKILL\)")

        command(child, "restart all", r"restarted brokers 1\.\.3")
        started |= state_pids(data_dir)

        # With every broker up again (a gateway's readiness needs its brokers).
        status = json.loads((data_dir / "state.json").read_text())
        health = f"{status['gateway']['url']}/health"
        assert httpx.get(health, timeout=DEADLINE_S).json() == {"status": "ok"}
        command(child, "gateway stop", r"gateway \(pid \d+\) stopped")
        with pytest.raises(httpx.ConnectError):
            httpx.get(health, timeout=DEADLINE_S)
        command(child, "status", r"gateway: http://\S+ stopped")
        command(child, "gateway stop", r"the gateway is not running \(stopped\)")
        command(child, "gateway start", r"gateway started \(pid \d+\) on http://")
        started |= state_pids(data_dir)
        assert httpx.get(health, timeout=DEADLINE_S).json() == {"status": "ok"}
        command(child, "broker list", r"3\*?\s+│\s+running")
        command(child, "broker start 9", r"there is no broker 9 in this cluster \(brokers 1\.\.3\)")
        command(child, "broker start 1", r"broker 1 is already running")
        command(child, "topic list", r"orders\s+│\s+3\s+│")
        command(child, "help", "Documented commands", "broker", "topic")
        assert "EOF" not in child.before  # Ctrl-D's handler is no command to list
        # Tab completes the command, its action and the broker number; `broker restart N`.
        child.send("bro\t")
        child.expect_exact("broker ")
        child.send("rest\t")
        child.expect_exact("restart ")
        child.send("\t\t")  # every broker number matches: a second Tab lists them
        child.expect(r"1\s+2\s+3")
        command(child, "2", r"broker 2 restarted \(pid \d+, was \d+\)")
        started |= state_pids(data_dir)
        child.sendline("quit")
        child.expect_exact("stopped")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0, child.before
    assert len(started) >= 3 + 1 + 1 + 3 + 2  # etcd, supervisor, brokers and gateways started
    assert not [pid for pid in started if alive(pid)]
    assert not (data_dir / "state.json").exists()
    history = (data_dir / ".console_history").read_text()
    assert "broker stop 2" in history and "broker restart 2" in history  # kept for the next up

    # The data outlives the processes: a second `up` (detached) serves the first one's topic.
    tidelog("cluster", "up", "--config", str(cluster_config), "--detach")
    second = state_pids(data_dir)
    try:
        status = tidelog_json("cluster", "status", "--data-dir", str(data_dir))
        assert [t["name"] for t in status["topics"]] == ["orders"]
        assert status["topics"][0]["leaderless"] == []
    finally:
        tidelog("cluster", "down", "--data-dir", str(data_dir))
    assert not [pid for pid in second if alive(pid)]


def test_ctrl_c_stops_the_cluster(cluster_config: Path, tmp_path: Path) -> None:
    child = pexpect.spawn(
        str(TIDELOG),
        ["cluster", "up", "--config", str(cluster_config), "--brokers", "1"],
        env=subprocess_env(TERM="dumb", COLUMNS="160", LINES="60"),
        encoding="utf-8",
        timeout=DEADLINE_S,
    )
    try:
        child.expect_exact(PROMPT)
        pids = state_pids(tmp_path / "c")
        child.sendintr()
        child.expect_exact("stopped")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert not [pid for pid in pids if alive(pid)]
