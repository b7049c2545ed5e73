"""The installed ``tidelog`` executable end to end, as a user runs it: ``tidelog serve`` as a
process, the README's quick start command by command, and the error paths."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tidelog import __version__
from tidelog.testing import BrokerThread

from .helpers import DEADLINE_S, TIDELOG, PtyProcess, ServeProcess, free_port, subprocess_env

README = Path(__file__).resolve().parents[2] / "README.md"

pytestmark = pytest.mark.skipif(not TIDELOG.exists(), reason="tidelog is not installed")


@dataclass
class Step:
    command: str
    expected: list[str] = field(default_factory=list)


def quick_start() -> list[Step]:
    """The ``$ command`` lines (and the output lines shown under them) of the console blocks
    in README's Quick start section."""
    text = README.read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    steps: list[Step] = []
    for block in re.findall(r"```console\n(.*?)```", section, re.S):
        for line in block.splitlines():
            if line.startswith("$ "):
                steps.append(Step(line[2:]))
            elif line.strip():
                steps[-1].expected.append(line.strip())
    return steps


def test_the_readme_quick_start_works(tmp_path: Path) -> None:
    steps = quick_start()
    commands = [s.command.split("#")[0].split() for s in steps]
    assert commands[0][:2] == ["tidelog", "serve"], "the quick start begins with a broker"
    for word in ("topic", "produce", "consume", "tail"):
        assert any(word in c for c in commands), f"the quick start shows no `tidelog {word}`"

    server = ServeProcess(tmp_path, *commands[0][2:])  # its own port: TIDELOG_PORT=0
    try:
        address = server.wait_ready()
        env = subprocess_env(TIDELOG_BROKER=address)
        for step in steps[1:]:
            if step.command.startswith("tidelog tail"):
                term = PtyProcess(["bash", "-c", step.command], env, cwd=tmp_path)
                try:
                    term.expect("following", *step.expected)
                    term.interrupt()
                    assert term.wait() == 0, term.text
                finally:
                    term.kill()
                continue
            done = subprocess.run(
                ["bash", "-c", step.command],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=DEADLINE_S,
                check=False,
            )
            assert done.returncode == 0, f"{step.command}\n{done.stdout}{done.stderr}"
            for line in step.expected:
                assert line in done.stdout, f"{step.command}: {line!r} not in\n{done.stdout}"
    finally:
        assert server.stop() == 0, server.output()
    assert "broker stopped cleanly" in server.output()


def tidelog(address: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``tidelog --broker ADDRESS ARGS`` as a subprocess, with a deadline."""
    return subprocess.run(
        [str(TIDELOG), "--broker", address, *args],
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        check=False,
    )


@pytest.mark.storage_bound
def test_serve_banner_and_graceful_sigterm(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = ServeProcess(tmp_path, "--data-dir", str(data))
    address = first.wait_ready()
    created = tidelog(address, "topic", "create", "orders")
    assert created.returncode == 0, created.stderr
    assert first.stop() == 0

    again = ServeProcess(tmp_path, "--data-dir", str(data))  # the topic survived
    address = again.wait_ready()
    assert again.stop() == 0
    banner = again.output()
    assert f"tidelog {__version__} listening on {address}" in banner
    assert f"data dir  {data}" in banner
    assert "topics    1 (orders)" in banner


@pytest.mark.storage_bound
def test_serve_with_memory_storage_writes_no_file_and_forgets_on_restart(tmp_path: Path) -> None:
    for _ in range(2):
        server = ServeProcess(tmp_path, "--storage", "memory")
        address = server.wait_ready()
        listed = tidelog(address, "topic", "list")
        created = tidelog(address, "topic", "create", "orders")
        assert server.stop() == 0, server.output()
        assert created.returncode == 0, created.stderr
        assert "orders" not in listed.stdout, "a restarted memory broker starts empty"
        assert "storage   memory: nothing is kept when the broker stops" in server.output()
    assert list(tmp_path.iterdir()) == [], "not even the default data dir is created"


def test_serve_errors(tmp_path: Path, tidelog_broker: BrokerThread) -> None:
    def serve(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(TIDELOG), "serve", "--data-dir", str(tmp_path / "d"), *args],
            env=subprocess_env(**env),
            capture_output=True,
            text=True,
            timeout=DEADLINE_S,
            check=False,
        )

    busy = serve("--port", str(tidelog_broker.port))
    assert busy.returncode == 1
    assert "cannot start the broker" in busy.stderr and "another --port" in busy.stderr
    bad = serve(TIDELOG_PORT="seven")
    assert bad.returncode == 2
    assert "TIDELOG_PORT" in bad.stderr
    for result in (busy, bad):
        assert "Traceback" not in result.stderr


def test_broker_down_from_the_executable() -> None:
    address = f"127.0.0.1:{free_port()}"
    done = subprocess.run(
        [str(TIDELOG), "consume", "events"],
        env=subprocess_env(TIDELOG_BROKER=address),
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        check=False,
    )
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f"tidelog: cannot reach broker at {address} — is `tidelog serve` running? "
        "(point --broker or TIDELOG_BROKER at it)"
    ]
