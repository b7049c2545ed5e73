"""``tidelog cluster`` without the console, against a detached cluster: status, broker and
restart commands with ``--json``; bad input (an unknown broker, starting a running broker, ``up``
twice on one data dir, a port in use, no etcd binary, an etcd that does not answer), each a
clear message with nothing left running; an existing etcd; a broker joining with ``serve
--etcd``; restart on failure; ``down`` after the supervisor was SIGKILLed."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cli.helpers import TIDELOG, ServeProcess, subprocess_env
from tidelog.cluster.run import wait_exit
from tidelog.etcd import EtcdProcess, free_port

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


@pytest.fixture(scope="module")
def detached(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A 2-broker cluster in the background; its data dir. Stopped with `down`, which must
    leave no process of it running."""
    need_etcd()
    root = tmp_path_factory.mktemp("detached")
    config = write_config(root / "cluster.toml", root / "c", free_base_port(2), 2)
    status = tidelog_json("cluster", "up", "--config", str(config), "--detach")
    assert [b["state"] for b in status["brokers"]] == ["running", "running"]
    pids = state_pids(root / "c")
    try:
        yield root / "c"
    finally:
        pids |= state_pids(root / "c")
        done = tidelog("cluster", "down", "--data-dir", str(root / "c"), check=False)
        left = [pid for pid in pids if alive(pid)]
        reap(root)  # after a failure: nothing of this module keeps running
        assert "stopped" in done.stdout
        assert not left


def test_status_json(detached: Path) -> None:
    status = tidelog_json("cluster", "status", "--data-dir", str(detached))
    assert [(b["id"], b["state"], b["registered"]) for b in status["brokers"]] == [
        (1, "running", True),
        (2, "running", True),
    ]
    assert status["controller"] in (1, 2)
    assert all(alive(b["pid"]) for b in status["brokers"])
    assert alive(status["etcd"]["pid"])


def test_broker_stop_and_start(detached: Path) -> None:
    where = ("--data-dir", str(detached))
    stopped = tidelog_json("cluster", "broker", "stop", "2", *where)
    assert stopped["ok"] and "broker 2" in stopped["message"]
    status = tidelog_json("cluster", "status", *where)
    assert (status["brokers"][1]["state"], status["brokers"][1]["pid"]) == ("stopped", None)
    assert not status["brokers"][1]["registered"]
    started = tidelog_json("cluster", "broker", "start", "2", *where)
    assert "broker 2 started" in started["message"]
    assert tidelog_json("cluster", "status", *where)["brokers"][1]["state"] == "running"


def test_broker_restart_and_restart_all(detached: Path) -> None:
    where = ("--data-dir", str(detached))
    before = {b["id"]: b["pid"] for b in tidelog_json("cluster", "status", *where)["brokers"]}
    done = tidelog_json("cluster", "broker", "restart", "1", *where)
    now = tidelog_json("cluster", "status", *where)["brokers"]
    assert done["message"] == f"broker 1 restarted (pid {now[0]['pid']}, was {before[1]})"
    assert not alive(before[1]) and now[0]["registered"]
    assert tidelog_json("cluster", "restart-all", *where)["message"] == "restarted brokers 1..2"
    after = tidelog_json("cluster", "status", *where)["brokers"]
    assert [(b["state"], b["registered"]) for b in after] == [("running", True)] * 2
    assert not {b["pid"] for b in after} & {now[0]["pid"], now[1]["pid"]}


def test_gateway_stop_and_start(detached: Path) -> None:
    where = ("--data-dir", str(detached))
    gateway = tidelog_json("cluster", "status", *where)["gateway"]
    assert gateway["state"] == "running" and alive(gateway["pid"])
    health = f"{gateway['url']}/health"
    assert httpx.get(health, timeout=DEADLINE_S).json() == {"status": "ok"}
    stopped = tidelog_json("cluster", "gateway", "stop", *where)
    assert stopped["message"] == f"gateway (pid {gateway['pid']}) stopped"
    assert not alive(gateway["pid"])
    assert tidelog_json("cluster", "status", *where)["gateway"]["state"] == "stopped"
    with pytest.raises(httpx.ConnectError):
        httpx.get(health, timeout=DEADLINE_S)
    started = tidelog_json("cluster", "gateway", "start", *where)
    assert "gateway started" in started["message"]
    again = tidelog_json("cluster", "status", *where)["gateway"]
    assert again["state"] == "running" and again["pid"] != gateway["pid"]
    assert httpx.get(health, timeout=DEADLINE_S).json() == {"status": "ok"}
    refused = tidelog("cluster", "gateway", "start", *where, check=False)
    assert refused.returncode == 1
    assert f"the gateway is already running (pid {again['pid']})" in refused.stderr


def test_an_unknown_broker_is_refused(detached: Path) -> None:
    done = tidelog("cluster", "broker", "stop", "7", "--data-dir", str(detached), check=False)
    assert done.returncode == 1
    assert "there is no broker 7 in this cluster (brokers 1..2)" in done.stderr


def test_starting_a_running_broker_is_refused(detached: Path) -> None:
    before = state_pids(detached)
    done = tidelog("cluster", "broker", "start", "1", "--data-dir", str(detached), check=False)
    assert done.returncode == 1
    assert "broker 1 is already running (pid " in done.stderr
    assert state_pids(detached) == before


def test_up_twice_on_one_data_dir_is_refused(detached: Path) -> None:
    before = state_pids(detached)
    config = detached.parent / "cluster.toml"
    done = tidelog("cluster", "up", "--config", str(config), "--detach", check=False)
    assert done.returncode == 1
    assert f"a cluster is already running from {detached}" in done.stderr
    assert state_pids(detached) == before


def test_commands_without_a_cluster_say_so(tmp_path: Path) -> None:
    done = tidelog("cluster", "status", "--data-dir", str(tmp_path), check=False)
    assert done.returncode == 1
    assert f"no cluster is running from {tmp_path}" in done.stderr


def test_a_port_in_use_is_refused_before_anything_starts(tmp_path: Path) -> None:
    base = free_base_port(2)
    with socket.socket() as taken, contextlib.ExitStack() as cleanup:
        cleanup.callback(reap, tmp_path)  # after a failure: nothing keeps running
        taken.bind(("127.0.0.1", base + 1))
        taken.listen()
        done = tidelog(
            "cluster", "up", "-n", "2", "--base-port", str(base),
            "--data-dir", str(tmp_path / "c"), "--detach", check=False,
        )  # fmt: skip
    assert done.returncode == 1
    assert f"port {base + 1} of broker 2 is already in use" in done.stderr
    assert not (tmp_path / "c" / "state.json").exists()
    assert not (tmp_path / "c" / "etcd").exists()


@pytest.fixture
def one_broker(tmp_path: Path) -> Iterator[Path]:
    """The config of a 1-broker cluster in this test's own directory (reaped afterwards)."""
    need_etcd()
    yield write_config(tmp_path / "cluster.toml", tmp_path / "c", free_base_port(1), 1)
    reap(tmp_path)


def test_a_dead_broker_is_restarted_with_restart_on_failure(one_broker: Path) -> None:
    data_dir = one_broker.parent / "c"
    tidelog("cluster", "up", "--config", str(one_broker), "--restart-on-failure", "--detach")
    try:
        first = tidelog_json("cluster", "status", "--data-dir", str(data_dir))["brokers"][0]
        tidelog("cluster", "broker", "kill", "1", "--data-dir", str(data_dir))
        deadline = time.monotonic() + DEADLINE_S
        while True:
            now = tidelog_json("cluster", "status", "--data-dir", str(data_dir))["brokers"][0]
            if now["state"] == "running" and now["pid"] != first["pid"]:
                break
            assert time.monotonic() < deadline, f"not restarted: {now}"
        assert now["registered"]
        log = (data_dir / "logs" / "supervisor.log").read_text()
        assert f"broker 1 (pid {first['pid']}) died: killed by SIGKILL" in log
        assert "(restart on failure)" in log
    finally:
        tidelog("cluster", "down", "--data-dir", str(data_dir))


def test_down_stops_what_a_killed_supervisor_left(one_broker: Path) -> None:
    data_dir = one_broker.parent / "c"
    tidelog("cluster", "up", "--config", str(one_broker), "--detach")
    pids = state_pids(data_dir)
    supervisor = json.loads((data_dir / "state.json").read_text())["supervisor_pid"]
    os.kill(supervisor, signal.SIGKILL)
    assert wait_exit(supervisor, DEADLINE_S)
    done = tidelog("cluster", "down", "--data-dir", str(data_dir))
    assert "the supervisor was gone; stopped 3 process(es)" in done.stdout  # gateway, broker, etcd
    assert not [pid for pid in pids if alive(pid)]


def test_a_missing_etcd_binary_is_named_before_anything_starts(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(TIDELOG), "cluster", "up", "-n", "1", "--base-port", str(free_base_port(1)),
         "--data-dir", str(tmp_path / "c"), "--detach"],
        env=subprocess_env(PATH=str(TIDELOG.parent)),  # no etcd on it
        capture_output=True, text=True, timeout=DEADLINE_S,
    )  # fmt: skip
    assert done.returncode == 1
    assert "the etcd server is not installed" in done.stderr
    assert "apt-get install etcd-server" in done.stderr
    assert not (tmp_path / "c").exists()
    assert not reap(tmp_path)  # nothing was started


def test_up_on_an_existing_etcd_leaves_it_running(one_broker: Path, tmp_path: Path) -> None:
    data_dir = one_broker.parent / "c"
    with EtcdProcess(tmp_path / "etcd") as etcd:
        endpoint = etcd.endpoint.removeprefix("http://")
        where = ("--config", str(one_broker))
        status = tidelog_json("cluster", "up", *where, "--etcd", endpoint, "--detach")
        pids = state_pids(data_dir)
        try:
            assert status["etcd"] == {"endpoints": [endpoint], "pid": None}
            assert [(b["state"], b["registered"]) for b in status["brokers"]] == [("running", True)]
            assert not (data_dir / "etcd").exists()
        finally:
            tidelog("cluster", "down", "--data-dir", str(data_dir))
        assert not [pid for pid in pids if alive(pid)]
        assert etcd.healthy()  # not ours to stop


def test_an_etcd_that_does_not_answer_is_named(one_broker: Path) -> None:
    data_dir = one_broker.parent / "c"
    dead = f"127.0.0.1:{free_port()}"
    done = tidelog("cluster", "up", "--config", str(one_broker), "--etcd", dead, "--detach",
                   check=False)  # fmt: skip
    assert done.returncode == 1
    assert f"etcd at {dead}: " in done.stderr
    assert not (data_dir / "state.json").exists()
    assert not reap(one_broker.parent)


def test_a_broker_started_elsewhere_joins_with_serve_etcd(one_broker: Path, tmp_path: Path) -> None:
    """``tidelog serve --etcd`` (as on another host) joins the supervised cluster: it leads
    partitions the supervisor shows, while the supervisor starts and stops only its own."""
    data_dir = one_broker.parent / "c"
    status = tidelog_json("cluster", "up", "--config", str(one_broker), "--detach")
    try:
        etcd = status["etcd"]["endpoints"][0].removeprefix("http://")
        joined = ServeProcess(
            tmp_path, "--etcd", etcd, "--cluster-id", "tidelog", "--broker-id", "9",
            "--etcd-lease-ttl-s", "2", "--data-dir", str(tmp_path / "b9"),
        )  # fmt: skip
        try:
            joined.wait_ready()
            first = status["brokers"][0]["address"]
            tidelog("--broker", first, "topic", "create", "spread", "--partitions", "4")
            (topic,) = tidelog_json("cluster", "status", "--data-dir", str(data_dir))["topics"]
            assert sorted(set(topic["leaders"].values())) == [1, 9]
            assert topic["leaderless"] == []
        finally:
            assert joined.stop() == 0
    finally:
        tidelog("cluster", "down", "--data-dir", str(data_dir))


def describe_json(broker: str, topic: str) -> Any:
    return json.loads(tidelog("--broker", broker, "--json", "topic", "describe", topic).stdout)


def test_status_and_describe_show_a_stopped_replica(detached: Path) -> None:
    """A topic with 2 replicas: with broker 2 stopped, ``cluster status`` names its partitions
    under-replicated and ``topic describe`` shows broker 2's lag as unknown; once it is back
    and in sync, neither does."""
    where = ("--data-dir", str(detached))
    first = tidelog_json("cluster", "status", *where)["brokers"][0]["address"]
    tidelog("--broker", first, "topic", "create", "copies", "-p", "2", "--replication-factor", "2")
    tidelog("--broker", first, "produce", "copies", "x")
    tidelog_json("cluster", "broker", "stop", "2", *where)
    try:
        status = tidelog_json("cluster", "status", *where)
        assert status["under_replicated_partitions"] == ["copies-0", "copies-1"]
        (copies,) = [t for t in status["topics"] if t["name"] == "copies"]
        assert copies["under_replicated"] == [0, 1] and copies["leaderless"] == []
        assert (
            "under-replicated partitions (2): copies-0, copies-1"
            in tidelog("cluster", "status", *where).stdout
        )
        described = describe_json(first, "copies")
        assert [p["lag"] for p in described["partitions"]] == [{"1": 0, "2": None}] * 2
    finally:
        tidelog_json("cluster", "broker", "start", "2", *where)
    deadline = time.monotonic() + DEADLINE_S
    while tidelog_json("cluster", "status", *where)["under_replicated_partitions"]:
        assert time.monotonic() < deadline, "broker 2 back in every ISR"
        time.sleep(0.2)  # polling the cluster's state, with a deadline
    described = describe_json(first, "copies")
    assert [p["lag"] for p in described["partitions"]] == [{"1": 0, "2": 0}] * 2
    assert "every replica is in sync" in tidelog("cluster", "status", *where).stdout
