"""The ``tidelog`` command: a thin typer + rich layer over the client and server libraries."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from tidelog import __version__

app = typer.Typer(
    name="tidelog",
    help="tidelog: a Kafka-class event streaming broker and its tools.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)
console = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        print(f"tidelog {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """tidelog: a Kafka-class event streaming broker and its tools."""


@app.command()
def serve() -> None:
    """Start a broker. [dim](The broker lands with issue #4; this prints where it stands.)[/dim]"""
    console.print(
        "[yellow]The tidelog broker is not built yet: this release has the wire protocol "
        "(tidelog.wire). `tidelog serve` starts a broker once the broker issue lands.[/yellow]"
    )
