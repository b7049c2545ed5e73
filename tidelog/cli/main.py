"""The ``tidelog`` command: a thin typer + rich layer over the client and server libraries."""

from __future__ import annotations

from pathlib import Path
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
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port (0 picks a free one).")] = None,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Directory for the topic logs.")
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="TOML file with broker settings.")
    ] = None,
    log_level: Annotated[
        str | None, typer.Option("--log-level", help="DEBUG, INFO, WARNING or ERROR.")
    ] = None,
) -> None:
    """Start a broker; Ctrl-C or SIGTERM shuts it down gracefully.

    Every setting can also come from a TIDELOG_<NAME> environment variable or the TOML file.

    Example: [bold]tidelog serve --port 7070 --data-dir ./data[/bold]
    """
    from tidelog.server.config import BrokerConfig, ConfigError
    from tidelog.server.run import configure_logging
    from tidelog.server.run import serve as run_broker

    overrides = {"host": host, "port": port, "data_dir": data_dir, "log_level": log_level}
    try:
        settings = BrokerConfig.load(overrides=overrides, config_file=config)
    except ConfigError as exc:
        console.print(f"[red]tidelog: {exc}[/red]")
        raise typer.Exit(2) from None
    configure_logging(settings.log_level)

    def banner(broker: object) -> None:
        address = getattr(broker, "address", "?")
        console.print(
            f"[bold green]tidelog {__version__}[/bold green] listening on [bold]{address}[/bold]"
            f", data in {settings.data_dir.resolve()}"
        )

    try:
        code = run_broker(settings, banner)
    except OSError as exc:
        console.print(f"[red]tidelog: cannot start the broker: {exc}[/red]")
        raise typer.Exit(1) from None
    raise typer.Exit(code)
