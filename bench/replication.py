"""Replication: failover time after a leader's SIGKILL, and acks=all at factor 3 against 1.

One 3-broker cluster over a real etcd (Debian's etcd-server), the brokers' default lease TTL
(3 s) unless ``--lease-ttl`` says otherwise; one client process.

* **Throughput**: 100 B keyed records, acks=all (idempotent), 6 partitions, into a topic of
  replication factor 3 (min ISR 2) and one of factor 1, interleaved runs in the same cluster.
  Reported: records/s and the brokers' CPU-seconds (user + system, from /proc, summed over
  the three brokers) per million records, and that divided by the replication factor: the
  CPU each copy of a record costs.
* **Failover**: an idempotent acks=all producer (30 s delivery timeout) sends to a topic of
  one partition, factor 3, min ISR 2, every 2 ms. The partition's leader is SIGKILLed
  ``--kills`` times (once every replica is back in the ISR); the failover time is from the
  SIGKILL to the first acknowledgement after it, which only the new leader can give. The
  killed broker is started again each time.

    python bench/replication.py --records 200000 --runs 3 --kills 20
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import uvloop
from cluster import run_side
from harness import BrokerProc, machine, spawn_broker, spread, stop_process

from tidelog.client import AdminClient, Producer
from tidelog.etcd import EtcdClient, EtcdProcess
from tidelog.server.cluster.records import ClusterKeys, PartitionState, decode

CLUSTER_ID = "bench"
FAILOVER_TOPIC = "failover"
DEADLINE_S = 60.0


class Brokers:
    """Brokers 1-3 on their own data dirs, started again on the same dir after a kill."""

    def __init__(self, root: Path, etcd: str, lease_ttl: int) -> None:
        self.root = root
        self.args = (
            "--etcd", etcd, "--cluster-id", CLUSTER_ID, "--etcd-lease-ttl-s", str(lease_ttl),
            "--replication-factor", "3", "--min-insync-replicas", "2",
        )  # fmt: skip
        self.procs: dict[int, BrokerProc] = {}

    def start(self, broker_id: int) -> None:
        data = self.root / f"broker-{broker_id}"
        data.mkdir(exist_ok=True)
        with open(self.root / f"broker-{broker_id}.log", "a") as log:
            self.procs[broker_id] = spawn_broker(
                str(data), "--broker-id", str(broker_id), *self.args, stderr=log
            )

    def kill(self, broker_id: int) -> None:
        proc = self.procs[broker_id].proc
        proc.kill()  # SIGKILL, by this child's PID
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def stop_all(self) -> None:
        for broker in self.procs.values():
            stop_process(broker.proc, grace=30.0)
            if broker.proc.stdout is not None:
                broker.proc.stdout.close()

    def addresses(self) -> str:
        return ",".join(b.address for b in self.procs.values())


def throughput(brokers: Brokers, records: int, runs: int) -> dict[int, list[tuple[float, float]]]:
    """Per replication factor: (records/s, broker CPU-s per million records) of each run."""
    out: dict[int, list[tuple[float, float]]] = {3: [], 1: []}
    for run in range(runs):
        for factor in out:
            procs = list(brokers.procs.values())
            out[factor].append(run_side(procs, f"f{factor}-{run}", records, factor))
    return out


async def leader_in_sync(etcd: str) -> int:
    """The failover partition's leader once every replica is in its ISR."""
    key = ClusterKeys(CLUSTER_ID).partition(FAILOVER_TOPIC, 0)
    deadline = time.monotonic() + DEADLINE_S
    async with EtcdClient([etcd]) as client:
        while time.monotonic() < deadline:
            kv = await client.get(key)
            state = None if kv is None else decode(kv.value, PartitionState)
            if state is not None and len(state.isr) == 3 and state.leader > 0:
                return state.leader
            await asyncio.sleep(0.05)  # polling etcd, with a deadline
    raise RuntimeError(f"every replica in sync: not within {DEADLINE_S:g}s")


async def failover(brokers: Brokers, etcd: str, kills: int) -> list[float]:
    """The seconds from each leader SIGKILL to the first acknowledgement of a send made after
    it: the dead leader cannot have received that send, so the new leader answered it."""
    async with AdminClient(brokers.addresses()) as admin:
        await admin.create_topic(FAILOVER_TOPIC, 1, 3, {"min_insync_replicas": "2"})
    acked = asyncio.Condition()
    acks: list[tuple[float, float]] = []  # (sent, acknowledged)
    errors: list[BaseException] = []
    stop = asyncio.Event()

    async def settle(sent: float, future: asyncio.Future[object]) -> None:
        try:
            await future
        except Exception as exc:  # counted and reported: the bench goes on
            errors.append(exc)
            return
        async with acked:
            acks.append((sent, time.monotonic()))
            acked.notify_all()

    async def send() -> None:
        pending: set[asyncio.Task[None]] = set()
        async with Producer(
            brokers.addresses(), acks="all", enable_idempotence=True, delivery_timeout=30.0
        ) as producer:
            while not stop.is_set():
                sent = time.monotonic()
                future = await producer.send(FAILOVER_TOPIC, b"x" * 100, partition=0)
                task = asyncio.create_task(settle(sent, future))
                pending.add(task)
                task.add_done_callback(pending.discard)
                await asyncio.sleep(0.002)  # pacing: about 400 sends a second
            await asyncio.gather(*pending)

    sender = asyncio.create_task(send())
    gaps = []
    try:
        for _ in range(kills):
            victim = await leader_in_sync(etcd)
            killed = time.monotonic()
            await asyncio.to_thread(brokers.kill, victim)
            async with asyncio.timeout(DEADLINE_S), acked:
                await acked.wait_for(lambda k=killed: any(s > k for s, _ in acks))  # type: ignore[misc]
            gaps.append(min(a for s, a in acks if s > killed) - killed)
            await asyncio.to_thread(brokers.start, victim)
    finally:
        stop.set()
        await sender
    if errors:
        print(f"  {len(errors)} sends failed, the first: {errors[0]!r}")
    return gaps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--lease-ttl", type=int, default=3)
    args = parser.parse_args()
    with ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tidelog-repl-")))
        etcd = stack.enter_context(EtcdProcess(root / "etcd"))
        brokers = Brokers(root, etcd.endpoint, args.lease_ttl)
        stack.callback(brokers.stop_all)
        for b in (1, 2, 3):
            brokers.start(b)
        rows = throughput(brokers, args.records, args.runs)
        gaps = uvloop.run(failover(brokers, etcd.endpoint, args.kills))
    print(f"acks=all produce, 100 B, 6 partitions, {args.records:,} records x {args.runs} "
          f"interleaved runs, 3 brokers ({machine()})")  # fmt: skip
    for factor, runs in rows.items():
        cpu = statistics.median(c for _, c in runs)
        print(
            f"  factor {factor}: {spread([r for r, _ in runs])} records/s, {cpu:.2f} broker "
            f"CPU-s per million records, {cpu / factor:.2f} per replica"
        )
    print(
        f"failover, lease TTL {args.lease_ttl} s, {len(gaps)} leader SIGKILLs: median "
        f"{statistics.median(gaps):.2f} s, max {max(gaps):.2f} s, min {min(gaps):.2f} s"
    )
    sys.exit(0)


if __name__ == "__main__":
    main()
