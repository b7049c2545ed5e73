"""``tidelog cluster up | down | status | broker ... | gateway ... | restart-all``: a local
cluster (etcd, N brokers and an HTTP gateway) started, steered and stopped; thin over
:mod:`tidelog.cluster`, which does the work.
Registered on the same ``cluster`` group as ``tidelog cluster health`` (:mod:`.health`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.text import Text

from tidelog.cluster import ClusterConfig, ClusterConfigError, ClusterError, render
from tidelog.cluster import run as cluster_run
from tidelog.cluster.config import DEFAULT_DATA_DIR, read_toml
from tidelog.cluster.control import request

from . import context
from .errors import CliError, CliUsageError, command
from .render import print_json

T = TypeVar("T")

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="TOML file with a [cluster] table: brokers, base_port, data_dir, cluster_id, "
        "default_partitions, replication_factor, etcd, restart_on_failure, lease_ttl_s, "
        "gateway, gateway_port; "
        "flags override it. Example: --config cluster.toml",
    ),
]
DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help=f"The cluster's directory: etcd, brokers, logs, state (default {DEFAULT_DATA_DIR}). "
        "Example: --data-dir ./dev-cluster",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON. Example: --json")]
BrokerArg = Annotated[int, typer.Argument(help="The broker's number (1..N). Example: 2")]


def call(fn: Callable[[], T]) -> T:
    """Run ``fn``; the cluster's errors become the CLI's one red line."""
    try:
        return fn()
    except ClusterConfigError as exc:
        raise CliUsageError(str(exc)) from None
    except ClusterError as exc:
        raise CliError(str(exc)) from None


def data_dir_of(config_file: Path | None, data_dir: Path | None) -> Path:
    """``--data-dir``, else the config file's ``data_dir``, else the default; absolute."""
    if data_dir is None and config_file is not None:
        data_dir = call(lambda: read_toml(config_file)).get("data_dir")
    return (data_dir or DEFAULT_DATA_DIR).resolve()


def control(config_file: Path | None, data_dir: Path | None, payload: dict[str, Any]) -> Any:
    where = data_dir_of(config_file, data_dir)
    return call(lambda: request(where, payload))


def up(
    ctx: typer.Context,
    brokers: Annotated[
        int | None, typer.Option("--brokers", "-n", help="How many brokers (5). Example: -n 3")
    ] = None,
    base_port: Annotated[
        int | None,
        typer.Option(
            "--base-port",
            help="Broker i listens on base-port + i - 1, its admin HTTP port on base-port + "
            "1000 + i - 1 (7070). Example: --base-port 9092",
        ),
    ] = None,
    data_dir: DataDirOption = None,
    config_file: ConfigOption = None,
    cluster_id: Annotated[
        str | None, typer.Option("--cluster-id", help="The cluster's name. Example: dev")
    ] = None,
    default_partitions: Annotated[
        int | None,
        typer.Option("--default-partitions", help="Partitions of new topics. Example: 3"),
    ] = None,
    replication_factor: Annotated[
        int | None,
        typer.Option("--replication-factor", help="Of topics made by the console. Example: 1"),
    ] = None,
    etcd: Annotated[
        str | None,
        typer.Option(
            "--etcd",
            help="Use this etcd (comma-separated endpoints) instead of starting one. "
            "Example: --etcd 127.0.0.1:2379",
        ),
    ] = None,
    restart_on_failure: Annotated[
        bool | None,
        typer.Option(
            "--restart-on-failure/--no-restart-on-failure",
            help="Start a broker again when it dies. Example: --restart-on-failure",
        ),
    ] = None,
    gateway: Annotated[
        bool | None,
        typer.Option(
            "--gateway/--no-gateway",
            help="Start one HTTP gateway in front of the brokers (on by default). "
            "Example: --no-gateway",
        ),
    ] = None,
    gateway_port: Annotated[
        int | None,
        typer.Option(
            "--gateway-port",
            help="The gateway's HTTP port (base-port + 2000). Example: --gateway-port 8080",
        ),
    ] = None,
    detach: Annotated[
        bool,
        typer.Option("--detach", "-d", help="Run in the background; no console. Example: --detach"),
    ] = False,
    json_output: JsonOption = False,
) -> None:
    """Start etcd, N brokers and an HTTP gateway, wait until all serve, print them and open a
    console (status, broker stop|start|restart|kill N, gateway stop|start, restart all, topic
    list, quit). Ctrl-C or
    quit stops everything.

    Example: `tidelog cluster up --brokers 3` or `tidelog cluster up --detach`
    """
    overrides = {
        "brokers": brokers,
        "base_port": base_port,
        "data_dir": data_dir,
        "cluster_id": cluster_id,
        "default_partitions": default_partitions,
        "replication_factor": replication_factor,
        "etcd": tuple(e.strip() for e in etcd.split(",") if e.strip()) if etcd else None,
        "restart_on_failure": restart_on_failure,
        "gateway": gateway,
        "gateway_port": gateway_port,
    }
    config = call(lambda: ClusterConfig.load(config_file, overrides))
    if not detach:
        call(lambda: cluster_run.foreground(config, context.stdout))
        return
    status = call(lambda: cluster_run.detach(config, context.stderr.print))
    if json_output or context.settings(ctx).json:
        print_json(status)
        return
    render.print_status(context.stdout, status)
    context.stdout.print(
        f"running in the background (supervisor pid {status['supervisor_pid']}); stop it with "
        f"`tidelog cluster down --data-dir {config.data_dir}`",
        soft_wrap=True,
    )


def down(
    ctx: typer.Context, data_dir: DataDirOption = None, config_file: ConfigOption = None
) -> None:
    """Stop the cluster running from the data dir: the gateway and every broker gracefully,
    then the etcd it started; returns once they have exited.

    Example: `tidelog cluster down --data-dir ./dev-cluster`
    """
    where = data_dir_of(config_file, data_dir)
    context.stdout.print(call(lambda: cluster_run.down(where)), soft_wrap=True)


def status(
    ctx: typer.Context,
    data_dir: DataDirOption = None,
    config_file: ConfigOption = None,
    json_output: JsonOption = False,
) -> None:
    """Every broker (state, pid, ports, registered in etcd, partitions led), the controller,
    topics and leaderless partitions.

    Example: `tidelog cluster status --json`
    """
    result = control(config_file, data_dir, {"op": "status"})
    if json_output or context.settings(ctx).json:
        print_json(result)
    else:
        render.print_status(context.stdout, result)


def restart_all(
    ctx: typer.Context,
    data_dir: DataDirOption = None,
    config_file: ConfigOption = None,
    json_output: JsonOption = False,
) -> None:
    """Stop every broker, start them all again and wait until they serve.

    Example: `tidelog cluster restart-all`
    """
    _say(ctx, control(config_file, data_dir, {"op": "restart-all"}), json_output)


def _say(ctx: typer.Context, message: str, json_output: bool) -> None:
    if json_output or context.settings(ctx).json:
        print_json({"ok": True, "message": message})
    else:
        context.stdout.print(Text(message), soft_wrap=True)


broker_app = typer.Typer(
    help="Stop, start, restart or kill (SIGKILL) one broker of a running cluster. "
    "Example: `tidelog cluster broker stop 2`",
    no_args_is_help=True,
)


def _broker_command(action: str, doc: str) -> None:
    def run(
        ctx: typer.Context,
        broker_id: BrokerArg,
        data_dir: DataDirOption = None,
        config_file: ConfigOption = None,
        json_output: JsonOption = False,
    ) -> None:
        payload = {"op": "broker", "action": action, "id": broker_id}
        _say(ctx, control(config_file, data_dir, payload), json_output)

    run.__doc__ = doc
    broker_app.command(action)(command(run))


_broker_command(
    "stop", "Stop broker N gracefully (SIGTERM). Example: `tidelog cluster broker stop 2`"
)
_broker_command("start", "Start broker N again. Example: `tidelog cluster broker start 2`")
_broker_command("restart", "Stop, then start broker N. Example: `tidelog cluster broker restart 2`")
_broker_command(
    "kill", "SIGKILL broker N: a crash on purpose. Example: `tidelog cluster broker kill 3`"
)


gateway_app = typer.Typer(
    help="Stop or start the HTTP gateway of a running cluster. "
    "Example: `tidelog cluster gateway stop`",
    no_args_is_help=True,
)


def _gateway_command(action: str, doc: str) -> None:
    def run(
        ctx: typer.Context,
        data_dir: DataDirOption = None,
        config_file: ConfigOption = None,
        json_output: JsonOption = False,
    ) -> None:
        payload = {"op": "gateway", "action": action}
        _say(ctx, control(config_file, data_dir, payload), json_output)

    run.__doc__ = doc
    gateway_app.command(action)(command(run))


_gateway_command("stop", "Stop the gateway (SIGTERM). Example: `tidelog cluster gateway stop`")
_gateway_command(
    "start", "Start the gateway, wait for its /ready. Example: `tidelog cluster gateway start`"
)


def register(app: typer.Typer) -> None:
    """Add these commands to the ``cluster`` group."""
    app.command("up")(command(up))
    app.command("down")(command(down))
    app.command("status")(command(status))
    app.command("restart-all")(command(restart_all))
    app.add_typer(broker_app, name="broker")
    app.add_typer(gateway_app, name="gateway")
