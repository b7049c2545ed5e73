"""Consume throughput: one client process reading a filled topic from the beginning.

    python bench/consume.py [--records 1000000] [--sizes 100,1024] [--runs 3]

The topic (1 partition) is filled first with large batches; each run then assigns a fresh
Consumer, seeks to the beginning and reads with ``getmany()`` until it has every record,
checking the offsets are consecutive. Figures: records/s and MB/s of values (median of
``--runs`` with min-max), plus the latency of ``getmany()`` calls that returned records.
"""

from __future__ import annotations

import argparse
import os
import time

import uvloop
from harness import broker_process, machine, percentile, spread
from rich.console import Console
from rich.table import Table

from tidelog.client import AdminClient, Consumer, Producer, TopicPartition


async def fill(address: str, topic: str, n: int, size: int) -> None:
    value = os.urandom(size)
    async with Producer(
        address, acks="leader", batch_size=512 * 1024, linger=0.01, max_request_size=4 << 20
    ) as producer:
        for _ in range(n):
            await producer.send(topic, value)
        await producer.flush()


async def consume(address: str, topic: str, n: int) -> tuple[float, list[float]]:
    tp = TopicPartition(topic, 0)
    waits: list[float] = []
    clock = time.perf_counter
    async with Consumer(address, auto_offset_reset="earliest") as consumer:
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        got = 0
        expected = 0
        start = clock()
        while got < n:
            t = clock()
            batches = await consumer.getmany(timeout=5.0)
            waits.append((clock() - t) * 1000)
            for records in batches.values():
                if records[0].offset != expected:
                    raise AssertionError(f"expected offset {expected}, got {records[0].offset}")
                expected = records[-1].offset + 1
                got += len(records)
        elapsed = clock() - start
    return n / elapsed, waits


async def main(args: argparse.Namespace) -> None:
    console = Console()
    table = Table(title=f"consume: one client process, one broker process ({machine()})")
    for column in ("size", "records", "records/s", "MB/s", "getmany p50 ms", "p99 ms"):
        table.add_column(column, justify="right")
    with broker_process() as broker:
        async with AdminClient(broker.address) as admin:
            for size in args.sizes:
                topic = f"consume-{size}"
                await admin.create_topic(topic, 1)
                await fill(broker.address, topic, args.records, size)
                rates: list[float] = []
                waits: list[float] = []
                for _ in range(args.runs):
                    rate, w = await consume(broker.address, topic, args.records)
                    rates.append(rate)
                    waits.extend(w)
                waits.sort()
                table.add_row(
                    f"{size} B",
                    f"{args.records:,}",
                    spread(rates),
                    spread([r * size / 1e6 for r in rates], ",.1f"),
                    f"{percentile(waits, 50):.2f}",
                    f"{percentile(waits, 99):.2f}",
                )
    console.print(table)


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument(
        "--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[100, 1024]
    )
    parser.add_argument("--runs", type=int, default=3)
    return parser.parse_args()


if __name__ == "__main__":
    uvloop.run(main(parse()))
