"""What every command shares: the global options, the two consoles, running a coroutine."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import typer
from rich.console import Console

from tidelog.client import DEFAULT_BROKER_PORT

from . import stopping

T = TypeVar("T")

DEFAULT_BROKER: Final = f"localhost:{DEFAULT_BROKER_PORT}"
DEFAULT_TIMEOUT: Final = 10.0
BROKER_ENV: Final = "TIDELOG_BROKER"

# Both consoles look up sys.stdout / sys.stderr when they write, so typer's CliRunner (which
# swaps those) captures them. Highlighting is opt-in per call: data is printed as it is.
stdout: Final = Console(highlight=False)
stderr: Final = Console(stderr=True, highlight=False)


@dataclass(frozen=True, slots=True)
class Settings:
    """The global options (``tidelog --broker ... --json COMMAND``)."""

    broker: str = DEFAULT_BROKER
    timeout: float = DEFAULT_TIMEOUT
    json: bool = False
    debug: bool = False

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments every client (Producer, Consumer, AdminClient) takes."""
        return {"request_timeout": self.timeout, "connect_timeout": self.timeout}


def settings(ctx: typer.Context | object) -> Settings:
    """The global options of this invocation (defaults when a command runs on its own)."""
    # typer.Context is an annotation for typer; at run time ctx is click's Context.
    find_root = getattr(ctx, "find_root", None)
    obj = find_root().obj if find_root is not None else None
    return obj if isinstance(obj, Settings) else Settings()


def run(coro: Coroutine[Any, Any, T], *, on_stop: Callable[[], None] | None = None) -> T:
    """Run one command's coroutine on a fresh event loop; SIGINT and SIGTERM stop it cleanly
    and raise :class:`~.stopping.Stopped` (see :func:`.stopping.run`)."""
    return stopping.run(coro, on_stop=on_stop)
