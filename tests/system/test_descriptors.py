"""File descriptors at start: the broker raises its soft limit, and refuses to start, naming
the limit and the fix, when its logs alone would exhaust it (issue 13, point 5)."""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from pathlib import Path

from tidelog.server.log import LogManager

from .procs import BrokerProcess

RUN_TIMEOUT_S = 60.0


def limited(soft: int, hard: int) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_broker_raises_its_soft_limit_to_the_hard_one(tmp_path: Path) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    soft = min(hard, 512) // 2
    with BrokerProcess(tmp_path, preexec=lambda: limited(soft, hard)) as broker:
        wanted = (
            f"raised the file descriptor limit from {soft} to {hard}",
            f"the limit is {hard}, which leaves room for",
        )
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while not all(w in "".join(broker.stderr_lines) for w in wanted):
            # stderr is read by another thread: poll for the lines, bounded by a deadline
            assert time.monotonic() < deadline, "".join(broker.stderr_lines)
            time.sleep(0.01)
        assert broker.terminate() == 0


def test_a_broker_whose_partitions_exceed_the_limit_refuses_to_start(tmp_path: Path) -> None:
    with LogManager(tmp_path) as logs:
        logs.create_topic("wide", 300)
    proc = subprocess.run(
        [sys.executable, "-m", "tidelog.server", "--port", "0", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        preexec_fn=lambda: limited(200, 200),
    )
    assert proc.returncode == 1
    assert "300 partitions" in proc.stderr
    assert "may hold only 200" in proc.stderr
    assert "ulimit -n" in proc.stderr
