"""The real consumer against a real broker whose log was damaged between two runs (issue 12):
a lost segment and flipped bits after a clean shutdown each give one specific error with
where data resumes -- never a record twice, never a corrupt one -- and the broker reports
the damage in DescribeLogDirs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tidelog.client import AdminClient, Consumer, Producer, TopicPartition
from tidelog.wire.errors import DamagedRangeError, MissingRangeError, TidelogError
from tidelog.wire.records import iter_batches

from .helpers import broker, create_topic, run

pytestmark = pytest.mark.storage_bound  # damaged files on disk

TP = TopicPartition("events", 0)
RECORDS = 300


async def fill(data: Path) -> None:
    async with broker(data, scrub_bytes_per_second=0) as b:
        # Many small batches over several segments: max_message_bytes also bounds how far
        # the idempotent producer's batches grow while its window is full (client/growth.py).
        await create_topic(b.address, "events", segment_bytes="4096", max_message_bytes="600")
        async with Producer(b.address, linger=0, batch_size=600) as producer:
            for i in range(RECORDS):
                await producer.send("events", f"value-{i}".encode(), key=str(i).encode())
            await producer.flush()


async def read_all(address: str, **kwargs: Any) -> tuple[list[int], TidelogError | None]:
    """Offsets handed out from the beginning until the end or an error."""
    got: list[int] = []
    async with Consumer(address, auto_offset_reset="earliest", fetch_max_wait=0.05, **kwargs) as c:
        c.assign([TP])
        while not got or got[-1] < RECORDS - 1:
            try:
                batch = await c.getmany(timeout=5.0)
            except TidelogError as exc:
                return got, exc
            assert batch, f"no records after {got[-1:]}"
            for record in batch[TP]:
                assert record.value == f"value-{record.offset}".encode()
                got.append(record.offset)
    return got, None


def segments(data: Path) -> list[Path]:
    return sorted((data / "events-0").glob("*.log"))


def test_a_lost_segment_is_one_error_with_where_data_resumes(tmp_path: Path) -> None:
    async def main() -> None:
        await fill(tmp_path)
        victim = segments(tmp_path)[1]
        start = int(victim.name[:20])
        end = int(segments(tmp_path)[2].name[:20])
        victim.unlink()
        async with broker(tmp_path) as b:
            got, error = await read_all(b.address)
            assert got == list(range(start))
            assert isinstance(error, MissingRangeError)
            assert (error.start_offset, error.next_offset) == (start, end)
            got, error = await read_all(b.address, skip_unreadable=True)
            assert (got, error) == ([*range(start), *range(end, RECORDS)], None)
            async with AdminClient(b.address) as admin:
                (described,) = await admin.describe_log_dirs(["events"])
            (partition,) = described.partitions
            assert [(u.start_offset, u.end_offset, u.kind) for u in partition.unreadable] == [
                (start, end, "missing")
            ]

    run(main())


def test_bits_flipped_after_a_clean_shutdown_are_found_when_a_consumer_meets_them(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        await fill(tmp_path)
        victim = segments(tmp_path)[2]
        raw = bytearray(victim.read_bytes())
        batch = list(iter_batches(bytes(raw)))[1]
        position = raw.index(bytes(batch.buffer))
        raw[position + batch.size - 4] ^= 0x20  # inside its records
        victim.write_bytes(bytes(raw))
        async with broker(tmp_path, scrub_bytes_per_second=0) as b:
            got, error = await read_all(b.address)
            assert got == list(range(batch.base_offset))
            assert isinstance(error, DamagedRangeError)
            assert (error.start_offset, error.next_offset) == (batch.base_offset, batch.next_offset)
            async with Consumer(b.address, fetch_max_wait=0.05) as c:
                c.assign([TP])
                c.seek(TP, error.next_offset)
                first = await c.getone()
                assert first.offset == batch.next_offset

    run(main())


def test_the_broker_reports_scrubbed_damage_in_describe_log_dirs(tmp_path: Path) -> None:
    async def main() -> None:
        await fill(tmp_path)
        victim = segments(tmp_path)[1]
        raw = bytearray(victim.read_bytes())
        raw[200] ^= 0x01
        victim.write_bytes(bytes(raw))
        async with broker(tmp_path, scrub_bytes_per_second=0) as b:
            await b.core.manager.scrubber.scrub_once()
            async with AdminClient(b.address) as admin:
                (described,) = await admin.describe_log_dirs(["events"])
            (partition,) = described.partitions
            (unreadable,) = partition.unreadable
            assert unreadable.kind == "damaged"
            assert victim.name in unreadable.detail

    run(main())
