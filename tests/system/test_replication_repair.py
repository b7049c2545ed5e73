"""A damaged range on a follower is fetched again from the leader (issue 18: "a damaged range
found on one replica is fetched again from an in-sync replica").

Three brokers, factor 3. A follower is stopped, one byte in the middle of its segment is flipped
(a disk's bit rot), and it is started again: its scrubber finds the batch that fails its CRC
and isolates it, the replica fetcher asks the leader for those offsets, and the log writes them
over the damage. Checked: the follower's segment is byte for byte what it was before the flip,
its damage list is empty, and it said it restored the range.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from tidelog.client import AdminClient, Producer

from .cluster import cluster
from .history import settled

OPTIONS = ("--replication-factor", "3", "--min-insync-replicas", "2")
SEGMENT = "00000000000000000000.log"


async def fill(address: str) -> None:
    async with AdminClient(address) as admin:
        await admin.create_topic("t", 1, 3)
    async with Producer(address, acks="all", linger=0) as producer:
        for batch in range(20):  # 20 batches of 10: the flip hits one of them
            for i in range(10):
                await producer.send("t", f"{batch}-{i}".encode() * 10, partition=0)
            await producer.flush()


def test_a_follower_restores_a_damaged_range_from_the_leader(tmp_path: Path) -> None:
    with cluster(tmp_path, 3, options=OPTIONS) as c:
        asyncio.run(fill(",".join(c.address(b) for b in sorted(c.brokers))))
        c.wait_until("every replica in sync", lambda: settled(c, 3, "t", 1), 60)
        leader = c.partitions("t")[0].leader
        follower = next(b for b in sorted(c.brokers) if b != leader)
        directory = tmp_path / f"broker-{follower}" / "t-0"
        assert c.brokers[follower].terminate() == 0
        c.brokers[follower].close()
        segment = directory / SEGMENT
        original = segment.read_bytes()
        damaged = bytearray(original)
        damaged[len(damaged) // 2] ^= 0x40  # inside a batch: its CRC fails
        segment.write_bytes(bytes(damaged))
        proc = c.start(follower)

        def restored() -> bool:
            said = any("restored from another replica" in line for line in proc.stderr_lines)
            return said and segment.read_bytes() == original

        c.wait_until("the damaged range restored", restored, 60)
        assert not (directory / "damaged-ranges.json").exists()  # no damage left to list
        c.wait_until("every replica in sync", lambda: settled(c, 3, "t", 1), 60)
