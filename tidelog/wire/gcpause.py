"""Pausing the cyclic garbage collector while a batch's records are built.

Reading a batch builds thousands of tuples (records) of ints, bytes and None: they cannot form
reference cycles, yet every ~700 of them trip a young-generation collection, and every few of
those an older one that walks all the records a consumer still holds. Pausing the collector
while one batch is turned into records makes ``bench/consume.py`` a quarter faster for 100-byte
records and halves the CPU time of decoding (docs/BENCHMARKS.md, "Pausing the cyclic GC").
Nothing is lost: the collector runs as usual once it is enabled again, at the next allocation
that trips it.

:func:`gc_paused` is the one place that does it. ``gc.disable()`` acts on the whole process,
so the pause is counted: nested and concurrent pauses (from several threads) share it, and
only the last one out enables the collector again, and only if it was enabled when the first
one came in. A lock keeps that count and the state it restores consistent between threads.
Hold a pause over synchronous work only (never across an ``await``), so it lasts one batch.
"""

from __future__ import annotations

import gc
import threading
from types import TracebackType
from typing import Final


class _GCPause:
    """The process's one pause: a re-entrant context manager (see :func:`gc_paused`)."""

    __slots__ = ("_depth", "_lock", "_restore")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._restore = False  # whether the collector was enabled when the pause began

    def __enter__(self) -> None:
        with self._lock:
            if self._depth == 0:
                self._restore = gc.isenabled()
                if self._restore:
                    gc.disable()
            self._depth += 1

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with self._lock:
            self._depth -= 1
            if self._depth == 0 and self._restore:
                gc.enable()

    @property
    def depth(self) -> int:
        """How many pauses are open now (tests)."""
        return self._depth


_PAUSE: Final = _GCPause()


def gc_paused() -> _GCPause:
    """``with gc_paused():`` keeps the cyclic GC from running inside the block and restores
    its previous state after it. Re-entrant and safe with threads; see the module
    documentation for why and when to use it."""
    return _PAUSE
