"""A fault-injecting file system, for tests of what the log does when the disk fails.

``FaultyFileSystem`` behaves like the real one until a :class:`Fault` matches an operation; it
then raises ``OSError(errno)`` -- ENOSPC for a full disk, EIO for a failing one. A write fault
may first write part of the data (``partial``), which is what a disk filling up mid-batch does.
:meth:`FaultyFileSystem.corrupt` makes reads of a byte return it with a bit flipped: a disk that
silently returns wrong data, which only checksums catch.
"""

from __future__ import annotations

import errno as errno_codes
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from .files import Buffer, OsFileSystem

OPERATIONS = frozenset(
    {
        "open",
        "close",
        "dup",
        "pread",
        "write",
        "fsync",
        "writeback",
        "truncate",
        "stat",
        "rename",
        "remove",
        "mkdir",
        "rmdir",
        "listdir",
    }
)


@dataclass
class Fault:
    """Fail operation ``op`` on paths containing ``path_contains``: skip the first ``after``
    matches, then fail ``times`` of them (``None``: every one until cleared). A failing write
    first writes ``partial`` bytes."""

    op: str
    errno: int = errno_codes.EIO
    path_contains: str = ""
    after: int = 0
    times: int | None = 1
    partial: int = 0
    hits: int = 0
    """How many times this fault has fired."""
    seen: int = 0


class FaultyFileSystem(OsFileSystem):
    """The real file system with :class:`Fault` rules on top. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._paths: dict[int, str] = {}
        self._corrupt: list[tuple[str, int, int]] = []

    def inject(
        self,
        op: str,
        errno: int = errno_codes.EIO,
        *,
        path_contains: str = "",
        after: int = 0,
        times: int | None = 1,
        partial: int = 0,
    ) -> Fault:
        if op not in OPERATIONS:
            raise ValueError(f"unknown operation {op!r}; one of {sorted(OPERATIONS)}")
        fault = Fault(op, errno, path_contains, after, times, partial)
        with self._lock:
            self._faults.append(fault)
        return fault

    def corrupt(self, path_contains: str, position: int, mask: int = 0x01) -> None:
        """From now on, reads of byte ``position`` of files whose path contains
        ``path_contains`` return it XORed with ``mask`` (the file itself is unchanged)."""
        with self._lock:
            self._corrupt.append((path_contains, position, mask))

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()
            self._corrupt.clear()

    def _match(self, op: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.op != op or fault.path_contains not in path:
                    continue
                if fault.times is not None and fault.hits >= fault.times:
                    continue
                fault.seen += 1
                if fault.seen <= fault.after:
                    continue
                fault.hits += 1
                return fault
        return None

    def _check(self, op: str, path: str) -> None:
        fault = self._match(op, path)
        if fault is not None:
            raise OSError(fault.errno, os.strerror(fault.errno), path)

    def _path(self, fd: int) -> str:
        with self._lock:
            return self._paths.get(fd, "")

    def open(self, path: str, flags: int) -> int:
        self._check("open", path)
        fd = super().open(path, flags)
        with self._lock:
            self._paths[fd] = path
        return fd

    def close(self, fd: int) -> None:
        path = self._path(fd)
        with self._lock:
            self._paths.pop(fd, None)
        super().close(fd)
        self._check("close", path)

    def dup(self, fd: int) -> int:
        path = self._path(fd)
        self._check("dup", path)
        new = super().dup(fd)
        with self._lock:
            self._paths[new] = path
        return new

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        path = self._path(fd)
        self._check("pread", path)
        data = super().pread(fd, size, offset)
        with self._lock:
            hits = [
                (p, m)
                for c, p, m in self._corrupt
                if c in path and offset <= p < offset + len(data)
            ]
        if hits:
            changed = bytearray(data)
            for position, mask in hits:
                changed[position - offset] ^= mask
            data = bytes(changed)
        return data

    def pwritev(self, fd: int, buffers: Sequence[Buffer], offset: int) -> int:
        path = self._path(fd)
        fault = self._match("write", path)
        if fault is None:
            return super().pwritev(fd, buffers, offset)
        if fault.partial > 0:
            data = b"".join(buffers)[: fault.partial]
            os.pwrite(fd, data, offset)
        raise OSError(fault.errno, os.strerror(fault.errno), path)

    def fsync(self, fd: int) -> None:
        self._check("fsync", self._path(fd))
        super().fsync(fd)

    def start_writeback(self, fd: int, offset: int, length: int) -> None:
        self._check("writeback", self._path(fd))
        super().start_writeback(fd, offset, length)

    def ftruncate(self, fd: int, size: int) -> None:
        self._check("truncate", self._path(fd))
        super().ftruncate(fd, size)

    def fstat_size(self, fd: int) -> int:
        self._check("stat", self._path(fd))
        return super().fstat_size(fd)

    def stat_size(self, path: str) -> int:
        self._check("stat", path)
        return super().stat_size(path)

    def rename(self, src: str, dst: str) -> None:
        self._check("rename", src)
        super().rename(src, dst)

    def remove(self, path: str) -> None:
        self._check("remove", path)
        super().remove(path)

    def mkdir(self, path: str) -> None:
        self._check("mkdir", path)
        super().mkdir(path)

    def rmdir(self, path: str) -> None:
        self._check("rmdir", path)
        super().rmdir(path)

    def listdir(self, path: str) -> list[str]:
        self._check("listdir", path)
        return super().listdir(path)
