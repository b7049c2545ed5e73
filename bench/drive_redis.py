"""Redis Streams through redis-py's asyncio client (hiredis parser), driven like tidelog.

* produce: XADD pipelines of ``PIPELINE`` commands (no MULTI), ``IN_FLIGHT`` pipelines at a
  time on a pool of connections: the fastest correct way redis-py allows;
* consume: a consumer group; XREADGROUP ``COUNT`` records at a time, and each batch's XACK
  pipelined with the next XREADGROUP;
* latency: whatever is due is sent as one XADD pipeline; a consumer blocks in XREADGROUP.

Durability comes from the server (``appendfsync everysec`` or ``always``).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time

from openloop import Recorder, observe, run_open_loop, stamped
from redis.asyncio import Redis

PIPELINE = 1000
IN_FLIGHT = 4
READ_COUNT = 5000
FIELD = b"v"
GROUP = b"g"

_names = itertools.count()


def client(port: int) -> Redis:
    return Redis(host="127.0.0.1", port=port, decode_responses=False, max_connections=16)


def _stream(prefix: str) -> str:
    return f"{prefix}-{os.getpid()}-{next(_names)}"


async def _xadd_many(r: Redis, stream: str, values: list[bytes]) -> None:
    pipe = r.pipeline(transaction=False)
    for v in values:
        pipe.xadd(stream, {FIELD: v})
    await pipe.execute()


async def produce(port: int, n: int, size: int) -> float:
    """Records/s of pipelined XADDs of ``n`` records."""
    stream = _stream("produce")
    value = os.urandom(size)
    r = client(port)
    try:
        await _xadd_many(r, stream, [value])  # connection warm
        sem = asyncio.Semaphore(IN_FLIGHT)
        tasks: list[asyncio.Task[None]] = []

        async def one(count: int) -> None:
            try:
                await _xadd_many(r, stream, [value] * count)
            finally:
                sem.release()

        start = time.perf_counter()
        for first in range(0, n, PIPELINE):
            await sem.acquire()
            tasks.append(asyncio.ensure_future(one(min(PIPELINE, n - first))))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
        await r.delete(stream)
    finally:
        await r.aclose()
    return n / elapsed


async def fill(r: Redis, stream: str, n: int, size: int) -> None:
    value = os.urandom(size)
    for first in range(0, n, PIPELINE * 10):
        await _xadd_many(r, stream, [value] * min(PIPELINE * 10, n - first))


async def consume(port: int, n: int, size: int) -> float:
    """Records/s of one consumer-group member reading and acknowledging ``n`` records."""
    stream = _stream("consume")
    r = client(port)
    try:
        await fill(r, stream, n, size)
        await r.xgroup_create(stream, GROUP, id="0")
        got = 0
        pending_ack: list[bytes] = []
        start = time.perf_counter()
        while got < n:
            pipe = r.pipeline(transaction=False)
            if pending_ack:
                pipe.xack(stream, GROUP, *pending_ack)
            pipe.xreadgroup(GROUP, b"c", {stream: ">"}, count=READ_COUNT, block=5000)
            replies = await pipe.execute()
            entries = replies[-1][0][1] if replies[-1] else []
            if not entries:
                raise RuntimeError(f"redis consume stalled at {got} of {n}")
            pending_ack = [entry_id for entry_id, _ in entries]
            got += len(entries)
        await r.xack(stream, GROUP, *pending_ack)
        elapsed = time.perf_counter() - start
        await r.delete(stream)
    finally:
        await r.aclose()
    return n / elapsed


async def latency(port: int, rate: int, seconds: float, size: int = 100) -> Recorder:
    """XADD-to-XREADGROUP latency at ``rate`` records/s."""
    stream = _stream("latency")
    producer, consumer = client(port), client(port)
    try:
        await consumer.xgroup_create(stream, GROUP, id="$", mkstream=True)

        async def send_due(due: list[float]) -> None:
            await _xadd_many(producer, stream, [stamped(t, size) for t in due])

        async def receive(recorder: Recorder, total: int) -> None:
            clock = time.perf_counter
            while recorder.count < total:
                reply = await consumer.xreadgroup(
                    GROUP, b"c", {stream: ">"}, count=READ_COUNT, block=100
                )
                now = clock()
                if not reply:
                    continue
                entries = reply[0][1]
                for _, fields in entries:
                    observe(recorder, fields[FIELD], now)
                await consumer.xack(stream, GROUP, *(entry_id for entry_id, _ in entries))

        recorder = await run_open_loop(rate, seconds, send_due, receive)
        await producer.delete(stream)
        return recorder
    finally:
        await producer.aclose()
        await consumer.aclose()
