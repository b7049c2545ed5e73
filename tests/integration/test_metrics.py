"""``/metrics``, ``/health`` and ``/ready`` of a real broker under traffic, parsed with the
Prometheus text parser: every family present with its labels, exact values where known."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tidelog.client import AdminClient, Consumer, Producer, QueueConsumer, TopicPartition
from tidelog.server import Broker, BrokerConfig
from tidelog.testing import BrokerThread
from tidelog.wire.records import batch_size_at

RECORDS = 50
TOPIC = "orders"
DASHBOARD = Path(__file__).parents[2] / "docs" / "grafana-dashboard.json"

Samples = dict[str, list[tuple[dict[str, str], float]]]

EXPECTED_FAMILIES = {
    # name (without _total / _bucket): its labels
    "tidelog_requests": {"api", "error"},
    "tidelog_request_duration_seconds": {"api"},
    "tidelog_request_queue_seconds": {"api"},
    "tidelog_request_bytes": {"api"},
    "tidelog_response_bytes": {"api"},
    "tidelog_records_in": {"topic"},
    "tidelog_bytes_in": {"topic"},
    "tidelog_records_out": {"topic"},
    "tidelog_bytes_out": {"topic"},
    "tidelog_fetch_wait_seconds": set(),
    "tidelog_log_size_bytes": {"topic", "partition"},
    "tidelog_log_segments": {"topic", "partition"},
    "tidelog_log_start_offset": {"topic", "partition"},
    "tidelog_log_end_offset": {"topic", "partition"},
    "tidelog_high_watermark": {"topic", "partition"},
    "tidelog_fsync_duration_seconds": set(),
    "tidelog_batches_per_fsync": set(),
    "tidelog_connections": set(),
    "tidelog_connections_refused": {"reason"},
    "tidelog_connection_buffered_bytes_max": set(),
    "tidelog_inflight_requests": set(),
    "tidelog_broker_buffered_request_bytes": set(),
    "tidelog_consumer_group_members": {"group"},
    "tidelog_consumer_group_state": {"group", "state"},
    "tidelog_consumer_group_committed_offset": {"group", "topic", "partition"},
    "tidelog_consumer_group_lag": {"group", "topic", "partition"},
    "tidelog_storage_damage": {"kind"},
    "tidelog_brokers_alive": set(),
    "tidelog_controller_present": set(),
    "tidelog_controller_active": set(),
    "tidelog_partitions_leaderless": set(),
    "tidelog_partitions_led": set(),
    "tidelog_partitions_under_replicated": set(),
    "tidelog_partitions_under_min_isr": set(),
    "tidelog_isr_shrinks": set(),
    "tidelog_isr_expands": set(),
    "tidelog_leader_elections": set(),
    "tidelog_unclean_leader_elections": set(),
    "tidelog_replica_lag_records": set(),  # no series on a single broker: no followers
    "tidelog_build_info": {"version", "broker_id", "cluster_id"},
    "tidelog_start_time_seconds": set(),
}


def scrape(admin: str) -> tuple[Samples, dict[str, set[str]]]:
    """Samples by sample name, and each family's label names (``le`` left out)."""
    text = httpx.get(f"http://{admin}/metrics").text
    samples: Samples = {}
    labels: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        names = labels.setdefault(family.name, set())
        for s in family.samples:
            samples.setdefault(s.name, []).append((s.labels, s.value))
            names.update(k for k in s.labels if k != "le")
    return samples, labels


def value(samples: Samples, name: str, **labels: str) -> float:
    found = [v for lb, v in samples.get(name, []) if all(lb.get(k) == x for k, x in labels.items())]
    assert len(found) == 1, f"{name}{labels}: {found}"
    return found[0]


async def traffic(address: str) -> None:
    """RECORDS records to two partitions (acks=all, so fsyncs run), all consumed by a fetch
    loop, a group that commits 10 of partition 0 and stays a member, and an empty group."""
    async with AdminClient(address) as admin:
        await admin.create_topic(TOPIC, 2)
    async with Producer(address, acks="all") as producer:
        for i in range(RECORDS):
            await producer.send(TOPIC, f"r{i}".encode(), partition=i % 2)
        await producer.flush()
    async with Consumer(address, auto_offset_reset="earliest") as consumer:
        consumer.assign([(TOPIC, 0), (TOPIC, 1)])
        got = 0
        while got < RECORDS:
            batches = await consumer.getmany(timeout=5)
            got += sum(len(b) for b in batches.values())
    async with AdminClient(address) as admin:
        await admin.reset_offsets("idle", TOPIC, to=10, partitions=[0])


async def live_member(address: str, joined: asyncio.Event, done: asyncio.Event) -> None:
    async with Consumer(address, group_id="live", auto_offset_reset="latest") as consumer:
        consumer.subscribe([TOPIC])
        while not consumer.assignment():
            await consumer.getmany(timeout=0.2)
        await consumer.commit({TopicPartition(TOPIC, 1): 5})
        joined.set()
        await done.wait()


def run_with_member(address: str, check: Callable[[], Any]) -> Any:
    """Traffic, then ``check()`` (in a thread) while the group "live" has its member."""

    async def main() -> Any:
        await traffic(address)
        joined, done = asyncio.Event(), asyncio.Event()
        member = asyncio.create_task(live_member(address, joined, done))
        try:
            async with asyncio.timeout(30):
                await joined.wait()
            return await asyncio.to_thread(check)
        finally:
            done.set()
            await member

    return asyncio.run(main())


def test_every_metric_is_exported_with_its_labels_and_exact_values(
    tidelog_broker_factory: Callable[..., BrokerThread],
) -> None:
    broker = tidelog_broker_factory(admin_port=-1)
    samples, labels = run_with_member(broker.address, lambda: scrape(broker.admin_address))
    for name, wanted in EXPECTED_FAMILIES.items():
        assert name in labels, f"{name} missing"
        assert labels[name] == wanted, f"{name}: labels {labels[name]}, not {wanted}"

    assert value(samples, "tidelog_records_in_total", topic=TOPIC) == RECORDS
    assert value(samples, "tidelog_records_out_total", topic=TOPIC) == RECORDS
    assert value(samples, "tidelog_bytes_in_total", topic=TOPIC) == sum(
        value(samples, "tidelog_log_size_bytes", topic=TOPIC, partition=p) for p in "01"
    )
    for p in "01":
        assert value(samples, "tidelog_log_end_offset", topic=TOPIC, partition=p) == RECORDS / 2
        assert value(samples, "tidelog_high_watermark", topic=TOPIC, partition=p) == RECORDS / 2
        assert value(samples, "tidelog_log_start_offset", topic=TOPIC, partition=p) == 0
    # Lag = high watermark - committed, computed by the broker.
    lag = "tidelog_consumer_group_lag"
    assert value(samples, lag, group="idle", topic=TOPIC, partition="0") == RECORDS / 2 - 10
    assert value(samples, lag, group="live", topic=TOPIC, partition="1") == RECORDS / 2 - 5
    committed = "tidelog_consumer_group_committed_offset"
    assert value(samples, committed, group="idle", topic=TOPIC, partition="0") == 10
    assert value(samples, "tidelog_consumer_group_members", group="live") == 1
    assert value(samples, "tidelog_consumer_group_members", group="idle") == 0
    assert value(samples, "tidelog_consumer_group_state", group="idle", state="empty") == 1
    assert value(samples, "tidelog_consumer_group_state", group="idle", state="stable") == 0
    assert value(samples, "tidelog_requests_total", api="produce", error="none") >= 1
    produced = value(samples, "tidelog_request_duration_seconds_count", api="produce")
    assert produced == value(samples, "tidelog_requests_total", api="produce", error="none")
    assert value(samples, "tidelog_fsync_duration_seconds_count") >= 1
    assert value(samples, "tidelog_batches_per_fsync_sum") >= 1
    assert value(samples, "tidelog_connections") >= 1  # the live member's
    assert value(samples, "tidelog_storage_damage_total", kind="damaged_range") == 0
    assert value(samples, "tidelog_partitions_leaderless") == 0
    # A single broker is its own cluster: alive, the controller, every replica in sync.
    for name, expected in (
        ("tidelog_brokers_alive", 1),
        ("tidelog_controller_present", 1),
        ("tidelog_controller_active", 1),
        ("tidelog_partitions_led", len(samples["tidelog_log_end_offset"])),  # every one
        ("tidelog_partitions_under_replicated", 0),
        ("tidelog_partitions_under_min_isr", 0),
        ("tidelog_isr_shrinks_total", 0),
        ("tidelog_leader_elections_total", 0),
    ):
        assert value(samples, name) == expected, name


@asynccontextmanager
async def queue_jobs(address: str, settle: bool = True) -> AsyncIterator[QueueConsumer]:
    """10 jobs in "jobs"; the share group "workers" takes 4 and (``settle``) acks 2, rejects
    1, holds 1 while the context is open."""
    async with AdminClient(address) as admin:
        await admin.create_topic("jobs", 1)
    async with Producer(address, acks="all") as producer:
        for i in range(10):
            await producer.send("jobs", b"job%d" % i)
    async with QueueConsumer(address, "workers", "jobs") as queue:
        taken = await queue.take(4, wait=5)
        assert [m.offset for m in taken] == [0, 1, 2, 3]
        if settle:
            await taken[0].ack()
            await taken[1].ack()
            await taken[2].reject("bad job")
        yield queue


def test_share_group_metrics_count_a_queue_exactly(
    tidelog_broker_factory: Callable[..., BrokerThread],
) -> None:
    """10 jobs; a worker takes 4, acks 2, rejects 1 (dead-lettered), holds 1."""
    broker = tidelog_broker_factory(admin_port=-1)

    def share(samples: Samples, name: str) -> float:
        return value(samples, name, group="workers", topic="jobs", partition="0")

    async def main() -> Samples:
        async with queue_jobs(broker.address):
            async with asyncio.timeout(30):
                while True:  # dead-lettering is written in the background
                    samples, _ = await asyncio.to_thread(scrape, broker.admin_address)
                    if share(samples, "tidelog_share_group_dead_lettered_total") == 1:
                        return samples
                    await asyncio.sleep(0.05)

    samples = asyncio.run(main())
    assert value(samples, "tidelog_share_group_members", group="workers") == 1
    assert share(samples, "tidelog_share_group_available") == 10 - 4
    assert share(samples, "tidelog_share_group_inflight") == 1
    assert share(samples, "tidelog_share_group_delayed") == 0
    assert share(samples, "tidelog_share_group_acknowledged_total") == 2
    assert share(samples, "tidelog_share_group_lag") == 10 - 3  # offset 3 still held


def test_a_queue_whose_topic_was_deleted_does_not_break_the_scrape(
    tidelog_broker_factory: Callable[..., BrokerThread],
) -> None:
    """A share group keeps its state of a deleted topic's partitions: the scrape (and
    DescribeShareGroup) leave them out instead of failing whole."""
    broker = tidelog_broker_factory(admin_port=-1)

    async def main() -> None:
        async with queue_jobs(broker.address, settle=False):
            pass
        async with AdminClient(broker.address) as admin:
            await admin.delete_topics(["jobs"])

    asyncio.run(main())
    assert httpx.get(f"http://{broker.admin_address}/metrics").status_code == 200
    samples, _ = scrape(broker.admin_address)
    assert value(samples, "tidelog_share_group_members", group="workers") == 0
    left = [n for n, found in samples.items() for lb, _ in found if lb.get("topic") == "jobs"]
    assert not [n for n in left if "share_group" in n]


def test_errors_are_counted_by_code(tidelog_broker_factory: Callable[..., BrokerThread]) -> None:
    broker = tidelog_broker_factory(admin_port=-1)

    async def fail() -> None:
        async with AdminClient(broker.address) as admin:
            await admin.create_topic("once", 1)
            with pytest.raises(Exception, match="exists"):
                await admin.create_topic("once", 1)

    asyncio.run(fail())
    samples, _ = scrape(broker.admin_address)
    # CreateTopics answers per topic: the request itself succeeded both times.
    assert value(samples, "tidelog_requests_total", api="create_topics", error="none") == 2


def test_health_and_ready(tidelog_broker_factory: Callable[..., BrokerThread]) -> None:
    broker = tidelog_broker_factory(admin_port=-1)
    base = f"http://{broker.admin_address}"
    assert httpx.get(f"{base}/health").json() == {"status": "ok"}
    assert httpx.get(f"{base}/ready").status_code == 200
    broker.call(lambda b: setattr(b.core.state, "shutting_down", True))
    ready = httpx.get(f"{base}/ready")
    assert ready.status_code == 503
    assert ready.json()["reason"] == "shutting down"
    broker.call(lambda b: setattr(b.core.state, "shutting_down", False))


def test_two_brokers_in_one_process_keep_their_own_metrics(tmp_path: Path) -> None:
    configs = [BrokerConfig(port=0, admin_port=-1, data_dir=tmp_path / n) for n in "ab"]

    async def main() -> tuple[str, str]:
        async with Broker(configs[0]) as a, Broker(configs[1]) as b:
            async with AdminClient(a.address) as admin, Producer(a.address) as producer:
                await admin.create_topic("only-a", 1)
                await producer.send("only-a", b"x")
                await producer.flush()
            async with httpx.AsyncClient() as http:
                text_a = (await http.get(f"http://{a.admin_address}/metrics")).text
                text_b = (await http.get(f"http://{b.admin_address}/metrics")).text
        return text_a, text_b

    text_a, text_b = asyncio.run(main())
    assert 'tidelog_records_in_total{topic="only-a"} 1.0' in text_a
    assert "only-a" not in text_b


def test_admin_port_is_off_for_a_free_broker_port_unless_asked(
    tidelog_broker_factory: Callable[..., BrokerThread],
) -> None:
    broker = tidelog_broker_factory()
    assert broker.broker.admin_address is None
    assert broker.broker.metrics is None  # nothing counted either
    assert BrokerConfig().admin == 9644
    assert BrokerConfig(port=0, admin_port=9700).admin == 9700


def test_the_grafana_dashboard_uses_only_metrics_the_broker_exports(
    tidelog_broker_factory: Callable[..., BrokerThread],
) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs.append(dashboard["templating"]["list"][1]["query"]["query"])
    used = {name for e in exprs for name in re.findall(r"\btidelog_\w+", e)}
    assert len(used) >= 20, used
    broker = tidelog_broker_factory(admin_port=-1)

    async def queue() -> None:  # the queue panels' series
        async with queue_jobs(broker.address, settle=False):
            pass

    asyncio.run(queue())
    samples, families = run_with_member(broker.address, lambda: scrape(broker.admin_address))
    # A family declared without series (replica lag: no followers on a single broker) counts.
    declared = set(samples) | set(families) | {f + "_total" for f in families}
    missing = sorted(used - declared)
    assert not missing, f"the dashboard queries series no scrape has: {missing}"


def test_storage_damage_found_by_the_scrubber_is_counted(
    tidelog_broker_factory: Callable[..., BrokerThread], tmp_path: Path
) -> None:
    """A byte flipped inside a sealed segment's second batch while the broker is down: after
    the restart the scrubber isolates that batch and ``storage_damage_total{kind=
    "damaged_range"}`` says 1."""
    data_dir = tmp_path / "damaged"
    settings = {"admin_port": -1, "storage": "disk", "data_dir": data_dir}
    broker = tidelog_broker_factory(**settings)

    async def produce() -> None:
        async with AdminClient(broker.address) as admin:
            await admin.create_topic("events", 1, configs={"segment_bytes": "2048"})
        async with Producer(broker.address, linger=0) as producer:
            for i in range(60):
                await producer.send("events", b"%03d" % i + b"x" * 97)
                await producer.flush()  # one batch each

    asyncio.run(produce())
    broker.stop()
    first = sorted((data_dir / "events-0").glob("*.log"))[0]
    data = bytearray(first.read_bytes())
    second = batch_size_at(memoryview(data), 0)
    assert second is not None and second + 80 < len(data)
    data[second + 70 : second + 73] = b"\xff\xff\xff"  # inside the second batch's records
    first.write_bytes(bytes(data))

    again = tidelog_broker_factory(**settings, scrub_bytes_per_second=100 * 1024 * 1024)

    def damaged() -> float:
        samples, _ = scrape(again.admin_address)
        return value(samples, "tidelog_storage_damage_total", kind="damaged_range")

    deadline = time.monotonic() + 30
    while damaged() < 1:
        assert time.monotonic() < deadline, "the scrubber found nothing within 30 s"
        time.sleep(0.05)
    assert damaged() == 1
