"""MemoryFileSystem behaves as the real file system does: the same operations on both give the
same results and the same errnos (a Hypothesis state machine), descriptors outlive the names
they were opened by, and its byte bound fails writes with ENOSPC."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    multiple,
    rule,
)

from tidelog.server.log import Files, MemoryFileSystem, OsFileSystem, PartitionLog, TopicConfig
from tidelog.server.log.files import (
    CREATE,
    CREATE_NEW,
    IOV_MAX,
    READ_ONLY,
    READ_WRITE,
    MemoryFullError,
)
from tidelog.wire.errors import StorageError

from .helpers import FakeClock, append_all, make_batch, read_all

NAMES = ["a", "b", "d", "e", "d/a", "d/b", "e/a", "a/x"]
FLAGS = [
    READ_ONLY,
    READ_WRITE,
    CREATE,
    CREATE_NEW,
    os.O_RDONLY | os.O_DIRECTORY,
    os.O_RDWR | os.O_TRUNC,
]
Outcome = tuple[str, Any]


def outcome(call: Callable[[], Any]) -> Outcome:
    """What an operation did: its value, or the errno it failed with."""
    try:
        return "ok", call()
    except OSError as exc:
        return "error", errno.errorcode.get(exc.errno or 0, exc.errno)


class SameAsTheRealFileSystem(RuleBasedStateMachine):
    """Each rule runs on both file systems, under the same path, and compares."""

    fds = Bundle("fds")

    def __init__(self) -> None:
        super().__init__()
        self.root = tempfile.mkdtemp(prefix="memfs-")
        self.real = OsFileSystem()
        self.memory = MemoryFileSystem()
        Files(self.memory).makedirs(self.root)
        self.open_real: set[int] = set()

    def path(self, name: str) -> str:
        return os.path.join(self.root, name)

    def both(self, op: Callable[[Any], Any]) -> tuple[Outcome, Outcome]:
        real, memory = outcome(lambda: op(self.real)), outcome(lambda: op(self.memory))
        assert (real[0], memory[0]) != ("ok", "error") and real[0] == memory[0], (real, memory)
        return real, memory

    def same(self, op: Callable[[Any], Any]) -> None:
        real, memory = self.both(op)
        assert real == memory, (real, memory)

    @rule(target=fds, name=st.sampled_from(NAMES), flags=st.sampled_from(FLAGS))
    def open(self, name: str, flags: int) -> Any:
        path = self.path(name)
        is_dir = os.path.isdir(path)
        real, memory = self.both(lambda fs: fs.open(path, flags))
        if real[0] != "ok":
            assert real == memory
            return multiple()
        self.open_real.add(real[1])
        return real[1], memory[1], is_dir

    @rule(target=fds, fd=fds)
    def dup(self, fd: tuple[int, int, bool]) -> Any:
        real, memory = os.dup(fd[0]), self.memory.dup(fd[1])
        self.open_real.add(real)
        return real, memory, fd[2]

    @rule(fd=consumes(fds))
    def close(self, fd: tuple[int, int, bool]) -> None:
        os.close(fd[0])
        self.open_real.discard(fd[0])
        self.memory.close(fd[1])

    @rule(fd=fds, size=st.integers(0, 48), offset=st.integers(0, 48))
    def pread(self, fd: tuple[int, int, bool], size: int, offset: int) -> None:
        self.same(lambda fs: fs.pread(fd[0] if fs is self.real else fd[1], size, offset))

    @rule(
        fd=fds,
        buffers=st.lists(st.binary(max_size=12), max_size=3),
        offset=st.integers(0, 40),
    )
    def pwritev(self, fd: tuple[int, int, bool], buffers: list[bytes], offset: int) -> None:
        self.same(lambda fs: fs.pwritev(fd[0] if fs is self.real else fd[1], buffers, offset))

    @rule(fd=fds, size=st.integers(0, 48))
    def ftruncate(self, fd: tuple[int, int, bool], size: int) -> None:
        self.same(lambda fs: fs.ftruncate(fd[0] if fs is self.real else fd[1], size))

    @rule(fd=fds)
    def fsync_and_size(self, fd: tuple[int, int, bool]) -> None:
        self.same(lambda fs: fs.fsync(fd[0] if fs is self.real else fd[1]))
        self.same(lambda fs: fs.start_writeback(fd[0] if fs is self.real else fd[1], 0, 8))
        if not fd[2]:  # a directory's size is the real file system's own business
            self.same(lambda fs: fs.fstat_size(fd[0] if fs is self.real else fd[1]))

    @rule(name=st.sampled_from(NAMES))
    def path_queries(self, name: str) -> None:
        path = self.path(name)
        self.same(lambda fs: fs.exists(path))
        self.same(lambda fs: fs.isdir(path))
        if not os.path.isdir(path):
            self.same(lambda fs: fs.stat_size(path))
        self.same(lambda fs: sorted(fs.listdir(path)))

    @rule(src=st.sampled_from(NAMES), dst=st.sampled_from(NAMES))
    def rename(self, src: str, dst: str) -> None:
        self.same(lambda fs: fs.rename(self.path(src), self.path(dst)))

    @rule(name=st.sampled_from(NAMES))
    def remove(self, name: str) -> None:
        self.same(lambda fs: fs.remove(self.path(name)))

    @rule(name=st.sampled_from(NAMES))
    def mkdir(self, name: str) -> None:
        self.same(lambda fs: fs.mkdir(self.path(name)))

    @rule(name=st.sampled_from(NAMES))
    def rmdir(self, name: str) -> None:
        self.same(lambda fs: fs.rmdir(self.path(name)))

    @invariant()
    def same_tree(self) -> None:
        assert self.tree(self.real, self.root) == self.tree(self.memory, self.root)

    def tree(self, fs: Any, directory: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in sorted(fs.listdir(directory)):
            path = os.path.join(directory, name)
            out[name] = self.tree(fs, path) if fs.isdir(path) else self.content(fs, path)
        return out

    @staticmethod
    def content(fs: Any, path: str) -> bytes:
        fd = fs.open(path, READ_ONLY)
        try:
            return bytes(fs.pread(fd, 1 << 16, 0))
        finally:
            fs.close(fd)

    def teardown(self) -> None:
        for fd in self.open_real:
            os.close(fd)
        shutil.rmtree(self.root)


SameAsTheRealFileSystem.TestCase.settings = settings(
    deadline=None, max_examples=150, stateful_step_count=30
)
test_same_as_the_real_file_system = SameAsTheRealFileSystem.TestCase


def test_a_removed_file_stays_readable_through_a_duplicated_descriptor() -> None:
    fs = MemoryFileSystem()
    fs.mkdir("/d")
    fd = fs.open("/d/f", CREATE)
    fs.pwritev(fd, [b"hello ", b"world"], 0)
    copy = fs.dup(fd)
    fs.close(fd)
    fs.remove("/d/f")
    fs.rmdir("/d")
    assert not fs.exists("/d/f")
    assert fs.pread(copy, 100, 0) == b"hello world"
    assert fs.used_bytes == 11, "an open file keeps its bytes"
    fs.close(copy)
    assert fs.used_bytes == 0, "the last close frees them"
    with pytest.raises(OSError, match="Bad file descriptor") as info:
        fs.pread(copy, 1, 0)
    assert info.value.errno == errno.EBADF


def test_a_file_replaced_by_a_rename_stays_readable_through_its_descriptor() -> None:
    fs = MemoryFileSystem()
    old = fs.open("/f", CREATE)
    fs.pwritev(old, [b"old"], 0)
    new = fs.open("/f.tmp", CREATE)
    fs.pwritev(new, [b"newer"], 0)
    fs.close(new)
    fs.rename("/f.tmp", "/f")
    assert fs.pread(old, 10, 0) == b"old"
    assert fs.used_bytes == 8
    fs.close(old)
    assert fs.used_bytes == 5
    assert Files(fs).read_file("/f") == b"newer"


def test_writes_beyond_the_bound_fail_with_enospc_and_change_nothing() -> None:
    fs = MemoryFileSystem(max_bytes=10)
    fd = fs.open("/f", CREATE)
    fs.pwritev(fd, [b"12345678"], 0)
    with pytest.raises(MemoryFullError) as info:
        fs.pwritev(fd, [b"abc"], 8)
    assert info.value.errno == errno.ENOSPC
    with pytest.raises(MemoryFullError):
        fs.ftruncate(fd, 11)
    assert fs.pread(fd, 20, 0) == b"12345678"
    fs.pwritev(fd, [b"ab"], 0)  # overwriting takes no room
    fs.pwritev(fd, [b"90"], 8)  # nor does reaching the bound exactly
    fs.ftruncate(fd, 4)
    fs.pwritev(fd, [b"xyzuvw"], 4)  # a truncation gives room back
    assert fs.pread(fd, 20, 0) == b"ab34xyzuvw"
    assert fs.used_bytes == 10


def test_one_write_takes_iov_max_buffers_and_a_handle_writes_any_number(tmp_path: Any) -> None:
    chunks = [b"%05d" % i for i in range(IOV_MAX + 500)]
    for fs, path in ((MemoryFileSystem(), "/f"), (OsFileSystem(), str(tmp_path / "f"))):
        fd = fs.open(path, CREATE)
        with pytest.raises(OSError, match="Invalid argument") as info:  # one call refuses them
            fs.pwritev(fd, chunks, 0)
        assert info.value.errno == errno.EINVAL
        fs.close(fd)
        handle = Files(fs).open(path, CREATE)
        handle.write_at(chunks, 3)  # IOV_MAX at a time
        assert fs.pread(handle.fd, 10 * len(chunks), 3) == b"".join(chunks)
        handle.close()


def test_the_full_error_names_the_setting_that_bounds_it() -> None:
    files = Files(MemoryFileSystem(max_bytes=4))
    handle = files.open("/segment.log", CREATE)
    with pytest.raises(StorageError, match=r"\[ENOSPC\] \(raise max_memory_storage_bytes"):
        handle.write_at([b"too long"], 0)


def test_a_full_memory_fails_an_append_as_a_full_disk_and_retention_makes_room() -> None:
    fs = MemoryFileSystem(max_bytes=8192)
    config = TopicConfig(
        segment_bytes=2048, index_interval_bytes=200, retention_ms=-1, retention_bytes=4096
    )
    log = PartitionLog.open("/t-0", config, clock=FakeClock(), files=Files(fs))
    batch = make_batch(1, size=500)
    written = []

    def fill() -> None:
        for _ in range(100):  # 57,000 bytes: far past the bound
            written.extend(append_all(log, [batch]))

    with pytest.raises(StorageError, match="max_memory_storage_bytes"):
        fill()
    assert log.offline is None, "a full memory, like a full disk, leaves the log online"
    assert log.log_end_offset == len(written)
    assert read_all(log) == b"".join(w.data for w in written)
    assert fs.used_bytes <= fs.max_bytes
    log.update_high_watermark(log.log_end_offset)
    assert log.delete_old_segments() > 0
    assert log.append(batch).base_offset == len(written), "retention made room"
    log.close()
