"""The corruption soak (issue 12): a broker process, stopped cleanly or SIGKILLed, its files
damaged at random between two runs -- bit flips, truncations and deleted files in random
segments and indexes, flipped checkpoints and topic files -- then started again, round after
round. Each round it must start (refusing only when its metadata is ambiguous, naming the file
and the fix), take more acks=all records, and serve every partition from the beginning to a
fresh consumer. Checked every round:

* no intact acknowledged record is lost: every one is read back, unless a fault hit its batch
  (:mod:`.corruption` says which offsets each fault may cost);
* no corrupt record reaches the application: each record read is the one acknowledged at that
  offset, byte for byte;
* no record is handed out twice: offsets only go up between a consumer's explicit seeks
  (past the ranges the broker reports damaged or missing) -- for the fresh consumer of each
  round, and for one *tail* consumer that lives through every broker restart and reads what
  each round adds.

``make test`` runs 40 rounds; ``TIDELOG_CORRUPTION_ROUNDS=400`` (``make soak``) runs more.
``TIDELOG_CORRUPTION_SEED`` replays a run (the seed is in every failure message).
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tidelog.client import AdminClient, Consumer, OffsetSpec, Producer, TopicPartition
from tidelog.wire.errors import TidelogError, UnreadableRangeError

from .corruption import Damager, Shadow
from .test_broker_crash import fixed_port

ROUNDS = int(os.environ.get("TIDELOG_CORRUPTION_ROUNDS", "40"))
SEED = int(os.environ.get("TIDELOG_CORRUPTION_SEED", str(random.randrange(2**32))))
TOPIC = "soak"
PARTITIONS = 2
DEADLINE_S = 60.0
"""Bound on every wait (a broker start, a read): never a synchronisation device."""


def value_of(seq: int) -> bytes:
    """The value of record ``seq``: its bytes depend on ``seq`` alone."""
    rng = random.Random(seq)
    return f"{seq}|".encode() + rng.randbytes(rng.randrange(10, 400))


@dataclass
class Figures:
    rounds: int = 0
    clean_restarts: int = 0
    unclean_restarts: int = 0
    refusals: int = 0
    acknowledged: int = 0
    checked: int = 0
    tailed: int = 0
    tail_seeks: int = 0
    unreadable_ranges: int = 0
    allowed_lost: int = 0
    lost: int = 0
    corrupt: int = 0
    duplicates: int = 0
    failures: list[str] = field(default_factory=list)


class Broker:
    """``python -m tidelog.server`` on the soak's data directory."""

    def __init__(self, data_dir: Path, port: int) -> None:
        self.data_dir = data_dir
        self.port = port
        self.proc: subprocess.Popen[str] | None = None
        self.address = ""
        self.output: list[str] = []

    def start(self) -> bool:
        """Start; ``False`` if the broker refused (its output is in ``output``)."""
        self.output = []
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tidelog.server",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--data-dir",
                str(self.data_dir),
                "--scrub-bytes-per-second",
                "1000000000",
                "--log-level",
                "WARNING",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        found = threading.Event()

        def read() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                self.output.append(line)
                if "listening on" in line:
                    self.address = line.rsplit(" ", 1)[1].strip()
                    found.set()
            found.set()

        self.reader = threading.Thread(target=read, daemon=True)
        self.reader.start()
        assert found.wait(DEADLINE_S), "the broker neither started nor exited"
        if self.address and self.proc.poll() is None:
            return True
        self._reap()
        return False

    def _reap(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        self.proc.wait(DEADLINE_S)
        self.reader.join(DEADLINE_S)
        self.proc.stdout.close()

    def stop(self, *, clean: bool) -> None:
        assert self.proc is not None
        if clean:
            self.proc.terminate()
        else:
            self.proc.kill()
        self._reap()
        assert self.proc.returncode == (0 if clean else -9), "".join(self.output)
        self.address = ""


async def produce(address: str, first: int, count: int) -> dict[int, tuple[int, int]]:
    """Records ``first .. first + count - 1`` with acks=all: (partition, offset) of each."""
    async with Producer(address, acks="all", linger=0.002, batch_size=2048) as producer:
        futures = [
            await producer.send(
                TOPIC, value_of(seq), key=str(seq).encode(), partition=seq % PARTITIONS
            )
            for seq in range(first, first + count)
        ]
        await producer.flush()
    return {first + i: (f.result().partition, f.result().offset) for i, f in enumerate(futures)}


async def read_back(
    address: str, partition: int, acked: dict[tuple[int, int], int], figures: Figures, where: str
) -> set[int]:
    """Every readable offset of ``partition``, from the start to the end, checked."""
    tp = TopicPartition(TOPIC, partition)
    async with AdminClient(address) as admin:
        end = (await admin.list_offsets({tp: OffsetSpec.LATEST}))[tp].offset
    seen: set[int] = set()
    async with Consumer(address, fetch_max_wait=0.05, request_timeout=DEADLINE_S) as consumer:
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        last = -1
        while await consumer.position(tp) < end:
            try:
                batch = await consumer.getmany(timeout=DEADLINE_S)
            except UnreadableRangeError as exc:
                figures.unreadable_ranges += 1
                consumer.seek(tp, exc.next_offset)  # the explicit choice to skip it
                last = -1
                continue
            assert batch, f"{where}: partition {partition} stuck at {await consumer.position(tp)}"
            for record in batch[tp]:
                figures.checked += 1
                if record.offset <= last:
                    figures.duplicates += 1
                    figures.failures.append(f"{where}: offset {record.offset} after {last}")
                last = record.offset
                seq = acked.get((partition, record.offset))
                if seq is None or record.key != str(seq).encode() or record.value != value_of(seq):
                    figures.corrupt += 1
                    figures.failures.append(f"{where}: wrong record at {partition}/{record.offset}")
                seen.add(record.offset)
    return seen


class Tail:
    """One consumer of every partition that lives through every broker restart: each round it
    reads what the round added and must never hand a record out twice."""

    def __init__(self, address: str) -> None:
        self.consumer = Consumer(
            address,
            auto_offset_reset="earliest",
            fetch_max_wait=0.05,
            request_timeout=DEADLINE_S,
            retry_backoff_max=0.2,
        )
        self.last = dict.fromkeys(range(PARTITIONS), -1)

    async def start(self) -> None:
        await self.consumer.start()
        self.consumer.assign([TopicPartition(TOPIC, p) for p in range(PARTITIONS)])

    async def catch_up(
        self, ends: dict[int, int], acked: dict[tuple[int, int], int], figures: Figures, where: str
    ) -> None:
        c = self.consumer
        for p, end in ends.items():
            tp = TopicPartition(TOPIC, p)
            while True:
                try:
                    if await c.position(tp) >= end:
                        break
                    batch = await c.getmany(tp, timeout=DEADLINE_S)
                except TidelogError as exc:  # damaged, missing, or the log ends below us
                    figures.tail_seeks += 1
                    resume = exc.next_offset if isinstance(exc, UnreadableRangeError) else end
                    c.seek(tp, resume)  # the explicit choice to go on there
                    self.last[p] = -1
                    continue
                assert batch, f"{where}: the tail consumer is stuck in partition {p}"
                for record in batch[tp]:
                    figures.tailed += 1
                    if record.offset <= self.last[p]:
                        figures.duplicates += 1
                        figures.failures.append(f"{where}: tail got {record.offset} again")
                    self.last[p] = record.offset
                    seq = acked.get((p, record.offset))
                    if seq is None or record.value != value_of(seq):
                        figures.corrupt += 1
                        figures.failures.append(f"{where}: tail got a wrong record at {p}")


async def one_round(
    rng: random.Random,
    broker: Broker,
    tail: Tail,
    acked: dict[tuple[int, int], int],
    next_seq: int,
    hit: set[int],
    figures: Figures,
    where: str,
) -> int:
    """Produce, read everything back and check it; returns the next sequence number."""
    count = rng.randrange(20, 100)
    for seq, place in (await produce(broker.address, next_seq, count)).items():
        acked[place] = seq
    figures.acknowledged += count
    ends = {}
    for partition in range(PARTITIONS):
        seen = await read_back(broker.address, partition, acked, figures, where)
        ends[partition] = max((o + 1 for (p, o) in acked if p == partition), default=0)
        lost = {
            offset
            for (p, offset), seq in acked.items()
            if p == partition and offset not in seen and seq not in hit
        }
        if lost:
            figures.lost += len(lost)
            figures.failures.append(
                f"{where}: intact records lost in {partition}: {sorted(lost)[:10]}"
            )
    await tail.catch_up(ends, acked, figures, where)
    return next_seq + count


def damage(
    rng: random.Random, damager: Damager, data: Path, acked: dict[tuple[int, int], int]
) -> set[int]:
    """Faults on the stopped broker's files; the records (by sequence number) they hit. (By
    sequence number: a log that lost its newest records may give their offsets to new ones.)"""
    ends = {p: max((o + 1 for (q, o) in acked if q == p), default=0) for p in range(PARTITIONS)}
    damager.shadow.learn(ends)
    damager.lost.clear()
    for _ in range(rng.choice([1, 1, 2, 3])):
        damager.random_fault(data / "topics" / f"{TOPIC}.json")
    return {acked[place] for place in damager.lost if place in acked}


def ambiguous_metadata(data: Path, rng: random.Random) -> None:
    """Damage the topic file and one of its copies: the broker cannot tell what it held."""
    topic_file = data / "topics" / f"{TOPIC}.json"
    whole = topic_file.read_bytes()
    topic_file.write_bytes(whole[: len(whole) // 2])
    copy = data / f"{TOPIC}-{rng.randrange(PARTITIONS)}" / "partition.metadata"
    copy.write_bytes(b"garbage")


@pytest.mark.slow
@pytest.mark.timeout(max(300, ROUNDS * 10))
def test_damage_never_costs_intact_data_and_never_reaches_a_consumer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = random.Random(SEED)
    data = tmp_path / "data"
    broker = Broker(data, fixed_port())
    damager = Damager(Shadow(data), rng)
    figures = Figures()
    acked: dict[tuple[int, int], int] = {}
    hit: set[int] = set()

    async def restart(where: str) -> None:
        clean = rng.random() < 0.5
        await asyncio.to_thread(broker.stop, clean=clean)
        figures.clean_restarts += clean
        figures.unclean_restarts += not clean
        topic_file = data / "topics" / f"{TOPIC}.json"
        backup = topic_file.read_bytes()  # before this round's faults, which may flip it too
        hit.update(damage(rng, damager, data, acked))
        if rng.random() < 0.02:
            ambiguous_metadata(data, rng)
            assert not await asyncio.to_thread(broker.start), (
                f"{where}: started on ambiguous metadata"
            )
            refusal = "".join(broker.output)
            assert f"{TOPIC}.json" in refusal and "Restore" in refusal, f"{where}: {refusal}"
            figures.refusals += 1
            topic_file.write_bytes(backup)  # the operator's fix: the file from a backup
        started = await asyncio.to_thread(broker.start)
        assert started, f"{where}: the broker refused to start: {''.join(broker.output)}"

    async def main() -> None:
        assert await asyncio.to_thread(broker.start), "".join(broker.output)
        async with AdminClient(broker.address) as admin:
            await admin.create_topic(
                TOPIC, PARTITIONS, configs={"segment_bytes": "8192", "index_interval_bytes": "512"}
            )
        tail = Tail(broker.address)
        await tail.start()
        try:
            next_seq = 0
            for round_ in range(ROUNDS):
                where = f"seed {SEED}, round {round_}"
                next_seq = await asyncio.wait_for(
                    one_round(rng, broker, tail, acked, next_seq, hit, figures, where),
                    DEADLINE_S * 4,
                )
                assert not figures.failures, "\n".join(figures.failures[:20])
                await restart(where)
                figures.rounds += 1
        finally:
            await tail.consumer.close()

    asyncio.run(main())
    broker.stop(clean=True)
    figures.allowed_lost = len(hit)
    counts = damager.counts
    with capsys.disabled():
        print(
            f"\ncorruption soak, seed {SEED}: {figures.rounds} rounds "
            f"({figures.clean_restarts} clean, {figures.unclean_restarts} unclean restarts, "
            f"{figures.refusals} refusals on ambiguous metadata); faults: {counts.flips} bit "
            f"flips ({counts.framing_flips} in batch framing), {counts.truncations} "
            f"truncations, {counts.deleted_segments} deleted segments, {counts.index_faults} "
            f"index faults, {counts.metadata_faults} checkpoint/topic-file flips; "
            f"{figures.acknowledged} records acknowledged, {figures.checked} records checked "
            f"by fresh consumers and {figures.tailed} by the tail consumer "
            f"({figures.tail_seeks} explicit seeks), "
            f"{figures.unreadable_ranges} unreadable ranges skipped by seek, "
            f"{figures.allowed_lost} records hit by faults; lost {figures.lost}, "
            f"corrupt delivered {figures.corrupt}, duplicates {figures.duplicates}"
        )
    assert (figures.lost, figures.corrupt, figures.duplicates) == (0, 0, 0)
