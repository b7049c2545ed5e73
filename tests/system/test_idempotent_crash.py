"""The SIGKILL loop with the idempotent producer: a broker process is SIGKILLed again and again
in the middle of acks=all traffic and restarted on the same data dir and port, while one
producer (idempotence on, the default) keeps sending through every crash. Afterwards: no
acknowledged record is lost, no record is in the log twice, and each partition holds its
records in the order they were sent.

Every batch in flight at a kill is retried after the restart; the broker rebuilds its producer
table from the log (nothing was snapshotted: it never closed cleanly) and answers the batches it
already has with their original offsets instead of appending them again. Without idempotence
the same loop writes thousands of duplicates.

``make test`` runs 30 kills; ``TIDELOG_IDEMPOTENCE_KILLS`` runs more (``make soak``).
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

from tidelog.client import AdminClient, Backoff, Cluster, DeliveryTimeoutError, Producer

from .procs import BrokerProcess
from .test_broker_crash import (
    DEADLINE_S,
    PARTITIONS,
    TOPIC,
    Stream,
    fixed_port,
    read_everything,
    wait_until,
)

KILLS = int(os.environ.get("TIDELOG_IDEMPOTENCE_KILLS", "30"))
ACKED_PER_LIFE = 60
"""Acknowledged records to wait for in each life of the broker before killing it."""


def number(value: bytes) -> int:
    """The send order of a record of :class:`Stream`: its value is ``value-<i>-x...``."""
    return int(value.split(b"-")[1])


def test_no_acknowledged_record_is_lost_or_duplicated_across_sigkills(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    port = fixed_port()
    address = f"127.0.0.1:{port}"

    async def main(stack: ExitStack) -> None:
        def start_broker() -> BrokerProcess:
            broker = BrokerProcess(data_dir, "--port", str(port), "--log-level", "ERROR")
            stack.callback(broker.__exit__)
            return broker.start()

        broker = await asyncio.to_thread(start_broker)
        async with AdminClient(address) as admin:
            await admin.create_topic(TOPIC, PARTITIONS)
        # Quick reconnects: the broker is back within a second, every time.
        cluster = Cluster(address, reconnect_backoff=Backoff(0.01, 0.1))
        producer = Producer(
            address,
            cluster=cluster,
            linger=0.002,
            batch_size=4096,
            delivery_timeout=60.0,
            retry_backoff=0.01,
            retry_backoff_max=0.1,
        )
        assert producer.enable_idempotence
        await producer.start()
        stream = Stream(producer)
        sending = asyncio.create_task(stream.run())
        try:
            for _ in range(KILLS):
                target = len(stream.acked) + ACKED_PER_LIFE
                await wait_until(lambda t=target: len(stream.acked) >= t, f"{target} acks")
                await asyncio.to_thread(broker.kill)  # mid-stream: requests are in flight
                broker = await asyncio.to_thread(start_broker)
            target = len(stream.acked) + ACKED_PER_LIFE
            await wait_until(lambda t=target: len(stream.acked) >= t, "acks after the last kill")
        finally:
            stream.stopped.set()
            sent = await sending
            await producer.flush(DEADLINE_S)
            await producer.close()

        log = await read_everything(address)
        counts = Counter(number(r.value) for records in log.values() for r in records)
        duplicates = sum(c - 1 for c in counts.values())
        lost = [
            (p, offset)
            for (p, offset), row in stream.acked.items()
            if offset >= len(log[p])
            or (log[p][offset].key, log[p][offset].value, log[p][offset].headers) != row[:3]
        ]
        print(
            f"\n{KILLS} kills: {sent} records sent, {len(stream.acked)} acknowledged, "
            f"{len(stream.failures)} failed, {len(lost)} acknowledged records lost or moved, "
            f"{duplicates} duplicates"
        )
        assert duplicates == 0, f"{duplicates} records are in the log more than once"
        assert not lost, f"acknowledged records lost or not where acknowledged: {lost[:10]}"
        assert not stream.duplicate_acks, "two records acknowledged at the same offset"
        for partition, records in log.items():
            numbers = [number(r.value) for r in records]
            assert numbers == sorted(numbers), f"partition {partition} is out of order"
        assert set(counts) <= set(range(sent))
        for error in stream.failures:
            assert isinstance(error, DeliveryTimeoutError), repr(error)

    with ExitStack() as stack:
        asyncio.run(asyncio.wait_for(main(stack), 240))
