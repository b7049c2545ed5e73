"""The OpenMessaging Benchmark's ``1-topic-16-partitions-1kb`` workload against tidelog.

OMB (openmessaging/benchmark, ``workloads/1-topic-16-partitions-1kb.yaml``): one topic of 16
partitions, 1 KB messages without keys, one producer publishing at a fixed rate (50,000
messages/s here, as the issue asks) and one consumer, a warm-up, then a measured phase. OMB
reports two latencies and so does this:

* **publish**: from the time a message was *due* (open loop: a stall counts against every
  message it delays) to its acknowledgement (acks=all, idempotent: the client's defaults);
* **end to end**: from the time it was due to the consumer's hands.

The producer uses OMB's Kafka driver settings: linger 1 ms, batches up to 1 MiB. Broker and
client share this machine (docs/BENCHMARKS.md says what it has)::

    cd bench && ../.venv/bin/python omb.py --rate 50000 --seconds 30
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

from harness import broker_process, cpu_seconds, machine
from openloop import STAMP, Recorder, observe, pace

from tidelog.client import AdminClient, Consumer, Producer, TopicPartition

TOPIC = "omb-1-topic-16-partitions-1kb"


async def workload(
    address: str, rate: int, seconds: float, warmup: float, size: int, partitions: int, api: str
) -> tuple[Recorder, Recorder, float]:
    """Publish and end-to-end latency recorders of the measured phase, and the rate reached."""
    async with AdminClient(address) as admin:
        await admin.create_topic(TOPIC, partitions)
    publish, e2e = Recorder(), Recorder()
    measuring = [False]
    padding = os.urandom(size - STAMP.size)
    async with (
        Producer(address, acks="all", linger=0.001, batch_size=1 << 20) as producer,
        Consumer(address, auto_offset_reset="earliest", fetch_max_wait=0.1) as consumer,
    ):
        consumer.assign([TopicPartition(TOPIC, p) for p in range(partitions)])
        clock = time.perf_counter

        def acked(due: float, record: Recorder) -> None:
            if measuring[0]:
                record.record((clock() - due) * 1e6)

        async def send_each(due: list[float]) -> None:
            for t in due:
                future = await producer.send(TOPIC, STAMP.pack(t) + padding)
                future.add_done_callback(lambda _, t=t: acked(t, publish))

        pending: set[asyncio.Task[None]] = set()

        async def send_bulk(due: list[float]) -> None:
            done = await producer.send_many(TOPIC, [STAMP.pack(t) + padding for t in due])

            async def record() -> None:
                await done  # every record of the call: when the last of them is acknowledged
                for t in due:
                    acked(t, publish)

            task = asyncio.ensure_future(record())
            pending.add(task)
            task.add_done_callback(pending.discard)

        send_due = send_each if api == "send" else send_bulk

        received = [0]
        expected = [-1]  # known once the producer is done
        stop, caught_up = asyncio.Event(), asyncio.Event()

        async def receive() -> None:
            while not stop.is_set():
                batches = await consumer.getmany(timeout=0.1)
                now = clock()
                for records in batches.values():
                    for record in records:
                        received[0] += 1
                        if measuring[0]:
                            assert record.value is not None
                            observe(e2e, record.value, now)
                if 0 <= expected[0] <= received[0]:
                    caught_up.set()

        reader = asyncio.ensure_future(receive())
        try:
            await pace(rate, warmup, send_due)
            measuring[0] = True
            start = clock()
            sent = await pace(rate, seconds, send_due)
            elapsed = clock() - start
            await producer.flush()
            expected[0] = int(rate * warmup) + sent
            async with asyncio.timeout(60):
                await caught_up.wait()
        finally:
            stop.set()
            await asyncio.gather(reader, return_exceptions=True)
    return publish, e2e, sent / elapsed


def row(name: str, r: Recorder) -> str:
    s = r.summary()
    return f"| {name} | {s['p50']:.2f} | {s['p99']:.2f} | {s['p99.9']:.2f} | {s['max']:.2f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=50_000, help="messages/s published")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured phase")
    parser.add_argument("--warmup", type=float, default=10.0, help="warm-up phase")
    parser.add_argument("--size", type=int, default=1024, help="message bytes")
    parser.add_argument("--partitions", type=int, default=16)
    parser.add_argument(
        "--api", choices=("send", "send_many"), default="send",
        help="send(): a future per message, as OMB's producers; send_many(): what is due in "
        "one call (its messages count as acknowledged when the last of them is)",
    )  # fmt: skip
    args = parser.parse_args()
    with broker_process() as broker:
        cpu_before = cpu_seconds(broker.proc.pid)
        publish, e2e, reached = asyncio.run(
            workload(broker.address, args.rate, args.seconds, args.warmup, args.size,
                     args.partitions, args.api)
        )  # fmt: skip
        cpu_after = cpu_seconds(broker.proc.pid)
    busy = (cpu_after - cpu_before) / (args.seconds + args.warmup)
    print(f"\nOMB 1-topic-{args.partitions}-partitions-{args.size}b, {machine()}")
    print(
        f"rate asked {args.rate:,}/s, reached {reached:,.0f}/s "
        f"({reached * args.size / 1e6:.1f} MB/s), acks=all, {args.api}(); "
        f"broker CPU {busy:.2f} cores\n"
    )
    print("| latency (ms) | p50 | p99 | p99.9 | max |")
    print("|---|---|---|---|---|")
    print(row("publish (due to ack)", publish))
    print(row("end to end (due to consumer)", e2e))


if __name__ == "__main__":
    main()
