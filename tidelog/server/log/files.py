"""The file layer: every byte the log reads or writes goes through here.

Two parts with one job each:

* :class:`FileSystem` is the few raw operations the log needs, as a ``Protocol``, so that tests
  can swap in a fault-injecting implementation (:mod:`.faults`). :class:`OsFileSystem` is the
  real one.
* :class:`Files` and its :class:`Handle` wrap a ``FileSystem`` and are *the one place* where an
  ``OSError`` becomes a :class:`~tidelog.wire.errors.StorageError` with a message that names the
  action, the file and the errno (:func:`storage_error`). Storage code above this module never
  sees an ``OSError``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import os
import resource
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Final, Protocol, TypeAlias, cast

from tidelog.wire.errors import StorageError

Buffer: TypeAlias = bytes | bytearray | memoryview

READ_ONLY: Final = os.O_RDONLY
READ_WRITE: Final = os.O_RDWR
CREATE: Final = os.O_RDWR | os.O_CREAT
CREATE_NEW: Final = os.O_RDWR | os.O_CREAT | os.O_EXCL
IOV_MAX: Final = 1024
"""Buffers one ``pwritev`` takes (Linux's ``IOV_MAX``; more fail with EINVAL)."""
_CLOEXEC: Final = getattr(os, "O_CLOEXEC", 0)
_DIRECTORY: Final = getattr(os, "O_DIRECTORY", 0)
_fdatasync: Callable[[int], None] = getattr(os, "fdatasync", os.fsync)


def _load_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """Linux's ``sync_file_range`` from the C library (the os module does not wrap it)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        function = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return cast(Callable[[int, int, int, int], int], function)


_sync_file_range: Final = _load_sync_file_range()
_SYNC_FILE_RANGE_WRITE: Final = 2


class FileSystem(Protocol):
    """The raw file operations of the log. Implementations raise ``OSError``."""

    def open(self, path: str, flags: int) -> int: ...
    def close(self, fd: int) -> None: ...
    def dup(self, fd: int) -> int: ...
    def pread(self, fd: int, size: int, offset: int) -> bytes: ...
    def pwritev(self, fd: int, buffers: Sequence[Buffer], offset: int) -> int: ...
    def fsync(self, fd: int) -> None: ...
    def start_writeback(self, fd: int, offset: int, length: int) -> None: ...
    def ftruncate(self, fd: int, size: int) -> None: ...
    def fstat_size(self, fd: int) -> int: ...
    def stat_size(self, path: str) -> int: ...
    def exists(self, path: str) -> bool: ...
    def rename(self, src: str, dst: str) -> None: ...
    def remove(self, path: str) -> None: ...
    def mkdir(self, path: str) -> None: ...
    def rmdir(self, path: str) -> None: ...
    def listdir(self, path: str) -> list[str]: ...
    def isdir(self, path: str) -> bool: ...


class OsFileSystem:
    """The real file system, through ``os``."""

    def open(self, path: str, flags: int) -> int:
        return os.open(path, flags | _CLOEXEC, 0o644)

    def close(self, fd: int) -> None:
        os.close(fd)

    def dup(self, fd: int) -> int:
        return os.dup(fd)

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        return os.pread(fd, size, offset)

    def pwritev(self, fd: int, buffers: Sequence[Buffer], offset: int) -> int:
        return os.pwritev(fd, buffers, offset)

    def fsync(self, fd: int) -> None:
        _fdatasync(fd)

    def start_writeback(self, fd: int, offset: int, length: int) -> None:
        """Ask the kernel to start writing a range to disk now, without waiting for it
        (Linux; elsewhere a no-op)."""
        if _sync_file_range is not None and _sync_file_range(
            fd, offset, length, _SYNC_FILE_RANGE_WRITE
        ):
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))

    def ftruncate(self, fd: int, size: int) -> None:
        os.ftruncate(fd, size)

    def fstat_size(self, fd: int) -> int:
        return os.fstat(fd).st_size

    def stat_size(self, path: str) -> int:
        return os.stat(path).st_size

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def rename(self, src: str, dst: str) -> None:
        os.rename(src, dst)

    def remove(self, path: str) -> None:
        os.remove(path)

    def mkdir(self, path: str) -> None:
        os.mkdir(path)

    def rmdir(self, path: str) -> None:
        os.rmdir(path)

    def listdir(self, path: str) -> list[str]:
        return os.listdir(path)

    def isdir(self, path: str) -> bool:
        return os.path.isdir(path)


class MemoryFullError(OSError):
    """ENOSPC from in-memory storage (:mod:`.memfs`): its bound, ``max_memory_storage_bytes``,
    is reached. The log handles it exactly as a full disk."""


def descriptor_limit_hint() -> str:
    """What to do about running out of file descriptors, naming this process's limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return (
        f"this process may hold {soft} open files (hard limit {hard}); every partition keeps "
        "its active segment open: raise the limit (ulimit -n, or LimitNOFILE= under systemd)"
    )


def storage_error(exc: OSError, action: str, path: str) -> StorageError:
    """The one conversion of an ``OSError`` into the error the caller (and a producer) sees."""
    code = exc.errno
    name = errno.errorcode.get(code, "") if code is not None else ""
    reason = exc.strerror or str(exc) or type(exc).__name__
    hint = ""
    if isinstance(exc, MemoryFullError):
        hint = " (raise max_memory_storage_bytes, or lower the topics' retention)"
    elif code == errno.ENOSPC:
        hint = " (the disk is full)"
    elif code == errno.EIO:
        hint = " (the disk reported an I/O error)"
    elif code in (errno.EMFILE, errno.ENFILE):
        hint = f" ({descriptor_limit_hint()})"
    tag = f" [{name}]" if name else ""
    return StorageError(f"cannot {action} {path}: {reason}{tag}{hint}")


@contextmanager
def guarded(action: str, path: str) -> Iterator[None]:
    """Run a block of file operations, turning an ``OSError`` into a ``StorageError``."""
    try:
        yield
    except OSError as exc:
        raise storage_error(exc, action, path) from exc


class Handle:
    """An open file: a descriptor plus the path its errors are reported against."""

    __slots__ = ("_fs", "fd", "path")

    def __init__(self, fs: FileSystem, fd: int, path: str) -> None:
        self._fs = fs
        self.fd = fd
        self.path = path

    def pread(self, size: int, offset: int) -> bytes:
        try:
            return self._fs.pread(self.fd, size, offset)
        except OSError as exc:
            raise storage_error(exc, "read", self.path) from exc

    def write_at(self, buffers: Sequence[Buffer], offset: int, total: int = -1) -> None:
        """Write every byte of ``buffers`` (``total`` of them, if known) at ``offset``;
        short writes are continued, and more buffers than one system call takes
        (:data:`IOV_MAX`) are written :data:`IOV_MAX` at a time."""
        if len(buffers) > IOV_MAX:
            for i in range(0, len(buffers), IOV_MAX):
                part = buffers[i : i + IOV_MAX]
                size = sum(len(b) for b in part)
                self.write_at(part, offset, size)
                offset += size
            return
        if total < 0:
            total = sum(len(b) for b in buffers)
        try:
            done = self._fs.pwritev(self.fd, buffers, offset)
            if done < total:
                rest = memoryview(b"".join(buffers))
                while done < total:
                    n = self._fs.pwritev(self.fd, [rest[done:]], offset + done)
                    if n <= 0:
                        raise OSError(errno.EIO, "write made no progress")
                    done += n
        except OSError as exc:
            raise storage_error(exc, "write", self.path) from exc

    def sync(self) -> None:
        try:
            self._fs.fsync(self.fd)
        except OSError as exc:
            raise storage_error(exc, "fsync", self.path) from exc

    def start_writeback(self, offset: int, length: int) -> None:
        try:
            self._fs.start_writeback(self.fd, offset, length)
        except OSError as exc:
            raise storage_error(exc, "start writeback of", self.path) from exc

    def truncate(self, size: int) -> None:
        try:
            self._fs.ftruncate(self.fd, size)
        except OSError as exc:
            raise storage_error(exc, "truncate", self.path) from exc

    def size(self) -> int:
        try:
            return self._fs.fstat_size(self.fd)
        except OSError as exc:
            raise storage_error(exc, "stat", self.path) from exc

    def dup(self) -> Handle:
        """A second descriptor for the same open file: it stays valid if this one is closed or
        the file renamed, so an fsync can run on it off the event loop."""
        try:
            return Handle(self._fs, self._fs.dup(self.fd), self.path)
        except OSError as exc:
            raise storage_error(exc, "duplicate the descriptor of", self.path) from exc

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd < 0:
            return
        try:
            self._fs.close(fd)
        except OSError as exc:
            raise storage_error(exc, "close", self.path) from exc

    def close_quietly(self) -> None:
        """Close on an error path, where a second error would hide the first."""
        with suppress(StorageError):
            self.close()

    @property
    def closed(self) -> bool:
        return self.fd < 0


class Files:
    """Guarded path operations over a :class:`FileSystem` (the real one by default)."""

    __slots__ = ("fs",)

    def __init__(self, fs: FileSystem | None = None) -> None:
        self.fs: FileSystem = fs if fs is not None else OsFileSystem()

    def open(self, path: str, flags: int = READ_ONLY) -> Handle:
        with guarded("open", path):
            return Handle(self.fs, self.fs.open(path, flags), path)

    def open_dir(self, path: str) -> Handle:
        with guarded("open directory", path):
            return Handle(self.fs, self.fs.open(path, os.O_RDONLY | _DIRECTORY), path)

    def sync_dir(self, path: str) -> None:
        """fsync a directory, so that the names created, renamed or removed in it are durable."""
        handle = self.open_dir(path)
        try:
            handle.sync()
        finally:
            handle.close_quietly()

    def exists(self, path: str) -> bool:
        with guarded("stat", path):
            return self.fs.exists(path)

    def isdir(self, path: str) -> bool:
        with guarded("stat", path):
            return self.fs.isdir(path)

    def size(self, path: str) -> int:
        with guarded("stat", path):
            return self.fs.stat_size(path)

    def listdir(self, path: str) -> list[str]:
        with guarded("list", path):
            return sorted(self.fs.listdir(path))

    def mkdir(self, path: str, *, exist_ok: bool = False) -> None:
        try:
            self.fs.mkdir(path)
        except FileExistsError:
            if not exist_ok:
                raise storage_error(
                    FileExistsError(errno.EEXIST, "exists"), "create", path
                ) from None
        except OSError as exc:
            raise storage_error(exc, "create directory", path) from exc

    def makedirs(self, path: str) -> None:
        """Create a directory and its missing parents."""
        parent = os.path.dirname(path)
        if parent and parent != path and not self.isdir(parent):
            self.makedirs(parent)
        self.mkdir(path, exist_ok=True)

    def rename(self, src: str, dst: str) -> None:
        with guarded("rename", f"{src} to {dst}"):
            self.fs.rename(src, dst)

    def remove(self, path: str, *, missing_ok: bool = False) -> None:
        try:
            self.fs.remove(path)
        except FileNotFoundError:
            if not missing_ok:
                raise storage_error(
                    FileNotFoundError(errno.ENOENT, "missing"), "remove", path
                ) from None
        except OSError as exc:
            raise storage_error(exc, "remove", path) from exc

    def remove_tree(self, path: str) -> None:
        """Remove a directory and everything under it (partition directories are flat, but
        this recurses anyway)."""
        for name in self.listdir(path):
            child = os.path.join(path, name)
            if self.isdir(child):
                self.remove_tree(child)
            else:
                self.remove(child, missing_ok=True)
        with guarded("remove directory", path):
            self.fs.rmdir(path)

    def read_file(self, path: str) -> bytes | None:
        """The whole content of a small file, or ``None`` if it does not exist."""
        try:
            fd = self.fs.open(path, READ_ONLY | _CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise storage_error(exc, "open", path) from exc
        handle = Handle(self.fs, fd, path)
        try:
            size = handle.size()
            chunks: list[bytes] = []
            pos = 0
            while pos < size:
                chunk = handle.pread(size - pos, pos)
                if not chunk:
                    break
                chunks.append(chunk)
                pos += len(chunk)
            return b"".join(chunks)
        finally:
            handle.close_quietly()

    def write_atomically(self, path: str, data: bytes) -> None:
        """Replace ``path`` with ``data`` so that a crash leaves either the old or the new
        content: write a temporary file, fsync it, rename it over, fsync the directory. The
        temporary name is unique, so two writers of the same file never share one."""
        tmp = f"{path}.{uuid.uuid4().hex[:12]}.tmp"
        handle = self.open(tmp, CREATE)
        try:
            handle.truncate(0)
            handle.write_at([data], 0)
            handle.sync()
        except BaseException:
            handle.close_quietly()
            self._remove_quietly(tmp)
            raise
        handle.close()
        self.rename(tmp, path)
        self.sync_dir(os.path.dirname(path) or ".")

    def _remove_quietly(self, path: str) -> None:
        with suppress(StorageError):
            self.remove(path, missing_ok=True)


class DirectoryLock:
    """An exclusive ``flock`` on a file of a data directory: one process owns it."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = -1


def lock_directory(directory: str, name: str) -> DirectoryLock:
    """Lock ``directory`` through its file ``name``; :class:`StorageError` if another process
    holds it."""
    path = os.path.join(directory, name)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise storage_error(exc, "open", path) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        raise StorageError(f"data directory {directory} is in use by another process") from exc
    return DirectoryLock(fd)


class SyncJob:
    """A group commit's fsyncs, prepared on the event loop and run anywhere (a worker thread).

    It holds *duplicated* descriptors, so segment files may be closed, rolled, renamed or
    deleted by the loop while the fsyncs run. ``target_offset`` is the log end offset when the
    job was prepared: once it has run, every offset below it is durable.
    """

    __slots__ = ("_handles", "error", "generation", "index_versions", "target_offset")

    def __init__(
        self,
        target_offset: int,
        generation: int,
        handles: list[Handle],
        index_versions: list[tuple[object, int]],
    ) -> None:
        self.target_offset = target_offset
        self.generation = generation
        self._handles = handles
        self.index_versions = index_versions
        self.error: StorageError | None = None

    def run(self) -> None:
        """fsync every handle, then close them; an error is kept in ``error``, not raised, so
        the log can take itself offline in one place (``PartitionLog.complete_flush``)."""
        try:
            for handle in self._handles:
                if self.error is None:
                    try:
                        handle.sync()
                    except StorageError as exc:
                        self.error = exc
                handle.close_quietly()
        finally:
            for handle in self._handles:
                handle.close_quietly()
            self._handles = []

    def discard(self) -> None:
        for handle in self._handles:
            handle.close_quietly()
        self._handles = []
