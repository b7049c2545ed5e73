"""Stopping a command: SIGTERM is handled like Ctrl-C, and both stop it cleanly.

A service manager, a container runtime or ``kill`` stop a process with SIGTERM, whose default
ends it at once: a group consumer would neither commit what it printed nor leave its group
(which then waits a session timeout for it), a producer would drop what it holds. :func:`run`
turns the first SIGINT or SIGTERM into a clean stop of the command's coroutine -- cancelled, so
every ``async with`` client closes (a consumer commits and leaves its group, a producer sends
what it holds), or wound down by the command itself through ``on_stop`` -- and then raises
:class:`Stopped`. A second signal is not caught: it stops the process at once, as today.

Exit status after a clean stop: 128 + the signal's number (130 for SIGINT, 143 for SIGTERM), the
shell's convention, unless the command ends that way normally (``consume``, ``tail`` and the
``produce`` prompt exit 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Callable, Coroutine, Iterator
from types import FrameType
from typing import Any, Final, TypeVar

T = TypeVar("T")

STOP_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)
EXIT_SIGNALLED: Final = 128
"""A command stopped by signal N exits 128 + N (the shell's convention)."""


class Stopped(Exception):
    """The command was stopped by SIGINT or SIGTERM and has wound down cleanly.

    ``result`` is what its coroutine returned, if it returned (after ``on_stop``), else
    ``None`` (it was cancelled)."""

    def __init__(self, signum: signal.Signals, result: Any = None) -> None:
        super().__init__(f"stopped by {signum.name}")
        self.signal = signum
        self.result = result

    @property
    def exit_code(self) -> int:
        return EXIT_SIGNALLED + int(self.signal)


def _default_disposition(signum: signal.Signals) -> bool:
    """Whether ``signum`` has its default action here (an inherited SIG_IGN is respected)."""
    handler = signal.getsignal(signum)
    if signum == signal.SIGINT:
        return handler is signal.default_int_handler
    return handler in (signal.SIG_DFL, None)


class _StopSignals:
    """The handlers :func:`run` installs on its loop, for the first stop signal only."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        task: asyncio.Task[Any],
        on_stop: Callable[[], None] | None,
    ) -> None:
        self.loop = loop
        self.task = task
        self.on_stop = on_stop
        self.signal: signal.Signals | None = None
        self.installed: list[signal.Signals] = []

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in STOP_SIGNALS:
            if _default_disposition(signum):
                with contextlib.suppress(NotImplementedError):  # loops without signals
                    self.loop.add_signal_handler(signum, self._stop, signum)
                    self.installed.append(signum)

    def uninstall(self) -> None:
        """Back to the defaults: a further signal stops the process at once."""
        for signum in self.installed:
            self.loop.remove_signal_handler(signum)
        self.installed.clear()

    def _stop(self, signum: signal.Signals) -> None:
        self.uninstall()
        self.signal = signum
        if self.on_stop is not None:
            self.on_stop()
        else:
            self.task.cancel()


def run(main: Coroutine[Any, Any, T], *, on_stop: Callable[[], None] | None = None) -> T:
    """Run a command's coroutine on a fresh event loop and return its result, stopping it
    cleanly on the first SIGINT or SIGTERM.

    The signal calls ``on_stop()`` if given (the command winds down and returns), else it
    cancels the coroutine (its ``async with`` blocks close). Once the coroutine has ended,
    :class:`Stopped` is raised (an error the coroutine raised instead is raised as it is).
    """
    with asyncio.Runner() as runner:
        loop = runner.get_loop()
        task = loop.create_task(main)
        signals = _StopSignals(loop, task, on_stop)
        signals.install()
        try:
            result = loop.run_until_complete(task)
        except asyncio.CancelledError:
            if signals.signal is None:
                raise
            raise Stopped(signals.signal) from None
        finally:
            signals.uninstall()
    if signals.signal is not None:
        raise Stopped(signals.signal, result)
    return result


@contextlib.contextmanager
def sigterm_as_ctrl_c() -> Iterator[None]:
    """Within the block SIGTERM does whatever Ctrl-C does at that moment (a
    ``KeyboardInterrupt`` at a blocking prompt; in ``asyncio.Runner.run``, the cancellation of
    what it runs): for commands that prompt rather than run one coroutine.

    Like a signal at any blocking ``input()``, one that lands in the instant between Python's
    last check for signals and the terminal read is only handled once the read returns (the
    next line typed); :func:`run` has no such gap (its loop wakes up on every signal)."""
    if threading.current_thread() is not threading.main_thread() or not _default_disposition(
        signal.SIGTERM
    ):
        yield
        return

    def as_ctrl_c(signum: int, frame: FrameType | None) -> None:
        handler = signal.getsignal(signal.SIGINT)
        if not callable(handler):
            raise KeyboardInterrupt
        handler(signal.SIGINT, frame)

    previous = signal.signal(signal.SIGTERM, as_ctrl_c)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
