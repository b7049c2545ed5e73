"""Running a cluster: in the foreground with the console, or detached (a background supervisor
process, ``python -m tidelog.cluster``, steered through its control socket); and stopping one.

The detached supervisor tells the ``up`` that started it how the start went on a pipe: progress
lines, then ``READY <status JSON>`` or ``ERROR <why>``; it then points its standard output at
its log, so the ``up`` can exit while the cluster runs on.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, Final

from rich.console import Console

from tidelog.etcd import EtcdNotInstalledError, etcd_binary

from . import render
from .config import ClusterConfig, from_json, to_json
from .console import ClusterConsole, Notices
from .control import ControlServer, request
from .preflight import ClusterError, already_running, check_ports, is_locked, read_lock_pid
from .procs import STOP_GRACE_S, log_tail
from .state import StateFile
from .supervisor import Supervisor

READY: Final = "READY "
ERROR: Final = "ERROR "
DOWN_TIMEOUT_S: Final = 60.0
SUPERVISOR_LOG: Final = Path("logs") / "supervisor.log"


def preflight(config: ClusterConfig) -> None:
    """The checks that need nothing started: a free data dir, free ports, and the etcd binary
    unless an etcd is given."""
    if is_locked(config.data_dir):
        raise already_running(config.data_dir)
    check_ports(config)
    if not config.etcd:
        try:
            etcd_binary()
        except EtcdNotInstalledError as exc:
            raise ClusterError(f"{exc}; or use a running etcd with --etcd HOST:PORT") from None


def _what(config: ClusterConfig) -> str:
    brokers = f"{config.brokers} broker{'s' if config.brokers != 1 else ''}"
    gateway = f" and the HTTP gateway on port {config.http_port}" if config.gateway else ""
    if config.etcd:
        return f"{brokers}{gateway} (etcd at {','.join(config.etcd)})"
    return f"etcd, {brokers}{gateway}"


STOP_SIGNALS: Final = (signal.SIGTERM, signal.SIGHUP)
"""Besides Ctrl-C: SIGTERM, and SIGHUP (the terminal closed). The brokers run in sessions of
their own, so a supervisor that died by these would leave them running: it stops them first."""


def _interrupt_on_stop_signals() -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)  # one shutdown is enough
        raise KeyboardInterrupt

    for sig in STOP_SIGNALS:
        signal.signal(sig, handler)


def foreground(config: ClusterConfig, out: Console) -> None:
    """``up``: start the cluster, print it, run the console until quit, Ctrl-C or SIGTERM (or a
    ``tidelog cluster down`` from elsewhere), then stop everything."""
    preflight(config)
    notices = Notices(out)
    supervisor = Supervisor(config, notify=notices)
    _interrupt_on_stop_signals()
    control: ControlServer | None = None
    try:
        out.print(f"starting {_what(config)} in {config.data_dir} ...")
        supervisor.up()
        control = ControlServer(supervisor, on_down=lambda: os.kill(os.getpid(), signal.SIGINT))
        control.start()
        render.print_status(out, supervisor.status())
        ClusterConsole(supervisor, out, notices).run()
    except KeyboardInterrupt:
        out.print()
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the stop
        out.print("stopping the cluster ...")
        if control is not None:
            control.close()
        supervisor.shutdown()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        out.print("stopped")


def detach(config: ClusterConfig, progress: Callable[[str], None]) -> dict[str, Any]:
    """``up --detach``: start a background supervisor and return its first status once every
    broker serves; :class:`ClusterError` (and nothing left running) when the start fails."""
    preflight(config)
    log_path = config.data_dir / SUPERVISOR_LOG
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tidelog.cluster", json.dumps(to_json(config))],
            stdout=subprocess.PIPE,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            text=True,
        )
    assert proc.stdout is not None
    with proc.stdout:
        for line in proc.stdout:
            if line.startswith(READY):
                status: dict[str, Any] = json.loads(line[len(READY) :])
                return status
            if line.startswith(ERROR):
                proc.wait()
                raise ClusterError(line[len(ERROR) :].strip())
            progress(line.rstrip("\n"))
    code = proc.wait()
    raise ClusterError(
        f"the supervisor exited ({code}) before the cluster ran: {log_tail(log_path)}"
    )


def daemon(argv: list[str]) -> int:
    """The background supervisor (``python -m tidelog.cluster CONFIG_JSON``)."""
    config = from_json(json.loads(argv[0]))
    stop = threading.Event()

    def log(message: str) -> None:
        sys.stderr.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")
        sys.stderr.flush()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for sig in (*STOP_SIGNALS, signal.SIGINT):
        signal.signal(sig, request_stop)
    supervisor = Supervisor(config, notify=log)
    control: ControlServer | None = None
    try:
        print(f"starting {_what(config)} in {config.data_dir} ...", flush=True)
        supervisor.up()
        control = ControlServer(supervisor, on_down=stop.set).start()
        log(f"cluster running; supervisor pid {os.getpid()}")
        print(READY + json.dumps(supervisor.status()), flush=True)
        os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # the `up` that waited may go
        while not stop.wait(1.0):
            pass
        log("stopping the cluster")
        return 0
    except ClusterError as exc:
        print(ERROR + str(exc), flush=True)
        return 1
    finally:
        if control is not None:
            control.close()
        supervisor.shutdown()
        log("stopped")


def down(data_dir: Path) -> str:
    """Stop the cluster running from ``data_dir`` and wait until its supervisor has exited.
    When the supervisor itself died, stop the processes its state file lists."""
    pid = read_lock_pid(data_dir) if is_locked(data_dir) else 0
    if not pid:
        return stop_orphans(data_dir)
    request(data_dir, {"op": "down"})
    if not wait_exit(pid, DOWN_TIMEOUT_S):
        raise ClusterError(f"the supervisor (pid {pid}) is still running after {DOWN_TIMEOUT_S:g}s")
    return f"cluster in {data_dir} stopped"


def wait_exit(pid: int, timeout: float) -> bool:
    """Wait for ``pid`` (not our child) to exit, on a pidfd: no polling."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        readable, _, _ = select.select([fd], [], [], timeout)
        return bool(readable)
    finally:
        os.close(fd)


def stop_orphans(data_dir: Path) -> str:
    """Processes a dead supervisor left behind: those of its state file whose command line
    still names ``data_dir`` (so a reused PID is never signalled)."""
    state = StateFile(data_dir).read()
    if state is None:
        raise ClusterError(f"no cluster is running from {data_dir}")
    gateway = state.get("gateway") or {}
    pids = [gateway["pid"]] if gateway.get("pid") else []  # the gateway first, as at shutdown
    pids += [b["pid"] for b in state.get("brokers", []) if b.get("pid")]
    if state.get("etcd", {}).get("pid"):
        pids.append(state["etcd"]["pid"])  # etcd last: the brokers leave it first
    stopped = [pid for pid in pids if _ours(pid, data_dir) and _terminate(pid)]
    StateFile(data_dir).remove()
    return f"the supervisor was gone; stopped {len(stopped)} process(es) it left: {stopped}"


def _ours(pid: int, data_dir: Path) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return str(data_dir.resolve()).encode() in cmdline


def _terminate(pid: int) -> bool:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    if not wait_exit(pid, STOP_GRACE_S):
        os.kill(pid, signal.SIGKILL)
        wait_exit(pid, STOP_GRACE_S)
    return True
