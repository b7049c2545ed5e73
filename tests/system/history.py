"""A Jepsen-style history of sends and reads, and the offline checker of the reliability note's
invariants I1-I6 (``tests/system/test_replication*.py``).

Every send is recorded (invoke, then ok / fail / info when the outcome is unknown), every
consumer read too; :func:`check` compares them with the final log: an acknowledged write missing
from it (I1), a value twice (I2), values out of send order (I3), two values at one offset (I4), a
consumer read that is not in the final log at its offset (I5), a write that failed definitely
but is visible (I6). :func:`batches` reads a replica's files, to compare replicas batch by batch.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import zlib
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from tidelog.client import AdminClient, Consumer, OffsetSpec, Producer, TopicPartition
from tidelog.server.cluster.records import NO_LEADER
from tidelog.wire.errors import BrokerError, ErrorCode, TidelogError
from tidelog.wire.records import iter_batches

from .cluster import Cluster

TOPIC = "jepsen"
PARTITIONS = 2
T = TypeVar("T")


@dataclass(slots=True)
class Op:
    value: str
    partition: int
    seq: int
    invoked: float
    outcome: str = "invoke"  # then ok, fail or info (outcome unknown)
    offset: int = -1
    done: float = 0.0
    error: str = ""


@dataclass
class History:
    ops: list[Op] = field(default_factory=list)
    reads: list[tuple[int, int, str]] = field(default_factory=list)
    acked: asyncio.Condition = field(default_factory=asyncio.Condition)
    consumer_error: str = ""
    """Why the consumer stopped early (a non-retriable error): a violation :func:`check`
    reports beside the others."""

    def invoke(self, partition: int) -> Op:
        op = Op(f"v{len(self.ops)}", partition, len(self.ops), time.monotonic())
        self.ops.append(op)
        return op

    def last_ack(self, partition: int) -> float:
        return max((o.done for o in self.ops if o.outcome == "ok" and o.partition == partition),
                   default=0.0)  # fmt: skip


async def settle(history: History, op: Op, future: asyncio.Future[object]) -> None:
    try:
        metadata = await future
    except BrokerError as exc:
        definite = not exc.retriable and exc.code != ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND
        op.outcome, op.error = ("fail" if definite else "info"), repr(exc)
    except TidelogError as exc:  # a delivery timeout: an attempt may have been written
        op.outcome, op.error = "info", repr(exc)
    else:
        op.outcome, op.offset = "ok", metadata.offset  # type: ignore[attr-defined]
    op.done = time.monotonic()
    async with history.acked:
        history.acked.notify_all()


async def produce(address: str, history: History, stop: asyncio.Event) -> None:
    pending: set[asyncio.Task[None]] = set()
    async with Producer(
        address, acks="all", enable_idempotence=True, delivery_timeout=30.0, linger=0.002
    ) as producer:
        while not stop.is_set():
            op = history.invoke(len(history.ops) % PARTITIONS)
            future = await producer.send(TOPIC, op.value.encode(), partition=op.partition)
            task = asyncio.ensure_future(settle(history, op, future))
            pending.add(task)
            task.add_done_callback(pending.discard)
            await asyncio.sleep(0.002)  # pacing: about 400 sends a second
        await asyncio.gather(*pending)


async def consume(address: str, history: History, stop: asyncio.Event) -> None:
    async with Consumer(address, auto_offset_reset="earliest") as consumer:
        consumer.assign([TopicPartition(TOPIC, p) for p in range(PARTITIONS)])
        while not stop.is_set():
            try:
                batch = await consumer.getmany(timeout=0.2)
            except TidelogError as exc:
                if not getattr(exc, "retriable", False):
                    # e.g. OFFSET_OUT_OF_RANGE below what was read: a violation, reported
                    # by check() with the rest of the history
                    history.consumer_error = repr(exc)
                    return
                continue  # a leader change; the consumer finds the new one
            for tp, records in batch.items():
                for r in records:
                    history.reads.append((tp.partition, r.offset, r.value.decode()))


async def final_log(address: str) -> dict[int, dict[int, str]]:
    """Every partition's records below its high watermark, with every broker up."""
    tps = [TopicPartition(TOPIC, p) for p in range(PARTITIONS)]
    async with AdminClient(address) as admin:
        ends = await admin.list_offsets(dict.fromkeys(tps, OffsetSpec.LATEST))
    out: dict[int, dict[int, str]] = defaultdict(dict)
    async with Consumer(address, auto_offset_reset="earliest") as consumer:
        consumer.assign(tps)
        async with asyncio.timeout(60):
            while any(len(out[tp.partition]) < ends[tp].offset for tp in tps):
                for tp, records in (await consumer.getmany(timeout=1.0)).items():
                    for r in records:
                        if r.offset < ends[tp].offset:
                            out[tp.partition][r.offset] = r.value.decode()
    return out


def check(history: History, final: dict[int, dict[int, str]]) -> list[str]:
    """The violations of I1-I6 in ``history`` against the final log."""
    bad: list[str] = []
    if history.consumer_error:
        bad.append(f"I5 the consumer stopped: {history.consumer_error}")
    where: dict[str, tuple[int, int]] = {}
    for p, records in final.items():
        seqs = []
        for offset, value in sorted(records.items()):
            if value in where:
                bad.append(f"I2 duplicate: {value} at {where[value]} and {(p, offset)}")
            where[value] = (p, offset)
            seqs.append(int(value[1:]))
        if seqs != sorted(seqs):
            bad.append(f"I3 partition {p}: values out of send order")
    for op in history.ops:
        if op.outcome == "ok" and where.get(op.value) != (op.partition, op.offset):
            bad.append(f"I1 acknowledged {op.value} at {op.offset}: final {where.get(op.value)}")
        if op.outcome == "fail" and op.value in where:
            bad.append(f"I6 failed {op.value} ({op.error}) is visible at {where[op.value]}")
    seen: dict[tuple[int, int], str] = {}
    for p, offset, value in history.reads:
        if seen.setdefault((p, offset), value) != value:
            bad.append(f"I4 {(p, offset)} read as {seen[p, offset]} and as {value}")
        if final[p].get(offset) != value:
            bad.append(f"I5 read {value} at {(p, offset)}; final log: {final[p].get(offset)}")
    return bad


def batches(data_dir: Path, partition: int, below: int) -> list[tuple[int, int, int]]:
    """(base offset, leader epoch, CRC-32 of the stored bytes) of each batch on disk below
    ``below`` (a torn tail past the high watermark is cut at the next start anyway)."""
    out = []
    for segment in sorted((data_dir / f"{TOPIC}-{partition}").glob("*.log")):
        data = segment.read_bytes()
        try:
            for batch in iter_batches(data):
                if batch.base_offset < below:
                    out.append((batch.base_offset, batch.leader_epoch, zlib.crc32(batch.buffer)))
        except TidelogError:
            pass  # the torn tail of a killed broker
    return out


def settled(c: Cluster, factor: int, topic: str = TOPIC, partitions: int = PARTITIONS) -> bool:
    """Every partition of ``topic`` has a leader and ``factor`` in-sync replicas."""
    states = c.partitions(topic)
    return len(states) == partitions and all(
        s.leader != NO_LEADER and len(s.isr) == factor for s in states.values()
    )


async def under_load(
    c: Cluster, factor: int, min_isr: int, fault: Callable[[History], Awaitable[T]]
) -> tuple[History, T, dict[int, dict[int, str]], float]:
    """Create the topic with ``factor`` replicas and ``min_isr``, run a producer and a consumer
    while ``fault`` runs, then let every replica catch up: the history, what ``fault``
    returned, the final log and the seconds the load ran."""
    addresses = ",".join(c.address(b) for b in sorted(c.brokers))
    async with AdminClient(addresses) as admin:
        configs = {"min_insync_replicas": str(min_isr)}
        await admin.create_topic(TOPIC, PARTITIONS, factor, configs)
    history = History()
    stop = asyncio.Event()
    started = time.monotonic()
    workers = [
        asyncio.ensure_future(produce(addresses, history, stop)),
        asyncio.ensure_future(consume(addresses, history, stop)),
    ]
    try:
        result = await fault(history)
        await asyncio.to_thread(c.wait_until, "every replica in sync", lambda: settled(c, factor))
    finally:
        stop.set()
        await asyncio.gather(*workers)
    elapsed = time.monotonic() - started
    final = await final_log(",".join(c.address(b) for b in sorted(c.brokers)))
    return history, result, final, elapsed


def summary(history: History, elapsed: float) -> str:
    """Outcome counts, acknowledged writes a second and the longest time without an ack."""
    ok = [o for o in history.ops if o.outcome == "ok"]
    outcomes = {k: sum(o.outcome == k for o in history.ops) for k in ("ok", "fail", "info")}
    acks = sorted(o.done for o in ok)
    longest = max((b - a for a, b in itertools.pairwise(acks)), default=0.0)
    return (
        f"{outcomes}, {len(ok) / elapsed:.0f} acked writes/s, "
        f"longest time without an ack {longest:.2f}s"
    )


def assert_replicas_agree(c: Cluster, final: dict[int, dict[int, str]]) -> None:
    """Stop every broker; then each partition's replicas hold the same batches (CRCs) below the
    high watermark."""
    states = c.partitions(TOPIC)
    c.stop_all()
    for p in range(PARTITIONS):
        below = len(final[p])
        copies = [batches(c.root / f"broker-{b}", p, below) for b in states[p].replicas]
        assert all(copy == copies[0] for copy in copies), f"partition {p}: replicas differ"
        assert copies[0], f"partition {p}: no batch on disk"
