"""Running the CLI in tests: in-process with typer's CliRunner, or as the installed
``tidelog`` executable (a subprocess, optionally on a pseudo-terminal)."""

from __future__ import annotations

import asyncio
import fcntl
import os
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

from typer.testing import CliRunner, Result

from tidelog.cli.main import app
from tidelog.testing import default_storage

T = TypeVar("T")
DEADLINE_S = 30.0
TIDELOG = Path(sys.executable).with_name("tidelog")
_ANSI = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07]*\x07|[@-Z\\-_])")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, DEADLINE_S))


def cli(broker: str | None, *args: str, input: str | bytes | None = None) -> Result:
    """``tidelog --broker BROKER ARGS...`` in-process."""
    prefix = ["--broker", broker] if broker else []
    return CliRunner().invoke(app, [*prefix, *args], input=input)


def free_port() -> int:
    """A port nothing listens on (for the broker-down tests)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{TIDELOG.parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("TIDELOG_BROKER", None)
    if default_storage() != "disk":  # for the brokers `tidelog serve` starts
        env["TIDELOG_STORAGE"] = default_storage()
    env.setdefault("TIDELOG_HTTP_PORT", "0")  # `tidelog serve`'s gateway: never the fixed 8080
    env.update(extra)
    return env


class ServeProcess:
    """``tidelog serve`` as a subprocess on an ephemeral port; stopped by its PID."""

    def __init__(self, cwd: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [str(TIDELOG), "serve", *args],
            cwd=cwd,
            env=env or subprocess_env(TIDELOG_PORT="0"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self.address = ""
        self._ready = threading.Event()
        assert self.proc.stderr is not None
        threading.Thread(target=self._read, args=(self.proc.stderr,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.append(line)
            match = re.search(r"tidelog \S+ listening on (\S+)", line)
            if match:
                self.address = match.group(1)
                self._ready.set()
        self._ready.set()

    def wait_ready(self) -> str:
        assert self._ready.wait(DEADLINE_S), "tidelog serve did not start"
        assert self.address, f"tidelog serve failed: {''.join(self.lines)}"
        return self.address

    def stop(self) -> int:
        """SIGTERM (a graceful shutdown), then its exit code."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
        code = self.proc.wait(DEADLINE_S)
        self.proc.stdout and self.proc.stdout.close()
        self.proc.stderr and self.proc.stderr.close()
        return code

    def output(self) -> str:
        return "".join(self.lines)


class PipedProcess:
    """A command with its standard streams on pipes (as a service manager or a script runs
    it). Its output is read as it comes; :meth:`wait_for_lines` waits (with a deadline) for
    lines to show."""

    def __init__(self, args: Sequence[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            list(args),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,  # signals from the test go to this process only
        )
        self.out = b""
        self.err = b""

    @property
    def lines(self) -> list[str]:
        return self.out.decode().splitlines()

    def _read(self, timeout: float) -> bool:
        """Read what is there on stdout and stderr (waiting up to ``timeout``); False once
        both are at their end."""
        streams = [s for s in (self.proc.stdout, self.proc.stderr) if s is not None]
        ready, _, _ = select.select(streams, [], [], timeout)
        for stream in ready:
            data = os.read(stream.fileno(), 65536)
            if not data:
                stream.close()
                if stream is self.proc.stdout:
                    self.proc.stdout = None
                else:
                    self.proc.stderr = None
            elif stream is self.proc.stdout:
                self.out += data
            else:
                self.err += data
        return self.proc.stdout is not None or self.proc.stderr is not None

    def wait_for_lines(self, count: int) -> list[str]:
        """Wait until standard output has at least ``count`` lines; returns them all."""
        deadline = time.monotonic() + DEADLINE_S
        while self.out.count(b"\n") < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._read(min(remaining, 0.5)):
                raise AssertionError(
                    f"{count} lines did not come; stdout:\n{self.out!r}\nstderr:\n{self.err!r}"
                )
        return self.lines

    def wait_until_blocked_on_stdout(self) -> None:
        """Stop reading its output and wait (with a deadline) until the pipe is full, so that
        it is blocked writing: a stalled reader downstream."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        capacity = fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)
        deadline = time.monotonic() + DEADLINE_S
        while _unread(fd) < capacity:
            assert time.monotonic() < deadline, "the command never filled its output pipe"
            time.sleep(0.01)  # polling a condition, with a deadline

    def write(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def signal(self, signum: int) -> None:
        os.kill(self.proc.pid, signum)

    def wait(self) -> int:
        """Read the output to its end and return the exit code (standard input stays open
        until then: the command must not need its end to stop)."""
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline and self._read(deadline - time.monotonic()):
            pass
        code = self.proc.wait(DEADLINE_S)
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(DEADLINE_S)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def _unread(fd: int) -> int:
    """Bytes waiting in the pipe ``fd`` reads from."""
    buf = fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0")
    return int(struct.unpack("i", buf)[0])


class PtyProcess:
    """A command on a pseudo-terminal (so it sees a terminal, as a person's shell would).

    Its output is read as it comes; :meth:`expect` waits (with a deadline) for text to show.
    """

    def __init__(
        self,
        args: Sequence[str],
        env: dict[str, str],
        cwd: Path | None = None,
        rows: int = 30,
        cols: int = 120,
    ) -> None:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        env = {**env, "TERM": "xterm-256color", "COLUMNS": str(cols), "LINES": str(rows)}
        self.proc = subprocess.Popen(
            list(args),
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            cwd=cwd,
            start_new_session=True,  # signals from the test go to this process only
            close_fds=True,
        )
        os.close(slave)
        self.master = master
        self.raw = b""

    @property
    def text(self) -> str:
        return strip_ansi(self.raw.decode(errors="replace"))

    def _read(self, timeout: float) -> bool:
        """Read what is there (waiting up to ``timeout``); False at end of output."""
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return True
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: the child closed the terminal
            return False
        self.raw += data
        return bool(data)

    def expect(self, *needles: str, timeout: float = DEADLINE_S) -> str:
        """Wait until every needle has appeared in the output; returns the output."""
        deadline = time.monotonic() + timeout
        while not all(n in self.text for n in needles):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._read(min(remaining, 0.5)):
                missing = [n for n in needles if n not in self.text]
                raise AssertionError(f"{missing} did not appear; output so far:\n{self.text}")
        return self.text

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def interrupt(self) -> None:
        os.kill(self.proc.pid, signal.SIGINT)

    def wait_until_asleep(self) -> None:
        """Wait (with a deadline) until the process sleeps: after a prompt has shown, it is
        blocked reading the terminal. A signal that lands between Python's last check for
        signals and that read() would only be handled after the read returns (CPython's
        input() has no wake-up for it), so tests of a signal at a prompt wait for this."""
        stat = Path(f"/proc/{self.proc.pid}/stat")
        deadline = time.monotonic() + DEADLINE_S
        while stat.read_text().rpartition(")")[2].split()[0] != "S":
            assert time.monotonic() < deadline, "the process never waited for input"
            time.sleep(0.01)  # polling a condition, with a deadline

    def wait(self) -> int:
        """Read the output to its end and return the exit code."""
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline and self._read(0.5):
            if self.proc.poll() is not None and not select.select([self.master], [], [], 0)[0]:
                break
        code = self.proc.wait(DEADLINE_S)
        os.close(self.master)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(DEADLINE_S)
