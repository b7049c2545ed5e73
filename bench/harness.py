"""Shared bench plumbing: a broker subprocess on a temporary data dir, percentiles, tables.

The broker runs in its own process (as in production), on 127.0.0.1 and an ephemeral port,
and is stopped by PID when the bench ends.
"""

from __future__ import annotations

import contextlib
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any

START_TIMEOUT_S = 60.0


@dataclass
class BrokerProc:
    proc: subprocess.Popen[str]
    address: str
    data_dir: str


def spawn_broker(
    data_dir: str, *args: str, stderr: IO[str] | None = None, env: dict[str, str] | None = None
) -> BrokerProc:
    """Start ``python -m tidelog.server`` on ``data_dir``; returns once it listens. The caller
    stops it by PID. ``env``: the process's environment (default: this one's)."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tidelog.server",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--data-dir",
            data_dir,
            "--log-level",
            "WARNING",
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env=env,
    )
    found = threading.Event()
    address: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "listening on" in line and not address:
                address.append(line.rsplit(" ", 1)[1].strip())
                found.set()

    threading.Thread(target=read, daemon=True).start()
    if not found.wait(START_TIMEOUT_S):
        stop_process(proc)
        raise RuntimeError("the broker did not start")
    return BrokerProc(proc, address[0], data_dir)


@contextlib.contextmanager
def broker_process(
    *args: str,
    stderr: IO[str] | None = None,
    parent: str | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[BrokerProc]:
    """A ``python -m tidelog.server`` process; yields once it listens; SIGTERM at the end.
    Its log goes to ``stderr`` (default: this process's); its data to a temporary directory
    in ``parent`` (default: the system's temporary directory); ``env``: its environment."""
    with tempfile.TemporaryDirectory(prefix="tidelog-bench-", dir=parent) as data_dir:
        broker = spawn_broker(data_dir, *args, stderr=stderr, env=env)
        try:
            yield broker
        finally:
            stop_process(broker.proc, grace=30.0)
            if broker.proc.stdout is not None:
                broker.proc.stdout.close()


def pin_apart(pid: int) -> bool:
    """Put this process on the first CPU and every thread of process ``pid`` (the broker) on
    the second, as if they ran on machines of their own: on a 2-core machine the scheduler
    otherwise lets the broker's threads preempt the client, and a comparison of two client
    settings then measures that contention too. Threads the broker starts later inherit its
    CPU. False (nothing pinned) with fewer than two CPUs."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return False
    os.sched_setaffinity(0, {cpus[0]})
    for task in os.listdir(f"/proc/{pid}/task"):
        os.sched_setaffinity(int(task), {cpus[1]})
    return True


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) of already sorted values, nearest rank."""
    if not sorted_values:
        return float("nan")
    rank = max(0, min(len(sorted_values) - 1, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[rank]


def spread(values: Sequence[float], fmt: str = ",.0f") -> str:
    """``median (min-max)`` of repeated runs."""
    return (
        f"{format(statistics.median(values), fmt)} "
        f"({format(min(values), fmt)}-{format(max(values), fmt)})"
    )


def machine() -> str:
    mem = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/meminfo") as f:
            kib = int(f.readline().split()[1])
        mem = f", {kib / 1024 / 1024:.0f} GiB"
    return (
        f"{os.cpu_count()} cores{mem}, python {platform.python_version()}, "
        f"{platform.machine()}, {time.strftime('%Y-%m-%d')}"
    )


def free_port() -> int:
    """A loopback TCP port that was free a moment ago (for servers that cannot take port 0)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def stop_process(proc: subprocess.Popen[Any], grace: float = 10.0) -> None:
    """SIGTERM by PID, then SIGKILL after ``grace`` seconds; always reaps."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def process_usage(pid: int) -> tuple[float, int]:
    """(RSS in MiB, open file descriptors) of a process, from /proc."""
    rss = 0.0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid``."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Meter:
    """Wall time, this process's CPU and the broker's (``pid``) over a ``with`` block of
    ``records`` records; :meth:`figures` after it."""

    def __init__(self, pid: int, records: int) -> None:
        self.pid = pid
        self.records = records
        self.wall = self.cpu = self.broker = 0.0

    def __enter__(self) -> Meter:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        self.broker = cpu_seconds(self.pid)
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu
        self.broker = cpu_seconds(self.pid) - self.broker

    def figures(self) -> tuple[float, float, float, float]:
        """records/s, client CPU us/record, broker CPU us/record, client idle share (1 - its
        CPU time over the wall time: waiting for the broker, or for a core)."""
        n = self.records
        return n / self.wall, self.cpu / n * 1e6, self.broker / n * 1e6, 1 - self.cpu / self.wall
