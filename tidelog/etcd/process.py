"""A local single-member etcd server: what tests and ``tidelog cluster up`` start.

It listens on loopback ports of its own (free ones unless given), keeps its data in a directory
of its own, and is stopped by PID. The binary comes from Debian's ``etcd-server`` package; when
it is missing, :class:`EtcdNotInstalledError` says so.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Final, Self

import httpx

ETCD_BINARY: Final = "etcd"
START_TIMEOUT: Final = 20.0
STOP_TIMEOUT: Final = 5.0
INSTALL_HINT: Final = (
    "the etcd server is not installed: on Debian or Ubuntu run "
    "`apt-get install etcd-server` (or put an `etcd` binary of version 3.4 or later on PATH)"
)


class EtcdNotInstalledError(RuntimeError):
    """No ``etcd`` binary on PATH."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (another process may still take it before us)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def etcd_binary() -> str:
    found = shutil.which(ETCD_BINARY)
    if found is None:
        raise EtcdNotInstalledError(INSTALL_HINT)
    return found


class EtcdProcess:
    """``etcd`` as a child process on loopback: ``with EtcdProcess(path) as etcd: ...``."""

    def __init__(
        self,
        data_dir: Path,
        *,
        client_port: int = 0,
        peer_port: int = 0,
        host: str = "127.0.0.1",
        name: str = "tidelog-etcd",
    ) -> None:
        self.data_dir = Path(data_dir)
        self.host = host
        self.client_port = client_port or free_port(host)
        self.peer_port = peer_port or free_port(host)
        self.name = name
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.client_port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "etcd.log"

    def start(self, timeout: float = START_TIMEOUT) -> Self:
        """Start etcd and wait until it reports healthy; on failure the error quotes its log."""
        binary = etcd_binary()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        client = self.endpoint
        peer = f"http://{self.host}:{self.peer_port}"
        argv = [
            binary,
            "--name", self.name,
            "--data-dir", str(self.data_dir / "member-data"),
            "--listen-client-urls", client,
            "--advertise-client-urls", client,
            "--listen-peer-urls", peer,
            "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"{self.name}={peer}",
            "--logger", "zap",
            "--log-outputs", "stderr",
        ]  # fmt: skip
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"etcd exited with {self.proc.returncode}: {self._log_tail()}")
            if self.healthy():
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"etcd was not healthy within {timeout:g}s: {self._log_tail()}")

    def healthy(self) -> bool:
        try:
            reply = httpx.get(f"{self.endpoint}/health", timeout=1.0)
            return bool(reply.status_code == 200 and reply.json().get("health") == "true")
        except (httpx.HTTPError, ValueError):
            return False

    def signal(self, signum: int) -> None:
        """Send ``signum`` (SIGSTOP, SIGCONT, SIGKILL) to the running etcd."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signum)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after :data:`STOP_TIMEOUT`; waits for the exit."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGCONT)  # a stopped process cannot act on SIGTERM
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def _log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return " | ".join(text.strip().splitlines()[-lines:])

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
