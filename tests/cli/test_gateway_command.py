"""``tidelog gateway`` and the gateway beside ``tidelog serve``, as a user runs them."""

from __future__ import annotations

import re
import socket
import subprocess
from pathlib import Path

import httpx

from tests.gateway.conftest import eventually
from tidelog.testing import BrokerThread

from .helpers import DEADLINE_S, TIDELOG, ServeProcess, subprocess_env


def test_serve_runs_the_gateway_beside_the_broker(tmp_path: Path) -> None:
    server = ServeProcess(tmp_path)  # TIDELOG_HTTP_PORT=0: an ephemeral port
    try:
        server.wait_ready()
        eventually(lambda: "API docs" in server.output(), "the banner's http line")
        match = re.search(r"http\s+(http://\S+)", server.output())
        assert match, server.output()
        ready = httpx.get(match.group(1) + "/ready", timeout=DEADLINE_S)
        assert ready.json() == {"status": "ready", "brokers": 1}
    finally:
        assert server.stop() == 0


def test_serve_without_http(tmp_path: Path) -> None:
    server = ServeProcess(tmp_path, "--no-http")
    try:
        server.wait_ready()
        eventually(lambda: "(--no-http)" in server.output(), "the banner's http line")
    finally:
        assert server.stop() == 0


def test_a_busy_http_port_is_a_clean_error(tmp_path: Path, tidelog_broker: BrokerThread) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        for args in (
            ["serve", "--port", "0", "--http-port", port],
            ["gateway", "--broker", tidelog_broker.address, "--http-port", port],
        ):
            done = subprocess.run(
                [str(TIDELOG), *args],
                cwd=tmp_path,
                env=subprocess_env(),
                capture_output=True,
                text=True,
                timeout=DEADLINE_S,
                check=False,
            )
            assert done.returncode == 1, done.stderr
            assert "cannot start the HTTP gateway" in done.stderr
            assert "--http-port" in done.stderr and "Traceback" not in done.stderr


def test_a_limit_out_of_range_is_a_usage_error(
    tidelog_broker: BrokerThread, tmp_path: Path
) -> None:
    _a_usage_error(tmp_path, "gateway", "--broker", tidelog_broker.address, "--max-body-bytes", "0")


def test_serve_passes_its_http_limits_to_the_gateway(tmp_path: Path) -> None:
    server = ServeProcess(tmp_path, "--storage", "memory", "--http-max-produce-records", "2")
    try:
        server.wait_ready()
        eventually(lambda: "API docs" in server.output(), "the banner's http line")
        match = re.search(r"http\s+(http://\S+)", server.output())
        assert match, server.output()
        with httpx.Client(base_url=match.group(1), timeout=DEADLINE_S) as http:
            assert http.post("/v1/topics", json={"name": "t"}).status_code == 201
            three = {"records": [{"value": i} for i in range(3)]}
            answer = http.post("/v1/topics/t/records", json=three)
            assert answer.status_code == 413, answer.text
            assert answer.json()["error_code"] == "too_many_records"
    finally:
        assert server.stop() == 0


def test_serve_refuses_an_http_limit_out_of_range(tmp_path: Path) -> None:
    _a_usage_error(tmp_path, "serve", "--storage", "memory", "--http-max-body-bytes", "0")


def _a_usage_error(cwd: Path, *args: str) -> None:
    done = subprocess.run(
        [str(TIDELOG), *args],
        cwd=cwd,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "max_body_bytes must be > 0" in done.stderr
