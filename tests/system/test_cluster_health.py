"""The cluster's health as operators see it, against three real broker processes over etcd:
the cluster and replication metrics of ``/metrics`` (parsed with the Prometheus text parser)
and ``tidelog cluster health`` (the installed executable), while a broker is SIGKILLed and
started again.

Two topics: ``replicated`` (3 partitions, 3 replicas, min ISR 2) and ``single`` (3 partitions,
1 replica). Killing broker B leaves every ``replicated`` partition under-replicated (B leaves
each ISR) and the ``single`` partition B held leaderless; ``cluster health`` exits 10 and names
B and that partition. Once B is back and caught up, everything returns to healthy.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tidelog.cli.health import EXIT_UNHEALTHY
from tidelog.client import AdminClient, Producer

from .cluster import Cluster, cluster

TIDELOG = Path(sys.executable).with_name("tidelog")
OPTIONS = ("--replication-factor", "3", "--min-insync-replicas", "2", "--admin-port", "-1")
PARTITIONS = 3
RECORDS = 30


def scrape(admin: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(httpx.get(f"http://{admin}/metrics").text):
        for s in family.samples:
            samples.setdefault(s.name, []).append((s.labels, s.value))
    return samples


def total(c: Cluster, name: str, **labels: str) -> float:
    """``name`` summed over the live brokers (series matching ``labels``)."""
    out = 0.0
    for proc in c.brokers.values():
        if proc.proc is None or proc.proc.poll() is not None:
            continue
        assert proc.admin_address is not None
        for lb, v in scrape(proc.admin_address).get(name, []):
            if all(lb.get(k) == x for k, x in labels.items()):
                out += v
    return out


def health(address: str) -> tuple[int, dict[str, Any]]:
    done = subprocess.run(
        [str(TIDELOG), "--broker", address, "--timeout", "2", "cluster", "health", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, json.loads(done.stdout)


async def setup(address: str) -> dict[str, int]:
    """Create both topics, produce to every partition; who leads each ``single`` partition."""
    async with AdminClient(address) as admin:
        await admin.create_topic("replicated", PARTITIONS)
        await admin.create_topic("single", PARTITIONS, replication_factor=1)
        async with Producer(address, acks="all") as producer:
            for i in range(RECORDS):
                for topic in ("replicated", "single"):
                    await producer.send(topic, b"v%d" % i, partition=i % PARTITIONS)
        (single,) = await admin.describe_topics(["single"])
    return {f"single-{p.partition}": p.leader for p in single.partitions}


def test_a_killed_broker_shows_in_the_metrics_and_cluster_health_until_it_is_back(
    tmp_path: Path,
) -> None:
    with cluster(tmp_path, 3, options=OPTIONS) as c:
        leaders = asyncio.run(setup(c.address(1)))
        controller = c.controller()
        assert controller is not None
        victim = next(b for b in (3, 2, 1) if b != controller.broker_id)
        survivor = controller.broker_id
        orphan = next(name for name, leader in leaders.items() if leader == victim)

        # healthy: every replica in sync, one active controller, three brokers alive everywhere
        c.wait_until("every ISR full", lambda: total(c, "tidelog_partitions_under_replicated") == 0)
        assert total(c, "tidelog_controller_active") == 1
        assert total(c, "tidelog_controller_present") == 3
        assert total(c, "tidelog_brokers_alive") == 9
        assert total(c, "tidelog_partitions_leaderless") == 0
        assert total(c, "tidelog_partitions_led") == 2 * PARTITIONS
        assert total(c, "tidelog_records_in_total", topic="replicated") == RECORDS
        c.wait_until(
            "followers caught up",
            lambda: (
                total(c, "tidelog_replica_lag_records") == 0
                and len(
                    scrape(c.brokers[survivor].admin_address or "")["tidelog_replica_lag_records"]
                )
                > 0
            ),
        )
        code, report = health(c.address(survivor))
        assert code == 0, report
        assert report["healthy"] is True and report["brokers"] == [1, 2, 3]
        assert report["under_replicated_partitions"] == []
        shrinks_before = total(c, "tidelog_isr_shrinks_total")
        expands_before = total(c, "tidelog_isr_expands_total")
        elections_before = total(c, "tidelog_leader_elections_total")

        c.kill(victim)  # SIGKILL

        c.wait_until(
            "every replicated partition under-replicated",
            lambda: total(c, "tidelog_partitions_under_replicated") == PARTITIONS,
        )
        c.wait_until(
            "the orphaned partition leaderless",
            lambda: total(c, "tidelog_partitions_leaderless") == 1,
        )
        assert total(c, "tidelog_brokers_alive") == 2 * 2
        assert total(c, "tidelog_partitions_under_min_isr") == 0  # 2 of 3 left: acks=all works
        assert total(c, "tidelog_isr_shrinks_total") >= shrinks_before + PARTITIONS - 1
        assert total(c, "tidelog_leader_elections_total") >= elections_before + 1  # its leadership
        code, report = health(c.address(survivor))
        assert code == EXIT_UNHEALTHY, report
        assert report["healthy"] is False
        assert report["brokers_down"] == [str(victim)]
        assert report["leaderless_partitions"] == [orphan]
        assert len(report["under_replicated_partitions"]) == PARTITIONS
        assert any(f"broker {victim} is down" in r for r in report["reasons"]), report
        assert any(orphan in r for r in report["reasons"]), report

        restarted = c.start(victim)

        c.wait_until(
            "every ISR full again",
            lambda: (
                total(c, "tidelog_partitions_under_replicated") == 0
                and total(c, "tidelog_partitions_leaderless") == 0
            ),
        )
        assert total(c, "tidelog_isr_expands_total") >= expands_before + PARTITIONS - 1
        watched = subprocess.run(  # what a readiness probe or a script waits with
            [str(TIDELOG), "--broker", c.address(survivor), "--timeout", "2", "cluster",
             "health", "--watch", "--exit-when-healthy", "--interval", "0.2"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert watched.returncode == 0, watched.stdout + watched.stderr
        assert watched.stdout.rstrip().endswith("Under-replicated partitions: []")
        code, report = health(c.address(victim))  # the restarted broker agrees
        assert code == 0, report
        assert report["brokers_down"] == [] and report["leaderless_partitions"] == []
        ready = httpx.get(f"http://{restarted.admin_address}/ready")
        assert ready.status_code == 200, ready.text  # registered, leading what it should


def test_a_killed_controller_is_replaced_and_counted_once(tmp_path: Path) -> None:
    """SIGKILL the controller: the survivors elect one (``controller_active`` sums to 1
    again, every survivor sees it), the partitions it led get leaders, and health names it."""
    with cluster(tmp_path, 3, options=OPTIONS) as c:
        asyncio.run(setup(c.address(1)))
        controller = c.controller()
        assert controller is not None
        old = controller.broker_id
        c.wait_until("every ISR full", lambda: total(c, "tidelog_partitions_under_replicated") == 0)
        c.kill(old)
        c.wait_until(
            "a new controller",
            lambda: (now := c.controller()) is not None and now.broker_id != old,
        )
        c.wait_until("one active controller", lambda: total(c, "tidelog_controller_active") == 1)
        c.wait_until("every survivor sees it", lambda: total(c, "tidelog_controller_present") == 2)
        c.wait_until(
            "the old controller's replicated partition led again",
            lambda: total(c, "tidelog_partitions_led") == 2 * PARTITIONS - 1,  # its single one
        )
        assert total(c, "tidelog_partitions_leaderless") == 1
        assert total(c, "tidelog_leader_elections_total") >= 1  # by the new controller
        survivor = next(b for b in c.brokers if b != old)
        code, report = health(c.address(survivor))
        assert code == EXIT_UNHEALTHY, report
        assert report["brokers_down"] == [str(old)]
        assert report["controller_id"] not in (-1, old)
