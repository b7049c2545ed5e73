"""A changelog of 1,000,000 updates to 1,000 keys shrinks to at most 1,000 records plus those of
the active segment (written through the log API in big batches, not the network)."""

from __future__ import annotations

import pytest

from tidelog.server.log import PartitionLog, TopicConfig
from tidelog.server.log.cleaner import CleanerSettings, LogCleaner
from tidelog.server.log.files import Files
from tidelog.wire.records import RecordBatchBuilder, iter_batches

from .helpers import FakeClock, read_all

UPDATES = 1_000_000
KEYS = 1_000
PER_BATCH = 20_000
UNTHROTTLED = CleanerSettings(io_bytes_per_second=0)  # the clock is a fake one


def count_records(data: bytes) -> int:
    return sum(batch.record_count for batch in iter_batches(data))


@pytest.mark.slow
def test_a_changelog_of_a_million_updates_shrinks_to_one_record_per_key(
    log_dir: str, clock: FakeClock
) -> None:
    config = TopicConfig(
        segment_bytes=4 * 1024 * 1024,
        max_message_bytes=2 * 1024 * 1024,
        cleanup_policy="compact",
        min_cleanable_dirty_ratio=0.5,
    )
    log = PartitionLog.open(log_dir, config, clock=clock)
    keys = [b"key-%04d" % k for k in range(KEYS)]
    for start in range(0, UPDATES, PER_BATCH):
        builder = RecordBatchBuilder()
        for i in range(start, start + PER_BATCH):
            builder.append(b"value-%07d" % i, key=keys[i % KEYS], timestamp=clock.now)
        log.append(builder.build())
    log.update_high_watermark(log.log_end_offset)
    before = count_records(read_all(log))
    segments_before = len(log.segments)
    active = count_records(log.active_segment.read_bytes(0, log.active_segment.size))

    assert (
        LogCleaner(lambda: [log], Files(), clock, UNTHROTTLED).clean_now(log, force=False)
        is not None
    )

    after = count_records(read_all(log))
    print(
        f"\n{before} records in {segments_before} segments before cleaning, "
        f"{after} in {len(log.segments)} after ({active} in the active segment)"
    )
    assert before == UPDATES
    assert after <= KEYS + active
    # Groups are formed by the old segments' sizes (as Kafka does): the next cleaning merges
    # the small cleaned segments into one.
    builder = RecordBatchBuilder()
    for k in keys:
        builder.append(b"final", key=k, timestamp=clock.now)
    log.append(builder.build())
    log.roll()
    log.update_high_watermark(log.log_end_offset)
    assert LogCleaner(lambda: [log], Files(), clock, UNTHROTTLED).clean_now(log) is not None
    assert len(log.segments) <= 3 < segments_before
    assert count_records(read_all(log)) == KEYS
    latest: dict[bytes | None, tuple[int, bytes | None]] = {}
    for batch in iter_batches(read_all(log)):
        for record in batch.records():
            latest[record.key] = (record.offset, record.value)
    assert len(latest) == KEYS
    assert all(value == b"final" for _, value in latest.values())
    log.close()
