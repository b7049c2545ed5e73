"""run_workers through the real client against a real broker: concurrency, ack on success,
nack on an exception, a handler over its time, and a graceful stop."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

from tidelog.client import QueueConsumer, QueueMessage, alter_queue, describe_queue, run_workers

from .helpers import broker, create_topic, run
from .test_queue import FakeClock, produce, shares


def test_workers_ack_every_message_once_and_retry_failures(tmp_path: Path) -> None:
    async def main() -> None:
        async with broker(tmp_path) as b:
            shares(b, FakeClock())  # locks never expire; the backoff is 0 below
            await create_topic(b.address, "jobs", 1)
            await alter_queue(b.address, "g", backoff_base_ms=0)
            await produce(b.address, "jobs", 100)
            done, stop = Counter[bytes](), asyncio.Event()
            running, most = 0, 0
            all_four = asyncio.Event()
            failed: list[int] = []

            async def handle(message: QueueMessage) -> None:
                nonlocal running, most
                assert message.value is not None
                running += 1
                most = max(most, running)
                if running == 4:
                    all_four.set()
                try:
                    await all_four.wait()  # the first ones wait until 4 run at once
                    if message.value == b"m7" and message.delivery_count == 1:
                        failed.append(message.delivery_count)
                        raise ValueError("flaky")
                    done[message.value] += 1
                    if len(done) == 100:
                        stop.set()
                finally:
                    running -= 1

            queue = QueueConsumer(b.address, "g", "jobs", max_records=10)
            await queue.start()
            await run_workers(queue, handle, concurrency=4, stop=stop)
            assert len(done) == 100 and set(done.values()) == {1}
            assert most == 4
            assert failed == [1]
            status = await describe_queue(b.address, "g")
            [p] = status.partitions
            assert (p.acked, p.in_flight, p.start_offset) == (100, 0, 100)

    run(main())


def test_a_handler_over_its_time_is_released_and_retried(tmp_path: Path) -> None:
    async def main() -> None:
        async with broker(tmp_path) as b:
            shares(b, FakeClock())
            await create_topic(b.address, "jobs", 1)
            await produce(b.address, "jobs", 1)
            stop = asyncio.Event()
            counts: list[int] = []

            async def handle(message: QueueMessage) -> None:
                counts.append(message.delivery_count)
                if message.delivery_count == 1:
                    await asyncio.Event().wait()  # hangs: cancelled at handler_timeout
                stop.set()

            queue = QueueConsumer(b.address, "g", "jobs")
            await queue.start()
            await run_workers(queue, handle, handler_timeout=0.2, stop=stop)
            assert counts == [1, 2]
            [p] = (await describe_queue(b.address, "g")).partitions
            assert (p.acked, p.in_flight) == (1, 0)

    run(main())


def test_a_stop_lets_handlers_finish_and_releases_the_rest(tmp_path: Path) -> None:
    async def main() -> None:
        async with broker(tmp_path) as b:
            shares(b, FakeClock())
            await create_topic(b.address, "jobs", 1)
            await produce(b.address, "jobs", 5)
            stop, started = asyncio.Event(), asyncio.Event()

            async def handle(message: QueueMessage) -> None:
                started.set()
                await stop.wait()
                await asyncio.sleep(0.2)  # its work goes on after the stop

            queue = QueueConsumer(b.address, "g", "jobs", max_records=5)
            await queue.start()
            workers = asyncio.create_task(run_workers(queue, handle, stop=stop))
            await started.wait()
            stop.set()  # one handler runs; four messages wait in the buffer
            await workers
            [p] = (await describe_queue(b.address, "g")).partitions
            assert (p.acked, p.in_flight, p.redeliverable) == (1, 0, 4)
            async with QueueConsumer(b.address, "g", "jobs") as again:
                message = await asyncio.wait_for(anext(again), 10)
                assert message.delivery_count == 2  # released by the close

    run(main())
