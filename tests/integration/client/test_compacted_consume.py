"""A compacted topic end to end: produce through the real client, clean the broker's log,
consume from offset 0 (record by record, and batch by batch): only the survivors, each at its
original offset, passing over the offsets cleaned away inside and between batches, and the
position ends at the log end."""

from __future__ import annotations

from pathlib import Path

import pytest

from tidelog.client import Consumer, Producer, TopicPartition
from tidelog.server.log import TopicPartition as LogPartition
from tidelog.wire.records import iter_batches

from .helpers import broker, create_topic, run

TP = TopicPartition("changelog", 0)
KEYS = 10
UPDATES = 400


@pytest.mark.parametrize("api", ["getmany", "batches"])
def test_a_consumer_reads_a_cleaned_log_with_its_gaps(tmp_path: Path, api: str) -> None:
    async def main() -> None:
        async with broker(tmp_path, scrub_bytes_per_second=0) as b:
            await create_topic(
                b.address,
                "changelog",
                cleanup_policy="compact",
                segment_bytes="3000",
                delete_retention_ms="0",
            )
            sent: dict[int, tuple[bytes, bytes | None]] = {}
            async with Producer(b.address, linger=0.005, batch_size=700) as producer:
                futures = []
                for i in range(UPDATES):
                    key = b"key-%d" % (i % KEYS)
                    value = None if i % 37 == 0 else b"value-%d" % i
                    futures.append((key, value, await producer.send("changelog", value, key=key)))
                await producer.flush()
                for key, value, future in futures:
                    sent[(await future).offset] = (key, value)
            manager = b.core.manager
            log = manager.get_log(LogPartition("changelog", 0))
            end = log.log_end_offset
            log.roll()
            assert await manager.cleaner.clean(log, force=True) is not None
            stored = []
            offset = 0
            while offset < end:
                read = log.read(offset, 1 << 20)
                stored.extend(iter_batches(read.records))
                offset = read.next_offset
            assert any(0 < batch.record_count < batch.last_offset_delta + 1 for batch in stored)
            assert any(batch.record_count == 0 for batch in stored)

            got: dict[int, tuple[bytes | None, bytes | None]] = {}
            async with Consumer(b.address, auto_offset_reset="earliest", fetch_max_wait=0.05) as c:
                c.assign([TP])
                while await c.position(TP) < end:
                    if api == "getmany":
                        for record in (await c.getmany(timeout=5.0)).get(TP, []):
                            got[record.offset] = (record.key, record.value)
                    elif (batch := await c.getbatch(timeout=5.0)) is not None:
                        assert batch.offsets[-1] < batch.next_offset <= await c.position(TP)
                        pairs = zip(batch.keys, batch.values, strict=True)
                        got.update(zip(batch.offsets, pairs, strict=True))
                assert await c.position(TP) == end

            latest = {key: offset for offset, (key, _) in sorted(sent.items())}
            survivors = {o: (k, v) for o, (k, v) in sent.items() if latest[k] == o}
            assert len(got) < UPDATES / 4
            assert {o: sent[o] for o in got} == got  # original offsets, original records
            assert got == survivors  # the latest of every key; tombstones remain once

    run(main())
