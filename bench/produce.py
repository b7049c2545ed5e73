"""Produce throughput and latency: one client process against one broker process.

    python bench/produce.py [--records 300000] [--sizes 100,1024] [--acks none,leader,all]
                            [--runs 3] [--rate 10000] [--latency-seconds 5]
                            [--idempotence default|on|off]

Throughput: one Producer sends ``--records`` records of each size as fast as ``send()`` allows
(batch_size 256 KiB, linger 5 ms), then flushes; records/s and MB/s of values, and the
send-to-acknowledgement latency of every 100th record.

Latency: an open-loop run at ``--rate`` records/s with linger 0; each record's latency is
measured from the moment it was *scheduled* (not sent), so a stall shows up as latency of
every record it delayed (coordinated omission corrected). p50 / p99 / p99.9 / max.
Each throughput figure is the median of ``--runs`` runs with the min-max range. With
``acks=all`` the producer is idempotent unless ``--idempotence off``.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import Any

import uvloop
from harness import broker_process, machine, percentile, spread
from openloop import pace
from rich.console import Console
from rich.table import Table

from tidelog.client import AdminClient, Producer

SAMPLE_EVERY = 100


async def throughput(
    address: str, topic: str, n: int, size: int, acks: str, idempotence: bool | None = None
) -> tuple[float, list[float]]:
    """Records/s and sampled latencies (ms) of one run."""
    value = os.urandom(size)
    latencies: list[float] = []
    clock = time.perf_counter

    def sampler(sent: float) -> Callable[[Any], None]:
        return lambda _: latencies.append((clock() - sent) * 1000)

    async with Producer(
        address,
        acks=acks,
        batch_size=256 * 1024,
        linger=0.005,
        max_request_size=4 << 20,
        enable_idempotence=idempotence,
    ) as producer:
        await producer.send_and_wait(topic, value)  # metadata and connection warm
        send = producer.send
        sample = acks != "none"
        start = clock()
        # Every SAMPLE_EVERY-th record is sampled, without a per-record test in the loop:
        # the harness's own work should not be counted against the client.
        for _ in range(n // SAMPLE_EVERY):
            future = await send(topic, value)
            if sample:
                future.add_done_callback(sampler(clock()))
            for _ in range(SAMPLE_EVERY - 1):
                await send(topic, value)
        for _ in range(n % SAMPLE_EVERY):
            await send(topic, value)
        await producer.flush()
        elapsed = clock() - start
    return n / elapsed, latencies


async def open_loop(address: str, topic: str, rate: int, seconds: float) -> list[float]:
    """Latencies (ms) of records produced at a fixed rate, from their scheduled time."""
    latencies: list[float] = []
    clock = time.perf_counter
    value = os.urandom(100)
    async with Producer(address, acks="leader", linger=0) as producer:
        await producer.send_and_wait(topic, value)

        def acked(due: float) -> Callable[[Any], None]:
            return lambda _: latencies.append((clock() - due) * 1000)

        async def send_due(due_times: list[float]) -> None:
            for due in due_times:
                future = await producer.send(topic, value)
                future.add_done_callback(acked(due))

        await pace(rate, seconds, send_due)
        await producer.flush()
    return latencies


async def main(args: argparse.Namespace) -> None:
    console = Console()
    table = Table(title=f"produce: one client process, one broker process ({machine()})")
    for column in ("size", "acks", "records/s", "MB/s", "p50 ms", "p99 ms", "p99.9 ms"):
        table.add_column(column, justify="right")
    with broker_process() as broker:
        async with AdminClient(broker.address) as admin:
            for size in args.sizes:
                for acks in args.acks:
                    rates: list[float] = []
                    samples: list[float] = []
                    for run in range(args.runs):
                        topic = f"bench-{size}-{acks}-{run}"
                        await admin.create_topic(topic, 1)
                        rate, lat = await throughput(
                            broker.address, topic, args.records, size, acks, args.idempotence
                        )
                        rates.append(rate)
                        samples.extend(lat)
                    samples.sort()
                    mbs = [r * size / 1e6 for r in rates]
                    table.add_row(
                        f"{size} B",
                        acks,
                        spread(rates),
                        spread(mbs, ",.1f"),
                        *(
                            f"{percentile(samples, q):.2f}" if samples else "-"
                            for q in (50, 99, 99.9)
                        ),
                    )
            await admin.create_topic("latency", 1)
            lat = sorted(
                await open_loop(broker.address, "latency", args.rate, args.latency_seconds)
            )
    console.print(table)
    console.print(
        f"open loop at {args.rate:,} records/s of 100 B, acks=leader, linger 0, "
        f"{len(lat):,} records: p50 {percentile(lat, 50):.2f} ms, "
        f"p99 {percentile(lat, 99):.2f} ms, p99.9 {percentile(lat, 99.9):.2f} ms, "
        f"max {lat[-1]:.2f} ms"
    )


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument(
        "--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[100, 1024]
    )
    parser.add_argument("--acks", type=lambda s: s.split(","), default=["none", "leader", "all"])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rate", type=int, default=10_000)
    parser.add_argument("--latency-seconds", type=float, default=5.0)
    parser.add_argument(
        "--idempotence",
        choices=("default", "on", "off"),
        default="default",
        help="the producer's enable_idempotence (default: on with acks=all, as in the client)",
    )
    args = parser.parse_args()
    args.idempotence = {"default": None, "on": True, "off": False}[args.idempotence]
    return args


if __name__ == "__main__":
    uvloop.run(main(parse()))
