"""Replication under leader SIGKILLs, checked Jepsen-style (docs/CLUSTER.md, "Replication";
the invariants of the reliability note).

Three brokers, replication factor 3, min_insync_replicas 2. An idempotent acks=all producer
(30 s delivery timeout) writes unique values while a consumer reads; the leader of a partition
is SIGKILLed and started again, ``TIDELOG_REPLICATION_KILLS`` times (20 in ``make test``).
Every send is recorded (invoke, then ok / fail / info), every consumer read too, and an offline
checker looks for: an acknowledged write missing from the final log (I1), a value twice (I2),
values out of send order (I3), two values at one offset (I4), a consumer read that is not in
the final log at its offset (I5), a write that failed definitely but is visible (I6). After the
run the replicas' files hold the same batches up to the high watermark.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from tidelog.client import AdminClient, Consumer, OffsetSpec, Producer, TopicPartition
from tidelog.server.cluster.records import NO_LEADER
from tidelog.wire.errors import BrokerError, ErrorCode, TidelogError
from tidelog.wire.records import iter_batches

from .cluster import LEASE_TTL_S, Cluster, cluster

KILLS = int(os.environ.get("TIDELOG_REPLICATION_KILLS", "20"))
TOPIC = "jepsen"
PARTITIONS = 2
RESUME_WITHIN_S = LEASE_TTL_S + 5.0
OPTIONS = ("--replication-factor", "3", "--min-insync-replicas", "2")


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
                    raise  # e.g. OFFSET_OUT_OF_RANGE below what was read: a violation
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


def settled(c: Cluster) -> bool:
    states = c.partitions(TOPIC)
    return len(states) == PARTITIONS and all(
        s.leader != NO_LEADER and len(s.isr) == 3 for s in states.values()
    )


async def kill_loop(c: Cluster, history: History) -> list[float]:
    """SIGKILL the leader of a partition and start it again; the seconds until the first
    acknowledgement of that partition after each kill."""
    gaps = []
    for i in range(KILLS):
        await asyncio.to_thread(c.wait_until, "every replica in sync", lambda: settled(c), 60)
        partition = i % PARTITIONS
        victim = (await asyncio.to_thread(c.partitions, TOPIC))[partition].leader
        killed = time.monotonic()
        await asyncio.to_thread(c.kill, victim)
        async with asyncio.timeout(RESUME_WITHIN_S), history.acked:
            await history.acked.wait_for(
                lambda p=partition, t=killed: history.last_ack(p) > t  # type: ignore[misc]
            )
        gaps.append(history.last_ack(partition) - killed)
        await asyncio.to_thread(c.start, victim)
    return gaps


def test_leader_sigkills_lose_no_acknowledged_write_and_replicas_agree(tmp_path: Path) -> None:
    with cluster(tmp_path, 3, options=OPTIONS) as c:
        addresses = ",".join(c.address(b) for b in (1, 2, 3))

        async def run() -> tuple[History, list[float], dict[int, dict[int, str]], float]:
            async with AdminClient(addresses) as admin:
                await admin.create_topic(TOPIC, PARTITIONS)
            history = History()
            stop = asyncio.Event()
            started = time.monotonic()
            workers = [
                asyncio.ensure_future(produce(addresses, history, stop)),
                asyncio.ensure_future(consume(addresses, history, stop)),
            ]
            try:
                gaps = await kill_loop(c, history)
                await asyncio.to_thread(c.wait_until, "every replica in sync", lambda: settled(c))
            finally:
                stop.set()
                await asyncio.gather(*workers)
            elapsed = time.monotonic() - started
            addresses_now = ",".join(c.address(b) for b in (1, 2, 3))
            return history, gaps, await final_log(addresses_now), elapsed

        history, gaps, final, elapsed = asyncio.run(run())
        c.wait_until("every replica in sync", lambda: settled(c))
        ends = {p: len(final[p]) for p in range(PARTITIONS)}
        c.stop_all()

    ok = [o for o in history.ops if o.outcome == "ok"]
    outcomes = {k: sum(o.outcome == k for o in history.ops) for k in ("ok", "fail", "info")}
    acks = sorted(o.done for o in ok)
    longest = max((b - a for a, b in itertools.pairwise(acks)), default=0.0)
    print(
        f"\n{KILLS} leader kills in {elapsed:.1f}s: {outcomes}, {len(ok) / elapsed:.0f} acked "
        f"writes/s, longest time without an ack {longest:.2f}s, acks resumed after "
        f"{max(gaps):.2f}s at most (median {sorted(gaps)[len(gaps) // 2]:.2f}s)"
    )
    violations = check(history, final)
    assert not violations, "\n".join(violations[:20])
    assert len(ok) > KILLS * 10
    for p in range(PARTITIONS):
        copies = [batches(tmp_path / f"broker-{b}", p, ends[p]) for b in (1, 2, 3)]
        assert copies[0] == copies[1] == copies[2], f"partition {p}: replicas differ"
        assert copies[0], f"partition {p}: no batch on disk"


def test_controlled_shutdown_of_each_broker_in_turn_fails_no_send(tmp_path: Path) -> None:
    """SIGTERM each broker in turn under load (and start it again): its leaderships move to
    in-sync followers before it stops, so every send succeeds, and the checker finds nothing."""
    with cluster(tmp_path, 3, options=OPTIONS) as c:
        addresses = ",".join(c.address(b) for b in (1, 2, 3))

        async def run() -> tuple[History, dict[int, dict[int, str]]]:
            async with AdminClient(addresses) as admin:
                await admin.create_topic(TOPIC, PARTITIONS)
            history = History()
            stop = asyncio.Event()
            workers = [
                asyncio.ensure_future(produce(addresses, history, stop)),
                asyncio.ensure_future(consume(addresses, history, stop)),
            ]
            try:
                for broker in (1, 2, 3):
                    await asyncio.to_thread(
                        c.wait_until, "every replica in sync", lambda: settled(c), 60
                    )
                    before = len(history.ops)
                    assert await asyncio.to_thread(c.brokers[broker].terminate) == 0
                    c.brokers[broker].close()  # its pipes
                    async with asyncio.timeout(30), history.acked:  # sends go on meanwhile
                        await history.acked.wait_for(
                            lambda b=before: sum(o.outcome == "ok" for o in history.ops[b:]) >= 50
                        )
                    await asyncio.to_thread(c.start, broker)
                await asyncio.to_thread(c.wait_until, "every replica in sync", lambda: settled(c))
            finally:
                stop.set()
                await asyncio.gather(*workers)
            return history, await final_log(",".join(c.address(b) for b in (1, 2, 3)))

        history, final = asyncio.run(run())
    failed = [o for o in history.ops if o.outcome != "ok"]
    ok = [o for o in history.ops if o.outcome == "ok"]
    acks = sorted(o.done for o in ok)
    longest = max((b - a for a, b in itertools.pairwise(acks)), default=0.0)
    print(
        f"\n3 controlled shutdowns: {len(ok)} acked, {len(failed)} not; "
        f"longest time without an ack {longest:.2f}s"
    )
    assert not failed, [(o.value, o.outcome, o.error) for o in failed[:5]]
    violations = check(history, final)
    assert not violations, "\n".join(violations[:20])
