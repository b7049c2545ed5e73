"""Dead-letter topics through QueueAdmin against a real broker: list, show, redrive (filters,
headers, resuming after an interruption), purge. The pacer's rate is driven by a fake clock."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tidelog.client import (
    ClientUsageError,
    QueueAdmin,
    QueueConsumer,
    TopicPartition,
    alter_queue,
)
from tidelog.client.deadletters import Pacer

from .helpers import broker, consume_all, create_topic, run
from .test_queue import FakeClock, produce, shares, take


async def dead_letter(address: str, count: int, reasons: list[str]) -> None:
    """Take ``count`` jobs and reject each with the next of ``reasons`` (cycled)."""
    async with QueueConsumer(address, "g", "jobs") as q:
        for i in range(count):
            message = await take(q)
            await message.reject(reasons[i % len(reasons)])


def test_list_show_redrive_by_reason_and_purge(tmp_path: Path) -> None:
    async def main() -> None:
        async with broker(tmp_path) as b:
            shares(b, FakeClock())
            await create_topic(b.address, "jobs", 1)
            await produce(b.address, "jobs", 4)
            await dead_letter(b.address, 4, ["bad input", "timeout"])
            admin = QueueAdmin(b.address)
            letters = await admin.list("jobs.dlq")
            assert [x.offset for x in letters] == [0, 1, 2, 3]
            assert letters[0].context["error"] == "bad input"
            assert letters[0].reason == "rejected"
            assert letters[0].source == TopicPartition("jobs", 0)
            assert all(not k.startswith("tidelog.dlq.") for k, _ in letters[0].headers)
            shown = await admin.show("jobs.dlq", 2)
            assert shown is not None and shown.value == b"m2"
            assert await admin.show("jobs.dlq", 9) is None

            result = await admin.redrive("jobs.dlq", offsets=[(0, 1), (0, 3)])
            assert (result.redriven, result.skipped) == (2, 1)  # offset 2 is looked at, left
            back = await consume_all(b.address, [TopicPartition("jobs", 0)], 6)
            redriven = back[4:]
            assert [r.value for r in redriven] == [b"m1", b"m3"]
            for r in redriven:
                h = dict(r.headers)
                assert h["tidelog.redrive_count"] == b"1"
                assert not any(k.startswith("tidelog.dlq.") for k in h)
            # a redriven job is a new job: delivered again from count 1; rejected again, it
            # keeps its redrive count in the dead-letter topic
            async with QueueConsumer(b.address, "g", "jobs") as q:
                again = await take(q)
                assert (again.value, again.delivery_count) == (b"m1", 1)
                await again.reject("still bad")
            [last] = await admin.list("jobs.dlq", start=4)
            assert (last.value, last.redrive_count) == (b"m1", 1)

            marks = await admin.purge("jobs.dlq", before=2)
            assert marks == {0: 2}
            assert [x.offset for x in await admin.list("jobs.dlq")] == [2, 3, 4]
            assert await admin.show("jobs.dlq", 1) is None
            assert await admin.purge("jobs.dlq", before=1) == {0: 2}  # never moves back
            await admin.purge("jobs.dlq")
            assert await admin.list("jobs.dlq") == []
            [p] = await admin.partitions("jobs.dlq")
            assert (p.size, p.purged_to, p.end) == (0, 5, 5)

    run(main())


def test_a_reason_filter_leaves_the_others_and_the_mark(tmp_path: Path) -> None:
    async def main() -> None:
        async with broker(tmp_path) as b:
            clock = FakeClock()
            coordinator = shares(b, clock)
            await create_topic(b.address, "jobs", 1)
            await alter_queue(b.address, "g", max_delivery_attempts=1)
            await produce(b.address, "jobs", 2)
            async with QueueConsumer(b.address, "g", "jobs", max_records=1) as q:
                await (await take(q)).reject("no")
                await take(q)
                clock.now += 10**9  # its lock expires: out of attempts, it is dead-lettered
                await coordinator.tick()
            admin = QueueAdmin(b.address)
            assert [x.reason for x in await admin.list("jobs.dlq")] == ["rejected", "lock_expired"]
            result = await admin.redrive("jobs.dlq", reasons={"lock_expired"})
            assert (result.redriven, result.skipped, result.next_offsets) == (1, 1, {0: 2})
            [p] = await admin.partitions("jobs.dlq")
            assert p.redriven_to == 0  # a filtered redrive leaves the full redrive's mark
            [back] = (await consume_all(b.address, [TopicPartition("jobs", 0)], 3))[2:]
            assert back.value == b"m1"

    run(main())


def test_an_interrupted_redrive_resumes_and_never_skips(tmp_path: Path) -> None:
    async def main() -> None:
        async with broker(tmp_path) as b:
            shares(b, FakeClock())
            await create_topic(b.address, "jobs", 1)
            await produce(b.address, "jobs", 5)
            await dead_letter(b.address, 5, ["x"])
            admin = QueueAdmin(b.address)

            def stop_at_three(sent: int) -> None:
                if sent == 3:
                    raise KeyboardInterrupt

            with pytest.raises(KeyboardInterrupt):
                await admin.redrive("jobs.dlq", rate=10_000, chunk=2, on_progress=stop_at_three)
            [p] = await admin.partitions("jobs.dlq")
            assert p.redriven_to == 2  # the confirmed chunk, not the record in flight
            result = await admin.redrive("jobs.dlq", rate=10_000, chunk=2)
            assert result.redriven == 3
            back = await consume_all(b.address, [TopicPartition("jobs", 0)], 5 + 6)
            values = [r.value for r in back[5:]]
            assert set(values) == {b"m0", b"m1", b"m2", b"m3", b"m4"}
            assert len(values) <= 5 + 2  # at most a chunk twice
            again = await admin.redrive("jobs.dlq", rate=10_000)
            assert again.redriven == 0  # resumed at the end: nothing left

    run(main())


def test_the_pacer_bounds_the_rate() -> None:
    async def main() -> None:
        now = [0.0]
        slept: list[float] = []

        async def sleep(seconds: float) -> None:
            slept.append(seconds)
            now[0] += seconds

        pacer = Pacer(5.0, clock=lambda: now[0], sleep=sleep)
        for _ in range(11):
            await pacer.wait()
        assert now[0] == pytest.approx(2.0)  # 11 records at 5/s: the last at 2 s
        with pytest.raises(ClientUsageError):
            Pacer(0)

    asyncio.run(main())
