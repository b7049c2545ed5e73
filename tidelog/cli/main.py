"""The ``tidelog`` command: a thin typer + rich layer over the client and server libraries.

Each command lives in its own module (``serve``, ``topics``, ``groups``, ``produce``,
``consume``, ``tail``); this one holds the app and the global options.
"""

from __future__ import annotations

from typing import Annotated

import typer

from tidelog import __version__

from . import (
    cluster,
    consume,
    context,
    gateway,
    groups,
    health,
    produce,
    queue,
    reassign,
    schema,
    serve,
    status,
    subscription,
    tail,
    top,
    topics,
)

app = typer.Typer(
    name="tidelog",
    help="tidelog: a Kafka-class event streaming broker and its tools.\n\n"
    "Start a broker with `tidelog serve`, then create topics, produce, consume and tail them "
    "from another terminal; `tidelog group` manages consumer groups.\n\n"
    "Ctrl-C and SIGTERM stop any command cleanly (a consumer commits and leaves its group, a "
    "producer sends what it has read): `serve`, `consume`, `tail` and the `produce` prompt "
    "exit 0, other commands 130 or 143.\n\n"
    "Examples:\n\n"
    "* `tidelog serve --data-dir ./data` (HTTP gateway on :8080; `--no-http` for none)\n"
    "* `tidelog gateway --broker 10.0.0.5:7070 --http-port 8080`\n"
    "* `tidelog topic create events --partitions 3`\n"
    "* `tidelog produce events hello world`\n"
    "* `tidelog consume events --from-beginning`\n"
    "* `tidelog consume events --group billing`\n"
    "* `tidelog queue consume mailer emails --auto-ack`, `tidelog queue status mailer`\n"
    "* `tidelog --broker 10.0.0.5:7070 tail events`\n"
    "* `tidelog status`, `tidelog top`, `tidelog cluster health` (metrics from the admin "
    "port, `--admin host:9644`)",
    no_args_is_help=True,
    rich_markup_mode="markdown",
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(topics.app, name="topic")
app.add_typer(groups.app, name="group")
app.add_typer(subscription.app, name="subscription")
app.add_typer(queue.app, name="queue")
app.add_typer(schema.app, name="schema")
app.command("serve")(serve.serve)
app.command("gateway")(gateway.gateway)
app.command("produce")(produce.produce)
app.command("consume")(consume.consume)
app.command("tail")(tail.tail)
app.command("status")(status.status)
app.command("top")(top.top)
app.add_typer(health.app, name="cluster")
cluster.register(health.app)
reassign.register(topics.app, health.app)


def _version(value: bool) -> None:
    if value:
        print(f"tidelog {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    broker: Annotated[
        str,
        typer.Option(
            "--broker",
            envvar=context.BROKER_ENV,
            help="The broker to talk to, as host:port. Example: --broker 10.0.0.5:7070",
        ),
    ] = context.DEFAULT_BROKER,
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout",
            min=0.1,
            help="Seconds to wait for the broker to connect and to answer each request. "
            "Example: --timeout 30",
        ),
    ] = context.DEFAULT_TIMEOUT,
    json_output: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Machine-readable output: JSON on standard output for every command that "
            "prints data. Example: tidelog --json topic describe events",
        ),
    ] = False,
    debug: Annotated[
        bool,
        typer.Option(
            "--debug", help="Show tracebacks of errors. Example: tidelog --debug topic list"
        ),
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_version,
            is_eager=True,
            help="Print the version and exit. Example: tidelog --version",
        ),
    ] = False,
) -> None:
    """tidelog: a Kafka-class event streaming broker and its tools."""
    ctx.obj = context.Settings(broker=broker, timeout=timeout, json=json_output, debug=debug)
