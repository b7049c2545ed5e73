"""Webhook subscriptions across gateways: a gateway SIGKILLed mid-delivery and restarted
resumes from the committed position; two gateways share a subscription's partitions and
never deliver one partition at the same time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tidelog.gateway.testing import GatewayThread

from .conftest import eventually
from .receiver import Receiver
from .test_webhooks import make_topic, produce, subscribe

TIMEOUT_S = 60.0
SESSION_TIMEOUT_S = 2.0
"""The dead gateway's partitions go to the new one after this (a group session timeout)."""


class GatewayProcess:
    """``tidelog gateway`` as a process on an ephemeral loopback port; killed by PID."""

    def __init__(self, broker: str, *args: str) -> None:
        script = os.path.join(os.path.dirname(sys.executable), "tidelog")
        self.proc = subprocess.Popen(
            [
                script,
                "gateway",
                "--broker",
                broker,
                "--http-port",
                "0",
                "--webhook-session-timeout-s",
                str(SESSION_TIMEOUT_S),
                "--webhook-commit-interval-s",
                "0.05",
                *args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        found = threading.Event()
        self.url = ""

        def read() -> None:
            assert self.proc.stderr is not None
            for line in self.proc.stderr:
                if "listening on" in line and not found.is_set():
                    self.url = line.split("listening on ", 1)[1].split()[0]
                    found.set()

        self.reader = threading.Thread(target=read, daemon=True)
        self.reader.start()
        if not found.wait(TIMEOUT_S):
            self.kill()
            raise AssertionError("the gateway process did not start")

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(TIMEOUT_S)
        self.reader.join(TIMEOUT_S)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


@pytest.fixture
def processes() -> Iterator[list[GatewayProcess]]:
    started: list[GatewayProcess] = []
    try:
        yield started
    finally:
        for p in started:
            p.kill()


def test_a_gateway_killed_mid_delivery_resumes_from_the_committed_position(
    tidelog_broker: Any,
    receiver_factory: Callable[..., Receiver],
    processes: list[GatewayProcess],
) -> None:
    holding = threading.Event()
    release = threading.Event()

    def policy(body: dict[str, Any], headers: dict[str, str]) -> int:
        if body["offset"] == 10 and not release.is_set():
            holding.set()
            release.wait(TIMEOUT_S)  # in flight while the gateway is killed
        return 200

    receiver = receiver_factory(policy)
    processes.append(GatewayProcess(tidelog_broker.address))
    with httpx.Client(base_url=processes[0].url, timeout=TIMEOUT_S) as gw:
        make_topic(gw, "orders")
        produce(gw, "orders", [{"value": i} for i in range(20)])
        subscribe(gw, "hook", receiver.url, topic="orders")
        assert holding.wait(TIMEOUT_S)
        eventually(
            lambda: gw.get("/v1/subscriptions/hook").json()["partitions"][0]["position"] == 10,
            "offsets 0-9 committed",
        )
    processes[0].kill()
    release.set()  # the receiver takes offset 10, but nobody hears its answer
    processes.append(GatewayProcess(tidelog_broker.address))
    eventually(lambda: len(receiver.acked()) >= 21, "the rest delivered", TIMEOUT_S)
    offsets = [d.where[2] for d in receiver.acked()]
    counts = Counter(offsets)
    assert set(counts) == set(range(20))  # at least once
    assert [o for o, n in counts.items() if n > 1] == [10]  # only the one in flight
    assert counts[10] == 2
    assert offsets == [*range(11), *range(10, 20)]  # in order, from the committed position


def test_two_gateways_share_a_subscription_and_never_deliver_a_partition_at_once(
    tidelog_broker: Any,
    tidelog_gateway_factory: Callable[..., GatewayThread],
    receiver_factory: Callable[..., Receiver],
) -> None:
    receiver = receiver_factory()
    settings = {"webhook_session_timeout_s": SESSION_TIMEOUT_S, "webhook_commit_interval_s": 0.05}
    one = tidelog_gateway_factory(tidelog_broker.address, **settings)
    two = tidelog_gateway_factory(tidelog_broker.address, **settings)
    a = httpx.Client(base_url=one.url, timeout=TIMEOUT_S)
    b = httpx.Client(base_url=two.url, timeout=TIMEOUT_S)
    with a, b:
        make_topic(a, "orders", partitions=4)
        subscribe(a, "hook", receiver.url, topic="orders")

        def owned(c: httpx.Client) -> int:
            r = c.get("/v1/subscriptions/hook")  # 404 until it has read the definition
            return int(r.json()["delivery"]["owned_partitions"]) if r.status_code == 200 else 0

        eventually(lambda: owned(a) + owned(b) == 4 and owned(a) > 0 and owned(b) > 0, "split")
        produce(a, "orders", [{"value": i, "partition": i % 4} for i in range(80)])
        eventually(lambda: len({d.where for d in receiver.acked()}) == 80, "80 delivered")
        both = [c.get("/v1/subscriptions/hook").json()["delivery"]["deliveries"] for c in (a, b)]
        assert all(n > 0 for n in both) and sum(both) == 80
        two.stop()  # its partitions move to the first gateway
        produce(a, "orders", [{"value": i, "partition": i % 4} for i in range(80, 120)])
        eventually(lambda: len({d.where for d in receiver.acked()}) == 120, "120 delivered")
    assert receiver.overlaps == 0
    for offsets in receiver.acked_offsets().values():
        assert sorted(set(offsets)) == list(range(30))
