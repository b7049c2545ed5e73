"""``tidelog subscription ...`` against a real gateway and a real receiver; the hosts
``tidelog gateway`` and ``tidelog serve`` let webhooks call (``--webhook-allowed-hosts``,
``--http-webhook-allowed-hosts``, env ``TIDELOG_WEBHOOK_ALLOWED_HOSTS``)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from typer.testing import CliRunner

from tests.cli.helpers import ServeProcess, subprocess_env
from tidelog.cli.main import app

from .conftest import TIMEOUT_S, assert_error, eventually
from .receiver import Receiver
from .test_webhooks import make_topic, produce
from .test_webhooks_gateways import GatewayProcess, processes  # noqa: F401  (a fixture)


def test_the_subscription_commands(
    tidelog_gateway: str, receiver_factory: Callable[..., Receiver]
) -> None:
    receiver = receiver_factory()
    runner = CliRunner()

    def run(*args: str) -> str:
        result = runner.invoke(app, ["--json", "subscription", *args, "--gateway", tidelog_gateway])
        assert result.exit_code == 0, result.output
        return result.stdout

    with httpx.Client(base_url=tidelog_gateway) as http:
        make_topic(http, "orders")
        produce(http, "orders", [{"value": i} for i in range(3)])
    created = json.loads(
        run("create", "hook", "--topic", "orders", "--url", receiver.url, "--start", "earliest")
    )
    assert created["state"] == "active" and created["topic"] == "orders"
    eventually(lambda: len(receiver.acked()) == 3, "3 delivered")
    assert [s["name"] for s in json.loads(run("list"))] == ["hook"]
    eventually(
        lambda: json.loads(run("status", "hook"))["partitions"][0]["position"] == 3, "committed"
    )
    human = runner.invoke(app, ["subscription", "status", "hook", "--gateway", tidelog_gateway])
    assert human.exit_code == 0, human.output
    assert "orders → " in human.stdout and "[active]" in human.stdout
    assert "deliveries 3, failures 0, dead letters 0, filtered 0" in human.stdout
    assert "last error: none" in human.stdout
    assert json.loads(run("pause", "hook"))["state"] == "paused"
    assert json.loads(run("resume", "hook"))["state"] == "active"
    assert json.loads(run("replay", "hook", "--offset", "1"))["generation"] == 1
    eventually(lambda: len(receiver.acked()) == 5, "offsets 1-2 again")
    run("delete", "hook")
    assert json.loads(run("list")) == []
    refused = runner.invoke(
        app,
        [
            "subscription",
            "create",
            "x",
            "--topic",
            "orders",
            "--url",
            "http://example.com/",
            "--gateway",
            tidelog_gateway,
        ],
    )
    assert refused.exit_code == 1
    assert "host_not_allowed" in refused.output


def only_listed_hosts_are_allowed(gateway_url: str) -> None:
    with httpx.Client(base_url=gateway_url, timeout=TIMEOUT_S) as http:
        make_topic(http, "orders")  # no records: nothing is ever sent to the listed hosts
        for name, host in (("by-name", "hooks.internal"), ("by-address", "10.255.255.1")):
            body = {"name": name, "url": f"http://{host}/hook", "topic": "orders"}
            r = http.post("/v1/subscriptions", json=body)
            assert r.status_code == 201, r.text
            assert http.delete(f"/v1/subscriptions/{name}").status_code == 204
        refused = {"name": "other", "url": "http://10.255.255.2/hook", "topic": "orders"}
        assert_error(http.post("/v1/subscriptions", json=refused), 400, "host_not_allowed")


def test_tidelog_gateway_allows_the_hosts_it_is_given(
    tidelog_broker: Any,
    processes: list[GatewayProcess],  # noqa: F811
) -> None:
    listed = "hooks.internal, 10.255.255.1"
    processes.append(GatewayProcess(tidelog_broker.address, "--webhook-allowed-hosts", listed))
    only_listed_hosts_are_allowed(processes[0].url)


def test_tidelog_serve_takes_the_allowed_hosts_from_its_environment(tmp_path: Path) -> None:
    env = subprocess_env(TIDELOG_PORT="0", TIDELOG_STORAGE="memory")
    env["TIDELOG_WEBHOOK_ALLOWED_HOSTS"] = "hooks.internal,10.255.255.1"
    serve = ServeProcess(tmp_path, env=env)
    try:
        serve.wait_ready()
        url: list[str] = []

        def banner() -> bool:
            url[:] = re.findall(r"^\s+http\s+(http://\S+)", serve.output(), re.MULTILINE)
            return bool(url)

        eventually(banner, "the gateway's line in the banner")
        only_listed_hosts_are_allowed(url[0])
    finally:
        serve.stop()
