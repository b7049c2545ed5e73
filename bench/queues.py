"""Queues side by side: tidelog share groups, Redis Streams consumer groups, NATS JetStream
work-queue consumers, in one run (issue 19).

    python bench/queues.py [--messages 20000] [--workers 1,4,16] [--runs 1] [--size 100]
                           [--confirm each,batch]

Each system gets ``messages`` records of ``size`` bytes on one partition / stream, then
``W`` workers (asyncio tasks of this process, one connection each) take and acknowledge every
one of them; the figure is acknowledged messages per second from the first take to the last
ack. Two ways to acknowledge (``--confirm``):

* ``each``: one confirmed acknowledgement per message, awaited before the next message (a
  worker that handles one job at a time);
* ``batch``: a worker takes up to 100 messages, then acknowledges all of them and waits for
  every confirmation at once (tidelog: ``QueueConsumer.ack_many``, one request; Redis: one
  XACK naming them all; NATS: ``ack_sync`` of each, in flight together: it has no bulk ack).

Then, with ``W`` = 4, the delivery latency (produce to a worker's hands) of records produced at
``--rate`` for ``--seconds``.

Matching durability: tidelog fsyncs every acquisition and every ack before it answers (its
share state); Redis runs ``appendfsync always``; nats-server runs with ``sync_interval:
always``. Servers are the ones bench/peers.py starts (loopback, temporary data dirs, stopped
by PID); a peer that is not installed is skipped with a note.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable

import drive_nats as N
import drive_redis as R
import drive_tidelog as T
import peers
import uvloop
from harness import broker_process, spread
from openloop import Recorder, observe, run_open_loop, stamped
from rich.console import Console
from rich.table import Table

from tidelog.client import Producer, QueueConsumer

console = Console(width=140)
TAKE = 100
"""Messages a worker takes per request (tidelog max_records, XREADGROUP COUNT, fetch batch)."""

Worker = Callable[[], Awaitable[None]]
STOP_WAIT_S = 5.0
"""How long a run waits for its cancelled workers to finish."""
ACK_TIMEOUT_S = 60.0
"""NATS: how long an ``ack_sync`` may wait for its confirmation."""


class Tally:
    """Acknowledged messages so far, and the moment the ``n``-th was confirmed: taken by the
    worker that confirmed it, not by the loop that watches the run (whose 50 ms polls would
    round a run of a fraction of a second to the poll)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.count = 0
        self.end = 0.0

    def add(self, k: int) -> None:
        self.count += k
        if self.count >= self.n and not self.end:
            self.end = time.perf_counter()


async def _race(workers: list[Worker], done: Tally) -> float:
    """Messages/s of ``workers`` running until ``done`` counts its ``n`` messages."""
    start = time.perf_counter()
    tasks = [asyncio.create_task(w()) for w in workers]
    try:
        while not done.end:
            finished, _ = await asyncio.wait(tasks, timeout=0.05)
            for t in finished:
                t.result()  # a worker's failure ends the run
        return done.n / (done.end - start)
    finally:
        for t in tasks:
            t.cancel()
        # bounded: a redis-py client cancelled inside a blocking XREADGROUP can hang on close
        await asyncio.wait(tasks, timeout=STOP_WAIT_S)


# --- tidelog ----------------------------------------------------------------------------------


async def tidelog_acks(address: str, n: int, size: int, workers: int, batch: bool) -> float:
    topic = await T.new_topic(address, "queue")
    async with Producer(address, acks="all") as producer:
        value = b"x" * size
        for _ in range(n):
            await producer.send(topic, value)
        await producer.flush()
    group = f"{topic}-g"
    done = Tally(n)

    def worker() -> Worker:
        async def run() -> None:
            async with QueueConsumer(address, group, topic, max_records=TAKE) as queue:
                if batch:
                    while True:
                        messages = await queue.take(TAKE, 1.0)
                        failed = await queue.ack_many(messages)  # as Redis's XACK of them all
                        done.add(len(messages) - len(failed))
                async for message in queue:
                    await message.ack()
                    done.add(1)

        return run

    return await _race([worker() for _ in range(workers)], done)


async def tidelog_latency(address: str, rate: int, seconds: float, size: int) -> Recorder:
    topic = await T.new_topic(address, "queue-latency")
    group = f"{topic}-g"
    async with Producer(address, acks="all", linger=0) as producer:

        async def send_due(due: list[float]) -> None:
            for t in due:
                await producer.send(topic, stamped(t, size))

        async def receive(recorder: Recorder, total: int) -> None:
            async def one() -> None:
                async with QueueConsumer(address, group, topic, max_records=TAKE) as queue:
                    async for message in queue:
                        observe(recorder, message.value or b"", time.perf_counter())
                        await message.ack()
                        if recorder.count >= total:
                            return

            tasks = [asyncio.create_task(one()) for _ in range(4)]
            while recorder.count < total:
                await asyncio.wait(tasks, timeout=0.05)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        return await run_open_loop(rate, seconds, send_due, receive)


# --- Redis Streams ----------------------------------------------------------------------------


async def redis_acks(port: int, n: int, size: int, workers: int, batch: bool) -> float:
    stream = R._stream("queue")
    r = R.client(port)
    try:
        await R.fill(r, stream, n, size)
        await r.xgroup_create(stream, R.GROUP, id="0")
        done = Tally(n)

        def worker(name: bytes) -> Worker:
            async def run() -> None:
                c = R.client(port)
                try:
                    while True:
                        reply = await c.xreadgroup(
                            R.GROUP, name, {stream: ">"}, count=TAKE, block=1000
                        )
                        ids = [entry_id for entry_id, _ in reply[0][1]] if reply else []
                        if batch and ids:
                            await c.xack(stream, R.GROUP, *ids)
                            done.add(len(ids))
                            continue
                        for entry_id in ids:
                            await c.xack(stream, R.GROUP, entry_id)
                            done.add(1)
                finally:
                    await c.aclose()

            return run

        rate = await _race([worker(f"w{i}".encode()) for i in range(workers)], done)
        await r.delete(stream)
        return rate
    finally:
        await r.aclose()


# --- NATS JetStream ---------------------------------------------------------------------------


async def nats_acks(port: int, n: int, size: int, workers: int, batch: bool) -> float:
    from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StorageType

    nc, js = await N._connect(port)
    try:
        name = f"queue-{next(N._names)}"
        await js.add_stream(
            name=name,
            subjects=[name],
            storage=StorageType.FILE,
            retention=RetentionPolicy.WORK_QUEUE,
        )
        await N._publish(js, name, [b"x" * size] * n)
        config = ConsumerConfig(
            durable_name="workers", ack_policy=AckPolicy.EXPLICIT, max_ack_pending=-1
        )
        await js.add_consumer(name, config)
        done = Tally(n)

        def worker() -> Worker:
            async def run() -> None:
                wnc, wjs = await N._connect(port)
                try:
                    sub = await wjs.pull_subscribe_bind("workers", stream=name)
                    while True:
                        try:
                            msgs = await sub.fetch(batch=TAKE, timeout=1)
                        except Exception:
                            continue
                        if batch:
                            # 1,600 acks in flight at 16 workers outlast the 1 s default
                            acks = (msg.ack_sync(timeout=ACK_TIMEOUT_S) for msg in msgs)
                            await asyncio.gather(*acks)
                            done.add(len(msgs))
                            continue
                        for msg in msgs:
                            await msg.ack_sync()  # explicit, confirmed: as tidelog's ack
                            done.add(1)
                finally:
                    await wnc.close()

            return run

        rate = await _race([worker() for _ in range(workers)], done)
        await js.delete_stream(name)
        return rate
    finally:
        await nc.close()


# --- the run ----------------------------------------------------------------------------------


async def main(args: argparse.Namespace) -> None:
    counts = [int(w) for w in args.workers.split(",")]
    modes = args.confirm.split(",")
    rows: list[tuple[str, str, list[float]]] = []

    async def measure(system: str, fn: Callable[[int, bool], Awaitable[float]]) -> None:
        for mode in modes:
            for w in counts:
                figures = [await fn(w, mode == "batch") for _ in range(args.runs)]
                rows.append((system, f"{w} worker(s), confirm {mode}", figures))
                console.log(
                    f"{system} {w} worker(s), confirm {mode}: {spread(figures)} acked msgs/s"
                )

    latencies: list[tuple[str, dict[str, float]]] = []
    with broker_process() as broker:
        a = broker.address
        await measure("tidelog", lambda w, b: tidelog_acks(a, args.messages, args.size, w, b))
        rec = await tidelog_latency(a, args.rate, args.seconds, args.size)
        latencies.append(("tidelog", rec.summary()))
    notes: list[str] = []
    if (why := peers.available("redis")) is None:
        with peers.redis_server("always") as srv:
            await measure(
                "redis", lambda w, b: redis_acks(srv.port, args.messages, args.size, w, b)
            )
    else:
        notes.append(f"redis skipped: {why}")
    if (why := peers.available("nats")) is None:
        with peers.nats_server(sync_always=True) as srv:
            await measure("nats", lambda w, b: nats_acks(srv.port, args.messages, args.size, w, b))
    else:
        notes.append(f"nats skipped: {why}")
    table = Table("system", "workers", "acked msgs/s (median, min-max)")
    for system, params, figures in rows:
        table.add_row(system, params, spread(figures))
    console.print(table)
    for system, s in latencies:
        console.print(
            f"{system} delivery latency at {args.rate}/s, 4 workers: "
            + ", ".join(f"{k} {v:.2f}" for k, v in s.items())
        )
    for note in notes:
        console.print(note)


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--messages", type=int, default=20_000)
    p.add_argument("--workers", default="1,4,16")
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--confirm", default="each,batch", help="each, batch, or both (each,batch)")
    p.add_argument("--size", type=int, default=100)
    p.add_argument("--rate", type=int, default=1000, help="latency: records/s")
    p.add_argument("--seconds", type=float, default=5.0, help="latency: how long")
    return p.parse_args()


if __name__ == "__main__":
    uvloop.run(main(_args()))
