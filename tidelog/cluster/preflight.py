"""What ``tidelog cluster up`` checks before it starts anything, so a bad start leaves nothing
running: one supervisor per data dir (an advisory lock, released by the kernel when the
supervisor dies, so a crash never leaves a stale lock), and free ports.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path
from typing import IO, Final

from .config import ClusterConfig

LOCK_FILE: Final = "supervisor.lock"


class ClusterError(Exception):
    """A cluster operation cannot be done; ``str()`` is the line shown to the operator."""


def already_running(data_dir: Path) -> ClusterError:
    pid = read_lock_pid(data_dir)
    owner = f" (supervisor pid {pid})" if pid else ""
    return ClusterError(
        f"a cluster is already running from {data_dir}{owner}: use `tidelog cluster status "
        f"--data-dir {data_dir}`, or stop it with `tidelog cluster down --data-dir {data_dir}`"
    )


def read_lock_pid(data_dir: Path) -> int:
    try:
        text = (data_dir / LOCK_FILE).read_text().strip()
    except OSError:
        return 0
    return int(text) if text.isdigit() else 0


class DataDirLock:
    """An exclusive ``flock`` on ``data_dir/supervisor.lock`` holding the owner's PID."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._file: IO[str] | None = None

    def acquire(self) -> DataDirLock:
        """Raises :class:`ClusterError` naming the running supervisor when it is held."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        file = open(self.data_dir / LOCK_FILE, "a+")  # noqa: SIM115 (held until release)
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.close()
            raise already_running(self.data_dir) from None
        file.truncate(0)
        file.write(f"{os.getpid()}\n")
        file.flush()
        self._file = file
        return self

    @property
    def held(self) -> bool:
        return self._file is not None

    def release(self) -> None:
        if self._file is not None:
            self._file.truncate(0)
            self._file.close()  # closing drops the flock
            self._file = None


def is_locked(data_dir: Path) -> bool:
    """Whether a live supervisor holds ``data_dir``'s lock (probed without keeping it)."""
    path = data_dir / LOCK_FILE
    if not path.exists():
        return False
    with open(path) as file:
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(file, fcntl.LOCK_UN)
    return False


def port_free(host: str, port: int) -> bool:
    """Whether nothing listens on ``host:port`` (SO_REUSEADDR as the broker binds, so sockets
    left in TIME_WAIT by a broker that just stopped do not count)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def check_ports(
    config: ClusterConfig,
    broker_ids: range | list[int] | None = None,
    gateway: bool | None = None,
) -> None:
    """Raise :class:`ClusterError` for the first broker, admin or gateway port that is taken
    (the gateway's by default only when every broker's is checked, as at ``up``)."""
    if gateway is None:
        gateway = broker_ids is None and config.gateway
    if gateway and not port_free(config.host, config.http_port):
        raise ClusterError(
            f"HTTP port {config.http_port} of the gateway is already in use on "
            f"{config.host}: stop what listens there, or pick --gateway-port or --no-gateway"
        )
    for broker_id in broker_ids if broker_ids is not None else config.broker_ids:
        for kind, port in (
            ("port", config.port(broker_id)),
            ("admin port", config.admin_port(broker_id)),
        ):
            if not port_free(config.host, port):
                raise ClusterError(
                    f"{kind} {port} of broker {broker_id} is already in use on {config.host}: "
                    "stop what listens there or pick another --base-port"
                )
