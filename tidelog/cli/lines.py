"""The input of ``tidelog produce``: the lines of a file or a pipe, read by a thread."""

from __future__ import annotations

import asyncio
import functools
import os
import threading
from collections.abc import AsyncGenerator, Callable
from typing import IO, Final, TypeAlias

from .errors import CliError

READ_CHUNK: Final = 256 * 1024
"""Bytes the reader thread takes from the input at a time."""
MAX_LINE: Final = 64 * 1024 * 1024
"""Longest input line held while waiting for its newline (far above any record size)."""
READ_AHEAD_CHUNKS: Final = 8
"""Chunks read but not yet sent: the input's memory bound."""

Chunk: TypeAlias = tuple[list[bytes], int]
"""Lines (without their line ends), and the bytes of input they took."""


class InputLines:
    """The lines of ``stream`` in chunks: ``async for lines, size in InputLines(s).chunks()``.

    A thread does the blocking reads, so records keep flowing while it waits on a slow pipe;
    it reads at most ``READ_AHEAD_CHUNKS`` ahead. :meth:`stop` ends the lines early (on a stop
    signal): the chunks already read still come, then the iteration ends without waiting for
    more input, so that no line taken from a pipe is lost.
    """

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self._queue: asyncio.Queue[Chunk | BaseException | None] | None = None
        self._stopped = False

    def stop(self) -> None:
        """End the lines after those already read (also before :meth:`chunks` started)."""
        self._stopped = True
        if self._queue is not None:
            self._queue.put_nowait(None)  # behind the chunks already queued

    async def chunks(self) -> AsyncGenerator[Chunk]:
        loop = asyncio.get_running_loop()
        queue = self._queue = asyncio.Queue()
        if self._stopped:
            return
        room = threading.Semaphore(READ_AHEAD_CHUNKS)
        stop = threading.Event()

        def put(item: Chunk | BaseException | None) -> bool:
            room.acquire()
            if stop.is_set():
                return False
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is gone: the command ended
                return False
            return True

        thread = threading.Thread(
            target=_read, args=(_raw_reader(self.stream), put, stop), daemon=True
        )
        thread.name = "tidelog-produce-input"
        thread.start()
        try:
            while True:
                item = await queue.get()
                room.release()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise CliError(f"cannot read the input: {item}") from item
                yield item
        finally:
            stop.set()
            room.release(READ_AHEAD_CHUNKS)


def _raw_reader(stream: IO[bytes]) -> Callable[[int], bytes]:
    """Reads of the file descriptor itself where there is one: a read still blocked on an open
    pipe when the command ends then holds no lock of the stream, which the interpreter would
    need at exit (nothing has read the stream before, so no bytes wait in its buffer)."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation: no descriptor
        read1: Callable[[int], bytes] | None = getattr(stream, "read1", None)
        return stream.read if read1 is None else read1
    return functools.partial(os.read, fd)


def _read(
    read: Callable[[int], bytes],
    put: Callable[[Chunk | BaseException | None], bool],
    stop: threading.Event,
) -> None:
    """The reader thread: whole lines to ``put`` until the end of the input (then ``None``),
    an error, or ``put`` refuses."""
    partial: list[bytes] = []  # pieces of a line still waiting for its newline
    held = 0
    unreported = 0  # bytes read but not yet counted in the progress
    try:
        while not stop.is_set():
            chunk = read(READ_CHUNK)
            if not chunk:
                break
            unreported += len(chunk)
            if b"\n" not in chunk:
                partial.append(chunk)
                held += len(chunk)
                if held > MAX_LINE:
                    raise ValueError(f"an input line is longer than {MAX_LINE} bytes")
                continue
            lines = b"".join([*partial, chunk]).split(b"\n")
            partial = [lines.pop()]
            held = len(partial[0])
            if not put(([_strip_cr(line) for line in lines], unreported)):
                return
            unreported = 0
        tail = b"".join(partial)
        if tail and not put(([_strip_cr(tail)], unreported)):
            return
        put(None)
    except BaseException as exc:
        put(exc)


def _strip_cr(line: bytes) -> bytes:
    return line[:-1] if line.endswith(b"\r") else line
