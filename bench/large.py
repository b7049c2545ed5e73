"""Large records into one broker: 1 MiB batches at acks=leader, MB/s (issue 24, goal 4).

    python bench/large.py [--mib 512] [--runs 3] [--inflight 4] [--record-kib 64]
                          [--where disk,tmpfs]

One broker process (default flush policy: acks=leader answers once the batch is in the page
cache), its data on disk in a temporary dir, then, for a second broker, on tmpfs (/dev/shm):
the same code path without the disk's writeback behind it. Ways, interleaved run by run, each
writing ``--mib`` MiB into a fresh one-partition topic:

* ``raw``: one pipelined client connection sending one prebuilt 1 MiB batch (16 records of
  64 KiB) over and over, ``--inflight`` requests in flight: what the broker takes in, with the
  client's cost near zero;
* ``producer``: the client ``Producer`` (batch_size 1 MiB, linger 5 ms) sending 64 KiB
  records: what an application gets.

Beside them, in the same run, the machine's limits (``bench/limits.py``): the disk's
sequential write of 1 MiB chunks with a final fsync (in the temporary dir), loopback TCP from
one process to another (1 MiB sends) and a copy of 1 MiB pieces of a buffer larger than the
caches. The broker's CPU time
(user + system, from /proc) per GB received says what a copy or a checksum costs it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

import uvloop
from harness import broker_process, cpu_seconds, machine, spread
from limits import disk_write_mb_s, loopback_mb_s
from rich.console import Console
from rich.table import Table

from tidelog.client import AdminClient, Connection, Producer
from tidelog.wire import messages as m
from tidelog.wire.records import RecordBatchBuilder

MIB = 1 << 20


def one_mib_batch(record_kib: int) -> bytes:
    record = os.urandom(record_kib * 1024)
    builder = RecordBatchBuilder()
    for _ in range(MIB // len(record)):
        builder.append(record)
    return builder.build()


async def raw(address: str, topic: str, mib: int, inflight: int, record_kib: int) -> float:
    batch = one_mib_batch(record_kib)
    host, port = address.rsplit(":", 1)
    request = m.ProduceRequest((m.ProducePartition(topic, 0, len(batch)),), acks=m.Acks.LEADER)
    conn = await Connection.open(host, int(port))
    try:
        window = asyncio.Semaphore(inflight)
        failures: list[str] = []

        def done(future: asyncio.Future[object]) -> None:
            window.release()
            response, _ = future.result()  # type: ignore[misc]
            code = response.partitions[0].error_code
            if code:
                failures.append(f"error {code}")

        start = time.perf_counter()
        pending = []
        for _ in range(mib):
            await window.acquire()
            future = conn.send(request, data=[batch])
            future.add_done_callback(done)
            pending.append(future)
        await asyncio.gather(*pending)
        elapsed = time.perf_counter() - start
        if failures:
            raise AssertionError(failures[:3])
    finally:
        await conn.close()
    return mib * len(batch) / elapsed / 1e6


async def producer(address: str, topic: str, mib: int, record_kib: int) -> float:
    record = os.urandom(record_kib * 1024)
    n = mib * MIB // len(record)
    async with Producer(
        address, acks="leader", batch_size=MIB, linger=0.005, max_request_size=4 * MIB
    ) as p:
        await p.send_and_wait(topic, record)  # metadata and connection warm
        start = time.perf_counter()
        for _ in range(n):
            await p.send(topic, record)
        await p.flush()
        elapsed = time.perf_counter() - start
    return n * len(record) / elapsed / 1e6


def memcpy_mb_s(mib: int = 256) -> float:
    """MB/s of copying a buffer too large for the caches, 1 MiB at a time, into new bytes."""
    source = memoryview(bytearray(os.urandom(mib * MIB)))
    start = time.perf_counter()
    for i in range(mib):
        bytes(source[i * MIB : (i + 1) * MIB])
    return mib * MIB / (time.perf_counter() - start) / 1e6


async def measure(
    args: argparse.Namespace, parent: str | None
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """MB/s and broker CPU seconds per GB of each way, on a broker keeping its data in
    ``parent``."""
    rates: dict[str, list[float]] = {way: [] for way in args.ways}
    cpu: dict[str, list[float]] = {way: [] for way in args.ways}
    with broker_process(parent=parent) as broker:
        pid = broker.proc.pid
        async with AdminClient(broker.address) as admin:
            for run in range(args.runs):
                for way in rates:
                    topic = f"large-{way}-{run}"
                    await admin.create_topic(topic, 1)
                    before = cpu_seconds(pid)
                    if way == "raw":
                        rate = await raw(
                            broker.address, topic, args.mib, args.inflight, args.record_kib
                        )
                    else:
                        rate = await producer(broker.address, topic, args.mib, args.record_kib)
                    used = cpu_seconds(pid) - before
                    rates[way].append(rate)
                    cpu[way].append(used / (args.mib * MIB / 1e9))
                    await admin.delete_topics([topic])
    return rates, cpu


async def main(args: argparse.Namespace) -> None:
    console = Console(width=150)
    table = Table(title=f"1 MiB batches at acks=leader into one broker ({machine()})")
    for column in ("data on", "way", "MB/s", "broker CPU s per GB"):
        table.add_column(column, justify="right")
    for where in args.where:
        parent = {"disk": None, "tmpfs": "/dev/shm"}[where]
        rates, cpu = await measure(args, parent)
        for way in rates:
            table.add_row(where, way, spread(rates[way]), spread(cpu[way], ".2f"))
    loopback = [loopback_mb_s(args.mib) for _ in range(args.runs)]
    memcpy = [memcpy_mb_s() for _ in range(args.runs)]
    disk = [disk_write_mb_s(args.mib) for _ in range(args.runs)] if "disk" in args.where else []
    if disk:
        table.add_row("disk", "sequential 1 MiB writes + fsync (limit)", spread(disk), "")
    table.add_row("", "loopback TCP, 1 MiB sends (limit)", spread(loopback), "")
    table.add_row("", "memory copy, 1 MiB pieces of 256 MiB (limit)", spread(memcpy), "")
    console.print(table)


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=512)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--inflight", type=int, default=4)
    parser.add_argument("--record-kib", type=int, default=64)
    parser.add_argument("--ways", type=lambda s: s.split(","), default=["raw", "producer"])
    parser.add_argument(
        "--where",
        type=lambda s: s.split(","),
        default=["disk", "tmpfs"],
        help="where the broker keeps its data: disk (the temporary dir), tmpfs (/dev/shm)",
    )
    return parser.parse_args()


if __name__ == "__main__":
    uvloop.run(main(parse()))
