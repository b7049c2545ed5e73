"""Helpers for the tests of ``tidelog cluster`` (the supervisor): free port ranges, the
processes a supervisor's state file names, and whether they still run."""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.cli.helpers import TIDELOG, subprocess_env
from tidelog.cluster.config import ADMIN_OFFSET, GATEWAY_OFFSET
from tidelog.cluster.preflight import port_free
from tidelog.etcd.process import INSTALL_HINT

DEADLINE_S = 60.0


def need_etcd() -> None:
    if shutil.which("etcd") is None:
        if os.environ.get("CI"):
            pytest.fail(INSTALL_HINT)
        pytest.skip(INSTALL_HINT)


def free_base_port(brokers: int) -> int:
    """A base port whose broker, admin and gateway ports are all free now, below Linux's
    ephemeral range (32768 on), so no other test's port-0 socket takes one of them meanwhile."""
    for _ in range(200):
        base = random.randrange(10000, 30000 - brokers)
        ports = (
            [base + i for i in range(brokers)]
            + [base + ADMIN_OFFSET + i for i in range(brokers)]
            + [base + GATEWAY_OFFSET]
        )
        if all(port_free("127.0.0.1", p) for p in ports):
            return base
    raise AssertionError("no free port range")


def tidelog(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(TIDELOG), *args],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=DEADLINE_S * 2,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"tidelog {' '.join(args)}: {done.returncode} {done.stderr}")
    return done


def tidelog_json(*args: str) -> Any:
    return json.loads(tidelog(*args, "--json").stdout)


def state_pids(data_dir: Path) -> set[int]:
    """The supervisor's, etcd's, the gateway's and every running broker's PID, from the state
    file."""
    state = json.loads((data_dir / "state.json").read_text())
    pids = {state["supervisor_pid"], state["etcd"]["pid"], (state["gateway"] or {}).get("pid")}
    pids |= {b["pid"] for b in state["brokers"] if b["pid"]}
    return pids - {None}


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie nobody reaped yet does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def write_config(path: Path, data_dir: Path, base_port: int, brokers: int) -> Path:
    path.write_text(
        "[cluster]\n"
        f"brokers = {brokers}\n"
        f"base_port = {base_port}\n"
        f'data_dir = "{data_dir}"\n'
        "default_partitions = 3\n"
        "lease_ttl_s = 2\n"
    )
    return path


def reap(root: Path) -> list[int]:
    """SIGKILL every process whose command line names ``root`` (this test's own directory),
    so a failing test leaves nothing behind; the PIDs it had to kill."""
    needle = str(root).encode()
    killed = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if needle in cmdline and alive(int(entry.name)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)
                killed.append(int(entry.name))
    return killed
