"""A file system that remembers what was fsynced, so that a test can replay a power loss.

A test hook, not a setting: :func:`journaled_file_system` turns it on for a broker *process* when
the environment variable ``TIDELOG_TEST_POWERLOSS_JOURNAL`` names a directory (outside the data
dir); otherwise the broker uses :class:`~.files.OsFileSystem` and pays nothing.

:class:`PowerLossFileSystem` does every operation for real and, beside it, keeps a model of
what a power loss would leave, in an append-only journal written with ``os.write`` (so it
survives a SIGKILL of the broker, as the kernel keeps it): the lazyfs idea without FUSE. The
model is strict POSIX, like ext4 without its rename heuristics:

* A file's **content** is durable up to its size when its last fsync *started*
  (:class:`Node` ``synced``). A write or an ``ftruncate`` that changes bytes below that size
  first journals the bytes it replaces (an *undo* record), so a power loss can put them back:
  a truncation that was never fsynced is undone, its tail comes back.
* A **name** (create, mkdir, rename, remove) is durable only once its directory is fsynced:
  the directory's durable entries become its entries when that fsync started. A file created
  and fsynced whose directory was never fsynced is gone after a power loss; a file whose name
  is durable but whose data never was is empty; a file removed (or renamed over) while its old
  name is still durable comes back with its synced bytes (every file is hard-linked into the
  journal's ``graveyard/`` while any name, current or durable, refers to it).
* Only files under the data dir (the *root*) that go through this layer are modelled; anything
  else (the directory lock, files written by other code) counts as durable as it is.

:func:`replay_power_loss` (after the process is SIGKILLed) rewrites the data dir to that model
and clears the journal: the next process starts from a state that is all durable.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import struct
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from .files import Buffer, OsFileSystem

JOURNAL_ENV: Final = "TIDELOG_TEST_POWERLOSS_JOURNAL"
"""Names the journal directory of a broker process run with this layer (a test hook)."""
SLOW_FSYNC_ENV: Final = "TIDELOG_TEST_POWERLOSS_SLOW_FSYNC_MS"
"""With the journal: milliseconds each fsync of a ``.log`` file waits first (a slow disk, so
that a power loss finds appended bytes not yet durable more often)."""
JOURNAL_FILE: Final = "journal"
GRAVEYARD: Final = "graveyard"
ROOT: Final = 0
"""The node id of the root (the data dir), durable by definition."""
FILE: Final = "f"
DIR: Final = "d"
_LENGTH: Final = struct.Struct("<I")

Key = tuple[int, str]
"""A directory entry: (the directory's node id, the name)."""


@dataclass(slots=True)
class Node:
    """A file or directory (an inode): what of its content a power loss keeps."""

    kind: str
    synced: int = 0
    """Bytes of content durable: the size when the newest fsync that completed started."""
    sync_seq: int = -1
    """The journal position at which that fsync started."""
    undo: list[tuple[int, int, bytes]] = field(default_factory=list)
    """(journal position, offset, the bytes replaced) of changes below ``synced`` made since
    that fsync started, oldest first."""
    pending: list[int] = field(default_factory=list)
    """Sizes at the start of fsyncs still running: their bytes may become durable too."""


class Model:
    """What exists now and what a power loss would leave, rebuilt from journal records."""

    def __init__(self) -> None:
        self.nodes: dict[int, Node] = {ROOT: Node(DIR)}
        self.current: dict[Key, int] = {}
        self.durable: dict[Key, int] = {}
        self.seq = 0
        """Records applied so far: the position of the next one."""
        self.next_id = ROOT + 1

    def apply(self, record: Sequence[Any]) -> None:
        kind = record[0]
        if kind == "found":  # an entry that existed before the layer saw it: durable
            _, node, parent, name, node_kind, size = record
            self.nodes[node] = Node(node_kind, size)
            self.current[parent, name] = self.durable[parent, name] = node
        elif kind == "create":
            _, node, parent, name, node_kind = record
            self.nodes[node] = Node(node_kind)
            self.current[parent, name] = node
        elif kind == "rename":
            _, src_parent, src_name, dst_parent, dst_name = record
            self.current[dst_parent, dst_name] = self.current.pop((src_parent, src_name))
        elif kind == "remove":
            self.current.pop((record[1], record[2]), None)
        elif kind == "undo":
            _, node, offset, data = record
            self.nodes[node].undo.append((self.seq, offset, data))
        elif kind == "sync":
            _, node, size, started = record
            n = self.nodes[node]
            if started >= n.sync_seq:
                n.synced, n.sync_seq = size, started
                n.undo = [u for u in n.undo if u[0] > started]
        elif kind == "dirsync":
            _, node, entries = record
            for key in [k for k in self.durable if k[0] == node]:
                del self.durable[key]
            for name, child in entries:
                self.durable[node, name] = child
        else:
            raise ValueError(f"unknown power-loss journal record {kind!r}")
        if kind in ("found", "create"):
            self.next_id = max(self.next_id, record[1] + 1)
        self.seq += 1

    def children(self, table: dict[Key, int], node: int) -> dict[str, int]:
        return {name: child for (parent, name), child in table.items() if parent == node}

    def paths(self, table: dict[Key, int]) -> Iterator[tuple[str, int]]:
        """(path relative to the root, node) of every entry reachable from the root in
        ``table``, parents before children."""
        by_parent: dict[int, list[tuple[str, int]]] = {}
        for (parent, name), child in table.items():
            by_parent.setdefault(parent, []).append((name, child))
        stack = [("", ROOT)]
        while stack:
            prefix, node = stack.pop()
            for name, child in sorted(by_parent.get(node, ())):
                path = os.path.join(prefix, name)
                yield path, child
                if self.nodes[child].kind == DIR:
                    stack.append((path, child))

    def is_durable(self, node: int) -> bool:
        return node in self.durable.values()


def read_journal(path: str) -> tuple[list[list[Any]], int]:
    """The whole records of a journal and the length they take (a torn last record, from a
    kill in the middle of a write, is left out: the operation it stood for did not count)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return [], 0
    records, pos = [], 0
    while pos + _LENGTH.size <= len(data):
        (size,) = _LENGTH.unpack_from(data, pos)
        end = pos + _LENGTH.size + size
        if end > len(data):
            break
        records.append(msgspec.msgpack.decode(data[pos + _LENGTH.size : end]))
        pos = end
    return records, pos


def load_model(journal_dir: str) -> Model:
    model = Model()
    for record in read_journal(os.path.join(journal_dir, JOURNAL_FILE))[0]:
        model.apply(record)
    return model


class PowerLossFileSystem(OsFileSystem):
    """The real file system, journaling what a power loss would keep of everything under
    ``root`` (see the module's docstring). Thread-safe; a broker process started again with
    the same journal continues its model (a plain SIGKILL loses nothing the kernel holds).

    Every file it creates (or first sees) is also hard-linked as ``graveyard/<node>`` in the
    journal directory, so its bytes stay reachable whatever happens to its names; a link is
    dropped once no name, current or durable, refers to the file any more."""

    def __init__(self, root: str, journal_dir: str, *, slow_fsync_s: float = 0.0) -> None:
        """``slow_fsync_s``: how long every fsync of a ``.log`` file (log data, fsynced off the
        event loop) waits before it starts, as on a slow disk."""
        self.root = os.path.abspath(root)
        self.slow_fsync_s = slow_fsync_s
        self._slow: set[int] = set()
        self.journal_dir = journal_dir
        self._graveyard = os.path.join(journal_dir, GRAVEYARD)
        os.makedirs(self._graveyard, exist_ok=True)
        path = os.path.join(journal_dir, JOURNAL_FILE)
        records, length = read_journal(path)
        self.model = Model()
        for record in records:
            self.model.apply(record)
        self._lock = threading.RLock()
        self._fds: dict[int, int] = {}
        self._journal = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC)
        os.ftruncate(self._journal, length)  # a torn record of the previous process

    # --- the journal and the model ---------------------------------------------------------

    def _record(self, *record: Any) -> None:
        """Journal ``record`` and apply it to the model (the caller holds the lock)."""
        payload = msgspec.msgpack.encode(record)
        os.write(self._journal, _LENGTH.pack(len(payload)) + payload)
        self.model.apply(record)

    def _relative(self, path: str) -> str | None:
        path = os.path.abspath(path)
        if path == self.root:
            return ""
        if not path.startswith(self.root + os.sep):
            return None
        return path[len(self.root) + 1 :]

    def _lookup(self, path: str) -> tuple[int, str, int | None] | None:
        """(parent node, name, node or ``None`` if absent) of ``path`` under the root; an
        entry found on disk that the model does not know is recorded as durable. ``None``
        outside the root, for the root itself, or under a missing directory."""
        rel = self._relative(path)
        if not rel:
            return None
        parent, parts = ROOT, rel.split(os.sep)
        for i, name in enumerate(parts):
            node = self.model.current.get((parent, name))
            full = os.path.join(self.root, *parts[: i + 1])
            if node is None and os.path.lexists(full):
                node = self.model.next_id
                kind = DIR if os.path.isdir(full) else FILE
                self._record("found", node, parent, name, kind, os.lstat(full).st_size)
                self._link(node, full)
            if i == len(parts) - 1:
                return parent, name, node
            if node is None:
                return None
            parent = node
        return None

    def _link(self, node: int, path: str) -> None:
        if self.model.nodes[node].kind == FILE:
            with contextlib.suppress(FileExistsError):
                os.link(path, os.path.join(self._graveyard, str(node)))

    def _prune(self, *nodes: int | None) -> None:
        """Drop the graveyard links of files no name refers to any more."""
        named = set(self.model.current.values()) | set(self.model.durable.values())
        for node in nodes:
            if node is not None and node not in named:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(self._graveyard, str(node)))

    def _save(self, fd: int, node_id: int, start: int, end: int) -> None:
        """Journal the bytes in [start, end) below the durable size before they change."""
        node = self.model.nodes[node_id]
        end = min(end, max(node.synced, *node.pending) if node.pending else node.synced)
        if start < end:
            self._record("undo", node_id, start, super().pread(fd, end - start, start))

    # --- the operations --------------------------------------------------------------------

    def open(self, path: str, flags: int) -> int:
        fd = self._open(path, flags)
        if self.slow_fsync_s and path.endswith(".log"):
            with self._lock:
                self._slow.add(fd)
        return fd

    def _open(self, path: str, flags: int) -> int:
        with self._lock:
            found = self._lookup(path)
            if found is None:
                fd = super().open(path, flags)
                if self._relative(path) == "":
                    self._fds[fd] = ROOT
                return fd
            parent, name, node = found
            if node is not None:
                fd = super().open(path, flags)
                self._fds[fd] = node
                return fd
            node = self.model.next_id  # created by this open, if it succeeds
            self._record("create", node, parent, name, FILE)
            try:
                fd = super().open(path, flags)
            except BaseException:
                self._record("remove", parent, name)
                raise
            self._link(node, path)
            self._fds[fd] = node
            return fd

    def close(self, fd: int) -> None:
        with self._lock:
            self._fds.pop(fd, None)
            self._slow.discard(fd)
        super().close(fd)

    def dup(self, fd: int) -> int:
        with self._lock:
            new = super().dup(fd)
            if fd in self._fds:
                self._fds[new] = self._fds[fd]
            if fd in self._slow:
                self._slow.add(new)
            return new

    def pwritev(self, fd: int, buffers: Sequence[Buffer], offset: int) -> int:
        with self._lock:
            node = self._fds.get(fd)
            if node is not None:
                self._save(fd, node, offset, offset + sum(len(b) for b in buffers))
            return super().pwritev(fd, buffers, offset)

    def ftruncate(self, fd: int, size: int) -> None:
        with self._lock:
            node = self._fds.get(fd)
            if node is not None:
                self._save(fd, node, size, super().fstat_size(fd))
            super().ftruncate(fd, size)

    def fsync(self, fd: int) -> None:
        """fsync, then journal what it made durable as of its start: a directory's entries,
        or a file's size (bytes written while it runs may or may not be covered: not
        counted)."""
        if fd in self._slow:
            time.sleep(self.slow_fsync_s)  # the simulated slow disk, not a synchronisation
        with self._lock:
            node_id = self._fds.get(fd)
            if node_id is None:
                return super().fsync(fd)
            node = self.model.nodes[node_id]
            if node.kind == DIR:
                entries = sorted(self.model.children(self.model.current, node_id).items())
            else:
                size, started = super().fstat_size(fd), self.model.seq
                node.pending.append(size)
        if node.kind == DIR:
            super().fsync(fd)
            with self._lock:
                before = set(self.model.children(self.model.durable, node_id).values())
                self._record("dirsync", node_id, entries)
                self._prune(*before)
            return None
        try:
            super().fsync(fd)
        finally:
            with self._lock:
                node.pending.remove(size)
        with self._lock:
            self._record("sync", node_id, size, started)
        return None

    def rename(self, src: str, dst: str) -> None:
        with self._lock:
            source, target = self._lookup(src), self._lookup(dst)
            super().rename(src, dst)
            if source is None or target is None or source[2] is None:
                return  # outside the root: nothing to model
            self._record("rename", source[0], source[1], target[0], target[1])
            self._prune(target[2])

    def remove(self, path: str) -> None:
        self._unlink(path, super().remove)

    def rmdir(self, path: str) -> None:
        self._unlink(path, super().rmdir)

    def _unlink(self, path: str, action: Callable[[str], None]) -> None:
        with self._lock:
            found = self._lookup(path)
            action(path)
            if found is not None:
                self._record("remove", found[0], found[1])
                self._prune(found[2])

    def mkdir(self, path: str) -> None:
        with self._lock:
            found = self._lookup(path)
            if found is None:
                return super().mkdir(path)
            if found[2] is not None:  # exists: let the real call say so
                return super().mkdir(path)
            self._record("create", self.model.next_id, found[0], found[1], DIR)
            try:
                super().mkdir(path)
            except BaseException:
                self._record("remove", found[0], found[1])
                raise
            return None


def journaled_file_system(data_dir: str) -> PowerLossFileSystem | None:
    """The file system a broker process uses for ``data_dir`` under test: a
    :class:`PowerLossFileSystem` if ``$TIDELOG_TEST_POWERLOSS_JOURNAL`` names its journal
    directory (``$TIDELOG_TEST_POWERLOSS_SLOW_FSYNC_MS`` slows its fsyncs of log data), else
    ``None`` (the real one)."""
    journal = os.environ.get(JOURNAL_ENV)
    if not journal:
        return None
    slow_ms = float(os.environ.get(SLOW_FSYNC_ENV) or 0)
    return PowerLossFileSystem(data_dir, journal, slow_fsync_s=slow_ms / 1000)


@dataclass(slots=True)
class PowerLossReport:
    """What :func:`replay_power_loss` changed."""

    dropped: dict[str, int] = field(default_factory=dict)
    """Bytes lost per file (its bytes beyond its last fsync, or all of them if its name was
    not durable), by path relative to the data dir."""
    files_gone: list[str] = field(default_factory=list)
    """Files whose names were not durable."""
    files_back: list[str] = field(default_factory=list)
    """Durable names of files that had been removed or renamed over."""
    bytes_restored: int = 0
    """Bytes put back: overwritten or truncated after their fsync, without a new one."""

    def dropped_from(self, suffix: str) -> int:
        """Bytes lost from files whose names end with ``suffix`` (``".log"``: log data)."""
        return sum(n for path, n in self.dropped.items() if path.endswith(suffix))


def _content(model: Model, node_id: int, where: str | None, graveyard: str) -> bytes:
    """The bytes a power loss leaves of a file: its current bytes (through its graveyard link,
    else its current name), each change since its last fsync undone (newest first), cut to
    its durable size."""
    data = bytearray()
    for path in (os.path.join(graveyard, str(node_id)), where):
        if path is not None and os.path.isfile(path):
            with open(path, "rb") as f:
                data = bytearray(f.read())
            break
    node = model.nodes[node_id]
    for _, offset, old in reversed(node.undo):
        if len(data) < offset:
            data.extend(bytes(offset - len(data)))
        data[offset : offset + len(old)] = old
    return bytes(data[: node.synced])


def replay_power_loss(data_dir: str, journal_dir: str) -> PowerLossReport:
    """Rewrite ``data_dir`` (its broker process killed, with :class:`PowerLossFileSystem` on
    ``journal_dir``) to what a power loss would have left, then clear the journal."""
    model = load_model(journal_dir)
    graveyard = os.path.join(journal_dir, GRAVEYARD)
    root = os.path.abspath(data_dir)
    now = {node: os.path.join(root, path) for path, node in model.paths(model.current)}
    durable = list(model.paths(model.durable))
    contents = {
        node: _content(model, node, now.get(node), graveyard)
        for _, node in durable
        if model.nodes[node].kind == FILE
    }
    report = PowerLossReport()
    durable_nodes = {node for _, node in durable}
    for node, path in now.items():
        if model.nodes[node].kind == FILE and os.path.isfile(path):
            lost = os.path.getsize(path) - len(contents.get(node, b""))
            if lost > 0:
                report.dropped[os.path.relpath(path, root)] = lost
            if node not in durable_nodes:
                report.files_gone.append(os.path.relpath(path, root))
            os.remove(path)
    for node, path in sorted(now.items(), key=lambda item: -len(item[1])):
        if model.nodes[node].kind == DIR:
            with contextlib.suppress(OSError):  # not empty: files the model never saw
                os.rmdir(path)
    for path, node in durable:
        full = os.path.join(root, path)
        if model.nodes[node].kind == DIR:
            os.makedirs(full, exist_ok=True)
            continue
        if now.get(node) != full:
            report.files_back.append(path)
        data = contents[node]
        report.bytes_restored += sum(len(u[2]) for u in model.nodes[node].undo)
        with open(full, "wb") as f:
            f.write(data)
    shutil.rmtree(journal_dir)
    return report
