"""Brokers as real processes, for tests that kill them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

START_TIMEOUT_S = 60.0


class BrokerProcess:
    """``python -m tidelog.server`` on an ephemeral loopback port; stopped by PID."""

    def __init__(
        self,
        data_dir: Path,
        *extra: str,
        preexec: Callable[[], None] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        """``preexec`` runs in the child before it starts (e.g. to set resource limits);
        ``env`` is added to this process's environment for the child."""
        self.data_dir = data_dir
        self.extra = extra
        self.preexec = preexec
        self.env = env
        self.proc: subprocess.Popen[str] | None = None
        self.address = ""
        self.admin_address: str | None = None
        """``host:port`` of the admin HTTP port, when on (``--admin-port -1``: a free one)."""
        self.stderr_lines: list[str] = []

    def start(self) -> BrokerProcess:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tidelog.server",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--data-dir",
                str(self.data_dir),
                *(() if "--admin-port" in self.extra else ("--admin-port", "0")),
                *self.extra,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=self.preexec,
            env=None if self.env is None else {**os.environ, **self.env},
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        drain = threading.Thread(target=self._drain, args=(self.proc.stderr,), daemon=True)
        drain.start()
        found = threading.Event()

        def read_banner() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                if "admin HTTP on" in line:
                    self.admin_address = line.rsplit(" ", 1)[1].strip()
                if "listening on" in line:
                    self.address = line.rsplit(" ", 1)[1].strip()
                    found.set()
                    return

        threading.Thread(target=read_banner, daemon=True).start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not found.wait(0.05):
            exited = self.proc.poll() is not None
            if exited or time.monotonic() > deadline:
                self.kill()
                if exited:
                    drain.join(START_TIMEOUT_S)  # its last words
                self.close()
                raise AssertionError(f"broker did not start: {''.join(self.stderr_lines)}")
        return self

    def _drain(self, stream: IO[str]) -> None:
        for line in stream:
            self.stderr_lines.append(line)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(START_TIMEOUT_S)

    def terminate(self) -> int:
        """SIGTERM, then wait for the exit code."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGTERM)
        return self.proc.wait(START_TIMEOUT_S)

    def __enter__(self) -> BrokerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """SIGKILL (if still running) and close the pipes."""
        self.kill()
        if self.proc is not None:
            for stream in (self.proc.stdout, self.proc.stderr):
                if stream is not None:
                    stream.close()
