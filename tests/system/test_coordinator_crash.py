"""The group coordinator SIGKILLed while a group of 3 consumes and commits: the group resumes
with its epochs and assignments (docs/GROUPS.md, "Where group state lives").

Three real consumers (one process, one event loop) share 6 partitions, committing by hand
after every batch. The broker is SIGKILLed and restarted on the same port, several times
(``TIDELOG_GROUP_KILLS``, 3 in ``make test``, many in ``make soak``); after each restart it
waits until the members commit again and each has had a heartbeat answered (``heartbeats``),
and adds records. Checked:

* **no partition has two owners at once**: every ``on_assigned`` / ``on_revoked`` updates one
  ownership map shared by the three; a partition assigned while another member still owns it,
  or a record handed out by ``getmany()`` for a partition its member does not own, is a
  violation. The map is exact, not timed: a member's ``on_revoked`` runs before its next
  heartbeat tells the broker, which gives the partition to another member only after that, so
  a correct broker can never make the map see two owners. Today's code (group state only in
  memory) fails this: after a restart the first member to heartbeat is unknown, rejoins a
  group of one and gets all 6 partitions while the other two still own theirs;
* **member epochs never go back** per member id, across every restart, and **members
  continue**: each of the three keeps its member id throughout (they heartbeat within their
  session timeout, so none is removed, none loses its partitions, nothing is rebalanced). Today's
  code fails this at the first restart, deterministically;
* **committed offsets never move backwards**: every acknowledged commit is recorded; after
  each restart the broker reports, per partition, at least the highest offset acknowledged.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tidelog.client import AdminClient, Consumer, Producer, TopicPartition
from tidelog.client.errors import TidelogError

from .procs import BrokerProcess

DEADLINE_S = 60.0
TOPIC = "work"
PARTITIONS = 6
PER_PARTITION = 3_000
KILLS = int(os.environ.get("TIDELOG_GROUP_KILLS", "3"))
FAST_GROUPS = ("--group-heartbeat-interval-ms", "200", "--group-min-session-timeout-ms", "100")


@dataclass
class Ledger:
    """What the three members saw, and every rule they broke."""

    owner: dict[TopicPartition, str] = field(default_factory=dict)
    acked: dict[TopicPartition, int] = field(default_factory=dict)
    acks: int = 0
    epochs: dict[str, int] = field(default_factory=dict)
    member_ids: dict[str, set[str]] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    consumers: dict[str, Consumer] = field(default_factory=dict)

    def heartbeats(self) -> dict[str, int]:
        return {name: consumer.heartbeats for name, consumer in self.consumers.items()}

    def heartbeat_since(self, marks: dict[str, int]) -> bool:
        """Every member got a heartbeat (or join) answered since ``marks``."""
        now = self.heartbeats()
        return len(now) == 3 and all(now[name] > marks.get(name, 0) for name in now)

    def assigned(self, name: str, tps: frozenset[TopicPartition]) -> None:
        for tp in tps:
            other = self.owner.get(tp)
            if other is not None and other != name:
                self.violations.append(f"{tp} assigned to {name} while {other} owns it")
            self.owner[tp] = name

    def revoked(self, name: str, tps: frozenset[TopicPartition]) -> None:
        for tp in tps:
            if self.owner.get(tp) == name:
                del self.owner[tp]

    def epoch(self, name: str, member_id: str, epoch: int) -> None:
        if member_id:
            self.member_ids.setdefault(name, set()).add(member_id)
        if member_id and epoch < self.epochs.get(member_id, 0):
            self.violations.append(f"member {member_id} went from epoch {self.epochs[member_id]}")
        if member_id:
            self.epochs[member_id] = max(epoch, self.epochs.get(member_id, 0))

    def ack(self, tp: TopicPartition, offset: int) -> None:
        if offset < self.acked.get(tp, 0):
            self.violations.append(f"{tp}: commit {offset} acknowledged after {self.acked[tp]}")
        self.acked[tp] = max(offset, self.acked.get(tp, 0))
        self.acks += 1


async def produce(address: str) -> None:
    async with Producer(address, linger=0.005) as producer:
        futures = [
            await producer.send(TOPIC, b"%d" % i, partition=p)
            for p in range(PARTITIONS)
            for i in range(PER_PARTITION)
        ]
        await asyncio.gather(*futures)


async def member(name: str, address: str, ledger: Ledger, stop: asyncio.Event) -> None:
    consumer = Consumer(
        address,
        group_id="g",
        client_id=name,
        auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout=8.0,
        request_timeout=5.0,
    )
    ledger.consumers[name] = consumer

    def note(callback: Callable[[str, frozenset[TopicPartition]], None]) -> Callable[..., None]:
        def on_change(tps: frozenset[TopicPartition]) -> None:
            ledger.epoch(name, consumer.member_id, consumer.member_epoch)
            callback(name, tps)

        return on_change

    async with consumer:
        consumer.subscribe(
            [TOPIC], on_assigned=note(ledger.assigned), on_revoked=note(ledger.revoked)
        )
        while not stop.is_set():
            try:
                batch = await consumer.getmany(timeout=0.1, max_records=3)
            except TidelogError:
                await asyncio.sleep(0.05)  # the broker is down: back off
                continue
            ledger.epoch(name, consumer.member_id, consumer.member_epoch)
            offsets = {}
            for tp, records in batch.items():
                if ledger.owner.get(tp) != name:
                    ledger.violations.append(
                        f"{name} consumed {tp} owned by {ledger.owner.get(tp)}"
                    )
                offsets[tp] = records[-1].offset + 1
            if not offsets:
                continue
            try:
                await consumer.commit(offsets)
            except TidelogError:
                continue  # not acknowledged: not recorded
            for tp, offset in offsets.items():
                ledger.ack(tp, offset)


async def wait_until(condition: Callable[[], bool], what: str, ledger: Ledger) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert not ledger.violations, ledger.violations
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)  # polling a condition with a deadline


def settled(ledger: Ledger) -> bool:
    return len(ledger.owner) == PARTITIONS and len(set(ledger.owner.values())) == 3


async def check_committed(address: str, acked: dict[TopicPartition, int]) -> None:
    async with AdminClient(address) as admin:
        committed = await admin.list_committed("g")
    for tp, offset in acked.items():
        assert committed[tp].offset >= offset, (tp, committed[tp].offset, offset)


def test_a_group_resumes_after_coordinator_sigkills(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ledger = Ledger()

    async def main() -> None:
        broker = BrokerProcess(data, *FAST_GROUPS).start()
        port = broker.address.rsplit(":", 1)[1]
        stop = asyncio.Event()
        members: list[asyncio.Task[None]] = []
        try:
            async with AdminClient(broker.address) as admin:
                await admin.create_topic(TOPIC, PARTITIONS)
            await produce(broker.address)
            members = [asyncio.create_task(member(n, broker.address, ledger, stop)) for n in "abc"]
            await wait_until(lambda: settled(ledger), "3 members own the 6 partitions", ledger)
            for _ in range(KILLS):
                before = ledger.acks
                await wait_until(lambda b=before: ledger.acks >= b + 10, "commits", ledger)
                broker.__exit__()  # SIGKILL
                marks = ledger.heartbeats()  # answered by the broker just killed, at most
                acked = dict(ledger.acked)
                broker = BrokerProcess(data, "--port", port, *FAST_GROUPS).start()
                await check_committed(broker.address, acked)
                await produce(broker.address)  # more work: waiting for heartbeats takes time
                after = ledger.acks
                # The members must also have got a heartbeat through to the new broker before
                # the next kill: otherwise kills in quick succession (each interrupting a held
                # heartbeat) add up to a session timeout without one, and each member rightly
                # gives up its membership and joins again with a new id.
                await wait_until(
                    lambda a=after, h=marks: (
                        settled(ledger) and ledger.acks >= a + 10 and ledger.heartbeat_since(h)
                    ),
                    "the group consuming again and every member heartbeating",
                    ledger,
                )
            stop.set()
            await asyncio.wait_for(asyncio.gather(*members), DEADLINE_S)
            await check_committed(broker.address, ledger.acked)
        finally:
            stop.set()
            for task in members:
                task.cancel()
            await asyncio.gather(*members, return_exceptions=True)
            broker.__exit__()

    asyncio.run(asyncio.wait_for(main(), DEADLINE_S * (2 + KILLS)))
    assert not ledger.violations, ledger.violations
    # Every member heartbeat within its session timeout across every restart, so each one
    # continued as the same member: nobody lost its partitions, nothing was rebalanced.
    assert {name: len(ids) for name, ids in ledger.member_ids.items()} == dict.fromkeys("abc", 1)
