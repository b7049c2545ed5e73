"""Produce through a 3-broker cluster against one broker, in the same run.

Both sides: one client process, 100 B records, acks=all (idempotent), 6 partitions, the
client bootstrapping from one broker. The cluster is three broker processes over a real etcd
(Debian's etcd-server); the single broker has no etcd. Reported per side: records/s and the
brokers' CPU-seconds per million records (user + system, from /proc, summed over the
cluster's three brokers), medians of interleaved runs; and how often a cluster broker lost its
etcd lease under this load (the goal: never).

    python bench/cluster.py --records 300000 --runs 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import uvloop
from harness import BrokerProc, broker_process, cpu_seconds, machine, spread

from tidelog.client import AdminClient, Producer
from tidelog.etcd import EtcdProcess

PARTITIONS = 6
SIZE = 100


async def produce(address: str, topic: str, records: int, replication_factor: int = -1) -> float:
    """Records/s of one run (the topic with the brokers' replication factor unless given)."""
    async with AdminClient(address) as admin:
        await admin.create_topic(topic, PARTITIONS, replication_factor)
    value = os.urandom(SIZE)
    async with Producer(
        address, acks="all", batch_size=256 * 1024, linger=0.005, max_request_size=4 << 20
    ) as producer:
        await producer.send_and_wait(topic, value)
        start = time.perf_counter()
        send = producer.send
        for i in range(records):
            await send(topic, value, key=b"%d" % (i % 1024))
        await producer.flush()
        return records / (time.perf_counter() - start)


def run_side(
    brokers: list[BrokerProc], topic: str, records: int, replication_factor: int = -1
) -> tuple[float, float]:
    """(records/s, broker CPU-seconds per million records)."""
    before = sum(cpu_seconds(b.proc.pid) for b in brokers)
    rate = uvloop.run(produce(brokers[0].address, topic, records, replication_factor))
    used = sum(cpu_seconds(b.proc.pid) for b in brokers) - before
    return rate, used / records * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tidelog-cluster-")))
        etcd = stack.enter_context(EtcdProcess(root / "etcd"))
        logs = [stack.enter_context(open(root / f"broker-{b}.log", "w+")) for b in (1, 2, 3)]
        cluster = [
            stack.enter_context(
                broker_process(
                    "--broker-id", str(b), "--etcd", etcd.endpoint, stderr=logs[b - 1]
                )
            )
            for b in (1, 2, 3)
        ]  # fmt: skip
        single = [stack.enter_context(broker_process())]
        results: dict[str, list[tuple[float, float]]] = {"one broker": [], "3-broker cluster": []}
        for run in range(args.runs):
            results["one broker"].append(run_side(single, f"single-{run}", args.records))
            results["3-broker cluster"].append(run_side(cluster, f"cluster-{run}", args.records))
        lost = 0
        for log in logs:
            log.seek(0)
            lost += sum("lost its etcd lease" in line for line in log)
    print(f"produce, {SIZE} B, acks=all, {PARTITIONS} partitions, {args.records:,} records "
          f"x {args.runs} interleaved runs ({machine()})")  # fmt: skip
    for side, rows in results.items():
        rates = [r for r, _ in rows]
        cpu = [c for _, c in rows]
        print(
            f"  {side:17} {spread(rates)} records/s, "
            f"{statistics.median(cpu):.2f} broker CPU-s per million records"
        )
    print(f"  etcd leases lost by cluster brokers under this load: {lost}")
    sys.exit(0)


if __name__ == "__main__":
    main()
