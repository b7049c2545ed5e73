"""LogManager: topics, persisted configs, crash-safe create and delete, housekeeping by the
injected clock, the clean-shutdown marker and the recovery point checkpoint."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from pathlib import Path

import pytest

from tidelog.server.core import Appended, WritePath
from tidelog.server.log import (
    FlushPolicy,
    LogManager,
    TopicConfig,
    TopicPartition,
    validate_topic_name,
)
from tidelog.server.log.checkpoint import read_offsets
from tidelog.server.log.files import Files
from tidelog.wire.errors import (
    InvalidConfigError,
    InvalidPartitionsError,
    InvalidTopicNameError,
    StorageError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)
from tidelog.wire.messages import Acks

from .helpers import DAY, FakeClock, async_test, make_batch, read_all

T0 = TopicPartition("events", 0)


def manager(data: Path, clock: FakeClock, **kwargs: object) -> LogManager:
    return LogManager(data, clock=clock, **kwargs).open()  # type: ignore[arg-type]


async def append(logs: LogManager, tp: TopicPartition, batch: bytes) -> Appended:
    """Append as the broker does (acks=leader): through its one durability path."""
    return await WritePath(logs, lambda tp: None).append_durably(tp, [batch], Acks.LEADER)


# --- names and configs ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "orders.v2", "A_b-C.9", "x" * 233, "..a", "-"])
def test_valid_topic_names(name: str) -> None:
    assert validate_topic_name(name) == name


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "empty"),
        ("x" * 234, "longer than 233"),
        (".", "not a legal"),
        ("..", "not a legal"),
        ("a/b", "illegal characters '/'"),
        ("caf\u00e9", "illegal characters"),
        ("a b", "illegal characters ' '"),
        (5, "must be a string"),
    ],
)
def test_invalid_topic_names(name: object, reason: str) -> None:
    with pytest.raises(InvalidTopicNameError, match=reason):
        validate_topic_name(name)


def test_topic_partition_directory_names() -> None:
    tp = TopicPartition("my-topic-1", 12)
    assert tp.dir_name == "my-topic-1-12" == str(tp)
    assert TopicPartition.parse_dir_name("my-topic-1-12") == tp
    for name in ("topics", "x-", "x-01", "-3", "abc.delete", "0a1b-delete"):
        assert TopicPartition.parse_dir_name(name) is None


def test_topic_config_defaults_and_validation() -> None:
    config = TopicConfig()
    assert config.segment_bytes == 1 << 30
    assert config.segment_ms == config.retention_ms == 7 * DAY
    assert (config.retention_bytes, config.index_interval_bytes) == (-1, 4096)
    assert config.flush_policy is FlushPolicy.OS
    assert config.max_message_bytes > 1 << 20
    assert config.with_overrides({"flush_policy": "ack"}).flush_policy is FlushPolicy.ACK
    for bad, message in [
        ({"segment_bytes": 0}, "segment_bytes must be between"),
        ({"segment_bytes": 2**31}, "segment_bytes"),
        ({"retention_ms": -2}, "retention_ms"),
        ({"retention_bytes": "10"}, "retention_bytes must be an integer"),
        ({"index_interval_bytes": True}, "must be an integer"),
        ({"flush_policy": "sometimes"}, "flush_policy must be one of os, interval, ack"),
        ({"colour": 1}, "unknown topic config 'colour'"),
    ]:
        with pytest.raises(InvalidConfigError, match=message):
            config.with_overrides(bad)
    assert TopicConfig(retention_ms=5).overrides_from(config) == {"retention_ms": 5}


# --- topics -----------------------------------------------------------------------------------


def test_create_topic_makes_partitions_and_persists_overrides(
    tmp_path: Path, clock: FakeClock
) -> None:
    with manager(tmp_path, clock) as logs:
        info = logs.create_topic("events", 3, {"retention_ms": 1000})
        assert info.partitions == 3
        assert info.config.retention_ms == 1000
        assert logs.partition_count("events") == 3
        assert logs.partition_count("nope") is None
        assert sorted(logs.topics()) == ["events"]
        for p in range(3):
            assert logs.get_log(TopicPartition("events", p)).log_end_offset == 0
            assert (tmp_path / f"events-{p}" / "00000000000000000000.log").exists()
        doc = json.loads((tmp_path / "topics" / "events.json").read_text())
        assert doc["partitions"] == 3
        assert doc["config"] == {"retention_ms": 1000}
        with pytest.raises(UnknownTopicOrPartitionError):
            logs.get_log(TopicPartition("events", 3))
    with manager(tmp_path, clock) as logs:
        assert logs.topic_config("events").retention_ms == 1000
        assert logs.partition_count("events") == 3


def test_create_topic_refusals_leave_nothing_behind(tmp_path: Path, clock: FakeClock) -> None:
    with manager(tmp_path, clock) as logs:
        logs.create_topic("events")
        with pytest.raises(TopicAlreadyExistsError):
            logs.create_topic("events", 2)
        with pytest.raises(InvalidTopicNameError):
            logs.create_topic("bad/name")
        with pytest.raises(InvalidPartitionsError):
            logs.create_topic("zero", 0)
        with pytest.raises(InvalidConfigError):
            logs.create_topic("cfg", 1, {"segment_bytes": -1})
        assert sorted(os.listdir(tmp_path)) == [
            ".lock",
            "events-0",
            "log-start-offset-checkpoint",
            "recovery-point-offset-checkpoint",
            "topics",
        ]


def test_delete_topic_removes_everything_and_the_name_can_be_reused(
    tmp_path: Path, clock: FakeClock
) -> None:
    with manager(tmp_path, clock) as logs:
        logs.create_topic("events", 2)
        log = logs.get_log(T0)
        log.append(make_batch(3))
        logs.delete_topic("events")
        assert logs.partition_count("events") is None
        assert not (tmp_path / "events-0").exists()
        assert os.listdir(tmp_path / "topics") == []
        with pytest.raises(StorageError, match="closed"):
            log.append(make_batch())
        with pytest.raises(UnknownTopicOrPartitionError):
            logs.delete_topic("events")
        logs.create_topic("events", 1)
        assert logs.get_log(T0).log_end_offset == 0


def test_open_finishes_an_interrupted_delete_and_create(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    with manager(tmp_path, clock) as logs:
        logs.create_topic("gone", 2)
        logs.create_topic("kept", 1)
        logs.get_log(TopicPartition("gone", 0)).append(make_batch())
        logs.get_log(TopicPartition("kept", 0)).append(make_batch())
    # A delete cut after its commit point: the topic file is a tombstone, one partition
    # directory is already renamed for removal, the other not yet.
    os.rename(tmp_path / "topics" / "gone.json", tmp_path / "topics" / "gone.json.deleted")
    os.rename(tmp_path / "gone-1", tmp_path / "5f3a-delete")
    # A create cut before its commit point: an empty partition without a topic file.
    (tmp_path / "half-0").mkdir()
    (tmp_path / "half-0" / "00000000000000000000.log").touch()
    # A directory with data that no topic claims is left alone, loudly.
    (tmp_path / "stray-0").mkdir()
    (tmp_path / "stray-0" / "00000000000000000000.log").write_bytes(b"data")
    caplog.set_level(logging.INFO, logger="tidelog.server.log")
    with manager(tmp_path, clock) as logs:
        assert sorted(logs.topics()) == ["kept"]
        assert logs.get_log(TopicPartition("kept", 0)).log_end_offset == 1
    assert sorted(os.listdir(tmp_path)) == [
        ".lock",
        ".tidelog_clean_shutdown",
        "kept-0",
        "log-start-offset-checkpoint",
        "recovery-point-offset-checkpoint",
        "stray-0",
        "topics",
    ]
    assert os.listdir(tmp_path / "topics") == ["kept.json"]
    assert any("belongs to no known topic" in r.getMessage() for r in caplog.records)


def test_alter_topic_config_persists_and_applies(tmp_path: Path, clock: FakeClock) -> None:
    with manager(tmp_path, clock, defaults=TopicConfig(retention_ms=5000)) as logs:
        logs.create_topic("events", 1, {"segment_bytes": 4096})
        logs.alter_topic_config("events", {"retention_bytes": 100}, validate_only=True)
        assert logs.topic_config("events").retention_bytes == -1
        info = logs.alter_topic_config("events", {"retention_bytes": 100}, ["segment_bytes"])
        assert info.overrides == {"retention_bytes": 100}
        assert logs.get_log(T0).config.segment_bytes == 1 << 30
        assert logs.get_log(T0).config.retention_ms == 5000
        with pytest.raises(InvalidConfigError):
            logs.alter_topic_config("events", {"retention_bytes": "lots"})
        with pytest.raises(UnknownTopicOrPartitionError):
            logs.alter_topic_config("nope", {})
    with manager(tmp_path, clock, defaults=TopicConfig(retention_ms=7000)) as logs:
        config = logs.topic_config("events")
        assert (config.retention_bytes, config.retention_ms) == (100, 7000)


def test_a_data_directory_has_one_owner(tmp_path: Path, clock: FakeClock) -> None:
    with (
        manager(tmp_path, clock),
        pytest.raises(StorageError, match="in use by another process"),
    ):
        manager(tmp_path, clock)
    manager(tmp_path, clock).close()


# --- shutdown and recovery --------------------------------------------------------------------


def test_clean_shutdown_skips_recovery_and_a_crash_does_not(
    tmp_path: Path, clock: FakeClock
) -> None:
    with manager(tmp_path, clock) as logs:
        logs.create_topic("events", 1, {"segment_bytes": 2048})
        for i in range(10):
            logs.get_log(T0).append(make_batch(1, size=500, tag=i))
        assert not logs.had_clean_shutdown
    assert (tmp_path / ".tidelog_clean_shutdown").exists()
    assert read_offsets(Files(), str(tmp_path / "recovery-point-offset-checkpoint")) == {T0: 10}
    with manager(tmp_path, clock) as logs:
        assert logs.had_clean_shutdown
        assert not (tmp_path / ".tidelog_clean_shutdown").exists()  # gone while running
        report = logs.get_log(T0).load_report
        assert report.clean
        assert report.recovered_segments == 0
        logs.get_log(T0).append(make_batch(1, size=500, tag=10))
    (tmp_path / ".tidelog_clean_shutdown").unlink()  # as if the process had been killed
    with manager(tmp_path, clock) as logs:
        assert not logs.had_clean_shutdown
        report = logs.get_log(T0).load_report
        assert not report.clean
        assert report.recovered_segments == 1
        assert logs.get_log(T0).log_end_offset == 11


def test_an_offline_log_prevents_the_clean_shutdown_marker(
    tmp_path: Path, clock: FakeClock
) -> None:
    from tidelog.server.log import FaultyFileSystem

    fs = FaultyFileSystem()
    logs = manager(tmp_path, clock, fs=fs)
    logs.create_topic("events")
    logs.get_log(T0).append(make_batch())
    fs.inject("fsync", path_contains="events-0")
    logs.close()
    assert not (tmp_path / ".tidelog_clean_shutdown").exists()
    with manager(tmp_path, clock) as again:
        assert again.get_log(T0).log_end_offset == 1


def test_damaged_checkpoint_means_full_recovery(tmp_path: Path, clock: FakeClock) -> None:
    with manager(tmp_path, clock) as logs:
        logs.create_topic("events", 1, {"segment_bytes": 2048})
        for i in range(10):
            logs.get_log(T0).append(make_batch(1, size=500, tag=i))
    (tmp_path / ".tidelog_clean_shutdown").unlink()
    (tmp_path / "recovery-point-offset-checkpoint").write_text("0\n7\nnonsense\n")
    with manager(tmp_path, clock) as logs:
        log = logs.get_log(T0)
        assert log.load_report.recovered_segments == len(log.segments) == 4


# --- appends, flush policies and housekeeping -----------------------------------------------


@async_test
async def test_ack_policy_append_returns_after_the_fsync(tmp_path: Path, clock: FakeClock) -> None:
    logs = manager(tmp_path, clock)
    logs.create_topic("events", 1, {"flush_policy": "ack"})
    logs.create_topic("lazy", 1)
    infos = await asyncio.gather(*(append(logs, T0, make_batch(1, tag=i)) for i in range(20)))
    log = logs.get_log(T0)
    assert log.recovery_point == log.log_end_offset == 20
    assert log.high_watermark == 20
    assert sorted(i.base_offset for i in infos) == list(range(20))
    lazy = TopicPartition("lazy", 0)
    await append(logs, lazy, make_batch())
    assert logs.get_log(lazy).recovery_point == 0
    assert logs.get_log(lazy).high_watermark == 1
    await logs.flush(lazy)
    assert logs.get_log(lazy).recovery_point == 1
    await logs.stop()


@async_test
async def test_housekeeping_runs_retention_and_flushes_by_the_clock(
    tmp_path: Path, clock: FakeClock
) -> None:
    logs = manager(tmp_path, clock, retention_check_interval_ms=60_000)
    logs.create_topic("timed", 1, {"segment_bytes": 2048, "retention_ms": DAY})
    logs.create_topic("interval", 1, {"flush_policy": "interval", "flush_ms": 5000})
    timed, interval = TopicPartition("timed", 0), TopicPartition("interval", 0)
    for i in range(6):
        await append(logs, timed, make_batch(1, size=900, tag=i, timestamp=clock.now))
    await append(logs, interval, make_batch())
    clock.advance(1000)
    await logs.run_housekeeping()
    # Rolled segments are fsynced in the background whatever the policy...
    assert logs.get_log(timed).recovery_point >= logs.get_log(timed).active_segment.base_offset
    # ... and the interval policy waits for its interval.
    assert logs.get_log(interval).recovery_point == 0
    clock.advance(4000)
    await logs.run_housekeeping()
    assert logs.get_log(interval).recovery_point == 1
    clock.advance(DAY)
    await logs.run_housekeeping()
    assert logs.get_log(timed).log_start_offset == 4  # retention ran on its schedule
    before = read_offsets(Files(), str(tmp_path / "recovery-point-offset-checkpoint"))
    assert before == {timed: 6, interval: 1}  # the checkpoint ran on its own
    await logs.stop()


@async_test
async def test_background_loop_runs_until_stopped(tmp_path: Path, clock: FakeClock) -> None:
    logs = manager(tmp_path, clock, housekeeping_interval_ms=5)
    logs.create_topic("interval", 1, {"flush_policy": "interval", "flush_ms": 1})
    tp = TopicPartition("interval", 0)
    await append(logs, tp, make_batch())
    clock.advance(10)
    await logs.start()
    deadline = time.monotonic() + 10
    while logs.get_log(tp).recovery_point < 1:  # poll a condition, bounded by a deadline
        assert time.monotonic() < deadline, "housekeeping never flushed"
        await asyncio.sleep(0.005)
    await logs.stop()
    assert (tmp_path / ".tidelog_clean_shutdown").exists()
    with pytest.raises(StorageError, match="closed"):
        logs.create_topic("late")


def test_retention_of_all_logs(tmp_path: Path, clock: FakeClock) -> None:
    with manager(tmp_path, clock) as logs:
        logs.create_topic("events", 2, {"segment_bytes": 2048, "retention_bytes": 1000})
        for p in range(2):
            log = logs.get_log(TopicPartition("events", p))
            for i in range(6):
                log.append(make_batch(1, size=900, tag=i))
            log.update_high_watermark(log.log_end_offset)
        assert logs.run_retention() == 4
        assert read_all(logs.get_log(T0)) != b""


def test_open_segments_are_bounded(tmp_path: Path, clock: FakeClock) -> None:
    with manager(tmp_path, clock, max_open_segments=3) as logs:
        logs.create_topic("events", 1, {"segment_bytes": 2048})
        log = logs.get_log(T0)
        for i in range(20):
            log.append(make_batch(1, size=900, tag=i))
        for offset in range(20):
            assert log.read(offset, 10).records
        fds = os.listdir("/proc/self/fd")
        paths = [os.path.realpath(f"/proc/self/fd/{fd}") for fd in fds]
        # Only this test's files: other tests' brokers may run in this process.
        segment_fds = [p for p in paths if p.startswith(str(tmp_path)) and p.endswith(".log")]
        assert len(segment_fds) <= 3 + 1  # the bound plus the active segment
