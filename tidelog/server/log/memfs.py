"""An in-memory file system: the broker's ``storage = "memory"`` (tests and demos).

:class:`MemoryFileSystem` implements :class:`~.files.FileSystem` with files as ``bytearray`` s
in a tree of directories, so the same log code (segments, indexes, checkpoints, retention)
runs unchanged and nothing touches the disk. It keeps POSIX's semantics where the log relies
on them, and raises the same ``OSError`` errnos, so the error paths above work too:

* a descriptor refers to the file, not its name: a file renamed or removed while open stays
  readable and writable through it (retention deletes segments a fetch may still hold), and
  its bytes are freed when the last descriptor is closed;
* ``dup`` gives a second descriptor of the same file; descriptors are never reused, so a stale
  one fails with EBADF instead of reaching another file;
* ``fsync`` and ``start_writeback`` do nothing: there is nothing to make durable.

``max_bytes`` bounds the bytes of all files held (linked or still open); a write or an
extension beyond it fails with ENOSPC, a :class:`~.files.MemoryFullError`, which the log treats
as a full disk. One lock makes it thread-safe (fsyncs and file creation run in worker threads).
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Sequence
from typing import Final

from .files import IOV_MAX, Buffer, MemoryFullError

MEMORY_DATA_DIR: Final = "memory:"
"""The data directory of a broker with in-memory storage: a name only this file system knows,
so messages that name a file (``memory:/orders-0/...log``) cannot be mistaken for disk paths."""

_ACCESS: Final = os.O_RDONLY | os.O_WRONLY | os.O_RDWR
_DIRECTORY: Final = getattr(os, "O_DIRECTORY", 0)


def _error(code: int, path: str = "") -> OSError:
    """``OSError(code)``, which Python turns into its subclass (``FileNotFoundError``, ...)."""
    return OSError(code, os.strerror(code), path) if path else OSError(code, os.strerror(code))


class _File:
    __slots__ = ("data", "linked", "opens")

    def __init__(self) -> None:
        self.data = bytearray()
        self.linked = True
        """Whether a directory holds it; an unlinked file lives on while ``opens``."""
        self.opens = 0


class _Dir:
    __slots__ = ("entries",)

    def __init__(self) -> None:
        self.entries: dict[str, _File | _Dir] = {}


class _Descriptor:
    __slots__ = ("node", "readable", "writable")

    def __init__(self, node: _File | _Dir, readable: bool, writable: bool) -> None:
        self.node = node
        self.readable = readable
        self.writable = writable


def _parts(path: str) -> list[str]:
    """The names along ``path``; relative paths start at the root too (one namespace)."""
    parts: list[str] = []
    for name in os.path.normpath(path).split("/"):
        if name == "..":
            if parts:
                parts.pop()
        elif name and name != ".":
            parts.append(name)
    return parts


class MemoryFileSystem:
    """Files in memory, with the errors and descriptor semantics of POSIX. Thread-safe."""

    def __init__(self, max_bytes: int = 0) -> None:
        """``max_bytes``: most bytes all files may hold together (0: no bound)."""
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._root = _Dir()
        self._fds: dict[int, _Descriptor] = {}
        self._next_fd = 3
        self._used = 0

    @property
    def used_bytes(self) -> int:
        """Bytes held by files, including removed files a descriptor still holds."""
        with self._lock:
            return self._used

    # --- path resolution (with the lock held) -------------------------------------------

    def _parent(self, path: str) -> tuple[_Dir, str]:
        """The directory that holds (or would hold) ``path``, and its last name."""
        parts = _parts(path)
        if not parts:
            raise _error(errno.EBUSY, path)  # the root itself
        node: _File | _Dir = self._root
        for name in parts[:-1]:
            if not isinstance(node, _Dir):
                raise _error(errno.ENOTDIR, path)
            child = node.entries.get(name)
            if child is None:
                raise _error(errno.ENOENT, path)
            node = child
        if not isinstance(node, _Dir):
            raise _error(errno.ENOTDIR, path)
        return node, parts[-1]

    def _lookup(self, path: str) -> _File | _Dir:
        if not _parts(path):
            return self._root
        parent, name = self._parent(path)
        node = parent.entries.get(name)
        if node is None:
            raise _error(errno.ENOENT, path)
        return node

    def _find(self, path: str) -> _File | _Dir | None:
        try:
            return self._lookup(path)
        except OSError:
            return None

    def _descriptor(self, fd: int) -> _Descriptor:
        try:
            return self._fds[fd]
        except KeyError:
            raise _error(errno.EBADF) from None

    def _file(self, fd: int, *, write: bool = False) -> _File:
        d = self._descriptor(fd)
        if isinstance(d.node, _Dir):
            raise _error(errno.EBADF if write else errno.EISDIR)
        if not (d.writable if write else d.readable):
            raise _error(errno.EBADF)
        return d.node

    def _unlink(self, node: _File | _Dir) -> None:
        """``node`` has left its directory: free its bytes unless a descriptor holds it."""
        if isinstance(node, _File):
            node.linked = False
            if not node.opens:
                self._used -= len(node.data)

    def _grow(self, file: _File, size: int) -> None:
        """Make room for ``file`` to reach ``size`` bytes (MemoryFullError past the bound)."""
        extra = size - len(file.data)
        if extra > 0 and self.max_bytes and self._used + extra > self.max_bytes:
            raise MemoryFullError(
                errno.ENOSPC,
                f"in-memory storage is full ({self._used} of {self.max_bytes} bytes held)",
            )

    def _resize(self, file: _File, size: int) -> None:
        self._grow(file, size)
        self._used += size - len(file.data)
        if size < len(file.data):
            del file.data[size:]
        else:
            file.data.extend(bytes(size - len(file.data)))

    # --- FileSystem ---------------------------------------------------------------------

    def open(self, path: str, flags: int) -> int:
        access = flags & _ACCESS
        with self._lock:
            node = self._find(path)
            if flags & os.O_CREAT and flags & _DIRECTORY:
                raise _error(errno.EINVAL, path)
            if node is None:
                parent, name = self._parent(path)
                if not flags & os.O_CREAT:
                    raise _error(errno.ENOENT, path)
                node = parent.entries[name] = _File()
            elif flags & os.O_CREAT and flags & os.O_EXCL:
                raise _error(errno.EEXIST, path)
            elif isinstance(node, _Dir):
                if access != os.O_RDONLY or flags & os.O_CREAT:
                    raise _error(errno.EISDIR, path)
            elif flags & _DIRECTORY:
                raise _error(errno.ENOTDIR, path)
            elif flags & os.O_TRUNC and access != os.O_RDONLY:
                self._resize(node, 0)
            if isinstance(node, _File):
                node.opens += 1
            fd, self._next_fd = self._next_fd, self._next_fd + 1
            self._fds[fd] = _Descriptor(node, access != os.O_WRONLY, access != os.O_RDONLY)
            return fd

    def close(self, fd: int) -> None:
        with self._lock:
            node = self._descriptor(fd).node
            del self._fds[fd]
            if isinstance(node, _File):
                node.opens -= 1
                if not node.opens and not node.linked:
                    self._used -= len(node.data)

    def dup(self, fd: int) -> int:
        with self._lock:
            d = self._descriptor(fd)
            if isinstance(d.node, _File):
                d.node.opens += 1
            new, self._next_fd = self._next_fd, self._next_fd + 1
            self._fds[new] = _Descriptor(d.node, d.readable, d.writable)
            return new

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        if size < 0 or offset < 0:
            raise _error(errno.EINVAL)
        with self._lock:
            data = self._file(fd).data
            with memoryview(data) as view, view[offset : offset + size] as part:
                return bytes(part)

    def pwritev(self, fd: int, buffers: Sequence[Buffer], offset: int) -> int:
        if offset < 0 or len(buffers) > IOV_MAX:  # as Linux refuses them
            raise _error(errno.EINVAL)
        total = sum(len(b) for b in buffers)
        with self._lock:
            file = self._file(fd, write=True)
            if not total:
                return 0
            data = file.data
            end = offset + total
            self._grow(file, end)
            if offset > len(data):
                self._resize(file, offset)
            before = len(data)
            if offset == before:
                for buffer in buffers:
                    data += buffer
            else:
                position = offset
                for buffer in buffers:
                    data[position : position + len(buffer)] = buffer
                    position += len(buffer)
            self._used += len(data) - before
            return total

    def fsync(self, fd: int) -> None:
        with self._lock:
            self._descriptor(fd)

    def start_writeback(self, fd: int, offset: int, length: int) -> None:
        with self._lock:
            self._descriptor(fd)

    def ftruncate(self, fd: int, size: int) -> None:
        if size < 0:
            raise _error(errno.EINVAL)
        with self._lock:
            d = self._descriptor(fd)
            if isinstance(d.node, _Dir) or not d.writable:
                raise _error(errno.EINVAL)
            self._resize(d.node, size)

    def fstat_size(self, fd: int) -> int:
        with self._lock:
            node = self._descriptor(fd).node
            return len(node.data) if isinstance(node, _File) else 0

    def stat_size(self, path: str) -> int:
        with self._lock:
            node = self._lookup(path)
            return len(node.data) if isinstance(node, _File) else 0

    def exists(self, path: str) -> bool:
        with self._lock:
            return bool(path) and self._find(path) is not None

    def isdir(self, path: str) -> bool:
        with self._lock:
            return bool(path) and isinstance(self._find(path), _Dir)

    def rename(self, src: str, dst: str) -> None:
        with self._lock:
            src_parent, src_name = self._parent(src)
            dst_parent, dst_name = self._parent(dst)
            node = src_parent.entries.get(src_name)
            if node is None:
                raise _error(errno.ENOENT, src)
            old = dst_parent.entries.get(dst_name)
            if old is node:
                return
            if isinstance(node, _Dir) and self._inside(dst_parent, node):
                raise _error(errno.EINVAL, dst)  # into itself
            if isinstance(old, _Dir) and self._inside(src_parent, old):
                raise _error(errno.ENOTEMPTY, dst)  # over a directory that holds it
            if isinstance(node, _Dir):
                if isinstance(old, _File):
                    raise _error(errno.ENOTDIR, dst)
                if isinstance(old, _Dir) and old.entries:
                    raise _error(errno.ENOTEMPTY, dst)
            elif isinstance(old, _Dir):
                raise _error(errno.EISDIR, dst)
            del src_parent.entries[src_name]
            dst_parent.entries[dst_name] = node
            if old is not None:
                self._unlink(old)

    def _inside(self, directory: _Dir, ancestor: _Dir) -> bool:
        """Whether ``directory`` is ``ancestor`` or below it."""
        if directory is ancestor:
            return True
        return any(
            isinstance(child, _Dir) and self._inside(directory, child)
            for child in ancestor.entries.values()
        )

    def remove(self, path: str) -> None:
        with self._lock:
            parent, name = self._parent(path)
            node = parent.entries.get(name)
            if node is None:
                raise _error(errno.ENOENT, path)
            if isinstance(node, _Dir):
                raise _error(errno.EISDIR, path)
            del parent.entries[name]
            self._unlink(node)

    def mkdir(self, path: str) -> None:
        with self._lock:
            if not _parts(path):
                raise _error(errno.EEXIST, path)
            parent, name = self._parent(path)
            if name in parent.entries:
                raise _error(errno.EEXIST, path)
            parent.entries[name] = _Dir()

    def rmdir(self, path: str) -> None:
        with self._lock:
            parent, name = self._parent(path)
            node = parent.entries.get(name)
            if node is None:
                raise _error(errno.ENOENT, path)
            if not isinstance(node, _Dir):
                raise _error(errno.ENOTDIR, path)
            if node.entries:
                raise _error(errno.ENOTEMPTY, path)
            del parent.entries[name]

    def listdir(self, path: str) -> list[str]:
        with self._lock:
            node = self._lookup(path)
            if not isinstance(node, _Dir):
                raise _error(errno.ENOTDIR, path)
            return list(node.entries)
