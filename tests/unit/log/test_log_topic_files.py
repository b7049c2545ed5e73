"""Topic files (issue 12, point 4): a damaged or missing topic file is rebuilt from the copies
in its partition directories when they settle it; otherwise opening names the file and the
fix. A flipped digit is caught by the file's checksum."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from tidelog.server.log import LogManager, TopicPartition
from tidelog.server.log.topicfiles import PARTITION_METADATA
from tidelog.wire.errors import StorageError

from .helpers import FakeClock, make_batch

OVERRIDES = {"retention_ms": 12345, "segment_bytes": 4096}


def with_topic(data: Path, partitions: int = 3) -> None:
    with LogManager(data, clock=FakeClock()).open() as logs:
        logs.create_topic("c", partitions, OVERRIDES)
        for p in range(partitions):
            logs.get_log(TopicPartition("c", p)).append(make_batch(2, tag=p))


def topic_file(data: Path) -> Path:
    return data / "topics" / "c.json"


def flip_digit(path: Path) -> None:
    """Turn the partition count 3 into 7 (one bit): still valid JSON, still plausible."""
    text = path.read_text()
    assert '"partitions": 3' in text
    path.write_text(text.replace('"partitions": 3', '"partitions": 7'))


@pytest.mark.parametrize("damage", ["garbage", "truncated", "flipped digit", "deleted"])
def test_a_damaged_topic_file_is_rebuilt_from_the_partition_copies(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    with_topic(tmp_path)
    path = topic_file(tmp_path)
    original = json.loads(path.read_text())
    if damage == "garbage":
        path.write_bytes(b"\x00\xffnot json")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:20])
    elif damage == "flipped digit":
        flip_digit(path)
    else:
        path.unlink()
    caplog.set_level(logging.WARNING, logger="tidelog.server.log")

    with LogManager(tmp_path, clock=FakeClock()).open() as logs:
        info = logs.topic("c")
        assert (info.partitions, dict(info.overrides)) == (3, OVERRIDES)
        assert info.config.retention_ms == 12345
        for p in range(3):
            assert logs.get_log(TopicPartition("c", p)).log_end_offset == 2

    assert json.loads(path.read_text()) == original
    assert any("rebuilt it from the copies" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("copies", ["one damaged", "they disagree", "none"])
def test_a_topic_file_the_copies_cannot_settle_names_the_file_and_the_fix(
    tmp_path: Path, copies: str
) -> None:
    with_topic(tmp_path)
    topic_file(tmp_path).write_bytes(b"{")
    hints = [tmp_path / f"c-{p}" / PARTITION_METADATA for p in range(3)]
    if copies == "one damaged":
        hints[1].write_bytes(b"garbage")
    elif copies == "they disagree":
        doc = json.loads(hints[2].read_text())
        doc["config"] = {}
        doc.pop("crc32c")  # a copy written by hand: no checksum, read as it is
        hints[2].write_text(json.dumps(doc))
    else:
        for hint in hints:
            hint.unlink()

    with pytest.raises(StorageError) as caught:
        LogManager(tmp_path, clock=FakeClock()).open()

    message = caught.value.message
    assert str(topic_file(tmp_path)) in message
    assert "is damaged" in message
    assert "Restore" in message and "write it by hand" in message and '"partitions": 3' in message


def test_an_older_topic_file_without_a_checksum_is_read_and_gets_copies(tmp_path: Path) -> None:
    with_topic(tmp_path)
    path = topic_file(tmp_path)
    doc = json.loads(path.read_text())
    doc.pop("crc32c")
    path.write_text(json.dumps(doc))
    for p in range(3):
        (tmp_path / f"c-{p}" / PARTITION_METADATA).unlink()

    with LogManager(tmp_path, clock=FakeClock()).open() as logs:
        assert logs.topic("c").partitions == 3

    assert all((tmp_path / f"c-{p}" / PARTITION_METADATA).exists() for p in range(3))


def test_altering_a_config_updates_the_copies(tmp_path: Path) -> None:
    with_topic(tmp_path)
    with LogManager(tmp_path, clock=FakeClock()).open() as logs:
        logs.alter_topic_config("c", {"retention_ms": 999})
    topic_file(tmp_path).write_bytes(b"")
    with LogManager(tmp_path, clock=FakeClock()).open() as logs:
        assert logs.topic("c").config.retention_ms == 999
