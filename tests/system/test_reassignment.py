"""Moving partitions in a real cluster (docs/CLUSTER.md, "Moving partitions"): the preferred
leader leads again after it returns, and a topic is reassigned from brokers {1,2,3} to
{3,4,5}, then rebalanced over all five, under an idempotent acks=all load, with the checker of
tests/system/test_replication.py finding nothing and every send acknowledged."""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import time
from collections import Counter
from pathlib import Path

from tidelog.client import AdminClient, Producer
from tidelog.server.cluster.records import NO_LEADER

from .cluster import Cluster, cluster
from .history import (
    PARTITIONS,
    TOPIC,
    History,
    batches,
    check,
    consume,
    final_log,
    produce,
)
from .test_replication import OPTIONS

TIDELOG = Path(sys.executable).with_name("tidelog")


async def cli(broker: str, *args: str) -> tuple[int, str, str]:
    """``tidelog --broker BROKER ARGS...`` as a subprocess: exit code, stdout, stderr."""
    proc = await asyncio.create_subprocess_exec(
        str(TIDELOG), "--broker", broker, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(120):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def in_sync(c: Cluster, topic: str, partitions: int, replicas: int) -> bool:
    states = c.partitions(topic)
    return len(states) == partitions and all(
        s.leader != NO_LEADER and len(s.isr) == len(s.replicas) == replicas and not s.target
        for s in states.values()
    )


def test_a_returning_broker_leads_its_preferred_partitions_again_once_in_sync(
    tmp_path: Path,
) -> None:
    with cluster(tmp_path, 3, options=OPTIONS) as c:
        addresses = ",".join(c.address(b) for b in (1, 2, 3))

        async def create_and_write(count: int) -> None:
            async with AdminClient(addresses) as admin:
                await admin.create_topic("pref", 3, if_not_exists=True)
            async with Producer(addresses, acks="all", enable_idempotence=True) as producer:
                for i in range(count):
                    await producer.send("pref", b"%d" % i, partition=i % 3)

        asyncio.run(create_and_write(30))
        c.wait_until("every replica in sync", lambda: in_sync(c, "pref", 3, 3))
        before = c.partitions("pref")
        assert {s.leader for s in before.values()} == {1, 2, 3}
        assert all(s.leader == s.replicas[0] for s in before.values())
        victim = before[0].leader
        preferred = sorted(p for p, s in before.items() if s.replicas[0] == victim)
        c.kill(victim)
        c.wait_until(
            "its partitions led elsewhere",
            lambda: all(
                c.partitions("pref")[p].leader not in (victim, NO_LEADER) for p in preferred
            ),
        )
        addresses = ",".join(c.address(b) for b in (1, 2, 3) if b != victim)
        asyncio.run(create_and_write(300))  # what it misses while it is down
        c.start(victim)
        took = c.wait_until(
            "the preferred replica leading again",
            lambda: all(c.partitions("pref")[p].leader == victim for p in preferred),
        )
        after = c.partitions("pref")
        print(f"\nbroker {victim} led its partitions {preferred} again {took:.1f}s after its start")
        for p in preferred:
            assert after[p].leader_epoch == before[p].leader_epoch + 2  # failover, then back
            assert victim in after[p].isr
        assert Counter(s.leader for s in after.values()) == {1: 1, 2: 1, 3: 1}


def test_reassignment_and_rebalance_under_load_fail_no_send_and_replicas_agree(
    tmp_path: Path,
) -> None:
    with cluster(tmp_path, 3, options=OPTIONS) as c:
        first = c.address(1)

        async def create() -> None:
            async with AdminClient(first) as admin:
                await admin.create_topic(TOPIC, PARTITIONS)

        asyncio.run(create())  # on brokers {1, 2, 3}: the only ones so far
        c.start(4)
        c.start(5)
        c.wait_until("five brokers", lambda: len(c.live_brokers()) == 5)
        c.wait_until("every replica in sync", lambda: in_sync(c, TOPIC, PARTITIONS, 3))
        assert all(set(s.replicas) == {1, 2, 3} for s in c.partitions(TOPIC).values())
        addresses = ",".join(c.address(b) for b in range(1, 6))

        async def run() -> tuple[History, dict[int, dict[int, str]], list[str], float, float]:
            history = History()
            stop = asyncio.Event()
            workers = [
                asyncio.ensure_future(produce(addresses, history, stop)),
                asyncio.ensure_future(consume(addresses, history, stop)),
            ]
            try:
                async with asyncio.timeout(30), history.acked:  # traffic flows first
                    await history.acked.wait_for(
                        lambda: sum(o.outcome == "ok" for o in history.ops) >= 100
                    )
                # Clear errors, nothing started.
                errors = [
                    (await cli(first, "topic", "reassign", TOPIC, "--replicas", "3,4,9"))[2],
                    (await cli(first, "topic", "reassign", TOPIC, "--replicas", "3,4"))[2],
                    (await cli(first, "topic", "reassign", "nope", "--replicas", "3,4,5"))[2],
                    (await cli(first, "topic", "reassign", TOPIC, "--replicas", "3,x"))[2],
                ]
                started = time.monotonic()
                code, out, err = await cli(
                    first, "--json", "topic", "reassign", TOPIC, "--replicas", "3,4,5", "--wait"
                )
                assert code == 0, err
                moved = json.loads(out)
                assert moved["state"] == "done" and len(moved["moves"]) == PARTITIONS
                reassigned = time.monotonic() - started
                started = time.monotonic()
                code, out, err = await cli(first, "--json", "cluster", "rebalance", "--wait")
                assert code == 0, err
                rebalanced = time.monotonic() - started
                before = len(history.ops)
                async with asyncio.timeout(30), history.acked:  # and keeps flowing after
                    await history.acked.wait_for(
                        lambda: sum(o.outcome == "ok" for o in history.ops[before:]) >= 100
                    )
            finally:
                stop.set()
                await asyncio.gather(*workers)
            return history, await final_log(addresses), errors, reassigned, rebalanced

        history, final, errors, reassigned, rebalanced = asyncio.run(run())
        states = c.partitions(TOPIC)
        ends = {p: len(final[p]) for p in range(PARTITIONS)}
        c.stop_all()

    assert "broker(s) [9] are not live brokers of the cluster" in errors[0], errors[0]
    assert "replication factor 3: name 3 broker(s), not 2" in errors[1], errors[1]
    assert "'nope'" in errors[2] and "does not exist" in errors[2], errors[2]
    assert "--replicas '3,x'" in errors[3], errors[3]
    failed = [o for o in history.ops if o.outcome != "ok"]
    ok = [o for o in history.ops if o.outcome == "ok"]
    acks = sorted(o.done for o in ok)
    longest = max((b - a for a, b in itertools.pairwise(acks)), default=0.0)
    print(
        f"\nreassigned to 3,4,5 in {reassigned:.1f}s, rebalanced over 1-5 in {rebalanced:.1f}s: "
        f"{len(ok)} acked, {len(failed)} not; longest time without an ack {longest:.2f}s; "
        f"final replicas {[states[p].replicas for p in range(PARTITIONS)]}"
    )
    assert not failed, [(o.value, o.outcome, o.error) for o in failed[:5]]
    violations = check(history, final)
    assert not violations, "\n".join(violations[:20])
    load = Counter(b for s in states.values() for b in s.replicas)
    assert max(load.values()) - min(load.values(), default=0) <= 1 and len(load) == 5
    for p, state in states.items():
        copies = [batches(tmp_path / f"broker-{b}", p, ends[p]) for b in state.replicas]
        assert all(copy == copies[0] for copy in copies), f"partition {p}: replicas differ"
        assert copies[0], f"partition {p}: no batch on disk"
        for b in set(range(1, 6)) - set(state.replicas):
            assert not batches(tmp_path / f"broker-{b}", p, ends[p]), f"{p} left on broker {b}"
