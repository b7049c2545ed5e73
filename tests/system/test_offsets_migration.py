"""A broker started on a data directory written by the code before ``__consumer_offsets``
became a topic (tests/data/legacy-offsets, see tests/data/make_legacy_offsets.py) serves the
same committed offsets, and keeps them across a SIGKILL after the migration."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from tests.data.make_legacy_offsets import EXPECTED
from tidelog.client import AdminClient

from .procs import BrokerProcess

DATA = Path(__file__).parents[1] / "data"


async def committed(address: str) -> dict[str, dict[tuple[str, int], tuple[int, str]]]:
    async with AdminClient(address) as admin:
        groups = sorted(g.group_id for g in await admin.list_groups())
        return {
            g: {
                (tp.topic, tp.partition): (o.offset, o.metadata)
                for tp, o in (await admin.list_committed(g)).items()
            }
            for g in groups
        }


def test_a_broker_migrates_the_old_offsets_store(tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(DATA / "legacy-offsets", data)
    with BrokerProcess(data) as broker:
        assert asyncio.run(committed(broker.address)) == EXPECTED
        assert any("migrated the committed offsets" in line for line in broker.stderr_lines)
        broker.kill()
    assert not (data / "__consumer_offsets").exists()
    assert [p.name for p in data.glob("__consumer_offsets.migrated-*")]
    with BrokerProcess(data) as broker:
        assert asyncio.run(committed(broker.address)) == EXPECTED
