"""``tidelog produce``'s input reader in-process: a stop ends it after the lines already read."""

from __future__ import annotations

import asyncio
import threading

from tidelog.cli.lines import InputLines

from .helpers import DEADLINE_S, run


class OpenPipe:
    """A stream that hands out its chunks, then blocks like a pipe nobody writes to."""

    def __init__(self, *chunks: bytes) -> None:
        self.chunks = list(chunks)
        self.drained = threading.Event()
        self.closed = threading.Event()

    def read1(self, size: int) -> bytes:
        if self.chunks:
            return self.chunks.pop(0)
        self.drained.set()
        self.closed.wait(DEADLINE_S)
        return b""


def test_stop_yields_the_lines_already_read_then_ends_without_the_end_of_input() -> None:
    pipe = OpenPipe(b"a\nb\n", b"c\nd", b"e\nf\n")

    async def main() -> list[bytes]:
        lines = InputLines(pipe)  # type: ignore[arg-type]  # read1 is all it uses
        source = lines.chunks()
        got = list((await anext(source))[0])
        # Every chunk is read and handed over before the reader blocks on the open pipe.
        await asyncio.to_thread(pipe.drained.wait, DEADLINE_S)
        lines.stop()
        async for chunk, _ in source:
            got.extend(chunk)
        return got

    try:
        assert run(main()) == [b"a", b"b", b"c", b"de", b"f"]
    finally:
        pipe.closed.set()


def test_stop_before_reading_reads_nothing() -> None:
    pipe = OpenPipe(b"a\n")

    async def main() -> list[bytes]:
        lines = InputLines(pipe)  # type: ignore[arg-type]
        lines.stop()
        return [line async for chunk, _ in lines.chunks() for line in chunk]

    assert run(main()) == []
    assert pipe.chunks == [b"a\n"]
