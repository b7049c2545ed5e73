"""What the checkpoints knew is kept (issue 12, point 2): a lost first segment keeps the log
start and a lost tail keeps the log end, each a reported missing range; retention, cut short or
not, is never mistaken for a loss; a damaged checkpoint only means more recovery."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tidelog.server.log import LogManager, TopicPartition
from tidelog.server.log.checkpoint import LOG_START_FILE, RECOVERY_POINT_FILE, write_offsets
from tidelog.server.log.files import Files
from tidelog.wire.errors import MissingRangeError

from .helpers import DAY, FakeClock, make_batch, read_around_damage

TP = TopicPartition("events", 0)
CONFIG = {"segment_bytes": 2048, "retention_ms": -1}


def filled(data: Path, clock: FakeClock, batches: int = 12) -> list[int]:
    """A cleanly closed topic of several segments; the base offset of each segment."""
    with LogManager(data, clock=clock).open() as logs:
        logs.create_topic("events", 1, CONFIG)
        log = logs.get_log(TP)
        for i in range(batches):
            log.append(make_batch(1, size=500, tag=i))
        return [s.base_offset for s in log.segments]


def segment(data: Path, base: int) -> Path:
    return data / "events-0" / f"{base:020d}.log"


def test_a_lost_first_segment_keeps_the_log_start_and_is_reported(tmp_path: Path) -> None:
    clock = FakeClock()
    bases = filled(tmp_path, clock)
    os.remove(segment(tmp_path, bases[0]))
    with LogManager(tmp_path, clock=clock).open() as logs:
        log = logs.get_log(TP)
        assert log.log_start_offset == 0
        assert log.load_report.missing == ((0, bases[1]),)
        with pytest.raises(MissingRangeError) as caught:
            log.read(0, 1 << 20)
        assert caught.value.next_offset == bases[1]
        assert read_around_damage(log)[1] == [(0, bases[1], "MissingRangeError")]


@pytest.mark.parametrize("loss", ["deleted", "cut"])
def test_a_lost_tail_below_the_recovery_point_keeps_the_log_end(tmp_path: Path, loss: str) -> None:
    clock = FakeClock()
    bases = filled(tmp_path, clock)
    end = 12
    last = segment(tmp_path, bases[-1])
    if loss == "deleted":
        os.remove(last)
    else:
        os.truncate(last, 100)  # inside its first batch
    with LogManager(tmp_path, clock=clock).open() as logs:
        log = logs.get_log(TP)
        assert log.log_end_offset == end  # offsets are never handed out twice
        assert log.load_report.missing == ((bases[-1], end),)
        with pytest.raises(MissingRangeError) as caught:
            log.read(bases[-1], 1 << 20)
        assert caught.value.next_offset == end
        assert log.append(make_batch(1, tag=99)).base_offset == end
    with LogManager(tmp_path, clock=clock).open() as logs:  # the gap stays on disk
        assert logs.get_log(TP).load_report.missing == ((bases[-1], end),)


def test_retention_is_not_mistaken_for_a_lost_segment(tmp_path: Path) -> None:
    clock = FakeClock()
    filled(tmp_path, clock)
    with LogManager(tmp_path, clock=clock).open() as logs:
        logs.alter_topic_config("events", {"retention_ms": DAY})
        clock.advance(2 * DAY)
        assert logs.run_retention() > 0
        start = logs.get_log(TP).log_start_offset
        logs._abandon()  # a crash right after retention
    with LogManager(tmp_path, clock=clock).open() as logs:
        log = logs.get_log(TP)
        assert log.log_start_offset == start
        assert log.load_report.missing == ()


def test_a_retention_a_crash_cut_short_is_finished(tmp_path: Path) -> None:
    clock = FakeClock()
    bases = filled(tmp_path, clock)
    # Retention checkpointed the new start, then the process died before deleting.
    write_offsets(Files(), str(tmp_path / LOG_START_FILE), {TP: bases[2]})
    with LogManager(tmp_path, clock=clock).open() as logs:
        log = logs.get_log(TP)
        assert log.log_start_offset == bases[2]
        assert log.load_report.missing == ()
    assert not segment(tmp_path, bases[0]).exists()


def test_a_recreated_topic_does_not_inherit_the_old_checkpoints(tmp_path: Path) -> None:
    clock = FakeClock()
    filled(tmp_path, clock)
    logs = LogManager(tmp_path, clock=clock).open()
    logs.delete_topic("events")
    logs.create_topic("events", 1, CONFIG)
    logs._abandon()  # a crash before any periodic checkpoint
    with LogManager(tmp_path, clock=clock).open() as again:
        log = again.get_log(TP)
        assert (log.log_start_offset, log.log_end_offset) == (0, 0)
        assert log.load_report.missing == ()


def test_a_checkpoint_with_a_flipped_digit_is_ignored(tmp_path: Path) -> None:
    clock = FakeClock()
    filled(tmp_path, clock)
    path = tmp_path / RECOVERY_POINT_FILE
    path.write_text(path.read_text().replace("events 0 12", "events 0 92"))
    with LogManager(tmp_path, clock=clock).open() as logs:
        log = logs.get_log(TP)
        assert log.log_end_offset == 12  # not taken for a lost tail up to 92
        assert log.load_report.missing == ()
