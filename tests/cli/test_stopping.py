"""``tidelog.cli.stopping.run`` in-process, with SIGINT sent to this very process (SIGTERM is
covered by the subprocess tests in test_signals.py: unhandled, it would end the test run)."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest

from tidelog.cli.stopping import Stopped, run


def stopped_by(
    command: Coroutine[Any, Any, Any], on_stop: Callable[[], None] | None = None
) -> Stopped:
    """The Stopped that ``run(command)`` raises (a SIGINT that got through as a
    KeyboardInterrupt fails the test instead of ending the test run)."""
    try:
        run(command, on_stop=on_stop)
    except Stopped as stopped:
        return stopped
    except KeyboardInterrupt:
        pytest.fail("SIGINT was not handled: KeyboardInterrupt")
    pytest.fail("run() returned")


@pytest.fixture
def default_sigint() -> Iterator[None]:
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_signal_cancels_the_coroutine_which_closes_then_stopped_is_raised(
    default_sigint: None,
) -> None:
    closed: list[str] = []

    async def command() -> None:
        try:
            os.kill(os.getpid(), signal.SIGINT)
            await asyncio.Event().wait()  # runs until stopped
        finally:
            await asyncio.sleep(0)  # closing may await
            closed.append("closed")

    stopped = stopped_by(command())
    assert closed == ["closed"]
    assert stopped.signal is signal.SIGINT and stopped.exit_code == 130
    assert stopped.result is None
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


def test_on_stop_lets_the_command_wind_down_and_keeps_its_result(default_sigint: None) -> None:
    done = asyncio.Event()

    async def command() -> str:
        os.kill(os.getpid(), signal.SIGINT)
        await done.wait()
        return "summary"

    assert stopped_by(command(), on_stop=done.set).result == "summary"


def test_without_a_signal_the_result_is_returned(default_sigint: None) -> None:
    async def command() -> int:
        return 7

    assert run(command()) == 7


def test_an_ignored_signal_stays_ignored() -> None:
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:

        async def command() -> str:
            os.kill(os.getpid(), signal.SIGINT)
            await asyncio.sleep(0)
            return "finished"

        assert run(command()) == "finished"
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_second_signal_is_not_caught(default_sigint: None) -> None:
    async def command() -> None:
        try:
            os.kill(os.getpid(), signal.SIGINT)
            await asyncio.Event().wait()
        finally:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C again while it closes
            await asyncio.sleep(0)

    with pytest.raises(KeyboardInterrupt):
        run(command())
