"""Consume throughput: one client process reading a filled topic from the beginning.

    python bench/consume.py [--records 1000000] [--sizes 100,1024] [--runs 3] [--ways ...]

The topic (1 partition) is filled first with large batches; each run then assigns a fresh
Consumer, seeks to the beginning and reads every record one way, checking the offsets are
consecutive. The ways, interleaved run by run:

* ``getmany``: ``getmany()`` lists of records;
* ``async-for``: ``async for record in consumer``, the per-record iterator;
* ``batches``: ``async for batch in consumer.batches()``, reading ``len()`` and the offsets;
* ``batches+values``: the same, also reading every batch's ``values`` column (a bytes object
  per record, as an application that looks at the records does).

Figures: records/s and MB/s of values (median of ``--runs`` with min-max), the client's CPU
time per record (less sensitive than records/s to a machine shared with other work), and the
latency
of the calls that returned records (per batch for ``batches``; none for ``async-for``).
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

WAYS = ("getmany", "async-for", "batches", "batches+values")


async def fill(address: str, topic: str, n: int, size: int) -> None:
    value = os.urandom(size)
    async with Producer(
        address, acks="leader", batch_size=512 * 1024, linger=0.01, max_request_size=4 << 20
    ) as producer:
        for _ in range(n):
            await producer.send(topic, value)
        await producer.flush()


async def consume(address: str, topic: str, n: int, way: str) -> tuple[float, float, list[float]]:
    """Records/s, client CPU microseconds per record, and the call latencies (ms)."""
    tp = TopicPartition(topic, 0)
    waits: list[float] = []
    clock = time.perf_counter
    async with Consumer(address, auto_offset_reset="earliest") as consumer:
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        expected = 0
        start = clock()
        cpu = time.process_time()
        if way == "getmany":
            while expected < n:
                t = clock()
                got = await consumer.getmany(timeout=5.0)
                waits.append((clock() - t) * 1000)
                for records in got.values():
                    if records[0].offset != expected:
                        raise AssertionError(f"expected {expected}, got {records[0].offset}")
                    expected = records[-1].offset + 1
        elif way == "async-for":
            async for record in consumer:
                if record.offset != expected:
                    raise AssertionError(f"expected offset {expected}, got {record.offset}")
                expected += 1
                if expected == n:
                    break
        else:
            values = way == "batches+values"
            t = clock()
            async for batch in consumer.batches():
                offsets = batch.offsets
                if offsets[0] != expected or len(batch) != len(offsets):
                    raise AssertionError(f"expected offset {expected}, got {offsets[0]}")
                if values and len(batch.values) != len(batch):
                    raise AssertionError("a values column of the wrong length")
                expected = offsets[-1] + 1
                now = clock()
                waits.append((now - t) * 1000)
                if expected >= n:
                    break
                t = clock()
        elapsed = clock() - start
        cpu = time.process_time() - cpu
    return n / elapsed, cpu / n * 1e6, waits


async def main(args: argparse.Namespace) -> None:
    console = Console(width=150)
    table = Table(title=f"consume: one client process, one broker process ({machine()})")
    columns = ("size", "way", "records", "records/s", "MB/s", "client CPU µs/record")
    for column in (*columns, "call p50 ms", "p99 ms"):
        table.add_column(column, justify="right")
    with broker_process() as broker:
        async with AdminClient(broker.address) as admin:
            for size in args.sizes:
                topic = f"consume-{size}"
                await admin.create_topic(topic, 1)
                await fill(broker.address, topic, args.records, size)
                rates: dict[str, list[float]] = {way: [] for way in args.ways}
                cpus: dict[str, list[float]] = {way: [] for way in args.ways}
                waits: dict[str, list[float]] = {way: [] for way in args.ways}
                for _ in range(args.runs):
                    for way in args.ways:  # interleaved: a slow minute hits every way
                        rate, cpu, w = await consume(broker.address, topic, args.records, way)
                        rates[way].append(rate)
                        cpus[way].append(cpu)
                        waits[way].extend(w)
                for way in args.ways:
                    waited = sorted(waits[way])
                    table.add_row(
                        f"{size} B",
                        way,
                        f"{args.records:,}",
                        spread(rates[way]),
                        spread([r * size / 1e6 for r in rates[way]], ",.1f"),
                        spread(cpus[way], ".3f"),
                        f"{percentile(waited, 50):.2f}" if waited else "-",
                        f"{percentile(waited, 99):.2f}" if waited else "-",
                    )
    console.print(table)


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument(
        "--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[100, 1024]
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--ways", type=lambda s: s.split(","), default=list(WAYS), help=",".join(WAYS)
    )
    return parser.parse_args()


if __name__ == "__main__":
    uvloop.run(main(parse()))
