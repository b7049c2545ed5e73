"""A real Prometheus server (Debian's ``prometheus`` package; ``.ci/run`` installs it) scrapes a
broker on loopback, and the consumer-group lag is read back through Prometheus's HTTP API."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tidelog.client import AdminClient, Producer
from tidelog.testing import BrokerThread

PROMETHEUS = shutil.which("prometheus")
DEADLINE_S = 60.0
RECORDS = 30
COMMITTED = 12

pytestmark = pytest.mark.skipif(
    PROMETHEUS is None and not os.environ.get("CI"),
    reason="the prometheus binary is missing (apt-get install prometheus; .ci/run does, and "
    "under CI this test fails instead)",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def prometheus(
    tmp_path: Path, tidelog_broker_factory: Callable[..., BrokerThread]
) -> Iterator[tuple[str, BrokerThread]]:
    """(Prometheus's address, the broker it scrapes every 200 ms)."""
    broker = tidelog_broker_factory(admin_port=-1)
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 200ms\n  evaluation_interval: 200ms\n"
        "scrape_configs:\n  - job_name: tidelog\n"
        f"    static_configs:\n      - targets: ['{broker.admin_address}']\n"
    )
    address = f"127.0.0.1:{free_port()}"
    assert PROMETHEUS is not None
    log = (tmp_path / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address={address}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield address, broker
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def query(address: str, promql: str) -> list[dict[str, object]]:
    """The result vector of an instant query ([] until Prometheus is up and has scraped)."""
    try:
        response = httpx.get(f"http://{address}/api/v1/query", params={"query": promql})
    except httpx.TransportError:
        return []
    if response.status_code != 200:
        return []
    result: list[dict[str, object]] = response.json()["data"]["result"]
    return result


def test_prometheus_scrapes_the_lag_the_broker_computes(
    prometheus: tuple[str, BrokerThread],
) -> None:
    address, broker = prometheus

    async def setup() -> None:
        async with AdminClient(broker.address) as admin:
            await admin.create_topic("payments", 1)
        async with Producer(broker.address) as producer:
            for i in range(RECORDS):
                await producer.send("payments", str(i).encode())
            await producer.flush()
        async with AdminClient(broker.address) as admin:
            await admin.reset_offsets("ledger", "payments", to=COMMITTED)

    asyncio.run(setup())
    promql = 'tidelog_consumer_group_lag{group="ledger",topic="payments",partition="0"}'
    deadline = time.monotonic() + DEADLINE_S
    found: list[dict[str, object]] = []
    while time.monotonic() < deadline:  # poll until Prometheus has scraped once since setup
        found = query(address, promql)
        if found:
            break
        time.sleep(0.2)  # the poll's pace, not a synchronisation: the loop checks the result
    assert found, f"no {promql} series in Prometheus within {DEADLINE_S}s"
    value = found[0]["value"]
    assert isinstance(value, list)
    assert float(value[1]) == RECORDS - COMMITTED
    records_in = query(address, 'tidelog_records_in_total{topic="payments"}')
    assert float(records_in[0]["value"][1]) == RECORDS  # type: ignore[index]
