"""One supervised child process (a broker): started in a session of its own, so a Ctrl-C at the
terminal reaches the supervisor alone and the supervisor decides the order of shutdown; its
output goes to a log file; a watcher thread waits on it, so a death is reported the moment it
happens, with no polling.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

STOP_GRACE_S: Final = 10.0
"""Seconds a SIGTERMed child gets to shut down before it is SIGKILLed."""


def describe_exit(code: int) -> str:
    """``exit code 1`` or ``killed by SIGKILL``, from a Popen return code."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def log_tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return " | ".join(text.strip().splitlines()[-lines:]) or "(empty log)"


class ChildProcess:
    """``argv`` as a child; ``on_exit(child, code)`` runs on the watcher thread when it ends."""

    def __init__(
        self, argv: Sequence[str], log_path: Path, on_exit: Callable[[ChildProcess, int], None]
    ) -> None:
        self.argv = tuple(argv)
        self.log_path = log_path
        self.on_exit = on_exit
        self.proc: subprocess.Popen[bytes] | None = None
        self.exited = threading.Event()
        self.handled = threading.Event()
        """Set once ``on_exit`` has returned: a ``kill`` returns after the death is reported."""
        self.returncode: int | None = None

    def start(self) -> ChildProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        threading.Thread(target=self._watch, name=f"watch-{self.proc.pid}", daemon=True).start()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and not self.exited.is_set()

    def _watch(self) -> None:
        assert self.proc is not None
        self.returncode = self.proc.wait()
        self.exited.set()
        try:
            self.on_exit(self, self.returncode)
        finally:
            self.handled.set()

    def send(self, signum: int) -> None:
        """Signal the child if it still runs (its PID cannot have been reused: it is ours and
        not yet reaped while ``exited`` is clear)."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signum)

    def kill(self) -> None:
        """SIGKILL; returns once it is gone and its exit handled."""
        self.send(signal.SIGKILL)
        self.handled.wait()

    def terminate(self, grace: float = STOP_GRACE_S) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; returns once it is gone and its exit
        handled."""
        self.send(signal.SIGCONT)  # a stopped process cannot act on SIGTERM
        self.send(signal.SIGTERM)
        if not self.exited.wait(grace):
            self.send(signal.SIGKILL)
        self.handled.wait()
