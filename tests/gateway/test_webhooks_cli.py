"""``tidelog subscription ...`` against a real gateway and a real receiver."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
from typer.testing import CliRunner

from tidelog.cli.main import app

from .conftest import eventually
from .receiver import Receiver
from .test_webhooks import make_topic, produce


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
