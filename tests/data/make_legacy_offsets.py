"""Writes ``tests/data/legacy-offsets/``: a data directory whose committed offsets are in the
pre-0.x offsets store (``<data_dir>/__consumer_offsets/``: a log plus snapshots), made by the
broker of commit fe1d929 (the code before offsets moved into the ``__consumer_offsets`` topic).

Run once with that code checked out (``python tests/data/make_legacy_offsets.py``); the result
is committed, and tests/unit/groups/test_migration.py migrates copies of it. What it holds is
listed in :data:`EXPECTED` (the test reads the same table back after the migration):

* a first broker run commits offsets (some twice) and deletes a group, then stops cleanly, so
  the old store writes its snapshot;
* a second run commits more (over some earlier offsets) and is SIGKILLed, so the old log has
  records after the snapshot and no clean-shutdown marker.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from tests.system.procs import BrokerProcess  # noqa: E402
from tidelog.client import AdminClient  # noqa: E402
from tidelog.client.connection import Connection  # noqa: E402
from tidelog.wire import messages as m  # noqa: E402

TARGET = HERE / "legacy-offsets"

# group -> (topic, partition) -> (offset, metadata): what the migrated store must hold.
EXPECTED: dict[str, dict[tuple[str, int], tuple[int, str]]] = {
    "billing": {("orders", 0): (42, "m-0"), ("orders", 1): (7, ""), ("orders", 2): (100, "")},
    "audit": {("orders", 0): (5, ""), ("payments", 0): (9, "after-restart")},
    "late": {("payments", 0): (3, "only-in-log")},
}


async def commit(address: str, group: str, offsets: dict[tuple[str, int], tuple[int, str]]) -> None:
    host, port = address.rsplit(":", 1)
    conn = await Connection.open(host, int(port))
    try:
        request = m.OffsetCommitRequest(
            group,
            tuple(m.OffsetCommitPartition(t, p, o, md) for (t, p), (o, md) in offsets.items()),
        )
        response = await conn.call(request, m.OffsetCommitResponse)
        assert response.error_code == 0, response
        assert all(r.error_code == 0 for r in response.partitions), response
    finally:
        await conn.close()


async def first_run(address: str) -> None:
    async with AdminClient(address) as admin:
        await admin.create_topic("orders", partitions=3)
        await admin.create_topic("payments", partitions=1)
    await commit(address, "billing", {("orders", 0): (10, ""), ("orders", 1): (7, "")})
    await commit(address, "billing", {("orders", 0): (20, "m-0")})
    await commit(address, "audit", {("orders", 0): (5, ""), ("payments", 0): (1, "")})
    await commit(address, "gone", {("orders", 2): (11, "")})
    async with AdminClient(address) as admin:
        await admin.delete_groups(["gone"])


async def second_run(address: str) -> None:
    await commit(address, "billing", {("orders", 0): (42, "m-0"), ("orders", 2): (100, "")})
    await commit(address, "audit", {("payments", 0): (9, "after-restart")})
    await commit(address, "late", {("payments", 0): (3, "only-in-log")})


def main() -> None:
    if TARGET.exists():
        shutil.rmtree(TARGET)
    with BrokerProcess(TARGET) as broker:
        asyncio.run(first_run(broker.address))
        assert broker.terminate() == 0
    with BrokerProcess(TARGET) as broker:
        asyncio.run(second_run(broker.address))
        broker.kill()
    (TARGET / ".lock").unlink(missing_ok=True)
    print(f"wrote {TARGET}")


if __name__ == "__main__":
    main()
