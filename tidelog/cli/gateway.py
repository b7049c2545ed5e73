"""``tidelog gateway``: the HTTP gateway alone, in front of a broker or a cluster; and the
``--http-port`` / ``--no-http`` options ``tidelog serve`` uses to run one beside its broker.

Its limit options are generated from :data:`tidelog.gateway.LIMITS`, so each limit is
declared once, in ``gateway/settings.py``.
"""

from __future__ import annotations

import contextlib
import errno
import inspect
import socket
from typing import Annotated, Any, Final

import typer

from tidelog import __version__
from tidelog.gateway import DEFAULT_HTTP_PORT, LIMITS, GatewayServer, GatewaySettings, bind

from . import context
from .errors import CliError, CliUsageError, command
from .stopping import Stopped

HTTP_PORT_ENV: Final = "TIDELOG_HTTP_PORT"
HTTP_ENV: Final = "TIDELOG_HTTP"
WEBHOOK_HOSTS_ENV: Final = "TIDELOG_WEBHOOK_ALLOWED_HOSTS"
_DEFAULTS: Final = GatewaySettings()

HttpPort = Annotated[
    int,
    typer.Option(
        "--http-port",
        envvar=HTTP_PORT_ENV,
        min=0,
        max=65535,
        help=f"Port of the HTTP gateway (env {HTTP_PORT_ENV}; 0 picks a free one, shown in "
        "the banner). Example: --http-port 8080",
    ),
]
Http = Annotated[
    bool,
    typer.Option(
        "--http/--no-http",
        envvar=HTTP_ENV,
        help=f"Run the HTTP gateway beside the broker (env {HTTP_ENV}). Example: --no-http",
    ),
]


def webhook_hosts_option(flag: str) -> Any:
    """The option listing the hosts webhook subscriptions may call besides loopback (the
    setting ``webhook_allowed_hosts``), under ``flag``; the same environment variable for
    ``tidelog gateway`` and ``tidelog serve`` (and so for the gateway ``tidelog cluster up``
    starts)."""
    return typer.Option(
        flag,
        envvar=WEBHOOK_HOSTS_ENV,
        help="Hosts webhook subscriptions may call besides loopback, comma separated: exact "
        f"names or addresses, never resolved; * allows any (env {WEBHOOK_HOSTS_ENV}). "
        f"Example: {flag} hooks.internal,10.0.0.7",
        show_default=False,
    )


def webhook_hosts(value: str) -> tuple[str, ...]:
    """``a, b,,c`` as ``("a", "b", "c")``."""
    return tuple(host for host in (h.strip() for h in value.split(",")) if host)


def bind_http(host: str, port: int) -> socket.socket:
    """The gateway's listening socket, bound now so a busy port is a clean error."""
    try:
        return bind(host, port)
    except OSError as exc:
        hint = " — pick another --http-port, or --no-http" if exc.errno == errno.EADDRINUSE else ""
        raise CliError(
            f"cannot start the HTTP gateway on {host}:{port}: {exc.strerror or exc}{hint}"
        ) from None


def banner_line(server: GatewayServer) -> str:
    return f"  http      {server.url} (API docs at {server.url}/docs)"


def limit_option(name: str, doc: str, prefix: str = "") -> inspect.Parameter:
    """A keyword parameter for the limit ``name`` (``prefix`` + name), its option generated
    from the setting's default and doc."""
    default = getattr(_DEFAULTS, name)
    name = prefix + name
    flag = "--" + name.replace("_", "-")
    info = typer.Option(
        flag,
        help=f"{doc[:1].upper()}{doc[1:]}. Example: {flag} {default}",
        rich_help_panel="HTTP gateway limits" if prefix else "Limits",
    )
    return inspect.Parameter(
        name,
        inspect.Parameter.KEYWORD_ONLY,
        default=default,
        annotation=Annotated[type(default), info],
    )


@command
def gateway(
    *,
    ctx: typer.Context,
    broker: Annotated[
        str | None,
        typer.Option(
            "--broker",
            help="The broker(s) to front, host:port[,host:port] (default: the global "
            "--broker). Example: --broker 10.0.0.5:7070",
            show_default=False,
        ),
    ] = None,
    http_host: Annotated[
        str,
        typer.Option("--http-host", help="Address to listen on. Example: --http-host 0.0.0.0"),
    ] = "127.0.0.1",
    http_port: Annotated[
        int,
        typer.Option(
            "--http-port",
            envvar=HTTP_PORT_ENV,
            min=0,
            max=65535,
            help=f"Port to listen on (env {HTTP_PORT_ENV}; 0 picks a free one). "
            "Example: --http-port 8080",
        ),
    ] = DEFAULT_HTTP_PORT,
    webhook_allowed_hosts: Annotated[str, webhook_hosts_option("--webhook-allowed-hosts")] = "",
    **limits: Any,
) -> None:
    """Run the HTTP gateway (REST + WebSocket) in front of a broker or a cluster; Ctrl-C or
    SIGTERM stops it gracefully. docs/HTTP.md lists its endpoints; /docs serves them live.

    Example: `tidelog gateway --broker 127.0.0.1:7070 --http-port 8080`
    """
    settings = context.settings(ctx)
    try:
        config = GatewaySettings(
            bootstrap=broker or settings.broker,
            host=http_host,
            port=http_port,
            request_timeout_s=settings.timeout,
            webhook_allowed_hosts=webhook_hosts(webhook_allowed_hosts),
            **limits,
        ).validate()
    except ValueError as exc:
        raise CliUsageError(str(exc)) from None
    server = GatewayServer(config, bind_http(http_host, http_port))
    context.stderr.print(
        f"tidelog {__version__} gateway listening on {server.url} → brokers {config.bootstrap}",
        soft_wrap=True,
        highlight=False,
    )
    context.stderr.print(banner_line(server), soft_wrap=True, highlight=False)
    with contextlib.suppress(Stopped):  # a signal is how the gateway ends: exit 0
        context.run(server.serve(), on_stop=server.stop)


_given = inspect.signature(gateway, eval_str=True).parameters
gateway.__signature__ = inspect.Signature(  # type: ignore[attr-defined]  # typer reads it
    [
        _given["ctx"],
        _given["broker"],
        _given["http_host"],
        _given["http_port"],
        _given["webhook_allowed_hosts"],
        *(limit_option(name, doc) for name, doc in LIMITS.items()),
    ]
)
