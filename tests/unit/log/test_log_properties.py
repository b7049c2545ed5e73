"""Property tests: random appends, then reads at every offset, index lookups and timestamp
lookups checked against brute-force scans of the segment files; then the same after a reopen."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from tidelog.server.log import PartitionLog, TopicConfig
from tidelog.wire import Compression
from tidelog.wire.records import RecordBatch, RecordBatchBuilder

from .helpers import PROPERTY, FakeClock, disk_batches


@dataclass(frozen=True)
class Spec:
    records: int
    value_size: int
    timestamps: tuple[int, ...]
    compression: Compression


batch_specs = st.builds(
    lambda n, size, base, deltas, codec: Spec(
        n, size, tuple(base + d for d in deltas[:n]) + (base,) * (n - len(deltas[:n])), codec
    ),
    st.integers(1, 5),
    st.integers(0, 300),
    st.integers(0, 2000),
    st.lists(st.integers(0, 50), max_size=5),
    st.sampled_from([Compression.NONE, Compression.NONE, Compression.ZSTD]),
)

configs = st.builds(
    lambda segment, interval: TopicConfig(
        segment_bytes=segment, index_interval_bytes=interval, retention_ms=-1
    ),
    st.integers(200, 4000),
    st.integers(0, 1500),
)


def build(spec: Spec, tag: int) -> bytes:
    builder = RecordBatchBuilder(spec.compression)
    for i, ts in enumerate(spec.timestamps):
        builder.append(bytes([tag % 251, i]) * (spec.value_size // 2), timestamp=ts)
    return builder.build()


def expected_read(segments: list[list[RecordBatch]], offset: int, max_bytes: int) -> bytes:
    """Brute force: the batch holding ``offset`` and the following ones of its segment that
    fit in ``max_bytes`` (at least one)."""
    for batches in segments:
        for i, batch in enumerate(batches):
            if batch.base_offset <= offset < batch.next_offset:
                out = [bytes(batch.buffer)]
                total = batch.size
                for later in batches[i + 1 :]:
                    if total + later.size > max_bytes:
                        break
                    out.append(bytes(later.buffer))
                    total += later.size
                return b"".join(out)
    raise AssertionError(f"offset {offset} is in no batch")


def expected_time_lookup(segments: list[list[RecordBatch]], timestamp: int) -> int | None:
    for batches in segments:
        for batch in batches:
            for record in batch.records():
                if record.timestamp >= timestamp:
                    return record.offset
    return None


def check_log(log: PartitionLog, read_sizes: list[int], probes: list[int]) -> None:
    segments = disk_batches(log.directory)
    flat = [b for batches in segments for b in batches]
    assert log.log_end_offset == (flat[-1].next_offset if flat else 0)
    # Every offset, several budgets.
    for offset in range(log.log_end_offset):
        for max_bytes in read_sizes:
            result = log.read(offset, max_bytes)
            assert result.records == expected_read(segments, offset, max_bytes)
    assert log.read(log.log_end_offset, 100).records == b""
    # Index lookups: every index entry points at a batch that starts there, and
    # translate_offset() agrees with a scan for every offset.
    for segment, batches in zip(log.segments, segments, strict=True):
        positions = {}
        position = 0
        for batch in batches:
            positions[batch.base_offset] = position
            position += batch.size
        for offset, pos in segment.offset_index.entries():
            assert positions[segment.base_offset + offset] == pos
        for batch in batches:
            for offset in range(batch.base_offset, batch.next_offset):
                info = segment.translate_offset(offset)
                assert (info.base_offset, info.position) == (
                    batch.base_offset,
                    positions[batch.base_offset],
                )
    # Timestamp lookups.
    stamps = sorted({r.timestamp for b in flat for r in b.records()})
    for target in probes + stamps + [s + 1 for s in stamps]:
        found = log.offset_for_timestamp(target)
        expected = expected_time_lookup(segments, target)
        assert (found.offset if found else None) == expected, target


@PROPERTY
@given(
    config=configs,
    specs=st.lists(batch_specs, min_size=0, max_size=40),
    read_sizes=st.lists(st.integers(0, 3000), min_size=1, max_size=3),
    probes=st.lists(st.integers(-10, 2100), max_size=5),
    clean=st.booleans(),
)
def test_random_appends_read_back_at_every_offset(
    config: TopicConfig,
    specs: list[Spec],
    read_sizes: list[int],
    probes: list[int],
    clean: bool,
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        clock = FakeClock()
        log = PartitionLog.open(tmp, config, clock=clock)
        for tag, spec in enumerate(specs):
            info = log.append(build(spec, tag))
            assert info.record_count == spec.records
        assert sum(s.records for s in specs) == log.log_end_offset
        check_log(log, read_sizes, probes)
        end = log.log_end_offset
        log.close()
        again = PartitionLog.open(
            tmp, config, clock=clock, clean_shutdown=clean, recovery_point=end if clean else 0
        )
        check_log(again, read_sizes, probes)
        assert again.append(build(Spec(1, 1, (0,), Compression.NONE), 0)).base_offset == end
        again.close()


@PROPERTY
@given(
    config=configs,
    specs=st.lists(batch_specs, min_size=1, max_size=30),
    cut=st.integers(0, 200),
)
def test_truncate_to_any_offset(config: TopicConfig, specs: list[Spec], cut: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        log = PartitionLog.open(tmp, config, clock=FakeClock())
        for tag, spec in enumerate(specs):
            log.append(build(spec, tag))
        before = [b for batches in disk_batches(tmp) for b in batches]
        log.truncate_to(cut)
        kept = [b for b in before if b.next_offset <= cut]
        if cut >= before[-1].next_offset:
            kept = before
        after = [b for batches in disk_batches(tmp) for b in batches]
        assert [bytes(b.buffer) for b in after] == [bytes(b.buffer) for b in kept]
        expected_end = kept[-1].next_offset if kept else 0
        assert log.log_end_offset == expected_end
        assert log.append(build(specs[0], 0)).base_offset == expected_end
        check_log(log, [500], [])
        log.close()
