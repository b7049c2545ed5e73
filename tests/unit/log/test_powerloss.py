"""The file system that remembers what was fsynced, and the replay of a power loss
(:mod:`tidelog.server.log.powerloss`): after a replay, only what an fsync made durable is
left -- a file's bytes up to its last fsync, a name once its directory was fsynced."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tidelog.server.log import Files, PartitionLog, TopicConfig
from tidelog.server.log.files import CREATE, CREATE_NEW, READ_WRITE
from tidelog.server.log.powerloss import (
    GRAVEYARD,
    JOURNAL_ENV,
    JOURNAL_FILE,
    PowerLossFileSystem,
    PowerLossReport,
    journaled_file_system,
    replay_power_loss,
)

from .helpers import make_batch


class Disk:
    """A data dir under a :class:`PowerLossFileSystem`, and its power loss."""

    def __init__(self, tmp_path: Path) -> None:
        self.root = tmp_path / "data"
        self.root.mkdir()
        self.journal = str(tmp_path / "journal")
        self.files = Files(PowerLossFileSystem(str(self.root), self.journal))
        self.report = PowerLossReport()

    def path(self, name: str) -> str:
        return str(self.root / name)

    def write(self, name: str, data: bytes, at: int = -1, *, sync: bool = False) -> None:
        handle = self.files.open(self.path(name), CREATE)
        handle.write_at([data], handle.size() if at < 0 else at)
        if sync:
            handle.sync()
        handle.close()

    def sync(self, name: str) -> None:
        handle = self.files.open(self.path(name), READ_WRITE)
        handle.sync()
        handle.close()

    def sync_dir(self, name: str = "") -> None:
        self.files.sync_dir(self.path(name) if name else str(self.root))

    def restart(self) -> None:
        """A new process over the same journal (the old one SIGKILLed: nothing flushed)."""
        self.files = Files(PowerLossFileSystem(str(self.root), self.journal))

    def power_loss(self) -> dict[str, bytes]:
        self.report = replay_power_loss(str(self.root), self.journal)
        return {
            str(p.relative_to(self.root)): p.read_bytes()
            for p in sorted(self.root.rglob("*"))
            if p.is_file()
        }


@pytest.fixture
def disk(tmp_path: Path) -> Disk:
    return Disk(tmp_path)


def test_only_the_fsynced_part_of_a_file_remains(disk: Disk) -> None:
    disk.write("a.log", b"durable", sync=True)
    disk.sync_dir()
    disk.write("a.log", b" lost")
    assert (disk.root / "a.log").read_bytes() == b"durable lost"
    assert disk.power_loss() == {"a.log": b"durable"}
    assert disk.report.dropped == {"a.log": 5}
    assert disk.report.dropped_from(".log") == 5


def test_a_later_fsync_covers_everything_written_before_it(disk: Disk) -> None:
    disk.write("a.log", b"one", sync=True)
    disk.sync_dir()
    disk.write("a.log", b" two")
    disk.write("a.log", b" three", sync=True)
    disk.write("a.log", b" four")
    assert disk.power_loss() == {"a.log": b"one two three"}


def test_a_new_file_is_gone_unless_its_directory_was_fsynced(disk: Disk) -> None:
    disk.write("synced-name-only", b"y" * 10)
    disk.sync_dir()
    disk.write("synced-data-only", b"x" * 10, sync=True)
    assert disk.power_loss() == {"synced-name-only": b""}
    assert disk.report.files_gone == ["synced-data-only"]
    assert disk.report.dropped == {"synced-data-only": 10, "synced-name-only": 10}


def truncate_and_write(disk: Disk, *, sync: bool) -> None:
    """A durable 10-byte file cut to 4 and written after (then fsynced, with ``sync``, and
    written again)."""
    disk.write("a.log", b"0123456789", sync=True)
    disk.sync_dir()
    handle = disk.files.open(disk.path("a.log"), READ_WRITE)
    handle.truncate(4)
    handle.write_at([b"abc"], 4)
    if sync:
        handle.sync()
        handle.write_at([b"def"], 7)
    handle.close()


def test_an_unsynced_truncation_is_undone(disk: Disk) -> None:
    truncate_and_write(disk, sync=False)
    assert (disk.root / "a.log").read_bytes() == b"0123abc"
    assert disk.power_loss() == {"a.log": b"0123456789"}


def test_a_truncation_fsynced_stays(disk: Disk) -> None:
    truncate_and_write(disk, sync=True)
    assert disk.power_loss() == {"a.log": b"0123abc"}


def test_an_unsynced_overwrite_below_the_synced_size_is_undone(disk: Disk) -> None:
    disk.write("a.log", b"aaaaaaaa", sync=True)
    disk.sync_dir()
    disk.write("a.log", b"BB", at=2)
    disk.write("a.log", b"CCCC", at=1)
    assert (disk.root / "a.log").read_bytes() == b"aCCCCaaa"
    assert disk.power_loss() == {"a.log": b"aaaaaaaa"}


def test_write_atomically_is_durable_once_it_returns(disk: Disk) -> None:
    disk.files.write_atomically(disk.path("checkpoint"), b"old")
    disk.files.write_atomically(disk.path("checkpoint"), b"new")
    assert disk.power_loss() == {"checkpoint": b"new"}


def test_a_rename_before_its_directory_fsync_leaves_the_old_file(disk: Disk) -> None:
    disk.files.write_atomically(disk.path("checkpoint"), b"old")
    disk.write("checkpoint.tmp", b"new", sync=True)  # the steps of write_atomically ...
    disk.files.rename(disk.path("checkpoint.tmp"), disk.path("checkpoint"))
    assert (disk.root / "checkpoint").read_bytes() == b"new"  # ... killed before the dir fsync
    assert disk.power_loss() == {"checkpoint": b"old"}


def test_a_removed_file_comes_back_until_its_directory_is_fsynced(disk: Disk) -> None:
    disk.write("a", b"kept", sync=True)
    disk.sync_dir()
    disk.files.remove(disk.path("a"))
    assert not (disk.root / "a").exists()
    assert disk.power_loss() == {"a": b"kept"}
    assert disk.report.files_back == ["a"]


def test_a_removal_fsynced_stays(disk: Disk) -> None:
    disk.write("a", b"one", sync=True)
    disk.write("b", b"two", sync=True)
    disk.sync_dir()
    disk.files.remove(disk.path("a"))
    disk.files.remove(disk.path("b"))
    disk.sync_dir()
    disk.write("c", b"later", sync=True)
    disk.files.rename(disk.path("c"), disk.path("a"))  # this name not durable
    # a and b are linked no more, c is (its bytes are needed as long as a name refers to it)
    assert os.listdir(os.path.join(disk.journal, GRAVEYARD)) == ["3"]
    assert disk.power_loss() == {}


def test_a_new_directory_needs_its_parent_fsynced(disk: Disk) -> None:
    disk.files.makedirs(disk.path("t-0"))
    disk.write("t-0/0.log", b"data", sync=True)
    disk.sync_dir("t-0")
    disk.files.makedirs(disk.path("t-1"))
    disk.write("t-1/0.log", b"data", sync=True)
    disk.sync_dir("t-1")
    disk.sync_dir()  # covers both names
    disk.files.makedirs(disk.path("t-2"))
    disk.write("t-2/0.log", b"data", sync=True)
    disk.sync_dir("t-2")  # but not the root: t-2 itself is not durable
    assert disk.power_loss() == {"t-0/0.log": b"data", "t-1/0.log": b"data"}
    assert not (disk.root / "t-2").exists()


def test_a_renamed_directory_keeps_its_durable_name_until_the_parent_is_fsynced(
    disk: Disk,
) -> None:
    disk.files.makedirs(disk.path("t-0"))
    disk.write("t-0/0.log", b"data", sync=True)
    disk.sync_dir("t-0")
    disk.sync_dir()
    disk.files.rename(disk.path("t-0"), disk.path("x-delete"))
    disk.files.remove_tree(disk.path("x-delete"))
    assert disk.power_loss() == {"t-0/0.log": b"data"}


def test_files_not_written_through_the_layer_are_left_as_they_are(disk: Disk) -> None:
    (disk.root / "lock").write_bytes(b"")
    (disk.root / "t-0").mkdir()
    (disk.root / "t-0" / "old.log").write_bytes(b"from before")  # durable: seen, not made
    disk.write("t-0/old.log", b" and after")
    assert disk.power_loss() == {"lock": b"", "t-0/old.log": b"from before"}


def test_a_restarted_process_continues_the_model(disk: Disk) -> None:
    disk.write("a.log", b"synced", sync=True)
    disk.sync_dir()
    disk.write("a.log", b" not yet")
    disk.restart()  # a plain SIGKILL and a restart: the kernel kept " not yet", unsynced
    disk.write("a.log", b" again")
    assert disk.power_loss() == {"a.log": b"synced"}


def test_a_torn_last_journal_record_is_ignored(disk: Disk) -> None:
    disk.write("a.log", b"synced", sync=True)
    disk.sync_dir()
    disk.write("a.log", b"xx", at=0)  # an undo record
    journal = os.path.join(disk.journal, JOURNAL_FILE)
    with open(journal, "ab") as f:
        f.write(b"\x40\x00\x00\x00partial")  # a record cut by the kill
    disk.restart()
    disk.sync("a.log")  # journaled after the torn part was cut
    assert disk.power_loss() == {"a.log": b"xxnced"}


def test_an_exclusive_create_of_an_existing_file_fails_and_changes_nothing(disk: Disk) -> None:
    disk.write("a", b"x", sync=True)
    disk.sync_dir()
    with pytest.raises(Exception, match="exists"):
        disk.files.open(disk.path("a"), CREATE_NEW)
    assert disk.power_loss() == {"a": b"x"}


def test_the_hook_is_off_without_its_environment_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(JOURNAL_ENV, raising=False)
    assert journaled_file_system(str(tmp_path)) is None
    monkeypatch.setenv(JOURNAL_ENV, str(tmp_path / "journal"))
    assert isinstance(journaled_file_system(str(tmp_path)), PowerLossFileSystem)


def test_a_log_keeps_exactly_its_flushed_batches(disk: Disk) -> None:
    """A partition log through the layer: flushed batches survive a power loss, the
    unflushed tail does not, and a truncation not yet flushed is undone."""
    config = TopicConfig(segment_bytes=2048, index_interval_bytes=200, retention_ms=-1)
    directory = disk.path("t-0")
    log = PartitionLog.open(directory, config, files=disk.files)
    disk.sync_dir()  # as the LogManager does for a new partition directory
    for tag in range(20):  # several segments
        log.append(make_batch(3, size=40, tag=tag))
    log.flush()
    flushed = log.log_end_offset
    log.truncate_to(flushed - 9)
    for tag in range(5):
        log.append(make_batch(2, size=40, tag=100 + tag))
    assert log.log_end_offset != flushed
    log.abandon()  # a SIGKILL: nothing more is written
    disk.power_loss()
    again = PartitionLog.open(directory, config)
    try:
        assert again.log_end_offset == flushed
        assert again.read(flushed - 3, 1 << 20).next_offset == flushed
    finally:
        again.close()
