"""tidelog, driven the way the side-by-side bench drives every system.

Each function creates its own fresh topic, so runs never see each other's records.
``produce`` and ``consume`` return records/s; ``latency`` returns a :class:`Recorder` of
produce-to-consume latencies at a fixed open-loop rate.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time

import consume as consume_bench
from openloop import Recorder, observe, run_open_loop, stamped

from tidelog.client import AdminClient, Consumer, Producer, TopicPartition

_names = itertools.count()


async def new_topic(address: str, prefix: str, partitions: int = 1) -> str:
    topic = f"{prefix}-{os.getpid()}-{next(_names)}"
    async with AdminClient(address) as admin:
        await admin.create_topic(topic, partitions)
    return topic


async def produce(
    address: str,
    n: int,
    size: int,
    acks: str = "leader",
    compression: str | None = None,
    partitions: int = 1,
) -> float:
    """Records/s of one Producer sending ``n`` records as fast as ``send()`` allows."""
    topic = await new_topic(address, "produce", partitions)
    value = os.urandom(size)
    async with Producer(
        address,
        acks=acks,
        compression=compression,
        batch_size=256 * 1024,
        linger=0.005,
        max_request_size=4 << 20,
    ) as producer:
        await producer.send_and_wait(topic, value)  # metadata and connection warm
        start = time.perf_counter()
        for _ in range(n):
            await producer.send(topic, value)
        await producer.flush()
        return n / (time.perf_counter() - start)


async def consume(address: str, n: int, size: int) -> float:
    """Records/s reading ``n`` records of a filled 1-partition topic from the beginning."""
    topic = await new_topic(address, "consume")
    await consume_bench.fill(address, topic, n, size)
    rate, _, _ = await consume_bench.consume(address, topic, n, "getmany")
    return rate


async def consume_group(address: str, n: int, size: int, members: int = 4) -> float:
    """Records/s of a consumer group of ``members`` reading a filled topic (one partition
    each), from the first ``subscribe()`` (so including the join) to the last record."""
    topic = await new_topic(address, "group", members)
    value = os.urandom(size)
    async with Producer(
        address, acks="leader", batch_size=512 * 1024, linger=0.01, max_request_size=4 << 20
    ) as producer:
        for i in range(n):
            await producer.send(topic, value, partition=i % members)
        await producer.flush()
    group = f"{topic}-g"
    consumers = [
        Consumer(address, group_id=group, auto_offset_reset="earliest", auto_commit=True)
        for _ in range(members)
    ]
    got = [0]
    done = asyncio.Event()

    async def read(consumer: Consumer) -> None:
        while not done.is_set():
            batches = await consumer.getmany(timeout=0.2)
            got[0] += sum(len(r) for r in batches.values())
            if got[0] >= n:
                done.set()

    for c in consumers:
        await c.start()
    try:
        start = time.perf_counter()
        for c in consumers:
            c.subscribe([topic])
        tasks = [asyncio.ensure_future(read(c)) for c in consumers]
        try:
            async with asyncio.timeout(120):
                await done.wait()
            elapsed = time.perf_counter() - start
        finally:
            done.set()
            await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        for c in consumers:
            await c.close()
    return n / elapsed


async def latency(address: str, rate: int, seconds: float, size: int = 100) -> Recorder:
    """Produce-to-consume latency at ``rate`` records/s: acks=leader, linger 0."""
    topic = await new_topic(address, "latency")
    tp = TopicPartition(topic, 0)
    async with (
        Producer(address, acks="leader", linger=0) as producer,
        Consumer(address, auto_offset_reset="earliest", fetch_max_wait=0.1) as consumer,
    ):
        await producer.send_and_wait(topic, stamped(time.perf_counter(), size))  # warm
        consumer.assign([tp])
        consumer.seek(tp, 1)

        async def send_due(due: list[float]) -> None:
            for t in due:
                await producer.send(topic, stamped(t, size))

        async def receive(recorder: Recorder, total: int) -> None:
            clock = time.perf_counter
            while recorder.count < total:
                batches = await consumer.getmany(timeout=0.1)
                now = clock()
                for records in batches.values():
                    for record in records:
                        observe(recorder, record.value, now)

        return await run_open_loop(rate, seconds, send_due, receive)


async def many_clients(
    address: str, clients: int, rate_each: int, seconds: float, size: int = 100
) -> Recorder:
    """``clients`` producers (a connection each) and ``clients`` consumers (one partition
    each) at ``rate_each`` records/s per producer; produce-to-consume latencies."""
    topic = await new_topic(address, "many", clients)
    producers = [Producer(address, acks="leader", linger=0) for _ in range(clients)]
    consumers = [
        Consumer(address, auto_offset_reset="earliest", fetch_max_wait=0.1) for _ in range(clients)
    ]
    try:
        for i, (p, c) in enumerate(zip(producers, consumers, strict=True)):
            await p.start()
            await c.start()
            c.assign([TopicPartition(topic, i)])
        turn = itertools.count()

        async def send_due(due: list[float]) -> None:
            for t in due:
                i = next(turn) % clients
                await producers[i].send(topic, stamped(t, size), partition=i)

        async def receive(recorder: Recorder, total: int) -> None:
            async def one(consumer: Consumer) -> None:
                clock = time.perf_counter
                while recorder.count < total:
                    batches = await consumer.getmany(timeout=0.1)
                    now = clock()
                    for records in batches.values():
                        for record in records:
                            observe(recorder, record.value, now)

            await asyncio.gather(*(one(c) for c in consumers))

        return await run_open_loop(rate_each * clients, seconds, send_due, receive)
    finally:
        for p in producers:
            await p.close()
        for c in consumers:
            await c.close()
