"""Errors as one red line: what happened and what to do. Exit codes: 1 for errors, 2 for
usage errors (typer's own, and :class:`CliUsageError`), 128 + N after a clean stop by signal N
(130 for SIGINT, 143 for SIGTERM; see :mod:`.stopping`). ``--debug`` shows the traceback."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Final, ParamSpec, TypeVar

import typer
from rich.text import Text

from tidelog.client.errors import (
    BrokerError,
    ClientUsageError,
    RequestTimeoutError,
    TidelogConnectionError,
    TidelogError,
)

from . import context
from .stopping import Stopped

P = ParamSpec("P")
R = TypeVar("R")

EXIT_ERROR: Final = 1
EXIT_USAGE: Final = 2


class CliError(Exception):
    """A failure the command explains itself; ``str()`` is the line shown to the user."""

    exit_code: int = EXIT_ERROR


class CliUsageError(CliError):
    """The arguments cannot work together; exits 2 like typer's usage errors."""

    exit_code = EXIT_USAGE


def print_error(message: str) -> None:
    """One line in red on stderr (never wrapped, never parsed for markup)."""
    context.stderr.print(Text(f"tidelog: {message}", style="red"), soft_wrap=True)


def unreachable(broker: str) -> str:
    return (
        f"cannot reach broker at {broker} — is `tidelog serve` running? "
        "(point --broker or TIDELOG_BROKER at it)"
    )


def describe(exc: BaseException, settings: context.Settings) -> tuple[str, int]:
    """The line and the exit code for an error a command raised."""
    match exc:
        case CliError():
            return str(exc), exc.exit_code
        case TidelogConnectionError() | ConnectionError():
            return unreachable(settings.broker), EXIT_ERROR
        case RequestTimeoutError() | TimeoutError():
            return (
                f"the broker at {settings.broker} did not answer within {settings.timeout:g}s "
                "— raise --timeout, or check that the broker is healthy",
                EXIT_ERROR,
            )
        case BrokerError():
            return exc.message, EXIT_ERROR
        case ClientUsageError():
            return str(exc), EXIT_USAGE
        case TidelogError():
            return str(exc), EXIT_ERROR
        case OSError():
            where = f": {exc.filename}" if exc.filename else ""
            return f"{exc.strerror or exc}{where}", EXIT_ERROR
        case _:
            return (
                f"unexpected error: {type(exc).__name__}: {exc} (run with --debug for the "
                "traceback, and please report it)",
                EXIT_ERROR,
            )


def command(fn: Callable[P, R]) -> Callable[P, R]:
    """Wrap a command so that any error becomes one red line and an exit code.

    The command must take ``ctx: typer.Context`` (for ``--debug`` and ``--broker``). typer's
    own exits and usage errors pass through. A clean stop by SIGINT or SIGTERM the command
    does not handle itself exits 128 + the signal's number; a ``KeyboardInterrupt`` (a second
    Ctrl-C) is left to typer (exit 130).
    """

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, typer.TyperException, KeyboardInterrupt):
            raise
        except BrokenPipeError:
            raise  # typer exits quietly when stdout is a closed pipe (`| head`)
        except Stopped as stopped:
            raise typer.Exit(stopped.exit_code) from None
        except Exception as exc:
            settings = context.settings(kwargs.get("ctx"))
            if settings.debug:
                raise
            message, code = describe(exc, settings)
            print_error(message)
            raise typer.Exit(code) from None

    return wrapper
