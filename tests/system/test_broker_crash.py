"""A broker process SIGKILLed in the middle of acks=all traffic, and restarted on the same data
dir and port: every acknowledged record is still there, unchanged, at the offset it was
acknowledged with; the producer, left running across the crash, reconnects by itself and goes
on producing.

The producer runs in this process's event loop, sending keyed records continuously; it is never
told about the crash. Records in flight at the kill are either acknowledged after the restart
(retried) or fail with a delivery timeout; unacknowledged ones may or may not be in the log.
"""

from __future__ import annotations

import asyncio
import functools
import random
import socket
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from tidelog.client import (
    AdminClient,
    Consumer,
    DeliveryTimeoutError,
    OffsetSpec,
    Producer,
    RecordFuture,
    TopicPartition,
)

from .procs import BrokerProcess

TOPIC = "crash"
PARTITIONS = 3
ROUNDS = 3
ACKED_PER_PHASE = 300
"""Acknowledged records to wait for before each kill and after each restart."""
MAX_PENDING = 500
"""Records sent but not yet acknowledged or failed: the stream waits for room above this."""
DEADLINE_S = 60.0
"""Bound on every wait for a condition (never a synchronisation device)."""

Row = tuple[bytes, bytes, tuple[tuple[str, bytes | None], ...], int]
"""key, value, headers, timestamp: what must come back unchanged."""


def fixed_port() -> int:
    """A free loopback port for both lives of the broker. Taken below the ephemeral range when
    possible, so no client's outgoing connection can be given it (and connect to itself)
    while the broker is down."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 0
    candidates = random.sample(range(20_000, low), min(50, low - 20_000)) if low > 20_050 else []
    for port in [*candidates, 0]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise AssertionError("no free port")


async def wait_until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)  # polling a condition with a deadline


class Stream:
    """Sends keyed records until stopped; remembers where each acknowledged one went."""

    def __init__(self, producer: Producer) -> None:
        self.producer = producer
        self.acked: dict[tuple[int, int], Row] = {}
        self.duplicate_acks: list[tuple[int, int]] = []
        self.failures: list[BaseException] = []
        self.stopped = asyncio.Event()
        self._room = asyncio.Semaphore(MAX_PENDING)

    async def run(self) -> int:
        """Send until :attr:`stopped` is set; returns how many records were sent."""
        i = 0
        while not self.stopped.is_set():
            await self._room.acquire()
            row: Row = (
                b"key-%d" % (i % 64),
                b"value-%d-" % i + b"x" * (i % 200),
                (("seq", b"%d" % i),),
                1_700_000_000_000 + i,
            )
            key, value, headers, timestamp = row
            future = await self.producer.send(
                TOPIC, value, key, timestamp=timestamp, headers=headers
            )
            future.add_done_callback(functools.partial(self._done, row=row))
            i += 1
        return i

    def _done(self, future: RecordFuture, *, row: Row) -> None:
        self._room.release()
        error = future.exception()
        if error is not None:
            self.failures.append(error)
            return
        meta = future.result()
        where = (meta.partition, meta.offset)
        if where in self.acked:
            self.duplicate_acks.append(where)
        self.acked[where] = row


async def read_everything(address: str) -> dict[int, list[Any]]:
    """Every record of every partition, from the log start to the end."""
    tps = [TopicPartition(TOPIC, p) for p in range(PARTITIONS)]
    async with AdminClient(address) as admin:
        starts = await admin.list_offsets(dict.fromkeys(tps, OffsetSpec.EARLIEST))
        ends = await admin.list_offsets(dict.fromkeys(tps, OffsetSpec.LATEST))
    assert all(starts[tp].offset == 0 for tp in tps)
    out: dict[int, list[Any]] = {p: [] for p in range(PARTITIONS)}
    async with Consumer(address, auto_offset_reset="earliest") as consumer:
        consumer.assign(tps)
        while any(len(out[tp.partition]) < ends[tp].offset for tp in tps):
            batch = await consumer.getmany(timeout=DEADLINE_S)
            assert batch, "the log ends before its reported end offset"
            for tp, records in batch.items():
                out[tp.partition].extend(records)
        for tp in tps:
            assert await consumer.position(tp) == ends[tp].offset
    return out


def test_acknowledged_records_survive_sigkill_and_the_producer_carries_on(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    port = fixed_port()
    address = f"127.0.0.1:{port}"

    async def main(stack: ExitStack) -> None:
        def start_broker() -> BrokerProcess:
            broker = BrokerProcess(data_dir, "--port", str(port), "--log-level", "WARNING")
            stack.callback(broker.__exit__)
            broker.start()
            assert broker.address == address
            return broker

        broker = await asyncio.to_thread(start_broker)
        async with AdminClient(address) as admin:
            await admin.create_topic(TOPIC, PARTITIONS)
        producer = Producer(
            address,
            acks="all",
            linger=0.002,
            delivery_timeout=30.0,
            retry_backoff=0.02,
            retry_backoff_max=0.2,
        )
        await producer.start()
        stream = Stream(producer)
        sending = asyncio.create_task(stream.run())
        try:
            for _ in range(ROUNDS):
                target = len(stream.acked) + ACKED_PER_PHASE
                await wait_until(lambda t=target: len(stream.acked) >= t, f"{target} acks")
                await asyncio.to_thread(broker.kill)  # mid-stream: requests are in flight
                at_kill = len(stream.acked)
                broker = await asyncio.to_thread(start_broker)
                # Nobody tells the producer: it reconnects to the same address by itself.
                target = at_kill + ACKED_PER_PHASE
                await wait_until(
                    lambda t=target: len(stream.acked) >= t, f"{target} acks after the restart"
                )
        finally:
            stream.stopped.set()
            sent = await sending
            await producer.flush(DEADLINE_S)
            await producer.close()

        assert sent >= len(stream.acked) + len(stream.failures)
        assert not stream.duplicate_acks, "two records acknowledged at the same offset"
        for error in stream.failures:
            assert isinstance(error, DeliveryTimeoutError), repr(error)

        log = await read_everything(address)
        for records in log.values():
            assert [r.offset for r in records] == list(range(len(records)))
        for (partition, offset), (key, value, headers, timestamp) in stream.acked.items():
            assert offset < len(log[partition]), f"acknowledged {TOPIC}[{partition}] {offset} lost"
            record = log[partition][offset]
            assert (record.key, record.value, record.headers, record.timestamp) == (
                key,
                value,
                headers,
                timestamp,
            ), f"acknowledged record at {TOPIC}[{partition}] offset {offset} changed"

    with ExitStack() as stack:
        asyncio.run(asyncio.wait_for(main(stack), 240))
